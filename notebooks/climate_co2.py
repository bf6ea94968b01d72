# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Climate regression with uncertainty bands: Mauna Loa CO₂
#
# The weekly CO₂ record bundled with statsmodels, modelled as a quadratic trend plus a
# smooth function of time expanded in random Fourier features (a climate-style
# regression with many more features than a hand-built model would use). The prior
# precision α and the noise precision β are tuned by sample-based MacKay EM, the
# posterior is sampled by SGD (sample-then-optimise), and the samples give the
# uncertainty bands. The last ten years are held out to see how the bands widen when
# extrapolating.
#
# Open with `jupytext --to notebook climate_co2.py`, or run as a script. Set
# `BLM_NOTEBOOK_SMALL=1` for the quick version the test suite runs.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from blm import SGD, BayesianLinearRegression
from blm.datasets import co2_design

small = os.environ.get("BLM_NOTEBOOK_SMALL") == "1"
n_features = 100 if small else 1000

X, y, t = co2_design(n_features=n_features, lengthscale=0.1)
train = t < t.max() - 10
print(f"{X.shape[0]} weeks, {X.shape[1]} features; {train.sum()} weeks to fit")

# %% [markdown]
# ## Fit: EM over α and β around the SGD sampler
# `n_samples` posterior draws are optimised together; every EM step reuses their noise
# (common random numbers) and warm-starts from the previous step.

# %%
est = BayesianLinearRegression(
    solver=SGD(n_steps=300 if small else 3000, batch_size=256),
    n_samples=16 if small else 64,
    random_state=0,
    max_iter=5 if small else 20,
    tol=1e-3,
)
est.fit(X[train], y[train])
print(f"alpha = {est.alpha_:.4g}, beta = {est.beta_:.4g} (noise sd {est.beta_**-0.5:.3f} ppm)")
print(
    f"EM steps: {est.n_iter_}; effective number of parameters γ = {est.trajectory_.gamma[-1]:.1f}"
)

# %% [markdown]
# ## Predictive bands: mean ± 2 sd, with the held-out decade
# Compare the coverage on the fitted weeks with the held-out decade: random Fourier
# features are a parametric model, so beyond the data their predictive variance does not
# grow as a Gaussian process's would. The bands are honest about the noise and the
# weights, not about extrapolating the trend.

# %%
mean, std = est.predict(X, return_std=True)
inside = np.abs(y - mean) < 2 * std
print(f"within ±2 sd: {inside[train].mean():.2f} (fit), {inside[~train].mean():.2f} (held out)")
print(f"mean sd: {std[train].mean():.3f} ppm (fit), {std[~train].mean():.3f} ppm (held out)")

fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(t + 1958, y, ".", ms=1, color="k", label="observed")
ax.plot(t + 1958, mean, color="C0", lw=1, label="posterior mean")
ax.fill_between(t + 1958, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.3, label="±2 sd")
ax.axvline(t[train].max() + 1958, color="grey", ls="--", lw=1)
ax.set_xlabel("year")
ax.set_ylabel("CO₂ (ppm)")
ax.legend(loc="upper left")
fig.tight_layout()
fig.savefig(os.environ.get("BLM_NOTEBOOK_OUT", ".") + "/climate_co2.png", dpi=120)

# %% [markdown]
# ## The mean of a held-out year: joint uncertainty
# An annual mean is a weighted sum wᵀy* of weekly predictions. Their errors share the
# uncertain weights, so they are correlated: the sd of the mean is √(wᵀ Σ* w) with the
# joint predictive covariance Σ* (`return_cov`), not the independent-weeks √(Σ w_i² σ_i²).

# %%
year = ~train & (t <= t[train].max() + 1)
_, cov = est.predict(X[year], return_cov=True)
w = np.full(year.sum(), 1 / year.sum())
joint, independent = np.sqrt(w @ cov @ w), np.sqrt(np.sum(w**2 * np.diag(cov)))
print(
    f"first held-out year's mean CO₂: {w @ mean[year]:.2f} ± {2 * joint:.2f} ppm (2 sd, joint; "
    f"± {2 * independent:.2f} if the weeks were independent); observed {y[year].mean():.2f}"
)
