# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Linearised Laplace for an Equinox MLP on the digits
#
# Train an MLP on scikit-learn's bundled 8 × 8 digits (MAP, weight decay), linearise it
# around the trained weights (features = the network's Jacobian, applied by JVPs), fit
# the prior precision by sample-based MacKay EM with the SGD sampler (retraining the
# network at the α the evidence picks until they agree), and compare the
# predictive distributions, with exact last-layer Laplace beside them: held-out NLL,
# calibration (ECE), and how well predictive entropy tells rotated digits and patches of
# photographs apart from digits (AUROC).
#
# Set `BLM_NOTEBOOK_SMALL=1` for the quick version the test suite runs.

# %%
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import blm
from blm.datasets import digits_split, image_patches, rotate_digits
from blm.uncertainty.metrics import classification_report

small = os.environ.get("BLM_NOTEBOOK_SMALL") == "1"
Xtr, ytr, Xte, yte = digits_split(seed=0)
ood = {"rotated": rotate_digits(Xte, 90.0), "patches": image_patches(len(Xte), seed=0)}
lik = blm.Categorical(10)
k_init, k_train = jax.random.split(jax.random.PRNGKey(0))

# %% [markdown]
# ## Train and fit α together (MacKay's evidence framework)
#
# Linearised Laplace centres the posterior at the trained weights, so they should be the
# mode under the prior whose α the evidence picks. Train at a guess (α = 0.01), then
# alternate a few sample-based EM steps on the linearisation with retraining at the new
# α, until the two agree. (EM alone from a network trained at α = 0.01 does not settle:
# `fit` warns when its last step still moves α by more than 25 %.)

# %%
fit = blm.train_with_evidence(
    eqx.nn.MLP(64, 10, 32 if small else 64, 2, key=k_init),
    (Xtr, ytr),
    lik,
    k_train,
    alpha=1e-2,
    rounds=3 if small else 8,
    training=blm.Training(first_steps=1000 if small else 6000, steps=500 if small else 3000),
    em=blm.EMOptions(
        n_samples=8 if small else 32,
        em_steps=2 if small else 3,
        solver=blm.SGD(n_steps=200 if small else 600),
    ),
)
net, lm, post = fit.model, fit.linearised, fit.posterior
print(f"d = {lm.features.d} weights; trained at alpha {[round(a, 3) for a in fit.alphas]}")
print(f"EM-fitted alpha = {float(post.alpha[0]):.4g} (converged: {fit.converged})")

# %% [markdown]
# ## Exact last-layer Laplace
#
# The last layer alone has a GGN small enough to form (650 weights at 64 hidden units):
# `solver="exact"` runs exact MacKay steps on it, with no sampling noise, and predicts with
# the exact logit variances J(x)H⁻¹J(x)ᵀ. `filter_spec` selects its weight and bias.

# %%
off = jax.tree_util.tree_map(lambda _: False, net)
last = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), off, (True, True))
lm_last = blm.linearise(net, (Xtr, ytr), lik, filter_spec=last)
post_last = lm_last.fit(solver="exact", em_steps=100)
print(f"last layer: d = {lm_last.features.d}, exact MacKay alpha = {float(post_last.alpha[0]):.4g}")

# %% [markdown]
# ## MAP against linearised Laplace


# %%
def map_probs(X):
    return np.asarray(jax.nn.softmax(jax.vmap(net)(jnp.asarray(X, jnp.result_type(float)))))


predictors = {
    "MAP": map_probs,
    "LLA (probit)": lambda X: post.predict_proba(X, method="probit"),
    "LLA (mc)": lambda X: post.predict_proba(X, method="mc"),
    "last layer": lambda X: post_last.predict_proba(X, method="probit"),
}
print(f"{'method':<14}{'NLL':>8}{'acc':>8}{'ECE':>8}" + "".join(f"{'AUROC ' + k:>16}" for k in ood))
for name, predict in predictors.items():
    p_in = predict(Xte)
    reports = {k: classification_report(p_in, yte, predict(X)) for k, X in ood.items()}
    r = reports["rotated"]
    aurocs = "".join(f"{reports[k]['auroc']:>16.3f}" for k in ood)
    print(f"{name:<14}{r['nll']:>8.4f}{r['accuracy']:>8.4f}{r['ece']:>8.4f}{aurocs}")

# %% [markdown]
# At full size (2 cores): MAP NLL 0.054, ECE 0.024; the whole-network linearised Laplace
# is wider in distribution (NLL 0.34) but tells rotated digits apart by its entropy
# (AUROC 0.90 against MAP's 0.60); exact last-layer Laplace sits between in distribution
# (NLL 0.17) and hardly sees the rotation (AUROC 0.62): the uncertainty that finds
# rotated digits lives in the earlier layers.
