"""Sparse designs in CSR HDF5 files: padded rows, gather/scatter features, the estimator."""

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

import blm
from blm import BayesianLinearRegression, LinearFeatures, SparseHDF5Dataset, SparseLinearFeatures
from blm.csr import padded_rows, with_offset_pair
from blm.csr import scaled_values as _scaled_values


def _panel(rng, n_units=40, n_times=15, n_cov=3):
    """One-hot unit and time effects beside dense covariates (a small econometric panel)."""
    unit = np.repeat(np.arange(n_units), n_times)
    time = np.tile(np.arange(n_times), n_units)
    n = len(unit)
    cov = rng.standard_normal((n, n_cov))
    drop = rng.random((n, n_cov)) < 0.3  # ragged rows: some covariates missing (zero)
    cov[drop] = 0.0
    X = np.hstack([np.eye(n_units)[unit], np.eye(n_times)[time], cov])
    y = rng.standard_normal(n_units)[unit] + 0.5 * np.sin(time) + cov @ [1.0, -0.5, 0.2]
    return scipy.sparse.csr_array(X), y + 0.3 * rng.standard_normal(n) + 3.0


def _write(path, X, y):
    with h5py.File(path, "w") as f:
        g = f.create_group("X")
        g["data"], g["indices"], g["indptr"] = X.data, X.indices, X.indptr
        g.attrs["shape"] = X.shape
        f["y"] = y
    return path


@pytest.mark.parametrize("centred", [False, True])
def test_sparse_features_equal_the_dense_design(centred):
    """Gather/scatter on padded rows equals the dense design's products; centred, with
    each row's offset pair (p, s_i) and x_offset = x̄, the dense rows s_i (x_i − x̄): row
    scales s_i = √w_i, one of them 0 (a padding row, which must contribute nothing)."""
    rng = np.random.default_rng(0)
    X, _ = _panel(rng)
    n, p = X.shape
    width = int(np.diff(X.indptr).max())
    rows = padded_rows(X.data, X.indices, X.indptr, width)
    dense = X.toarray()
    x_offset = None
    if centred:
        scale = rng.uniform(0.5, 2.0, n)
        scale[7] = 0.0
        x_offset = rng.uniform(0.0, 0.5, p)
        rows = _scaled_values(with_offset_pair(rows, p), scale)
        dense = scale[:, None] * (dense - x_offset)
    rows, dense = jnp.asarray(rows), jnp.asarray(dense)
    for m in (1, 2):
        sparse, ref = SparseLinearFeatures(p, m, x_offset=x_offset), LinearFeatures(p, m)
        z = jnp.asarray(rng.standard_normal(ref.d))
        v = jnp.asarray(rng.standard_normal((n, m)))
        L = jnp.asarray(rng.standard_normal((n, m, m)))
        np.testing.assert_allclose(sparse.jvp(rows, z), ref.jvp(dense, z), rtol=1e-12)
        np.testing.assert_allclose(sparse.vjp(rows, v), ref.vjp(dense, v), rtol=1e-12)
        np.testing.assert_allclose(sparse.sq_rows(rows, L), ref.sq_rows(dense, L), rtol=1e-12)
        np.testing.assert_allclose(sparse.dense(rows), ref.dense(dense), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="width: rows have up to"):
        padded_rows(X.data, X.indices, X.indptr, width - 1)
    with pytest.raises(ValueError, match=f"x_offset must be {p} finite column means"):
        SparseLinearFeatures(p, x_offset=np.zeros(p + 1))


@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_dataset_streams_every_row_once(tmp_path, weighted):
    """Every row once, as stored; the moments' x̄ is the (weighted) column mean, and the
    view shifted by it reads rows that the centred features take as √w_i (x_i − x̄)."""
    rng = np.random.default_rng(1)
    X, y = _panel(rng)
    ds = SparseHDF5Dataset(_write(tmp_path / "p.h5", X, y), block_size=77)
    assert ds.n == X.shape[0] and ds.n_columns == X.shape[1]
    w = rng.uniform(0.2, 3.0, len(y)) if weighted else None
    dense = X.toarray()
    x_mean, y_mean, y_var = ds.moments(block_size=50, sample_weight=w)
    np.testing.assert_allclose(x_mean, np.average(dense, axis=0, weights=w), rtol=1e-12)
    np.testing.assert_allclose(y_mean, [np.average(y, weights=w)], rtol=1e-12)
    np.testing.assert_allclose(y_var, [np.average((y - y_mean) ** 2, weights=w)], rtol=1e-12)
    root = np.ones(len(y)) if w is None else np.sqrt(w)
    views = [
        (ds, SparseLinearFeatures(X.shape[1]), dense, 0.0),
        (
            ds.shifted(x_mean, y_mean, w),
            SparseLinearFeatures(X.shape[1], x_offset=x_mean),
            root[:, None] * (dense - x_mean),
            y_mean,
        ),
    ]
    for view, feats, expect, y_off in views:
        seen = []
        for xb, yb, rows in view.blocks(key=__import__("jax").random.PRNGKey(0)):
            rows = np.asarray(rows)
            np.testing.assert_allclose(feats.dense(xb)[:, 0], expect[rows], atol=1e-12)
            scale = root[rows] if view is not ds else 1.0
            np.testing.assert_allclose(yb[:, 0], scale * (y[rows] - y_off), atol=1e-12)
            seen.extend(rows)
        assert sorted(seen) == list(range(ds.n))
    assert ds.shifted(x_mean, y_mean).input_shape == (ds.input_shape[0] + 1, 2)


def test_sparse_dataset_errors_name_the_problem(tmp_path):
    rng = np.random.default_rng(2)
    X, y = _panel(rng)
    path = _write(tmp_path / "p.h5", X, y)
    with h5py.File(path, "a") as f:
        f["dense"] = X.toarray()
        bad = f.create_group("bad")
        bad["data"], bad["indices"], bad["indptr"] = X.data, X.indices, X.indptr[:-1]
        bad.attrs["shape"] = X.shape
        out = f.create_group("out")
        out["data"], out["indices"], out["indptr"] = X.data, X.indices + 100, X.indptr
        out.attrs["shape"] = X.shape
    with pytest.raises(ValueError, match="x: no CSR group 'dense'"):
        SparseHDF5Dataset(path, x="dense")
    with pytest.raises(ValueError, match="is inconsistent: indptr"):
        SparseHDF5Dataset(path, x="bad")
    with pytest.raises(ValueError, match="column indices of rows 0:"):
        list(SparseHDF5Dataset(path, x="out").blocks())
    with pytest.raises(ValueError, match=r"x_offset must be None or have shape \(58,\)"):
        SparseHDF5Dataset(path).shifted(np.zeros(3), [0.0])


@pytest.mark.parametrize(
    "options, rtol",
    [
        ({"solver": "exact"}, 1e-8),
        (
            {"solver": blm.CG(tol=1e-10), "n_samples": 8, "random_state": 0},
            1e-6,
        ),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("source", ["file", "memory"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_estimator_on_sparse_file_equals_dense_fit(
    tmp_path, options, rtol, weighted, source, fit_intercept
):
    """A CSR file, or a scipy sparse array in memory, fits as the dense design does: X
    centred at its (weighted) column means through each row's offset pair, never filled
    in, y at its mean; with frequency weights the rows scaled by √w (values only)."""
    rng = np.random.default_rng(3)
    X, y = _panel(rng)
    w = rng.uniform(0.2, 3.0, len(y)) if weighted else None
    est = BayesianLinearRegression(tol=1e-8, fit_intercept=fit_intercept, **options)
    if source == "file":
        sparse = est.fit(SparseHDF5Dataset(_write(tmp_path / "p.h5", X, y), block_size=50), None, w)
    else:
        sparse = est.fit(scipy.sparse.coo_matrix(X), y, sample_weight=w)
        assert sparse.n_features_in_ == X.shape[1]
    dense = BayesianLinearRegression(tol=1e-8, fit_intercept=fit_intercept, **options)
    dense.fit(X.toarray(), y, sample_weight=w)
    np.testing.assert_allclose(sparse.alpha_, dense.alpha_, rtol=rtol)
    np.testing.assert_allclose(sparse.beta_, dense.beta_, rtol=rtol)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(sparse.X_offset_, dense.X_offset_, rtol=1e-12, atol=1e-15)
    mean_s, std_s = sparse.predict(X[:20], return_std=True)  # scipy sparse input
    mean_d, std_d = dense.predict(X[:20].toarray(), return_std=True)
    np.testing.assert_allclose(mean_s, mean_d, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(std_s, std_d, rtol=rtol)


@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
def test_sparse_counts_with_an_intercept_agree_with_bayesian_ridge(solver):
    """Sparse counts (column means 0.3, far from 0) with an intercept of 5: the sparse fit
    is scikit-learn's BayesianRidge on the dense array (which centres X). Fitting the
    uncentred rows against centred y instead put the intercept at 3.0 and the
    coefficients 0.13 RMS off (6 posterior sds, 0.02). cg agrees to its tolerance, sgd to
    its SGD noise (coefficients within 0.6 posterior sd; 0.005 measured)."""
    from sklearn.linear_model import BayesianRidge

    rng = np.random.default_rng(6)
    n, p = 1500, 40
    X = rng.poisson(0.3, (n, p)).astype(float)
    y = 5.0 + X @ rng.standard_normal(p) + 0.5 * rng.standard_normal(n)
    ref = BayesianRidge(tol=1e-10).fit(X, y)
    est = BayesianLinearRegression(
        solver=blm.CG(tol=1e-8) if solver == "cg" else solver,
        n_samples=0 if solver == "exact" else 32,
        random_state=0,
        tol=1e-8,
    ).fit(scipy.sparse.csr_array(X), y)
    # rtol of α, β; atol of the intercept and coefficients
    alpha, beta, intercept, coef = {
        "exact": (1e-7, 1e-7, 1e-7, 1e-7),
        "cg": (1e-3, 1e-5, 1e-5, 1e-5),
        "sgd": (0.01, 2e-3, 0.01, 0.0125),
    }[solver]
    np.testing.assert_allclose(est.alpha_, ref.lambda_, rtol=alpha)
    np.testing.assert_allclose(est.beta_, ref.alpha_, rtol=beta)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, atol=intercept)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=coef)


def test_csr_block_reads_the_rows_exactly(tmp_path):
    from blm.csr import csr_block

    rng = np.random.default_rng(4)
    X, y = _panel(rng)
    path = _write(tmp_path / "p.h5", X, y)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(csr_block(f["X"], 13, 140).toarray(), X[13:140].toarray())


def test_in_memory_sparse_fit_checkpoints_and_refuses_other_data(tmp_path):
    """A sparse X (and weights) enters the checkpoint's fingerprint: the same fit resumes
    from its finished checkpoint to the same result; other values, or other weights, are
    another fit."""
    rng = np.random.default_rng(5)
    X, y = _panel(rng)
    w = rng.uniform(0.5, 2.0, len(y))
    path = tmp_path / "fit.ckpt"
    est = BayesianLinearRegression(solver="cg", n_samples=4, random_state=0, max_iter=3)
    first = est.fit(X, y, w, checkpoint=path, checkpoint_every=0).coef_.copy()
    resumed = est.fit(X, y, w, checkpoint=path, resume=True).coef_
    np.testing.assert_allclose(resumed, first, rtol=1e-12, atol=1e-14)
    other = X.copy()
    other.data = other.data * 1.01
    for X2, w2 in ((other, w), (X, w * 1.01)):
        with pytest.raises(ValueError, match="belongs to another fit"):
            est.fit(X2, y, w2, checkpoint=path, resume=True)


@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_covariates_covariance_beside_fixed_effects(tmp_path, solver):
    """The panel use of covariance_columns: the three covariates' joint posterior
    covariance beside 55 one-hot unit and time effects, fitted from a sparse file, equals
    H⁻¹ = (β X_cᵀX_c + αI)⁻¹ (X_c the centred design, as the fit's) restricted to them."""
    X, y = _panel(np.random.default_rng(4))
    _write(tmp_path / "panel.h5", X, y)
    cols = [55, 56, 57]
    est = BayesianLinearRegression(
        solver=solver, n_samples=0 if solver == "exact" else 4, random_state=0, max_iter=5
    )
    est.set_params(covariance_columns=cols).fit(SparseHDF5Dataset(tmp_path / "panel.h5"))
    A = X.toarray() - X.toarray().mean(axis=0)
    ref = np.linalg.inv(est.beta_ * A.T @ A + est.alpha_ * np.eye(A.shape[1]))[np.ix_(cols, cols)]
    np.testing.assert_allclose(est.coef_covariance_, ref, rtol=1e-5, atol=1e-7 * np.abs(ref).max())


def test_offset_pair_helpers_name_bad_input():
    X, _ = _panel(np.random.default_rng(7))
    with pytest.raises(ValueError, match=r"rows must be padded \(column, value\) pairs"):
        with_offset_pair(np.zeros((3, 2)), 5)
    with pytest.raises(ValueError, match="p must be"):
        with_offset_pair(np.zeros((3, 2, 2)), 0)
    from blm.csr import sparse_rows

    with pytest.raises(TypeError, match="centred must be True or False"):
        sparse_rows(X, centred="yes")
    rows = sparse_rows(X, centred=True)
    assert rows.shape[1] == int(np.diff(X.indptr).max()) + 1
    np.testing.assert_array_equal(rows[:, -1], np.tile([X.shape[1], 1.0], (X.shape[0], 1)))
