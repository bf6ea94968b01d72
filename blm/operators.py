r"""Full passes of the linear model over a dataset, one block of rows at a time.

    matvec(z)         = Φ z            (n, m)   (rows in dataset order)
    rmatvec(v)        = Φᵀ v           (d,)
    normal_matvec(z)  = Φᵀ B Φ z       (…, d)   (z may carry a leading sample axis)
    rhs()             = Φᵀ B Y         (d,)

Only one block of inputs is in memory at a time, so these work on HDF5 data larger
than memory. The per-block kernels are jit-compiled once per block shape; the primal
work of the feature map is shared across a leading sample axis of z.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from blm.features import Features
from blm.likelihoods import Likelihood


def _check(features: Features, dataset) -> None:
    if dataset.m != features.m:
        raise ValueError(
            f"dataset has m={dataset.m} outputs per row but features have m={features.m}"
        )


@eqx.filter_jit
def _block_matvec(features, xb, z):
    _, jvp, _ = features.linearize(xb)
    return jax.vmap(jvp)(z) if z.ndim == 2 else jvp(z)


@eqx.filter_jit
def _block_rmatvec(features, xb, v):
    _, _, vjp = features.linearize(xb)
    return jax.vmap(vjp)(v) if v.ndim == 3 else vjp(v)


@eqx.filter_jit
def _block_normal(features, likelihood, xb, z):
    f0, jvp, vjp = features.linearize(xb)

    def one(zi):
        return vjp(likelihood.precision_mul(f0, jvp(zi)))

    return jax.vmap(one)(z) if z.ndim == 2 else one(z)


@eqx.filter_jit
def _block_rhs(features, likelihood, xb, yb):
    f0, _, vjp = features.linearize(xb)
    return vjp(likelihood.precision_mul(f0, yb))


def matvec(features: Features, dataset, z: Float[Array, "... d"], block_size: int | None = None):
    """Φ z, shape (n, m) (or (k, n, m) for z of shape (k, d))."""
    _check(features, dataset)
    out = [_block_matvec(features, xb, z) for xb, _ in dataset.blocks(block_size)]
    return jnp.concatenate(out, axis=-2)


def rmatvec(features: Features, dataset, v: Float[Array, "... n m"], block_size: int | None = None):
    """Φᵀ v for v of shape (n, m) (or (k, n, m)), rows in dataset order."""
    _check(features, dataset)
    if v.shape[-2:] != (dataset.n, dataset.m):
        raise ValueError(f"v must end in shape (n, m)={(dataset.n, dataset.m)}, got {v.shape}")
    total, start = 0.0, 0
    for xb, _ in dataset.blocks(block_size):
        stop = start + xb.shape[0]
        total = total + _block_rmatvec(features, xb, v[..., start:stop, :])
        start = stop
    return total


def normal_matvec(
    features: Features,
    likelihood: Likelihood,
    dataset,
    z: Float[Array, "... d"],
    block_size: int | None = None,
):
    """ΦᵀBΦ z (the data part of H applied to z), summed over blocks."""
    _check(features, dataset)
    total = 0.0
    for xb, _ in dataset.blocks(block_size):
        total = total + _block_normal(features, likelihood, xb, z)
    return total


def rhs(features: Features, likelihood: Likelihood, dataset, block_size: int | None = None):
    """ΦᵀB Y, the right-hand side of H θ̄ = ΦᵀBY."""
    _check(features, dataset)
    total = 0.0
    for xb, yb in dataset.blocks(block_size):
        total = total + _block_rhs(features, likelihood, xb, yb)
    return total
