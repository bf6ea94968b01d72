# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Econometrics with grouped priors: US inflation on macro indicators
#
# statsmodels' `macrodata` (quarterly US series, 1959–2009). Inflation is regressed on
# nine standardised indicators (growth rates of GDP, consumption, investment, …, the
# T-bill rate, unemployment) and their lags. Each indicator, with its lags, is one prior
# group with its own precision α_g: the evidence shrinks groups that do not help
# (automatic relevance determination), a data-driven alternative to choosing lags and
# regressors by hand. The exact solver and the SGD sampler are compared, and the
# result against scikit-learn's `BayesianRidge` (one shared α).
#
# Set `BLM_NOTEBOOK_SMALL=1` for the quick version the test suite runs.

# %%
import os

import numpy as np
from sklearn.linear_model import BayesianRidge
from sklearn.model_selection import TimeSeriesSplit, cross_val_score

from blm import SGD, BayesianLinearRegression
from blm.datasets import MACRO_INDICATORS, macro_design

small = os.environ.get("BLM_NOTEBOOK_SMALL") == "1"
names = MACRO_INDICATORS
X, y, groups = macro_design(lags=2 if small else 4)
cut = int(0.8 * len(y))
print(
    f"{len(y)} quarters, {X.shape[1]} regressors in {groups.max() + 1} groups; test from row {cut}"
)

# %% [markdown]
# ## One α per indicator: exact evidence maximisation and the sampled EM

# %%
exact = BayesianLinearRegression(prior_groups=groups, max_iter=500, tol=1e-6).fit(X[:cut], y[:cut])
sampled = BayesianLinearRegression(
    solver=SGD(n_steps=500 if small else 3000, batch_size=64),
    prior_groups=groups,
    n_samples=16 if small else 64,
    random_state=0,
    max_iter=10 if small else 40,
    tol=1e-3,
    covariance_columns=[6, 7],  # the current T-bill rate and unemployment (see below)
).fit(X[:cut], y[:cut])
print(f"{'indicator':<10}{'alpha exact':>13}{'alpha sgd':>11}{'|coef|':>9}")
for g, name in enumerate(names):
    size = np.linalg.norm(exact.coef_[groups == g])
    print(f"{name:<10}{exact.alpha_[g]:>13.3g}{sampled.alpha_[g]:>11.3g}{size:>9.3f}")

# %% [markdown]
# ## Credible intervals
#
# `coef_std_` is each coefficient's posterior sd √diag(H⁻¹): exact for the exact solver,
# estimated from the k samples for sgd (to about 1/√(2k), less where H is nearly
# diagonal: diag(H) serves as a control variate; `summary()` prints the median error).
# For the coefficients a question is about, here the current T-bill rate and
# unemployment (a Phillips curve), `covariance_columns` solves their joint covariance
# exactly after the sgd fit (by cg on H, as it would beside a million nuisance
# coefficients). The sgd columns are at the sgd fit's own α, β; a 95 % interval is
# coef ± 1.96 sd.

# %%
k = sampled.n_samples
print(f"{'':<9}{'coef':>8}{'sd exact':>10}{f'sgd: sd, {k} samples':>22}{'sd solved':>11}")
for j, col in enumerate(sampled.covariance_columns):
    solved = np.sqrt(sampled.coef_covariance_[j, j])
    print(
        f"{names[col]:<9}{exact.coef_[col]:>8.3f}{exact.coef_std_[col]:>10.3f}"
        f"{sampled.coef_std_[col]:>22.3f}{solved:>11.3f}"
    )
cov = sampled.coef_covariance_
print(f"posterior correlation of the two: {cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]):.2f}")
print(sampled.summary(max_rows=5))  # the table a statsmodels user reads first

# %% [markdown]
# ## Out of sample: grouped prior against one shared α

# %%
shared = BayesianRidge().fit(X[:cut], y[:cut])
for label, model in (
    ("grouped (exact)", exact),
    ("grouped (sgd)", sampled),
    ("BayesianRidge", shared),
):
    mean, std = model.predict(X[cut:], return_std=True)
    rmse = np.sqrt(np.mean((y[cut:] - mean) ** 2))
    nll = np.mean(0.5 * np.log(2 * np.pi * std**2) + 0.5 * ((y[cut:] - mean) / std) ** 2)
    print(f"{label:<16} test RMSE {rmse:.3f}, NLL {nll:.3f}")

# %% [markdown]
# ## Model selection and weights, as with any scikit-learn regressor
#
# Time-ordered cross-validation (each fold fitted on the quarters before it) compares the
# grouped prior with one shared α, and `sample_weight` discounts old quarters (a weight
# halving every 10 years: discounted least squares, with α, β still fitted by evidence).
# On these quarters the folds agree with the held-out test above: the shared α forecasts
# better than the grouped prior, and discounting the early quarters helps more than either.

# %%
folds = TimeSeriesSplit(n_splits=4)
for label, model in (
    ("grouped", BayesianLinearRegression(prior_groups=groups)),
    ("shared α", BayesianLinearRegression()),
):
    rmse = -cross_val_score(
        model, X[:cut], y[:cut], cv=folds, scoring="neg_root_mean_squared_error"
    )
    print(f"{label:<9} time-ordered CV RMSE {rmse.mean():.3f} (folds {np.round(rmse, 3)})")
age_years = (cut - 1 - np.arange(cut)) / 4
recent = BayesianLinearRegression(prior_groups=groups).fit(
    X[:cut], y[:cut], sample_weight=0.5 ** (age_years / 10)
)
mean = recent.predict(X[cut:])
print(f"discounted (half-life 10 years): test RMSE {np.sqrt(np.mean((y[cut:] - mean) ** 2)):.3f}")
