r"""Conjugate gradients on H for the mean and k samples, matrix-free and full batch.

Solves H x_j = r_j for the k + 1 right-hand sides r_0 = ΦᵀBY (mean) and
r_j = ΦᵀLξ_j + Aθ⁰_j (samples, see ``blm.solvers.targets``), all columns in one pass
over the data per iteration (H p = ΦᵀBΦp + Ap with ``operators.normal_matvec``),
preconditioned by M = diag(H) (Jacobi) unless ``precondition=False``.

The loop is a Python loop over iterations rather than lineax's or matfree's traced
loops because each product streams the dataset block by block (possibly from disk),
which cannot run inside a traced loop; the per-block products are jit-compiled.
Stops when every column's relative residual ‖r_j − Hx_j‖/‖r_j‖ ≤ tol (a warm start
already there: before the first iteration), or at max_iter.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from blm import operators as ops
from blm._checks import positive, positive_int
from blm._progress import close, progress_bar
from blm.features import Features
from blm.likelihoods import Likelihood
from blm.priors import Prior
from blm.solvers.sampled import Diagnostics, SampledPosterior
from blm.solvers.targets import draw_targets, jacobi, split_key

DEFAULT_TOL = 1e-6  # relative residual, every column


def cg(
    features: Features,
    likelihood: Likelihood,
    prior: Prior,
    dataset,
    key: jax.Array,
    n_samples: int,
    tol: float = DEFAULT_TOL,
    max_iter: int = 1000,
    init: SampledPosterior | None = None,
    block_size: int | None = None,
    progress: bool = False,
    precondition: bool = True,
    callback: Callable[[int, SampledPosterior], bool | None] | None = None,
    data_diagonal: Float[Array, " d"] | None = None,
    noise_rhs: Float[Array, "k1 d"] | None = None,
) -> tuple[SampledPosterior, Diagnostics]:
    """Posterior mean and ``n_samples`` samples z_j ~ N(0, H⁻¹) by batched CG.

    ``precondition``: Jacobi-preconditioned CG with M = diag(H) (one extra pass, none
    when ``data_diagonal`` = diag(ΦᵀBΦ) is given: an EM loop knows it from its first step;
    ``noise_rhs``, the targets' pass [ΦᵀBY; ΦᵀLξ_j] for this key (``targets_pass``),
    likewise saves that pass).
    ``callback(iteration, posterior)`` is called after each iteration with the current
    iterate and stops the run if it returns True."""
    k = positive_int(n_samples, "n_samples")
    positive(tol, "tol")
    positive_int(max_iter, "max_iter")
    targets = draw_targets(
        features,
        likelihood,
        prior,
        dataset,
        split_key(key)[0],
        k,
        block_size,
        data_rhs=True,
        noise_rhs=noise_rhs,
    )
    rhs = targets.rhs(prior)
    b = jnp.concatenate([targets.data_rhs[None], rhs])
    if init is not None:
        x0 = jnp.concatenate([init.mean[None], init.samples]).astype(b.dtype)
        if x0.shape != b.shape:
            raise ValueError(f"init must hold the mean and {k} samples of dimension {prior.d}")
    diagonal = _preconditioner(
        features, likelihood, prior, dataset, block_size, precondition, data_diagonal
    )

    def solved(x) -> SampledPosterior:  # with diag(H) and the rhs for diag_covariance
        return SampledPosterior.solved(x, diagonal if precondition else None, rhs)

    x, diag = _pcg(
        _hessian(features, likelihood, prior, dataset, block_size),
        b,
        None if init is None else x0,
        diagonal,
        tol,
        max_iter,
        progress,
        None if callback is None else lambda it, x: callback(it, solved(x)),
    )
    return solved(x), diag


def cg_solve(
    features: Features,
    likelihood: Likelihood,
    prior: Prior,
    dataset,
    rhs: Float[Array, "s d"],
    tol: float = DEFAULT_TOL,
    max_iter: int = 1000,
    block_size: int | None = None,
    precondition: bool = True,
    progress: bool = False,
) -> tuple[Float[Array, "s d"], Diagnostics]:
    """H⁻¹ r_j for given right-hand sides r_j (rows of ``rhs``), H = ΦᵀBΦ + A, by the
    same batched, Jacobi-preconditioned CG (one pass over the data per iteration for all
    s columns, memory s·d); e.g. r_j = e_i gives column i of the posterior covariance.
    Returns the solutions and the diagnostics (``converged`` False after ``max_iter``)."""
    rhs = jnp.asarray(rhs)
    if rhs.ndim != 2 or rhs.shape[1] != prior.d:
        raise ValueError(f"rhs must have shape (s, d={prior.d}), got {rhs.shape}")
    positive(tol, "tol")
    positive_int(max_iter, "max_iter")
    return _pcg(
        _hessian(features, likelihood, prior, dataset, block_size),
        rhs,
        None,
        _preconditioner(features, likelihood, prior, dataset, block_size, precondition, None),
        tol,
        max_iter,
        progress,
        None,
    )


def _hessian(features, likelihood, prior, dataset, block_size):
    def hmul(v):
        return ops.normal_matvec(features, likelihood, dataset, v, block_size) + prior.mul(v)

    return hmul


def _preconditioner(features, likelihood, prior, dataset, block_size, precondition, diagonal):
    if precondition:
        return jacobi(features, likelihood, prior, dataset, block_size, diagonal)
    return jnp.ones(prior.d)


def _pcg(hmul, b, x, diag_h, tol, max_iter, progress, callback):
    """Preconditioned CG on the rows of b (one H product per iteration for all of them),
    from x (None: 0); stops when every row's relative residual is ≤ tol."""
    if x is None:
        x = jnp.zeros_like(b)
        r = b
    else:
        r = b - hmul(x)
    diag_h = diag_h.astype(b.dtype)
    s = r / diag_h
    p = s
    rs = jnp.sum(r * s, axis=1)
    b_norm = jnp.maximum(jnp.linalg.norm(b, axis=1), jnp.finfo(b.dtype).tiny)
    diag = Diagnostics()
    if bool(jnp.all(jnp.linalg.norm(r, axis=1) / b_norm <= tol)):
        diag.converged = True  # a warm start already within tol: no iteration
        return x, diag
    bar = progress_bar(progress, max_iter, "cg", "iter")
    for it in range(1, max_iter + 1):
        hp = hmul(p)
        step = rs / jnp.sum(p * hp, axis=1)
        x = x + step[:, None] * p
        r = r - step[:, None] * hp
        r_norm = jnp.linalg.norm(r, axis=1)
        rel = r_norm / b_norm
        diag.log(it, -0.5 * jnp.sum(x * (b + r), axis=1), r_norm, float(jnp.max(rel)))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(residual=f"{float(jnp.max(rel)):.2e}")
        if not bool(jnp.all(jnp.isfinite(x))):
            raise FloatingPointError(f"CG produced non-finite iterates at iteration {it}")
        if bool(jnp.all(rel <= tol)):
            diag.converged = True
            break
        if callback is not None and callback(it, x):
            break
        s = r / diag_h
        rs_new = jnp.sum(r * s, axis=1)
        p = s + (rs_new / rs)[:, None] * p
        rs = rs_new
    close(bar)
    return x, diag
