"""Feature maps, datasets and the streamed operators: HDF5 ≡ in memory."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blm import ArrayDataset, Gaussian, HDF5Dataset, LinearFeatures
from blm import operators as ops


@pytest.fixture
def problem(rng, tmp_path):
    X = rng.standard_normal((103, 4))
    Y = rng.standard_normal((103, 2))
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["X"] = X
        f["y"] = Y
    return X, Y, path


def test_linear_features_match_matrix(rng):
    X = rng.standard_normal((5, 3))
    feats = LinearFeatures(3, 2)
    theta = rng.standard_normal(6)
    v = rng.standard_normal((5, 2))
    Theta = theta.reshape(2, 3)
    np.testing.assert_allclose(feats.jvp(jnp.asarray(X), theta), X @ Theta.T)
    np.testing.assert_allclose(feats.vjp(jnp.asarray(X), v), (v.T @ X).ravel())
    dense = np.asarray(feats.dense(jnp.asarray(X)))
    np.testing.assert_allclose(np.einsum("bkd,d->bk", dense, theta), X @ Theta.T)
    # the generic dense() (d jvps) agrees with the closed form
    from blm.features import Features

    np.testing.assert_allclose(Features.dense(feats, jnp.asarray(X)), dense)


def test_hdf5_and_memory_give_identical_products(problem, rng):
    X, Y, path = problem
    feats = LinearFeatures(4, 2)
    mem = ArrayDataset(X, Y)
    disk = HDF5Dataset(path, block_size=17)
    z = jnp.asarray(rng.standard_normal((3, 8)))  # a leading sample axis
    v = jnp.asarray(rng.standard_normal((103, 2)))
    lik = Gaussian([2.0, 0.5])
    np.testing.assert_array_equal(ops.matvec(feats, mem, z, 17), ops.matvec(feats, disk, z))
    np.testing.assert_allclose(
        ops.rmatvec(feats, mem, v, 17), ops.rmatvec(feats, disk, v), rtol=1e-13
    )
    np.testing.assert_allclose(
        ops.normal_matvec(feats, lik, mem, z), ops.normal_matvec(feats, lik, disk, z), rtol=1e-12
    )
    np.testing.assert_allclose(ops.rhs(feats, lik, mem), ops.rhs(feats, lik, disk), rtol=1e-12)
    # and against the dense products
    Phi = np.asarray(feats.dense(jnp.asarray(X))).reshape(-1, 8)
    B = np.tile([2.0, 0.5], 103)
    np.testing.assert_allclose(
        ops.matvec(feats, disk, z).reshape(3, -1), np.asarray(z) @ Phi.T, rtol=1e-12
    )
    np.testing.assert_allclose(
        ops.rmatvec(feats, disk, v), Phi.T @ np.asarray(v).ravel(), rtol=1e-12
    )
    np.testing.assert_allclose(
        ops.normal_matvec(feats, lik, disk, z), np.asarray(z) @ (Phi.T * B) @ Phi, rtol=1e-12
    )
    np.testing.assert_allclose(ops.rhs(feats, lik, disk), Phi.T @ (B * Y.ravel()), rtol=1e-12)


def test_shuffled_blocks_cover_every_row_once(problem):
    X, Y, path = problem
    for ds in (ArrayDataset(X, Y), HDF5Dataset(path, block_size=10)):
        blocks = list(ds.blocks(10, key=jax.random.PRNGKey(3)))
        rows = np.concatenate([np.asarray(r) for _, _, r in blocks])
        assert not np.array_equal(rows, np.arange(103))  # shuffled
        np.testing.assert_array_equal(np.sort(rows), np.arange(103))  # each row once
        for xb, yb, r in blocks:  # and the indices name the rows yielded
            np.testing.assert_array_equal(xb, X[np.asarray(r)])
            np.testing.assert_array_equal(yb, Y[np.asarray(r)])


def test_ordered_blocks_are_consecutive_rows(problem):
    """Without a key: blocks of block_size rows in order (the last one short), each with
    the indices of its rows."""
    X, Y, path = problem
    for ds in (ArrayDataset(X, Y), HDF5Dataset(path, block_size=10)):
        blocks = list(ds.blocks(10))
        assert [len(r) for _, _, r in blocks] == [10] * 10 + [3]
        np.testing.assert_array_equal(
            np.concatenate([np.asarray(r) for _, _, r in blocks]), np.arange(103)
        )
        np.testing.assert_array_equal(np.concatenate([xb for xb, _, _ in blocks]), X)
        np.testing.assert_array_equal(np.concatenate([yb for _, yb, _ in blocks]), Y)


def test_hdf5_errors(tmp_path, problem):
    X, Y, path = problem
    with pytest.raises(FileNotFoundError, match="path"):
        HDF5Dataset(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="x: no dataset named 'features'.*holds"):
        HDF5Dataset(path, x="features")
    with pytest.raises(ValueError, match="y: no dataset named 'target'"):
        HDF5Dataset(path, y="target")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["X"] = X
        f["y_short"] = Y[:50]
        f["y3"] = np.zeros((103, 2, 2))
        y_nan = Y.copy()
        y_nan[7, 1] = np.nan
        f["y_nan"] = y_nan
        X_nan = X.copy()
        X_nan[60, 0] = np.inf
        f["X_nan"] = X_nan
    with pytest.raises(ValueError, match="same number of rows, got 103 and 50"):
        HDF5Dataset(bad, y="y_short")
    with pytest.raises(ValueError, match="y: dataset 'y3' must be 1-D or 2-D"):
        HDF5Dataset(bad, y="y3")
    with pytest.raises(ValueError, match="y \\(dataset 'y_nan'.*non-finite.*\\(7, 1\\)"):
        HDF5Dataset(bad, y="y_nan")
    with h5py.File(bad, "a") as f:
        f["y_ok"] = Y
    ds = HDF5Dataset(bad, x="X_nan", y="y_ok", block_size=50)
    with pytest.raises(ValueError, match="x \\(dataset 'X_nan', rows 50:100\\).*non-finite"):
        list(ds.blocks())
    with pytest.raises(ValueError, match="features have m=3"):
        ops.rhs(LinearFeatures(4, 3), Gaussian(1.0), HDF5Dataset(path))
    notfile = tmp_path / "text.h5"
    notfile.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        HDF5Dataset(notfile)


def test_array_dataset_errors():
    with pytest.raises(ValueError, match="same number of rows"):
        ArrayDataset(np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match="y holds 1 non-finite"):
        ArrayDataset(np.ones((3, 2)), [1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match=r"X has 0 sample\(s\) \(shape=\(0, 2\)\)"):
        ArrayDataset(np.ones((0, 2)), np.ones(0))
    with pytest.raises(
        ValueError,
        match="X must hold real numbers .Complex data not supported., got dtype complex128",
    ):
        ArrayDataset(np.ones((2, 2)) * 1j, np.ones(2))
    with pytest.raises(TypeError, match="float.. argument must be a string or a real number"):
        ArrayDataset(np.array([[1, {"a": 1}]], dtype=object), np.ones(1))
    with pytest.raises(ValueError, match="n_observations must be strictly positive"):
        ArrayDataset(np.ones((2, 2)), np.ones(2), n_observations=0.0)
    mixed = ArrayDataset(np.array([[1, 2.5]], dtype=object), np.ones(1))  # numbers: converted
    np.testing.assert_array_equal(mixed.X, [[1.0, 2.5]])
    with pytest.raises(TypeError, match="y must hold numbers"):
        ArrayDataset(np.ones((2, 2)), ["a", "b"])


def test_random_fourier_features_match_their_dense_design(rng):
    from blm import RandomFourierFeatures

    feats = RandomFourierFeatures(jax.random.PRNGKey(0), n_raw=3, n_features=50, lengthscale=0.7)
    x = jnp.asarray(rng.standard_normal((9, 3)))
    rows = np.sqrt(2 / 50) * np.cos(
        np.asarray(x) @ np.asarray(feats.omega) + np.asarray(feats.phase)
    )
    z = rng.standard_normal(50)
    v = rng.standard_normal((9, 1))
    np.testing.assert_allclose(feats.jvp(x, z)[:, 0], rows @ z, rtol=1e-12)
    np.testing.assert_allclose(feats.vjp(x, v), rows.T @ v[:, 0], rtol=1e-12)
    np.testing.assert_allclose(feats.dense(x)[:, 0], rows, rtol=1e-12)
    # the random features approximate the RBF kernel exp(-‖x−x'‖²/(2ℓ²)) as D grows
    big = RandomFourierFeatures(jax.random.PRNGKey(1), 3, 20_000, lengthscale=0.7)
    phi = np.asarray(big.transform(x))
    sq = ((np.asarray(x)[:, None] - np.asarray(x)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(phi @ phi.T, np.exp(-sq / (2 * 0.7**2)), atol=0.03)
    with pytest.raises(ValueError, match="lengthscale must be strictly positive"):
        RandomFourierFeatures(jax.random.PRNGKey(0), 3, 5, lengthscale=0.0)


@pytest.mark.parametrize("kind", ["linear", "random-fourier", "sparse", "generic"])
def test_linearize_many_is_the_dense_jacobian_rows_first(rng, kind):
    """linearize_many's products for k vectors equal the dense φ(x_b) (b, m, d) applied to
    each, in the rows-first layout: (b, k, m) out of Z (k, d), (k, d) out of V (b, k, m);
    2 outputs, so a swapped output and sample axis (equal sizes would hide it: k = 3) or
    a wrong ravel of θ fails. The design matrix's own 2-D products, the sparse rows'
    generic path, and the generic vmapped pair (``Features.linearize_many``) alike."""
    from blm import RandomFourierFeatures, SparseLinearFeatures
    from blm.csr import padded_rows
    from blm.features import Features

    b, p, m, k = 9, 5, 2, 3
    X = rng.standard_normal((b, p))
    if kind == "random-fourier":
        feats = RandomFourierFeatures(jax.random.PRNGKey(0), p, 7, n_outputs=m)
    elif kind == "sparse":
        X[X < 0.3] = 0.0
        import scipy.sparse as sp

        csr = sp.csr_matrix(X)
        feats = SparseLinearFeatures(p, m)
        X = padded_rows(csr.data, csr.indices, csr.indptr, p)
    else:
        feats = LinearFeatures(p, m)
    x = jnp.asarray(X)
    dense = np.asarray(feats.dense(x))  # (b, m, d)
    Z = rng.standard_normal((k, feats.d))
    V = rng.standard_normal((b, k, m))
    many = Features.linearize_many if kind == "generic" else type(feats).linearize_many
    f0, jvps, vjps = many(feats, x)
    np.testing.assert_allclose(f0, np.zeros((b, m)))
    np.testing.assert_allclose(jvps(jnp.asarray(Z)), np.einsum("bmd,kd->bkm", dense, Z), rtol=1e-12)
    np.testing.assert_allclose(vjps(jnp.asarray(V)), np.einsum("bmd,bkm->kd", dense, V), rtol=1e-12)
    if kind == "linear":  # a reshape would otherwise accept any Z whose size p divides
        with pytest.raises(ValueError, match=r"Z must have shape \(k, d\) with d = 10"):
            jvps(jnp.ones((4, 5)))
        with pytest.raises(ValueError, match=r"V must have shape \(b, k, m\) with b = 9, m = 2"):
            vjps(jnp.ones((9, 2, 3)))


def test_likelihood_products_broadcast_over_a_sample_axis(rng):
    """precision_mul and sqrt_mul with f (b, 1, m) against v (b, k, m): each row's B_i (L_i)
    applied to its k vectors, as one row at a time (the rows-first kernels rely on it)."""
    from blm import Bernoulli, Categorical

    for lik, m in ((Gaussian(np.array([4.0, 0.5]), m=2), 2), (Bernoulli(), 1), (Categorical(4), 4)):
        f = jnp.asarray(rng.standard_normal((6, m)))
        v = jnp.asarray(rng.standard_normal((6, 3, m)))
        for op in (lik.precision_mul, lik.sqrt_mul):
            expect = np.stack([op(f, v[:, j]) for j in range(3)], axis=1)
            np.testing.assert_allclose(op(f[:, None], v), expect, rtol=1e-12)


@pytest.mark.parametrize("n", [30, 2500])  # 2 500: the fast path's 1 024-row chunks + rest
def test_normal_diagonal_generic_and_fast_paths_agree(rng, n):
    from blm.features import Features

    X = rng.standard_normal((n, 4))
    feats = LinearFeatures(4, 2)
    lik = Gaussian([2.0, 0.5])
    # a non-diagonal factor: diag(Σ_i φ_iᵀL_iL_iᵀφ_i) from both paths and densely
    L = jnp.asarray(rng.standard_normal((n, 2, 2)))
    generic = Features.sq_rows(feats, jnp.asarray(X), L)
    np.testing.assert_allclose(feats.sq_rows(jnp.asarray(X), L), generic, rtol=1e-12)
    phis = np.asarray(feats.dense(jnp.asarray(X)))  # (n, 2, 8)
    full = np.einsum("bkd,bkl,bje,bjl->de", phis, L, phis, L)
    np.testing.assert_allclose(generic, np.diag(full), rtol=1e-12)
    Phi = phis.reshape(-1, 8)
    B = np.tile([2.0, 0.5], n)
    dense = np.diag((Phi.T * B) @ Phi)
    data = ArrayDataset(X, np.zeros((n, 2)))
    np.testing.assert_allclose(ops.normal_diagonal(feats, lik, data, 7), dense, rtol=1e-12)
    np.testing.assert_allclose(ops.normal_diagonal(feats, lik, data), dense, rtol=1e-12)


def test_residual_and_sample_statistics_match_dense(rng):
    """One pass gives z_jᵀΦ_kᵀB_kΦ_kz_j per output, ‖y_k − Φ_kθ̄‖² and ΦᵀBΦz_j; each is
    checked densely (blocks of 5 rows of 23), and the pass reads the data once."""
    X = rng.standard_normal((23, 3))
    Y = rng.standard_normal((23, 2))
    feats, lik, ds = LinearFeatures(3, 2), Gaussian([2.0, 0.5]), ArrayDataset(X, Y)
    theta = jnp.asarray(rng.standard_normal(6))
    z = jnp.asarray(rng.standard_normal((4, 6)))
    F = X @ np.asarray(theta).reshape(2, 3).T
    np.testing.assert_allclose(
        ops.residual_sq(feats, ds, theta, 5), ((Y - F) ** 2).sum(0), rtol=1e-12
    )
    Fz = np.einsum("np,kmp->knm", X, np.asarray(z).reshape(4, 2, 3))
    quad = (Fz**2 * np.array([2.0, 0.5])).sum(1)
    Phi = np.asarray(feats.dense(jnp.asarray(X))).reshape(-1, 6)
    normal = np.asarray(z) @ (Phi.T * np.tile([2.0, 0.5], 23)) @ Phi

    reads = []
    blocks = ds.blocks
    ds.blocks = lambda rows: reads.append(rows) or blocks(rows)
    stats = ops.sample_statistics(feats, lik, ds, z, theta, 5, with_normal=True)
    assert len(reads) == 1
    np.testing.assert_allclose(stats.quad, quad, rtol=1e-12)
    np.testing.assert_allclose(stats.residual_sq, ((Y - F) ** 2).sum(0), rtol=1e-12)
    np.testing.assert_allclose(stats.normal, normal, rtol=1e-12)
    alone = ops.sample_statistics(feats, lik, ds, z)
    assert alone.residual_sq is None and alone.normal is None
    np.testing.assert_allclose(alone.quad, quad, rtol=1e-12)
    with pytest.raises(TypeError, match="with_normal must be True or False"):
        ops.sample_statistics(feats, lik, ds, z, with_normal=1)
    with pytest.raises(ValueError, match=r"z must have shape \(k, d\) with d = 6, got \(6,\)"):
        ops.sample_statistics(feats, lik, ds, z[0])
    with pytest.raises(ValueError, match=r"mean must have shape \(d,\) = \(6,\), got \(5,\)"):
        ops.sample_statistics(feats, lik, ds, z, theta[:5])


def test_factor_rows_are_the_dense_jacobian_times_the_factor(rng):
    """factor_rows[i, l] = φ_iᵀL_i e_l, so Σ r rᵀ = ΦᵀBΦ with B_i = L_iL_iᵀ."""
    X = jnp.asarray(rng.standard_normal((7, 4)))
    feats = LinearFeatures(4, 3)
    L = jnp.asarray(rng.standard_normal((7, 3, 3)))
    rows = np.asarray(feats.factor_rows(X, L))  # (7, 3, 12)
    phis = np.asarray(feats.dense(X))  # (7, 3, 12)
    np.testing.assert_allclose(rows, np.einsum("bkd,bkl->bld", phis, np.asarray(L)), rtol=1e-12)
    flat = rows.reshape(-1, 12)
    ggn = np.einsum("bkd,bkl,bjl,bje->de", phis, np.asarray(L), np.asarray(L), phis)
    np.testing.assert_allclose(flat.T @ flat, ggn, rtol=1e-10, atol=1e-12)
