r"""Laplace's evidence of a GLM (``blm.glm``): its value at the MAP and the α update at
its stationary point, exact or from posterior draws.

    log p(y | α) ≈ log p(y | θ̂) − ½ θ̂ᵀAθ̂ + ½ log det A − ½ log det H(θ̂)
    ∂/∂α_g = 0:  α_g = γ_g / (‖θ̂_g‖² − u_gᵀθ̂_g),   u = H⁻¹ ∂log det H/∂θ,
                 γ_g = d_g − α_g Tr_g(H⁻¹)

MacKay's update is the u = 0 case: it holds B_i fixed, while B_i depends on θ̂ and θ̂ on
α (dθ̂/dα_g = −H⁻¹E_gθ̂). ∂log det H/∂θ = Σ_i φ_iᵀ ∇_f tr(B_i(f_i) S_i) with
S_i = φ̃_iH⁻¹φ̃_iᵀ: exact from the factored H, or with S_i estimated from k draws
z_j ~ N(0, H⁻¹) (unbiased) and H⁻¹ applied by conjugate gradients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from blm.evidence.loop import fixed_mask
from blm.features import SparseLinearFeatures
from blm.priors import Prior

if TYPE_CHECKING:  # blm.glm imports this module
    from blm.glm import GLMFeatures, GLMModel


def _row_covariances(features: GLMFeatures, xb, cov):
    """S_i = φ̃_i C φ̃_iᵀ (b, K, K) for C (d, d): by the rows' structure for dense rows
    (C mapped to the full coefficients once, then K² quadratic forms in x̃_i), from the
    dense rows otherwise."""
    if isinstance(features.base, SparseLinearFeatures):
        J = features.dense(xb)  # (b, m, d)
        return jnp.einsum("bkd,de,ble->bkl", J, cov, J)
    K, p1 = features.m, features.p + 1
    C = features.full(features.full(cov).T).reshape(K, p1, K, p1)  # T C Tᵀ
    return jnp.einsum("bj,kjlJ,bJ->bkl", xb, C, xb)


@eqx.filter_jit
def _block_logdet_gradient(features: GLMFeatures, likelihood, xb, cov):
    """This block's share of ∂ log det H / ∂θ at fixed H⁻¹ (``cov``):
    Σ_i φ_iᵀ ∇_f tr(B_i(f_i) S_i), S_i = φ̃_i H⁻¹ φ̃_iᵀ (φ̃ the scaled rows)."""
    return _trace_gradient(features, likelihood, xb, _row_covariances(features, xb, cov))


@eqx.filter_jit
def _block_sampled_logdet_gradient(features: GLMFeatures, likelihood, xb, samples):
    """``_block_logdet_gradient`` with S_i estimated from k draws z_j ~ N(0, H⁻¹):
    Ŝ_i = (1/k) Σ_j (φ̃_i z_j)(φ̃_i z_j)ᵀ (unbiased; one jvp per draw, nothing d × d)."""
    fz = jax.vmap(lambda z: features.jvp(xb, z))(samples)  # (k, b, m)
    S = jnp.einsum("jbk,jbl->bkl", fz, fz) / samples.shape[0]
    return _trace_gradient(features, likelihood, xb, S)


def _trace_gradient(features: GLMFeatures, likelihood, xb, S):
    """Σ_i φ_iᵀ ∇_f tr(B_i(f_i) S_i) at the rows' unscaled logits f_i, S_i fixed."""

    def trace(f):  # Σ_i tr(B_i(f_i) S_i): row l of B_i S_i via precision_mul
        BS = likelihood.precision_mul(f[:, None, :], jnp.swapaxes(S, 1, 2))
        return jnp.sum(jnp.trace(BS, axis1=1, axis2=2))

    s = features.row_scale(xb)[:, None]
    g_f = jax.grad(trace)(features.offset(xb))
    return features.vjp(xb, jnp.where(s > 0, g_f / jnp.where(s > 0, s, 1.0), 0.0))


def _laplace_alpha(model: GLMModel, features: GLMFeatures, post, prior: Prior, fixed) -> np.ndarray:
    r"""The fixed-point update of α for Laplace's evidence of a GLM,
    α_g = γ_g / (‖θ_g‖² − u_gᵀθ_g), u = H⁻¹ ∂log det H/∂θ: MacKay's γ_g/‖θ_g‖² with the
    curvature's dependence on the MAP (dθ̂/dα_g = −H⁻¹E_gθ̂) that MacKay's update drops;
    it is the stationary point of the Laplace evidence itself (with B fixed it is
    MacKay's). MacKay's where the corrected denominator is not positive."""
    cov = post.covariance()
    grad = None
    for xb, _, _ in model.labels.blocks(model.block_size):
        g = _block_logdet_gradient(features, model.likelihood, xb, cov)
        grad = g if grad is None else grad + g
    theta = post.mean
    gamma = prior.group_sizes - prior.group_sum(prior.precision() * post.diag_covariance())
    norm = prior.group_sum(theta**2)
    corrected = norm - prior.group_sum(post.cov_mul(grad) * theta)
    denominator = jnp.where(corrected > 0, corrected, norm)
    unseen = np.asarray(gamma <= UNDETERMINED * prior.group_sizes)
    new = np.asarray(gamma / jnp.where(unseen, 1.0, denominator), float)
    keep = fixed_mask(fixed, new.shape[0]) | (np.asarray(prior.alpha) == 0) | unseen
    return np.where(keep, np.asarray(prior.alpha, float), new)


UNDETERMINED = 1e-9
"""A group whose effective number of parameters γ_g is below this fraction of its size
has no direction the data see (e.g. all-zero columns): its weights sit at 0 for every
α_g, γ_g/‖θ_g‖² is 0/0, and its α_g is left where it is (the evidence is flat along it)."""


def _sampled_laplace_alpha(
    model: GLMModel, features: GLMFeatures, posterior, mackay: np.ndarray, prior: Prior, fixed
) -> np.ndarray:
    r"""``_laplace_alpha`` from a sampled posterior: MacKay's sampled update
    α_g = γ̂_g/‖m_g‖² (``mackay``, m the posterior mean) with the same curvature
    correction, α_g ‖m_g‖²/(‖m_g‖² − u_gᵀm_g), u = H⁻¹∂log det H/∂θ: the gradient
    estimated from the k draws z_j ~ N(0, H⁻¹) (``_block_sampled_logdet_gradient``, one
    pass over the data), H⁻¹ applied to it by ``cg_solve`` (one right-hand side; the
    draws' (1/k) Σ_j z_j z_jᵀ would be too noisy). MacKay's where the corrected
    denominator is not positive."""
    from blm.solvers.cg import cg_solve
    from blm.solvers.problem import Problem

    Z = jnp.asarray(posterior.samples)
    grad = None
    for xb, _, _ in model.labels.blocks(model.block_size):
        g = _block_sampled_logdet_gradient(features, model.likelihood, xb, Z)
        grad = g if grad is None else grad + g
    m = jnp.asarray(posterior.mean)
    problem = Problem(features, model.likelihood, prior, model.labels, model.block_size)
    u = cg_solve(problem, grad[None])[0][0]
    norm = prior.group_sum(m**2)
    corrected = norm - prior.group_sum(u * m)
    factor = np.asarray(jnp.where(corrected > 0, norm / jnp.where(corrected > 0, corrected, 1), 1))
    keep = fixed_mask(fixed, factor.shape[0]) | (np.asarray(prior.alpha) == 0)
    return np.where(keep, np.asarray(prior.alpha, float), np.asarray(mackay, float) * factor)


def _penalty(prior: Prior, theta) -> float:
    """½ θᵀAθ."""
    return 0.5 * float(jnp.sum(prior.precision() * theta**2))


def _laplace_evidence(log_likelihood: float, theta, prior: Prior, logdet_h) -> float:
    """log p(y, θ̂) + ½ log det A − ½ log det H (Laplace; the flat intercept left out)."""
    return (
        log_likelihood
        - _penalty(prior, theta)
        + 0.5 * float(prior.logdet())
        - 0.5 * float(logdet_h)
    )
