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

On the coordinates of a flat prior group (α_g = 0, ``blm.priors``) there is no θ⁰ and
no regulariser to move the noise into: there θ⁰ = θⁿ = 0 and the noise stays as a
linear term ℓ_j = (ΦᵀLξ_j) restricted to them, computed in the same full pass, so the
low-variance objective is ½‖Φz‖²_B + ½‖z − θⁿ_j‖²_A − ℓ_jᵀz, whose minibatch gradient
still carries no noise. The right-hand side is Aθⁿ_j + ℓ_j = ΦᵀLξ_j + Aθ⁰_j as before.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
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
    mean's right-hand side ΦᵀBY (d,), from the same pass; with flat prior groups the
    noise on their coordinates, ``linear`` (k, d) (zero elsewhere; None without them)."""

    theta0: Float[Array, "k d"]
    noise_key: jax.Array
    centres: Float[Array, "k d"]
    data_rhs: Float[Array, " d"] | None = None
    linear: Float[Array, "k d"] | None = None

    @property
    def k(self) -> int:
        return int(self.theta0.shape[0])

    def rhs(self, prior: Prior) -> Float[Array, "k d"]:
        """A θⁿ_j + ℓ_j = ΦᵀLξ_j + Aθ⁰_j: the right-hand sides of H z_j = r_j."""
        return self._plus_linear(prior.mul(self.centres))

    def noise(self, prior: Prior) -> Float[Array, "k d"]:
        """ΦᵀLξ_j = A(θⁿ_j − θ⁰_j) + ℓ_j: the data part of the right-hand sides (no pass)."""
        return self._plus_linear(prior.mul(self.centres - self.theta0))

    def _plus_linear(self, v: Float[Array, "k d"]) -> Float[Array, "k d"]:
        return v if self.linear is None else v + self.linear


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
    flat = prior.has_flat
    if flat:  # θ⁰ = 0 where the prior is flat: only Aθ⁰ enters
        proper = prior.proper()
        eps = jax.random.normal(k_prior, (k, prior.d), prior.alpha.dtype)
        theta0 = proper * eps / jnp.sqrt(jnp.where(proper > 0, prior.precision(), 1.0))
    else:
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
    if not flat:
        centres = prior.solve(noise) + theta0
        return SampleTargets(theta0=theta0, noise_key=k_noise, centres=centres, data_rhs=rhs)
    centres = proper * noise / jnp.where(proper > 0, prior.precision(), 1.0) + theta0
    linear = (1.0 - proper) * noise
    return SampleTargets(theta0, k_noise, centres, rhs, linear)


def targets_pass(problem, key: jax.Array, k: int) -> Float[Array, "k1 d"]:
    """[ΦᵀBY; ΦᵀLξ_1; …; ΦᵀLξ_k] (k + 1, d): the full pass ``draw_targets`` makes for
    the solver key ``key`` (the ξ of its sample objectives), for a caller to hand back as
    ``Passes.noise_rhs``. For B = diag(β) and features that do not depend on β, ΦᵀBY
    scales by β and ΦᵀLξ_j by √β (per output), so one pass serves every β with the same
    key.

    Args:
        problem: a ``blm.solvers.problem.Problem`` (its prior is not used).
        key: the solver's key.
        k: the number of samples (≥ 1).

    Returns:
        (k + 1, d) the mean's right-hand side and each sample's noise term.
    """
    k_noise = _prior_and_noise_keys(split_key(key)[0])[1]
    p = problem
    return ops.noise_rhs(
        p.features, p.likelihood, p.dataset, k_noise, positive_int(k, "k"), p.block_size, True
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
    none when the caller knows ``data_diagonal`` = diag(ΦᵀBΦ): shape (d,), finite, ≥ 0).
    A zero (a flat prior coordinate that no row touches: H singular) is refused."""
    if data_diagonal is None:
        diagonal = ops.normal_diagonal(features, likelihood, dataset, block_size)
    else:
        diagonal = jnp.asarray(data_diagonal)
        if diagonal.shape != (prior.d,):
            raise ValueError(
                f"data_diagonal must have shape (d,) = {(prior.d,)}, got {diagonal.shape}"
            )
        if not bool(jnp.all(jnp.isfinite(diagonal) & (diagonal >= 0))):
            raise ValueError("data_diagonal must be finite and >= 0 (it is diag(ΦᵀBΦ))")
    h = diagonal + prior.precision()
    if prior.has_flat and not bool(jnp.all(h > 0)):
        empty = np.flatnonzero(np.asarray(h) <= 0)
        raise ValueError(
            f"prior: coordinates {empty[:10].tolist()} have a flat prior (alpha 0) and no "
            "data (a zero column): H is singular; drop them or give their group an alpha > 0"
        )
    return h
