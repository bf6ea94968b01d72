"""Solvers: the posterior mean θ̄ = H⁻¹ΦᵀBY and samples z ~ N(0, H⁻¹) of the linear model."""

from blm.solvers.exact import ExactPosterior, whiten

__all__ = ["ExactPosterior", "whiten"]
