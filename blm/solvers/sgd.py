r"""Sample-then-optimise by minibatched SGD: the posterior mean and k samples at once.

The k + 1 columns x_0 = θ, x_j = z_j (j = 1..k) are optimised together (one array of
shape (k+1, d)), so each minibatch's primal pass through the features is shared by all
of them. Each column minimises a quadratic whose data term is estimated on a minibatch
of b rows, rescaled by n/b (unbiased), and whose prior term is exact:

    mean:            (n/b) Σ_{i∈batch} ½‖y_i − φ_i θ‖²_{B_i}        + ½‖θ‖²_A
    low-variance z:  (n/b) Σ_{i∈batch} ½‖φ_i z‖²_{B_i}              + ½‖z − θⁿ_j‖²_A
    standard z:      (n/b) Σ_{i∈batch} (½‖φ_i z‖²_{B_i} − zᵀφ_iᵀL_iξ_{j,i}) + ½‖z − θ⁰_j‖²_A

(see ``blm.solvers.targets``). With ``snapshot_every`` the minibatch gradient gets the
SVRG control variate of a snapshot x̃ (refreshed by one full pass every
``snapshot_every`` steps): all three data terms are quadratic, so

    g_b(x) − g_b(x̃) + ∇(x̃) = (n/b) Φ_bᵀB_bΦ_b (x − x̃) + ∇_data(x̃) + A(x − c)

is unbiased, its noise (the noise ξ of the standard objective included) cancels
exactly and what is left shrinks with ‖x − x̃‖: the iteration converges linearly
without a noise floor, so it needs no averaging, and it keeps the exact minimisers as
its fixed point whatever the minibatch. The first snapshot is the starting iterate x̃ = x⁰
(textbook SVRG: the first period is variance-reduced too). A cold start is one exact
line-search step of preconditioned steepest descent from 0, x⁰ = (rᵀs / sᵀHs) s with
r = −∇(0) = t + Ac and s = P⁻¹r, whose one pass (Hs) is also the first snapshot's: x⁰
is never worse than 0 in the H-norm, ‖x⁰ − x*‖_H ≤ ‖x*‖_H, and the control variate's
noise grows with ‖x − x̃‖.

The optimiser is optax SGD with Nesterov momentum, applied to the Jacobi-preconditioned
gradient P⁻¹g, P = diag(H) (on by default: it removes the spread of column scales,
often the largest part of H's condition number). The default learning rate is 0.3/λ̂
((1 − momentum)/λ̂ with snapshots) with λ̂ the largest eigenvalue, by power iteration,
of the preconditioned minibatch curvature P⁻¹((n/b)Φ_bᵀBΦ_b + A) over a few random
minibatches, so every realised step is stable. Below the critical batch size (b ≪ d:
the b rows nearly orthogonal, the minibatch curvature mostly noise) heavy-ball momentum
μ acts as plain SGD with step lr/(1 − μ), which is mean-square stable only below
~2/ν, ν = tr(P⁻¹(n/b)Φ_bᵀBΦ_b)/b the mean curvature per minibatch row (Ma, Bassily &
Belkin 2018, for μ = 0; measured on 16 rows of each probe minibatch): so the plain
default is min(0.3/λ̂, (1 − μ)/ν). It binds only
for μ > 0.7 (ν ≤ λ̂) and where ν > λ̂(1 − μ)/0.3: at batch size 1 with μ = 0.9 the
uncapped step grew the error to 10¹³ without overflowing. Iterate (Polyak) averaging
over the last part of the run is optional. Steps run in ``jax.lax.scan`` chunks; between chunks
the diagnostics are logged and divergence is detected.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NoReturn

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from blm import operators as ops
from blm._checks import positive_int
from blm._progress import close, progress_bar
from blm.features import Features
from blm.likelihoods import Likelihood
from blm.priors import Prior
from blm.sharding import constrain_rows, place_parameters, put_rows, row_sharding
from blm.solvers.problem import NO_PASSES, Passes, Problem
from blm.solvers.sampled import Diagnostics, SampledPosterior
from blm.solvers.sgd_config import DEFAULT_SGD, SGDConfig
from blm.solvers.targets import Objective, SampleTargets, draw_targets, jacobi, split_key


class _Problem(eqx.Module):
    """The k + 1 quadratics: regulariser centres, noise key and which objective; with
    flat prior groups, the low-variance samples' linear terms ℓ_j (``targets``)."""

    features: Features
    likelihood: Likelihood
    prior: Prior
    centres: Float[Array, "k1 d"]
    noise_key: jax.Array
    precond: Float[Array, " d"]  # P = diag(H) (or ones): steps are P⁻¹-scaled gradients
    standard: bool = eqx.field(static=True)
    linear: Float[Array, "k1 d"] | None = None  # row 0 (the mean) zero

    def prior_grad(self, x: Float[Array, "k1 d"]) -> Float[Array, "k1 d"]:
        """A(x − c) − ℓ: the gradient of the regulariser and the linear term."""
        grad = self.prior.mul(x - self.centres)
        return grad if self.linear is None else grad - self.linear

    def prior_value(self, x: Float[Array, "k1 d"]) -> Float[Array, " k1"]:
        """½‖x − c‖²_A − ℓᵀx per column."""
        value = 0.5 * jnp.sum(self.prior.mul((x - self.centres) ** 2), axis=1)
        return value if self.linear is None else value - jnp.sum(self.linear * x, axis=1)


def _problem(features, likelihood, prior, targets: SampleTargets, precond, standard) -> _Problem:
    """The k + 1 quadratics of ``targets``: the mean's (centre 0) and the samples' (centres
    θ⁰ in the standard objective, θⁿ and the flat groups' ℓ in the low-variance one)."""
    zero = jnp.zeros((1, prior.d), targets.theta0.dtype)
    centres = jnp.concatenate([zero, targets.theta0 if standard else targets.centres])
    linear = None
    if targets.linear is not None and not standard:
        linear = jnp.concatenate([zero, targets.linear])
    return _Problem(
        features, likelihood, prior, centres, targets.noise_key, precond, standard, linear
    )


def _minibatch_terms(problem: _Problem, x, xb, yb, rows, scale, snapshot=None):
    """Gradient and objective estimate of every column on one minibatch; with a
    ``snapshot`` (x̃, ∇_data(x̃)) the variance-reduced gradient and no objective (NaN)."""
    f0, jvps, vjps = problem.features.linearize_many(xb)
    lik = problem.likelihood
    prior_grad = problem.prior_grad(x)
    if snapshot is not None:
        x_snap, grad_snap = snapshot
        bfd = lik.precision_mul(f0[:, None], jvps(x - x_snap))
        grad = scale * vjps(bfd) + grad_snap + prior_grad
        return grad, jnp.full(x.shape[0], jnp.nan, x.dtype)
    fx = jvps(x)  # (b, k+1, m), primal shared
    bfx = lik.precision_mul(f0[:, None], fx)
    k = x.shape[0] - 1
    t_mean = lik.precision_mul(f0, yb)[:, None]
    if problem.standard:
        xi = ops.row_noise(problem.noise_key, rows, k, f0.shape[-1], f0.dtype)
        t_samples = lik.sqrt_mul(f0[:, None], xi)
    else:
        t_samples = jnp.zeros((yb.shape[0], k, yb.shape[1]), yb.dtype)
    t = jnp.concatenate([t_mean, t_samples], axis=1)
    grad = scale * vjps(bfx - t) + prior_grad
    data = scale * jnp.sum(0.5 * fx * bfx - t * fx, axis=(0, 2))
    return grad, data + problem.prior_value(x)


class _Chunk(eqx.Module):
    """Where a chunk of SGD steps stands: ``n_steps`` steps from step ``step0`` of a run
    over ``n_total`` rows, minibatches of ``batch_size``, averaging from ``avg_from``."""

    n_total: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    step0: jax.Array
    avg_from: jax.Array


@eqx.filter_jit
def _run_chunk(problem, optimizer, state, block, key, chunk: _Chunk, sharding=None, snapshot=None):
    """``chunk.n_steps`` SGD steps on minibatches drawn from the ``block`` (xb, yb, rows);
    with a row ``sharding`` each minibatch is split along rows over its mesh; with a
    ``snapshot`` (x̃, ∇_data(x̃)) the gradients are variance-reduced."""
    xb, yb, rows = block
    n_total, batch_size, n_steps = chunk.n_total, chunk.batch_size, chunk.n_steps
    step0, avg_from = chunk.step0, chunk.avg_from
    n_block = xb.shape[0]
    full = batch_size >= n_block
    scale = n_total / (n_block if full else batch_size)

    def body(carry, i):
        x, opt_state, avg, n_avg = carry
        if full:
            xm, ym, rm = xb, yb, rows
        else:
            idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, n_block)
            xm, ym, rm = constrain_rows((xb[idx], yb[idx], rows[idx]), sharding)
        grad, obj = _minibatch_terms(problem, x, xm, ym, rm, scale, snapshot)
        updates, opt_state = optimizer.update(grad / problem.precond, opt_state, x)
        x = optax.apply_updates(x, updates)
        use = step0 + i >= avg_from
        n_avg = n_avg + use
        avg = jnp.where(use, avg + (x - avg) / jnp.maximum(n_avg, 1), avg)
        return (x, opt_state, avg, n_avg), (obj, jnp.linalg.norm(grad, axis=1))

    state, (obj, gnorm) = jax.lax.scan(body, state, jnp.arange(n_steps))
    return state, obj[-1], gnorm[-1]


_ROW_CURVATURE_ROWS = 16
"""Rows of a probe minibatch whose curvature ν is measured (a network pays one vjp per
row and output: 256 rows of a 543 210-parameter MLP with 10 outputs took 12 s, 45× its
20 power iterations)."""


@eqx.filter_jit
def _curvature_bound(problem, xb, key, batch_size, n_total, iters, row_curvature):
    """(λ̂, ν) of one random minibatch: λ̂ the largest eigenvalue of
    P⁻¹((n/b)Φ_bᵀBΦ_b + A) (power iteration; the eigenvalues are those of the symmetric
    P^{-1/2}H_bP^{-1/2}), ν = tr(P⁻¹(n/b)Φ_bᵀBΦ_b)/b the mean curvature per row of the
    minibatch (ν ≤ λ̂ for one output; ν ≈ λ̂ when the b rows are nearly orthogonal,
    b ≪ d), from its first ``_ROW_CURVATURE_ROWS`` rows, or None without
    ``row_curvature``."""
    n_block = xb.shape[0]
    if batch_size >= n_block:
        xm, scale = xb, n_total / n_block
    else:
        idx = jax.random.randint(key, (batch_size,), 0, n_block)
        xm, scale = xb[idx], n_total / batch_size
    f0, jvp, vjp = problem.features.linearize(xm)

    def hmul(v):
        hv = scale * vjp(problem.likelihood.precision_mul(f0, jvp(v))) + problem.prior.mul(v)
        return hv / problem.precond

    v0 = jax.random.normal(jax.random.fold_in(key, 1), (problem.prior.d,), f0.dtype)

    def body(v, _):
        w = hmul(v)
        return w / jnp.linalg.norm(w), None

    v, _ = jax.lax.scan(body, v0 / jnp.linalg.norm(v0), None, length=iters)
    if not row_curvature:
        return jnp.linalg.norm(hmul(v)), None
    rows = min(xm.shape[0], _ROW_CURVATURE_ROWS)
    sq = problem.features.sq_rows(xm[:rows], problem.likelihood.sqrt_precision(f0[:rows]))
    return jnp.linalg.norm(hmul(v)), scale * jnp.sum(sq / problem.precond) / rows


def _learning_rate(config: SGDConfig, problem: _Problem, dataset, block_size, key) -> float:
    """The given learning rate, or the default from (λ̂, ν) of 3 random minibatches (see
    ``SGDConfig``)."""
    if config.learning_rate is not None:
        return float(config.learning_rate)
    xb = next(_blocks(dataset, block_size, config.batch_size, key))[0]
    # the cap (1 − μ)/ν < 0.3/λ̂ can bind only for μ > 0.7, as ν ≤ λ̂
    capped = config.snapshot_every is None and config.momentum > 0.7
    bounds = [
        _curvature_bound(
            problem,
            xb,
            jax.random.fold_in(key, j),
            config.batch_size,
            dataset.n,
            config.power_iters,
            capped,
        )
        for j in range(3)
    ]
    lams = [float(lam_j) for lam_j, _ in bounds]
    if not all(math.isfinite(lam_j) and lam_j > 0 for lam_j in lams):
        alpha = np.asarray(problem.prior.alpha)
        raise FloatingPointError(
            f"the default learning rate needs the largest eigenvalue λ̂ of H, and its power "
            f"iteration gave {lams} (the largest prior precision is alpha = "
            f"{float(alpha.max()):.3g} in {alpha.dtype}): give "
            "learning_rate, or keep alpha's square within the floating-point range"
        )
    lam = max(lams)
    if config.snapshot_every is not None:
        return (1.0 - config.momentum) / lam
    if capped:
        return min(0.3 / lam, (1.0 - config.momentum) / max(float(nu) for _, nu in bounds))
    return 0.3 / lam


def _blocks(dataset, block_size: int | None, batch_size: int, key):
    """Endless (x_b, y_b, rows_b) blocks: the whole array in memory, or shuffled passes
    over a streamed dataset in reads of ``block_size`` (default 65 536) rows, at least
    one minibatch (minibatches are drawn within a read; a smaller one would silently
    shrink them)."""
    if dataset.in_memory:
        while True:
            yield dataset.X, dataset.y, jnp.arange(dataset.n)
    epoch, size = 0, max(block_size or 65_536, batch_size)
    while True:
        yield from dataset.blocks(size, jax.random.fold_in(key, epoch))
        epoch += 1


def sgd(
    problem: Problem,
    key: jax.Array,
    n_samples: int,
    config: SGDConfig = DEFAULT_SGD,
    *,
    init: Float[Array, "k1 d"] | SampledPosterior | None = None,
    callback: Callable[[int, SampledPosterior], bool | None] | None = None,
    passes: Passes = NO_PASSES,
) -> tuple[SampledPosterior, Diagnostics]:
    """Posterior mean and ``n_samples`` samples z_j ~ N(0, H⁻¹) by minibatched SGD.

    Each column minimises its quadratic ½xᵀHx − r_jᵀx (the low-variance objective, or
    the standard one) with minibatch gradients that share one primal pass.

    Args:
        problem: Φ, B, A and the data (``Problem``; ``config.block_size`` overrides its
            block size).
        key: fixes the sample noise (θ⁰, ξ) and the minibatch order.
        n_samples: k ≥ 1 samples.
        config: the optimiser's settings (``SGDConfig``).
        init: warm start from a previous solution (k + 1 rows: mean first, or a
            ``SampledPosterior``), or the mean's start (d,); by default the mean starts
            at 0 and each sample at P⁻¹Aθⁿ_j (P = diag(H); zero without
            preconditioning), and with snapshots every column at the exact line-search
            step from 0 along P⁻¹(−∇(0)) (one pass, the first snapshot's).
        callback: ``callback(step, posterior)`` after each logged chunk with the
            current iterate (the running average with Polyak averaging); stops the run
            if it returns True.
        passes: ``Passes`` a caller already made: ``data_diagonal`` = diag(ΦᵀBΦ) (the
            Jacobi preconditioner P = diag(ΦᵀBΦ) + diag(A) then costs no pass) and
            ``noise_rhs``, the targets' pass [ΦᵀBY; ΦᵀLξ_j] for this key.

    Returns:
        (posterior, diagnostics): the ``SampledPosterior`` and the ``Diagnostics``.

    Raises:
        ValueError: ``n_samples`` < 1, or a ``config`` that does not fit the data.
        FloatingPointError: naming the step, if the iteration diverges.

    Example:
        >>> post, diag = sgd(problem, jax.random.PRNGKey(0), 8, SGDConfig(n_steps=500))  # doctest: +SKIP
    """
    features, likelihood, prior, dataset = problem.parts()
    data_diagonal, noise_rhs = passes.data_diagonal, passes.noise_rhs
    if config.block_size is None and problem.block_size is not None:
        config = dataclasses.replace(config, block_size=problem.block_size)
    k = positive_int(n_samples, "n_samples")
    config.validate(dataset.n)
    block_size = config.block_size
    k_targets, k_solver = split_key(key)
    k_lr, k_steps = jax.random.split(k_solver)
    targets: SampleTargets = draw_targets(
        features,
        likelihood,
        prior,
        dataset,
        k_targets,
        k,
        block_size,
        data_rhs=config.snapshot_every is not None,
        noise_rhs=noise_rhs,
    )
    standard = config.objective == "standard"
    precond = (
        jacobi(features, likelihood, prior, dataset, block_size, data_diagonal)
        if config.precondition
        else jnp.ones(prior.d, targets.theta0.dtype)
    )
    problem = _problem(features, likelihood, prior, targets, precond, standard)
    blocks = _blocks(dataset, block_size, config.batch_size, k_steps)

    # default start of each sample: one Jacobi step for H z_j = r_j = Aθⁿ_j, i.e.
    # z = P⁻¹r_j (exact in the directions the prior dominates, shrunk where the data do)
    rhs = targets.rhs(prior)
    start = jnp.concatenate(
        [problem.centres[:1], rhs / precond if config.precondition else jnp.zeros_like(rhs)]
    )
    x0 = _initial(init, start)

    def solved(x) -> SampledPosterior:  # with diag(H) and the rhs for diag_covariance
        return SampledPosterior.solved(x, precond if config.precondition else None, rhs)

    placed, sharding = place_parameters(problem, prior.d), row_sharding()
    snapshot_every, snapshot, converged = config.snapshot_every, None, False
    if snapshot_every is not None:
        take_snapshot, first_step, rhs_norm = _snapshots(
            features, likelihood, prior, dataset, placed, targets, block_size
        )
        # the first snapshot is the start: a given one, or the line-search step from 0
        if init is None:
            x0, snapshot, gnorm = first_step()
        else:
            snapshot, _, gnorm = take_snapshot(x0)
        next_snapshot = snapshot_every
        if _converged(config.tol, gnorm, rhs_norm):  # no step, so no learning rate either
            return solved(x0), Diagnostics(converged=True)
    lr = _learning_rate(config, problem, dataset, block_size, k_lr)
    optimizer = _optimizer(config.momentum, config.nesterov)
    opt_state = optimizer.init(x0)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, x0.dtype)
    state = place_parameters((x0, opt_state, x0, jnp.zeros((), jnp.int32)), prior.d)
    avg_from = jnp.asarray(
        config.n_steps if config.polyak is None else int(config.polyak * config.n_steps)
    )
    diag = Diagnostics(learning_rate=lr)
    bar = progress_bar(config.progress, config.n_steps, "sgd")
    done, prev = 0, x0
    while done < config.n_steps and not converged:
        xb, yb, rows = put_rows(next(blocks))
        per_block = config.log_every
        if not dataset.in_memory:
            per_block = max(1, math.ceil(xb.shape[0] / config.batch_size))
        n_chunk = min(per_block, config.n_steps - done)
        if snapshot is not None:
            n_chunk = min(n_chunk, next_snapshot - done)
        chunk = _Chunk(dataset.n, config.batch_size, n_chunk, jnp.asarray(done), avg_from)
        state, obj, gnorm = _run_chunk(
            placed,
            optimizer,
            state,
            (xb, yb, rows),
            jax.random.fold_in(k_steps, done),
            chunk,
            sharding,
            snapshot,
        )
        done += n_chunk
        x = state[0]
        if snapshot is None:
            prev = _record(diag, bar, done, x, prev, obj, gnorm, lr)
        elif not bool(jnp.all(jnp.isfinite(x))):
            _diverged(done, lr)
        if bar is not None:
            bar.update(n_chunk)
        if callback is not None and callback(done, solved(_current(state, done, avg_from))):
            break
        if snapshot is not None and done in (next_snapshot, config.n_steps):
            # the next period's control variate, and exact diagnostics of this iterate
            snapshot, obj, gnorm = take_snapshot(x)
            next_snapshot = done + snapshot_every
            prev = _record(diag, bar, done, x, prev, obj, gnorm, lr)
            converged = _converged(config.tol, gnorm, rhs_norm)
    close(bar)
    if converged:  # the iterate whose residual was checked, not an average
        diag.converged = True
        return solved(state[0]), diag
    return solved(_current(state, done, avg_from)), diag


def _converged(tol: float | None, grad_norm, rhs_norm) -> bool:
    """Every column's relative residual ‖∇(x_j)‖/‖r_j‖ ≤ tol (never, without tol)."""
    return tol is not None and bool(jnp.all(grad_norm <= tol * rhs_norm))


def _diverged(step: int, lr: float) -> NoReturn:
    raise FloatingPointError(
        f"SGD diverged: the objective became non-finite by step {step} "
        f"(learning rate {lr:.3g}); lower learning_rate"
    )


def _record(diag: Diagnostics, bar, step: int, x, prev, obj, gnorm, lr: float):
    """Check the iterate and objective are finite, log them; returns x (the next ``prev``)."""
    if not (bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(obj)))):
        _diverged(step, lr)
    change = float(jnp.linalg.norm(x - prev) / jnp.maximum(jnp.linalg.norm(x), 1e-30))
    diag.log(step, obj, gnorm, change)
    if bar is not None:
        bar.set_postfix(objective=f"{float(obj[0]):.4g}", change=f"{change:.2e}")
    return x


def _snapshots(features, likelihood, prior, dataset, problem: _Problem, targets, block_size):
    """(take, first_step, ‖r‖): take(x) = ((x, ∇_data(x)), objective(x), ‖∇(x)‖), the
    SVRG snapshot with the exact objective and gradient norm of every column, by one full
    pass (ΦᵀBΦx); first_step() = (x⁰, snapshot at x⁰, ‖∇(x⁰)‖), the exact line-search
    step x⁰ = (rᵀs / sᵀHs) s from 0 along s = P⁻¹r, r = −∇(0) = t + Ac, by one pass
    (ΦᵀBΦs); ‖r‖ per column, the scale of the residuals.

    The data gradients are ΦᵀBΦx − t with t = ΦᵀBY for the mean (``targets.data_rhs``,
    from the targets' pass), 0 for low-variance samples and ΦᵀLξ_j for standard ones
    (``SampleTargets.noise``); so r is ΦᵀBY for the mean and Aθⁿ_j for either kind of
    sample."""
    noise = targets.noise(prior) if problem.standard else jnp.zeros_like(targets.centres)
    t = jnp.concatenate([targets.data_rhs[None], noise])
    r = t + prior.mul(problem.centres)
    if problem.linear is not None:
        r = r + problem.linear

    def take(x):
        hx = ops.normal_matvec(features, likelihood, dataset, x, block_size)
        data_grad = hx - t
        grad = data_grad + problem.prior_grad(x)
        objective = jnp.sum(x * (0.5 * hx - t), axis=1) + problem.prior_value(x)
        snapshot = place_parameters((x, data_grad), prior.d)
        return snapshot, objective, jnp.linalg.norm(grad, axis=1)

    def first_step():
        s = r / problem.precond
        hs = ops.normal_matvec(features, likelihood, dataset, s, block_size)
        curvature = jnp.sum(s * (hs + prior.mul(s)), axis=1)  # sᵀHs ≥ 0, 0 iff r = 0
        safe = jnp.where(curvature > 0, curvature, 1.0)
        c = jnp.where(curvature > 0, jnp.sum(r * s, axis=1) / safe, 0.0)[:, None]
        x0 = c * s
        data_grad = c * hs - t
        grad_norm = jnp.linalg.norm(data_grad + problem.prior_grad(x0), axis=1)
        return x0, place_parameters((x0, data_grad), prior.d), grad_norm

    return take, first_step, jnp.linalg.norm(r, axis=1)


def _current(state, done: int, avg_from) -> Float[Array, "k1 d"]:
    """The reported iterate: the Polyak average once averaging has begun, else the last."""
    return state[2] if done > int(avg_from) else state[0]


@functools.cache
def _optimizer(momentum: float, nesterov: bool) -> optax.GradientTransformation:
    """optax SGD with the learning rate held in its state (one compiled program per
    momentum setting, whatever the learning rate)."""
    return optax.inject_hyperparams(optax.sgd)(
        learning_rate=1.0, momentum=momentum or None, nesterov=nesterov
    )


def _initial(init, start: Array) -> Array:
    """The starting iterate (k + 1, d): ``init`` itself, or ``start`` with its mean row
    replaced by a given mean (d,), or ``start``."""
    k1, d = start.shape
    if init is None:
        return start
    if isinstance(init, SampledPosterior):
        init = jnp.concatenate([init.mean[None], init.samples])
    init = jnp.asarray(init, start.dtype)
    if init.shape == (d,):
        init = start.at[0].set(init)
    if init.shape != (k1, d):
        raise ValueError(
            f"init must have shape (d,) = {(d,)} (a mean) or (n_samples + 1, d) = {(k1, d)}, "
            f"got {init.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(init))):
        raise ValueError("init holds non-finite values")
    return init


def gradient_variance(
    problem: Problem,
    key: jax.Array,
    n_samples: int,
    *,
    objective: Objective,
    batch_size: int,
    z: Float[Array, "k d"],
    n_batches: int = 64,
) -> np.ndarray:
    """Empirical variance (trace, per sample) of the minibatch gradient at the points z,
    over ``n_batches`` random minibatches: the quantity the low-variance objective shrinks.

    Args:
        problem: Φ, B, A and an in-memory dataset.
        key: the sample noise and the minibatches.
        n_samples: k, the rows of ``z``.
        objective: ``"low-variance"`` or ``"standard"``.
        batch_size: rows per minibatch.
        z: (k, d) points at which the sample columns' gradients are taken.
        n_batches: minibatches drawn.

    Returns:
        (k,) the trace of each sample gradient's covariance over minibatches.
    """
    features, likelihood, prior, dataset = problem.parts()
    k_targets, k_batch = split_key(key)
    targets = draw_targets(features, likelihood, prior, dataset, k_targets, n_samples)
    precond = jnp.ones(prior.d, z.dtype)
    problem = _problem(features, likelihood, prior, targets, precond, objective == "standard")
    x = jnp.concatenate([jnp.zeros((1, prior.d), z.dtype), z])
    scale = dataset.n / batch_size

    @jax.jit
    def one(kb):
        idx = jax.random.randint(kb, (batch_size,), 0, dataset.n)
        return _minibatch_terms(problem, x, dataset.X[idx], dataset.y[idx], idx, scale)[0][1:]

    grads = jax.vmap(one)(jax.random.split(k_batch, n_batches))
    return np.asarray(jnp.sum(jnp.var(grads, axis=0), axis=-1))
