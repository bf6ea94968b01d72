"""Which sampled solver for ill-conditioned random features: the estimator's plain sgd
default against sgd solved to a residual tolerance (SVRG) and cg, in one run.

Data: the CO₂ notebook's design (``blm.datasets.co2_design``: 1 000 random Fourier
features of the week, lengthscale 0.1 years, plus a quadratic trend; the 1 703 weeks
before the last decade). Each method fits ``BayesianLinearRegression(solver=…,
n_samples=64, random_state=0, max_iter=20, tol=1e-3)`` as the notebook does, timed
once after one untimed warm-up fit of the same method (compilation); the exact fit
(MacKay's fixed point, dense Cholesky) is the reference for α and β:

* sgd, plain (the estimator's default): 3 000 steps of 256 rows per EM step, iterates
  averaged over the second half (the notebook's setting);
* sgd, SVRG to tol 1e-4: snapshots every half epoch, momentum 0.5, each solve stopped
  at relative residual 1e-4 or at ``--svrg-steps`` steps (default 2 000), and whether
  the final solve reached it (the estimator warns where not);
* cg: tol 1e-6 (its default), with the iterations of the last solve.

    python benchmarks/sgd_settings_co2.py [--svrg-steps 2000]

Prints time, α, β and their relative error against exact, and the time ratios against
plain sgd.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import blm
from blm import BayesianLinearRegression
from blm.datasets import co2_design


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--svrg-steps", type=int, default=2000)
    args = parser.parse_args()
    X, y, t = co2_design(n_features=1000, lengthscale=0.1)
    train = t < t.max() - 10
    X, y = X[train], y[train]
    n = len(y)
    exact = BayesianLinearRegression(tol=1e-8, max_iter=2000).fit(X, y)
    methods = {
        "sgd, plain (default)": ("sgd", {"n_steps": 3000, "batch_size": 256}),
        f"sgd, SVRG to 1e-4, cap {args.svrg_steps}": (
            "sgd",
            {
                "n_steps": args.svrg_steps,
                "batch_size": 256,
                "svrg": blm.SVRG(snapshot_every=-(-n // 512)),
                "momentum": 0.5,
                "tol": 1e-4,
            },
        ),
        "cg, tol 1e-6": ("cg", {}),
    }
    print(f"{n} weeks, d = {X.shape[1]}; exact: alpha {exact.alpha_:.4f}, beta {exact.beta_:.4f}")
    times = {}
    for name, (solver, options) in methods.items():

        def fit(solver=solver, options=options):
            est = BayesianLinearRegression(
                solver=(blm.SGD if solver == "sgd" else blm.CG)(**options),
                n_samples=64,
                random_state=0,
                max_iter=20,
                tol=1e-3,
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                est.fit(X, y)
            return est, any("stopped at its cap" in str(w.message) for w in caught)

        fit()  # compiles
        t0 = time.perf_counter()
        est, capped = fit()
        times[name] = time.perf_counter() - t0
        steps = est.diagnostics_.step[-1] if est.diagnostics_.step else 0
        print(
            f"{name:<32}{times[name]:>7.1f} s  alpha {est.alpha_:.4f} "
            f"({est.alpha_ / exact.alpha_ - 1:+.1e})  beta {est.beta_:.4f} "
            f"({est.beta_ / exact.beta_ - 1:+.1e})  EM steps {est.n_iter_}, last solve "
            f"{steps} steps/iterations{', stopped at its cap' if capped else ''}",
            flush=True,
        )
    plain = times["sgd, plain (default)"]
    print("time / plain sgd: " + ", ".join(f"{k} {v / plain:.2f}" for k, v in times.items()))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
