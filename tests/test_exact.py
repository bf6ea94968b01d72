"""The exact solver against brute-force NumPy, in primal and dual form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blm import ExactPosterior, Gaussian, LinearFeatures, Prior
from blm.solvers.exact import whiten


def _brute(Psi, ytilde, a):
    H = Psi.T @ Psi + np.diag(a)
    cov = np.linalg.inv(H)
    return H, cov, cov @ Psi.T @ ytilde


@pytest.mark.parametrize("n,d", [(30, 8), (6, 20)])  # d < N and d > N
@pytest.mark.parametrize("form", ["primal", "dual"])
def test_exact_matches_inverse(rng, n, d, form):
    Psi = rng.standard_normal((n, d))
    ytilde = rng.standard_normal(n)
    groups = np.arange(d) % 3
    prior = Prior.grouped([0.5, 2.0, 7.0], groups)
    a = np.asarray(prior.precision())
    H, cov, mean = _brute(Psi, ytilde, a)
    post = ExactPosterior.fit(jnp.asarray(Psi), jnp.asarray(ytilde), prior, form=form)
    assert post.form == form
    np.testing.assert_allclose(post.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(post.covariance(), cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.diag_covariance(), np.diag(cov), rtol=1e-9)
    np.testing.assert_allclose(post.diag_covariance(block=3), np.diag(cov), rtol=1e-9)
    np.testing.assert_allclose(post.logdet(), np.linalg.slogdet(H)[1], rtol=1e-12)
    J = rng.standard_normal((4, d))
    np.testing.assert_allclose(post.predictive_covariance(jnp.asarray(J)), J @ cov @ J.T, rtol=1e-9)
    np.testing.assert_allclose(
        post.predictive_variance(jnp.asarray(J)), np.einsum("td,de,te->t", J, cov, J), rtol=1e-9
    )
    v = rng.standard_normal((3, d))
    np.testing.assert_allclose(post.cov_mul(jnp.asarray(v)), v @ cov, rtol=1e-9, atol=1e-12)


def test_auto_form_picks_smaller_system(rng):
    prior = Prior.scalar(1.0, 10)
    assert ExactPosterior.fit(jnp.ones((20, 10)), jnp.ones(20), prior).form == "primal"
    assert ExactPosterior.fit(jnp.ones((5, 10)), jnp.ones(5), prior).form == "dual"


@pytest.mark.parametrize("n", [40, 5])
def test_samples_have_covariance_h_inverse(rng, n):
    """Sample covariance of k draws vs H⁻¹: E‖S − Σ‖²_F = (‖Σ‖²_F + (tr Σ)²)/k for Gaussian
    draws, so 4 standard deviations of that bound it; a factor 2 in Σ overshoots by ~30×."""
    d, k = 6, 40_000
    Psi = rng.standard_normal((n, d))
    prior = Prior.diagonal(np.linspace(0.5, 3.0, d))
    post = ExactPosterior.fit(jnp.asarray(Psi), jnp.zeros(n), prior)
    z = np.asarray(post.sample(jax.random.PRNGKey(1), k))
    cov = np.asarray(post.covariance())
    S = z.T @ z / k
    bound = 4 * np.sqrt((np.sum(cov**2) + np.trace(cov) ** 2) / k)
    err = np.linalg.norm(S - cov)
    assert err < bound
    assert np.linalg.norm(2 * S - cov) > 10 * bound  # the test can tell a factor of 2
    np.testing.assert_allclose(z.mean(0), 0, atol=4 * np.sqrt(np.diag(cov).max() / k))


def test_whiten_gaussian_scales_rows_by_sqrt_beta(rng):
    X = rng.standard_normal((7, 3))
    Y = rng.standard_normal((7, 2))
    feats = LinearFeatures(3, 2)
    Phi = feats.dense(jnp.asarray(X))
    Psi, yt = whiten(Phi, jnp.asarray(Y), Gaussian([4.0, 9.0]))
    np.testing.assert_allclose(Psi.reshape(7, 2, 6), Phi * np.array([2.0, 3.0])[None, :, None])
    np.testing.assert_allclose(yt.reshape(7, 2), Y * np.array([2.0, 3.0]))


def test_bad_form_and_shapes(rng):
    prior = Prior.scalar(1.0, 3)
    with pytest.raises(ValueError, match="form"):
        ExactPosterior.fit(jnp.ones((4, 3)), jnp.ones(4), prior, form="svd")
    with pytest.raises(ValueError, match="Psi"):
        ExactPosterior.fit(jnp.ones((4, 2)), jnp.ones(4), prior)
