"""``SGDConfig``: the settings of one ``blm.solvers.sgd.sgd`` run (the solver object
``blm.SGD`` builds it), checked against the data by ``validate``.

Example:
    >>> from blm.solvers.sgd_config import SGDConfig
    >>> SGDConfig(n_steps=500, batch_size=64).validate(n=1000)
"""

from __future__ import annotations

from dataclasses import dataclass

from blm._checks import one_of, positive, positive_int
from blm.solvers.targets import Objective


@dataclass(frozen=True)
class SGDConfig:
    """Settings of the SGD solver.

    n_steps: optimiser steps. batch_size: rows per minibatch (≤ n). learning_rate: None
    for min(0.3/λ̂, (1 − momentum)/ν) (power iterations; with momentum 0.9 the effective
    step 3/λ̂ is inside heavy-ball's stability limit 3.8/λ, and the smaller step keeps
    the minibatch noise floor low; ν the mean curvature per minibatch row caps the
    effective step lr/(1 − momentum) at 1/ν where the minibatch curvature is noise,
    b ≪ d: see ``sgd``), or with snapshots (1 − momentum)/λ̂ (effective step 1/λ̂: no
    noise floor to keep low; momentum 0 to 0.5 work best), else a positive number. momentum,
    nesterov: optax SGD.
    polyak: if set (0 ≤ polyak < 1), report the average of the iterates from step
    ``polyak · n_steps`` on. objective: "low-variance" or "standard". log_every: steps
    per logged diagnostic (and per scan chunk). block_size: rows per block of the full
    passes (targets, Jacobi, snapshots) and per read of a streamed dataset (at least
    batch_size: minibatches are drawn within a read); None: the features' own bound for
    the passes (``blm.operators.block_rows``: all rows of an in-memory design, 256 MiB
    of random-feature rows, 256 network inputs) and reads of 65 536 rows.
    precondition: scale the gradient by diag(H)⁻¹ (Jacobi; one extra pass to form
    diag(ΦᵀBΦ)). snapshot_every: None for plain minibatch gradients, else steps between
    SVRG snapshots (one full pass each; ΦᵀBY comes with the targets' pass; the diagnostics
    are then the exact objective and gradient norm at each snapshot). tol: with
    snapshots, stop at the first snapshot (the start included) where every column's
    relative residual ‖∇(x_j)‖/‖∇(0)‖ = ‖r_j − Hx_j‖/‖r_j‖ is ≤ tol, cg's criterion (a
    warm start already there costs no step); n_steps is then the cap. None: run n_steps.
    progress: show a tqdm bar.
    """

    n_steps: int = 2000
    batch_size: int = 256
    learning_rate: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    polyak: float | None = None
    objective: Objective = "low-variance"
    log_every: int = 100
    block_size: int | None = None
    power_iters: int = 20
    precondition: bool = True
    snapshot_every: int | None = None
    tol: float | None = None
    progress: bool = False

    def validate(self, n: int) -> None:
        positive_int(self.n_steps, "n_steps")
        positive_int(self.batch_size, "batch_size")
        if self.batch_size > n:
            raise ValueError(f"batch_size must be <= n = {n} rows, got {self.batch_size}")
        if self.learning_rate is not None:
            positive(self.learning_rate, "learning_rate")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.polyak is not None and not 0.0 <= self.polyak < 1.0:
            raise ValueError(f"polyak must be None or in [0, 1), got {self.polyak}")
        one_of(self.objective, "objective", ("low-variance", "standard"))
        positive_int(self.log_every, "log_every")
        if self.block_size is not None:
            positive_int(self.block_size, "block_size")
        if self.snapshot_every is not None:
            positive_int(self.snapshot_every, "snapshot_every")
        if self.tol is not None:
            positive(self.tol, "tol")
            if self.snapshot_every is None:
                raise ValueError(
                    "tol needs snapshot_every: the exact residual is known only at a "
                    "snapshot (plain SGD runs its n_steps)"
                )


DEFAULT_SGD = SGDConfig()
"""``SGDConfig()``: the defaults, as one shared (frozen) object."""
