"""A fit that stops at its cap before its tolerance says so: ``converged_`` False and a
``ConvergenceWarning`` naming the argument to raise; one that converges does neither."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

import blm
from blm.evidence.loop import iterate_hyperparameters


def test_convergence_warning_subclasses_scikit_learns():
    assert issubclass(blm.ConvergenceWarning, SklearnConvergenceWarning)
    assert issubclass(blm.ConvergenceWarning, UserWarning)
    from blm.exceptions import ConvergenceWarning

    assert ConvergenceWarning is blm.ConvergenceWarning


def test_loop_reports_whether_it_met_tol():
    """x → x/2 halves α each step: relative change 0.5, never below tol 0.1."""

    def halve(alpha, beta):
        return alpha / 2, beta, {}

    *_, report = iterate_hyperparameters(halve, np.ones(1), np.ones(1), 4, 0.1)
    assert report["converged"] is False and report["change"] == pytest.approx(0.5)
    *_, report = iterate_hyperparameters(halve, np.ones(1), np.ones(1), 4, 0.6)
    assert report["converged"] is True and report["change"] == pytest.approx(0.5)
    *_, report = iterate_hyperparameters(halve, np.ones(1), np.ones(1), 0, 0.1)
    assert report["converged"] is True and report["change"] == 0.0  # nothing asked


def test_capped_exact_fit_warns_and_records():
    X, y = load_diabetes(return_X_y=True)
    with pytest.warns(blm.ConvergenceWarning, match="max_iter=2"):
        est = blm.BayesianLinearRegression(max_iter=2).fit(X, y)
    assert est.converged_ is False and est.n_iter_ == 2 and est.last_change_ > 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error", blm.ConvergenceWarning)
        est = blm.BayesianLinearRegression(max_iter=300).fit(X, y)
    assert est.converged_ is True and est.n_iter_ < 300 and est.last_change_ < 1e-6


def test_capped_cg_solve_warns_with_the_cap_named():
    """cg with 2 iterations cannot reach tol 1e-10: the final solve's warning names
    max_iter; the loop itself (max_iter 1) is capped too."""
    X, y = load_diabetes(return_X_y=True)
    est = blm.BayesianLinearRegression(
        solver=blm.CG(max_iter=2, tol=1e-10), max_iter=1, n_samples=2
    )
    with pytest.warns(blm.ConvergenceWarning) as caught:
        est.fit(X, y)
    text = " ".join(str(w.message) for w in caught)
    assert "blm.CG(max_iter=...)" in text and "max_iter=1" in text
    assert est.converged_ is False


def test_blm_fit_and_info_say_whether_the_fit_converged(tmp_path, capsys):
    import h5py

    from blm.cli import main

    X, y = load_diabetes(return_X_y=True)
    data, out = tmp_path / "d.h5", tmp_path / "post.h5"
    with h5py.File(data, "w") as f:
        f["X"], f["y"] = X, y
    args = ["fit", str(data), "--solver", "exact", "--float64", "--quiet", "--out", str(out)]
    with pytest.warns(blm.ConvergenceWarning):
        assert main([*args, "--max-iter", "2"]) == 0
    assert "NOT converged" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "NOT converged" in capsys.readouterr().out
    loaded = blm.BayesianLinearRegression.load(out)
    assert loaded.converged_ is False and loaded.last_change_ > 0
    assert main([*args, "--max-iter", "300", "--force"]) == 0
    assert "(converged)" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "converged" in text and "NOT" not in text
    assert blm.BayesianLinearRegression.load(out).converged_ is True


def test_laplace_em_steps_zero_keeps_the_gaussians_beta():
    """``linearise(..., Gaussian(7.0)).fit(em_steps=0)``: the posterior at β = 7 as given
    (it was replaced by 1/mean(residual²)), equal to the fit with ``beta_init=7``; with EM
    steps β is fitted and recorded as converged or not."""
    import equinox as eqx
    import jax

    from blm import Gaussian, linearise

    key = jax.random.PRNGKey(0)
    net = eqx.nn.MLP(1, 1, 8, 1, key=key)
    X = np.linspace(-2, 2, 40)[:, None]
    y = np.sin(2 * X[:, 0]) + 0.1 * np.random.default_rng(0).standard_normal(40)
    lm = linearise(net, (X, y), Gaussian(7.0))
    kept = lm.fit(n_samples=2, solver="exact", em_steps=0, start=blm.Hyperparameters(alpha=2.0))
    given = lm.fit(
        n_samples=2, solver="exact", em_steps=0, start=blm.Hyperparameters(alpha=2.0, beta=7.0)
    )
    assert kept.beta.tolist() == [7.0] and kept.converged is True
    np.testing.assert_allclose(kept.mean, given.mean, rtol=1e-12)
    fitted = lm.fit(
        n_samples=2, solver="exact", em_steps=1, tol=1e-12, start=blm.Hyperparameters(alpha=2.0)
    )
    assert fitted.beta[0] != 7.0 and fitted.converged is False and fitted.last_change > 0
