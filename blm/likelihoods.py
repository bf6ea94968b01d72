r"""Likelihoods p(y | f) of the linear model's outputs f = φ(x) θ ∈ ℝ^m.

Each one supplies, per data point i, the precision B_i (the Hessian of −log p(y_i | f)
in f) and a factor L_i with L_i L_iᵀ = B_i. Solvers use B only through these:
``precision_mul`` (B_i v_i), ``sqrt_mul`` (L_i ξ_i, which turns standard normal noise ξ
into noise of covariance B, also for a singular B) and ``sqrt_precision`` (the dense
L_i, to whiten a small design for the exact solver).

``Gaussian`` is here. Non-Gaussian likelihoods (``Bernoulli``, ``Categorical``) subclass
``Likelihood`` the same way, with B_i evaluated at the linearisation point; they come
with the linearised-Laplace module, which produces their pseudo-targets.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from blm._checks import positive


class Likelihood(eqx.Module):
    """Interface every likelihood implements; ``f`` and ``y`` have shape ``(b, m)``."""

    @property
    @abc.abstractmethod
    def m(self) -> int:
        """Number of outputs per data point."""

    @abc.abstractmethod
    def precision_mul(self, f: Float[Array, "b m"], v: Float[Array, "b m"]) -> Float[Array, "b m"]:
        """B_i v_i for each row."""

    @abc.abstractmethod
    def sqrt_mul(self, f: Float[Array, "b m"], xi: Float[Array, "b m"]) -> Float[Array, "b m"]:
        """L_i ξ_i with L_i L_iᵀ = B_i."""

    @abc.abstractmethod
    def sqrt_precision(self, f: Float[Array, "b m"]) -> Float[Array, "b m m"]:
        """The factors L_i themselves (dense; for small problems)."""

    @abc.abstractmethod
    def precision_diagonal(self, f: Float[Array, "b m"]) -> Float[Array, "b m"]:
        """diag(B_i) for each row."""

    @abc.abstractmethod
    def log_likelihood(self, f: Float[Array, "b m"], y: Float[Array, "b m"]) -> Float[Array, ""]:
        """Σ_i log p(y_i | f_i)."""

    @abc.abstractmethod
    def logdet_precision(self, f: Float[Array, "b m"]) -> Float[Array, ""]:
        """Σ_i log det B_i (enters the evidence)."""


class Gaussian(Likelihood):
    r"""y_i ~ N(f_i, diag(β)⁻¹): one noise precision β_k per output k.

    B_i = diag(β) for every i, so L_i = diag(√β). With ``m`` outputs and a scalar β
    given, the same β is used for every output.
    """

    beta: Float[Array, " m"]

    def __init__(self, beta, m: int | None = None):
        beta_np = positive(beta, "beta").reshape(-1)
        if m is not None:
            if beta_np.shape[0] == 1:
                beta_np = beta_np.repeat(m)
            elif beta_np.shape[0] != m:
                raise ValueError(f"beta must have 1 or m={m} entries, got {beta_np.shape[0]}")
        self.beta = jnp.asarray(beta_np, dtype=jnp.result_type(float))

    def with_beta(self, beta) -> Gaussian:
        """The same likelihood with new noise precisions (traceable, no validation)."""
        beta = jnp.broadcast_to(jnp.asarray(beta, self.beta.dtype), self.beta.shape)
        return eqx.tree_at(lambda g: g.beta, self, beta)

    @property
    def m(self) -> int:
        return int(self.beta.shape[0])

    def precision_mul(self, f, v):
        return self.beta * v

    def sqrt_mul(self, f, xi):
        return jnp.sqrt(self.beta) * xi

    def precision_diagonal(self, f):
        return jnp.broadcast_to(self.beta, f.shape)

    def sqrt_precision(self, f):
        return jnp.broadcast_to(jnp.diag(jnp.sqrt(self.beta)), (f.shape[0], self.m, self.m))

    def log_likelihood(self, f, y):
        r = y - f
        n = f.shape[0]
        return 0.5 * (
            n * jnp.sum(jnp.log(self.beta))
            - jnp.sum(self.beta * r**2)
            - n * self.m * jnp.log(2 * jnp.pi)
        )

    def logdet_precision(self, f):
        return f.shape[0] * jnp.sum(jnp.log(self.beta))
