"""Precision follows the input (issue 35, item 8): float64 arrays are computed in
float64 inside ``jax.enable_x64`` whatever JAX's global flag says, float32 arrays in
float32, and the global flag is never changed. The test session turns the global flag
on (conftest); every test here turns it off around the fit, as a user's session has it."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import BayesianRidge

import blm
from blm.evidence.loop import HyperparameterRangeError
from blm.precision import computing_in, input_dtype


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


def test_float64_input_agrees_with_bayesian_ridge_in_jax_default_mode(diabetes):
    X, y = diabetes
    ref = BayesianRidge(tol=1e-10, max_iter=1000).fit(X, y)
    with jax.enable_x64(False):
        est = blm.BayesianLinearRegression(tol=1e-10, max_iter=1000).fit(X, y)
        mean, std = est.predict(X, return_std=True)
        assert not jax.config.jax_enable_x64  # the fit left the flag as it found it
    ref_mean, ref_std = ref.predict(X, return_std=True)
    assert est.coef_.dtype == mean.dtype == std.dtype == np.float64
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-8)
    np.testing.assert_allclose(est.alpha_, ref.lambda_, rtol=1e-8)  # weight precision
    np.testing.assert_allclose(est.beta_, ref.alpha_, rtol=1e-8)  # noise precision
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-8)
    np.testing.assert_allclose(std, ref_std, rtol=1e-8)
    np.testing.assert_allclose(est.sigma_, ref.sigma_, rtol=1e-7)


def test_a_constant_target_fits_in_jax_default_mode(diabetes):
    X, _ = diabetes
    with jax.enable_x64(False):
        est = blm.BayesianLinearRegression().fit(X, np.full(X.shape[0], 3.0))
        mean, std = est.predict(X[:5], return_std=True)
    np.testing.assert_allclose(mean, 3.0, atol=1e-6)
    assert np.all(std < 0.01)


def test_a_weighted_wide_fit_is_finite_and_agrees_in_jax_default_mode():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(15, 30)), rng.normal(size=15)
    w = rng.uniform(0.5, 2.0, 15)
    ref = BayesianRidge().fit(X, y, sample_weight=w)
    with jax.enable_x64(False):
        est = blm.BayesianLinearRegression().fit(X, y, sample_weight=w)
    assert np.all(np.isfinite(est.coef_))
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_float32_in_float32_out(diabetes, solver, tmp_path):
    X, y = (a.astype(np.float32) for a in diabetes)
    with jax.enable_x64(True):  # even with the flag on, float32 data compute in float32
        est = blm.BayesianLinearRegression(solver=solver, n_samples=4, random_state=0).fit(X, y)
    mean, std = est.predict(X, return_std=True)
    _, cov = est.predict(X[:4], return_cov=True)
    for name, value in [
        ("coef_", est.coef_),
        ("coef_std_", est.coef_std_),
        ("sigma_", est.sigma_),
        ("samples_", est.samples_),
        ("X_offset_", est.X_offset_),
        ("mean", mean),
        ("std", std),
        ("cov", cov),
        ("sample_y", est.sample_y(X[:3], n_samples=2)),
    ]:
        assert value.dtype == np.float32, name
    est.save(tmp_path / "m.h5")
    loaded = blm.BayesianLinearRegression.load(tmp_path / "m.h5")
    assert loaded.coef_.dtype == loaded.predict(X, return_std=True)[1].dtype == np.float32
    # float32 agrees with the float64 exact fit: the coefficients to float32's precision
    # (exact), the predictions to the sampled alpha's (cg, 4 samples)
    est64 = blm.BayesianLinearRegression(solver="exact").fit(*diabetes)
    if solver == "exact":
        np.testing.assert_allclose(est.coef_, est64.coef_, rtol=1e-3)
    np.testing.assert_allclose(mean, est64.predict(diabetes[0]), rtol=2e-2)


def test_a_float64_fit_predicts_and_loads_in_float64_in_jax_default_mode(diabetes, tmp_path):
    X, y = diabetes
    with jax.enable_x64(True):
        ref = blm.BayesianLinearRegression(n_samples=3, random_state=1).fit(X, y)
        ref_std = ref.predict(X, return_std=True)[1]
    with jax.enable_x64(False):  # the fitted model keeps its precision outside the fit
        ref.save(tmp_path / "m.h5")
        est = blm.BayesianLinearRegression.load(tmp_path / "m.h5")
        std = est.predict(X, return_std=True)[1]
        coef_std = est.coef_std_
        samples = est.sample_y(X[:2], n_samples=3, random_state=0)
    assert std.dtype == coef_std.dtype == samples.dtype == np.float64
    np.testing.assert_allclose(std, ref_std, rtol=1e-12)
    np.testing.assert_allclose(coef_std, np.sqrt(np.diag(ref.sigma_)), rtol=1e-10)


def test_input_dtype_follows_the_data():
    import pandas as pd
    import scipy.sparse

    assert input_dtype(np.ones((2, 2), np.float32)) == np.float32
    assert input_dtype(np.ones((2, 2), np.float16)) == np.float64  # as scikit-learn
    assert input_dtype(np.ones((2, 2), int)) == np.float64
    assert input_dtype([[1.0, 2.0]]) == np.float64
    assert input_dtype(scipy.sparse.csr_array(np.eye(2, dtype=np.float32))) == np.float32
    table = pd.DataFrame({"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)})
    assert input_dtype(table) == np.float32
    assert input_dtype(table.assign(b=np.ones(2))) == np.float64
    with pytest.raises(ValueError, match="dtype: float32 or float64"):
        computing_in(np.int32)


def test_a_nan_update_names_float64_not_alpha():
    """A NaN from a failed float32 factorisation is reported as such, with float64 as the
    remedy, never as an alpha out of range."""
    from blm.evidence.loop import iterate_hyperparameters

    def step(alpha, beta):
        return np.float32([np.nan]), np.float32([1.0]), {}

    with pytest.raises(HyperparameterRangeError, match="NaN.*float32.*compute in float64"):
        iterate_hyperparameters(step, np.float32([1.0]), np.float32([1.0]), max_iter=3, tol=1e-6)
