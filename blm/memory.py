r"""Peak-memory estimate of a sample-then-optimise fit, checked before it starts.

Running out of memory half-way through a fit is the most common failure of Laplace
libraries; here the fit estimates its peak first and refuses at once, naming the
argument to lower. In numbers (× bytes per number), with k samples, b the batch (or
block) rows, m outputs, d parameters and a the activations of one forward pass:

    state     = 9 (k + 1) d     iterate, momentum, Polyak average, centres, gradient, update,
                                and the carried three (iterate, momentum, average) once more:
                                a jitted chunk of steps holds its input and output state
    vectors   = 4 d             w̄, prior precision, preconditioner, a full-pass accumulator
    batch     = b (2 (k + 1) (a + m) + a)
                                one linearisation (a per row) and k + 1 tangents through it,
                                forward and transposed

The estimate is of the arrays the algorithm must hold, on top of what the process holds
already (runtime, data, network); XLA's own workspace comes on top of it, so the check
keeps a margin (``headroom``). Measured (benchmarks/million_params.py, d = 1.03e6, k = 16,
batch 256): the peak rose 1 098 MiB above the memory held before sampling, against 836 MiB
estimated (6 (k + 1) d alone gave 634): 1.31 × the estimate, so the default headroom
0.7 refuses any fit whose estimate exceeds 0.7 × the free memory (1.43 × room).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of the three parts of a fit's peak (see the module docstring)."""

    state: int
    vectors: int
    batch: int

    @property
    def total(self) -> int:
        return self.state + self.vectors + self.batch


def estimate_sgd_memory(
    d: int, k: int, batch_rows: int, m: int, activations: int, itemsize: int
) -> MemoryEstimate:
    """The peak of an SGD fit of k samples of a d-parameter model (see module docstring)."""
    return MemoryEstimate(
        state=9 * (k + 1) * d * itemsize,
        vectors=4 * d * itemsize,
        batch=batch_rows * (2 * (k + 1) * (activations + m) + activations) * itemsize,
    )


def estimate_exact_memory(
    n: int, m: int, d: int, itemsize: int, streamed_block: int | None = None, primal: bool = False
) -> int:
    """Peak bytes of the exact solver (dense closed form) on n rows, m outputs, d weights
    (``primal``: in primal form whatever the sizes, as a prior with flat groups needs).

    In memory, primal (d ≤ n·m): 5 (n·m·d + m·d²) — Φ with its centred, device and
    padded copies, the per-output Grams, H, its Cholesky factor and their temporaries;
    dual (d > n·m, N = n·m): 12 N·d + 3 N². Streamed from a file (primal only, blocks of
    b rows): 5 m·d² + 3 b·m·d. Measured (float64, m = 1, /usr/bin/time's peak above the
    data): n 20 000 × d 2 000 1 350 MiB (estimate 1 678); 5 000 × 4 000 1 132 (1 373);
    dual 1 000 × 12 000 934 (1 122), 500 × 20 000 823 (921), 1 000 × 6 000 544 (572)."""
    if streamed_block is not None:
        numbers = 5 * m * d * d + 3 * streamed_block * m * d
    elif d <= n * m or primal:
        numbers = 5 * (n * m * d + m * d * d)
    else:
        numbers = 12 * n * m * d + 3 * (n * m) ** 2
    return numbers * itemsize


def check_exact_memory(
    need: int, what: str, sizes: str, advice: str, limit: int | None = None
) -> None:
    """Raise ``MemoryError`` before a dense fit whose ``need`` bytes (``estimate_exact_memory``)
    exceed ``limit`` (default: the memory available now), saying what it forms for which
    ``sizes`` and the ``advice`` (the matrix-free way out)."""
    limit = available_memory() if limit is None else int(limit)
    if need > limit:
        raise MemoryError(
            f"solver='exact' forms {what} densely: about {need / 2**30:.2f} GiB for {sizes}, "
            f"more than the {limit / 2**30:.2f} GiB available; {advice}"
        )


def available_memory() -> int:
    """Bytes free on the default device: the accelerator's limit minus its use, or the
    host's available memory (``MemAvailable`` on Linux, physical pages elsewhere)."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(estimate: MemoryEstimate, limit: int | None = None, headroom: float = 0.7) -> None:
    """Raise ``MemoryError`` if ``estimate`` exceeds ``headroom`` × ``limit`` (default: the
    memory available now), saying which argument to lower."""
    limit = available_memory() if limit is None else int(limit)
    if estimate.total <= headroom * limit:
        return
    gib = 1 << 30
    if estimate.state >= estimate.batch:
        advice = "lower n_samples (the k + 1 iterates of d numbers dominate)"
    else:
        advice = "lower batch_size (and block_size): the per-batch tangents dominate"
    raise MemoryError(
        f"this fit needs about {estimate.total / gib:.2f} GiB (samples and optimiser state "
        f"{estimate.state / gib:.2f} GiB, per-batch work {estimate.batch / gib:.2f} GiB) but "
        f"{headroom * limit / gib:.2f} GiB can be used: {advice}"
    )
