"""Closed-form evidence and the exact MacKay fixed point."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from blm import LinearFeatures, Prior
from blm.evidence.closed_form import DenseGaussianModel, GammaHyperprior
from blm.evidence.loop import iterate_hyperparameters
from tests.conftest import random_problem


def _model(rng, n, p, m, form, decay=0.0):
    X, Y = random_problem(rng, n, p, m, decay)
    Phi = LinearFeatures(p, m).dense(jnp.asarray(X))
    return DenseGaussianModel.from_arrays(Phi, jnp.asarray(Y), form=form), np.asarray(Phi), Y


@pytest.mark.parametrize(
    "n,p,form", [(25, 4, "primal"), (25, 4, "dual"), (5, 12, "dual"), (5, 12, "primal")]
)
def test_evidence_equals_marginal_density(rng, n, p, form):
    """log p(Y) = log N(Y; 0, Φ A⁻¹ Φᵀ + B⁻¹), the definition, evaluated densely. In
    primal form the 25 rows are padded to 26 (a multiple of 2^(⌊log₂ 25⌋ − 3)) and the
    zero row must change nothing: the likelihood still counts 25."""
    m = 2
    model, Phi, Y = _model(rng, n, p, m, form)
    assert model.Phi.shape[0] == (26 if form == "primal" and n == 25 else n) and model.n == n
    d = p * m
    prior = Prior.grouped([0.7, 3.0], np.arange(d) % 2)
    beta = jnp.asarray([2.0, 0.5])
    post = model.posterior(prior, beta)
    F = Phi.reshape(n * m, d)
    cov = F @ np.diag(1 / np.asarray(prior.precision())) @ F.T + np.diag(
        np.tile(1 / np.asarray(beta), n)
    )
    expected = multivariate_normal(np.zeros(n * m), cov).logpdf(Y.reshape(-1))
    np.testing.assert_allclose(model.log_evidence(post, beta), expected, rtol=1e-10)


@pytest.mark.parametrize("n,p,form", [(40, 5, "primal"), (12, 16, "dual")])
def test_mackay_fixed_point_is_evidence_maximum(rng, n, p, form):
    """At the fixed point the gradient of the evidence in (log α_g, log β_k) vanishes,
    for per-group α and per-output β (flat hyperpriors). The dual case (d > n·m) uses a
    decaying spectrum so that the evidence has a finite maximiser."""
    m = 2
    model, _, _ = _model(rng, n, p, m, form, decay=1.5)
    d = p * m
    prior0 = Prior.grouped([1.0, 1.0], (np.arange(d) < d // 2).astype(int))

    @jax.jit
    def step(alpha, beta):
        new_alpha, new_beta, info = model.mackay_step(prior0.with_alpha(alpha), beta)
        return new_alpha, new_beta, {"score": info["score"]}

    alpha, beta, n_iter, traj, _ = iterate_hyperparameters(
        step, np.ones(2), np.ones(m), 5000, 1e-12
    )
    assert n_iter < 5000

    def evidence(log_alpha, log_beta):
        prior = prior0.with_alpha(jnp.exp(log_alpha))
        b = jnp.exp(log_beta)
        return model.log_evidence(model.posterior(prior, b), b)

    ga, gb = jax.grad(evidence, argnums=(0, 1))(jnp.log(alpha), jnp.log(beta))
    assert np.max(np.abs(ga)) < 1e-6 and np.max(np.abs(gb)) < 1e-6
    # and it is a maximum: moving either hyperparameter lowers the evidence
    e0 = evidence(jnp.log(alpha), jnp.log(beta))
    for da in (-0.1, 0.1):
        assert evidence(jnp.log(alpha) + da, jnp.log(beta)) < e0
        assert evidence(jnp.log(alpha), jnp.log(beta) + da) < e0
    # the score rises monotonically along EM (it is an EM algorithm)
    assert np.all(np.diff(traj.score) > -1e-8)


def test_gamma_splits_match_dense_traces(rng):
    model, Phi, _ = _model(rng, 30, 4, 2, "primal")
    d = 8
    prior = Prior.diagonal(np.linspace(0.5, 2.0, d))
    beta = jnp.asarray([3.0, 0.4])
    post = model.posterior(prior, beta)
    cov = np.asarray(post.covariance())
    for k in range(2):
        expected = float(beta[k]) * np.trace(cov @ Phi[:, k].T @ Phi[:, k])
        np.testing.assert_allclose(model.gamma_per_output(post, beta)[k], expected, rtol=1e-10)
    _, _, info = model.mackay_step(prior, beta)
    np.testing.assert_allclose(
        info["gamma"], d - np.trace(np.diag(prior.precision()) @ cov), rtol=1e-10
    )


def test_hyperprior_log_density():
    h = GammaHyperprior(2.0, 3.0, 4.0, 5.0)
    np.testing.assert_allclose(
        h.log_density(jnp.asarray([1.5]), jnp.asarray([0.5, 2.0])),
        2 * np.log(1.5) - 3 * 1.5 + (4 * np.log(0.5) - 5 * 0.5) + (4 * np.log(2.0) - 10),
    )
