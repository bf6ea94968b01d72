import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blm import Gaussian, Prior


def test_prior_operator_identities(rng):
    prior = Prior.grouped([0.5, 4.0], np.array([0, 1, 1, 0, 1]))
    a = np.array([0.5, 4.0, 4.0, 0.5, 4.0])
    z = rng.standard_normal(5)
    np.testing.assert_allclose(prior.precision(), a)
    np.testing.assert_allclose(prior.mul(z), a * z)
    np.testing.assert_allclose(prior.solve(z), z / a)
    np.testing.assert_allclose(prior.sqrt_mul(prior.sqrt_mul(z)), a * z)
    np.testing.assert_allclose(prior.inv_sqrt_mul(prior.sqrt_mul(z)), z)
    np.testing.assert_allclose(prior.logdet(), np.sum(np.log(a)))
    np.testing.assert_allclose(prior.group_sum(z), [z[0] + z[3], z[1] + z[2] + z[4]])
    np.testing.assert_array_equal(prior.group_sizes, [2, 3])


def test_prior_samples_have_covariance_a_inverse():
    prior = Prior.diagonal([0.25, 4.0])
    draws = np.asarray(prior.sample(jax.random.PRNGKey(0), 50_000))
    # Var = 1/a; standard error of a sample variance is √(2/k)·var ≈ 0.6 %: 5 % catches a factor 2
    np.testing.assert_allclose(draws.var(0), [4.0, 0.25], rtol=0.05)


def test_prior_constructors_and_errors():
    assert Prior.scalar(2.0, 4).n_groups == 1
    assert Prior.diagonal([1.0, 2.0, 3.0]).n_groups == 3
    with pytest.raises(ValueError, match="alpha must be strictly positive"):
        Prior.scalar(0.0, 3)
    with pytest.raises(ValueError, match="alpha must be strictly positive"):
        Prior.grouped([1.0, -1.0], [0, 1])
    with pytest.raises(ValueError, match="alpha holds 1 non-finite"):
        Prior.scalar(np.nan, 3)
    with pytest.raises(ValueError, match="groups must index"):
        Prior.grouped([1.0], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        Prior.grouped([1.0, 1.0, 1.0], [0, 2])
    with pytest.raises(TypeError, match="groups must hold integers"):
        Prior.grouped([1.0], [0.0, 0.0])


def test_gaussian_likelihood(rng):
    lik = Gaussian([4.0, 0.25])
    f = jnp.asarray(rng.standard_normal((3, 2)))
    y = jnp.asarray(rng.standard_normal((3, 2)))
    v = jnp.asarray(rng.standard_normal((3, 2)))
    L = lik.sqrt_precision(f)
    np.testing.assert_allclose(
        L @ jnp.swapaxes(L, 1, 2), np.broadcast_to(np.diag([4.0, 0.25]), (3, 2, 2))
    )
    np.testing.assert_allclose(lik.precision_mul(f, v), v * np.array([4.0, 0.25]))
    np.testing.assert_allclose(lik.sqrt_mul(f, v), np.einsum("bkl,bl->bk", L, v))
    from scipy.stats import norm

    expected = norm.logpdf(np.asarray(y), np.asarray(f), 1 / np.sqrt([4.0, 0.25])).sum()
    np.testing.assert_allclose(lik.log_likelihood(f, y), expected, rtol=1e-12)
    np.testing.assert_allclose(lik.logdet_precision(f), 3 * np.log(4.0 * 0.25) + 0.0, atol=1e-12)
    assert Gaussian(2.0, m=3).m == 3
    with pytest.raises(ValueError, match="beta must be strictly positive"):
        Gaussian(0.0)
    with pytest.raises(ValueError, match="beta must have 1 or m=3"):
        Gaussian([1.0, 2.0], m=3)
