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
    with pytest.raises(ValueError, match="alpha must be >= 0"):
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


def test_classification_likelihoods_against_explicit_formulas(rng):
    from scipy.special import expit, log_softmax

    from blm.likelihoods import Bernoulli, Categorical

    f = jnp.asarray(rng.standard_normal((6, 4)))
    labels = np.array([0, 3, 1, 2, 3, 0])
    cat = Categorical(4)
    y = jnp.asarray(cat.encode_targets(labels))
    np.testing.assert_allclose(
        cat.log_likelihood(f, y),
        log_softmax(np.asarray(f), axis=1)[np.arange(6), labels].sum(),
        rtol=1e-12,
    )
    xi = jnp.asarray(rng.standard_normal((6, 4)))
    L = cat.sqrt_precision(f)
    np.testing.assert_allclose(cat.sqrt_mul(f, xi), np.einsum("bkl,bl->bk", L, xi), atol=1e-14)
    np.testing.assert_allclose(
        cat.precision_diagonal(f),
        np.diagonal(L @ jnp.swapaxes(L, 1, 2), axis1=1, axis2=2),
        atol=1e-14,
    )
    np.testing.assert_allclose(cat.probs(f), np.exp(log_softmax(np.asarray(f), axis=1)), rtol=1e-12)

    ber = Bernoulli()
    g = f[:, :1]
    yb = jnp.asarray(ber.encode_targets(labels % 2))
    p = expit(np.asarray(g))
    expected = np.sum(np.asarray(yb) * np.log(p) + (1 - np.asarray(yb)) * np.log(1 - p))
    np.testing.assert_allclose(ber.log_likelihood(g, yb), expected, rtol=1e-12)
    np.testing.assert_allclose(ber.precision_mul(g, xi[:, :1]), p * (1 - p) * xi[:, :1], rtol=1e-12)
    np.testing.assert_allclose(ber.probs(g), np.c_[1 - p, p], rtol=1e-12)
    # B u = ∇ log p, and no 0·∞ at logits saturated in float64 (σ = 1 exactly)
    np.testing.assert_allclose(ber.precision_mul(g, ber.pseudo_targets(g, yb)), yb - p, atol=1e-12)
    huge = jnp.asarray([[800.0], [-800.0]])
    assert np.all(np.isfinite(ber.pseudo_targets(huge, jnp.asarray([[1.0], [0.0]]))))
    sat = jnp.asarray([[800.0, 0.0, -800.0]])
    assert np.all(np.isfinite(Categorical(3).pseudo_targets(sat, jnp.asarray([[1.0, 0, 0]]))))
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        Categorical(1)
    with pytest.raises(ValueError, match="outside the class range"):
        ber.encode_targets([0, 1, 2])


def test_a_likelihood_says_whether_it_has_a_noise_precision():
    """``noise_precision`` / ``with_noise_precision`` stand in for type checks: a Gaussian's
    is its β (set traceably), a classifier has none (None; setting one is refused)."""
    from blm import Bernoulli, Categorical

    g = Gaussian([2.0, 3.0])
    np.testing.assert_array_equal(g.noise_precision, [2.0, 3.0])
    moved = jax.jit(lambda b: g.with_noise_precision(b).noise_precision)(jnp.asarray([4.0, 5.0]))
    np.testing.assert_array_equal(moved, [4.0, 5.0])
    for lik in (Bernoulli(), Categorical(3)):
        assert lik.noise_precision is None
        assert lik.with_noise_precision(None) is lik
        assert lik.with_noise_precision(np.ones(0)) is lik
        with pytest.raises(ValueError, match="beta: .* has no noise precision"):
            lik.with_noise_precision(np.ones(1))
