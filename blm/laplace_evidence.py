r"""Laplace's log evidence of a linearised network around its trained weights w̄
(MacKay 1992), at a fitted posterior's hyperparameters or at given ones, without
refitting the curvature: ``LinearisedModel.log_evidence`` and the value an exact fit
reports.

    log p(y | α, β) ≈ log p(y | w̄) − ½ w̄ᵀAw̄ + ½ log det A − ½ log det H,
    H = Σ_i J_iᵀB_iJ_i + A at w̄;

log det H from an exact posterior's Cholesky factor, or by stochastic Lanczos
quadrature on H applied matrix-free.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from blm import operators as ops
from blm._checks import positive, positive_int
from blm.evidence.lanczos import rademacher_probes, slq_logdet
from blm.likelihoods import Likelihood
from blm.priors import Prior


def laplace_log_evidence(model, prior: Prior, likelihood: Likelihood, logdet_h) -> float:
    """log p(y | α, β) ≈ log p(y | w̄) − ½ w̄ᵀAw̄ + ½ log det A − ½ log det H (Laplace's
    approximation around w̄; the 2π factors of prior and Gaussian integral cancel)."""
    dtype = jnp.result_type(float)
    w = jnp.asarray(model.features.w, dtype)
    fit = likelihood.log_likelihood(
        jnp.asarray(model.offsets, dtype), jnp.asarray(model.targets, dtype)
    )
    penalty = 0.5 * jnp.sum(prior.precision() * w**2)
    return float(fit - penalty + 0.5 * prior.logdet() - 0.5 * logdet_h)


def log_evidence(model, post, *, key, depth: int, n_probes: int, probes, alpha, beta) -> float:
    """``LinearisedModel.log_evidence`` (its docstring): ``model`` the linearised model,
    ``post`` a posterior it fitted."""
    same = post.features.structure_hash() == model.features.structure_hash()
    if not (same and post.features.weights_hash() == model.features.weights_hash()):
        raise ValueError("post: fitted for another network than this linearised model")
    prior, likelihood, scale = evaluated_at(post, alpha, beta)
    if post.exact is not None:
        if alpha is None and beta is None:
            return laplace_log_evidence(model, prior, likelihood, post.exact.logdet())
        logdet_h = post.exact.logdet_at(prior, scale)
        return laplace_log_evidence(model, prior, likelihood, logdet_h)
    d = model.features.d
    depth = positive_int(depth, "depth")
    if depth > d:
        raise ValueError(f"depth: Krylov depth {depth} exceeds d={d}")
    if probes is None:
        key = jax.random.PRNGKey(key) if isinstance(key, int) else key
        probes = rademacher_probes(key, n_probes, d)
    probes = jnp.asarray(probes, jnp.result_type(float))
    if probes.ndim != 2 or probes.shape[1] != d:
        raise ValueError(f"probes must have shape (P, d={d}), got {probes.shape}")
    blocks = ops.traced_blocks(model.features, model.dataset, model.block_size)
    logdet_h = _slq_logdet_h(model.features, likelihood, prior, blocks, probes, depth)
    if not bool(jnp.isfinite(logdet_h)):
        raise FloatingPointError(
            f"depth: Lanczos broke down at Krylov depth {depth} (log det H not finite); lower depth"
        )
    return laplace_log_evidence(model, prior, likelihood, logdet_h)


def evaluated_at(post, alpha, beta) -> tuple[Prior, Likelihood, float]:
    """(prior, likelihood, c) at the asked α, β: c the factor β changes by (1 where
    it does not), checked."""
    alphas = np.asarray(post.alpha, float)
    if alpha is not None:
        alphas = _per(positive(alpha, "alpha"), alphas.shape, "alpha", "group")
    prior = Prior(alphas, post.groups)
    likelihood, scale = post.likelihood, 1.0
    if beta is None:
        return prior, likelihood, scale
    old = likelihood.noise_precision
    if old is None:
        raise ValueError(f"beta: a {type(likelihood).__name__} likelihood has no noise precision")
    new = _per(positive(beta, "beta"), np.shape(old), "beta", "output")
    ratio = new / np.asarray(old, float)
    if post.exact is not None and not np.allclose(ratio, ratio.flat[0], rtol=1e-12):
        raise ValueError(
            "beta: an exact posterior's factor holds Σ_k β_k J_kᵀJ_k, so β may change "
            f"only by one factor for every output; got {new} from {np.asarray(old)}"
        )
    return prior, likelihood.with_noise_precision(new), float(ratio.flat[0])


def _per(given: np.ndarray, shape: tuple, name: str, unit: str) -> np.ndarray:
    """``given`` as one value per ``unit`` (``shape``): a scalar broadcast, or as many."""
    size = int(np.prod(shape))
    if given.size not in (1, size):
        raise ValueError(
            f"{name} must be a scalar or one value per {unit} ({size}), got shape {given.shape}"
        )
    return np.broadcast_to(given.reshape(-1) if given.size > 1 else given, shape)


@eqx.filter_jit
def _slq_logdet_h(features, likelihood, prior: Prior, blocks, probes, depth: int):
    """SLQ estimate of log det (ΦᵀBΦ + A), H applied by ``operators.normal_operator``."""
    beta = likelihood.noise_precision
    beta = jnp.zeros(0) if beta is None else beta

    def hmul(v):
        return ops.normal_operator((v, beta), features, likelihood, blocks) + prior.mul(v)

    return slq_logdet(hmul, probes, depth)
