r"""``solver="auto"``: the solver a design-matrix fit gets by default, and why.

Costs in floating-point operations, for n rows, m outputs, p columns per output, r stored
entries per row (p dense; the widest row of a sparse X), k posterior samples and a fit
of about ``STEPS`` hyperparameter steps:

- exact, primal (p ≤ n): the Grams Φ_kᵀΦ_k once, m·n·p², and a Cholesky factor per step,
  m·p³/3; dual (p > n, N = n·m): N²·p once and N³/3 per step;
- one pass of a sampled solver over the data: 2·(k + 1)·n·m·r (the mean and k samples
  through Φ and Φᵀ).

The choice:

1. **exact** where its dense model fits in half the memory available
   (``blm.memory.estimate_exact_memory``) and costs at most ``PASSES`` passes per step;
2. else **sgd** where the rows are streamed from a file (a full pass reads the whole file;
   sgd's minibatches read a fraction of it per step);
3. else **cg** (Jacobi-preconditioned; matrix-free, memory (k + 1)·m·p beside the data).

Example:
    >>> choice = choose_solver(n=442, m=1, p=10, row_entries=10, n_samples=16, streamed=False)
    >>> choice.name
    'exact'
    >>> choose_solver(n=10**6, m=1, p=10**5, row_entries=50, n_samples=16, streamed=False).name
    'cg'
"""

from __future__ import annotations

from dataclasses import dataclass

from blm._checks import positive_int
from blm.memory import available_memory, estimate_exact_memory

STEPS = 10
"""Hyperparameter steps a fit is costed for."""
PASSES = 30
"""Passes over the data per step that the exact solver may cost at most."""


@dataclass(frozen=True)
class SolverChoice:
    """The solver ``"auto"`` picked (``name``: 'exact', 'cg' or 'sgd') and the reason."""

    name: str
    reason: str


def choose_solver(
    *,
    n: int,
    m: int,
    p: int,
    row_entries: int,
    n_samples: int,
    streamed: bool,
    itemsize: int = 8,
    memory: int | None = None,
) -> SolverChoice:
    """The solver for a design-matrix fit of this size (module docstring).

    Args:
        n, m, p: rows, outputs, columns per output.
        row_entries: stored entries per row (p for a dense X).
        n_samples: the posterior samples a sampled solver would draw.
        streamed: whether the rows are read from a file block by block.
        itemsize: bytes per number (8 in float64, 4 in float32).
        memory: the bytes available (default: what the machine has free now).

    Returns:
        A ``SolverChoice``.

    Raises:
        TypeError, ValueError: a size that is not an integer ≥ 1 (``n_samples`` ≥ 0),
            naming it.
    """
    for name, value in (("n", n), ("m", m), ("p", p), ("row_entries", row_entries)):
        positive_int(value, name)
    positive_int(n_samples, "n_samples", minimum=0)
    d = m * p
    rows = n * m
    if p <= n or streamed:
        exact = m * n * p**2 + STEPS * m * p**3 / 3
    else:
        exact = rows**2 * p + STEPS * rows**3 / 3
    one_pass = 2 * (n_samples + 1) * rows * row_entries
    passes = exact / (STEPS * one_pass)
    limit = available_memory() if memory is None else int(memory)
    need = estimate_exact_memory(n, m, d, itemsize, 1 << 14 if streamed else None)
    fits = need <= limit / 2
    if fits and passes <= PASSES:
        return SolverChoice(
            "exact",
            f"the dense model ({need / 2**20:.0f} MiB) fits in memory and costs about "
            f"{passes:.1f} passes over the data per step (at most {PASSES})",
        )
    why = (
        f"the dense model would cost about {passes:.0f} passes over the data per step (more "
        f"than {PASSES})"
        if fits
        else f"the dense model ({need / 2**30:.1f} GiB) does not fit in half the memory "
        f"available ({limit / 2**30:.1f} GiB)"
    )
    if streamed:
        return SolverChoice(
            "sgd",
            f"{why}, and the rows are streamed from a file: sgd reads "
            "minibatches where cg reads every row at each iteration",
        )
    return SolverChoice("cg", f"{why}: cg is matrix-free")
