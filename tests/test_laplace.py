"""Linearised Laplace for Equinox networks: features, GGN, sampler vs exact, save/load."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blm
import blm.laplace
from blm import operators as ops
from blm.evidence.loop import iterate_hyperparameters
from blm.laplace import LaplacePosterior, linearise
from blm.likelihoods import Bernoulli, Categorical, Gaussian
from blm.network import NetworkFeatures
from blm.solvers.exact import ExactPosterior, whiten

# these fits stop EM after one or two steps on purpose (a fixed alpha to compare at,
# a round trip, bad input): its "not converged" warning is expected
EM_STOPPED_EARLY = pytest.mark.filterwarnings("ignore:MacKay EM has not converged")

# the seed papers' centre (the linear model's own mean θ̄): the tests that check θ̄, or the
# linear model's MacKay fixed point, against their oracles name it (the default is "map")
LINEAR = blm.MacKay(centre="linear")


def small_mlp(out: int = 3, seed: int = 0) -> eqx.nn.MLP:
    """4 → 40 → 40 → out: d = 1 963 parameters for out = 3."""
    return eqx.nn.MLP(4, out, 40, 2, activation=jnp.tanh, key=jax.random.PRNGKey(seed))


def inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, 4)))


def test_features_equal_the_explicit_jacobian():
    net = small_mlp()
    X = jnp.asarray(inputs(7))
    feats = NetworkFeatures(net, (4,))
    assert feats.d == 1963 and feats.m == 3
    # the oracle: jacrev of the network as a function of its parameter pytree, flattened
    params, static = eqx.partition(net, eqx.is_inexact_array)
    tree = jax.jacrev(lambda p: jax.vmap(eqx.combine(p, static))(X))(params)
    jac = jnp.concatenate(
        [leaf.reshape(7, 3, -1) for leaf in jax.tree_util.tree_leaves(tree)], axis=-1
    )
    np.testing.assert_allclose(feats.dense(X), jac, atol=1e-12)
    np.testing.assert_allclose(feats.offset(X), jax.vmap(net)(X), atol=1e-12)
    z = jax.random.normal(jax.random.PRNGKey(2), (2, feats.d))
    v = jax.random.normal(jax.random.PRNGKey(3), (2, 7, 3))
    f0, jvp, vjp = feats.linearize(X)
    np.testing.assert_allclose(jax.vmap(jvp)(z), jnp.einsum("bmd,kd->kbm", jac, z), atol=1e-12)
    np.testing.assert_allclose(jax.vmap(vjp)(v), jnp.einsum("bmd,kbm->kd", jac, v), atol=1e-12)
    np.testing.assert_allclose(feats.jvp(X, z[0]), jvp(z[0]), atol=1e-12)
    np.testing.assert_allclose(feats.vjp(X, v[0]), vjp(v[0]), atol=1e-12)
    # the flat vector is the leaves in order, and one group per leaf
    leaves = jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_inexact_array))
    np.testing.assert_array_equal(feats.w, jnp.concatenate([jnp.ravel(x) for x in leaves]))
    assert len(feats.leaf_names) == len(leaves) == 6
    assert feats.group_names == (".layers[0]", ".layers[1]", ".layers[2]")
    np.testing.assert_array_equal(
        np.bincount(feats.groups()), [4 * 40 + 40, 40 * 40 + 40, 40 * 3 + 3]
    )
    np.testing.assert_array_equal(feats.model(feats.w)(X[0]), net(X[0]))


class SmallCNN(eqx.Module):
    """8×8 image → conv 3×3 (4 channels) → batch norm → relu → linear to 3 classes."""

    conv: eqx.nn.Conv2d
    norm: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, key=k1)
        self.norm = eqx.nn.BatchNorm(4, "batch", mode="ema")
        self.head = eqx.nn.Linear(4 * 64, 3, key=k2)

    def __call__(self, x, state):
        h, state = self.norm(self.conv(x.reshape(1, 8, 8)), state)
        return self.head(jax.nn.relu(h).ravel()), state


def _trained_cnn():
    """A CNN with batch statistics in its state (Equinox's stateful layers): a few batch-
    mode passes move the running statistics off their initial values, then inference."""
    model, state = eqx.nn.make_with_state(SmallCNN)(jax.random.PRNGKey(0))
    X = jax.random.normal(jax.random.PRNGKey(1), (32, 64)) * 2.0 + 0.5
    for _ in range(3):
        _, state = jax.vmap(model, (0, None), (0, None), axis_name="batch")(X, state)
    return eqx.nn.inference_mode(model), state


@EM_STOPPED_EARLY
def test_a_cnn_with_batch_norm_state_and_a_frozen_leaf(tmp_path):
    """Any Equinox architecture: a convolutional network whose batch norm keeps running
    statistics in an ``eqx.nn.State`` (passed through ``apply``) and whose conv bias is
    frozen by ``filter_spec``. Its features are the explicit Jacobian with respect to the
    selected leaves only (the frozen bias and the state held fixed), one prior group per
    layer, and the posterior fits, predicts and round-trips through a file."""
    model, state = _trained_cnn()
    spec = eqx.tree_at(
        lambda m: m.conv.bias, jax.tree_util.tree_map(eqx.is_inexact_array, model), False
    )

    def apply(m, x):
        return m(x, state)[0]

    X = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (20, 64)))
    y = np.arange(20) % 3
    lm = linearise(model, (X, y), Categorical(3), filter_spec=spec, apply=apply)
    feats = lm.features
    assert feats.d == 4 * 9 + 2 * 4 + 256 * 3 + 3  # conv weight, norm scale and shift, head
    assert feats.group_names == (".conv", ".norm", ".head")
    params, static = eqx.partition(model, spec)
    tree = jax.jacrev(lambda p: jax.vmap(lambda x: apply(eqx.combine(p, static), x))(X))(params)
    jac = jnp.concatenate(
        [leaf.reshape(20, 3, -1) for leaf in jax.tree_util.tree_leaves(tree)], axis=-1
    )
    np.testing.assert_allclose(feats.dense(jnp.asarray(X)), jac, atol=1e-12)
    np.testing.assert_allclose(lm.offsets, jax.vmap(lambda x: apply(model, x))(X), atol=1e-12)
    initial = eqx.nn.make_with_state(SmallCNN)(jax.random.PRNGKey(0))[1]
    at_initial = jax.vmap(lambda x: model(x, initial)[0])(X)
    assert not np.allclose(at_initial, lm.offsets, atol=1e-3)  # the trained state matters
    post = lm.fit(n_samples=4, em_steps=1, solver=blm.SGD(n_steps=50))
    probs = post.predict_proba(X[:5])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-10)
    post.save(tmp_path / "cnn.h5")
    back = LaplacePosterior.load(tmp_path / "cnn.h5", model, filter_spec=spec, apply=apply)
    np.testing.assert_array_equal(back.predict_proba(X[:5]), probs)


@pytest.mark.parametrize("lik", [Categorical(3), Bernoulli()])
def test_softmax_factor_gives_the_ggn_exactly(lik):
    net = small_mlp(lik.m)
    X = jnp.asarray(inputs(9))
    y = np.arange(9) % (3 if lik.m == 3 else 2)
    lm = linearise(net, (X, y), lik)
    jac = jax.jacrev(lambda w: lm.features.forward(w, X))(lm.features.w)  # (b, m, d)
    f0 = lm.features.offset(X)
    p = jax.nn.softmax(f0) if lik.m == 3 else jax.nn.sigmoid(f0)
    if lik.m == 3:
        B = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p)
    else:
        B = (p * (1 - p))[:, :, None]
    ggn = jnp.einsum("bkd,bkl,ble->de", jac, B, jac)
    L = lik.sqrt_precision(f0)
    np.testing.assert_allclose(L @ jnp.swapaxes(L, 1, 2), B, atol=1e-14)
    Psi, _ = whiten(jac, lm.dataset.y, lik, f0)
    np.testing.assert_allclose(Psi.T @ Psi, ggn, atol=1e-12)
    basis = jnp.eye(lm.features.d)[:50]
    np.testing.assert_allclose(
        ops.normal_matvec(lm.features, lik, lm.dataset, basis, 4), ggn[:50], atol=1e-12
    )
    np.testing.assert_allclose(
        ops.normal_diagonal(lm.features, lik, lm.dataset, 4), jnp.diag(ggn), atol=1e-12
    )
    # pseudo-targets: B(Ỹ − Jw̄) = y − p, so ΦᵀBỸ = GGN w̄ + Φᵀ(y − p)
    onehot = lik.encode_targets(y)
    grad = onehot - p
    u = lm.dataset.y - jnp.einsum("bkd,d->bk", jac, lm.features.w)
    np.testing.assert_allclose(jnp.einsum("bkl,bl->bk", B, u), grad, atol=1e-10)


def test_gaussian_pseudo_targets_make_the_linear_model_exact():
    net = small_mlp(1)
    X, y = inputs(20), np.sin(inputs(20)[:, 0])
    lm = linearise(net, (X, y), Gaussian(4.0))
    f0 = lm.features.offset(jnp.asarray(X))
    Jw = lm.features.jvp(jnp.asarray(X), lm.features.w)
    np.testing.assert_allclose(lm.dataset.y, y[:, None] - f0 + Jw, atol=1e-12)


def _regression_problem():
    net = small_mlp(1)
    X = inputs(60)
    y = np.sin(2 * X[:, 0]) + 0.1 * np.asarray(jax.random.normal(jax.random.PRNGKey(5), (60,)))
    return net, X, y


def test_sgd_predictive_variance_matches_the_exact_dual_form():
    """The sgd posterior (fit's defaults, 3 000 steps of 30 rows) at a given α = 2, β = 25
    (``em_steps=0``: one solve, no EM) against the dual-form oracle at the same α, β."""
    net, X, y = _regression_problem()
    lm = linearise(net, (X, y), Gaussian(25.0))
    post = lm.fit(
        n_samples=256,
        key=3,
        em_steps=0,
        solver=blm.SGD(n_steps=3000, batch_size=30),
        hyper=LINEAR,
        start=blm.Hyperparameters(alpha=2.0, beta=25.0),
    )
    assert post.alpha.tolist() == [2.0] and post.beta.tolist() == [25.0]
    assert post.trajectory.alpha == []
    jac = lm.features.dense(jnp.asarray(X))
    Psi, yt = whiten(jac, lm.dataset.y, Gaussian(25.0))
    exact = ExactPosterior.fit(Psi, yt, lm.prior(2.0), "dual")
    assert exact.form == "dual" and Psi.shape[0] < lm.features.d
    Xt = inputs(40, seed=9) * 1.5
    rows = lm.features.dense(jnp.asarray(Xt))[:, 0]
    v_exact = np.asarray(exact.predictive_variance(rows))
    _, var = post.predict(Xt)
    v_sgd = var[:, 0] - 1.0 / post.beta[0]
    # k = 256: each point's estimate has relative sd √(2/256) ≈ 9 %; their mean ≈ 1–2 %
    ratio = v_sgd / v_exact
    assert abs(np.mean(ratio) - 1) < 0.1
    assert np.median(np.abs(ratio - 1)) < 0.15
    np.testing.assert_allclose(post.mean, exact.mean, rtol=0, atol=0.05 * np.abs(exact.mean).max())


@EM_STOPPED_EARLY
def test_cg_solves_the_linearised_model_like_the_exact_posterior():
    """solver="cg": the mean is the exact posterior mean at the fitted α, β (solved to
    1e-10), the k = 256 samples give its predictive variances (relative sd √(2/k) ≈ 9 %
    per point), and the sample-based EM step lands where the exact one does (γ̂ relative
    sd √(2/(kγ)) ≈ 2 % at γ ≈ 15.5)."""
    net, X, y = _regression_problem()
    lm = linearise(net, (X, y), Gaussian(1.0))
    start = {"start": blm.Hyperparameters(alpha=1.0, beta=4.0), "em_steps": 1, "hyper": LINEAR}
    post = lm.fit(n_samples=256, key=0, solver=blm.CG(tol=1e-10), **start)
    exact_step = lm.fit(n_samples=1, solver="exact", **start)
    np.testing.assert_allclose(post.alpha, exact_step.alpha, rtol=0.1)
    np.testing.assert_allclose(post.beta, exact_step.beta, rtol=0.05)
    jac = lm.features.dense(jnp.asarray(X))
    Psi, yt = whiten(jac, lm.dataset.y, Gaussian(post.beta))
    exact = ExactPosterior.fit(Psi, yt, lm.prior(float(post.alpha[0])), "dual")
    np.testing.assert_allclose(post.mean, exact.mean, rtol=1e-7, atol=1e-9)
    Xt = inputs(40, seed=9) * 1.5
    v_exact = np.asarray(exact.predictive_variance(lm.features.dense(jnp.asarray(Xt))[:, 0]))
    ratio = (post.predict(Xt)[1][:, 0] - 1 / post.beta[0]) / v_exact
    assert abs(np.mean(ratio) - 1) < 0.1 and np.median(np.abs(ratio - 1)) < 0.15
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_steps'"):
        lm.fit(solver=blm.CG(n_steps=10))
    jacobi = lm.fit(n_samples=4, key=0, solver=blm.CG(preconditioner="jacobi"), **start)
    coarse = lm.fit(n_samples=4, key=0, solver="cg", **start)  # the same solves, to 1e-4
    np.testing.assert_allclose(jacobi.mean, coarse.mean, atol=1e-3 * np.abs(coarse.mean).max())
    with pytest.warns(UserWarning, match=r"final cg solve stopped .* blm.CG\(max_iter=...\)"):
        lm.fit(n_samples=4, key=0, solver=blm.CG(max_iter=5), **start)


def test_em_steps_zero_is_the_posterior_at_the_given_hyperparameters():
    """``em_steps=0``: no EM step; exact and cg both return the posterior at α, β as
    given (per layer here), the dense oracle's mean, with no convergence warning."""
    net, X, y = _regression_problem()
    lm = linearise(net, (X, y), Gaussian(1.0))
    Psi, yt = whiten(lm.features.dense(jnp.asarray(X)), lm.dataset.y, Gaussian(4.0))
    oracle = ExactPosterior.fit(Psi, yt, lm.prior(3.0, per_layer=True), "dual")
    given = {
        "start": blm.Hyperparameters(alpha=3.0, beta=4.0, per_layer=True),
        "em_steps": 0,
        "hyper": LINEAR,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = lm.fit(n_samples=2, solver="exact", **given)
        cg = lm.fit(n_samples=2, solver=blm.CG(tol=1e-10), **given)
    for post in (exact, cg):
        assert post.alpha.tolist() == [3.0] * 3 and post.beta.tolist() == [4.0]
        assert post.trajectory.alpha == []
        np.testing.assert_allclose(post.mean, oracle.mean, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="em_steps must be >= 0"):
        lm.fit(em_steps=-1)


@EM_STOPPED_EARLY
@pytest.mark.parametrize("solver", ["sgd", "cg"])
def test_final_solve_false_returns_the_last_e_step(solver):
    """``final_solve=False``: α, β are em_steps=2's fitted ones, the mean and samples its
    last E-step's, i.e. em_steps=1's final solve (common random numbers: the same solve
    at the same α from the same start), not those solved at the fitted α. A function of
    the fitted (α, β) decides the same way."""
    net, X, y = _regression_problem()
    lm = linearise(net, (X, y), Gaussian(1.0))
    options = {"n_samples": 4, "solver": blm.SGD(n_steps=200) if solver == "sgd" else solver}
    one, two = lm.fit(em_steps=1, **options), lm.fit(em_steps=2, **options)
    seen = []
    skipped = lm.fit(
        em_steps=2, **options, warm=blm.WarmStart(final_solve=lambda a, b: seen.append((a, b)))
    )
    np.testing.assert_array_equal(skipped.alpha, two.alpha)
    np.testing.assert_array_equal(skipped.beta, two.beta)
    assert len(seen) == 1 and np.array_equal(seen[0][0], two.alpha)
    assert np.array_equal(seen[0][1], two.beta)
    np.testing.assert_allclose(skipped.samples, one.samples, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(skipped.mean, one.mean, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(skipped.samples - two.samples)) > 1e-3 * np.max(np.abs(two.samples))
    assert np.array_equal(
        lm.fit(em_steps=2, **options, warm=blm.WarmStart(final_solve=False)).samples,
        skipped.samples,
    )
    solved = lm.fit(em_steps=2, **options, warm=blm.WarmStart(final_solve=lambda a, b: True))
    np.testing.assert_array_equal(solved.samples, two.samples)
    # a fit without EM steps has no E-step to return: it solves whatever final_solve says
    given = lm.fit(
        em_steps=0,
        **options,
        start=blm.Hyperparameters(alpha=two.alpha[0]),
        warm=blm.WarmStart(final_solve=False),
    )
    assert given.trajectory.alpha == [] and np.all(np.isfinite(given.samples))
    with pytest.raises(TypeError, match="final_solve must be True, False or a function"):
        lm.fit(em_steps=2, **options, warm=blm.WarmStart(final_solve="no"))


def test_em_fits_noise_and_prior_precision_like_exact_mackay():
    """Sample-based EM on the linearised network against exact MacKay on its dense
    Jacobian (dual form), step for step from the same start."""
    from blm.evidence.closed_form import DenseGaussianModel, GammaHyperprior

    net, X, y = _regression_problem()
    lm = linearise(net, (X, y), Gaussian(1.0))
    steps = 3
    post = lm.fit(
        n_samples=32,
        key=0,
        em_steps=steps,
        tol=1e-9,
        solver=blm.SGD(n_steps=2000, batch_size=30),
        hyper=LINEAR,
        start=blm.Hyperparameters(alpha=1.0, beta=4.0),
    )
    model = DenseGaussianModel.from_arrays(lm.features.dense(jnp.asarray(X)), lm.dataset.y, "dual")
    alpha, beta = jnp.ones(1), jnp.asarray([4.0])
    for it in range(steps):
        np.testing.assert_allclose(post.trajectory.alpha[it], alpha, rtol=0.1)
        np.testing.assert_allclose(post.trajectory.beta[it], beta, rtol=0.05)
        alpha, beta, _ = model.mackay_step(lm.prior().with_alpha(alpha), beta, GammaHyperprior())
    np.testing.assert_allclose(post.alpha, alpha, rtol=0.1)
    np.testing.assert_allclose(post.beta, beta, rtol=0.05)
    mean, var = post.predict(X)
    np.testing.assert_allclose(mean[:, 0], jax.vmap(net)(jnp.asarray(X))[:, 0], atol=1e-12)
    assert np.all(var > 1 / post.beta[0])


@EM_STOPPED_EARLY
def test_classification_predictive_and_per_layer_prior():
    net = small_mlp(3)
    X = inputs(90)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    lm = linearise(net, (X, y), Categorical(3))
    post = lm.fit(
        n_samples=16,
        key=1,
        em_steps=2,
        solver=blm.SGD(n_steps=300),
        start=blm.Hyperparameters(per_layer=True),
    )
    assert post.alpha.shape == (3,) and post.beta is None
    p_mc = post.predict_proba(X[:10])
    p_probit = post.predict_proba(X[:10], method="probit")
    np.testing.assert_allclose(p_mc.sum(axis=1), 1, atol=1e-12)
    np.testing.assert_allclose(p_probit.sum(axis=1), 1, atol=1e-12)
    # with no posterior spread both predictives are the network's softmax
    still = LaplacePosterior(
        lm.features,
        lm.likelihood,
        post.alpha,
        post.posterior.__class__(post.mean, 0 * post.samples),
        post.groups,
    )
    p0 = jax.nn.softmax(jax.vmap(net)(jnp.asarray(X[:10])))
    np.testing.assert_allclose(still.predict_proba(X[:10]), p0, atol=1e-12)
    np.testing.assert_allclose(still.predict_proba(X[:10], "probit"), p0, atol=1e-12)
    with pytest.raises(TypeError, match="predict_proba"):
        post.predict(X[:3])


@EM_STOPPED_EARLY
def test_save_load_round_trip_and_wrong_model(tmp_path):
    net = small_mlp(3)
    X = inputs(30)
    y = np.arange(30) % 3
    post = linearise(net, (X, y), Categorical(3)).fit(
        n_samples=4, em_steps=1, solver=blm.SGD(n_steps=50)
    )
    path = tmp_path / "post.h5"
    post.save(path)
    assert not (tmp_path / "post.h5.tmp").exists()
    back = LaplacePosterior.load(path, net)
    np.testing.assert_array_equal(back.predict_proba(X[:5]), post.predict_proba(X[:5]))
    np.testing.assert_array_equal(back.alpha, post.alpha)
    with pytest.raises(ValueError, match="another architecture"):
        LaplacePosterior.load(path, eqx.nn.MLP(4, 3, 20, 2, key=jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match="other weights"):
        LaplacePosterior.load(path, small_mlp(3, seed=7))
    with pytest.raises(FileNotFoundError, match="path"):
        LaplacePosterior.load(tmp_path / "missing.h5", net)


def test_memory_check_fails_at_once_naming_the_argument():
    net = small_mlp(3)
    lm = linearise(net, (inputs(30), np.arange(30) % 3), Categorical(3), block_size=1)
    est = lm.memory_estimate(16, 1)
    assert est.state == 9 * 17 * lm.features.d * 8 and est.state > est.batch
    with pytest.raises(MemoryError, match="n_samples"):
        lm.fit(n_samples=16, solver=blm.SGD(batch_size=1), memory_limit=est.state // 2)
    big = lm.memory_estimate(1, 30)
    assert big.batch > big.state
    with pytest.raises(MemoryError, match="batch_size"):
        lm.fit(n_samples=1, solver=blm.SGD(batch_size=30), memory_limit=big.batch // 2)


@EM_STOPPED_EARLY
def test_bad_input_is_named(monkeypatch):
    net = small_mlp(3)
    X, y = inputs(10), np.arange(10) % 3
    with pytest.raises(ValueError, match="expects m=2"):
        linearise(net, (X, y % 2), Categorical(2))
    with pytest.raises(ValueError, match="outside the class range"):
        linearise(net, (X, y + 1), Categorical(3))
    with pytest.raises(ValueError, match="X has 0 sample|X is empty|at least one"):
        linearise(net, (X[:0], y[:0]), Categorical(3))
    int_net = eqx.tree_at(lambda m: m.layers[0].bias, net, jnp.zeros(40, jnp.int32))
    with pytest.raises(TypeError, match=r"layers\[0\].bias.*int32"):
        linearise(int_net, (X, y), Categorical(3))
    with pytest.raises(ValueError, match="cannot be applied"):
        linearise(net, (np.ones((10, 5)), y), Categorical(3))
    with pytest.raises(ValueError, match="class labels"):
        linearise(net, (X, y + 0.5), Categorical(3))
    post = linearise(net, (X, y), Categorical(3)).fit(
        n_samples=2, em_steps=1, solver=blm.SGD(n_steps=10)
    )
    with pytest.raises(ValueError, match="rows of shape"):
        post.predict_proba(np.ones((3, 5)))
    # EM running α away: the loop's reason, and what to do about it for a network

    def runaway(*args, **kwargs):
        step = lambda a, b: (1e6 * a, b, {})  # noqa: E731
        return iterate_hyperparameters(step, np.ones(1), np.ones(0), 200, 1e-3)

    monkeypatch.setattr(blm.pipeline, "fit_mackay", runaway)
    with pytest.raises(FloatingPointError, match="prunes that group.*train_with_evidence"):
        linearise(net, (X, y), Categorical(3)).fit(n_samples=2, em_steps=200)

    def collapsing(*args, **kwargs):  # α reaching 0: the loop's reason, no runaway hint
        step = lambda a, b: (0 * a, b, {})  # noqa: E731
        return iterate_hyperparameters(step, np.ones(1), np.ones(0), 200, 1e-3)

    monkeypatch.setattr(blm.pipeline, "fit_mackay", collapsing)
    with pytest.raises(FloatingPointError, match="alpha reaching 0") as caught:
        linearise(net, (X, y), Categorical(3)).fit(n_samples=2, em_steps=200)
    assert "train_with_evidence" not in str(caught.value)


def test_metrics_against_hand_values_and_sklearn():
    from sklearn.metrics import roc_auc_score

    from blm.uncertainty import metrics

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    assert metrics.accuracy(probs, labels) == 0.75
    np.testing.assert_allclose(
        metrics.nll(probs, labels), -np.mean(np.log([0.9, 0.8, 0.4, 0.7])), rtol=1e-12
    )
    np.testing.assert_allclose(
        metrics.brier(probs, labels), np.mean([0.02, 0.08, 0.72, 0.18]), rtol=1e-12
    )
    # 2 bins: confidences 0.9, 0.8, 0.6, 0.7 all in [0.5, 1): |acc − conf| = |0.75 − 0.75|
    assert metrics.ece(probs, labels, n_bins=2) == pytest.approx(0.0, abs=1e-12)
    # 10 bins: {0.6: wrong}, {0.7: right}, {0.8: right}, {0.9: right}
    expected = (0.6 + 0.3 + 0.2 + 0.1) / 4
    assert metrics.ece(probs, labels, n_bins=10) == pytest.approx(expected, rel=1e-12)
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(size=50), rng.normal(0.7, size=40).round(1)
    truth = roc_auc_score(np.r_[np.zeros(50), np.ones(40)], np.r_[s_in, s_out])
    assert metrics.auroc(s_in, s_out) == pytest.approx(truth, rel=1e-12)
    np.testing.assert_allclose(metrics.entropy([[0.5, 0.5]]), [np.log(2)], rtol=1e-12)
    with pytest.raises(ValueError, match="labels must lie"):
        metrics.nll(probs, labels + 1)


@pytest.mark.parametrize("alpha", [2.0, [2.0], [2.0, 0.5, 8.0, 1.0, 0.1]])
def test_train_map_reaches_the_ridge_solution_of_a_linear_network(alpha):
    """For f(w, x) = Wx + b with a Gaussian likelihood (β = 1) the MAP is ridge regression
    on [X, 1] with penalty α on every weight, bias included; with one α per weight
    (weight leaf first, then the bias) the penalty is diag(α)."""
    from blm.training import train_map

    X = inputs(50)
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3
    net = eqx.nn.Linear(4, "scalar", key=jax.random.PRNGKey(0))
    trained = train_map(
        net,
        X,
        y,
        Gaussian(1.0),
        jax.random.PRNGKey(1),
        alpha=alpha,
        n_steps=4000,
        batch_size=50,
        learning_rate=1e-2,
    )
    Z = np.c_[X, np.ones(50)]
    ridge = np.linalg.solve(Z.T @ Z + np.diag(np.broadcast_to(alpha, 5)), Z.T @ y)
    np.testing.assert_allclose(trained.weight[0], ridge[:4], atol=1e-4)
    np.testing.assert_allclose(trained.bias, ridge[4], atol=1e-4)
    with pytest.raises(ValueError, match=r"alpha must be a scalar or one precision per weight"):
        train_map(net, X, y, Gaussian(1.0), jax.random.PRNGKey(1), alpha=[1.0, 2.0], n_steps=1)


def test_diagonal_laplace_fixed_point_and_sample_variance():
    from blm.demos import diagonal_laplace

    net = small_mlp(3)
    lm = linearise(net, (inputs(40), np.arange(40) % 3), Categorical(3))
    post, alpha = diagonal_laplace(lm, 4000, jax.random.PRNGKey(0))
    g = ops.normal_diagonal(lm.features, lm.likelihood, lm.dataset)
    # MacKay for H = diag(g) + αI: α ‖w̄‖² = Σ g/(g + α)
    np.testing.assert_allclose(
        alpha * jnp.sum(lm.features.w**2), jnp.sum(g / (g + alpha)), rtol=1e-8
    )
    np.testing.assert_array_equal(post.mean, lm.features.w)
    var = jnp.mean(post.samples**2, axis=0) * (g + alpha)  # ≈ 1 each; sd √(2/4000) ≈ 2 %
    assert abs(float(jnp.mean(var)) - 1) < 0.01
    assert float(jnp.max(jnp.abs(var - 1))) < 0.12
    # at a given α: no fixed point, the samples' scale is 1/√(g + α)
    fixed, same = diagonal_laplace(lm, 4000, jax.random.PRNGKey(0), alpha=30.0)
    assert same == 30.0
    np.testing.assert_allclose(
        fixed.samples * jnp.sqrt(g + 30.0), post.samples * jnp.sqrt(g + alpha)
    )


def test_mc_and_probit_predictives_follow_their_formulas():
    from blm.uncertainty.predictive import mc_probs, probit_from_variance

    f0 = jnp.asarray([[1.0, -0.5, 0.2], [0.0, 2.0, -1.0]])
    fz = jax.random.normal(jax.random.PRNGKey(0), (5, 2, 3))
    cat = Categorical(3)
    manual = np.mean([np.asarray(jax.nn.softmax(f0 + fz[j])) for j in range(5)], axis=0)
    np.testing.assert_allclose(mc_probs(cat, f0, fz), manual, rtol=1e-12)
    v = np.mean(np.asarray(fz) ** 2, axis=0)
    np.testing.assert_allclose(
        probit_from_variance(cat, f0, v),
        jax.nn.softmax(f0 / np.sqrt(1 + np.pi * v / 8)),
        rtol=1e-12,
    )
    ber = Bernoulli()
    p = probit_from_variance(ber, f0[:, :1], v[:, :1])
    expected = jax.nn.sigmoid(f0[:, :1] / np.sqrt(1 + np.pi * v[:, :1] / 8))
    np.testing.assert_allclose(p[:, 1:], expected, rtol=1e-12)


def test_rotated_digits_and_activation_size():
    from blm.datasets import digits_split, rotate_digits

    Xtr, ytr, Xte, yte = digits_split(0, n_train=1000)
    assert Xtr.shape == (1000, 64) and Xte.shape == (797, 64) and Xtr.max() <= 1.0
    once = rotate_digits(Xte[:5])
    np.testing.assert_allclose(
        once.reshape(5, 8, 8), np.rot90(Xte[:5].reshape(5, 8, 8), axes=(1, 2)), atol=1e-12
    )
    back = rotate_digits(rotate_digits(rotate_digits(once)))
    np.testing.assert_allclose(back, Xte[:5], atol=1e-12)
    # one forward pass of 4 → 40 → 40 → 3 produces at least every layer's outputs and
    # activations (40 + 40 + 40 + 40 + 3) and not many times more
    size = NetworkFeatures(small_mlp(3), (4,)).activation_size()
    assert 163 <= size <= 5 * 163


def test_linearise_streams_an_hdf5_file_like_arrays(tmp_path):
    """The network's linear model built from an HDF5 file (inputs read in blocks):
    the same targets, offsets and pseudo-targets as from arrays, and sample-based EM on
    it follows exact MacKay on the dense Jacobian, which solver="exact" reproduces from
    the file's blocks."""
    import h5py

    from blm.data import HDF5Dataset, SparseHDF5Dataset
    from blm.evidence.closed_form import DenseGaussianModel, GammaHyperprior

    net, X, y = _regression_problem()
    path = tmp_path / "train.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    streamed = linearise(net, HDF5Dataset(path, block_size=16), Gaussian(1.0), block_size=8)
    in_memory = linearise(net, (X, y), Gaussian(1.0), block_size=8)
    assert isinstance(streamed.dataset, HDF5Dataset) and streamed.dataset.n == 60
    np.testing.assert_array_equal(streamed.targets, in_memory.targets)
    np.testing.assert_allclose(streamed.offsets, in_memory.offsets, atol=1e-12)
    pseudo = np.concatenate([yb for _, yb, _ in streamed.dataset.blocks()])
    np.testing.assert_allclose(pseudo, in_memory.dataset.y, atol=1e-12)

    post = streamed.fit(
        n_samples=32,
        key=0,
        em_steps=1,
        tol=1e-9,
        solver=blm.SGD(n_steps=2000, batch_size=30, block_size=60),
        hyper=LINEAR,
        start=blm.Hyperparameters(alpha=1.0, beta=4.0),
    )
    model = DenseGaussianModel.from_arrays(
        in_memory.features.dense(jnp.asarray(X)), in_memory.dataset.y, "dual"
    )
    alpha, beta, _ = model.mackay_step(in_memory.prior(), jnp.asarray([4.0]), GammaHyperprior())
    np.testing.assert_allclose(post.alpha, alpha, rtol=0.03)
    np.testing.assert_allclose(post.beta, beta, rtol=0.01)
    exact = streamed.fit(
        n_samples=2,
        solver="exact",
        em_steps=1,
        hyper=LINEAR,
        start=blm.Hyperparameters(alpha=1.0, beta=4.0),
    )
    np.testing.assert_allclose(exact.alpha, alpha, rtol=1e-9)  # the file's rows, exactly
    np.testing.assert_allclose(exact.beta, beta, rtol=1e-9)

    labels = tmp_path / "labels.h5"
    with h5py.File(labels, "w") as f:
        f["X"], f["y"] = X, (X[:, 0] > 0).astype(np.int64)
    lm = linearise(small_mlp(2), HDF5Dataset(labels), Categorical(2))
    np.testing.assert_array_equal(lm.targets.argmax(axis=1), X[:, 0] > 0)
    with h5py.File(labels, "a") as f:
        f["y"][0] = 5
    with pytest.raises(ValueError, match="outside the class range"):
        linearise(small_mlp(2), HDF5Dataset(labels), Categorical(2))
    sparse = tmp_path / "sparse.h5"
    with h5py.File(sparse, "w") as f:
        g = f.create_group("X")
        g["data"], g["indices"], g["indptr"] = [1.0], [0], [0, 1]
        g.attrs["shape"] = (1, 4)
        f["y"] = [0.0]
    with pytest.raises(TypeError, match="sparse"):
        linearise(net, SparseHDF5Dataset(sparse), Gaussian(1.0))


def _last_layer_spec(net: eqx.nn.MLP):
    """filter_spec selecting only the last layer's weight and bias (last-layer Laplace)."""
    off = jax.tree_util.tree_map(lambda _: False, net)
    return eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), off, (True, True))


def test_exact_last_layer_laplace_is_bayesian_ridge_on_the_penultimate_features():
    """solver="exact" with a Gaussian likelihood on the last layer alone is Bayesian linear
    regression on the penultimate activations and a column of ones (the bias, under the
    same prior): scikit-learn's BayesianRidge without an intercept gives the same α, β,
    posterior mean and covariance, and predictive variances, from the same start."""
    from sklearn.linear_model import BayesianRidge

    net = eqx.nn.MLP(3, 1, 20, 2, activation=jnp.tanh, key=jax.random.PRNGKey(4))
    X = inputs(80)[:, :3]
    y = (
        np.sin(X[:, 0])
        + 0.5 * X[:, 1]
        + 0.2 * np.asarray(jax.random.normal(jax.random.PRNGKey(6), (80,)))
    )

    def penultimate(x):
        for layer in net.layers[:-1]:
            x = jnp.tanh(layer(x))
        return jnp.append(x, 1.0)

    Z = np.asarray(jax.vmap(penultimate)(jnp.asarray(X)))
    flat = {"alpha_1": 0.0, "alpha_2": 0.0, "lambda_1": 0.0, "lambda_2": 0.0}  # as fit's
    ridge = BayesianRidge(fit_intercept=False, tol=1e-14, max_iter=10_000, **flat).fit(Z, y)
    lm = linearise(net, (X, y), Gaussian(1.0), filter_spec=_last_layer_spec(net))
    assert lm.features.d == 21
    post = lm.fit(
        n_samples=8,
        solver="exact",
        em_steps=500,
        tol=1e-12,
        hyper=LINEAR,
        start=blm.Hyperparameters(alpha=1.0, beta=1 / np.var(y)),
    )
    np.testing.assert_allclose(post.alpha, [ridge.lambda_], rtol=1e-7)
    np.testing.assert_allclose(post.beta, [ridge.alpha_], rtol=1e-7)
    np.testing.assert_allclose(post.mean, ridge.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(post.exact.covariance(), ridge.sigma_, rtol=1e-6, atol=1e-12)
    Xt = inputs(15, seed=11)[:, :3] * 2
    mean, var = post.predict(Xt)
    ref_mean, ref_std = ridge.predict(np.asarray(jax.vmap(penultimate)(jnp.asarray(Xt))), True)
    # f(w̄, x) is the network's output; the ridge mean is the linear model's θ̄ (not w̄)
    np.testing.assert_allclose(mean[:, 0], jax.vmap(net)(jnp.asarray(Xt))[:, 0], atol=1e-12)
    np.testing.assert_allclose(var[:, 0], ref_std**2, rtol=1e-7)


def _exact_mackay_oracle(J, Bmat, Yp, w, centre, alpha=1.0, steps=2000):
    """MacKay's fixed point α = γ/‖c‖² (flat hyperprior, as ``fit``'s) on the dense GGN
    G = Σ_i J_iᵀB_iJ_i, formed in NumPy: θ̄ = H⁻¹Σ_i J_iᵀB_iỸ_i, γ = Σ s/(s + α), c = θ̄
    or w̄. Returns α, H⁻¹ at it and the GGN's eigenvalues."""
    G = np.einsum("nkd,nkl,nle->de", J, Bmat, J)
    rhs = np.einsum("nkd,nkl,nl->d", J, Bmat, Yp)
    S, V = np.linalg.eigh(G)
    S = np.maximum(S, 0.0)
    for _ in range(steps):
        mean = V @ ((V.T @ rhs) / (S + alpha))
        c = mean if centre == "linear" else w
        new = np.sum(S / (S + alpha)) / (c @ c)
        if abs(new - alpha) < 1e-13 * alpha:
            break
        alpha = new
    return alpha, (V / (S + alpha)) @ V.T, S


@pytest.mark.parametrize(
    "lik, centre", [(Categorical(3), "linear"), (Categorical(3), "map"), (Bernoulli(), "map")]
)
def test_exact_classification_fit_is_mackays_fixed_point_on_the_dense_ggn(lik, centre):
    """solver="exact" on a softmax (or sigmoid) network: α is the exact MacKay fixed point
    of the GGN formed by jacrev and the likelihood's Hessian in NumPy (both centres), the
    probit predictive uses the exact logit variances J(x)H⁻¹J(x)ᵀ, and the Laplace log
    evidence log p(y | w̄) − ½α‖w̄‖² + ½d log α − ½ log det(G + αI) is the NumPy value,
    stationary in α at the centre="map" fixed point (a factor 2 on any term moves the
    maximum)."""
    net = small_mlp(lik.m)
    X = inputs(30)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    y = y if lik.m == 3 else np.minimum(y, 1)
    lm = linearise(net, (X, y), lik)
    post = lm.fit(
        n_samples=4, solver="exact", em_steps=300, tol=1e-12, hyper=blm.MacKay(centre=centre)
    )
    J = np.asarray(jax.jacrev(lambda w: lm.features.forward(w, jnp.asarray(X)))(lm.features.w))
    f = np.asarray(jax.vmap(net)(jnp.asarray(X)))
    if lik.m == 3:
        p = np.asarray(jax.nn.softmax(f))
        Bmat = np.stack([np.diag(q) - np.outer(q, q) for q in p])
        log_lik = np.sum(np.log(p[np.arange(len(y)), y]))
    else:
        q = 1 / (1 + np.exp(-f))  # (n, 1)
        Bmat = (q * (1 - q))[:, :, None]
        log_lik = np.sum(np.log(np.where(y[:, None] == 1, q, 1 - q)))
    w = np.asarray(lm.features.w)
    alpha, cov, S = _exact_mackay_oracle(J, Bmat, np.asarray(lm.dataset.y), w, centre)
    assert post.exact.form == "dual"  # d = 1 963 (1 881) > n·m = 90 (30)
    np.testing.assert_allclose(post.alpha, [alpha], rtol=1e-7)

    def evidence(a):
        return log_lik - 0.5 * a * w @ w + 0.5 * len(w) * np.log(a) - 0.5 * np.sum(np.log(S + a))

    # the evidence the fit reports is the one it maximised: Laplace's around w̄ ("map"),
    # the linear model's of the whitened pseudo-targets ("linear"); Laplace's either way
    # from lm.log_evidence
    np.testing.assert_allclose(lm.log_evidence(post), evidence(alpha), rtol=1e-9)
    if centre == "linear":
        Yp = np.asarray(lm.dataset.y)
        rhs = np.einsum("nkd,nkl,nl->d", J, Bmat, Yp)
        G = np.einsum("nkd,nkl,nle->de", J, Bmat, J)
        mean = np.linalg.solve(G + alpha * np.eye(len(w)), rhs)
        yty = np.einsum("nk,nkl,nl->", Yp, Bmat, Yp)
        rows = Yp.shape[0] * (Yp.shape[1] - 1)  # B_i has rank m − 1: the proper directions
        linear = (
            -0.5 * (yty - rhs @ mean)
            + 0.5 * len(w) * np.log(alpha)
            - 0.5 * np.sum(np.log(S + alpha))
            - 0.5 * rows * np.log(2 * np.pi)
        )
        np.testing.assert_allclose(post.log_evidence, linear, rtol=1e-9)
    else:
        np.testing.assert_allclose(post.log_evidence, evidence(alpha), rtol=1e-9)
    if centre == "map":
        slope = (evidence(alpha * 1.001) - evidence(alpha / 1.001)) / (2 * np.log(1.001))
        curvature = evidence(alpha * 1.1) + evidence(alpha / 1.1) - 2 * evidence(alpha)
        assert abs(slope) < 1e-6 * abs(curvature) / np.log(1.1) ** 2 and curvature < 0
    assert post.beta is None and len(post.trajectory.alpha) > 3
    Xt = inputs(6, seed=12)
    Jt = np.asarray(jax.jacrev(lambda w: lm.features.forward(w, jnp.asarray(Xt)))(lm.features.w))
    var = np.einsum("tkd,de,tke->tk", Jt, cov, Jt)
    z = np.asarray(jax.vmap(net)(jnp.asarray(Xt))) / np.sqrt(1 + np.pi / 8 * var)
    sig = 1 / (1 + np.exp(-z))
    expected = jax.nn.softmax(z) if lik.m == 3 else np.hstack([1 - sig, sig])
    np.testing.assert_allclose(post.predict_proba(Xt, "probit"), expected, rtol=1e-8)
    np.testing.assert_allclose(post.output_variance(Xt)[1], var, rtol=1e-8)


@EM_STOPPED_EARLY
def test_fixed_alpha_holds_the_given_layers_and_fits_the_others():
    """fixed_alpha with per_layer: the named layer keeps its α at every step (exact and
    sgd), and the exact fit ends on the per-layer MacKay fixed point of the dense GGN
    with that α held, α_g = (d_g − α_g Tr_g(H⁻¹))/‖w̄_g‖² for the other layers
    (centre="map"), H = G + diag(α per weight), G = Σ_i J_iᵀB_iJ_i formed in NumPy."""
    net = small_mlp(3)
    X = inputs(30)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    lm = linearise(net, (X, y), Categorical(3))
    assert lm.features.group_names == (".layers[0]", ".layers[1]", ".layers[2]")
    fixed = {".layers[1]": 2.0}
    post = lm.fit(
        solver="exact",
        em_steps=1000,
        tol=1e-12,
        hyper=blm.MacKay(centre="map"),
        start=blm.Hyperparameters(per_layer=True, fixed_alpha=fixed),
    )
    assert post.alpha[1] == 2.0 and np.all(np.asarray(post.trajectory.alpha)[:, 1] == 2.0)
    J = np.asarray(jax.jacrev(lambda w: lm.features.forward(w, jnp.asarray(X)))(lm.features.w))
    p = np.asarray(jax.nn.softmax(jax.vmap(net)(jnp.asarray(X))))
    B = np.stack([np.diag(q) - np.outer(q, q) for q in p])
    G = np.einsum("nkd,nkl,nle->de", J, B, J)
    groups, w = np.asarray(post.groups), np.asarray(lm.features.w)
    H_inv = np.linalg.inv(G + np.diag(post.alpha[groups]))
    for g in (0, 2):
        in_g = groups == g
        gamma = in_g.sum() - post.alpha[g] * np.trace(H_inv[np.ix_(in_g, in_g)])
        np.testing.assert_allclose(post.alpha[g], gamma / (w[in_g] @ w[in_g]), rtol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # two EM steps: not converged
        sampled = lm.fit(
            n_samples=4,
            em_steps=2,
            solver=blm.SGD(n_steps=200),
            start=blm.Hyperparameters(per_layer=True, fixed_alpha={".layers[2]": 5.0}),
        )
    steps = np.asarray(sampled.trajectory.alpha)
    assert np.all(steps[:, 2] == 5.0) and sampled.alpha[2] == 5.0
    assert np.all(sampled.alpha[:2] != 1.0)  # the others moved from alpha_init
    for bad, error, match in [
        ({".layers[1]": 2.0, "per_layer": False}, ValueError, "needs per_layer=True"),
        ({".layers[9]": 2.0}, ValueError, r"no layer '.layers\[9\]'.*'.layers\[0\]'"),
        ({".layers[1]": 0.0}, ValueError, r"fixed_alpha\['.layers\[1\]'\] must be strictly"),
        ({".layers[1]": np.nan}, ValueError, r"fixed_alpha\['.layers\[1\]'\]"),
    ]:
        per_layer = bad.pop("per_layer", True)
        with pytest.raises(error, match=match):
            lm.fit(
                solver="exact",
                em_steps=0,
                start=blm.Hyperparameters(per_layer=per_layer, fixed_alpha=bad),
            )
    with pytest.raises(TypeError, match="fixed_alpha must map layer names"):
        lm.fit(
            solver="exact", em_steps=0, start=blm.Hyperparameters(per_layer=True, fixed_alpha=[2.0])
        )
    np.testing.assert_array_equal(lm.prior(1.0, True, {".layers[2]": 4.0}).alpha, [1, 1, 4])
    with pytest.raises(ValueError, match="needs per_layer=True"):  # the method itself checks
        lm.prior(1.0, False, {".layers[2]": 4.0})


def test_exact_fit_draws_exact_samples_and_round_trips(tmp_path):
    """The exact posterior's k draws have the exact output variances (k = 4 000: relative
    sd √(2/k) ≈ 2 % per point; a factor 2 in the covariance fails by 100 %), with per-layer
    α and β; saved with its factor, loaded predictions are identical; a sampled (sgd)
    posterior's probit uses its samples' variances."""
    net, X, y = _regression_problem()
    lm = linearise(net, (X, y), Gaussian(1.0))
    k = 4000
    post = lm.fit(
        n_samples=k,
        key=2,
        solver="exact",
        em_steps=100,
        tol=1e-10,
        start=blm.Hyperparameters(per_layer=True),
    )
    assert post.alpha.shape == (3,) and post.samples.shape == (k, lm.features.d)
    Xt = inputs(20, seed=13)
    f0, exact_var = post.output_variance(Xt)
    _, fz = post.outputs(Xt)
    sampled = np.mean(np.asarray(fz) ** 2, axis=0)
    np.testing.assert_allclose(sampled, exact_var, rtol=5 * np.sqrt(2 / k))
    mean, var = post.predict(Xt)
    np.testing.assert_allclose(var, exact_var + 1 / post.beta, rtol=1e-12)
    post.save(tmp_path / "exact.h5")
    back = LaplacePosterior.load(tmp_path / "exact.h5", net)
    assert back.exact.form == post.exact.form and back.log_evidence == post.log_evidence
    np.testing.assert_array_equal(back.predict(Xt)[1], var)
    np.testing.assert_array_equal(back.samples, post.samples)
    bare = LaplacePosterior(post.features, post.likelihood, post.alpha, post.posterior, post.groups)
    bare.exact = post.exact  # a factor without an evidence (built by hand) saves too
    bare.save(tmp_path / "bare.h5")
    assert LaplacePosterior.load(tmp_path / "bare.h5", net).log_evidence is None

    cls_net = small_mlp(3)
    labels = np.arange(60) % 3
    sampled_post = linearise(cls_net, (X, labels), Categorical(3)).fit(
        n_samples=8, em_steps=1, solver=blm.SGD(n_steps=50)
    )
    assert sampled_post.exact is None
    f0, fz = sampled_post.outputs(X[:5])
    v = jnp.mean(fz**2, axis=0)
    np.testing.assert_allclose(
        sampled_post.predict_proba(X[:5], "probit"),
        jax.nn.softmax(f0 / jnp.sqrt(1 + jnp.pi / 8 * v)),
        rtol=1e-12,
    )


def test_exact_fit_refuses_what_cannot_fit_and_bad_solver():
    net = small_mlp(3)
    lm = linearise(net, (inputs(30), np.arange(30) % 3), Categorical(3))
    with pytest.raises(MemoryError, match="solver='sgd'.*filter_spec"):
        lm.fit(solver="exact", memory_limit=10**6)
    with pytest.raises(ValueError, match="solver"):
        lm.fit(solver="cholesky")


def test_exact_fit_names_a_factor_that_float32_cannot_hold():
    """A singular GGN (eight identical hidden units: rank 2) with α = 10⁻³⁰ in float32: the
    Cholesky factor is not finite, and the fit says so (and how to avoid it) instead of
    returning NaN or blaming the hyperparameter update."""
    with jax.enable_x64(False):
        net = eqx.nn.MLP(2, 1, 8, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
        same = (jnp.ones((8, 2)), jnp.zeros(8))
        net = eqx.tree_at(lambda m: (m.layers[0].weight, m.layers[0].bias), net, same)
        X = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (50, 2)), np.float32)
        lm = linearise(net, (X, np.sin(X[:, 0])), Gaussian(1.0), filter_spec=_last_layer_spec(net))
        assert lm.features.w.dtype == jnp.float32 and lm.features.d == 9
        with pytest.raises(FloatingPointError, match="float32 at alpha=\\[1e-30\\].*x64"):
            lm.fit(solver="exact", em_steps=1, start=blm.Hyperparameters(alpha=1e-30))


def test_gaussian_laplace_evidence_is_stationary_at_the_map_centred_fixed_point():
    """Regression, centre="map", EM to convergence: log_evidence is the NumPy value of
    Σ log N(y_i; f(w̄, x_i), 1/β) − ½α‖w̄‖² + ½d log α − ½ log det(βJᵀJ + αI), and (α, β)
    is its stationary point in both (MacKay's updates around w̄ maximise it)."""
    net, X, y = _regression_problem()
    lm = linearise(net, (X, y), Gaussian(1.0))
    post = lm.fit(
        n_samples=2, solver="exact", em_steps=500, tol=1e-13, hyper=blm.MacKay(centre="map")
    )
    J = np.asarray(lm.features.dense(jnp.asarray(X)))[:, 0, :]
    S = np.maximum(np.linalg.eigvalsh(J.T @ J), 0.0)
    w, r = np.asarray(lm.features.w), y - np.asarray(lm.offsets)[:, 0]
    n, d = len(y), len(w)

    def evidence(log_a, log_b):
        a, b = np.exp(log_a), np.exp(log_b)
        fit = 0.5 * (n * np.log(b) - b * r @ r - n * np.log(2 * np.pi))
        return fit - 0.5 * a * w @ w + 0.5 * d * np.log(a) - 0.5 * np.sum(np.log(b * S + a))

    at = np.log([post.alpha[0], post.beta[0]])
    np.testing.assert_allclose(post.log_evidence, evidence(*at), rtol=1e-9)
    h = 1e-4
    for e in np.eye(2):
        slope = (evidence(*(at + h * e)) - evidence(*(at - h * e))) / (2 * h)
        curvature = (evidence(*(at + h * e)) + evidence(*(at - h * e)) - 2 * evidence(*at)) / h**2
        assert curvature < 0 and abs(slope) < 1e-5 * abs(curvature)


def test_exact_last_layer_keeps_only_the_gram_matrix_for_many_inputs():
    """Where d ≤ n·m the exact fit accumulates ΦᵀΦ block by block instead of holding the
    n·m·d rows: for 4 000 inputs and the last layer's 21 weights its memory check asks
    for 5d² + 3·block·d numbers, not 5(n·d + d²) — a limit between the two passes, one
    below the first refuses — and the result is the all-rows fit's (the same α, β)."""
    from blm.evidence.closed_form import DenseGaussianModel
    from blm.memory import estimate_exact_memory

    net = eqx.nn.MLP(3, 1, 20, 2, activation=jnp.tanh, key=jax.random.PRNGKey(4))
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(8), (4000, 3)))
    y = np.sin(X[:, 0]) + 0.1 * np.asarray(jax.random.normal(jax.random.PRNGKey(9), (4000,)))
    lm = linearise(net, (X, y), Gaussian(1.0), filter_spec=_last_layer_spec(net))
    streamed = estimate_exact_memory(4000, 1, 21, 8, lm.block_size)
    all_rows = estimate_exact_memory(4000, 1, 21, 8)
    assert 20 * streamed < all_rows
    plain = blm.MacKay(accelerate=False, centre="linear")  # replayed step by step below
    post = lm.fit(n_samples=2, solver="exact", em_steps=50, memory_limit=2 * streamed, hyper=plain)
    assert post.exact.form == "primal" and post.exact.psi is None
    with pytest.raises(MemoryError, match="solver='sgd'"):
        lm.fit(n_samples=2, solver="exact", memory_limit=streamed // 2)
    J = lm.features.dense(jnp.asarray(X))
    model = DenseGaussianModel.from_arrays(J, lm.dataset.y)
    alpha, beta = jnp.ones(1), jnp.asarray(post.trajectory.beta[0])
    for _ in range(len(post.trajectory.alpha)):
        alpha, beta, _ = model.mackay_step(lm.prior().with_alpha(alpha), beta)
    np.testing.assert_allclose(post.alpha, alpha, rtol=1e-9)
    np.testing.assert_allclose(post.beta, beta, rtol=1e-9)


def test_laplace_log_evidence_by_slq_matches_the_exact_one():
    """``LinearisedModel.log_evidence`` for a sampled posterior (no factor): with the basis
    probes √d e_i at full depth the SLQ log det is the exact trace (last layer, d = 41:
    equal to the exact fit's ``log_evidence`` to rounding); with 32 Rademacher probes on
    the whole network (d = 1 963) within 4 sd of the exact value, sd = ½ √(2(‖log H‖_F² −
    Σ(log H)_ii²)/32) computed from the dense GGN (a factor 2 on log det moves it 4 000 sd)."""
    from blm.evidence.lanczos import basis_probes

    def without_factor(post):
        return LaplacePosterior(
            post.features, post.likelihood, post.alpha, post.posterior, post.groups
        )

    net, X, y = _regression_problem()
    lm = linearise(net, (X, y), Gaussian(1.0), filter_spec=_last_layer_spec(net))
    post = lm.fit(n_samples=2, solver="exact", em_steps=50)
    d = lm.features.d
    assert d == 41 and lm.log_evidence(post) == post.log_evidence
    slq = lm.log_evidence(without_factor(post), probes=basis_probes(d), depth=d)
    np.testing.assert_allclose(slq, post.log_evidence, rtol=1e-10)

    net = small_mlp(3)
    X = inputs(30)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    lm = linearise(net, (X, y), Categorical(3))
    post = lm.fit(n_samples=2, solver="exact", em_steps=50, hyper=LINEAR)
    slq = lm.log_evidence(without_factor(post), key=3, n_probes=32, depth=40)
    J = np.asarray(jax.jacrev(lambda w: lm.features.forward(w, jnp.asarray(X)))(lm.features.w))
    p = np.asarray(jax.nn.softmax(jax.vmap(net)(jnp.asarray(X))))
    G = np.einsum("nkd,nkl,nle->de", J, np.stack([np.diag(q) - np.outer(q, q) for q in p]), J)
    s, V = np.linalg.eigh(G + post.alpha[0] * np.eye(len(G)))
    log_h = (V * np.log(s)) @ V.T
    sd = 0.5 * np.sqrt(2 * (np.sum(log_h**2) - np.sum(np.diag(log_h) ** 2)) / 32)
    assert abs(slq - lm.log_evidence(post)) < 4 * sd  # Laplace's, from the factor
    assert abs(0.5 * np.sum(np.log(s))) > 1000 * sd  # a wrong factor on log det is caught
    with pytest.raises(ValueError, match="depth"):
        lm.log_evidence(without_factor(post), depth=lm.features.d + 1)
    with pytest.raises(ValueError, match="probes"):
        lm.log_evidence(without_factor(post), probes=np.ones((2, 5)))
