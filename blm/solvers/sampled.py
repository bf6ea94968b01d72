r"""A posterior represented by its mean and k samples z_j ~ N(0, H⁻¹)."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from blm.solvers.posterior import Posterior


class SampledPosterior(Posterior):
    """N(θ̄, H⁻¹) known through θ̄ and k zero-mean draws z_j ~ N(0, H⁻¹).

    Posterior draws of θ are ``mean + samples``. Moments of linear functionals are
    Monte Carlo estimates: Var(Jθ) ≈ (1/k) Σ_j (J z_j)², unbiased because E z_j = 0.

    A sampler that drew z_j = H⁻¹r_j from right-hand sides r_j ~ N(0, H) and knows
    D = diag(H) (the Jacobi preconditioner) also keeps ``precision_diagonal`` D and
    ``rhs_second_moment`` (1/k) Σ_j r_j²: ``diag_covariance`` then uses c_j = D⁻¹r_j as
    a control variate (see there).
    """

    mean: Float[Array, " d"]
    samples: Float[Array, "k d"]
    precision_diagonal: Float[Array, " d"] | None = None
    rhs_second_moment: Float[Array, " d"] | None = None

    @classmethod
    def solved(
        cls,
        x: Float[Array, "k1 d"],
        diagonal: Float[Array, " d"] | None = None,
        rhs: Float[Array, "k d"] | None = None,
    ) -> SampledPosterior:
        """θ̄ = x[0] and z_j = x[j] solved from H z_j = r_j (``rhs``, rows r_j), with
        D = diag(H) (``diagonal``) kept for the control variate where both are given."""
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(
                f"x must have shape (k + 1, d), the mean then k >= 1 samples, got {x.shape}"
            )
        if diagonal is None or rhs is None:
            return cls(mean=x[0], samples=x[1:])
        diagonal, rhs = jnp.asarray(diagonal), jnp.asarray(rhs)
        k, d = x.shape[0] - 1, x.shape[1]
        if diagonal.shape != (d,):
            raise ValueError(f"diagonal must be diag(H) of shape ({d},), got {diagonal.shape}")
        if rhs.shape != (k, d):
            raise ValueError(
                f"rhs must hold the {k} samples' r_j, shape ({k}, {d}), got {rhs.shape}"
            )
        return cls(x[0], x[1:], diagonal, jnp.mean(rhs**2, axis=0))

    @property
    def k(self) -> int:
        return int(self.samples.shape[0])

    def zero_mean_draws(self, key=None, k: int | None = None) -> Float[Array, "k d"]:
        """The first k stored draws z_j (all with k None; ``key`` unused)."""
        k = self.k if k is None else k
        if k > self.k:
            raise ValueError(f"n_samples: at most the {self.k} stored draws, asked for {k}")
        return self.samples[:k]

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
        """The estimate of v = diag(H⁻¹): (1/k) Σ_j z_j², unbiased with relative standard
        deviation √(2/k) per entry (Gaussian draws).

        With D = diag(H) and the right-hand sides' (1/k) Σ_j r_j² known, the control
        variate c_j = D⁻¹r_j has E c_ji² = (D⁻¹HD⁻¹)_ii = 1/D_i and Cov(z_ji, c_ji) =
        (H⁻¹HD⁻¹)_ii = 1/D_i, so for Gaussian pairs Cov(z², c²) = 2/D_i² = Var(c²): the
        optimal coefficient is exactly 1, and

            v̂_i = (1/k) Σ_j (z_ji² − c_ji²) + 1/D_i,   Var v̂_i = (2/k)(v_i² − 1/D_i²),

        unbiased, never noisier than the plain mean (v_i ≥ 1/D_i always) and exact as H
        nears diagonal (one-hot fixed effects: D_i v_i ≈ 1). It is then floored at
        1/D_i, a bound the true v_i never crosses."""
        plain = jnp.mean(self.samples**2, axis=0)
        if self.precision_diagonal is None:
            return plain
        inv_d = 1.0 / self.precision_diagonal
        controlled = plain - self.rhs_second_moment * inv_d**2 + inv_d
        return jnp.maximum(controlled, inv_d)

    def diag_covariance_rel_sd(self) -> Float[Array, " d"]:
        """The relative standard deviation of each entry of ``diag_covariance``:
        √(2/k), or with the control variate √(2/k)·√(1 − 1/(D_i v̂_i)²) (v̂ in place of
        the true v). Half of it is the relative error of √v, a marginal sd."""
        plain = jnp.full(self.samples.shape[1], jnp.sqrt(2.0 / self.k))
        if self.precision_diagonal is None:
            return plain
        ratio = 1.0 / (self.precision_diagonal * self.diag_covariance())
        return plain * jnp.sqrt(jnp.clip(1.0 - ratio**2, 0.0, 1.0))

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
