import jax
import numpy as np
import pytest

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
