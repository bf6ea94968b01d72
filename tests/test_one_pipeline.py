"""One pipeline (issue 35): on the same problem and key, ``BayesianLinearRegression.fit``,
``LinearisedModel.fit`` of the linear network with the same weights and ``blm fit`` give
the same α, β and posterior samples, because all three run
``blm.pipeline.fit_hyperparameters`` with the same solver object."""

import subprocess
import sys

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_diabetes

import blm

SOLVER = blm.CG(tol=1e-10, adaptive_tol=False)  # every step solved to 1e-10


@pytest.fixture(scope="module")
def centred():
    X, y = load_diabetes(return_X_y=True)
    return X - X.mean(0), (y - y.mean()) / y.std()


def _estimator(**kw):
    return blm.BayesianLinearRegression(
        solver=SOLVER, n_samples=8, random_state=0, max_iter=200, tol=1e-8, **kw
    )


def test_the_estimator_and_the_linearised_linear_network_fit_alike(centred):
    """J = X for a linear network without bias (its weights are the coefficients, in the
    columns' order), and the linear model's targets y − f(w̄) + Jw̄ = y: the same problem.
    Same start (α 1, β 1/Var y), no hyperprior, the same key and γ̂ form."""
    X, y = centred
    beta0 = 1.0 / y.var()
    flat = {"alpha_1": 0.0, "alpha_2": 0.0, "lambda_1": 0.0, "lambda_2": 0.0}
    rule = blm.MacKay(gamma="combined", centre="linear")  # θ̄, as the estimator's
    est = _estimator(hyper=rule, fit_intercept=False, alpha_init=1.0, beta_init=beta0, **flat)
    est.fit(X, y)
    net = eqx.nn.Linear(10, "scalar", use_bias=False, key=jax.random.PRNGKey(0))
    net = eqx.tree_at(lambda m: m.weight, net, jnp.zeros_like(net.weight))
    lm = blm.linearise(net, (X, y), blm.Gaussian(beta0))
    post = lm.fit(
        n_samples=8,
        key=0,
        solver=SOLVER,
        em_steps=200,
        tol=1e-8,
        hyper=rule,
        start=blm.Hyperparameters(alpha=1.0, beta=beta0),
    )
    assert est.converged_ and post.converged
    assert est.n_iter_ == len(post.trajectory.alpha)
    np.testing.assert_allclose(est.alpha_, post.alpha[0], rtol=1e-10)
    np.testing.assert_allclose(est.beta_, post.beta[0], rtol=1e-10)
    np.testing.assert_allclose(est.coef_, post.mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(est.samples_, post.mean + post.samples, rtol=0, atol=1e-10)


def test_blm_fit_is_the_estimators_fit(centred, tmp_path):
    X, y = centred
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    flags = ["--solver", "cg", "--solver-tol", "1e-10", "--fixed-solver-tol", "--samples", "8"]
    flags += ["--seed", "0", "--max-iter", "200", "--tol", "1e-8", "--float64", "--quiet"]
    out = subprocess.run(
        [sys.executable, "-m", "blm", "fit", str(path), *flags, "--out", str(tmp_path / "p.h5")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    cli = blm.BayesianLinearRegression.load(tmp_path / "p.h5")
    ref = _estimator().fit(X, y)
    assert cli.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(cli.alpha_, ref.alpha_, rtol=1e-10)
    np.testing.assert_allclose(cli.beta_, ref.beta_, rtol=1e-10)
    np.testing.assert_allclose(cli.samples_, ref.samples_, rtol=0, atol=1e-10)
