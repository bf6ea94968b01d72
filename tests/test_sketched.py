"""Sketched Lanczos uncertainty: sketches, the low-memory Lanczos, and the SLU score
against a dense eigendecomposition of the GGN (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blm import ArrayDataset
from blm.likelihoods import Categorical
from blm.network import NetworkFeatures
from blm.uncertainty.sketched import (
    IdentitySketch,
    SparseJLSketch,
    SRFTSketch,
    sketched_lanczos,
)


def _model(seed=0, n=60):
    """MLP 3 → 12 → 12 → 3 (d = 243) with a softmax likelihood on n inputs."""
    net = eqx.nn.MLP(3, 3, 12, 2, activation=jnp.tanh, key=jax.random.PRNGKey(seed))
    feats = NetworkFeatures(net, (3,))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return feats, Categorical(3), ArrayDataset(X, np.zeros((n, 3))), X


def _dense_ggn(feats, lik, X):
    J = feats.dense(jnp.asarray(X))
    L = lik.sqrt_precision(feats.offset(jnp.asarray(X)))
    G = np.asarray(jnp.einsum("nmd,nml,nkl,nke->de", J, L, L, J))
    lam, U = np.linalg.eigh(G)
    return lam[::-1], U[:, ::-1]


def _exact_scores(feats, X, U, lam=None, alpha=None):
    J = np.asarray(feats.dense(jnp.asarray(X)))  # (b, m, d)
    proj = J @ U  # (b, m, k)
    if alpha is None:
        return np.sum(J**2, axis=(1, 2)) - np.sum(proj**2, axis=(1, 2))
    w = lam / (lam + alpha)
    return (np.sum(J**2, axis=(1, 2)) - np.sum(proj**2 * w, axis=(1, 2))) / alpha


def test_unsketched_score_equals_the_dense_projection():
    """s = d (no sketch): after 120 Lanczos steps without reorthogonalisation the top 6
    directions are converged (ghosts removed), and SLU(x) = ‖(I − UUᵀ)J(x)ᵀ‖²_F with U the
    top-6 eigenvectors of the dense GGN; the Laplace variant matches its formula too."""
    feats, lik, ds, X = _model()
    lam, U = _dense_ggn(feats, lik, X)
    assert lam[5] / lam[6] > 1.05  # a gap, so the top-6 space is well defined
    summary = sketched_lanczos(
        feats, lik, ds, jax.random.PRNGKey(0), 6, 120, IdentitySketch(feats.d)
    )
    Xt = np.random.default_rng(9).standard_normal((7, 3))
    np.testing.assert_allclose(summary.values, lam[:6], rtol=1e-8)
    np.testing.assert_allclose(
        summary.score(feats, jnp.asarray(Xt)), _exact_scores(feats, Xt, U[:, :6]), rtol=1e-6
    )
    np.testing.assert_allclose(
        summary.laplace_variance(feats, jnp.asarray(Xt), 0.3),
        _exact_scores(feats, Xt, U[:, :6], lam[:6], 0.3),
        rtol=1e-6,
    )
    # preconditioned: 3 eigenvectors in full, the next 3 from the deflated sketched run
    deflated = sketched_lanczos(
        feats, lik, ds, jax.random.PRNGKey(1), 3, 120, IdentitySketch(feats.d), deflate=3
    )
    np.testing.assert_allclose(deflated.deflation_values, lam[:3], rtol=1e-8)
    np.testing.assert_allclose(deflated.values, lam[3:6], rtol=1e-8)
    np.testing.assert_allclose(
        deflated.score(feats, jnp.asarray(Xt)), _exact_scores(feats, Xt, U[:, :6]), rtol=1e-6
    )
    assert deflated.stored_numbers == feats.d * 3 + 3 + feats.d * 3 + 3
    srft = sketched_lanczos(
        feats, lik, ds, jax.random.PRNGKey(0), 4, 30, SRFTSketch(jax.random.PRNGKey(2), feats.d, 60)
    )
    report = srft.memory_report()
    assert report["stored_numbers"] == 60 * 4 + 4 + 60 and report["buffer_numbers"] == 30 * 60
    assert report["buffer_over_d"] == 30 * 60 / feats.d and report["stored_bytes"] == 8 * (
        60 * 4 + 4 + 60
    )


@pytest.mark.parametrize("kind", ["srft", "sparse"])
def test_sketches_preserve_norms_within_the_jl_bound(kind):
    """‖Sx‖²/‖x‖² over 200 fixed vectors: mean 1 within 4 standard errors, and every ratio
    within ε = 4√(2/s) (the (1 ± ε) of a JL embedding at this s). S is linear and fixed."""
    d, s = 3000, 400
    key = jax.random.PRNGKey(0)
    S = SRFTSketch(key, d, s) if kind == "srft" else SparseJLSketch(key, d, s, nnz=4)
    x = jax.random.normal(jax.random.PRNGKey(1), (200, d)) * jnp.linspace(0.1, 3, d)
    Sx = jax.vmap(S)(x)
    assert Sx.shape == (200, S.s)
    ratio = np.asarray(jnp.sum(Sx**2, 1) / jnp.sum(x**2, 1))
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / np.sqrt(200)
    assert np.max(np.abs(ratio - 1)) < 4 * np.sqrt(2 / s)
    assert np.max(np.abs(ratio - 1)) > 0.2 * np.sqrt(2 / s)  # a sketch, not an isometry
    np.testing.assert_allclose(S(x[0] + 2 * x[1]), S(x[0]) + 2 * S(x[1]), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(S(x[0]), S(x[0]))
    if kind == "srft":
        assert len(np.unique(np.asarray(S.rows))) == s  # rows without replacement
        assert S.stored_numbers == s


def test_sketched_score_error_shrinks_as_the_sketch_grows():
    feats, lik, ds, X = _model(n=80)
    Xt = jnp.asarray(np.random.default_rng(3).standard_normal((40, 3)))
    exact = sketched_lanczos(feats, lik, ds, jax.random.PRNGKey(0), 8, 60, IdentitySketch(feats.d))
    reference = np.asarray(exact.score(feats, Xt))
    errors = []
    for s in (30, 80, 200):
        errs = []
        for seed in range(3):
            sk = SRFTSketch(jax.random.PRNGKey(10 + seed), feats.d, s)
            summ = sketched_lanczos(feats, lik, ds, jax.random.PRNGKey(0), 8, 60, sk)
            errs.append(np.mean(np.abs(np.asarray(summ.score(feats, Xt)) / reference - 1)))
        errors.append(np.mean(errs))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * errors[0]


def test_bad_input_is_named():
    feats, lik, ds, _ = _model()
    with pytest.raises(ValueError, match="s: sketch size 500 exceeds the dimension d=243"):
        SRFTSketch(jax.random.PRNGKey(0), feats.d, 500)
    with pytest.raises(ValueError, match="s: sketch size 2 is below nnz=4"):
        SparseJLSketch(jax.random.PRNGKey(0), feats.d, 2)
    with pytest.raises(ValueError, match="sketch: maps"):
        sketched_lanczos(feats, lik, ds, jax.random.PRNGKey(0), 3, 10, IdentitySketch(10))
    with pytest.raises(ValueError, match="rank: 40 directions in a sketch of size s=60"):
        sketched_lanczos(
            feats,
            lik,
            ds,
            jax.random.PRNGKey(0),
            40,
            50,
            SRFTSketch(jax.random.PRNGKey(0), feats.d, 60),
        )
    with pytest.raises(ValueError, match="n_iter: 500 Lanczos steps exceed d=243"):
        sketched_lanczos(feats, lik, ds, jax.random.PRNGKey(0), 3, 500, IdentitySketch(feats.d))


def test_deflation_depth_is_checked():
    feats, lik, ds, _ = _model()
    with pytest.raises(ValueError, match="deflate_depth must lie in"):
        sketched_lanczos(
            feats,
            lik,
            ds,
            jax.random.PRNGKey(0),
            3,
            10,
            IdentitySketch(feats.d),
            5,
            deflate_depth=2,
        )
