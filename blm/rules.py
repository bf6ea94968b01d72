r"""Hyperparameter rules as configuration objects: ``MacKay(...)`` and
``EvidenceAscent(...)``.

- ``MacKay(gamma)``: MacKay's fixed point α_g = γ_g/‖θ̄_g‖², β_k = (n − γ_k)/‖y_k − Φθ̄‖²
  (with Gamma hyperpriors: (γ_g + 2a − 2)/(‖θ̄_g‖² + 2b)), the effective dimension γ exact
  (dense solver) or estimated from the posterior samples, γ̂ = mean_j z_jᵀΦᵀBΦz_j (the
  ``"data"`` form), |g| − mean_j z_jᵀAz_j (``"prior"``) or their control-variate
  combination (``"combined"``); see ``blm.evidence.mackay``.
- ``EvidenceAscent(learning_rate, slq)``: Adam on (log α, log β) of the log evidence,
  exactly for the dense solver, by stochastic Lanczos quadrature (``SLQ``) with exact
  adjoint gradients for the sampled ones.

Example:
    >>> import blm
    >>> blm.MacKay(gamma="data")
    MacKay(gamma='data')
    >>> blm.EvidenceAscent(learning_rate=0.05, slq=blm.SLQ(depth=30))  # doctest: +SKIP
"""

from __future__ import annotations

import abc

import equinox as eqx
import numpy as np

from blm.evidence.lanczos import SLQ
from blm.solvers.config import Defaults, as_config

GAMMA_FORMS = ("combined", "data", "prior")
CENTRES = ("linear", "map")


class Rule(eqx.Module):
    """A hyperparameter rule's settings (abstract)."""

    @abc.abstractmethod
    def resolved(self, defaults: Defaults) -> Rule:
        """The same rule with its ``None`` fields set from ``defaults``."""


class MacKay(Rule):
    """MacKay's fixed-point (EM) update of α and β.

    Args:
        gamma: the form of the sampled effective dimension γ̂: ``"combined"``, ``"data"``
            or ``"prior"``; None: the problem's (combined for a design matrix, data for a
            network). The exact solver computes γ exactly and ignores it.
        accelerate: with the exact solver, extrapolate the fixed-point iteration
            (Anderson in (log α, log β), ``blm.evidence.acceleration``), moving only where
            the exact evidence does not decrease: MacKay's fixed points in fewer solves.
            False: plain MacKay steps. Sampled solvers take plain steps (their γ̂ is
            noisy) whatever it says.
        centre: the mean the M-step divides by, for a linearised network:
            ``"linear"`` (the linear model's own posterior mean θ̄) or ``"map"`` (the
            trained weights w̄: MacKay's 1992 update γ_g/‖w̄_g‖², whose fixed point is the
            stationary point of Laplace's evidence around w̄); None: the problem's. A
            linear model's θ̄ is its MAP, so the estimators ignore it.

    Raises:
        ValueError: for another ``gamma`` or ``centre``, or an ``accelerate`` that is not
            a bool.
    """

    gamma: str | None = eqx.field(default=None, static=True)
    accelerate: bool = eqx.field(default=True, static=True)
    centre: str | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.gamma is not None and self.gamma not in GAMMA_FORMS:
            raise ValueError(
                f"MacKay.gamma must be one of {GAMMA_FORMS} or None, got {self.gamma!r}"
            )
        if not isinstance(self.accelerate, bool | np.bool_):
            raise ValueError(f"MacKay.accelerate must be True or False, got {self.accelerate!r}")
        if self.centre is not None and self.centre not in CENTRES:
            raise ValueError(f"MacKay.centre must be one of {CENTRES} or None, got {self.centre!r}")

    def resolved(self, defaults: Defaults) -> MacKay:
        return MacKay(
            gamma=defaults.gamma if self.gamma is None else self.gamma,
            accelerate=self.accelerate,
            centre=defaults.centre if self.centre is None else self.centre,
        )


class EvidenceAscent(Rule):
    """Gradient ascent (Adam) of the log evidence plus log hyperprior in (log α, log β).

    Args:
        learning_rate: Adam's step size, > 0.
        slq: the stochastic Lanczos quadrature of log det H for sampled solvers.

    Raises:
        ValueError: for a learning rate that is not positive, or an ``slq`` that is not
            ``blm.SLQ``.
    """

    learning_rate: float = eqx.field(default=0.1, static=True)
    slq: SLQ = eqx.field(default=SLQ(), static=True)

    def __check_init__(self):
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float | np.floating):
            raise ValueError(f"EvidenceAscent.learning_rate must be a positive number, got {lr!r}")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"EvidenceAscent.learning_rate must be a positive number, got {lr!r}")
        if not isinstance(self.slq, SLQ):
            raise ValueError(f"EvidenceAscent.slq must be blm.SLQ(...), got {self.slq!r}")

    def resolved(self, defaults: Defaults) -> EvidenceAscent:
        return self


RULE_NAMES = {"mackay": MacKay, "evidence": EvidenceAscent}


def as_rule(rule: str | Rule, name: str = "hyper") -> Rule:
    """A rule object from ``rule``: one already, or 'mackay' / 'evidence' for the
    default object (``as_config``; TypeError/ValueError naming ``name``)."""
    described = "a rule object (blm.MacKay(...), blm.EvidenceAscent(...))"
    return as_config(rule, RULE_NAMES, Rule, name, described)
