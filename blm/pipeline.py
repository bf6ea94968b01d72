r"""The one fitting pipeline: the hyperparameter loop every front door runs.

``fit_hyperparameters(problem, solver, rule, settings=..., key=..., n_samples=...)``
tunes the prior precisions α_g (and the noise precisions β_k of a Gaussian likelihood)
of the posterior N(θ̄, H⁻¹), H = ΦᵀBΦ + A, and returns a ``HyperparameterFit``:

- ``blm.Exact()``: the dense closed form (``DenseGaussianModel``, given or built from
  the problem), MacKay's exact fixed point α_g = γ_g/‖θ̄_g‖² with γ_g = |g| − Tr_g(AH⁻¹),
  or Adam on the exact evidence (``blm.EvidenceAscent``); ``fit.posterior`` the exact
  posterior at the fitted α, β and ``fit.score`` its log evidence + log hyperprior.
- ``blm.CG`` / ``blm.SGD``: each step solves for the mean and ``n_samples`` samples
  (warm-started, common random numbers), then MacKay's update with the sampled γ̂
  (``fit_mackay``) or one Adam step on the SLQ evidence (``fit_evidence``).

``BayesianLinearRegression.fit``, ``LinearisedModel.fit`` (and through it
``train_with_evidence``) and ``blm fit`` all call it.

Example:
    >>> import numpy as np, jax, blm
    >>> from blm.pipeline import FitSettings, fit_hyperparameters
    >>> from blm.solvers.config import DESIGN_DEFAULTS, Problem
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3)); y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=50)
    >>> problem = Problem(blm.LinearFeatures(3), blm.Gaussian(1.0), blm.Prior.scalar(1.0, 3),
    ...                   blm.ArrayDataset(X, y))
    >>> solver = blm.SGD(n_steps=500).resolved(DESIGN_DEFAULTS)  # the front doors' defaults
    >>> rule = blm.MacKay().resolved(DESIGN_DEFAULTS)
    >>> fit = fit_hyperparameters(problem, solver, rule,
    ...                           settings=FitSettings(max_iter=5, tol=1e-3),
    ...                           key=jax.random.PRNGKey(0), n_samples=8)
    >>> fit.alpha.shape, fit.posterior.samples.shape
    ((1,), (8, 3))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from blm.checkpoint import Checkpointer
from blm.data import default_dtype
from blm.evidence.acceleration import Anderson
from blm.evidence.ascent import AdamAscent, effective_dimension_from_gradient, fit_evidence
from blm.evidence.closed_form import DenseGaussianModel, GammaHyperprior, exact_mackay_step
from blm.evidence.loop import (
    FinalSolve,
    HyperparameterFit,
    LoopSettings,
    SolveSchedule,
    StoppingRule,
    fixed_mask,
    iterate_hyperparameters,
)
from blm.evidence.mackay import fit_mackay
from blm.rules import EvidenceAscent, MacKay, Rule
from blm.solvers.config import Exact, Problem, Solver


@dataclass(frozen=True)
class FitSettings:
    """How long and how a hyperparameter fit runs.

    Args:
        max_iter: hyperparameter steps at most (0: the posterior at the given α, β).
        tol: stop when no α_g, β_k changes by more than ``tol`` relative.
        evidence_tol: or (MacKay's rule) when the evidence's predicted gain from further
            steps is below ``evidence_tol`` nats (``StoppingRule``; steps that score their
            input), or None.
        hyperprior: Gamma hyperpriors on α and β (none by default).
        fixed: mask (G,) of the groups whose α is given, not fitted.
        progress: ``progress(step, change)`` after each step, or None.
        checkpointer: writes and resumes the loop's state, or None.
        final_solve: solve once more at the fitted α, β (sampled solvers; see
            ``solve_and_update``).
        solve_progress: show a bar inside each sampled solve.
        fit_beta: fit β (False: keep the likelihood's, as a non-Gaussian one has none).
        check: ``check(posterior, alpha)`` after each exact step (raises to stop), or None.
    """

    max_iter: int
    tol: float
    evidence_tol: float | None = None
    hyperprior: GammaHyperprior = GammaHyperprior()
    fixed: np.ndarray | None = None
    progress: Callable[[int, float], None] | None = None
    checkpointer: Checkpointer | None = None
    final_solve: FinalSolve = True
    solve_progress: bool = False
    fit_beta: bool = True
    check: Callable | None = None

    def stopping(self, rule: Rule) -> StoppingRule:
        """The loop's ``StoppingRule``: ``tol``, and ``evidence_tol`` for MacKay's rule
        (a fixed-point iteration, whose linear rate the predicted gain assumes; Adam's
        steps are not)."""
        return StoppingRule(self.tol, self.evidence_tol if isinstance(rule, MacKay) else None)

    def loop(self, rule: Rule, schedule: SolveSchedule | None = None) -> LoopSettings:
        """The solver-based loop's ``LoopSettings`` under ``rule``, solving early steps
        by ``schedule`` (or None)."""
        return LoopSettings(
            max_iter=self.max_iter,
            tol=self.stopping(rule),
            progress=self.progress,
            checkpointer=self.checkpointer,
            schedule=schedule,
            fixed=self.fixed,
            final_solve=self.final_solve,
            fit_beta=self.fit_beta,
        )


@eqx.filter_jit
def exact_score(model: DenseGaussianModel, prior, beta, hyperprior: GammaHyperprior):
    """log p(Y | α, β) + log p(α, β) of the dense model."""
    post = model.posterior(prior, beta)
    return model.log_evidence(post, beta) + hyperprior.log_density(prior.alpha, beta)


@eqx.filter_jit
def _exact_evidence_and_grad(model, prior, beta):
    return model.log_evidence_and_grad(prior, beta)


def fit_hyperparameters(
    problem: Problem,
    solver: Solver,
    rule: Rule,
    *,
    settings: FitSettings,
    key: jax.Array | None = None,
    n_samples: int = 0,
    dense: DenseGaussianModel | None = None,
    centre: jax.Array | None = None,
    init=None,
    evidence: Callable | None = None,
) -> HyperparameterFit:
    """Fit α (and β) of ``problem`` with ``solver`` by ``rule`` (module docstring).

    Args:
        problem: features, likelihood (at its starting β), prior (at its starting α),
            data.
        solver: ``blm.Exact()``, ``blm.CG(...)`` or ``blm.SGD(...)``, its ``None``
            fields resolved for the problem.
        rule: ``blm.MacKay(...)`` (its ``gamma`` resolved) or ``blm.EvidenceAscent``.
        settings: the loop's ``FitSettings``.
        key: the samples' key (sampled solvers; SLQ's probes from ``fold_in(key, 2)``).
        n_samples: posterior samples per solve (sampled solvers).
        dense: the dense model for ``Exact`` (default: built from the problem).
        centre: the mean the M-step uses in place of θ̄ (linearised Laplace around the
            MAP w̄), or None.
        init: the first solve's warm start (sampled solvers), or None.
        evidence: ``evidence(prior, likelihood)`` scoring each sampled MacKay step.

    Returns:
        A ``HyperparameterFit``; for ``Exact`` its posterior is the ``ExactPosterior``
        at the fitted α, β and ``score`` the log evidence + log hyperprior there.

    Raises:
        HyperparameterRangeError: an update left (0, ∞), or gave NaN.
    """
    if isinstance(solver, Exact):
        model = solver.init(problem) if dense is None else dense
        return _fit_exact(model, problem, rule, settings, centre)
    return _fit_sampled(problem, solver, rule, settings, key, n_samples, centre, init, evidence)


def _fit_exact(model, problem: Problem, rule, settings: FitSettings, centre):
    dtype, prior, hyper = default_dtype(), problem.prior, settings.hyperprior
    beta0 = np.asarray(getattr(problem.likelihood, "beta", np.ones(1)))
    ascent = None
    if isinstance(rule, EvidenceAscent):
        ascent = AdamAscent(prior.alpha, beta0, hyper, rule.learning_rate)
        resumed = settings.checkpointer.resumed if settings.checkpointer is not None else None
        if resumed is not None:
            ascent.restore(resumed.extra)

    def step(alpha, beta):
        p, b = prior.with_alpha(jnp.asarray(alpha, dtype)), jnp.asarray(beta, dtype)
        if ascent is None:
            new_alpha, new_beta, info = exact_mackay_step(model, p, b, hyper, centre)
        else:
            value, g_alpha, g_beta, post = _exact_evidence_and_grad(model, p, b)
            new_alpha, new_beta, score = ascent.step(alpha, beta, float(value), g_alpha, g_beta)
            gamma = effective_dimension_from_gradient(g_alpha, alpha, p.group_sum(post.mean**2))
            info = {"posterior": post, "score": score, "gamma": float(np.sum(gamma))}
            info["data_fit"] = float(jnp.sum(b * model.residual_sq(post.mean)))
        if settings.check is not None:
            settings.check(info["posterior"], alpha)
        summary = {k: v for k, v in info.items() if k != "posterior"}
        return new_alpha, new_beta if settings.fit_beta else beta, summary

    run, evaluations = step, [0]
    if isinstance(rule, MacKay) and rule.accelerate:
        free = ~fixed_mask(settings.fixed, np.size(prior.alpha)) & (np.asarray(prior.alpha) > 0)
        run = Anderson(step, free=free, fit_beta=settings.fit_beta).step

    def counted(alpha, beta):
        new_alpha, new_beta, info = run(alpha, beta)
        evaluations[0] += info.get("evaluations", 1)
        return new_alpha, new_beta, info

    alpha, beta, n_iter, trajectory, report = iterate_hyperparameters(
        counted,
        np.asarray(prior.alpha),
        beta0,
        settings.max_iter,
        settings.stopping(rule),
        settings.progress,
        settings.checkpointer,
        dict if ascent is None else ascent.state_arrays,
        settings.fixed,
    )
    p, b = prior.with_alpha(jnp.asarray(alpha, dtype)), jnp.asarray(beta, dtype)
    if ascent is None:  # the posterior and score at the final α, β
        info = exact_mackay_step(model, p, b, hyper, centre)[2]
        post, score = info["posterior"], float(info["score"])
    else:
        value, _, _, post = _exact_evidence_and_grad(model, p, b)
        score = float(value) + float(hyper.log_density(jnp.asarray(alpha), jnp.asarray(beta)))
    return HyperparameterFit(
        alpha,
        beta,
        post,
        n_iter,
        trajectory,
        None,
        converged=report["converged"],
        last_change=report["change"],
        score=score,
        n_solves=evaluations[0] + 1,
    )


def _fit_sampled(problem, solver, rule, settings: FitSettings, key, k, centre, init, evidence):
    state = solver.init(problem, key, k, settings.solve_progress)
    final = solver.final_tol
    adaptive = final is not None and solver.adaptive_tol is not False
    schedule = SolveSchedule(final) if adaptive else None

    def solve(likelihood, prior, warm, tol=None):
        post, diagnostics = solver.solve(
            state, likelihood, prior, init if warm is None else warm, tol
        )
        if centre is not None:
            post = eqx.tree_at(lambda p: p.mean, post, centre)
        return post, diagnostics

    loop = settings.loop(rule, schedule)
    if isinstance(rule, MacKay):
        fit = fit_mackay(
            solve, problem, loop, hyper=settings.hyperprior, estimator=rule.gamma, evidence=evidence
        )
    else:
        fit = fit_evidence(
            solve,
            problem,
            jax.random.fold_in(key, 2),
            loop,
            slq=rule.slq,
            hyper=settings.hyperprior,
            learning_rate=rule.learning_rate,
        )
    if fit.solved_at_final:
        fit.warn_if_unsolved(final, solver)
    return fit
