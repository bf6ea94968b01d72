"""Sparse information form: the exact low-rank sampler, the exact diagonal, Lanczos and
Kronecker-factored (KFAC / EFB / INF) low-rank parts, and Kronecker sparsification."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blm import ArrayDataset
from blm.likelihoods import Categorical, Gaussian
from blm.network import NetworkFeatures
from blm.uncertainty.information import InformationForm, lanczos_information_form
from blm.uncertainty.kron import jacobian_rows, linear_layers, sparsify


def _random_form(rng, d=30, L=5, scale=3.0, tau=0.7):
    U = np.linalg.qr(rng.standard_normal((d, L)))[0]
    lam = np.sort(rng.uniform(1, 20, L))[::-1]
    diag = np.sum(U**2 * lam, axis=1) + rng.uniform(0.1, 2, d)
    return InformationForm.from_low_rank(np.zeros(d), U, lam, diag, scale, tau), diag


def _published_factor(form):
    """The published variant, dense: B Bᵀ = I + VᵀV (not I + AᵀA), C = A⁻ᵀ(B − I)A⁻¹."""
    d_prime = np.asarray(form.scale * form.D + form.tau)
    V = np.asarray(form.U) * np.sqrt(form.scale * np.asarray(form.lam)) / np.sqrt(d_prime)[:, None]
    L = V.shape[1]
    A = np.linalg.cholesky(V.T @ V)
    B = np.linalg.cholesky(np.eye(L) + V.T @ V)
    C = np.linalg.inv(A).T @ (B - np.eye(L)) @ np.linalg.inv(A)
    return (np.eye(V.shape[0]) - V @ C @ V.T) / np.sqrt(d_prime)[:, None]


def test_low_rank_sampler_is_exact_and_the_published_variant_is_not(rng):
    form, diag = _random_form(rng)
    H = np.asarray(form.precision())
    F = np.asarray(form.factor_mul(jnp.eye(30)).T)  # columns F e_i
    np.testing.assert_allclose(F @ F.T, np.linalg.inv(H), rtol=1e-10, atol=1e-12)
    # the exact diagonal: diag(Ĥ) = N diag(G) + τ
    np.testing.assert_allclose(np.diag(H), 3.0 * diag + 0.7, rtol=1e-12)
    P = _published_factor(form)
    err = np.linalg.norm(P @ P.T - np.linalg.inv(H)) / np.linalg.norm(np.linalg.inv(H))
    assert err > 1e-3  # only approximately right


def test_sampler_draws_have_the_covariance(rng):
    """k = 20 000 draws: relative Frobenius error of the sample covariance below 4·√(2d/k)·…
    (about 0.05 here); a wrong factor 2 in any term is far outside."""
    form, _ = _random_form(rng, d=12, L=3)
    post = form.sample(jax.random.PRNGKey(0), 20_000)
    cov = np.asarray(post.samples.T @ post.samples) / 20_000
    exact = np.linalg.inv(np.asarray(form.precision()))
    err = np.linalg.norm(cov - exact) / np.linalg.norm(exact)
    assert err < 0.05


def _mlp(out=2, seed=0):
    return eqx.nn.MLP(3, out, 6, 1, activation=jnp.tanh, key=jax.random.PRNGKey(seed))


def _dense_ggn(feats, lik, X):
    J = feats.dense(jnp.asarray(X))
    L = lik.sqrt_precision(feats.offset(jnp.asarray(X)))
    return np.asarray(jnp.einsum("nmd,nml,nkl,nke->de", J, L, L, J))


def test_lanczos_information_form_has_the_top_eigenpairs_and_exact_diagonal(rng):
    net = _mlp(3)
    feats, lik = NetworkFeatures(net, (3,)), Categorical(3)
    X = rng.standard_normal((40, 3))
    G = _dense_ggn(feats, lik, X)
    lam, U = np.linalg.eigh(G)
    form = lanczos_information_form(
        feats,
        lik,
        ArrayDataset(X, np.zeros((40, 3))),
        feats.w,
        jax.random.PRNGKey(0),
        4,
        0.5,
        depth=feats.d,
    )
    np.testing.assert_allclose(form.lam, lam[::-1][:4], rtol=1e-8)
    low = (form.U * form.lam) @ form.U.T
    np.testing.assert_allclose(low, (U[:, -4:] * lam[-4:]) @ U[:, -4:].T, atol=1e-8)
    np.testing.assert_allclose(np.diag(form.precision()), np.diag(G) + 0.5, rtol=1e-10)


def _layer_blocks(feats, G, layers):
    return [G[np.ix_(layer.index, layer.index)] for layer in layers]


def test_kronecker_factors_kfac_efb_inf(rng):
    """Per layer, against the dense GGN block (in Kronecker order): the rows give G exactly;
    one example with one output makes KFAC exact; EFB's eigenvalues are the exact diagonal
    of G in the Kronecker eigenbasis; INF's diagonal is exact; and the Frobenius errors
    are ordered INF ≤ EFB ≤ KFAC."""
    net = _mlp(2)
    feats, lik = NetworkFeatures(net, (3,)), Gaussian(np.array([1.5, 0.5]))
    X = rng.standard_normal((30, 3))
    G = _dense_ggn(feats, lik, X)
    rows = np.asarray(jacobian_rows(feats, lik, X, batch_size=7))
    np.testing.assert_allclose(rows.T @ rows, G, atol=1e-10)
    layers = linear_layers(feats, rows)
    assert [(lay.out, lay.inp) for lay in layers] == [(6, 3), (2, 6)]
    for layer, block in zip(layers, _layer_blocks(feats, G, layers), strict=True):
        V = np.kron(layer.Ug, layer.Ua)
        np.testing.assert_allclose(
            layer.efb.ravel(), np.diag(V.T @ block @ V), rtol=1e-8, atol=1e-10
        )
        np.testing.assert_allclose(
            np.diag(layer.inf_matrix()), np.diag(block), rtol=1e-8, atol=1e-10
        )
        errors = [
            np.linalg.norm(block - M)
            for M in (layer.inf_matrix(), layer.efb_matrix(), layer.kfac())
        ]
        assert errors[0] <= errors[1] + 1e-10 and errors[1] <= errors[2] + 1e-10
    one = linear_layers(
        feats, np.asarray(jacobian_rows(feats, Gaussian(np.array([1.5, 0.0 + 1e-300])), X[:1]))
    )
    G1 = _dense_ggn(feats, Gaussian(np.array([1.5, 1e-300])), X[:1])
    for layer, block in zip(one, _layer_blocks(feats, G1, one), strict=True):
        np.testing.assert_allclose(layer.kfac(), block, rtol=1e-8, atol=1e-10)


def test_kronecker_sparsification_toy_and_rank_bound(rng):
    grid = np.outer([2.0, 1.5], [3.0, 2.0, 1.0])  # S_g ⊗ S_a: 6 eigenvalues
    O, J, kept = sparsify(grid, 3)
    np.testing.assert_array_equal(O, [0, 1])
    np.testing.assert_array_equal(J, [0, 1])
    assert kept.size == 4 and set(kept.ravel()) == {6.0, 4.5, 4.0, 3.0}
    for _ in range(20):
        g = rng.uniform(size=(7, 9))
        k = int(rng.integers(1, 63))
        O, J, kept = sparsify(g, k)
        assert kept.size == len(O) * len(J) >= k
        assert np.sort(g.ravel())[::-1][k - 1] <= kept.min() or kept.size > k
    with pytest.raises(ValueError, match="k: cannot keep 64 of 63"):
        sparsify(np.ones((7, 9)), 64)


def test_sparse_information_form_keeps_the_layer_diagonals(rng):
    from blm.uncertainty.kron import sparse_information_form

    net = _mlp(2)
    feats, lik = NetworkFeatures(net, (3,)), Gaussian(np.array([1.5, 0.5]))
    X = rng.standard_normal((30, 3))
    G = _dense_ggn(feats, lik, X)
    layers = linear_layers(feats, np.asarray(jacobian_rows(feats, lik, X)))
    form = sparse_information_form(layers, feats.d, feats.w, np.diag(G), 0.2, 0.3)
    assert form.U.shape[1] >= sum(int(np.ceil(0.2 * lay.index.size)) for lay in layers)
    H = np.asarray(form.precision())
    np.testing.assert_allclose(
        np.diag(H), np.maximum(np.diag(G), np.diag(H) - 0.3) + 0.3, rtol=1e-10
    )
    np.testing.assert_allclose(np.linalg.norm(np.asarray(form.U), axis=0), 1.0, rtol=1e-10)
    F = np.asarray(form.factor_mul(jnp.eye(feats.d)).T)
    np.testing.assert_allclose(F @ F.T, np.linalg.inv(H), rtol=1e-8, atol=1e-10)


def test_non_linear_layers_are_refused():
    conv = eqx.nn.Conv1d(1, 2, 3, key=jax.random.PRNGKey(0))
    feats = NetworkFeatures(conv, (1, 5))
    rows = np.zeros((2, feats.d))
    with pytest.raises(TypeError, match="need linear layers"):
        linear_layers(feats, rows)


def test_information_form_predicts_through_the_posterior_interface(rng):
    """Its draws are a SampledPosterior, so LaplacePosterior predicts with them like with
    the sgd/cg samples (the experiments swap posteriors this way)."""
    from blm.laplace import LaplacePosterior

    net = _mlp(3)
    feats, lik = NetworkFeatures(net, (3,)), Categorical(3)
    X = rng.standard_normal((20, 3))
    form = lanczos_information_form(
        feats, lik, ArrayDataset(X, np.zeros((20, 3))), feats.w, jax.random.PRNGKey(0), 3, 2.0
    )
    post = LaplacePosterior(
        feats, lik, [2.0], form.sample(jax.random.PRNGKey(1), 500), feats.groups()
    )
    probs = np.asarray(post.predict_proba(X[:4]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-10)
    var = np.asarray(jnp.mean(post.outputs(X[:4])[1] ** 2, axis=0))  # (4, 3) sampled J H⁻¹ Jᵀ
    J = np.asarray(feats.dense(jnp.asarray(X[:4])))
    exact = np.einsum("tmd,de,tme->tm", J, np.linalg.inv(np.asarray(form.precision())), J)
    np.testing.assert_allclose(var, exact, rtol=0.25)  # 500 draws: ~6 % sd per entry


def test_information_form_bad_input_is_named(rng):
    from blm.uncertainty.kron import sparse_information_form

    U = np.linalg.qr(rng.standard_normal((10, 3)))[0]
    with pytest.raises(ValueError, match="U must be"):
        InformationForm.from_low_rank(np.zeros(9), U, np.ones(3), np.ones(9))
    with pytest.raises(ValueError, match="ggn_diagonal must have shape"):
        InformationForm.from_low_rank(np.zeros(10), U, np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="tau must be"):
        InformationForm.from_low_rank(np.zeros(10), U, np.ones(3), np.ones(10), tau=0.0)
    net = _mlp(2)
    feats, lik = NetworkFeatures(net, (3,)), Gaussian(np.array([1.5, 0.5]))
    X = rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match="batch_size"):
        jacobian_rows(feats, lik, X, batch_size=0)
    with pytest.raises(ValueError, match="rows must be"):
        linear_layers(feats, np.zeros((5, feats.d)))
    layers = linear_layers(feats, np.asarray(jacobian_rows(feats, lik, X)))
    with pytest.raises(ValueError, match="fraction must lie in"):
        sparse_information_form(layers, feats.d, feats.w, np.ones(feats.d), 0.0, 1.0)
