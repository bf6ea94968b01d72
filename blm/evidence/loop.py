"""The outer loop of hyperparameter fitting, shared by every update rule.

An update rule is a function ``step(alpha, beta) -> (alpha_new, beta_new, info)``; the
loop iterates it until the largest relative change of any α_g or β_k falls below
``tol`` (or ``max_iter`` steps), and keeps the trajectory. Groups marked ``fixed`` keep
their α_g (a known prior precision, or 0 for a flat prior) whatever the rule proposes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from blm._checks import non_negative, positive, positive_int
from blm.exceptions import warn_not_converged
from blm.likelihoods import Likelihood
from blm.priors import Prior
from blm.solvers.sampled import SampledPosterior

if TYPE_CHECKING:
    from blm.checkpoint import Checkpointer

# solve(likelihood, prior, init) -> (posterior mean and samples, solver diagnostics); with a
# ``SolveSchedule`` it is called as solve(likelihood, prior, init, tol=ε_t)
Solve = Callable[..., tuple[SampledPosterior, object]]
# whether to solve once more at the final (α, β): a bool, or a function of them
FinalSolve = bool | Callable[[np.ndarray, np.ndarray], bool]


def checked_final_solve(final_solve) -> FinalSolve:
    """``final_solve`` if it is a bool or a function, else a ``TypeError`` naming it."""
    if isinstance(final_solve, bool | np.bool_) or callable(final_solve):
        return final_solve
    raise TypeError(
        "final_solve must be True, False or a function of the fitted (alpha, beta), got "
        f"{final_solve!r}"
    )


@dataclass(frozen=True)
class SolveSchedule:
    """Inexact E-steps: each step's solve tolerance follows how far the hyperparameters
    still move, so early steps (whose α, β are far from the fixed point) are solved
    loosely and only the last ones to ``final``.

    Step t solves to ε_t = min(max(factor·Δ_{t−1}, final), loosest), Δ_{t−1} the largest
    relative change of any α_g, β_k at the previous step (ε_1 = loosest): a forcing term
    as in inexact Newton methods. The loop accepts convergence (Δ_t < tol) only after a
    step solved to ``final`` (a loosely solved step can move little because its solve
    did, not because EM has converged), and the posterior it returns is solved to
    ``final``. With factor ≤ final/tol the steps that can converge are solved to final."""

    final: float
    loosest: float = 1e-2
    factor: float = 1e-2

    def __post_init__(self) -> None:
        for name in ("final", "loosest", "factor"):
            positive(getattr(self, name), name)

    def tol(self, change: float | None) -> float:
        """ε_t for the previous step's change Δ_{t−1} (None at the first step)."""
        loosest = max(self.loosest, self.final)
        if change is None:
            return loosest
        return float(min(max(self.factor * change, self.final), loosest))


@dataclass
class Trajectory:
    """Per-step record of the hyperparameters and what the step reported."""

    alpha: list[np.ndarray] = field(default_factory=list)
    beta: list[np.ndarray] = field(default_factory=list)
    gamma: list[float] = field(default_factory=list)
    data_fit: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)

    def append(self, alpha, beta, info: dict) -> None:
        """Record the step's input (α, β) and what it reported: γ, the data fit
        Σ_k β_k‖y_k − Φ_kθ̄‖², and the score (log evidence + hyperprior) where known."""
        self.alpha.append(np.asarray(alpha))
        self.beta.append(np.asarray(beta))
        self.gamma.append(float(info.get("gamma", np.nan)))
        self.data_fit.append(float(info.get("data_fit", np.nan)))
        self.score.append(float(info.get("score", np.nan)))


@dataclass
class LoopState:
    """Where a hyperparameter loop stands after ``iteration`` completed steps: the next
    step starts from (α, β); ``extra`` is the update rule's own state (arrays)."""

    iteration: int
    alpha: np.ndarray
    beta: np.ndarray
    trajectory: Trajectory
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class HyperparameterFit:
    """Result of a hyperparameter fit (``fit_mackay``, ``fit_evidence``): the final α, β,
    the posterior solved at them (where the final solve was declined, the last E-step's,
    solved at ``trajectory.alpha[-1]``, ``trajectory.beta[-1]``; ``solved_at_final``
    False), the steps taken, the trajectory and the solver's diagnostics of the last
    solve."""

    alpha: np.ndarray
    beta: np.ndarray
    posterior: SampledPosterior
    n_iter: int
    trajectory: Trajectory
    diagnostics: object
    solved_at_final: bool = True
    converged: bool = True
    last_change: float = 0.0
    score: float = float("nan")  # exact fits: log evidence + log hyperprior at α, β
    n_solves: int | None = None  # posterior solves in all (None: one per step and the final)

    def __post_init__(self) -> None:
        if self.n_solves is None:
            self.n_solves = self.n_iter + int(self.solved_at_final)

    def solve_converged(self, tol: float | None) -> bool:
        """Whether the final solve reached its tolerance ``tol`` (True without one: plain
        sgd runs its steps, the exact solver factors)."""
        return tol is None or bool(getattr(self.diagnostics, "converged", True))

    def warn_if_unsolved(self, tol: float | None, solver) -> None:
        """Warn (``ConvergenceWarning``) where the final solve had a tolerance ``tol`` (cg;
        sgd with a tol) and stopped at its cap before every column reached it: α, β and
        the posterior are then less accurate than asked. ``solver``: the solver object,
        whose cap the message names (``blm.CG(max_iter=...)``, ``blm.SGD(n_steps=...)``)."""
        if self.solve_converged(tol):
            return
        name = type(solver).__name__
        cap = "n_steps" if name == "SGD" else "max_iter"
        warn_not_converged(
            f"the final {name.lower()} solve stopped at its cap ({cap}) before every column's "
            f"relative residual reached tol = {tol:g}: the posterior and α, β are solved "
            f"less accurately than asked; raise blm.{name}({cap}=...) or its tol",
        )

    def warn_if_capped(self, tol: float, cap: str) -> None:
        """Warn (``ConvergenceWarning``) where the hyperparameter loop stopped at its cap
        (named ``cap``, e.g. ``max_iter=300``) with the last relative change of α, β still
        above ``tol``."""
        if self.converged:
            return
        warn_not_converged(
            f"the hyperparameter loop stopped at {cap} with the last relative change of "
            f"alpha, beta {self.last_change:.2e} above tol = {tol:g}: not converged; raise "
            f"{cap.split('=')[0]}",
        )


@dataclass(frozen=True)
class StoppingRule:
    r"""When a hyperparameter loop has settled: the largest relative change of any α_g,
    β_k below ``tol``, or (where the steps score their input, exact fits and sampled fits
    with an exact scorer) the evidence's predicted gain from all further steps below
    ``evidence_tol`` nats.

    The predicted gain: with s_t the score (log evidence + log hyperprior) at step t's
    input, g_t = s_t − s_{t−1} and ρ_t = g_t/g_{t−1}, an iteration converging at a rate
    ρ ∈ (0, 1) gains g_t ρ + g_t ρ² + … = g_t ρ/(1 − ρ) more. The rate is trusted only
    once the last three ratios are positive, below 1 and none more than twice the one
    before (a linear rate that has settled, or a faster one: a fit's first steps gain
    orders of magnitude more than its tail and would predict too little), and ρ is the
    largest of them. Steps whose gains are within rounding of the score (|g| below
    ``evidence_tol`` or 16·eps·|s_t|, eps of the hyperparameters' precision) are settled
    too. So an α_g along which the evidence is flat (a group the data do not determine)
    no longer keeps a fit running once the evidence has stopped moving.

    Args:
        tol: relative change of α, β to stop at (≥ 0).
        evidence_tol: nats of predicted evidence gain to stop at (> 0), or None (only
            ``tol``).

    Raises:
        ValueError: for a tolerance that is not a positive number.

    Example:
        >>> rule = StoppingRule(tol=1e-6, evidence_tol=1e-3)
        >>> rule.evidence_settled([-111.0, -101.0, -100.0, -99.9, -99.89, -99.889], np.float64)
        True
        >>> rule.evidence_settled([-110.0, -105.0, -102.0, -100.5, -99.8], np.float64)
        False
    """

    tol: float
    evidence_tol: float | None = None

    def __post_init__(self) -> None:
        non_negative(self.tol, "tol")
        if self.evidence_tol is not None:
            positive(self.evidence_tol, "evidence_tol")

    def evidence_settled(self, scores, dtype) -> bool:
        """Whether the scores so far (at the steps' inputs) predict less than
        ``evidence_tol`` nats of further gain (False without it or with < 5 scores)."""
        if self.evidence_tol is None or len(scores) < 5:
            return False
        s = np.asarray(scores[-5:], float)
        if not np.all(np.isfinite(s)):
            return False
        floor = max(self.evidence_tol, 16 * float_info(np.zeros(0, dtype)).eps * abs(s[-1]))
        gains = np.diff(s)
        if np.all(np.abs(gains[-2:]) <= floor):
            return True
        if np.any(gains <= 0):
            return False
        rho = gains[1:] / gains[:-1]
        if np.any(rho >= 1) or np.any(rho[1:] > 2 * rho[:-1]):
            return False
        rate = float(np.max(rho))
        return bool(gains[-1] * rate / (1 - rate) <= floor)


def as_stopping(tol: float | StoppingRule) -> StoppingRule:
    """``tol`` as a ``StoppingRule`` (a number: the relative change alone)."""
    return tol if isinstance(tol, StoppingRule) else StoppingRule(float(tol))


@dataclass(frozen=True)
class LoopSettings:
    """How a solver-based hyperparameter loop (``solve_and_update``, ``fit_mackay``,
    ``fit_evidence``) runs and stops.

    Args:
        max_iter: steps at most (0: the posterior at the given α, β).
        tol: stop when no α_g, β_k changes by more than ``tol`` relative, or a
            ``StoppingRule``.
        progress: ``progress(step, change)`` after each step, or None.
        checkpointer: writes and resumes the loop's state (``blm.checkpoint``), or None.
        schedule: loose early solves (``SolveSchedule``): ``solve`` is then called with
            ``tol=`` the step's tolerance; None: every solve at the solver's own.
        fixed: boolean mask (G,) of the prior groups whose α_g is not fitted (kept at the
            prior's; 0 for a flat group), or None.
        final_solve: solve once more at the final (α, β): a bool, or a function of them
            (False skips that solve; see ``solve_and_update``).
        fit_beta: update β (a Gaussian likelihood's); False holds it at its start and
            tunes α alone.

    Raises:
        ValueError: ``max_iter`` < 0; TypeError: ``final_solve`` neither a bool nor a
            function.
    """

    max_iter: int = 100
    tol: float | StoppingRule = 1e-4
    progress: Callable[[int, float], None] | None = None
    checkpointer: Checkpointer | None = None
    schedule: SolveSchedule | None = None
    fixed: np.ndarray | None = None
    final_solve: FinalSolve = True
    fit_beta: bool = True

    def __post_init__(self) -> None:
        positive_int(self.max_iter, "max_iter", minimum=0)
        checked_final_solve(self.final_solve)
        if not isinstance(self.fit_beta, bool | np.bool_):
            raise TypeError(f"fit_beta must be True or False, got {self.fit_beta!r}")


DEFAULT_LOOP = LoopSettings()
"""``LoopSettings()``: 100 steps at most, relative tolerance 1e-4."""


def relative_change(old: np.ndarray, new: np.ndarray) -> float:
    """max |new − old| / |old| over all entries (an unchanged entry counts 0, also at 0)."""
    old, new = np.asarray(old, float), np.asarray(new, float)
    if old.size == 0:
        return 0.0
    same = new == old
    return float(np.max(np.where(same, 0.0, np.abs(new - old) / np.where(same, 1.0, np.abs(old)))))


def fixed_mask(fixed, n_groups: int) -> np.ndarray:
    """``fixed`` as a boolean mask over the ``n_groups`` prior groups (None: none fixed)."""
    if fixed is None:
        return np.zeros(n_groups, bool)
    mask = np.asarray(fixed)
    if mask.shape != (n_groups,) or mask.dtype != bool:
        raise ValueError(
            f"fixed must be a boolean mask over the {n_groups} prior group(s), got shape "
            f"{mask.shape}, dtype {mask.dtype}"
        )
    return mask


def iterate_hyperparameters(
    step: Callable,
    alpha,
    beta,
    max_iter: int,
    tol: float | StoppingRule,
    progress: Callable[[int, float], None] | None = None,
    checkpointer: Checkpointer | None = None,
    extra_state: Callable[[], dict] = dict,
    fixed: np.ndarray | None = None,
):
    """Run ``step`` from (α, β) until converged. Returns (α, β, n_iter, trajectory, info)
    where α, β are the last update's output and info the last step's report, with
    ``info["converged"]`` (whether the loop met ``tol`` rather than ``max_iter``) and
    ``info["change"]`` (the last step's largest relative change; 0 with no step). The α_g of
    groups ``fixed`` (a boolean mask) stay at their starting values (≥ 0).

    With a ``checkpointer`` the state after each step (with ``extra_state()``, the
    update rule's own arrays) is handed to it, and flushed on Ctrl-C before the
    ``KeyboardInterrupt`` propagates; if it holds a resumed state the loop continues
    from there (the caller restores its own extra state first)."""
    try:
        fixed = fixed_mask(fixed, np.size(alpha))
        return _iterate(
            step, alpha, beta, max_iter, tol, progress, checkpointer, extra_state, fixed
        )
    except KeyboardInterrupt:
        if checkpointer is not None:
            checkpointer.flush()
        raise


class HyperparameterRangeError(FloatingPointError):
    """A hyperparameter update left (0, ∞): the loop stops and says why. ``runaway``:
    some fitted α grew past the bound (rather than reaching 0, or β leaving range)."""

    def __init__(self, message: str, runaway: bool = False):
        super().__init__(message)
        self.runaway = runaway


def float_info(values) -> np.finfo:
    """``np.finfo`` of the precision of ``values`` (float64 for non-float values)."""
    dtype = np.result_type(np.asarray(values))
    return np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64)


def unbounded_above(alpha) -> float:
    """The α treated as infinite: √(largest float) of the update's precision (1.8e19 in
    float32, 1.3e154 in float64). A precision past it cannot be squared, so a power
    iteration or a quadratic form on H overflows (a per-layer α of a network running away
    to 9e22 in float32 made sgd's learning rate NaN before the loop saw an inf)."""
    return float(np.sqrt(float_info(alpha).max))


def _nan_message(it: int, alpha, beta) -> str:
    dtype = np.result_type(np.asarray(alpha), np.asarray(beta))
    remedy = (
        "In float32 a Cholesky factor or solve of H loses its precision where H is badly "
        "conditioned: compute in float64 (pass float64 arrays, or blm fit --float64)"
        if dtype == np.float32
        else "A factorisation or solve of H failed; check the inputs for columns of wildly "
        "different scale, or give a Gamma hyperprior"
    )
    return (
        f"hyperparameter update {it} gave NaN (alpha={alpha}, beta={beta}) in {dtype}: "
        f"not a value of alpha out of range but a numerical failure. {remedy}"
    )


def _iterate(step, alpha, beta, max_iter, tol, progress, checkpointer, extra_state, fixed):
    trajectory, first = Trajectory(), 1
    resumed = checkpointer.resumed if checkpointer is not None else None
    if resumed is not None:
        alpha, beta, trajectory = resumed.alpha, resumed.beta, resumed.trajectory
        first = resumed.iteration + 1
        if resumed.extra.get("converged", False):
            return alpha, beta, resumed.iteration, trajectory, {"converged": True, "change": 0.0}
    info: dict = {}
    change = 0.0
    stop = as_stopping(tol)
    dtype = np.result_type(np.asarray(alpha))
    for it in range(first, max_iter + 1):
        new_alpha, new_beta, info = step(alpha, beta)
        trajectory.append(alpha, beta, info)
        bound = unbounded_above(new_alpha)
        new_alpha = np.where(fixed, alpha, np.asarray(new_alpha))
        new_beta = np.asarray(new_beta)
        if np.any(np.isnan(new_alpha)) or np.any(np.isnan(new_beta)):
            raise HyperparameterRangeError(_nan_message(it, new_alpha, new_beta))
        if not (np.all((new_alpha < bound) | fixed) and np.all(np.isfinite(new_beta))) or (
            np.any((new_alpha <= 0) & ~fixed) or np.any(new_beta <= 0)
        ):
            raise HyperparameterRangeError(
                f"hyperparameter update {it} gave values out of range (alpha={new_alpha}, "
                f"beta={new_beta}). An alpha growing without bound (here: past {bound:.2g}, "
                "whose square overflows in the precision of the update) means the evidence "
                "prunes that group's weights to zero (automatic relevance determination); a "
                "Gamma hyperprior with positive rate keeps it finite. An alpha reaching 0 means "
                "that group's effective dimension came out 0: no direction the data determine, "
                "or a sampled estimate too noisy (raise n_samples); a Gamma hyperprior with "
                "positive shape keeps it above 0"
                + (
                    ". In float32 an effective dimension near 0 or near its group's size "
                    "(gamma_g = |g| - alpha_g tr_g(H^-1)) loses its digits to rounding: "
                    "compute in float64 (float64 arrays, or blm fit --float64)"
                    if np.result_type(new_alpha) == np.float32
                    else ""
                ),
                runaway=bool(np.any((new_alpha >= bound) & ~fixed)),
            )
        change = max(relative_change(alpha, new_alpha), relative_change(beta, new_beta))
        alpha, beta = new_alpha, new_beta
        if progress is not None:
            progress(it, change)
        # a step whose E-step was solved loosely (``SolveSchedule``) cannot end the loop
        settled = change < stop.tol or stop.evidence_settled(trajectory.score, dtype)
        converged = settled and info.get("solved_to_final", True)
        if checkpointer is not None:
            extra = {**extra_state(), "converged": np.asarray(converged)}
            checkpointer.update(LoopState(it, alpha, beta, copy.deepcopy(trajectory), extra))
        if converged:
            return alpha, beta, it, trajectory, {**info, "converged": True, "change": change}
    if max_iter < first and trajectory.alpha:  # resumed at its cap: no step taken here
        change = relative_change(trajectory.alpha[-1], alpha)
    # no step asked for (max_iter 0: the posterior at the given α, β) has nothing to miss
    info = {**info, "converged": max_iter == 0, "change": change}
    return alpha, beta, max_iter, trajectory, info


def solve_and_update(
    solve: Solve,
    update: Callable,
    prior: Prior,
    likelihood: Likelihood,
    loop: LoopSettings,
    extra_state: Callable[[], dict] = dict,
) -> HyperparameterFit:
    """The loop every solver-based fit shares: at (α, β) solve for the posterior
    (warm-started from the previous step's solution, None at the first step), then
    ``update(posterior, likelihood, prior) -> (α, β, info)``; iterate until converged
    and solve once more at the final (α, β), unless ``loop.final_solve`` is False or a
    function of the final (α, β) returning False: then the last E-step's posterior is
    returned as it is (a warm start for a caller that moves on, such as an outer loop
    that retrains a network at the new α; a loop that took no step solves anyway).

    Args:
        solve: ``solve(likelihood, prior, init)`` → (posterior, diagnostics).
        update: the M-step, ``update(posterior, likelihood, prior)`` → (α, β, info).
        prior: the prior at its starting α.
        likelihood: at its starting β (m,), the Gaussian noise precision, fitted; other
            likelihoods have none (β empty).
        loop: how it runs and stops (``LoopSettings``). With a ``schedule`` each solve
            gets its tolerance from it (the previous step's change comes from the
            trajectory, so a resumed loop solves as the uninterrupted one).
        extra_state: the update rule's own arrays to checkpoint with the warm start.

    Returns:
        A ``HyperparameterFit``.

    Raises:
        HyperparameterRangeError: an update left (0, ∞), or gave NaN.
    """
    max_iter, tol, progress = loop.max_iter, loop.tol, loop.progress
    checkpointer, schedule, fixed = loop.checkpointer, loop.schedule, loop.fixed
    final_solve = loop.final_solve
    previous: dict = {}
    gaussian = likelihood.noise_precision is not None
    resumed = checkpointer.resumed if checkpointer is not None else None
    if resumed is not None and "warm_mean" in resumed.extra:
        previous["posterior"] = SampledPosterior(
            jnp.asarray(resumed.extra["warm_mean"]), jnp.asarray(resumed.extra["warm_samples"])
        )
    if resumed is not None and resumed.trajectory.alpha:
        previous["hyper"] = (resumed.trajectory.alpha[-1], resumed.trajectory.beta[-1])

    def loop_state() -> dict:
        post = previous["posterior"]
        return {**extra_state(), "warm_mean": post.mean, "warm_samples": post.samples}

    def at(alpha, beta):
        lik = likelihood.with_beta(np.asarray(beta)) if gaussian else likelihood
        return lik, prior.with_alpha(np.asarray(alpha, prior.alpha.dtype))

    def solve_at(lik, p, tol):
        init = previous.get("posterior")
        return solve(lik, p, init) if schedule is None else solve(lik, p, init, tol=tol)

    def step(alpha, beta):
        lik, p = at(alpha, beta)
        tol_t = None
        if schedule is not None:
            change = None
            if "hyper" in previous:
                old_alpha, old_beta = previous["hyper"]
                change = max(relative_change(old_alpha, alpha), relative_change(old_beta, beta))
            tol_t = schedule.tol(change)
        previous["hyper"] = (alpha, beta)
        post, diagnostics = solve_at(lik, p, tol_t)
        previous["posterior"], previous["diagnostics"] = post, diagnostics
        new_alpha, new_beta, info = update(post, lik, p)
        if schedule is not None:
            info = {**info, "solved_to_final": tol_t <= schedule.final}
        return new_alpha, new_beta if loop.fit_beta else beta, info

    alpha, beta, n_iter, trajectory, report = iterate_hyperparameters(
        step,
        np.asarray(prior.alpha),
        np.asarray(likelihood.beta) if gaussian else np.zeros(0),
        max_iter,
        tol,
        progress,
        checkpointer,
        loop_state,
        fixed,
    )
    solve_now = final_solve(alpha, beta) if callable(final_solve) else final_solve
    record = {"converged": report["converged"], "last_change": report["change"]}
    if not solve_now and "diagnostics" in previous:
        post, diagnostics = previous["posterior"], previous["diagnostics"]
        return HyperparameterFit(
            alpha, beta, post, n_iter, trajectory, diagnostics, False, **record
        )
    final = None if schedule is None else schedule.final
    post, diagnostics = solve_at(*at(alpha, beta), final)
    return HyperparameterFit(alpha, beta, post, n_iter, trajectory, diagnostics, **record)
