r"""The log evidence by stochastic Lanczos quadrature, differentiable by exact adjoints.

For a Gaussian likelihood (noise precision β_k per output) and prior A = diag(α_g),

    log p(Y | α, β) = −½ Σ_k β_k‖y_k − Φ_kθ̄‖² − ½ θ̄ᵀAθ̄ − ½ log det H + ½ log det A
                      + ½ n Σ_k log β_k − ½ n·m log 2π,          H = ΦᵀBΦ + A.

**log det H** = tr log H ≈ (1/P) Σ_p v_pᵀ log(H) v_p over P probes with E[vvᵀ] = I
(Rademacher), and v ᵀlog(H) v ≈ ‖v‖² e₁ᵀ log(T_K) e₁ with T_K the K × K tridiagonal
matrix of Lanczos started at v/‖v‖ (Gauss quadrature, exact for polynomials of degree
< 2K; exact outright at K = d). Lanczos is ``matfree.decomp.tridiag_sym`` with full
reorthogonalisation; H is applied through ``operators.normal_operator``.

**Gradients** in η = (log α_g, log β_k), never by unrolling a solver:

* log det H: matfree's adjoint of the Lanczos iteration (Krämer et al., 2024): a
  backward recursion of K steps with one vector-Jacobian product of the matvec each,
  exact, memory O(K·d) for the basis and otherwise flat in K. ``adjoint=False``
  backpropagates through the iteration instead (the comparison).
* e₁ᵀlog(T)e₁ in T: by the Daleckii–Krein formula, T̄ = V (D ∘ VᵀḠV) Vᵀ with divided
  differences D_ij = (log λ_i − log λ_j)/(λ_i − λ_j) and D_ii = 1/λ_i. ``eigh``'s own VJP
  divides by λ_i − λ_j and turns repeated Ritz values (common once Lanczos has found
  an invariant subspace) into NaN; the divided differences have a finite limit there.
* the data fit: θ̄ minimises E(θ; η) = ½Σ_k β_k‖y_k − Φ_kθ‖² + ½θᵀAθ, so by the
  envelope theorem dE(θ̄(η); η)/dη = ∂E/∂η at fixed θ̄: ½α_g‖θ̄_g‖² and ½β_k‖r_k‖². Exact
  for the exact minimiser; an error δ in θ̄ perturbs it by O(‖δ‖).

Lanczos breaks down when a probe's Krylov space is invariant before depth K (H with
fewer than K distinct eigenvalues seen from the probe, e.g. n·m < d leaves d − n·m
eigenvalues equal to α): the quadrature is then truncated at the breakdown, where it is
already exact (``log_quadrature_matrix``). A value or gradient that is still non-finite
is reported as a ``FloatingPointError`` naming the depth, never returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from matfree import decomp, funm

from blm import operators as ops
from blm._checks import positive_int
from blm.evidence.closed_form import log_evidence_from_terms
from blm.likelihoods import Gaussian
from blm.priors import Prior


@jax.custom_vjp
def logm_sym(T: Float[Array, "K K"]) -> Float[Array, "K K"]:
    """log(T) of a symmetric positive definite T by eigh, with a VJP that stays finite
    when eigenvalues repeat (Daleckii–Krein, see the module docstring)."""
    return _logm_fwd(T)[0]


def _logm_fwd(T):
    lam, V = jnp.linalg.eigh(T)
    return (V * jnp.log(lam)) @ V.T, (lam, V)


def _logm_bwd(residuals, G):
    lam, V = residuals
    li, lj = lam[:, None], lam[None, :]
    diff = li - lj
    close = jnp.abs(diff) <= 1e-8 * jnp.maximum(jnp.abs(li), jnp.abs(lj))
    # log's divided difference; at (nearly) equal λ its limit 1/λ, to O(δ²) as 2/(λ_i+λ_j)
    dd = jnp.where(close, 2.0 / (li + lj), (jnp.log(li) - jnp.log(lj)) / jnp.where(close, 1, diff))
    C = V.T @ (0.5 * (G + G.T)) @ V
    return (V @ (dd * C) @ V.T,)


logm_sym.defvjp(_logm_fwd, _logm_bwd)


def log_quadrature_matrix(T: Float[Array, "K K"]) -> Float[Array, "K K"]:
    """log(T) of a Lanczos tridiagonal T, truncated at its first breakdown.

    If an off-diagonal entry T_{r,r+1} is negligible (≤ √ε·max|T|), the Krylov space
    was invariant after r + 1 steps: the leading block already gives the exact quadrature
    e₁ᵀ log(T) e₁ (dropping the coupling changes it by O(T_{r,r+1}²)), and the rest of T is
    noise, possibly indefinite. That rest is replaced by the identity (log I = 0)."""
    K = T.shape[0]
    small = jnp.abs(jnp.diagonal(T, 1)) <= jnp.sqrt(jnp.finfo(T.dtype).eps) * jnp.max(
        jnp.abs(jnp.diagonal(T))
    )
    last = jnp.where(jnp.any(small), jnp.argmax(small), K - 1)
    keep = jnp.arange(K) <= last
    return logm_sym(jnp.where(keep[:, None] & keep[None, :], T, jnp.eye(K, dtype=T.dtype)))


def rademacher_probes(key: jax.Array, n_probes: int, d: int, dtype=None) -> Float[Array, "P d"]:
    """P random sign vectors: E[vvᵀ] = I, the lowest-variance probes for tr log H."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jax.random.rademacher(key, (positive_int(n_probes, "n_probes"), d), dtype)


def basis_probes(d: int, dtype=None) -> Float[Array, "d d"]:
    """√d e_i, i = 1..d: with them the probe average is the exact trace."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jnp.sqrt(jnp.asarray(d, dtype)) * jnp.eye(d, dtype=dtype)


def slq_logdet(
    matvec,
    probes: Float[Array, "P d"],
    depth: int,
    *params,
    adjoint: bool = True,
    probe_batch: int | None = None,
) -> Float[Array, ""]:
    """log det M ≈ mean_p ‖v_p‖² e₁ᵀ log(T_K(v_p)) e₁ for SPD M v = ``matvec(v, *params)``.

    ``params`` are what gradients flow to (by matfree's Lanczos adjoint, or by
    backpropagation through the iteration with ``adjoint=False``). ``probe_batch``
    runs that many probes at once (memory: probe_batch · depth · d numbers)."""
    tridiag = decomp.tridiag_sym(depth, custom_vjp=adjoint)
    integrand = funm.monte_carlo_funm_sym(log_quadrature_matrix, tridiag)
    values = jax.lax.map(lambda v: integrand(matvec, v, *params), probes, batch_size=probe_batch)
    return jnp.mean(values)


@dataclass(frozen=True)
class SLQ:
    """Settings of the SLQ evidence: Krylov ``depth`` K, ``n_probes`` P Rademacher probes
    (fixed across calls: common random numbers), ``probe_batch`` probes at a time,
    ``adjoint`` (False: backpropagate through Lanczos), ``block_size`` rows per block."""

    depth: int = 50
    n_probes: int = 8
    probe_batch: int | None = None
    adjoint: bool = True
    block_size: int | None = None

    def __post_init__(self):
        positive_int(self.depth, "depth")
        positive_int(self.n_probes, "n_probes")
        if self.probe_batch is not None:
            positive_int(self.probe_batch, "probe_batch")


def log_evidence_at(
    log_hyper: tuple[Float[Array, " G"], Float[Array, " m"]],
    mean: Float[Array, " d"],
    residual_sq: Float[Array, " m"],
    features,
    likelihood: Gaussian,
    prior: Prior,
    blocks: ops.StackedBlocks | ops.StreamedBlocks,
    probes: Float[Array, "P d"],
    n: int,
    config: SLQ,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(log p(Y | α, β), SLQ log det H) as a traceable function of η = (log α, log β), for
    jax transformations (``jax.grad`` gives the adjoint gradient; jit with
    ``eqx.filter_jit``). θ̄ = ``mean`` and ‖y_k − Φ_kθ̄‖² = ``residual_sq`` are held fixed
    (envelope theorem); ``n`` rows of data in ``blocks``."""
    log_alpha, log_beta = log_hyper
    alpha, beta = jnp.exp(log_alpha), jnp.exp(log_beta)
    p = prior.with_alpha(alpha)

    def hmul(v, log_precision, *lb):
        # matfree hoists the arrays this closure captures into differentiated inputs; they
        # are constants here (gradients go to log_precision and lb only)
        fixed = jax.lax.stop_gradient((features, likelihood, blocks))
        beta = jnp.exp(lb[0]) if lb else jnp.ones_like(log_beta)
        return ops.normal_operator((v, beta), *fixed) + jnp.exp(log_precision) * v

    log_precision = log_alpha[prior.groups]  # per coordinate: no integer index in hmul
    if log_beta.shape[0] == 1:
        # one β: H = β(ΦᵀΦ + A/β), so log det H = d log β + log det(ΦᵀΦ + A/β) and Lanczos
        # runs on an operator whose data part does not depend on any hyperparameter
        # (its adjoint then needs no β-cotangent: one jvp + vjp per step, as forward)
        params = (log_precision - log_beta[0],)
        shift = prior.d * log_beta[0]
    else:
        params, shift = (log_precision, log_beta), 0.0
    logdet_h = shift + slq_logdet(
        hmul,
        probes,
        config.depth,
        *params,
        adjoint=config.adjoint,
        probe_batch=config.probe_batch,
    )
    theta = jax.lax.stop_gradient(mean)  # envelope theorem: θ̄ held fixed
    value = log_evidence_from_terms(p, beta, theta, residual_sq, logdet_h, n)
    return value, logdet_h


_value_and_grad = eqx.filter_jit(jax.value_and_grad(log_evidence_at, has_aux=True))


def slq_log_evidence(
    features,
    likelihood: Gaussian,
    prior: Prior,
    dataset,
    mean: Float[Array, " d"],
    probes: Float[Array, "P d"],
    config: SLQ = SLQ(),
    blocks: ops.StackedBlocks | ops.StreamedBlocks | None = None,
) -> tuple[float, np.ndarray, np.ndarray, dict]:
    """log p(Y | α, β) at the prior's α and the likelihood's β, with θ̄ = ``mean`` (from
    any solver), and its gradient in (log α_g, log β_k).

    Returns (value, ∂/∂log α (G,), ∂/∂log β (m,), info) with info["logdet"] the SLQ
    estimate of log det H. ``blocks``: the dataset already stacked (reused across calls).
    Raises FloatingPointError if Lanczos broke down (non-finite value or gradient)."""
    if likelihood.noise_precision is None:
        raise TypeError(
            f"likelihood: the evidence with a fitted noise precision needs a Gaussian "
            f"likelihood, got {type(likelihood).__name__}"
        )
    if probes.shape[-1] != prior.d:
        raise ValueError(f"probes must have d={prior.d} columns, got shape {probes.shape}")
    if config.depth > prior.d:
        raise ValueError(f"depth: Krylov depth {config.depth} exceeds d={prior.d}")
    if blocks is None:
        blocks = ops.traced_blocks(features, dataset, config.block_size)
    rss = ops.residual_sq(features, dataset, mean, config.block_size)
    log_hyper = (jnp.log(prior.alpha), jnp.log(likelihood.beta))
    (value, logdet_h), (g_alpha, g_beta) = _value_and_grad(
        log_hyper,
        mean,
        rss,
        features,
        likelihood,
        prior,
        blocks,
        probes,
        dataset.n_observations,
        config,
    )
    value, g_alpha, g_beta = float(value), np.asarray(g_alpha), np.asarray(g_beta)
    if not (np.isfinite(value) and np.all(np.isfinite(g_alpha)) and np.all(np.isfinite(g_beta))):
        raise FloatingPointError(
            f"depth: Lanczos broke down at Krylov depth {config.depth} (non-finite log det H or "
            "gradient): a probe's Krylov space became invariant, i.e. H has fewer distinct "
            "eigenvalues than the depth along it. Lower depth."
        )
    return value, g_alpha, g_beta, {"logdet": float(logdet_h), "residual_sq": np.asarray(rss)}
