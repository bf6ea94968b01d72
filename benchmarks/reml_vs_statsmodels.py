"""Variance components by REML: blm's flat fixed effects against statsmodels' MixedLM.

With the fixed effects flat (``fixed_alpha={"fixed": 0.0}``) blm's evidence is the
restricted likelihood, so its fit is REML (``tests/test_flat_prior.py`` checks the
equality to 1e-4 on a small model). Here, on generated panels (seeded), the time to the
REML estimates and their agreement, measured in one run:

A. Random intercepts, y = b₀ + b₁x₁ + b₂x₂ + u_unit + ε, U units of 2–8 rows each:
   ``MixedLM(y, X, groups=unit).fit(reml=True)`` (its default optimiser, per-group
   Woodbury algebra) against blm with the units as one-hot columns of a scipy sparse
   design: exact (dense Cholesky, up to ``--exact-max`` units) and cg (k = 16 samples).
B. Crossed unit and period effects, y = b₀ + b₁x₁ + b₂x₂ + u_unit + v_period + ε, U units
   of 2–8 of 20 periods: MixedLM needs one group holding every row and a variance
   component per factor (``vc_formula``), only up to ``--crossed-max-rows`` rows; blm
   fits both factors as prior groups whatever the size.

Times include JAX's compilation for blm (one fit per size, as a user meets it). Reported:
seconds, MixedLM/blm time ratio, σ² = 1/β, σ_u² = 1/α_unit (and σ_v²), b₁, and the
relative differences to MixedLM where it ran (cg's are sampled: a few % is its noise).

    python benchmarks/reml_vs_statsmodels.py [--units 1000 5000 20000]
        [--crossed-units 300 1000 20000] [--exact-max 1000] [--crossed-max-rows 6000]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import numpy as np
import scipy.sparse as sp

jax.config.update("jax_enable_x64", True)

from blm import BayesianLinearRegression  # noqa: E402

PERIODS = 20


def panel(units: int, crossed: bool, seed: int = 0):
    """(y, fixed-effect design (n, 3), unit index, period index)."""
    rng = np.random.default_rng(seed)
    obs = rng.integers(2, 9, units)
    unit = np.repeat(np.arange(units), obs)
    period = np.concatenate([rng.choice(PERIODS, k, replace=False) for k in obs])
    n = unit.size
    F = np.column_stack([np.ones(n), rng.standard_normal((n, 2))])
    y = F @ [1.0, 0.7, -0.3] + 0.8 * rng.standard_normal(units)[unit]
    if crossed:
        y = y + 0.5 * rng.standard_normal(PERIODS)[period]
    return y + 0.5 * rng.standard_normal(n), F, unit, period


def blm_fit(solver: str, y, F, unit, period, crossed: bool) -> tuple[float, dict]:
    n, units = y.size, unit.max() + 1
    rows = np.arange(n)
    blocks = [sp.csr_matrix(F), sp.csr_matrix((np.ones(n), (rows, unit)), (n, units))]
    labels = ["fixed"] * 3 + ["unit"] * units
    if crossed:
        blocks.append(sp.csr_matrix((np.ones(n), (rows, period)), (n, PERIODS)))
        labels += ["period"] * PERIODS
    X = sp.hstack(blocks, format="csr")
    est = BayesianLinearRegression(
        solver=solver,
        prior_groups=labels,
        fixed_alpha={"fixed": 0.0},
        fit_intercept=False,
        tol=1e-6 if solver == "exact" else 1e-4,
        max_iter=500,
        alpha_1=0.0,
        alpha_2=0.0,
        lambda_1=0.0,
        lambda_2=0.0,
        random_state=0,
    )
    t0 = time.perf_counter()
    est.fit(X.toarray() if solver == "exact" else X, y)
    seconds = time.perf_counter() - t0
    alpha = dict(zip(est.prior_group_names_, np.atleast_1d(est.alpha_), strict=True))
    out = {"sigma2": 1 / est.beta_, "unit": 1 / alpha["unit"], "b1": est.coef_[1]}
    if crossed:
        out["period"] = 1 / alpha["period"]
    return seconds, out


def mixedlm_fit(y, F, unit, period, crossed: bool) -> tuple[float, dict]:
    import pandas as pd
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not crossed:
            res = sm.MixedLM(y, F, groups=unit).fit(reml=True)
            seconds = time.perf_counter() - t0
            return seconds, {"sigma2": res.scale, "unit": res.cov_re[0, 0], "b1": res.fe_params[1]}
        df = pd.DataFrame({"y": y, "x1": F[:, 1], "x2": F[:, 2], "unit": unit, "period": period})
        df["one"] = 1
        vc = {"unit": "0 + C(unit)", "period": "0 + C(period)"}
        model = smf.mixedlm("y ~ x1 + x2", df, groups="one", vc_formula=vc, re_formula="0")
        res = model.fit(reml=True)
    seconds = time.perf_counter() - t0
    vcomp = dict(zip(model.exog_vc.names, res.vcomp, strict=True))
    out = {"sigma2": res.scale, "unit": vcomp["unit"], "b1": res.fe_params["x1"]}
    return seconds, {**out, "period": vcomp["period"]}


def report(name: str, units: int, n: int, results: dict) -> None:
    keys = ["sigma2", "unit", "b1"] + (
        ["period"] if "period" in results[next(iter(results))][1] else []
    )
    ref = results.get("MixedLM")
    for method, (seconds, est) in results.items():
        ratio = "" if ref is None else f"{ref[0] / seconds:8.2f}"
        values = "".join(f"{est[k]:>10.4f}" for k in keys)
        diffs = ""
        if ref is not None and method != "MixedLM":
            diffs = "".join(f"{abs(est[k] / ref[1][k] - 1):>9.1e}" for k in keys)
        print(f"{name:<8}{units:>7}{n:>8}  {method:<10}{seconds:>8.1f}{ratio:>9}{values}{diffs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--crossed-units", type=int, nargs="+", default=[300, 1000, 20000])
    parser.add_argument("--exact-max", type=int, default=1000)
    parser.add_argument("--crossed-max-rows", type=int, default=6000)
    args = parser.parse_args()
    print(
        "part    units    rows  method      time s  SM/blm   sigma2   sigma_u2        b1"
        "  [sigma_v2]  rel. diff. to MixedLM (same order)"
    )
    for crossed, sizes in ((False, args.units), (True, args.crossed_units)):
        for units in sizes:
            y, F, unit, period = panel(units, crossed)
            results = {}
            if not crossed or y.size <= args.crossed_max_rows:
                results["MixedLM"] = mixedlm_fit(y, F, unit, period, crossed)
            if units <= args.exact_max:
                results["blm exact"] = blm_fit("exact", y, F, unit, period, crossed)
            results["blm cg"] = blm_fit("cg", y, F, unit, period, crossed)
            report("crossed" if crossed else "nested", units, y.size, results)


if __name__ == "__main__":
    main()
