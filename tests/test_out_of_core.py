"""The estimator on HDF5 files read in row blocks equals the in-memory fit."""

import h5py
import numpy as np
import pytest

import blm
from blm import BayesianLinearRegression, HDF5Dataset
from blm.evidence.closed_form import DenseGaussianModel
from blm.features import LinearFeatures
from tests.conftest import random_problem


def _file(tmp_path, X, y, name="data.h5"):
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    return path


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    X, Y = random_problem(rng, 400, 30, 1, decay=0.9)
    return X + 2.0, Y[:, 0] + 5.0  # offsets, so centring matters


def test_moments_stream_in_blocks(tmp_path, problem):
    X, y = problem
    ds = HDF5Dataset(_file(tmp_path, X, y), block_size=37)
    x_mean, y_mean, y_var = ds.moments()
    np.testing.assert_allclose(x_mean, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(y_mean, [y.mean()], rtol=1e-12)
    np.testing.assert_allclose(y_var, [y.var()], rtol=1e-10)
    w = np.random.default_rng(0).uniform(0.0, 2.0, len(y))
    w[:37] = 0.0  # a whole block weighs nothing
    x_mean, y_mean, y_var = ds.moments(sample_weight=w)
    np.testing.assert_allclose(x_mean, np.average(X, axis=0, weights=w), rtol=1e-12)
    np.testing.assert_allclose(y_mean, [np.average(y, weights=w)], rtol=1e-12)
    np.testing.assert_allclose(y_var, [np.average((y - y_mean) ** 2, weights=w)], rtol=1e-10)
    with pytest.raises(ValueError, match="X and sample_weight must have the same number"):
        ds.moments(sample_weight=w[:-1])
    with pytest.raises(ValueError, match="x_offset, y_offset must have shapes"):
        ds.shifted(np.zeros(3), np.zeros(1))


def test_streamed_dense_model_keeps_no_rows(tmp_path, problem):
    X, y = problem
    feats = LinearFeatures(X.shape[1], 1)
    disk = DenseGaussianModel.from_data(feats, HDF5Dataset(_file(tmp_path, X, y), block_size=50))
    mem = DenseGaussianModel.from_arrays(X[:, None, :], y[:, None])
    assert disk.Phi is None and disk.n == mem.n == X.shape[0]
    from blm import Prior

    prior, beta = Prior.scalar(0.7, X.shape[1]), np.array([2.0])
    p_disk, p_mem = disk.posterior(prior, beta), mem.posterior(prior, beta)
    np.testing.assert_allclose(
        disk.residual_sq(p_disk.mean), mem.residual_sq(p_mem.mean), rtol=1e-8
    )
    np.testing.assert_allclose(
        disk.log_evidence(p_disk, beta), mem.log_evidence(p_mem, beta), rtol=1e-10
    )


@pytest.mark.parametrize(
    "options, rtol",
    [
        ({"solver": "exact"}, 1e-8),
        (
            {"solver": blm.CG(tol=1e-10), "n_samples": 4, "random_state": 0},
            1e-6,
        ),
        (  # SLQ evidence ascent: Lanczos reads the file block by block inside its loop
            {
                "solver": blm.CG(tol=1e-10),
                "n_samples": 4,
                "random_state": 0,
                "hyper": blm.EvidenceAscent(slq=blm.SLQ(depth=10, n_probes=2, block_size=64)),
                "max_iter": 4,
            },
            1e-6,
        ),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_estimator_on_hdf5_equals_in_memory(tmp_path, problem, options, rtol, weighted):
    """Also with frequency weights (held in memory, n numbers): the file's rows are then
    read centred at the weighted means and scaled by √w, in ``blocks`` and in the traced
    passes' ``read_rows`` alike."""
    X, y = problem
    w = np.random.default_rng(4).uniform(0.2, 3.0, len(y)) if weighted else None
    path = _file(tmp_path, X, y)
    mem = BayesianLinearRegression(tol=1e-8, **options).fit(X, y, sample_weight=w)
    disk = BayesianLinearRegression(tol=1e-8, **options).fit(
        HDF5Dataset(path, block_size=64), sample_weight=w
    )
    np.testing.assert_allclose(disk.alpha_, mem.alpha_, rtol=rtol)
    np.testing.assert_allclose(disk.beta_, mem.beta_, rtol=rtol)
    np.testing.assert_allclose(
        disk.coef_, mem.coef_, rtol=rtol, atol=rtol * np.abs(mem.coef_).max()
    )
    np.testing.assert_allclose(disk.intercept_, mem.intercept_, rtol=rtol)
    np.testing.assert_allclose(
        disk.predict(X[:5], return_std=True), mem.predict(X[:5], return_std=True), rtol=rtol
    )


def test_sgd_estimator_on_hdf5_reaches_the_exact_hyperparameters(tmp_path, problem):
    X, y = problem
    exact = BayesianLinearRegression(tol=1e-10).fit(X, y)
    disk = BayesianLinearRegression(
        solver=blm.SGD(n_steps=800, batch_size=100, block_size=200),
        n_samples=32,
        random_state=0,
        tol=1e-3,
    ).fit(HDF5Dataset(_file(tmp_path, X, y)))
    np.testing.assert_allclose(disk.alpha_, exact.alpha_, rtol=0.15)
    np.testing.assert_allclose(disk.beta_, exact.beta_, rtol=0.03)


def test_streamed_targets_and_sgd_blocks_hold_a_whole_minibatch(tmp_path, problem):
    """``with_targets`` swaps the file's targets for in-memory ones row for row, and SGD
    reads a streamed file in blocks of at least one minibatch (minibatches are drawn
    within a block, so a smaller block would shrink them)."""
    import jax

    from blm.solvers.sgd import _blocks

    X, y = problem
    ds = HDF5Dataset(_file(tmp_path, X, y), block_size=37)
    np.testing.assert_array_equal(ds.targets(), y)
    swapped = ds.with_targets(np.stack([y, -y], axis=1))
    assert swapped.m == 2 and ds.m == 1
    for xb, yb, rows in swapped.blocks(37, jax.random.PRNGKey(0)):
        np.testing.assert_array_equal(xb, X[rows])
        np.testing.assert_array_equal(yb, np.stack([y[rows], -y[rows]], axis=1))
    with pytest.raises(ValueError, match="y"):
        ds.with_targets(y[:-1])
    stream = _blocks(ds, 10, 64, jax.random.PRNGKey(1))  # block_size 10, batch_size 64
    sizes = sorted(next(stream)[0].shape[0] for _ in range(7))  # one pass over 400 rows
    assert sizes == [400 - 6 * 64] + [64] * 6


def test_estimator_hdf5_input_errors(tmp_path, problem):
    X, y = problem
    ds = HDF5Dataset(_file(tmp_path, X, y))
    with pytest.raises(ValueError, match="y: must be None"):
        BayesianLinearRegression().fit(ds, y)
    with pytest.raises(ValueError, match="y: this estimator requires y to be passed"):
        BayesianLinearRegression().fit(X)
    images = _file(tmp_path, X.reshape(-1, 5, 6), y, "images.h5")
    with pytest.raises(ValueError, match="X: rows must be vectors"):
        BayesianLinearRegression().fit(HDF5Dataset(images))


def test_evidence_ascent_state_round_trip_continues_the_same_steps():
    from blm.evidence.ascent import AdamAscent

    args = (np.array([1.0, 2.0]), np.array([0.5]))
    grads = [(np.array([0.3, -0.1]), np.array([0.2])), (np.array([-0.2, 0.4]), np.array([-0.1]))]
    whole = AdamAscent(*args, learning_rate=0.1)
    a1, b1, _ = whole.step(*args, 0.0, *grads[0])
    a2, b2, _ = whole.step(a1, b1, 0.0, *grads[1])
    first = AdamAscent(*args, learning_rate=0.1)
    first.step(*args, 0.0, *grads[0])
    resumed = AdamAscent(*args, learning_rate=0.1)
    resumed.restore(first.state_arrays())
    a2r, b2r, _ = resumed.step(a1, b1, 0.0, *grads[1])
    np.testing.assert_array_equal(a2r, a2)
    np.testing.assert_array_equal(b2r, b2)
    fresh = AdamAscent(*args, learning_rate=0.1).step(a1, b1, 0.0, *grads[1])[0]
    assert not np.allclose(fresh, a2)  # Adam's moments matter, so the state was carried


def test_checkpointer_names_bad_every(tmp_path):
    from blm.checkpoint import Checkpointer

    with pytest.raises(ValueError, match="every: must be a number of seconds"):
        Checkpointer(tmp_path / "c.h5", every=-1.0)
