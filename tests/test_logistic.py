"""BayesianLogisticRegression: oracles against scikit-learn's LogisticRegression and dense
Hessian, Laplace evidence and probit formulas (float64), sampled solvers against exact,
inputs (sparse, HDF5, weights, float32) and bad input."""

import warnings

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

import blm
from blm.logistic import BayesianLogisticRegression


def _binary(rng, n=300, p=4):
    X = rng.normal(size=(n, p))
    f = X @ np.linspace(1.0, -1.0, p) + 0.3
    return X, (f + rng.logistic(size=n) > 0).astype(int)


def _three_class(rng, n=400, p=4):
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(3, p))
    logits = X @ W.T + rng.gumbel(size=(n, 3))
    return X, np.asarray(["a", "b", "c"])[np.argmax(logits, axis=1)]


def _theta(clf):
    """[vec(coef_), intercept_] as the dense formulas take them."""
    return np.concatenate([clf.coef_.ravel(), clf.intercept_])


def _neg_log_posterior(theta, X, y_onehot, alpha, K):
    """−Σ log p(y | θ) + ½ α ‖W‖² (intercept flat), θ = [vec(W) (K, p), b (K)]."""
    p = X.shape[1]
    W, b = theta[: K * p].reshape(K, p), theta[K * p :]
    f = X @ W.T + b
    if K == 1:
        ll = jnp.sum(y_onehot[:, 0] * f[:, 0] - jax.nn.softplus(f[:, 0]))
    else:
        ll = jnp.sum(y_onehot * jax.nn.log_softmax(f, axis=1))
    return -ll + 0.5 * alpha * jnp.sum(W**2)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_binary_map_equals_sklearn(rng, fit_intercept):
    X, y = _binary(rng)
    clf = BayesianLogisticRegression(
        solver="exact", fit_alpha=False, alpha_init=2.0, tol=1e-12, fit_intercept=fit_intercept
    ).fit(X, y)
    sk = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000, fit_intercept=fit_intercept)
    sk.fit(X, y)
    np.testing.assert_allclose(clf.coef_, sk.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(clf.intercept_, sk.intercept_, rtol=1e-6, atol=1e-8)
    assert clf.converged_ and clf.coef_.dtype == np.float64


def test_multinomial_map_equals_sklearn(rng):
    X, y = _three_class(rng)
    clf = BayesianLogisticRegression(solver="exact", fit_alpha=False, alpha_init=0.5, tol=1e-12)
    clf.fit(X, y)
    sk = LogisticRegression(C=2.0, tol=1e-12, max_iter=10_000).fit(X, y)
    assert clf.classes_.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(clf.coef_, sk.coef_, rtol=1e-6, atol=1e-7)
    # a common shift of the intercepts is unidentified: compare them centred
    np.testing.assert_allclose(clf.intercept_, sk.intercept_ - sk.intercept_.mean(), atol=1e-7)
    np.testing.assert_allclose(clf.predict_proba(X[:5]).sum(axis=1), 1.0, rtol=1e-12)
    assert set(clf.predict(X)) <= {"a", "b", "c"}


@pytest.mark.parametrize("problem", ["binary", "multinomial"])
def test_hessian_evidence_and_probit_equal_dense_formulas(rng, problem):
    X, y = (_binary if problem == "binary" else _three_class)(rng)
    alpha = 1.5
    clf = BayesianLogisticRegression(solver="exact", fit_alpha=False, alpha_init=alpha, tol=1e-12)
    clf.fit(X, y)
    K = clf.coef_.shape[0]
    labels = np.searchsorted(clf.classes_, y)
    Y = labels[:, None].astype(float) if K == 1 else np.eye(K)[labels]
    theta = _theta(clf)
    H = np.asarray(jax.hessian(_neg_log_posterior)(jnp.asarray(theta), X, Y, alpha, K))
    # the reduced (sum-zero intercept) coordinates: θ = E r, H_r = Eᵀ H E
    E = np.zeros((theta.size, clf._basis.shape[1] + K * X.shape[1]))
    E[: K * X.shape[1], : K * X.shape[1]] = np.eye(K * X.shape[1])
    E[K * X.shape[1] :, K * X.shape[1] :] = clf._basis
    H_r = E.T @ H @ E
    cov = np.asarray(clf._exact.covariance())
    np.testing.assert_allclose(cov @ H_r, np.eye(H_r.shape[0]), atol=1e-8)
    np.testing.assert_allclose(
        clf.coef_std_.ravel(), np.sqrt(np.diag(cov)[: K * X.shape[1]]), rtol=1e-10
    )
    # Laplace evidence: log p(y | θ̂) − ½α‖W‖² + ½ log det A − ½ log det H_r (flat intercept)
    d_w = K * X.shape[1]
    direct = (
        -float(_neg_log_posterior(jnp.asarray(theta), X, Y, alpha, K))
        + 0.5 * d_w * np.log(alpha)
        - 0.5 * np.linalg.slogdet(H_r)[1]
    )
    assert clf.log_evidence_ == pytest.approx(direct, rel=1e-10)
    # probit: softmax(f / √(1 + π/8 v)), v = diag of J H⁻¹ Jᵀ per logit
    Xt = X[:7]
    J = np.einsum("kl,tp->tklp", np.eye(K), Xt).reshape(7, K, d_w)
    J = np.concatenate([J, np.broadcast_to(clf._basis, (7, K, clf._basis.shape[1]))], axis=2)
    if K > 1:  # the centred logits' variances (softmax ignores a common shift)
        J = J - J.mean(axis=1, keepdims=True)
    v = np.einsum("tkd,de,tke->tk", J, cov, J)
    f = Xt @ clf.coef_.T + clf.intercept_
    g = f / np.sqrt(1 + np.pi / 8 * v)
    if K == 1:
        expected = np.hstack([1 - 1 / (1 + np.exp(-g)), 1 / (1 + np.exp(-g))])
    else:
        expected = np.exp(g - g.max(1, keepdims=True))
        expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(Xt), expected, rtol=1e-9)
    np.testing.assert_allclose(clf.map_logits(Xt), f, rtol=1e-10)
    np.testing.assert_allclose(clf.decision_function(Xt), g[:, 0] if K == 1 else g, rtol=1e-10)


def test_fitted_alpha_maximises_the_laplace_evidence(rng):
    X, y = _binary(rng, n=200, p=6)
    clf = BayesianLogisticRegression(solver="exact", tol=1e-10).fit(X, y)

    def negative(log_alpha):
        fixed = BayesianLogisticRegression(
            solver="exact", fit_alpha=False, alpha_init=float(np.exp(log_alpha)), tol=1e-12
        )
        return -fixed.fit(X, y).log_evidence_

    best = minimize_scalar(negative, bounds=(-6, 6), method="bounded", options={"xatol": 1e-7})
    assert clf.alpha_[0] == pytest.approx(np.exp(best.x), rel=1e-4)
    assert clf.log_evidence_ >= -best.fun - 1e-9
    # a wrong factor of 2 in α costs evidence: the maximum is not flat at this tolerance
    assert negative(np.log(2 * clf.alpha_[0])) > -clf.log_evidence_ + 1e-3


@pytest.mark.parametrize("solver", ["cg", "sgd"])
def test_sampled_fits_agree_with_exact(rng, solver):
    X, y = _binary(rng, n=600, p=5)
    exact = BayesianLogisticRegression(solver="exact", tol=1e-8).fit(X, y)
    config = blm.CG(tol=1e-8) if solver == "cg" else blm.SGD(n_steps=4000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sgd's noisy Newton steps may stop at the cap
        sampled = BayesianLogisticRegression(
            solver=config, n_samples=64, random_state=0, tol=1e-4, max_iter=60
        ).fit(X, y)
    assert sampled.alpha_[0] == pytest.approx(exact.alpha_[0], rel=0.05)
    np.testing.assert_allclose(sampled.coef_, exact.coef_, rtol=0.02, atol=0.02)
    np.testing.assert_allclose(sampled.coef_std_, exact.coef_std_, rtol=0.25)
    assert sampled.samples_.shape == (64, 1, 5)


def test_cg_marginal_sds_within_10_percent_with_many_samples(rng):
    X, y = _binary(rng, n=600, p=5)
    exact = BayesianLogisticRegression(solver="exact", tol=1e-8).fit(X, y)
    cg = BayesianLogisticRegression(solver=blm.CG(tol=1e-8), n_samples=512, random_state=1)
    cg.fit(X, y)
    np.testing.assert_allclose(cg.coef_std_, exact.coef_std_, rtol=0.1)
    assert not np.allclose(cg.coef_std_, 2 * exact.coef_std_, rtol=0.1)


def test_sparse_hdf5_and_weights_match_dense(rng, tmp_path):
    X, y = _three_class(rng, n=200)
    X[X < 0.3] = 0.0
    dense = BayesianLogisticRegression(solver="exact").fit(X, y)
    sparse = BayesianLogisticRegression(solver="exact").fit(scipy.sparse.csr_array(X), y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sparse.alpha_, dense.alpha_, rtol=1e-8)
    codes = np.searchsorted(dense.classes_, y)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, codes
        csr = scipy.sparse.csr_array(X)
        g = f.create_group("S")
        g["data"], g["indices"], g["indptr"] = csr.data, csr.indices, csr.indptr
        g.attrs["shape"] = csr.shape
    for name in ("X", "S"):
        data = blm.data.open_hdf5(path, x=name, block_size=64)
        streamed = BayesianLogisticRegression(solver="exact").fit(data)
        np.testing.assert_allclose(streamed.coef_, dense.coef_, rtol=1e-8, atol=1e-10)
    # frequency weights: a weight of 2 is the row twice
    w = rng.integers(0, 3, size=len(y))
    weighted = BayesianLogisticRegression(solver="exact").fit(X, y, sample_weight=w)
    repeated = BayesianLogisticRegression(solver="exact").fit(np.repeat(X, w, 0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(weighted.log_evidence_, repeated.log_evidence_, rtol=1e-10)
    # streamed with weights: the rows scaled by √w, the labels not (they once were)
    for name in ("X", "S"):
        streamed = BayesianLogisticRegression(solver="exact")
        streamed.fit(blm.data.open_hdf5(path, x=name, block_size=64), sample_weight=w)
        np.testing.assert_allclose(streamed.coef_, weighted.coef_, rtol=1e-8, atol=1e-10)
    sampled = {}  # and by cg (the streamed pseudo-targets), CSR file against in memory
    for source in (blm.data.open_hdf5(path, x="S", block_size=64), X):
        clf = BayesianLogisticRegression(solver="cg", random_state=0, n_samples=4)
        sampled[type(source).__name__] = clf.fit(source, None if source is not X else y, w)
    a, b = sampled.values()
    np.testing.assert_allclose(a.alpha_, b.alpha_, rtol=1e-5)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-5, atol=1e-7)


def test_float32_in_float32_out(rng):
    X, y = _binary(rng)
    clf = BayesianLogisticRegression(solver="exact").fit(X.astype(np.float32), y)
    assert clf.coef_.dtype == np.float32 and clf.coef_std_.dtype == np.float32
    assert clf.predict_proba(X[:3].astype(np.float32)).dtype == np.float32
    ref = BayesianLogisticRegression(solver="exact").fit(X, y)
    np.testing.assert_allclose(clf.coef_, ref.coef_, rtol=1e-3, atol=1e-4)


def test_bad_input_names_the_argument(rng):
    X, y = _binary(rng, n=50)
    with pytest.raises(ValueError, match="2 classes"):
        BayesianLogisticRegression().fit(X, np.zeros(50))
    with pytest.raises(ValueError, match="continuous"):
        BayesianLogisticRegression().fit(X, X[:, 0])
    with pytest.raises(ValueError, match="positive sample_weight"):
        BayesianLogisticRegression().fit(X, y, sample_weight=(y == 1).astype(float))
    with pytest.raises(ValueError, match="X"):
        BayesianLogisticRegression().fit(np.where(X > 1, np.nan, X), y)
    with pytest.raises(ValueError, match="X"):
        BayesianLogisticRegression().fit(X[:10], y)
    with pytest.raises(ValueError, match="tol"):
        BayesianLogisticRegression(tol=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="max_iter"):
        BayesianLogisticRegression(max_iter=0).fit(X, y)
    clf = BayesianLogisticRegression(solver="exact").fit(X, y)
    with pytest.raises(ValueError, match="classes_"):
        clf.score(X, np.full(50, 7))
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :2])
    with pytest.raises(ValueError, match="method"):
        clf.predict_proba(X, method="laplace")


def test_separable_data_warn_that_alpha_runs_to_zero():
    X = np.linspace(-1, 1, 40)[:, None]
    y = (X[:, 0] > 0).astype(int)
    with pytest.warns(blm.ConvergenceWarning, match="separable"):
        clf = BayesianLogisticRegression(solver="exact", max_iter=200).fit(X, y)
    assert np.all(np.isfinite(clf.coef_)) and not clf.converged_
    # 15 points in 3-D split by a coordinate: α falls at a steady rate with the evidence
    # ever rising, stopped as such after 14 steps (25 to reach SEPARABLE_ALPHA; 100+
    # on scikit-learn's sample-weight checks)
    X3 = np.random.RandomState(42).rand(15, 3)
    y3 = (X3[:, 0] > 0.5).astype(int)
    with pytest.warns(blm.ConvergenceWarning, match="separable"):
        clf = BayesianLogisticRegression(solver="exact", max_iter=300).fit(X3, y3)
    assert clf.n_iter_ < 20 and np.all(clf.predict(X3) == y3)


def test_capped_fit_warns_and_says_not_converged(rng):
    X, y = _binary(rng)
    with pytest.warns(blm.ConvergenceWarning, match="max_iter"):
        clf = BayesianLogisticRegression(solver="exact", max_iter=2).fit(X, y)
    assert not clf.converged_
    assert "NOT converged" in clf.summary()


def test_summary_and_cross_validation(rng):
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _binary(rng)
    clf = BayesianLogisticRegression(solver="exact").fit(X, y)
    text = clf.summary()
    assert "odds" in text and "log evidence" in text and "converged" in text
    scores = cross_val_score(make_pipeline(StandardScaler(), BayesianLogisticRegression()), X, y)
    reference = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression()), X, y)
    assert scores.mean() >= reference.mean() - 0.02


def _sklearn_checks():
    from sklearn.utils.estimator_checks import parametrize_with_checks

    return parametrize_with_checks([BayesianLogisticRegression()])


@pytest.mark.filterwarnings("ignore")
@_sklearn_checks()
def test_scikit_learn_estimator_checks(estimator, check):
    """scikit-learn's conformance suite for classifiers (labels of any type, one class,
    regression targets refused, sample weights as repeated rows, sparse input, …)."""
    check(estimator)


@pytest.mark.parametrize("sparse", [False, True])
def test_glm_features_equal_their_dense_form(rng, sparse):
    """GLMFeatures (weights in the rows, sum-zero intercept of 3 logits): jvp, vjp and
    sq_rows against the dense (b, m, d) map, and the offset is the unscaled predictor."""
    from blm.features import LinearFeatures, SparseLinearFeatures
    from blm.glm import GLMFeatures, intercept_basis
    from blm.glm_data import design_rows
    from blm.likelihoods import Categorical

    X = rng.normal(size=(12, 4))
    X[X < 0] = 0.0
    w = rng.uniform(0.5, 2.0, 12)
    rows, p = design_rows(scipy.sparse.csr_array(X) if sparse else X, w, np.float64)
    base = (SparseLinearFeatures if sparse else LinearFeatures)(p + 1, 3)
    basis = intercept_basis(3, True)
    theta0 = rng.normal(size=3 * p + 2)
    feats = GLMFeatures(base, theta0, basis)
    rows = jnp.asarray(rows)
    D = np.asarray(feats.dense(rows))  # (12, 3, d)
    W, b = theta0[: 3 * p].reshape(3, p), basis @ theta0[3 * p :]
    scaled = np.einsum("ikd,d->ik", D, theta0)  # rows carry √w_i
    np.testing.assert_allclose(scaled / np.sqrt(w)[:, None], X @ W.T + b, rtol=1e-12)
    np.testing.assert_allclose(feats.offset(rows), X @ W.T + b, rtol=1e-12)
    z, v = rng.normal(size=3 * p + 2), rng.normal(size=(12, 3))
    np.testing.assert_allclose(feats.jvp(rows, z), np.einsum("ikd,d->ik", D, z), rtol=1e-12)
    np.testing.assert_allclose(feats.vjp(rows, v), np.einsum("ikd,ik->d", D, v), rtol=1e-12)
    lik = Categorical(3)
    f = feats.offset(rows)
    L = lik.sqrt_precision(f)
    B = np.einsum("ikl,ijl->ikj", L, L)
    expected = np.einsum("ikd,ikj,ijd->d", D, B, D)  # diag(Σ_i w_i φ_iᵀB_iφ_i)
    np.testing.assert_allclose(feats.sq_rows(rows, L), expected, rtol=1e-10)


def test_newton_settings_name_the_bad_field():
    from blm.glm import NewtonSettings

    with pytest.raises(ValueError, match="NewtonSettings.max_iter"):
        NewtonSettings(max_iter=0)
    with pytest.raises(ValueError, match="NewtonSettings.tol"):
        NewtonSettings(tol=-1.0)
    with pytest.raises(ValueError, match="NewtonSettings.max_halvings"):
        NewtonSettings(max_halvings=0)
    with pytest.raises(ValueError, match="NewtonSettings.evidence_tol"):
        NewtonSettings(evidence_tol=0.0)


def test_a_group_without_signal_ends_the_fit_by_the_evidence(rng):
    """A prior group the labels do not depend on: its α runs to ∞ with the evidence flat;
    the evidence's predicted gain ends the fit (converged, finite), where the α change
    alone would never settle."""
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + rng.logistic(size=300) > 0).astype(int)
    groups = np.array(["signal", "noise", "noise"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", blm.ConvergenceWarning)
        clf = BayesianLogisticRegression(solver="exact", prior_groups=groups).fit(X, y)
    assert clf.converged_ and np.all(np.isfinite(clf.alpha_))
    signal, noise = clf.alpha_[list(clf.prior_group_names_).index("signal")], max(clf.alpha_)
    assert noise > 100 * signal  # the noise columns pruned towards 0
    assert np.all(np.abs(clf.coef_[0, 1:]) < 0.05 * abs(clf.coef_[0, 0]))


@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_alpha_leaving_the_range_stops_with_a_warning_not_an_error(rng, solver):
    """Separable labels with a pruned group: exact drives the signal group's α to 0, the
    sampled MacKay step's γ̂ of the noise group comes out 0; both stop and warn."""
    X = rng.normal(size=(150, 3))
    y = X[:, 0] > 0
    clf = BayesianLogisticRegression(solver=solver, prior_groups=np.array(["u", "v", "v"]))
    with pytest.warns(blm.ConvergenceWarning, match="separable"):
        clf.fit(X, y)
    assert not clf.converged_ and np.all(np.isfinite(clf.coef_))
    assert clf.score(X, y) > 0.95


def test_sampled_alpha_includes_the_curvature_term_laplace_needs():
    """iris, virginica or not: MacKay's plain sampled fixed point is α ≈ 0.027, 2.3× the
    Laplace evidence's maximiser (exact 0.0117); with the draws' estimate of the
    u = H⁻¹∂log det H/∂θ term cg lands within 10 % at k = 64 (two seeds)."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    exact = BayesianLogisticRegression(solver="exact").fit(X, y == 2)
    for seed in (0, 1):
        cg = BayesianLogisticRegression(solver="cg", n_samples=64, random_state=seed)
        cg.fit(X, y == 2)
        np.testing.assert_allclose(cg.alpha_, exact.alpha_, rtol=0.1)


def test_sampled_fit_on_separable_classes_warns_as_exact_does():
    X = np.linspace(-1, 1, 40)[:, None]
    y = (X[:, 0] > 0).astype(int)
    with pytest.warns(blm.ConvergenceWarning, match="separable"):
        clf = BayesianLogisticRegression(solver="cg", n_samples=8, max_iter=200).fit(X, y)
    assert np.all(np.isfinite(clf.coef_)) and clf.alpha_[0] < 1e-9


@pytest.mark.parametrize("K, fit_intercept", [(2, True), (3, True), (3, False)])
def test_structured_gram_and_row_covariances_equal_the_dense_rows(rng, K, fit_intercept):
    """The Newton system's statistics from the rows' Kronecker structure equal those of
    the whitened dense rows (weighted rows, intercept basis), and so do S_i = φ̃_iCφ̃_iᵀ."""
    from blm.evidence.closed_form import _primal_stats
    from blm.features import LinearFeatures
    from blm.glm import (
        GLMFeatures,
        _structured_stats,
        _whitened_block,
        intercept_basis,
        logistic_likelihood,
    )
    from blm.glm_data import design_rows
    from blm.glm_laplace import _row_covariances

    m = 1 if K == 2 else K
    X = rng.normal(size=(20, 4))
    rows, p = design_rows(X, rng.uniform(0.5, 2.0, 20), np.float64)
    basis = intercept_basis(m, fit_intercept)
    feats = GLMFeatures(LinearFeatures(p + 1, m), rng.normal(size=m * p + basis.shape[1]), basis)
    rows, y = jnp.asarray(rows), jnp.asarray(rng.normal(size=(20, m)))
    lik = logistic_likelihood(K)
    expected = _primal_stats(*_whitened_block(feats, lik, rows, y))
    for got, want in zip(_structured_stats(feats, lik, rows, y), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    A = rng.normal(size=(feats.d, feats.d))
    cov = A @ A.T
    J = np.asarray(feats.dense(rows))
    np.testing.assert_allclose(
        _row_covariances(feats, rows, cov), np.einsum("bkd,de,ble->bkl", J, cov, J), rtol=1e-10
    )


def test_a_group_of_all_zero_columns_keeps_its_alpha(rng):
    """Columns that are 0 in every row have γ_g = 0 and weights 0 for every α_g (0/0 in
    MacKay's update): their α is left at alpha_init, the others fitted as without them."""
    X, y = _binary(rng)
    wide = np.concatenate([X, np.zeros((len(y), 2))], axis=1)
    groups = np.array([0, 0, 0, 0, 1, 1])
    clf = BayesianLogisticRegression(solver="exact", prior_groups=groups, alpha_init=3.0)
    clf.fit(wide, y)
    ref = BayesianLogisticRegression(solver="exact").fit(X, y)
    assert clf.converged_ and clf.alpha_[1] == pytest.approx(3.0, rel=1e-12)
    np.testing.assert_allclose(clf.alpha_[0], ref.alpha_[0], rtol=1e-6)
    np.testing.assert_allclose(clf.coef_[0, :4], ref.coef_[0], rtol=1e-6)
    assert np.all(clf.coef_[0, 4:] == 0)
