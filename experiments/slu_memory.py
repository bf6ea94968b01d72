"""OoD detection against memory: sketched Lanczos vs vanilla Lanczos vs posterior samples.

The Figure 1 of Miani et al. (2024) at this machine's scale. For each seed: an MLP
64-64-64-10 (d = 8 970) trained to its MAP on 1 200 digits; in-distribution inputs are
the 597 held-out digits, out-of-distribution inputs (a) the same digits rotated by 90°
and (b) 8 × 8 natural-image patches from scikit-learn's bundled photographs. For a
memory budget of B·d numbers (the summary held after fitting):

  vanilla Lanczos   B Lanczos vectors in full: rank-B GGN eigenbasis, SLU score
  sketched Lanczos  Lanczos vectors sketched to s (SRFT, s ∈ {d/10, d/40}): r = B·d/s
                    iterations in the r × s buffer, rank min(r/2, s/4) kept, SLU score
  LLA samples       B posterior samples of the linearised Laplace posterior (α by 3
                    sample-based EM steps, 16 samples), score Σ_c Var f_c(x)

AUROC (OoD vs held-out digits, higher score = more OoD) per method and budget, mean over
seeds.

    python experiments/slu_memory.py [--seeds 3] [--budgets 1 2 3 5 10 20]

Writes experiments/results/slu_memory.{png,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import blm

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from blm.datasets import digits_split, image_patches, rotate_digits
from blm.demos import logit_variance
from blm.laplace import LaplacePosterior, linearise
from blm.likelihoods import Categorical
from blm.solvers.sampled import SampledPosterior
from blm.training import train_map
from blm.uncertainty.metrics import auroc
from blm.uncertainty.sketched import IdentitySketch, SRFTSketch, sketched_lanczos

OUT = Path(__file__).parent / "results"
OOD = ("rotated digits", "image patches")


def one_seed(seed: int, budgets: list[int], ratios: tuple[int, ...]) -> dict:
    Xtr, ytr, Xte, _ = digits_split(seed)
    sets = {"in": Xte, OOD[0]: rotate_digits(Xte), OOD[1]: image_patches(len(Xte), seed)}
    lik = Categorical(10)
    k_init, k_train, k_post, k_lanczos = jax.random.split(jax.random.PRNGKey(seed), 4)
    net = eqx.nn.MLP(64, 10, 64, 2, key=k_init)
    net = train_map(net, Xtr, ytr, lik, k_train, alpha=1e-2, n_steps=6000)
    lm = linearise(net, (Xtr, ytr), lik)
    feats, d = lm.features, lm.features.d
    results: dict[tuple[str, int], dict[str, float]] = {}

    def record(method, budget, score):
        s_in = np.asarray(score(sets["in"]))
        results[(method, budget)] = {
            name: auroc(s_in, np.asarray(score(sets[name]))) for name in OOD
        }

    t0 = time.perf_counter()
    post = lm.fit(
        n_samples=max(budgets), key=k_post, em_steps=3, start=blm.Hyperparameters(alpha=1e-2)
    )
    for b in budgets:
        sub = LaplacePosterior(
            feats, lik, post.alpha, SampledPosterior(post.mean, post.samples[:b]), post.groups
        )
        record("LLA samples", b, lambda X, sub=sub: logit_variance(sub, X))
    t_lla = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in budgets:
        summary = sketched_lanczos(feats, lik, lm.dataset, k_lanczos, b, b, IdentitySketch(d))
        record("vanilla Lanczos", b, lambda X, s=summary: s.score(feats, jnp.asarray(X)))
    t_vanilla = time.perf_counter() - t0
    t0 = time.perf_counter()
    for ratio in ratios:
        s = d // ratio
        sketch = SRFTSketch(jax.random.fold_in(k_lanczos, ratio), d, s)
        for b in budgets:
            r = min(b * ratio, d)
            summary = sketched_lanczos(
                feats, lik, lm.dataset, k_lanczos, max(min(r // 2, s // 4), 1), r, sketch
            )
            record(
                f"sketched Lanczos, s = d/{ratio}",
                b,
                lambda X, sm=summary: sm.score(feats, jnp.asarray(X)),
            )
    print(
        f"seed {seed}: d = {d}, α = {np.ravel(post.alpha)}, seconds: LLA {t_lla:.0f}, "
        f"vanilla {t_vanilla:.0f}, sketched {time.perf_counter() - t0:.0f}",
        flush=True,
    )
    return results, d


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20])
    parser.add_argument("--ratios", type=int, nargs="+", default=[10, 40])
    args = parser.parse_args()
    runs = []
    for seed in range(args.seeds):
        res, d = one_seed(seed, args.budgets, tuple(args.ratios))
        runs.append(res)
    methods = list(dict.fromkeys(m for m, _ in runs[0]))
    mean = {
        key: {name: float(np.mean([r[key][name] for r in runs])) for name in OOD} for key in runs[0]
    }
    sd = {
        key: {name: float(np.std([r[key][name] for r in runs])) for name in OOD} for key in runs[0]
    }
    OUT.mkdir(exist_ok=True)
    lines = [
        f"# OoD AUROC against memory (MLP on digits, d = {d}, {args.seeds} seeds, mean ± sd)",
        "",
        "Memory budget in units of d numbers: what the summary holds after fitting (B Lanczos "
        "vectors; the r × s sketched buffer; B samples).",
        "",
        "| method | budget (×d) | AUROC rotated digits | AUROC image patches |",
        "|---|---|---|---|",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for method in methods:
        for b in args.budgets:
            m, s = mean[(method, b)], sd[(method, b)]
            lines.append(
                f"| {method} | {b} | {m[OOD[0]]:.3f} ± {s[OOD[0]]:.3f} | "
                f"{m[OOD[1]]:.3f} ± {s[OOD[1]]:.3f} |"
            )
        for ax, name in zip(axes, OOD, strict=True):
            ax.plot(
                args.budgets,
                [mean[(method, b)][name] for b in args.budgets],
                marker="o",
                label=method,
            )
    for ax, name in zip(axes, OOD, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("memory budget (× d numbers)")
        ax.set_title(f"digits vs {name}")
    axes[0].set_ylabel("OoD AUROC")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "slu_memory.png", dpi=120)
    if 3 in args.budgets:
        best_sketch = max(mean[(m, 3)][OOD[1]] for m in methods if m.startswith("sketched"))
        verdict = "beats" if best_sketch > mean[("vanilla Lanczos", 3)][OOD[1]] else "does not beat"
        lines += [
            "",
            f"At a budget of 3·d numbers, sketched Lanczos (best sketch: AUROC {best_sketch:.3f}) "
            f"{verdict} vanilla Lanczos ({mean[('vanilla Lanczos', 3)][OOD[1]]:.3f}) on image patches.",
        ]
    (OUT / "slu_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
