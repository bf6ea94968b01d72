"""M-step convergence: sample-based MacKay EM against evidence ascent with SLQ.

Data as in em_convergence.py: the bundled Mauna Loa CO₂ series (statsmodels) with a
random-Fourier design (default 2 000 features, n = 2 225 weeks), centred, flat
hyperpriors, start α = 1, β = 1/Var y. The α trajectory, against matrix-vector products
spent, of

  (a) sample-based MacKay EM, γ̂ from k ∈ {1, 16} posterior samples (CG solver),
  (b) evidence ascent: Adam (learning rate 0.1) on (log α, log β), log det H by stochastic
      Lanczos quadrature of depth K ∈ {10, 50} with P = 8 probes and its exact adjoint
      gradient, θ̄ from the same CG solver,
  (c) the exact evidence maximiser (MacKay's exact fixed point, dense).

One matrix-vector product = one product of ΦᵀΦ (a pass over the data) with one vector:
a CG iteration on the mean and k samples costs k + 1; its set-up (right-hand sides and
the Jacobi diagonal) k + 2, plus k + 1 for the warm start's residual; MacKay's γ̂ costs k;
one SLQ evidence gradient P·K forward and P·K adjoint; the residual ‖y − Φθ̄‖² 1.

    python experiments/evidence_vs_mackay.py [--features 2000] [--steps 25] [--ascent-steps 150]

Writes experiments/results/evidence_vs_mackay.{png,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from blm import ArrayDataset, BayesianLinearRegression, Gaussian, LinearFeatures, Prior
from blm.datasets import co2_design
from blm.evidence.ascent import fit_evidence
from blm.evidence.lanczos import SLQ
from blm.evidence.loop import LoopSettings
from blm.evidence.mackay import fit_mackay
from blm.solvers.cg import CGSettings, cg
from blm.solvers.problem import Problem

OUT = Path(__file__).parent / "results"
FLAT = {"alpha_1": 0.0, "alpha_2": 0.0, "lambda_1": 0.0, "lambda_2": 0.0}


class CountingCG:
    """The CG solve of the E-step, counting the matrix-vector products it spends."""

    def __init__(self, feats, ds, k: int, seed: int = 0):
        self.feats, self.ds, self.k, self.key = feats, ds, k, jax.random.PRNGKey(seed)
        self.spent: list[int] = []

    def __call__(self, lik, prior, init):
        post, diag = cg(
            Problem(self.feats, lik, prior, self.ds),
            self.key,
            self.k,
            CGSettings(tol=1e-6),
            init=init,
        )
        cols = self.k + 1
        self.spent.append(cols * len(diag.step) + (self.k + 2) + (cols if init is not None else 0))
        return post, diag


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--features", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=25, help="MacKay EM steps")
    parser.add_argument("--ascent-steps", type=int, default=150, help="evidence ascent steps")
    parser.add_argument("--probes", type=int, default=8)
    args = parser.parse_args()
    X, y, _ = co2_design(n_features=args.features, lengthscale=0.5)
    X, y = X - X.mean(0), y - y.mean()
    n, d = X.shape
    feats, ds = LinearFeatures(d), ArrayDataset(X, y)
    prior, lik = Prior.scalar(1.0, d), Gaussian(1.0 / y.var())

    t0 = time.perf_counter()
    exact = BayesianLinearRegression(max_iter=500, tol=1e-12, fit_intercept=False, **FLAT).fit(X, y)
    alpha_star, beta_star = exact.alpha_, exact.beta_
    print(
        f"exact optimum α* = {alpha_star:.5g}, β* = {beta_star:.5g} ({time.perf_counter() - t0:.1f} s)"
    )

    runs = {}
    for k in (1, 16):
        solve, t0 = CountingCG(feats, ds, k), time.perf_counter()
        loop = LoopSettings(max_iter=args.steps, tol=1e-12)
        fit = fit_mackay(solve, Problem(feats, lik, prior, ds), loop)
        per_step = np.asarray(solve.spent[: fit.n_iter]) + k + 1  # + γ̂ (k) + residual (1)
        runs[f"MacKay EM, k = {k}"] = (fit, per_step, time.perf_counter() - t0)
        print(
            f"MacKay k={k}: α = {fit.alpha[0]:.5g} ({runs[f'MacKay EM, k = {k}'][2]:.0f} s)",
            flush=True,
        )
    for depth in (10, 50):
        solve, t0 = CountingCG(feats, ds, 1), time.perf_counter()
        config = SLQ(depth=depth, n_probes=args.probes)
        fit = fit_evidence(
            solve,
            Problem(feats, lik, prior, ds),
            jax.random.PRNGKey(1),
            LoopSettings(max_iter=args.ascent_steps, tol=1e-12),
            slq=config,
            learning_rate=0.1,
        )
        per_step = np.asarray(solve.spent[: fit.n_iter]) + 2 * args.probes * depth + 1
        name = f"evidence ascent, SLQ K = {depth}"
        runs[name] = (fit, per_step, time.perf_counter() - t0)
        print(f"{name}: α = {fit.alpha[0]:.5g} ({runs[name][2]:.0f} s)", flush=True)

    OUT.mkdir(exist_ok=True)
    lines = [
        f"# M-step convergence on co2 (n = {n}, d = {d} random Fourier features)",
        "",
        f"Exact evidence maximiser (MacKay's exact fixed point): α* = {alpha_star:.5g}, "
        f"β* = {beta_star:.5g}. Start α = 1, β = 1/Var y; flat hyperpriors; CG tol 1e-6; "
        f"SLQ with {args.probes} Rademacher probes (fixed across steps), Adam lr 0.1.",
        "",
        "'matvecs to q %': products spent until α stays within q % of α* for the rest of the run "
        "(8 probes leave the SLQ optimum a few % off α*; γ ≈ 67 leaves MacKay's k = 1 about 20 % off).",
        "",
        "| method | steps | final α/α* − 1 | final β/β* − 1 | matvecs to 25 % | matvecs to 10 % "
        "| matvecs total | time s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    ax.axhline(alpha_star, color="k", lw=1, ls=":", label="exact evidence maximiser")
    for name, (fit, per_step, secs) in runs.items():
        alphas = np.array([float(a[0]) for a in fit.trajectory.alpha] + [float(fit.alpha[0])])
        spent = np.concatenate([[0], np.cumsum(per_step)])[: len(alphas)]
        err = np.abs(alphas / alpha_star - 1)
        reach = []
        for q in (0.25, 0.10):
            outside = np.flatnonzero(err >= q)
            first = 0 if outside.size == 0 else outside[-1] + 1
            reach.append(f"{spent[first]:,}" if first < len(spent) else "not reached")
        lines.append(
            f"| {name} | {fit.n_iter} | {alphas[-1] / alpha_star - 1:+.3f} | "
            f"{float(fit.beta[0]) / beta_star - 1:+.4f} | {reach[0]} | {reach[1]} | {spent[-1]:,} | "
            f"{secs:.0f} |"
        )
        style = "-" if "MacKay" in name else "--"
        ax.loglog(np.maximum(spent, 1), alphas, style, marker=".", ms=3, label=name)
    ax.set_xlabel("matrix-vector products with ΦᵀΦ")
    ax.set_ylabel("α (prior precision)")
    ax.set_title(f"co2, d = {d}: M-step convergence")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "evidence_vs_mackay.png", dpi=120)
    (OUT / "evidence_vs_mackay.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
