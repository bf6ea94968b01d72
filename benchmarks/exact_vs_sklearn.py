"""Exact fit (α, β by MacKay's fixed point, then the posterior) against scikit-learn's
BayesianRidge, in one run on the same data: n = 20 000 rows, d ∈ {500, 2 000}.

    python benchmarks/exact_vs_sklearn.py [--n 20000] [--d 500 2000]

Prints wall time of each (after one warm-up fit of ours at the same shape, so compile
time is reported separately), the ratio, and the agreement of α, β and the coefficients.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np
from sklearn.linear_model import BayesianRidge

from blm import BayesianLinearRegression


def problem(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.5
    theta = rng.standard_normal(d)
    return X, X @ theta + rng.standard_normal(n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, nargs="+", default=[500, 2000])
    args = parser.parse_args()
    print(
        f"{'n':>7}{'d':>6}{'blm s':>9}{'compile s':>10}{'sklearn s':>10}{'sk/blm':>8}"
        f"{'rel|Δα|':>10}{'rel|Δβ|':>10}{'rel‖Δθ‖':>10}"
    )
    for d in args.d:
        X, y = problem(args.n, d)
        t0 = time.perf_counter()
        BayesianLinearRegression(max_iter=300, tol=1e-8).fit(X, y)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = BayesianLinearRegression(max_iter=300, tol=1e-8).fit(X, y)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = BayesianRidge(max_iter=300, tol=1e-8).fit(X, y)
        t_ref = time.perf_counter() - t0
        print(
            f"{args.n:>7}{d:>6}{t_ours:>9.2f}{first - t_ours:>10.2f}{t_ref:>10.2f}{t_ref / t_ours:>8.2f}"
            f"{abs(ours.alpha_ / ref.lambda_ - 1):>10.1e}{abs(ours.beta_ / ref.alpha_ - 1):>10.1e}"
            f"{np.linalg.norm(ours.coef_ - ref.coef_) / np.linalg.norm(ref.coef_):>10.1e}"
        )


if __name__ == "__main__":
    main()
