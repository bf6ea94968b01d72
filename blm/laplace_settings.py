r"""Settings of a linearised-Laplace fit, as objects checked where they are built.

- ``Hyperparameters(alpha, beta, per_layer, fixed_alpha)``: where α (one, or one per
  layer) and β start, and which layers' α are given rather than fitted
  (``LinearisedModel.fit(start=...)``).
- ``WarmStart(samples, final_solve)``: a fit that continues from, or hands on to,
  another (``LinearisedModel.fit(warm=...)``; ``blm.train_with_evidence`` uses it).
- ``EMOptions(...)``: the ``LinearisedModel.fit`` settings each round of
  ``blm.train_with_evidence`` uses; ``Training(...)``: its ``train_map`` settings.

Example:
    >>> import blm
    >>> blm.Hyperparameters(alpha=10.0, per_layer=True)
    Hyperparameters(alpha=10.0, beta=None, per_layer=True, fixed_alpha=None, fixed_beta=False)
    >>> blm.Hyperparameters(alpha=0.0)
    Traceback (most recent call last):
    ValueError: alpha must be strictly positive, got 0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from blm._checks import positive, positive_int
from blm.evidence.loop import FinalSolve, checked_final_solve


@dataclass(frozen=True)
class Hyperparameters:
    """Where a linearised network's hyperparameters start, and which are fitted.

    Args:
        alpha: the prior precision α > 0 every layer starts at.
        beta: the Gaussian noise precision β > 0 to start at (or, with ``em_steps=0``,
            to use); None: 1/mean of the network's squared residuals when EM runs, else
            the β of the ``Gaussian`` given to ``linearise``. Ignored for likelihoods
            without a noise precision.
        per_layer: one α per parameter leaf (a layer's weight and bias together), not
            one α for the whole network.
        fixed_alpha: ``{layer name: α > 0}`` for layers whose α is given, not fitted
            (names of ``features.group_names``, e.g. ``".layers[2]"``); needs
            ``per_layer``. The names are checked against the network by ``fit``.
        fixed_beta: hold β at ``beta`` (None: the ``Gaussian``'s given to ``linearise``)
            and tune α alone, as laplace-torch's ``optimize_prior_precision`` does.

    Raises:
        ValueError: ``alpha`` or ``beta`` not positive, ``fixed_alpha`` without
            ``per_layer``; TypeError: ``per_layer`` not a bool, ``fixed_alpha`` not a
            mapping.
    """

    alpha: float = 1.0
    beta: float | None = None
    per_layer: bool = False
    fixed_alpha: Mapping[str, float] | None = None
    fixed_beta: bool = False

    def __post_init__(self) -> None:
        positive(self.alpha, "alpha")
        if self.beta is not None:
            positive(self.beta, "beta")
        for name in ("per_layer", "fixed_beta"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_fixed_alpha(self.fixed_alpha, self.per_layer)


def check_fixed_alpha(fixed_alpha, per_layer: bool) -> None:
    """``fixed_alpha`` None, or a mapping of layer names to α > 0 with ``per_layer``.

    Raises:
        TypeError: not a mapping. ValueError: without ``per_layer``, or an α not positive.
    """
    if fixed_alpha is None:
        return
    if not isinstance(fixed_alpha, Mapping):
        raise TypeError(
            f"fixed_alpha must map layer names to alpha, got {type(fixed_alpha).__name__}"
        )
    if not per_layer:
        raise ValueError(
            "fixed_alpha needs per_layer=True: it gives some layers' alpha and fits the others'"
        )
    for name, value in fixed_alpha.items():
        positive(value, f"fixed_alpha[{name!r}]")


DEFAULT_START = Hyperparameters()
"""α = 1 for the whole network, β from the residuals (or the likelihood's)."""


@dataclass(frozen=True)
class WarmStart:
    """A fit chained to another: where its samples start, and whether it solves once
    more at the α it fits.

    Args:
        samples: (n_samples, d) starting samples, e.g. a previous fit's at nearby weights
            (None: they start at 0, or the solver's own start).
        final_solve: after the last M-step, solve once more at the fitted α (β): a bool,
            or a function of the fitted (α, β) arrays; False skips it, and the
            posterior's ``mean`` and ``samples`` are then the last E-step's (a warm start
            for a fit that follows, not a posterior to predict with).

    Raises:
        TypeError: ``final_solve`` neither a bool nor a function.
    """

    samples: Any = None
    final_solve: FinalSolve = True

    def __post_init__(self) -> None:
        checked_final_solve(self.final_solve)


COLD_START = WarmStart()
"""No warm start: samples from the solver's own start, a final solve at the fitted α."""


@dataclass(frozen=True)
class EMOptions:
    """The ``LinearisedModel.fit`` settings of each round of ``blm.train_with_evidence``
    (α, β, the key and the warm start are the rounds' own).

    Args:
        n_samples: posterior samples per solve.
        solver: ``"sgd"``, ``"cg"``, ``"exact"`` or a solver object.
        hyper: the MacKay rule (default centred at the MAP: ``blm.MacKay(centre="map")``).
        em_steps: MacKay steps per round (≥ 1).
        tol: the rounds' EM tolerance (relative change of α, β).
        memory_limit: bytes a fit may use (None: what is available).

    Raises:
        ValueError: ``n_samples`` or ``em_steps`` below 1, ``tol`` not positive.
    """

    n_samples: int = 16
    solver: Any = "sgd"
    hyper: Any = None
    em_steps: int = 3
    tol: float = 1e-3
    memory_limit: int | None = None

    def __post_init__(self) -> None:
        positive_int(self.n_samples, "n_samples")
        positive_int(self.em_steps, "em_steps")
        positive(self.tol, "tol")


@dataclass(frozen=True)
class Training:
    """The ``train_map`` settings of ``blm.train_with_evidence``.

    Args:
        first_steps: Adam steps of the first training (from the given weights).
        steps: Adam steps of each retraining (warm-started).
        batch_size: rows per minibatch.
        learning_rate: Adam's step size.

    Raises:
        ValueError: a count below 1 or a learning rate that is not positive.
    """

    first_steps: int = 6000
    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        positive_int(self.first_steps, "first_steps")
        positive_int(self.steps, "steps")
        positive_int(self.batch_size, "batch_size")
        positive(self.learning_rate, "learning_rate")
