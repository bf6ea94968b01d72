r"""The random quadratics whose minimisers are posterior samples (sample-then-optimise).

For sample j draw θ⁰_j ~ N(0, A⁻¹) and per-row noise ξ_{j,i} ~ N(0, I_m). Then

    z_j = H⁻¹ (Φᵀ L ξ_j + A θ⁰_j) ~ N(0, H⁻¹),

because Cov(ΦᵀLξ_j + Aθ⁰_j) = ΦᵀBΦ + A = H. Two objectives have z_j as minimiser:

* standard:     ½‖Φz‖²_B − zᵀΦᵀLξ_j + ½‖z − θ⁰_j‖²_A   (noise inside the data term);
* low-variance: ½‖Φz‖²_B + ½‖z − θⁿ_j‖²_A,  θⁿ_j = A⁻¹ΦᵀLξ_j + θ⁰_j   (noise moved into
  the regulariser with one full pass; the data term has no noise, so its minibatch
  gradient variance vanishes at z = 0).

Both use the same ξ and θ⁰, so they have the same minimiser exactly. The mean is
the minimiser of ½‖Y − Φθ‖²_B + ½‖θ‖²_A, i.e. H θ̄ = ΦᵀBY.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from blm import operators as ops
from blm._checks import positive_int
from blm.features import Features
from blm.likelihoods import Likelihood
from blm.priors import Prior

Objective = Literal["low-variance", "standard"]


class SampleTargets(eqx.Module):
    """Everything that defines the k sample objectives: θ⁰ (k, d), the noise key, and in
    the low-variance form the regulariser centres θⁿ (k, d); with ``data_rhs`` also the
    mean's right-hand side ΦᵀBY (d,), from the same pass."""

    theta0: Float[Array, "k d"]
    noise_key: jax.Array
    centres: Float[Array, "k d"]
    data_rhs: Float[Array, " d"] | None = None

    @property
    def k(self) -> int:
        return int(self.theta0.shape[0])

    def rhs(self, prior: Prior) -> Float[Array, "k d"]:
        """A θⁿ_j = ΦᵀLξ_j + Aθ⁰_j: the right-hand sides of H z_j = r_j."""
        return prior.mul(self.centres)

    def noise(self, prior: Prior) -> Float[Array, "k d"]:
        """ΦᵀLξ_j = A(θⁿ_j − θ⁰_j): the data part of the right-hand sides (no pass)."""
        return prior.mul(self.centres - self.theta0)


def draw_targets(
    features: Features,
    likelihood: Likelihood,
    prior: Prior,
    dataset,
    key: jax.Array,
    k: int,
    block_size: int | None = None,
    data_rhs: bool = False,
    noise_rhs: Float[Array, "k1 d"] | None = None,
) -> SampleTargets:
    """Draw θ⁰ and the noise for k samples and form θⁿ = A⁻¹ΦᵀLξ + θ⁰ (one full pass);
    with ``data_rhs`` the same pass also gives the mean's ΦᵀBY (solvers that need it save
    a pass: one more product per block instead of one more read of the data).
    ``noise_rhs``: that pass's [ΦᵀBY; ΦᵀLξ_1; …; ΦᵀLξ_k] (k + 1, d) where the caller
    knows it (``targets_pass`` with this key: an EM loop with one key rescales its
    first), so no pass is made."""
    if not isinstance(data_rhs, bool):
        raise TypeError(f"data_rhs must be True or False, got {data_rhs!r}")
    k_prior, k_noise = _prior_and_noise_keys(key)
    theta0 = prior.sample(k_prior, k)
    if noise_rhs is None:
        products = ops.noise_rhs(features, likelihood, dataset, k_noise, k, block_size, data_rhs)
        rhs, noise = (products[0], products[1:]) if data_rhs else (None, products)
    else:
        products = jnp.asarray(noise_rhs)
        if products.shape != (k + 1, prior.d):
            raise ValueError(
                f"noise_rhs must have shape (n_samples + 1, d) = {(k + 1, prior.d)}, "
                f"got {products.shape}"
            )
        if not bool(jnp.all(jnp.isfinite(products))):
            raise ValueError("noise_rhs holds non-finite values")
        rhs, noise = (products[0] if data_rhs else None), products[1:]
    centres = prior.solve(noise) + theta0
    return SampleTargets(theta0=theta0, noise_key=k_noise, centres=centres, data_rhs=rhs)


def targets_pass(
    features: Features,
    likelihood: Likelihood,
    dataset,
    key: jax.Array,
    k: int,
    block_size: int | None = None,
) -> Float[Array, "k1 d"]:
    """[ΦᵀBY; ΦᵀLξ_1; …; ΦᵀLξ_k] (k + 1, d): the full pass ``draw_targets`` makes for
    the solver key ``key`` (the ξ of its sample objectives), for a caller to hand back as
    ``noise_rhs``. For B = diag(β) and features that do not depend on β, ΦᵀBY scales by
    β and ΦᵀLξ_j by √β (per output), so one pass serves every β with the same key."""
    k_noise = _prior_and_noise_keys(split_key(key)[0])[1]
    return ops.noise_rhs(
        features, likelihood, dataset, k_noise, positive_int(k, "k"), block_size, True
    )


def _prior_and_noise_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(key of θ⁰, key of ξ) from the targets' key: the one derivation ``draw_targets``
    and ``targets_pass`` share, so a handed-back pass is the noise of this key."""
    k_prior, k_noise = jax.random.split(key)
    return k_prior, k_noise


def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(key of the sample targets, key of the solver's own randomness): every solver
    splits this way, so the same key gives the same sample objectives in each."""
    k_targets, k_solver = jax.random.split(key)
    return k_targets, k_solver


def jacobi(
    features: Features,
    likelihood: Likelihood,
    prior: Prior,
    dataset,
    block_size: int | None = None,
    data_diagonal: Float[Array, " d"] | None = None,
) -> Array:
    """diag(H) = diag(ΦᵀBΦ) + diag(A): the Jacobi preconditioner (one pass over the data,
    none when the caller knows ``data_diagonal`` = diag(ΦᵀBΦ): shape (d,), finite, ≥ 0)."""
    if data_diagonal is None:
        return ops.normal_diagonal(features, likelihood, dataset, block_size) + prior.precision()
    diagonal = jnp.asarray(data_diagonal)
    if diagonal.shape != (prior.d,):
        raise ValueError(f"data_diagonal must have shape (d,) = {(prior.d,)}, got {diagonal.shape}")
    if not bool(jnp.all(jnp.isfinite(diagonal) & (diagonal >= 0))):
        raise ValueError("data_diagonal must be finite and >= 0 (it is diag(ΦᵀBΦ))")
    return diagonal + prior.precision()
