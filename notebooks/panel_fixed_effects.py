# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # A panel with unit and time effects: sparse design, one α per factor
#
# An unbalanced panel (generated, seeded): each unit is observed in 2–6 of 20 periods,
# y = unit effect + time effect + 0.3·policy + controls + noise, and the policy is
# switched on more often where the unit effect is high, the textbook reason for fixed
# effects. The design (unit dummies, time dummies, policy, 3 controls) is a scipy sparse
# matrix that is never densified; each factor is its own prior group, so its α is its
# effects' precision (a random-effects variance, fitted by evidence), and `solver="cg"`'s
# preconditioner deflates each group's constant direction (see `blm.solvers.cg`).
#
# The policy coefficient against the econometrician's estimators: pooled OLS (no
# effects), two-way fixed effects OLS (dummies; its sd by Frisch–Waugh–Lovell), and
# Mundlak's correlated random effects (the unit mean of the policy as one more regressor),
# which turns the Bayesian random-effects fit into the within estimate.
#
# Set `BLM_NOTEBOOK_SMALL=1` for the quick version the test suite runs.

# %%
import os

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import lsqr

from blm import BayesianLinearRegression

small = os.environ.get("BLM_NOTEBOOK_SMALL") == "1"
rng = np.random.default_rng(0)
units, periods, true_policy = (1_000 if small else 20_000), 20, 0.3
obs = rng.integers(2, 7, units)
unit = np.repeat(np.arange(units), obs)
period = np.concatenate([rng.choice(periods, k, replace=False) for k in obs])
n = len(unit)
unit_effect, time_effect = rng.standard_normal(units), 0.5 * rng.standard_normal(periods)
policy = (rng.standard_normal(n) + unit_effect[unit] > 0.5).astype(float)
controls = rng.standard_normal((n, 3))
noise = 0.5 * rng.standard_normal(n)
y = unit_effect[unit] + time_effect[period] + true_policy * policy + controls @ [0.5, -0.2, 0.1]
y = y + noise
covariates = np.column_stack([policy, controls])


def panel_design(extra=None):
    """[unit dummies, time dummies, policy, controls (, extra)] as CSR, and the prior
    groups by name: "unit", "period", "covariates", "mundlak" for the extra columns."""
    rows = np.arange(n)
    dummies = [
        sp.csr_matrix((np.ones(n), (rows, unit)), (n, units)),
        sp.csr_matrix((np.ones(n), (rows, period)), (n, periods)),
    ]
    dense = [covariates] if extra is None else [covariates, extra]
    X = sp.hstack([*dummies, *map(sp.csr_matrix, dense)], format="csr")
    sizes = [units, periods, covariates.shape[1]] + ([] if extra is None else [extra.shape[1]])
    names = ["unit", "period", "covariates", "mundlak"][: len(sizes)]
    return X, np.repeat(names, sizes)


X, groups = panel_design()
col = units + periods  # the policy's column
print(f"{n} rows, {X.shape[1]} columns, {X.nnz} non-zeros ({X.nnz / n:.0f} per row)")

# %% [markdown]
# ## One α per factor, fitted by sample-based EM around conjugate gradients
#
# `covariance_columns` solves the policy coefficient's posterior variance exactly after
# the fit (the other coefficients' sds come from the samples).

# %%
fit = BayesianLinearRegression(
    solver="cg", prior_groups=groups, random_state=0, covariance_columns=[col]
).fit(X, y)
sd = dict(zip(fit.prior_group_names_, 1 / np.sqrt(fit.alpha_), strict=True))
print(f"fitted effect sds: units {sd['unit']:.2f} (true 1), periods {sd['period']:.2f} (true 0.5)")
print(fit.summary(max_rows=1).splitlines()[0])  # α named by group
print(f"noise sd {1 / np.sqrt(fit.beta_):.3f} (true 0.5), {fit.n_iter_} EM steps")
if small:  # the exact solver on the densified design: the same fit
    exact = BayesianLinearRegression(prior_groups=groups, covariance_columns=[col])
    exact.fit(X.toarray(), y)
    print(f"exact solver: alpha {np.round(exact.alpha_, 3)} against cg {np.round(fit.alpha_, 3)}")

# %% [markdown]
# ## The policy coefficient
#
# The unit effects' Gaussian prior makes the Bayesian fit a random-effects model: it
# shrinks each unit's effect towards 0, most where a unit has few periods, and the policy
# (high where the effects are high) soaks up what is shrunk away. Adding the unit mean of
# the policy as a regressor (Mundlak 1978; its own prior group) absorbs that correlation,
# and the policy coefficient becomes the within (fixed effects) estimate. Leaving the
# regressors unpenalised (`fixed_alpha`, α = 0: a flat prior, the mixed model's fixed
# effects) makes the fit the correlated random effects model with its effect variances
# by REML (the evidence with flat regressors is the restricted likelihood).

# %%
pooled_X = np.column_stack([np.ones(n), covariates])
pooled, *_ = np.linalg.lstsq(pooled_X, y, rcond=None)
# two-way fixed effects OLS by sparse least squares (one time dummy dropped: the unit
# dummies already span the constant); its sd by Frisch–Waugh–Lovell: σ²/‖M policy‖²
Xfe = sp.hstack([X[:, :units], X[:, units + 1 : col], X[:, col:]], format="csr")
fe = lsqr(Xfe, y, atol=1e-12, btol=1e-12, iter_lim=20_000)[0]
resid = y - Xfe @ fe
sigma2 = resid @ resid / (n - Xfe.shape[1])
others = sp.hstack([Xfe[:, : col - 1], Xfe[:, col:]], format="csr")
policy_resid = policy - others @ lsqr(others, policy, atol=1e-12, btol=1e-12, iter_lim=20_000)[0]
fe_sd = np.sqrt(sigma2 / (policy_resid @ policy_resid))
unit_mean_policy = (np.bincount(unit, policy) / np.bincount(unit))[unit]
Xm, groups_m = panel_design(unit_mean_policy[:, None])
mundlak = BayesianLinearRegression(
    solver="cg", prior_groups=groups_m, random_state=0, covariance_columns=[col]
).fit(Xm, y)
flat = BayesianLinearRegression(
    solver="cg",
    prior_groups=groups_m,
    random_state=0,
    covariance_columns=[col],
    fixed_alpha={"covariates": 0.0, "mundlak": 0.0},
).fit(Xm, y)
rows = [
    ("pooled OLS (no effects)", pooled[1], np.nan),
    ("blm, random effects", fit.coef_[col], np.sqrt(fit.coef_covariance_[0, 0])),
    ("blm, + Mundlak term", mundlak.coef_[col], np.sqrt(mundlak.coef_covariance_[0, 0])),
    ("blm, + Mundlak, flat", flat.coef_[col], np.sqrt(flat.coef_covariance_[0, 0])),
    ("fixed effects OLS", fe[col - 1], fe_sd),
]
print(f"policy coefficient (true {true_policy}):")
for label, coef, sd in rows:
    print(f"  {label:<25}{coef:>7.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}"))
gap = abs(mundlak.coef_[col] - fe[col - 1]) / fe_sd
print(f"Mundlak vs fixed effects: {gap:.2f} sd apart")
gap = abs(flat.coef_[col] - fe[col - 1]) / fe_sd
print(f"Mundlak with flat regressors vs fixed effects: {gap:.2f} sd apart")
