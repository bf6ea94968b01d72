r"""A posterior represented by its mean and k samples z_j ~ N(0, H⁻¹)."""

from __future__ import annotations

from dataclasses import dataclass, field

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class SampledPosterior(eqx.Module):
    """N(θ̄, H⁻¹) known through θ̄ and k zero-mean draws z_j ~ N(0, H⁻¹).

    Posterior draws of θ are ``mean + samples``. Moments of linear functionals are
    Monte Carlo estimates: Var(Jθ) ≈ (1/k) Σ_j (J z_j)², unbiased because E z_j = 0.
    """

    mean: Float[Array, " d"]
    samples: Float[Array, "k d"]

    @property
    def k(self) -> int:
        return int(self.samples.shape[0])

    def draws(self) -> Float[Array, "k d"]:
        """Posterior draws θ̄ + z_j."""
        return self.mean + self.samples

    def predictive_variance(self, rows: Float[Array, "t d"]) -> Float[Array, " t"]:
        """(1/k) Σ_j (J z_j)² for feature rows J (estimates diag(J H⁻¹ Jᵀ))."""
        return jnp.mean((self.samples @ rows.T) ** 2, axis=0)

    def predictive_covariance(self, rows: Float[Array, "t d"]) -> Float[Array, "t t"]:
        """(1/k) Σ_j (J z_j)(J z_j)ᵀ for feature rows J (estimates J H⁻¹ Jᵀ; rank ≤ k)."""
        proj = self.samples @ rows.T  # (k, t)
        return proj.T @ proj / self.k

    def diag_covariance(self) -> Float[Array, " d"]:
        """(1/k) Σ_j z_j², the estimate of diag(H⁻¹): unbiased, with relative standard
        deviation √(2/k) per entry (Gaussian draws), so √ of it is off by about 1/√(2k)."""
        return jnp.mean(self.samples**2, axis=0)

    def covariance(self) -> Float[Array, "d d"]:
        """(1/k) Σ_j z_j z_jᵀ (dense; small d only)."""
        return self.samples.T @ self.samples / self.k


@dataclass
class Diagnostics:
    """Convergence record of an iterative solver, one entry per logged step.

    ``objective`` and ``grad_norm`` are per logged step and per column (mean first,
    then the samples); ``rel_change`` is ‖x_t − x_{t−Δ}‖/‖x_t‖ over the columns."""

    step: list[int] = field(default_factory=list)
    objective: list[np.ndarray] = field(default_factory=list)
    grad_norm: list[np.ndarray] = field(default_factory=list)
    rel_change: list[float] = field(default_factory=list)
    learning_rate: float = float("nan")
    converged: bool = False

    def log(self, step: int, objective, grad_norm, rel_change: float) -> None:
        self.step.append(int(step))
        self.objective.append(np.asarray(objective))
        self.grad_norm.append(np.asarray(grad_norm))
        self.rel_change.append(float(rel_change))
