r"""``BayesianLinearRegression``'s fit through the one pipeline
(``blm.pipeline.fit_hyperparameters``): the design-matrix specifics around it.

- the exact solver's memory check and dense model (primal where a group is flat: the
  dual form needs A⁻¹), and the flat columns' collinearity check (H_ff = (ΦᵀBΦ)_ff must
  be non-singular, checked from the Gram, or for sgd/cg from one pass with the d_f unit
  vectors of the flat coordinates);
- the exact evidence scored at each sampled MacKay step where that is cheap;
- the progress bar over the steps;
- the joint covariance of the ``covariance_columns``, rows H⁻¹e_i (exact, or by cg).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from blm import operators as ops
from blm._progress import StepBar
from blm.data import default_dtype
from blm.evidence.closed_form import DenseGaussianModel, GammaHyperprior
from blm.evidence.loop import HyperparameterFit
from blm.exceptions import warn_not_converged
from blm.likelihoods import Gaussian
from blm.memory import available_memory, check_exact_memory, estimate_exact_memory
from blm.pipeline import FitSettings, exact_score, fit_hyperparameters
from blm.priors import Prior
from blm.rules import MacKay
from blm.solvers.cg import CGSettings, cg_solve
from blm.solvers.config import CG, DESIGN_DEFAULTS, Exact, Problem
from blm.solvers.sampled import SampledPosterior

FLAT_CHECK_NUMBERS = 2**25
"""The largest d_f·d (flat coordinates × weights) whose flat block sgd/cg check for
collinearity (256 MiB of float64 unit vectors)."""


def fit_posterior(
    est, features, dataset, prior: Prior, beta0, hyperprior: GammaHyperprior, fixed, key
):
    """α, β and the posterior of ``est``'s fit to (features, dataset), from ``prior`` (at
    the starting α, the ``fixed`` groups' given) and ``beta0``: a ``HyperparameterFit``
    (its ``score`` the exact log evidence + log hyperprior at the end where known)."""
    solver, rule = est._solver_object(), est._rule()
    with _step_bar(est) as bar:
        settings = FitSettings(
            max_iter=est.max_iter,
            tol=est.tol,
            evidence_tol=est.evidence_tol,
            hyperprior=hyperprior,
            fixed=fixed,
            progress=bar.callback,
            checkpointer=est._checkpointer,
        )
        problem = Problem(features, Gaussian(beta0), prior, dataset, outputs=features.m)
        if isinstance(solver, Exact):
            dense = _dense_model(features, dataset, prior, beta0)
            return fit_hyperparameters(problem, solver, rule, settings=settings, dense=dense)
        if prior.has_flat:
            _check_flat_block(features, dataset, prior, Gaussian(beta0), solver.block_size)
        scorer = (
            _exact_scorer(est, features, dataset, hyperprior) if isinstance(rule, MacKay) else None
        )
        fit = fit_hyperparameters(
            problem, solver, rule, settings=settings, key=key, n_samples=est._k(), evidence=scorer
        )
        if scorer is not None:
            dtype = default_dtype()
            score = scorer(
                prior.with_alpha(jnp.asarray(fit.alpha, dtype)),
                Gaussian(jnp.asarray(fit.beta, dtype)),
            )
            fit = dataclasses.replace(fit, score=score)
        return fit


def record_fit(est, fit: HyperparameterFit) -> None:
    """Set the estimator's record of the loop (``n_iter_``, ``trajectory_``,
    ``last_change_``, ``n_solves_``, ``diagnostics_`` of a sampled fit, ``converged_``)
    and warn (``ConvergenceWarning``) where it stopped at ``max_iter``."""
    est.n_iter_, est.trajectory_, est.last_change_ = fit.n_iter, fit.trajectory, fit.last_change
    est.n_solves_ = fit.n_solves
    if not est._exact():
        est.diagnostics_ = fit.diagnostics
    solved = fit.solve_converged(est._solver_object().final_tol)
    est.converged_ = bool(fit.converged and solved)
    if not fit.converged:
        warn_not_converged(
            f"BayesianLinearRegression: the hyperparameter loop stopped at "
            f"max_iter={est.max_iter} with the last relative change of alpha, beta "
            f"{est.last_change_:.2e} above tol={est.tol:g}: not converged; raise "
            "max_iter (or tol)",
        )


def _dense_model(features, dataset, prior: Prior, beta0) -> DenseGaussianModel:
    """The exact solver's dense model, after its memory check; primal with flat groups
    (whose columns are checked for collinearity on its Gram)."""
    streamed = None if dataset.in_memory else dataset.block_size
    itemsize = np.dtype(default_dtype()).itemsize
    flat = prior.has_flat  # the dual form needs A⁻¹: primal
    check_exact_memory(
        estimate_exact_memory(dataset.n, dataset.m, features.d, itemsize, streamed, flat),
        "the posterior",
        f"n = {dataset.n} rows and d = {features.d} weights",
        "use solver='cg' or solver='sgd' (matrix-free: memory of order (n_samples + 1)·d "
        "beside the data)",
        available_memory(),
    )
    model = DenseGaussianModel.from_data(features, dataset, "primal" if flat else "auto")
    if flat:
        cols = np.flatnonzero(np.asarray(prior.precision()) == 0)
        gram = np.asarray(model.gram)
        check_flat_columns(np.einsum("k,kde->de", beta0, gram[:, cols][:, :, cols]), gram.dtype)
    return model


def _check_flat_block(features, dataset, prior: Prior, likelihood, block_size) -> None:
    """The exact solver's collinearity check of the flat columns (``check_flat_columns``)
    for sgd/cg, from one pass over the data: (ΦᵀBΦ)_ff = E_fᵀΦᵀBΦE_f with the unit
    vectors E_f of the d_f flat coordinates (memory d_f·d). Skipped where that would
    exceed ``FLAT_CHECK_NUMBERS`` (then the columns are assumed independent)."""
    cols = np.flatnonzero(np.asarray(prior.precision()) == 0)
    if cols.size * features.d > FLAT_CHECK_NUMBERS:
        return
    dtype = default_dtype()
    units = jnp.zeros((cols.size, features.d), dtype).at[np.arange(cols.size), cols].set(1)
    gram = ops.normal_matvec(features, likelihood, dataset, units, block_size)[:, cols]
    check_flat_columns(gram, dtype)


def check_flat_columns(gram, dtype) -> None:
    """Refuse flat prior groups whose columns are collinear: a null vector v of
    H = ΦᵀBΦ + A has Av = 0, so it lives on the flat coordinates f, and H is singular
    exactly where ``gram`` = H_ff = (ΦᵀBΦ)_ff is. Its rank with ``numpy.linalg.matrix_rank``'s
    tolerance, σ_max·d_f·eps in the precision ``dtype`` the Gram was accumulated in (×10
    for the rounding of that accumulation)."""
    gram = np.asarray(gram, np.float64)
    singular = np.linalg.svd(gram, compute_uv=False)
    if singular[-1] <= 10 * len(gram) * np.finfo(dtype).eps * singular[0]:
        raise ValueError(
            "fixed_alpha: H = XᵀBX + A is singular with these flat (alpha 0) groups: their "
            "columns are collinear, with each other or, with fit_intercept, with the "
            "intercept (a complete set of dummies sums to it): drop a column, or give the "
            "group an alpha > 0"
        )


def _exact_scorer(est, features, dataset, hyperprior):
    """(prior, likelihood) -> exact log evidence + log hyperprior from the dense
    closed form, or None where ``exact_evidence`` says not to (auto: when cheap)."""
    d, m, n = features.d, features.m, dataset.n
    wanted = est.exact_evidence
    if wanted is None:
        wanted = d * m <= 2048 and n * m * d <= 5e7
    if not wanted:
        return None
    model = DenseGaussianModel.from_data(features, dataset, "primal")  # flat groups too

    return lambda prior, likelihood: float(exact_score(model, prior, likelihood.beta, hyperprior))


def _step_bar(est) -> StepBar:
    name = "evidence ascent" if est._evidence() else "EM"
    return StepBar(est.progress, est.max_iter, f"{name} ({est._solver_name()})")


def coef_covariance(est, columns, features, dataset, prior, likelihood) -> np.ndarray:
    """The posterior covariance of the weights of ``columns``, per output: rows
    H⁻¹e_i for the s·m unit vectors e_i at those weights (θ is the row-major ravel of
    the (m, p) coefficients, and H is block-diagonal over the outputs); by cg for a
    sampled posterior (the fit's ``CG`` settings, else cg's defaults)."""
    p, m, s = est.X_offset_.shape[0], est.y_offset_.shape[0], columns.size
    index = (np.arange(m)[:, None] * p + columns).ravel()  # (m·s,) places in θ
    unit = jnp.zeros((m * s, m * p), default_dtype()).at[np.arange(m * s), index].set(1.0)
    if isinstance(est.posterior_, SampledPosterior):
        solver = est._solver_object()
        solver = solver if isinstance(solver, CG) else CG().resolved(DESIGN_DEFAULTS)
        blocks = solver.blocks(prior, features.m)
        settings = CGSettings(
            tol=solver.tol,
            max_iter=solver.max_iter,
            progress=est.progress,
            coarse_blocks=False if blocks is None else blocks,
        )
        problem = Problem(features, likelihood, prior, dataset, solver.block_size)
        solved, diagnostics = cg_solve(problem, unit, settings)
        if not diagnostics.converged:
            warn_not_converged(
                "coef_covariance_: cg stopped at max_iter with relative residual "
                f"{diagnostics.rel_change[-1]:.2e}; raise blm.CG(max_iter=...)",
            )
    else:
        solved = est.posterior_.cov_mul(unit)
    blocks = np.asarray(solved)[:, index].reshape(m, s, m, s)
    cov = np.stack([blocks[k, :, k, :] for k in range(m)])
    cov = 0.5 * (cov + cov.transpose(0, 2, 1))  # cg's solves are symmetric to its tol
    return cov[0] if est._y_1d else cov


__all__ = ["FLAT_CHECK_NUMBERS", "HyperparameterFit", "coef_covariance", "fit_posterior"]
