r"""What every Gaussian posterior N(θ̄, H⁻¹) gives, however it is held (abstract):
``ExactPosterior`` (a Cholesky factor) and ``SampledPosterior`` (k draws z_j ~ N(0, H⁻¹)).

Example:
    >>> import jax.numpy as jnp
    >>> from blm.solvers.sampled import SampledPosterior
    >>> post = SampledPosterior(mean=jnp.zeros(2), samples=jnp.eye(2))
    >>> print(post.predictive_variance(jnp.ones((1, 2))))  # (1/k) Σ_j (J z_j)²
    [1.]
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
from jaxtyping import Array, Float


class Posterior(eqx.Module):
    """N(θ̄, H⁻¹): its mean, covariance, marginal and predictive variances, and draws."""

    mean: eqx.AbstractVar[Float[Array, " d"]]

    @abc.abstractmethod
    def covariance(self) -> Float[Array, "d d"]:
        """H⁻¹ (exact, or the samples' second moment): d² numbers."""

    @abc.abstractmethod
    def diag_covariance(self) -> Float[Array, " d"]:
        """diag(H⁻¹), the marginal variances."""

    @abc.abstractmethod
    def predictive_variance(self, rows: Float[Array, "t d"]) -> Float[Array, " t"]:
        """diag(J H⁻¹ Jᵀ) for feature rows J."""

    @abc.abstractmethod
    def predictive_covariance(self, rows: Float[Array, "t d"]) -> Float[Array, "t t"]:
        """J H⁻¹ Jᵀ for feature rows J."""

    @abc.abstractmethod
    def zero_mean_draws(self, key: jax.Array, k: int) -> Float[Array, "k d"]:
        """k draws z ~ N(0, H⁻¹) (add ``mean`` for posterior draws): fresh ones from the
        factor, or the first k stored ones (``key`` unused).

        Raises:
            ValueError: more draws asked of a sampled posterior than it holds.
        """
