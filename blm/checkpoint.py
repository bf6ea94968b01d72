"""Files that are never left half-written, and checkpoints of a hyperparameter fit.

Checkpoints are written by ``blm.h5io.atomic_h5`` (a killed process leaves the old file,
never a truncated one).

A fit's loop (``blm.evidence.loop.iterate_hyperparameters``) hands a ``Checkpointer``
its state after every completed step: the step count, α, β, the trajectory so far and
the update rule's own state (the warm-start posterior of a sampled solver, Adam's
moments for evidence ascent). The checkpointer writes it at most every ``every``
seconds, and at once when the fit is interrupted (Ctrl-C); ``resume=True`` loads it so
the loop continues from that step with exactly the state it had, so a resumed fit
equals an uninterrupted one with the same keys. A fingerprint of the fit's settings
and data guards against resuming a different fit.
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np

from blm.evidence.loop import LoopState, Trajectory
from blm.h5io import atomic_h5, open_h5

_TRAJECTORY = ("alpha", "beta", "gamma", "data_fit", "score")


def write_trajectory(group: h5py.Group, trajectory: Trajectory) -> None:
    """Store a trajectory as one stacked array per field."""
    for name in _TRAJECTORY:
        values = getattr(trajectory, name)
        group[name] = np.asarray(values, float) if values else np.zeros((0,))


def read_trajectory(group: h5py.Group) -> Trajectory:
    """The inverse of ``write_trajectory``."""
    t = Trajectory()
    for name in ("alpha", "beta"):
        getattr(t, name).extend(np.asarray(row) for row in group[name][()])
    for name in ("gamma", "data_fit", "score"):
        getattr(t, name).extend(float(v) for v in group[name][()])
    return t


class Checkpointer:
    """Writes a fit's ``LoopState`` to ``path`` at most every ``every`` seconds (0: after
    every step) and on ``flush``; with ``resume=True`` reads the state left there.

    ``fingerprint`` identifies the fit (settings and data); a checkpoint written by a fit
    with another fingerprint is refused on resume.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        every: float = 60.0,
        fingerprint: str = "",
        resume: bool = False,
    ):
        if not np.isfinite(every) or every < 0:
            raise ValueError(f"every: must be a number of seconds >= 0, got {every!r}")
        self.path, self.every, self.fingerprint = os.fspath(path), float(every), fingerprint
        self.latest: LoopState | None = None
        self._written: LoopState | None = None
        self._last_write = time.monotonic()
        self.resumed = self._read() if resume else None

    def update(self, state: LoopState) -> None:
        """Record the state after a completed step; write it if ``every`` seconds passed."""
        self.latest = state
        if time.monotonic() - self._last_write >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write the latest state now (nothing if no step completed since the last write)."""
        if self.latest is None or self.latest is self._written:
            return
        s = self.latest
        with atomic_h5(self.path) as f:
            f.attrs["fingerprint"] = self.fingerprint
            f.attrs["iteration"] = s.iteration
            f["alpha"], f["beta"] = np.asarray(s.alpha), np.asarray(s.beta)
            write_trajectory(f.create_group("trajectory"), s.trajectory)
            extra = f.create_group("extra")
            for name, value in s.extra.items():
                extra[name] = np.asarray(value)
        self._written, self._last_write = s, time.monotonic()

    def _read(self) -> LoopState:
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"resume: no checkpoint at {self.path!r} to resume from")
        with open_h5(self.path, "resume") as f:
            if f.attrs.get("fingerprint") != self.fingerprint:
                raise ValueError(
                    f"resume: the checkpoint {self.path!r} belongs to another fit (different "
                    "data or settings); run again without --resume to start afresh"
                )
            return LoopState(
                int(f.attrs["iteration"]),
                f["alpha"][()],
                f["beta"][()],
                read_trajectory(f["trajectory"]),
                {name: f["extra"][name][()] for name in f["extra"]},
            )
