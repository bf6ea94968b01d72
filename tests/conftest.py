import os
import pathlib

# One persistent XLA compilation cache for the whole run, shared by both xdist workers and
# by every `blm` subprocess and notebook a test starts (they inherit the environment). Each
# fit builds fresh closures, so jit retraces and XLA recompiles the same programs many
# times over, ~100 small compiles (~8 s) per `blm fit` process. Every entry is kept (min
# compile time 0: the small ones are the many). No size bound in jax: one makes it scan the
# whole folder at every write (quadratic in the ~5 000 entries of a run); the folder is
# trimmed once at start instead (blm's own trim_cache, as the commands do). Unbounded,
# jax takes no lock; an entry read while another process still writes it is a truncated
# compressed stream, which fails to decompress: jax warns and compiles.
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax-compilation"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from blm.cli import CACHE_BYTES, trim_cache  # noqa: E402  (after the variables: imports jax)

_CACHE.mkdir(parents=True, exist_ok=True)
trim_cache(_CACHE, CACHE_BYTES)  # runs after runs add entries as the code changes

import jax  # noqa: E402  (reads the variables above when imported)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Tests compare with exact oracles: float64 throughout (users get float32 by default).
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_problem(rng, n, d, m=1, decay=0.0):
    """Seeded design (n, d) with a spectrum decaying like i^-decay, weights and targets."""
    X = rng.standard_normal((n, d)) * (np.arange(1, d + 1) ** -decay)
    theta = rng.standard_normal((m, d))
    Y = X @ theta.T + 0.3 * rng.standard_normal((n, m))
    return X, Y
