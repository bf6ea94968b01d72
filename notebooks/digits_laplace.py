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
# the prior precision by sample-based MacKay EM with the SGD sampler, and compare the
# predictive distributions: held-out NLL, calibration (ECE), and how well predictive
# entropy tells rotated digits and patches of photographs apart from digits (AUROC).
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
from blm.training import train_map
from blm.uncertainty.metrics import classification_report

small = os.environ.get("BLM_NOTEBOOK_SMALL") == "1"
Xtr, ytr, Xte, yte = digits_split(seed=0)
ood = {"rotated": rotate_digits(Xte, 90.0), "patches": image_patches(len(Xte), seed=0)}
lik = blm.Categorical(10)
k_init, k_train, k_post = jax.random.split(jax.random.PRNGKey(0), 3)

# %% [markdown]
# ## MAP training

# %%
net = eqx.nn.MLP(64, 10, 32 if small else 64, 2, key=k_init)
net = train_map(net, Xtr, ytr, lik, k_train, alpha=1e-2, n_steps=1000 if small else 6000)

# %% [markdown]
# ## Linearise and fit: the posterior over all weights, α by EM

# %%
lm = blm.linearise(net, (Xtr, ytr), lik)
post = lm.fit(
    n_samples=8 if small else 32,
    key=k_post,
    alpha_init=1e-2,
    em_steps=2 if small else 5,
    sgd_options={"n_steps": 200 if small else 600},
)
print(f"d = {lm.features.d} weights; EM-fitted alpha = {float(post.alpha[0]):.4g}")

# %% [markdown]
# ## MAP against linearised Laplace


# %%
def map_probs(X):
    return np.asarray(jax.nn.softmax(jax.vmap(net)(jnp.asarray(X, jnp.result_type(float)))))


predictors = {
    "MAP": map_probs,
    "LLA (probit)": lambda X: post.predict_proba(X, method="probit"),
    "LLA (mc)": lambda X: post.predict_proba(X, method="mc"),
}
print(f"{'method':<14}{'NLL':>8}{'acc':>8}{'ECE':>8}" + "".join(f"{'AUROC ' + k:>16}" for k in ood))
for name, predict in predictors.items():
    p_in = predict(Xte)
    reports = {k: classification_report(p_in, yte, predict(X)) for k, X in ood.items()}
    r = reports["rotated"]
    aurocs = "".join(f"{reports[k]['auroc']:>16.3f}" for k in ood)
    print(f"{name:<14}{r['nll']:>8.4f}{r['accuracy']:>8.4f}{r['ece']:>8.4f}{aurocs}")
