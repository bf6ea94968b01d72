r"""Solvers as configuration objects: ``Exact()``, ``CG(...)``, ``SGD(...)``.

Each is an ``eqx.Module`` whose fields are its settings, checked when it is built
(``__check_init__`` names the field), and which runs through two methods:

- ``init(problem, key, n_samples)`` → a state holding what depends only on the data and
  the key: the Jacobi diagonal diag(ΦᵀBΦ), the coarse space ΦᵀBΦZ, the targets'
  right-hand sides [ΦᵀBY; ΦᵀLξ_j] (common random numbers), made at the first solve and
  rescaled to later noise precisions β where θ splits into one block per output;
- ``solve(state, likelihood, prior, init, tol=None)`` → ``(posterior, diagnostics)``:
  the posterior mean θ̄ = H⁻¹ΦᵀBY and samples z_j ~ N(0, H⁻¹) of H = ΦᵀBΦ + A,
  warm-started from ``init``; ``diagnostics.converged`` says whether the solve met its
  tolerance.

A field left ``None`` takes the default of the problem it is given to
(``DESIGN_DEFAULTS`` for a design matrix, ``NETWORK_DEFAULTS`` for a linearised
network): ``resolved(defaults)`` fills them in.

Example:
    >>> import blm
    >>> blm.CG(tol=1e-8, max_iter=500)
    CG(tol=1e-08, max_iter=500)
    >>> blm.SGD(n_steps=0)
    Traceback (most recent call last):
    ValueError: SGD.n_steps must be an integer >= 1, got 0
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from blm import operators as ops
from blm.evidence.closed_form import DenseGaussianModel
from blm.solvers.cg import CGSettings, cg, preconditioner_pass, resolve_blocks
from blm.solvers.problem import Passes, Problem
from blm.solvers.sampled import Diagnostics, SampledPosterior
from blm.solvers.sgd import sgd
from blm.solvers.sgd_config import SGDConfig
from blm.solvers.targets import targets_pass

PRECONDITIONERS = ("coarse", "jacobi", "none")


@dataclass(frozen=True)
class Defaults:
    """The settings that depend on the kind of problem (``None`` fields of the solver
    and rule objects). Args: sgd_n_steps, sgd_precondition (Jacobi), cg_tol, gamma
    (MacKay's γ̂ form), adaptive_tol (loose early solves where there is a tol), centre
    (the mean MacKay's M-step divides by: ``blm.MacKay.centre``)."""

    sgd_n_steps: int
    sgd_precondition: bool
    cg_tol: float
    gamma: str
    adaptive_tol: bool
    centre: str = "linear"


DESIGN_DEFAULTS = Defaults(
    sgd_n_steps=2000, sgd_precondition=True, cg_tol=1e-6, gamma="combined", adaptive_tol=True
)
"""A design matrix (``BayesianLinearRegression``, ``blm fit``)."""
NETWORK_DEFAULTS = Defaults(
    sgd_n_steps=1000,
    sgd_precondition=False,
    cg_tol=1e-4,
    gamma="data",
    adaptive_tol=False,
    centre="map",
)
"""A linearised network (``LinearisedModel.fit``): MacKay's update centred at the trained
weights w̄ (its fixed point maximises the Laplace evidence the fit reports); its Jacobian
columns are strongly
correlated across layers and Jacobi scaling slows SGD there; the data form of γ̂ does
not see the directions plain SGD hardly moves."""


def _integer(value, name: str, minimum: int = 1, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive(value, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _filled(config, **defaults):
    """``config`` with each field named in ``defaults`` that is None set to its default."""
    changes = {k: v for k, v in defaults.items() if getattr(config, k) is None}
    return dataclasses.replace(config, **changes) if changes else config


def as_config(value, names: dict, base: type, name: str, described: str):
    """A configuration object from ``value``: an instance of ``base`` already, or a key
    of ``names`` for its default object.

    Raises:
        ValueError: for an unknown name; TypeError: for anything else; both naming
            ``name``.
    """
    if isinstance(value, base):
        return value
    if isinstance(value, str) and value in names:
        return names[value]()
    choices = ", ".join(repr(k) for k in names)
    raise (ValueError if isinstance(value, str) else TypeError)(
        f"{name} must be one of {choices} or {described}, got {value!r}"
    )


def _adaptive(value, name: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be True, False or None, got {value!r}")


def _flag(value, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


class Solver(eqx.Module):
    """A posterior solver's settings (abstract): see the module docstring."""

    @abc.abstractmethod
    def resolved(self, defaults: Defaults) -> Solver:
        """The same solver with its ``None`` fields set from ``defaults``."""

    @property
    @abc.abstractmethod
    def final_tol(self) -> float | None:
        """The tolerance a final solve must meet (None: none, as plain SGD's)."""

    @abc.abstractmethod
    def init(self, problem: Problem, key: jax.Array, n_samples: int, progress: bool = False):
        """The state of ``solve``: the work that depends only on the data and ``key``."""

    @abc.abstractmethod
    def solve(self, state, likelihood, prior, init=None, tol: float | None = None):
        """(posterior, diagnostics) at (likelihood, prior), warm-started from ``init``;
        ``tol`` overrides the solver's tolerance for this call."""


class Exact(Solver):
    r"""The dense closed form: H formed (primal, d × d) or its dual (n·m square), factored
    by Cholesky. Exact posterior, exact MacKay steps and exact evidence; memory of order
    d² (or (n·m)²).

    Args:
        form: ``"auto"`` (the smaller of primal and dual), ``"primal"`` or ``"dual"``.

    Example:
        >>> est = blm.BayesianLinearRegression(solver=blm.Exact())  # doctest: +SKIP
    """

    form: str = eqx.field(default="auto", static=True)

    def __check_init__(self):
        if self.form not in ("auto", "primal", "dual"):
            raise ValueError(f"Exact.form must be 'auto', 'primal' or 'dual', got {self.form!r}")

    def resolved(self, defaults: Defaults) -> Exact:
        return self

    @property
    def final_tol(self) -> None:
        return None

    def init(self, problem: Problem, key=None, n_samples: int = 0, progress: bool = False):
        """The dense model (Gram or dual matrix) of a design-matrix problem."""
        return DenseGaussianModel.from_data(problem.features, problem.dataset, self.form)

    def solve(self, state, likelihood, prior, init=None, tol=None):
        """The exact posterior (mean and Cholesky factor); diagnostics None."""
        return state.posterior(prior, likelihood.beta), None


class _Passes:
    """The full passes a sampled solve needs, made at the first β asked for and reused:
    rescaled to a later β where θ splits per output (row j, in output k's block, scales
    like (β_k/β⁰_k)^powers[j]: diag(ΦᵀBΦ) and ΦᵀBY by β_k/β⁰_k, ΦᵀLξ by √(β_k/β⁰_k)),
    else remade when β changes (without a noise precision: made once)."""

    def __init__(self, problem: Problem, compute, powers: float | tuple = 1.0):
        self.problem, self.compute, self.powers = problem, compute, jnp.asarray(powers)
        self.first: tuple[jax.Array, Any] | None = None

    def __call__(self, likelihood) -> jax.Array:
        beta = getattr(likelihood, "beta", None)
        if self.first is not None and self.problem.outputs is None and beta is not None:
            if not np.array_equal(np.asarray(beta), np.asarray(self.first[1])):
                self.first = None  # a network's β moved: no per-output rescaling
        if self.first is None:
            self.first = (self.compute(likelihood), beta)
        values, beta0 = self.first
        if beta is None or self.problem.outputs is None:
            return values
        ratio = (beta / beta0) ** self.powers[..., None]  # (m,) or (r, m)
        width = values.shape[-1] // self.problem.outputs
        return values * jnp.repeat(ratio, width, axis=-1)


@dataclass
class _SampledState:
    """``CG``/``SGD`` state: the problem, key, k, the cached passes and the settings."""

    problem: Problem
    key: jax.Array
    n_samples: int
    targets: _Passes
    diagonal: _Passes | None
    both: _Passes | None
    settings: Any


def _sampled_state(problem, key, k, settings, precondition: bool, blocks) -> _SampledState:
    features, dataset, bs = problem.features, problem.dataset, problem.block_size
    targets = _Passes(
        problem,
        lambda lik: targets_pass(problem.at(lik), key, k),
        (1.0,) + (0.5,) * k,
    )
    diagonal = both = None
    if precondition and blocks is None:
        diagonal = _Passes(problem, lambda lik: ops.normal_diagonal(features, lik, dataset, bs))
    elif precondition:  # diag(ΦᵀBΦ) and ΦᵀBΦZ, one pass: rows [diagonal; Y_data]
        both = _Passes(
            problem,
            lambda lik: jnp.vstack(preconditioner_pass(features, lik, dataset, blocks, bs)),
        )
    return _SampledState(problem, key, k, targets, diagonal, both, settings)


def _run(solve, state: _SampledState, likelihood, prior, init, tol, passes: Passes):
    """``solve`` (``cg`` or ``sgd``) of the state's problem at (likelihood, prior), its
    settings' tolerance replaced by ``tol`` where given."""
    settings = state.settings if tol is None else dataclasses.replace(state.settings, tol=tol)
    problem = state.problem.at(likelihood, prior)
    return solve(problem, state.key, state.n_samples, settings, init=init, passes=passes)


def _passes(state: _SampledState, likelihood) -> Passes:
    """The cached passes at ``likelihood``, rescaled to its β where they can be."""
    noise = state.targets(likelihood)
    if state.diagonal is not None:
        return Passes(data_diagonal=state.diagonal(likelihood), noise_rhs=noise)
    if state.both is not None:
        rows = state.both(likelihood)
        return Passes(data_diagonal=rows[0], data_coarse=rows[1:], noise_rhs=noise)
    return Passes(noise_rhs=noise)


class CG(Solver):
    r"""Batched conjugate gradients on H x = b for the mean and every sample at once (one
    full pass per iteration), preconditioned.

    Args:
        tol: relative residual ‖b − Hx‖/‖b‖ of every column to stop at; None: the
            problem's (1e-6 for a design matrix, 1e-4 for a network).
        max_iter: iterations at most (a solve that stops there warns).
        preconditioner: ``"coarse"`` (Jacobi plus a coarse correction deflating each
            prior group within each output, with two groups or more), ``"jacobi"``
            (diag(H) alone) or ``"none"``.
        coarse_blocks: an integer block per coordinate (d,) to deflate in place of the
            prior's groups (with ``"coarse"``).
        adaptive_tol: solve early EM steps loosely (``SolveSchedule``: the same fixed
            point, about half the work); False solves every step to ``tol``; None: the
            problem's (on for a design matrix, off for a network).
        block_size: rows per pass block (None: the features' own bound).

    Raises:
        ValueError: naming the field, for a value out of its range.

    Example:
        >>> blm.CG(tol=1e-8, preconditioner="jacobi")  # doctest: +SKIP
    """

    tol: float | None = None
    max_iter: int = 1000
    preconditioner: str = eqx.field(default="coarse", static=True)
    coarse_blocks: Any = None
    adaptive_tol: bool | None = eqx.field(default=None, static=True)
    block_size: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        _positive(self.tol, "CG.tol")
        _integer(self.max_iter, "CG.max_iter", optional=False)
        if self.preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"CG.preconditioner must be one of {PRECONDITIONERS}, got {self.preconditioner!r}"
            )
        if self.coarse_blocks is not None and self.preconditioner != "coarse":
            raise ValueError("CG.coarse_blocks needs preconditioner='coarse'")
        _adaptive(self.adaptive_tol, "CG.adaptive_tol")
        _integer(self.block_size, "CG.block_size")

    def resolved(self, defaults: Defaults) -> CG:
        return _filled(self, tol=defaults.cg_tol, adaptive_tol=defaults.adaptive_tol)

    @property
    def final_tol(self) -> float | None:
        return self.tol

    def blocks(self, prior, outputs: int | None) -> Any:
        """The coarse blocks (d,) deflated, or None for Jacobi alone."""
        if self.preconditioner != "coarse":
            return None
        choice = True if self.coarse_blocks is None else np.asarray(self.coarse_blocks)
        return resolve_blocks(choice, prior.groups, outputs or 1)

    def init(self, problem: Problem, key, n_samples: int, progress: bool = False):
        blocks = self.blocks(problem.prior, problem.outputs)
        settings = CGSettings(
            tol=self.tol,
            max_iter=self.max_iter,
            precondition=self.preconditioner != "none",
            coarse_blocks=False if blocks is None else blocks,
            progress=progress,
        )
        problem = dataclasses.replace(problem, block_size=self.block_size or problem.block_size)
        return _sampled_state(
            problem, key, n_samples, settings, self.preconditioner != "none", blocks
        )

    def solve(self, state, likelihood, prior, init=None, tol=None):
        return _run(cg, state, likelihood, prior, init, tol, _passes(state, likelihood))


class SVRG(eqx.Module):
    """Variance-reduced gradients for ``SGD``: a full pass (snapshot) every
    ``snapshot_every`` steps; the exact residual is then known at each snapshot, so a
    solve can stop at ``SGD.tol``.

    Args:
        snapshot_every: steps between snapshots; None: half an epoch, ⌈n/(2·batch)⌉.
    """

    snapshot_every: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        _integer(self.snapshot_every, "SVRG.snapshot_every")


class SGD(Solver):
    r"""Sample-then-optimise by minibatched SGD on the low-variance objective, the mean and
    every sample sharing one primal pass per minibatch.

    Args:
        n_steps: optimiser steps per solve (with ``tol``: the cap); None: the problem's
            (2 000 for a design matrix, 1 000 for a network).
        batch_size: rows per minibatch; None: min(256, n).
        learning_rate: None: from the curvature (power iterations; ``SGDConfig``).
        momentum: heavy-ball momentum in [0, 1); None: 0.9, or 0.5 with ``svrg``.
        nesterov: Nesterov momentum.
        polyak: average the iterates from step ``polyak · n_steps`` on (None: none).
        precondition: scale gradients by diag(H)⁻¹ (Jacobi); None: the problem's (on for
            a design matrix, off for a network).
        svrg: ``SVRG(...)`` for variance-reduced gradients, or None.
        tol: with ``svrg``, stop at the first snapshot where every column's relative
            residual is ≤ tol (cg's criterion); None: run ``n_steps``.
        adaptive_tol: with ``tol``, solve early EM steps loosely (``SolveSchedule``);
            None: the problem's where there is a ``tol``; True without one is refused.
        block_size: rows per pass block and per read of a streamed file.
        log_every: steps per logged diagnostic.
        objective: ``"low-variance"`` or ``"standard"``.

    Raises:
        ValueError: naming the field, for a value out of its range.

    Example:
        >>> blm.SGD(n_steps=4000, svrg=blm.SVRG(), tol=1e-4)  # doctest: +SKIP
    """

    n_steps: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)
    learning_rate: float | None = eqx.field(default=None, static=True)
    momentum: float | None = eqx.field(default=None, static=True)
    nesterov: bool = eqx.field(default=True, static=True)
    polyak: float | None = eqx.field(default=0.5, static=True)
    precondition: bool | None = eqx.field(default=None, static=True)
    svrg: SVRG | None = None
    tol: float | None = eqx.field(default=None, static=True)
    adaptive_tol: bool | None = eqx.field(default=None, static=True)
    block_size: int | None = eqx.field(default=None, static=True)
    log_every: int = eqx.field(default=100, static=True)
    objective: str = eqx.field(default="low-variance", static=True)

    def __check_init__(self):
        _integer(self.n_steps, "SGD.n_steps")
        _integer(self.batch_size, "SGD.batch_size")
        _positive(self.learning_rate, "SGD.learning_rate")
        if self.momentum is not None and not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"SGD.momentum must be in [0, 1), got {self.momentum!r}")
        _flag(self.nesterov, "SGD.nesterov")
        if self.polyak is not None and not 0.0 <= self.polyak < 1.0:
            raise ValueError(f"SGD.polyak must be None or in [0, 1), got {self.polyak!r}")
        if self.precondition is not None:
            _flag(self.precondition, "SGD.precondition")
        if self.svrg is not None and not isinstance(self.svrg, SVRG):
            raise ValueError(f"SGD.svrg must be blm.SVRG(...) or None, got {self.svrg!r}")
        _positive(self.tol, "SGD.tol")
        if self.tol is not None and self.svrg is None:
            raise ValueError(
                "SGD.tol needs svrg=blm.SVRG(): the exact residual is known only at a "
                "snapshot (plain SGD runs its n_steps)"
            )
        _adaptive(self.adaptive_tol, "SGD.adaptive_tol")
        if self.adaptive_tol and self.tol is None:
            raise ValueError(
                "SGD.adaptive_tol loosens the solver's tolerance early, so it needs one: "
                "svrg=blm.SVRG() and tol"
            )
        _integer(self.block_size, "SGD.block_size")
        _integer(self.log_every, "SGD.log_every")
        if self.objective not in ("low-variance", "standard"):
            raise ValueError(
                f"SGD.objective must be 'low-variance' or 'standard', got {self.objective!r}"
            )

    def resolved(self, defaults: Defaults) -> SGD:
        adaptive = {} if self.tol is None else {"adaptive_tol": defaults.adaptive_tol}
        return _filled(
            self, n_steps=defaults.sgd_n_steps, precondition=defaults.sgd_precondition, **adaptive
        )

    @property
    def final_tol(self) -> float | None:
        return self.tol

    def config(self, n: int, progress: bool = False, block_size: int | None = None) -> SGDConfig:
        """The ``SGDConfig`` of this (resolved) solver on n rows."""
        batch = min(256, n) if self.batch_size is None else self.batch_size
        if batch > n:
            raise ValueError(f"SGD.batch_size must be <= n = {n} rows, got {batch}")
        every = None
        if self.svrg is not None:
            every = self.svrg.snapshot_every or max(1, -(-n // (2 * batch)))
        momentum = self.momentum
        if momentum is None:
            momentum = 0.9 if self.svrg is None else 0.5
        config = SGDConfig(
            n_steps=self.n_steps or NETWORK_DEFAULTS.sgd_n_steps,
            batch_size=batch,
            learning_rate=self.learning_rate,
            momentum=momentum,
            nesterov=self.nesterov,
            polyak=self.polyak,
            objective=self.objective,
            log_every=self.log_every,
            block_size=self.block_size or block_size,
            precondition=bool(self.precondition),
            snapshot_every=every,
            tol=self.tol,
            progress=progress,
        )
        config.validate(n)
        return config

    def init(self, problem: Problem, key, n_samples: int, progress: bool = False):
        config = self.config(problem.dataset.n, progress, problem.block_size)
        problem = dataclasses.replace(problem, block_size=config.block_size)
        return _sampled_state(problem, key, n_samples, config, config.precondition, None)

    def solve(self, state, likelihood, prior, init=None, tol=None):
        passes = _passes(state, likelihood)
        passes = Passes(data_diagonal=passes.data_diagonal, noise_rhs=passes.noise_rhs)
        return _run(sgd, state, likelihood, prior, init, tol, passes)


SOLVER_NAMES = {"exact": Exact, "cg": CG, "sgd": SGD}


def as_solver(solver: str | Solver, name: str = "solver") -> Solver:
    """A solver object from ``solver``: one already, or its name ('exact', 'cg', 'sgd')
    for the default object (``as_config``; TypeError/ValueError naming ``name``)."""
    described = "a solver object (blm.Exact(), blm.CG(...), blm.SGD(...))"
    return as_config(solver, SOLVER_NAMES, Solver, name, described)


__all__ = [
    "CG",
    "DESIGN_DEFAULTS",
    "NETWORK_DEFAULTS",
    "SGD",
    "SVRG",
    "Defaults",
    "Diagnostics",
    "Exact",
    "Problem",
    "SampledPosterior",
    "Solver",
    "as_solver",
]
