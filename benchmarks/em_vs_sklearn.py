"""Full hyperparameter fit (α, β and the posterior) against scikit-learn's BayesianRidge.

Data (generated, seeded): n raw inputs x ∈ ℝ⁸, y = smooth function + noise, expanded
into d random Fourier features. Each fit runs in its own subprocess so that its peak
resident memory (ru_maxrss) is its own.

A. n = 50 000, d ∈ {2 000, 8 000}: scikit-learn's BayesianRidge (SVD) against ours,
   exact (dense Gram + Cholesky per step) and sample-based MacKay EM with k = 16 samples
   by sgd (1 000 steps of 512 rows per EM step), by sgd with SVRG snapshots ("svrg":
   128-row minibatches, a snapshot every half epoch, solves stopped at relative residual
   1e-4, only up to ``--svrg-max-d``) and by cg (tol 1e-5, only up to ``--cg-max-d``: at
   d = 8 000 one cg fit took over 7.5 min), all on the same dense float64 design; time
   ratios and agreement of α, β. svrg and cg solve early EM steps loosely (the
   estimator's default ``SolveSchedule``); ``--fixed-rows`` adds both solved to tol at
   every step ("svrg-fixed", "cg-fixed"), for the ratio in the same run.
B. scikit-learn's largest d on this machine: its peak memory is linear in d (the n × d
   design, its SVD's U and work copies); the line through its two measured peaks
   reaches the machine's physical memory at d_max. Running it there would take
   ≈ (d_max/d)² × its time at d, so d_max is extrapolated, not run.
C. ours at 10 × d_max: features computed batch by batch from the raw inputs
   (``RandomFourierFeatures``: the n × d design is never formed), sample-based EM with
   sgd (600 steps of 512 rows per EM step), k = 8, 3 EM steps, float32; time and peak
   memory beside scikit-learn's at its largest measured d.

    python benchmarks/em_vs_sklearn.py [--n 50000] [--d 2000 8000] [--big-factor 10]
        [--cg-max-d 2000] [--svrg-max-d 2000] [--d-max D]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def data(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 8))
    y = (
        np.sin(2 * x[:, 0]) * np.cos(x[:, 1])
        + 0.5 * x[:, 2] ** 2
        - x[:, 3]
        + 0.3 * rng.standard_normal(n)
    )
    return x, y


def physical_memory_mib() -> float:
    """MemTotal of /proc/meminfo, MiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def worker(method: str, n: int, d: int) -> dict:
    """Fit one method in this process; return time, α, β and peak RSS (MiB)."""
    import jax

    if method != "ours-big":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import blm
    from blm import ArrayDataset, BayesianLinearRegression, Gaussian, Prior, RandomFourierFeatures
    from blm.evidence.loop import LoopSettings
    from blm.evidence.mackay import fit_mackay
    from blm.solvers.problem import Problem
    from blm.solvers.sgd import SGDConfig, sgd

    x, y = data(n)
    feats = RandomFourierFeatures(jax.random.PRNGKey(0), 8, d, lengthscale=1.0)
    t0 = time.perf_counter()
    if method == "ours-big":
        ds = ArrayDataset(x, y - y.mean())
        prior = Prior.scalar(1.0, d)

        config = SGDConfig(n_steps=600, batch_size=512, polyak=0.3, block_size=4096, log_every=600)

        def solve(lik, p, init):
            return sgd(Problem(feats, lik, p, ds), jax.random.PRNGKey(1), 8, config, init=init)

        problem = Problem(feats, Gaussian(1.0 / y.var()), prior, ds, block_size=4096)
        fit = fit_mackay(solve, problem, LoopSettings(max_iter=3, tol=1e-12))
        alpha, beta = float(fit.alpha[0]), float(fit.beta[0])
    else:
        X = np.asarray(feats.transform(jnp.asarray(x)), dtype=np.float64)
        t0 = time.perf_counter()  # design formation is not part of the fit
        if method == "sklearn":
            from sklearn.linear_model import BayesianRidge

            ref = BayesianRidge(max_iter=300, tol=1e-6).fit(X, y)
            alpha, beta = float(ref.lambda_), float(ref.alpha_)
        else:
            options_for = {
                "ours-exact": {"tol": 1e-4},
                "ours-cg": {"solver": {"tol": 1e-5}, "tol": 1e-4},
                "ours-sgd": {"solver": {"n_steps": 1000, "batch_size": 512}, "tol": 1e-3},
                "ours-svrg": {
                    "solver": {
                        "n_steps": 20_000,
                        "batch_size": 128,
                        "svrg": blm.SVRG(snapshot_every=n // 256),
                        "momentum": 0.5,
                        "tol": 1e-4,
                    },
                    "tol": 1e-3,
                },
            }
            base = method.removesuffix("-fixed")
            options = options_for[base]
            if base != method:  # every EM step solved to tol
                options["solver"] = {**options["solver"], "adaptive_tol": False}
            if base != "ours-exact":
                kind = blm.CG if base == "ours-cg" else blm.SGD
                options.update(solver=kind(**options["solver"]), n_samples=16, random_state=0)
            est = BayesianLinearRegression(max_iter=300, exact_evidence=False, **options).fit(X, y)
            alpha, beta = est.alpha_, est.beta_
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "d": d,
        "seconds": seconds,
        "alpha": alpha,
        "beta": beta,
        "peak_mib": peak,
    }


def run(method: str, n: int, d: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", method, "--n", str(n), "--d", str(d)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"method": method, "d": d, "error": out.stderr.strip().splitlines()[-1:]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--big-factor", type=int, default=10)
    parser.add_argument("--cg-max-d", type=int, default=2000)
    parser.add_argument("--svrg-max-d", type=int, default=2000)
    parser.add_argument("--d-max", type=int, default=None, help="skip B's extrapolation")
    parser.add_argument("--fixed-rows", action="store_true", help="also svrg/cg at fixed tol")
    parser.add_argument("--worker", default=None)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.d[0])))
        return
    print(
        f"{'d':>7} {'method':<16}{'time s':>9}{'sk/ours':>9}{'alpha':>12}{'beta':>10}{'rel Δα':>9}{'rel Δβ':>9}{'peak MiB':>10}"
    )
    rows = []
    for d in args.d:
        ref = run("sklearn", args.n, d)
        rows.append(ref)
        methods = ("ours-exact", "ours-sgd")
        methods += ("ours-svrg",) if d <= args.svrg_max_d else ()
        methods += ("ours-cg",) if d <= args.cg_max_d else ()
        if args.fixed_rows:
            methods += tuple(f"{m}-fixed" for m in methods if m in ("ours-svrg", "ours-cg"))
        for method in methods:
            r = run(method, args.n, d)
            rows.append(r)
            if "error" in r or "error" in ref:
                continue
            print(
                f"{d:>7} {method:<16}{r['seconds']:>9.1f}{ref['seconds'] / r['seconds']:>9.2f}{r['alpha']:>12.4g}{r['beta']:>10.4g}"
                f"{abs(r['alpha'] / ref['alpha'] - 1):>9.1e}{abs(r['beta'] / ref['beta'] - 1):>9.1e}{r['peak_mib']:>10.0f}"
            )
        if "error" not in ref:
            print(
                f"{d:>7} {'sklearn':<16}{ref['seconds']:>9.1f}{1:>9.2f}{ref['alpha']:>12.4g}{ref['beta']:>10.4g}{'':>18}{ref['peak_mib']:>10.0f}"
            )
    sk = [r for r in rows if r["method"] == "sklearn" and "error" not in r]
    if args.d_max is not None:
        d_max = args.d_max
    elif len(sk) >= 2:
        (d0, p0), (d1, p1) = [(r["d"], r["peak_mib"]) for r in sk[:2]]
        slope = (p1 - p0) / (d1 - d0)
        d_max = int(d0 + (physical_memory_mib() - p0) / slope)
        print(
            f"\nscikit-learn peak memory ≈ {p0:.0f} MiB + {slope:.3f} MiB × (d − {d0}): it reaches this "
            f"machine's {physical_memory_mib():.0f} MiB at d_max ≈ {d_max} (extrapolated; a fit there "
            f"would take ≈ {(d_max / d1) ** 2 * sk[1]['seconds']:.0f} s)"
        )
    else:
        d_max = max(args.d)
        print(f"\nfewer than two scikit-learn runs: using d_max = {d_max}")
    d_big = d_max * args.big_factor
    big = run("ours-big", args.n, d_big)
    if "error" not in big:
        sk = next(r for r in rows if r["method"] == "sklearn" and r["d"] == max(args.d))
        print(
            f"ours at d = {d_big} = {args.big_factor} × d_max (features streamed, sgd, k = 8, 3 EM steps): {big['seconds']:.1f} s, peak {big['peak_mib']:.0f} MiB; "
            f"scikit-learn at d = {max(args.d)}: {sk.get('seconds', float('nan')):.1f} s, peak {sk.get('peak_mib', float('nan')):.0f} MiB"
        )
    else:
        print(big)


if __name__ == "__main__":
    main()
