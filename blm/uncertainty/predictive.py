r"""Predictive distributions of a linearised model from posterior samples of its weights.

With the network output f̄(x) = f(w̄, x) and k samples z_j ~ N(0, H⁻¹), the linearised
predictive outputs are f̄(x) + J(x) z_j (one ``linearize`` per batch of inputs, shared by
all samples; the network is never re-run per sample). From them:

    regression:      mean f̄(x),  variance (1/k) Σ_j (J(x) z_j)² + 1/β
    classification:  Monte Carlo  p(y | x) ≈ (1/k) Σ_j softmax(f̄(x) + J(x) z_j)
                     probit       p(y | x) ≈ softmax(f̄(x) / √(1 + (π/8) v(x))),
                     v(x) = (1/k) Σ_j (J(x) z_j)² the per-logit variance (MacKay 1992),
                     or the exact diag J(x)H⁻¹J(x)ᵀ where H is factored (``solver="exact"``)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from blm.features import Features


@eqx.filter_jit
def _block_outputs(features: Features, xb, samples):
    f0, jvps, _ = features.linearize_many(xb)
    return f0, jnp.swapaxes(jvps(samples), 0, 1)


def sampled_outputs(
    features: Features, inputs, samples: Float[Array, "k d"], block_size: int = 256
) -> tuple[Float[Array, "t m"], Float[Array, "k t m"]]:
    """(f̄(x), J(x) z_j) for every input, ``block_size`` inputs at a time."""
    n = int(jax.tree_util.tree_leaves(inputs)[0].shape[0])
    parts = [
        _block_outputs(features, inputs[i : i + block_size], samples)
        for i in range(0, n, block_size)
    ]
    return jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts], axis=1)


def mc_probs(likelihood, f0: Float[Array, "t m"], fz: Float[Array, "k t m"]) -> Array:
    """(1/k) Σ_j probs(f̄ + J z_j)."""
    return jnp.mean(likelihood.probs(f0[None] + fz), axis=0)


def probit_from_variance(likelihood, f0: Float[Array, "t m"], var: Float[Array, "t m"]) -> Array:
    """probs(f̄ / √(1 + π v / 8)) for given logit variances v (e.g. exact J(x)H⁻¹J(x)ᵀ)."""
    return likelihood.probs(f0 / jnp.sqrt(1 + jnp.pi / 8 * var))
