r"""Conjugate gradients on H for the mean and k samples, matrix-free and full batch.

Solves H x_j = r_j for the k + 1 right-hand sides r_0 = ΦᵀBY (mean) and
r_j = ΦᵀLξ_j + Aθ⁰_j (samples, see ``blm.solvers.targets``), all columns in one pass
over the data per iteration (H p = ΦᵀBΦp + Ap with ``operators.normal_matvec``),
preconditioned by M = diag(H) (Jacobi) unless ``precondition=False``, with a coarse
correction over blocks of coordinates (by default the prior's groups), below.

**Two-level (balancing) preconditioner.** Let Z (d × q) hold the indicator vectors 1_G of
q blocks G of coordinates, Y = HZ (q more columns in the pass that forms diag(H)) and
E = ZᵀHZ (q × q). CG runs with the balancing (BNN) preconditioner

    P = Z E⁻¹ Zᵀ + (I − Z E⁻¹ Yᵀ) D⁻¹ (I − Y E⁻¹ Zᵀ),   D = diag(H),

symmetric positive definite: PH is the identity on span Z, and elsewhere has the
spectrum of the Jacobi-preconditioned operator deflated of span Z, so its effective
condition number is never above Jacobi's (Nabben & Vuik, SIAM J. Numer. Anal. 42, 2004;
SIAM J. Sci. Comput. 27, 2006; Tang, Nabben, Vuik & Erlangga, J. Sci. Comput. 39, 2009,
compare it with deflation and additive coarse corrections). Why blocks of the prior's groups: a centred design whose group of columns is a
complete set of dummies (one-hot fixed effects: each row has exactly one 1 in the
group) has X_c 1_G = 1 − 1 = 0, so 1_G is an eigenvector of H with the prior's
precision α_G alone, isolated far below the Jacobi-scaled data spectrum; on a
2 000-unit panel its eigenvalue 0.023 beside [0.56, 1.53] doubled CG's iterations. Each
application costs O(s·q·d) for s right-hand sides; the correction is used for
1 ≤ q ≤ ``MAX_COARSE_BLOCKS`` blocks, by default only where the prior has two groups or
more (a single group, or a per-coordinate prior with q = d: Jacobi alone).

The loop is a Python loop over iterations rather than lineax's or matfree's traced
loops because each product streams the dataset block by block (possibly from disk),
which cannot run inside a traced loop; the per-block products are jit-compiled.
Stops when every column's relative residual ‖r_j − Hx_j‖/‖r_j‖ ≤ tol (a warm start
already there: before the first iteration), or at max_iter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from blm import operators as ops
from blm._checks import positive, positive_int
from blm._progress import close, progress_bar
from blm.data import default_dtype
from blm.features import Features
from blm.likelihoods import Likelihood
from blm.solvers.problem import NO_PASSES, Passes, Problem
from blm.solvers.sampled import Diagnostics, SampledPosterior
from blm.solvers.targets import draw_targets, jacobi, split_key

DEFAULT_TOL = 1e-6  # relative residual, every column
MAX_COARSE_BLOCKS = 64
"""The most blocks the two-level preconditioner deflates (it holds Y = HZ, q·d numbers)."""


@dataclass(frozen=True)
class CGSettings:
    """The settings of one ``cg``/``cg_solve`` run, checked where built.

    Args:
        tol: every column's relative residual ‖r_j − Hx_j‖/‖r_j‖ to stop at (> 0).
        max_iter: iterations at most (≥ 1); ``Diagnostics.converged`` is False there.
        precondition: preconditioned CG, by D = diag(H) (Jacobi) and the coarse
            correction over ``coarse_blocks``; False: plain CG.
        coarse_blocks: an integer block per coordinate (d,) in [0, q); True: the
            prior's groups; False: Jacobi alone (module docstring).
        progress: a progress bar over the iterations.

    Raises:
        ValueError: naming ``tol`` or ``max_iter`` for a value out of range.
    """

    tol: float = DEFAULT_TOL
    max_iter: int = 1000
    precondition: bool = True
    coarse_blocks: bool | Int[Array, " d"] = True
    progress: bool = False

    def __post_init__(self):
        positive(self.tol, "tol")
        positive_int(self.max_iter, "max_iter")


def cg(
    problem: Problem,
    key: jax.Array,
    n_samples: int,
    settings: CGSettings = CGSettings(),
    *,
    init: SampledPosterior | None = None,
    callback: Callable[[int, SampledPosterior], bool | None] | None = None,
    passes: Passes = NO_PASSES,
) -> tuple[SampledPosterior, Diagnostics]:
    """Posterior mean and ``n_samples`` samples z_j ~ N(0, H⁻¹) by batched CG.

    Solves H x_j = r_j for the mean's r_0 = ΦᵀBY and the samples' r_j (module
    docstring) together, one pass over the data per iteration.

    Args:
        problem: Φ, B, A and the data (``Problem``).
        key: fixes the sample noise (θ⁰, ξ).
        n_samples: k ≥ 1 samples.
        settings: tolerance, cap and preconditioner (``CGSettings``).
        init: a previous solution to warm-start from (mean and k samples).
        callback: ``callback(iteration, posterior)`` after each iteration with the
            current iterate; stops the run if it returns True.
        passes: the passes a caller already made (``Passes``): with ``data_diagonal`` =
            diag(ΦᵀBΦ) and ``data_coarse`` = ΦᵀBΦZ (``preconditioner_pass``) the
            preconditioner's set-up costs no pass; with ``noise_rhs`` (``targets_pass``
            for this key) drawing the targets costs none.

    Returns:
        (posterior, diagnostics): the ``SampledPosterior`` and the ``Diagnostics``
        (``converged`` False when ``max_iter`` stopped it first).

    Raises:
        ValueError: ``n_samples`` < 1, or ``init`` of the wrong shape.
        FloatingPointError: non-finite iterates.

    Example:
        >>> post, diag = cg(problem, jax.random.PRNGKey(0), 8, CGSettings(tol=1e-8))  # doctest: +SKIP
    """
    k = positive_int(n_samples, "n_samples")
    features, likelihood, prior, dataset = problem.parts()
    targets = draw_targets(
        features,
        likelihood,
        prior,
        dataset,
        split_key(key)[0],
        k,
        problem.block_size,
        data_rhs=True,
        noise_rhs=passes.noise_rhs,
    )
    rhs = targets.rhs(prior)
    b = jnp.concatenate([targets.data_rhs[None], rhs])
    if init is not None:
        x0 = jnp.concatenate([init.mean[None], init.samples]).astype(b.dtype)
        if x0.shape != b.shape:
            raise ValueError(f"init must hold the mean and {k} samples of dimension {prior.d}")
    diagonal, apply = _preconditioner(problem, settings, b.dtype, passes)

    def solved(x) -> SampledPosterior:  # with diag(H) and the rhs for diag_covariance
        return SampledPosterior.solved(x, diagonal, rhs)

    x, diag = _pcg(
        _hessian(problem),
        b,
        None if init is None else x0,
        apply,
        settings,
        None if callback is None else lambda it, x: callback(it, solved(x)),
    )
    return solved(x), diag


def cg_solve(
    problem: Problem, rhs: Float[Array, "s d"], settings: CGSettings = CGSettings()
) -> tuple[Float[Array, "s d"], Diagnostics]:
    """H⁻¹ r_j for given right-hand sides r_j (rows of ``rhs``), H = ΦᵀBΦ + A, by the
    same batched, preconditioned CG as ``cg`` (one pass over the data per iteration for
    all s columns, memory s·d); e.g. r_j = e_i gives column i of the posterior covariance.

    Args:
        problem: Φ, B, A and the data.
        rhs: (s, d) right-hand sides.
        settings: tolerance, cap and preconditioner (``CGSettings``).

    Returns:
        (solutions (s, d), ``Diagnostics``: ``converged`` False after ``max_iter``).

    Raises:
        ValueError: ``rhs`` not of shape (s, d).

    Example:
        >>> columns, diag = cg_solve(problem, jnp.eye(d)[:2])  # doctest: +SKIP
    """
    rhs = jnp.asarray(rhs)
    d = problem.prior.d
    if rhs.ndim != 2 or rhs.shape[1] != d:
        raise ValueError(f"rhs must have shape (s, d={d}), got {rhs.shape}")
    apply = _preconditioner(problem, settings, rhs.dtype, NO_PASSES)[1]
    return _pcg(_hessian(problem), rhs, None, apply, settings, None)


def _hessian(problem: Problem):
    p = problem

    def hmul(v):
        return ops.normal_matvec(p.features, p.likelihood, p.dataset, v, p.block_size) + (
            p.prior.mul(v)
        )

    return hmul


def preconditioner_pass(
    features: Features,
    likelihood: Likelihood,
    dataset,
    blocks: Int[Array, " d"],
    block_size: int | None = None,
) -> tuple[Float[Array, " d"], Float[Array, "q d"]]:
    """(diag(ΦᵀBΦ), ΦᵀBΦZ): the data parts of the Jacobi diagonal and of Y = HZ for the
    blocks' indicator vectors Z, in one pass over the data (as ``cg`` makes it), for a
    caller to hand to ``cg`` as ``data_diagonal`` and ``data_coarse``."""
    z = _indicators(blocks)
    return ops.normal_diagonal_and_matvec(features, likelihood, dataset, z, block_size)


def resolve_blocks(
    coarse_blocks: bool | Int[Array, " d"], groups: Int[Array, " d"], outputs: int = 1
) -> Array | None:
    """The blocks the two-level preconditioner deflates: ``coarse_blocks`` checked ((d,)
    integers in [0, q), every block non-empty); for True the prior's ``groups`` (values
    0 … G − 1), each split into the ``outputs`` contiguous equal parts of θ that H does not
    couple (a linear model's m outputs), when there are at least two groups (a single
    group's 1 over all coordinates is an eigenvector of H only when the whole design is
    one set of dummies; elsewhere it cost cg 10–20 % on dense random features for
    nothing); None for False, or more than ``MAX_COARSE_BLOCKS`` blocks (Jacobi alone)."""
    groups = np.asarray(groups)
    d = groups.shape[0]
    if coarse_blocks is True:
        if groups.max() == groups.min():
            return None
        part = np.repeat(np.arange(outputs), d // outputs)
        blocks = groups + (int(groups.max()) + 1) * part
    elif coarse_blocks is False:
        return None
    else:
        blocks = np.asarray(coarse_blocks)
        if (
            blocks.shape != (d,)
            or not np.issubdtype(blocks.dtype, np.integer)
            or blocks.min() < 0
            or np.any(np.bincount(blocks) == 0)
        ):
            raise ValueError(
                f"coarse_blocks must be True, False or ({d},) integers numbering "
                "non-empty blocks 0, 1, …, q − 1"
            )
    if blocks.max() + 1 > MAX_COARSE_BLOCKS:
        return None
    return jnp.asarray(blocks, jnp.int32)


def _indicators(blocks: Int[Array, " d"], dtype=None) -> Float[Array, "q d"]:
    """Z's columns 1_G as rows (q, d)."""
    return _one_hot_rows(blocks, int(blocks.max()) + 1, np.dtype(dtype or default_dtype()))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _one_hot_rows(blocks, q, dtype):
    return jax.nn.one_hot(blocks, q, dtype=dtype).T


def _preconditioner(problem: Problem, settings: CGSettings, dtype, passes: Passes):
    """(D = diag(H) or None, r ↦ P r for the rows of r): the identity without
    ``settings.precondition``; D⁻¹r (Jacobi); or the balancing two-level preconditioner
    over the blocks (module docstring). The data parts ``passes`` does not hold
    (``data_diagonal``, ``data_coarse``) come from one pass over the data together."""
    if not settings.precondition:
        return None, lambda r: r
    features, likelihood, prior, dataset = problem.parts()
    data_diagonal, data_coarse = passes.data_diagonal, passes.data_coarse
    blocks = resolve_blocks(settings.coarse_blocks, prior.groups)
    z = None if blocks is None else _indicators(blocks, dtype)
    if z is not None and data_coarse is None:
        if data_diagonal is None:
            data_diagonal, data_coarse = ops.normal_diagonal_and_matvec(
                features, likelihood, dataset, z, problem.block_size
            )
        else:
            data_coarse = ops.normal_matvec(features, likelihood, dataset, z, problem.block_size)
    diagonal = jacobi(features, likelihood, prior, dataset, problem.block_size, data_diagonal)
    diagonal = diagonal.astype(dtype)
    if z is None:
        return diagonal, lambda r: r / diagonal
    data_coarse = jnp.asarray(data_coarse, dtype)
    if data_coarse.shape != z.shape:
        raise ValueError(f"data_coarse must have shape {z.shape} (ΦᵀBΦZ), got {data_coarse.shape}")
    if not bool(jnp.all(jnp.isfinite(data_coarse))):
        raise ValueError("data_coarse holds non-finite values (it is ΦᵀBΦZ)")
    return diagonal, _balancing(diagonal, blocks, data_coarse + prior.mul(z))


def _balancing(diagonal, blocks, y):
    e_inv = _coarse_inverse(y, blocks)
    return lambda r: _balance(r, diagonal, blocks, y, e_inv)


@jax.jit
def _coarse_inverse(y, blocks):
    """E⁻¹ for E = ZᵀY (q, q), through the Jacobi-scaled E (blocks of any scales)."""
    e = jax.ops.segment_sum(y.T, blocks, num_segments=y.shape[0])
    scale = 1.0 / jnp.sqrt(jnp.diag(e))
    return scale[:, None] * jnp.linalg.inv(scale[:, None] * (e + e.T) / 2 * scale) * scale


@jax.jit
def _balance(r, diagonal, blocks, y, e_inv):
    """P r = Z E⁻¹ Zᵀr + (I − Z E⁻¹ Yᵀ) D⁻¹ (I − Y E⁻¹ Zᵀ) r for the rows of r."""
    zt_r = jax.ops.segment_sum(r.T, blocks, num_segments=y.shape[0]).T  # Zᵀr (s, q)
    c = zt_r @ e_inv
    t = (r - c @ y) / diagonal
    t = t - ((t @ y.T) @ e_inv)[:, blocks]
    return t + c[:, blocks]


def _pcg(hmul, b, x, precondition, settings: CGSettings, callback):
    """Preconditioned CG on the rows of b (one H product per iteration for all of them,
    ``precondition`` r ↦ Pr applied to them), from x (None: 0); stops when every row's
    relative residual is ≤ ``settings.tol``."""
    tol, max_iter = settings.tol, settings.max_iter
    if x is None:
        x = jnp.zeros_like(b)
        r = b
    else:
        r = b - hmul(x)
    s = precondition(r)
    p = s
    rs = jnp.sum(r * s, axis=1)
    b_norm = jnp.maximum(jnp.linalg.norm(b, axis=1), jnp.finfo(b.dtype).tiny)
    diag = Diagnostics()
    if bool(jnp.all(jnp.linalg.norm(r, axis=1) / b_norm <= tol)):
        diag.converged = True  # a warm start already within tol: no iteration
        return x, diag
    bar = progress_bar(settings.progress, max_iter, "cg", "iter")
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
        s = precondition(r)
        rs_new = jnp.sum(r * s, axis=1)
        p = s + (rs_new / rs)[:, None] * p
        rs = rs_new
    close(bar)
    return x, diag
