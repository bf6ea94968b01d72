"""BayesianLinearRegression(solver="exact") against scikit-learn's BayesianRidge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
from sklearn.datasets import load_diabetes
from sklearn.linear_model import BayesianRidge

import blm
from blm import BayesianLinearRegression, LinearFeatures, estimator_data
from blm.datasets import co2_design, macro_design
from blm.evidence.closed_form import DenseGaussianModel


def _agree(X, y, fit_intercept=True, rtol=1e-5, **hyper):
    ours = BayesianLinearRegression(
        tol=1e-12, max_iter=20_000, fit_intercept=fit_intercept, **hyper
    ).fit(X, y)
    ref = BayesianRidge(
        tol=1e-10, max_iter=100_000, fit_intercept=fit_intercept, compute_score=True, **hyper
    ).fit(X, y)
    np.testing.assert_allclose(
        ours.coef_, ref.coef_, rtol=rtol, atol=1e-8 * np.abs(ref.coef_).max()
    )
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=rtol)
    np.testing.assert_allclose(ours.alpha_, ref.lambda_, rtol=rtol)  # weight precision
    np.testing.assert_allclose(ours.beta_, ref.alpha_, rtol=rtol)  # noise precision
    np.testing.assert_allclose(
        ours.sigma_, ref.sigma_, rtol=rtol, atol=1e-8 * np.abs(ref.sigma_).max()
    )
    np.testing.assert_allclose(ours.coef_std_, np.sqrt(np.diag(ref.sigma_)), rtol=rtol)
    mean, std = ours.predict(X[::7], return_std=True)
    ref_mean, ref_std = ref.predict(X[::7], return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=rtol)
    np.testing.assert_allclose(std, ref_std, rtol=rtol)
    np.testing.assert_allclose(ours.scores_[-1], ref.scores_[-1], rtol=1e-8)
    return ours


def test_agrees_with_bayesian_ridge_on_diabetes():
    X, y = load_diabetes(return_X_y=True)
    _agree(X, y)
    _agree(X, y, fit_intercept=False)


def test_agrees_with_bayesian_ridge_with_other_hyperpriors():
    X, y = load_diabetes(return_X_y=True)
    _agree(X, y, alpha_1=2.0, alpha_2=1e-3, lambda_1=1.5, lambda_2=1e-2)


def test_agrees_with_bayesian_ridge_on_co2_fourier_design():
    X, y, _ = co2_design(n_features=40, lengthscale=1.0)
    _agree(X, y)


def test_agrees_with_bayesian_ridge_on_macrodata_wide():
    """p > n keeps the comparison honest in the dual form (d > n)."""
    X, y, _ = macro_design(lags=2)
    X_wide = np.hstack([X, np.sin(X[:, :20] * 3.0) * 0.1])[:40]
    assert X_wide.shape[1] > X_wide.shape[0]
    ours = _agree(X_wide, y[:40])
    assert ours.posterior_.form == "dual"


def test_one_group_per_column_is_ard_regression():
    """prior_groups = one group per column is automatic relevance determination: the fixed
    point of scikit-learn's ARDRegression (its pruning threshold out of reach), per-column
    α (its lambda_), β, coefficients, covariance and predictive sd to float64 precision.
    (Its scores_ are not compared: they are not the log evidence.)"""
    from sklearn.linear_model import ARDRegression

    X, y = load_diabetes(return_X_y=True)
    ours = BayesianLinearRegression(
        prior_groups=np.arange(10), max_iter=20_000, tol=1e-12, evidence_tol=None
    )
    ours.fit(X, y)
    ref = ARDRegression(threshold_lambda=1e300, max_iter=3_000, tol=1e-12).fit(X, y)
    assert np.ptp(np.log10(ours.alpha_)) > 6  # relevances six decades apart
    np.testing.assert_allclose(ours.alpha_, ref.lambda_, rtol=1e-6)
    np.testing.assert_allclose(ours.beta_, ref.alpha_, rtol=1e-6)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-6)
    np.testing.assert_allclose(ours.sigma_, ref.sigma_, rtol=1e-6, atol=1e-9 * ref.sigma_.max())
    np.testing.assert_allclose(
        ours.predict(X[::7], return_std=True), ref.predict(X[::7], return_std=True), rtol=1e-6
    )


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_prior_groups_take_string_labels(tmp_path, solver):
    """prior_groups as strings fits as their integer codes do (α in the sorted labels'
    order, ``prior_group_names_``), summary() names each α, save/load keeps the labels."""
    X, y, indicator = macro_design(lags=1)
    names = np.asarray(["rates", "growth", "prices"])[indicator % 3]  # sorted: g, p, r
    settings = dict(solver=solver, random_state=0, n_samples=None if solver == "exact" else 8)
    est = BayesianLinearRegression(prior_groups=names, **settings).fit(X, y)
    codes = BayesianLinearRegression(prior_groups=(indicator + 2) % 3, **settings).fit(X, y)
    # indicator % 3 = 1, 2, 0 ("growth", "prices", "rates") are codes 0, 1, 2: sorted order
    np.testing.assert_array_equal(est.prior_group_names_, ["growth", "prices", "rates"])
    np.testing.assert_allclose(est.alpha_, codes.alpha_, rtol=1e-10)
    np.testing.assert_allclose(est.coef_, codes.coef_, rtol=1e-10)
    text = ", ".join(
        f"{n}: {a:.4g}" for n, a in zip(est.prior_group_names_, est.alpha_, strict=True)
    )
    assert f"alpha = {{{text}}}" in est.summary()
    est.save(tmp_path / "post.h5")
    loaded = BayesianLinearRegression.load(tmp_path / "post.h5")
    np.testing.assert_array_equal(loaded.prior_groups, names)
    np.testing.assert_array_equal(loaded.prior_group_names_, est.prior_group_names_)
    assert f"alpha = {{{text}}}" in loaded.summary()


def test_checkpoint_fingerprint_sees_the_whole_grouping():
    """Two groupings of 3 000 columns that differ only in the middle (where NumPy's repr
    of an array elides) are two fits for a checkpoint; the same one is the same fit."""
    X, y = np.ones((4, 3000)), np.ones(4)
    groups = np.zeros(3000, int)
    other = groups.copy()
    other[1500] = 1
    prints = [
        estimator_data.fingerprint(BayesianLinearRegression(prior_groups=g), X, y)
        for g in (groups, groups.copy(), other, other.astype(str))
    ]
    assert prints[0] == prints[1] and len(set(prints)) == 3


def test_grouped_prior_and_multi_output_reach_evidence_stationary_point():
    """Per-group α and per-output β: flat hyperpriors, then the evidence gradient vanishes."""
    X, y, indicator = macro_design(lags=1)
    groups = indicator // 3  # three groups of three indicators: none is pruned (α_g stays finite)
    Y = np.stack([y, np.roll(y, 1) * 0.5 + X[:, 0]], axis=1)
    est = BayesianLinearRegression(
        tol=1e-12,
        max_iter=20_000,
        prior_groups=groups,
        alpha_1=0,
        alpha_2=0,
        lambda_1=0,
        lambda_2=0,
    ).fit(X, Y)
    assert (
        est.coef_.shape == (2, X.shape[1]) and est.beta_.shape == (2,) and est.alpha_.shape == (3,)
    )
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    model = DenseGaussianModel.from_arrays(
        LinearFeatures(X.shape[1], 2).dense(jnp.asarray(Xc)), jnp.asarray(Yc)
    )
    prior0 = est.posterior_.prior

    def evidence(log_alpha, log_beta):
        b = jnp.exp(log_beta)
        return model.log_evidence(model.posterior(prior0.with_alpha(jnp.exp(log_alpha)), b), b)

    ga, gb = jax.grad(evidence, argnums=(0, 1))(jnp.log(est.alpha_), jnp.log(est.beta_))
    assert np.abs(ga).max() < 1e-5 and np.abs(gb).max() < 1e-5
    mean, std = est.predict(X[:3], return_std=True)
    assert mean.shape == std.shape == (3, 2)
    np.testing.assert_allclose(mean, X[:3] @ est.coef_.T + est.intercept_)


def test_posterior_samples_match_sigma():
    X, y = load_diabetes(return_X_y=True)
    est = BayesianLinearRegression(n_samples=20_000, random_state=0).fit(X, y)
    draws = est.samples_
    np.testing.assert_allclose(
        draws.mean(0), est.coef_, atol=4 * np.sqrt(np.diag(est.sigma_).max() / 20_000)
    )
    cov = np.cov(draws.T)
    bound = 4 * np.sqrt((np.sum(est.sigma_**2) + np.trace(est.sigma_) ** 2) / 20_000)
    assert np.linalg.norm(cov - est.sigma_) < bound


@pytest.mark.parametrize("outputs", [1, 2])
def test_sampled_coef_std_estimates_the_marginal_sds(outputs):
    """cg with k = 2 000 draws: coef_std_ against √diag(H⁻¹) at the fitted α, β, H formed
    in float64 — within 5 relative standard deviations 5/√(2k) = 8 % (a variance
    reported as an sd, or a missing 1/k, misses by far more); shaped as coef_."""
    X, y = load_diabetes(return_X_y=True)
    Y = y if outputs == 1 else np.stack([y, 0.5 * y + 30 * X[:, 2]], axis=1)
    k = 2_000
    est = BayesianLinearRegression(solver="cg", n_samples=k, random_state=0).fit(X, Y)
    assert est.coef_std_.shape == est.coef_.shape
    Xc = X - X.mean(0)
    for out, std in enumerate(np.atleast_2d(est.coef_std_)):
        beta = np.atleast_1d(est.beta_)[out]
        exact = np.sqrt(np.diag(np.linalg.inv(beta * Xc.T @ Xc + est.alpha_ * np.eye(10))))
        np.testing.assert_allclose(std, exact, rtol=5 / np.sqrt(2 * k))


@pytest.mark.parametrize("solver", ["cg", "sgd"])
def test_fixed_effects_sds_from_16_samples_use_the_diagonal_control_variate(tmp_path, solver):
    """A panel's one-hot unit effects beside 5 covariates: H is nearly diagonal, so the
    sds from k = 16 draws, controlled by diag(H) (kept by the solver, saved with the
    posterior), are within a few % of the exact fit's (3–4 % RMS over seeds 0–2) where
    the plain √((1/k) Σ z²) is 17–20 % RMS off; the predicted ``diag_covariance_rel_sd``
    / 2 (v̂ in place of v) is the right size: its RMS within a factor 2 of the errors'
    (measured 1.5–1.7: the floor at 1/D, active for a third of them, cuts the errors)."""
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(200), 5)
    X = np.hstack([np.eye(200)[units], rng.standard_normal((1000, 5))])
    y = rng.standard_normal(200)[units] + X[:, 200:] @ [1, 2, 3, 4, 5]
    y = y + rng.standard_normal(1000)
    exact = BayesianLinearRegression().fit(X, y)
    est = BayesianLinearRegression(solver=solver, n_samples=16, random_state=0).fit(X, y)
    post = est.posterior_
    controlled = est.coef_std_ / exact.coef_std_ - 1
    plain = np.sqrt(np.mean(np.asarray(post.samples) ** 2, axis=0)) / exact.coef_std_ - 1
    rms = float(np.sqrt(np.mean(controlled**2)))
    assert rms < 0.08 and rms < 0.5 * np.sqrt(np.mean(plain**2))
    predicted = np.asarray(post.diag_covariance_rel_sd()) / 2
    assert 0.5 < np.sqrt(np.mean(predicted**2)) / rms < 2
    est.save(tmp_path / "post.h5")
    loaded = BayesianLinearRegression.load(tmp_path / "post.h5")
    np.testing.assert_allclose(loaded.coef_std_, est.coef_std_, rtol=1e-12)


def test_cg_deflates_each_prior_group_within_each_output():
    """cg's two-level preconditioner blocks are the prior groups within each output (a
    group's 1_G is an eigenvector of H per output, not across them): a 2-output panel
    with complete one-hot unit and time effects fits as with ``coarse_blocks=False``
    (Jacobi alone) to the solves' tolerance, its last solve in fewer iterations (measured
    15 vs 29; 23 with each group's blocks joined across the outputs), and a malformed
    ``coarse_blocks`` is named."""
    rng = np.random.default_rng(1)
    units, times = np.repeat(np.arange(150), 2), rng.integers(0, 8, 300)
    X = np.hstack([np.eye(150)[units], np.eye(8)[times], rng.standard_normal((300, 2))])
    Y = np.stack([X @ rng.standard_normal(160), X @ rng.standard_normal(160)], axis=1)
    Y = Y + 0.3 * rng.standard_normal(Y.shape)
    groups = np.r_[np.zeros(150), np.ones(8), [2, 2]].astype(int)
    est = BayesianLinearRegression(solver="cg", n_samples=4, prior_groups=groups, random_state=0)
    blocks = blm.CG().blocks(blm.Prior(np.ones(3), np.tile(groups, 2)), 2)
    np.testing.assert_array_equal(blocks, np.r_[groups, groups + 3])
    settings = dict(max_iter=3, tol=1e-12, solver=blm.CG(tol=1e-6, adaptive_tol=False))
    fit = est.set_params(**settings).fit(X, Y)
    jacobi = BayesianLinearRegression(**{**est.get_params(), **settings})
    jacobi.solver = blm.CG(tol=1e-6, adaptive_tol=False, preconditioner="jacobi")
    jacobi.fit(X, Y)
    np.testing.assert_allclose(fit.alpha_, jacobi.alpha_, rtol=1e-4)
    np.testing.assert_allclose(fit.coef_, jacobi.coef_, atol=1e-5 * np.abs(fit.coef_).max())
    assert fit.diagnostics_.step[-1] <= 0.65 * jacobi.diagnostics_.step[-1]
    with pytest.raises(ValueError, match=r"coarse_blocks must be True, False or \(320,\)"):
        est.set_params(solver=blm.CG(coarse_blocks=groups)).fit(X, Y)


def test_refits_reuse_compiled_code(monkeypatch):
    """Cross-validation folds and reweighted refits compile the exact MacKay step once:
    the weight sum Σw is data, not a static argument, and n is padded to a multiple of
    2^(⌊log₂ n⌋ − 3) (400, 401, 402 → 416 rows). Counted by the step's traces."""
    traces = []
    step = DenseGaussianModel.mackay_step

    def counted(self, *args, **kwargs):
        traces.append(self.Phi.shape[0])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(DenseGaussianModel, "mackay_step", counted)
    X, y = load_diabetes(return_X_y=True)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    BayesianLinearRegression().fit(X[:300], y[:300])
    assert traces == [320]  # a new bucket traces (the count is live)
    BayesianLinearRegression().fit(X[:400], y[:400])
    first = len(traces)
    for n, scale in [(401, 1.0), (402, 1.0), (400, 1.0), (400, 0.5)]:
        BayesianLinearRegression().fit(X[:n], y[:n], sample_weight=scale * w[:n])
    assert len(traces) == first


@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
@pytest.mark.parametrize("outputs", [1, 2])
def test_coef_covariance_of_chosen_columns(solver, outputs):
    """covariance_columns: the joint posterior covariance of three columns, per output,
    against H⁻¹ = (β_k XcᵀXc + αI)⁻¹ formed in float64 at the fitted α, β — from the
    Cholesky factor (exact), or by cg on H whatever the solver, to cg's default 1e-6
    residual on a 600 × 120 problem that cg does not finish in 10 iterations."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 120)) * np.arange(1, 121) ** -0.7
    y = X @ rng.standard_normal(120) + 0.3 * rng.standard_normal(600)
    Y = y if outputs == 1 else np.stack([y, X[:, 5] - y], axis=1)
    cols = [7, 0, 99]
    est = BayesianLinearRegression(
        solver=solver, n_samples=0 if solver == "exact" else 4, random_state=0, max_iter=3
    )
    est.set_params(covariance_columns=cols).fit(X, Y)
    cov = est.coef_covariance_.reshape(outputs, 3, 3)
    assert est.coef_covariance_.shape == ((3, 3) if outputs == 1 else (2, 3, 3))
    Xc = X - X.mean(0)
    for k in range(outputs):
        H = np.atleast_1d(est.beta_)[k] * Xc.T @ Xc + est.alpha_ * np.eye(120)
        ref = np.linalg.inv(H)[np.ix_(cols, cols)]
        rtol = 1e-10 if solver == "exact" else 1e-4
        np.testing.assert_allclose(cov[k], ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def test_coef_covariance_round_trips_warns_and_names_bad_columns(tmp_path):
    X, y = load_diabetes(return_X_y=True)
    est = BayesianLinearRegression(covariance_columns=np.array([3, 1])).fit(X, y)
    est.save(tmp_path / "post.h5")
    back = BayesianLinearRegression.load(tmp_path / "post.h5")
    np.testing.assert_array_equal(back.coef_covariance_, est.coef_covariance_)
    assert back.covariance_columns == [3, 1]
    np.testing.assert_allclose(est.coef_covariance_, est.sigma_[np.ix_([3, 1], [3, 1])])
    assert not hasattr(est.set_params(covariance_columns=None).fit(X, y), "coef_covariance_")
    sampled = BayesianLinearRegression(
        solver=blm.CG(max_iter=2), n_samples=2, max_iter=2, covariance_columns=[0]
    )
    with pytest.warns(UserWarning) as caught:
        sampled.fit(X, y)
    said = [str(w.message) for w in caught]
    assert any(m.startswith("coef_covariance_: cg stopped at max_iter") for m in said), said
    assert any(m.startswith("the final cg solve stopped at its cap") for m in said), said
    for bad in ([10], [-1], [1, 1], [], [0.5], [[0, 1]]):
        with pytest.raises(ValueError, match=r"covariance_columns must be distinct .* \[0, 10\)"):
            BayesianLinearRegression(covariance_columns=bad).fit(X, y)


def test_predictive_covariance_is_x_sigma_xt_plus_noise():
    """return_cov (exact): X_c Σ X_cᵀ + I/β per output, (t, t) or (t, t, m) as scikit-learn's
    GaussianProcessRegressor; its diagonal is return_std², in primal and dual form."""
    X, y = load_diabetes(return_X_y=True)
    Xt = X[::40]
    for Xf, Y in ((X, y), (X, np.stack([y, X[:, 1] * 100 - y], axis=1)), (X[:8], y[:8])):
        est = BayesianLinearRegression().fit(Xf, Y)
        m = 1 if Y.ndim == 1 else 2
        mean, cov = est.predict(Xt, return_cov=True)
        np.testing.assert_array_equal(mean, est.predict(Xt))
        cov = cov.reshape(len(Xt), len(Xt), m)
        sigma = est.sigma_.reshape(m, 10, m, 10)
        for k in range(m):
            Xc = Xt - est.X_offset_
            ref = Xc @ sigma[k, :, k] @ Xc.T + np.eye(len(Xt)) / np.atleast_1d(est.beta_)[k]
            np.testing.assert_allclose(cov[..., k], ref, rtol=1e-8)
        std = est.predict(Xt, return_std=True)[1].reshape(len(Xt), m)
        np.testing.assert_allclose(np.sqrt(np.diagonal(cov).T), std, rtol=1e-10)
    with pytest.raises(ValueError, match="return_std and return_cov"):
        est.predict(Xt, return_std=True, return_cov=True)


def test_sampled_predictive_covariance_estimates_the_exact_one():
    """cg with k = 2 000 draws: the epistemic part of return_cov against X_c H⁻¹ X_cᵀ at
    the fitted α, β, within 4 standard errors of a k-sample covariance in Frobenius norm
    (a missing 1/k or a cross-output block would miss by far more); a scipy sparse X gives
    the dense X's covariance."""
    X, y = load_diabetes(return_X_y=True)
    k = 2_000
    est = BayesianLinearRegression(solver="cg", n_samples=k, random_state=0).fit(X, y)
    Xt = X[::40]
    _, cov = est.predict(Xt, return_cov=True)
    Xc, Xt_c = X - X.mean(0), Xt - X.mean(0)
    exact = Xt_c @ np.linalg.inv(est.beta_ * Xc.T @ Xc + est.alpha_ * np.eye(10)) @ Xt_c.T
    error = np.linalg.norm(cov - np.eye(len(Xt)) / est.beta_ - exact)
    assert error < 4 * np.sqrt((np.sum(exact**2) + np.trace(exact) ** 2) / k)
    _, sparse_cov = est.predict(scipy.sparse.csr_matrix(Xt), return_cov=True)
    np.testing.assert_allclose(sparse_cov, cov, rtol=1e-8)


def test_feature_names_as_scikit_learn(tmp_path):
    """A DataFrame's column names: scikit-learn's own consistency check (feature_names_in_,
    its errors for reordered, unseen and missing names, no warning for matching names),
    kept through save/load; warnings when only one side has names; mixed types named."""
    import pandas as pd
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency

    check_dataframe_column_names_consistency("BayesianLinearRegression", BayesianLinearRegression())
    data = load_diabetes(as_frame=True)
    est = BayesianLinearRegression().fit(data.data, data.target)
    assert list(est.feature_names_in_) == list(data.data.columns)
    est.save(tmp_path / "post.h5")
    back = BayesianLinearRegression.load(tmp_path / "post.h5")
    np.testing.assert_array_equal(back.feature_names_in_, est.feature_names_in_)
    assert back.feature_names_in_.dtype == object
    with pytest.warns(UserWarning, match="X does not have valid feature names, but Bayes"):
        back.predict(data.data.to_numpy()[:3])
    plain = BayesianLinearRegression().fit(data.data.to_numpy(), data.target)
    with pytest.warns(UserWarning, match="X has feature names, but BayesianLinearRegression"):
        plain.predict(data.data[:3])
    assert not hasattr(est.fit(data.data.to_numpy(), data.target), "feature_names_in_")
    mixed = pd.DataFrame(data.data.to_numpy()[:, :2], columns=["age", 1])
    with pytest.raises(TypeError, match="X: feature names must all be strings"):
        BayesianLinearRegression().fit(mixed, data.target)


def test_sample_y_draws_from_the_posterior_predictive():
    """Exact: 20 000 draws have predict's mean and return_cov's covariance (with noise,
    and less I/β without), within 4 standard errors; shapes as GaussianProcessRegressor's.
    cg: the stored draws, exactly (x − x̄)θ_j + ȳ; asking for more than k is named."""
    X, y = load_diabetes(return_X_y=True)
    Xt, n = X[::60], 20_000
    est = BayesianLinearRegression().fit(X, y)
    mean, cov = est.predict(Xt, return_cov=True)
    for noise in (True, False):
        draws = est.sample_y(Xt, n, random_state=1, noise=noise)
        assert draws.shape == (len(Xt), n)
        target = cov if noise else cov - np.eye(len(Xt)) / est.beta_
        sd = np.sqrt(np.diag(target))
        assert np.all(np.abs(draws.mean(1) - mean) < 4 * sd / np.sqrt(n))
        bound = 4 * np.sqrt((np.sum(target**2) + np.trace(target) ** 2) / n)
        assert np.linalg.norm(np.cov(draws) - target) < bound
    np.testing.assert_array_equal(est.sample_y(Xt, 3, 5), est.sample_y(Xt, 3, 5))
    Y = np.stack([y, -y], axis=1)
    assert BayesianLinearRegression().fit(X, Y).sample_y(Xt, 4).shape == (len(Xt), 2, 4)
    sampled = BayesianLinearRegression(solver="cg", n_samples=8, random_state=0).fit(X, y)
    theta = sampled.samples_[:5]  # (5, p) draws of coef_
    expected = (Xt - sampled.X_offset_) @ theta.T + sampled.y_offset_
    np.testing.assert_allclose(sampled.sample_y(Xt, 5, noise=False), expected, rtol=1e-10)
    sparse = sampled.sample_y(scipy.sparse.csr_matrix(Xt), 5, noise=False)
    np.testing.assert_allclose(sparse, expected, rtol=1e-10)
    with pytest.raises(ValueError, match="n_samples must be at most the 8 draws stored"):
        sampled.sample_y(Xt, 9)
    with pytest.raises(ValueError, match="X has 3 features, but BayesianLinearRegression"):
        sampled.sample_y(Xt[:, :3])
    with pytest.raises(ValueError, match="n_samples"):
        sampled.sample_y(Xt, 0)


def test_summary_lists_intervals_from_coef_and_sd():
    """summary(): one row per coefficient (largest |mean|/sd first, covariance_columns
    before them with their solved sds, marked *), mean ± z·sd with z = 1.95996 for 95 %."""
    import pandas as pd

    X, y = load_diabetes(return_X_y=True)
    names = [f"v{j}" for j in range(10)]
    est = BayesianLinearRegression().fit(pd.DataFrame(X, columns=names), y)
    rows = est.summary(max_rows=3).splitlines()
    assert rows[1] == "sd: exact" and rows[6].startswith("… 7 more (max_rows")
    assert rows[7].split()[:2] == ["intercept", f"{est.intercept_:.4g}"]
    assert rows[8].split()[:3] == ["noise", "sd", f"{1 / np.sqrt(est.beta_):.4g}"]
    every = est.summary(max_rows=None, sort="column").splitlines()
    assert [row.split()[0] for row in every[3:13]] == names  # all, in column order
    with pytest.raises(ValueError, match="sort must be one of"):
        est.summary(sort="size")
    top = np.argsort(-np.abs(est.coef_) / est.coef_std_)[:3]
    for row, j in zip(rows[3:6], top, strict=True):
        name, c, sd, lo, hi = row.split()
        assert name == names[j]
        np.testing.assert_allclose(
            [float(c), float(sd), float(lo), float(hi)],
            [
                est.coef_[j],
                est.coef_std_[j],
                *(est.coef_[j] + np.array([-1, 1]) * 1.959964 * est.coef_std_[j]),
            ],
            rtol=1e-3,
        )
    sampled = BayesianLinearRegression(solver="cg", n_samples=4, covariance_columns=[7]).fit(X, y)
    rows = sampled.summary().splitlines()
    # the median predicted error of the sds: below the plain 1/√(2k) = 35 % (control variate)
    error = 50 * np.median(np.asarray(sampled.posterior_.diag_covariance_rel_sd()))
    assert error < 35
    assert rows[1] == f"sd: from 4 samples (±{error:.0f} % median), * solved exactly " + (
        "(covariance_columns)"
    )
    row = rows[3].split()
    assert row[0] == "x7" and row[2] == f"{np.sqrt(sampled.coef_covariance_[0, 0]):.4g}*"
    unsolved = sampled.set_params(covariance_columns=None).fit(X, y).summary().splitlines()
    assert unsolved[1] == f"sd: from 4 samples (±{error:.0f} % median)"
    assert "*" not in "".join(unsolved)
    with pytest.raises(ValueError, match="level must be in"):
        est.summary(level=95)


def test_params_protocol():
    est = BayesianLinearRegression(max_iter=5)
    assert est.get_params()["max_iter"] == 5
    est.set_params(tol=1e-3, n_samples=3)
    assert est.tol == 1e-3 and est.n_samples == 3
    with pytest.raises(ValueError, match="'learning_rate' is not a parameter"):
        est.set_params(learning_rate=1.0)
    assert "max_iter=5" in repr(est)


@pytest.mark.parametrize(
    "kwargs,X,y,match",
    [
        ({}, np.ones((4, 2)), np.ones(5), "same number of rows"),
        ({}, np.ones((4, 2)), [1.0, np.nan, 1.0, 1.0], "y holds 1 non-finite"),
        ({}, np.ones(4), np.ones(4), "X must be 2-D"),
        ({"alpha_init": 0.0}, np.ones((4, 2)), np.ones(4), "alpha_init must be strictly positive"),
        ({"beta_init": -1.0}, np.ones((4, 2)), np.ones(4), "beta_init must be strictly positive"),
        ({"solver": "svd"}, np.ones((4, 2)), np.ones(4), "solver must be one of"),
        ({"max_iter": 0}, np.ones((4, 2)), np.ones(4), "max_iter must be >= 1"),
        ({"lambda_1": -1.0}, np.ones((4, 2)), np.ones(4), "lambda_1 must be a finite number >= 0"),
        ({"prior_groups": [0, 1, 2]}, np.ones((4, 2)), np.ones(4), "prior_groups must be 2"),
        ({"prior_groups": [0.0, 1.0]}, np.ones((4, 2)), np.ones(4), "integers or strings, got"),
        ({"prior_groups": [-1, 0]}, np.ones((4, 2)), np.ones(4), "non-negative integers or str"),
        ({}, np.ones((4, 2)) * 1j, np.ones(4), "X must hold real numbers"),
        ({}, scipy.sparse.csr_array(np.ones((4, 2)) * 1j), np.ones(4), "X must hold real"),
        ({}, scipy.sparse.csr_array((0, 3)), np.ones(0), r"X has 0 sample\(s\)"),
        ({}, np.ones((4, 0)), np.ones(4), r"X has 0 feature\(s\) \(shape=\(4, 0\)\)"),
        ({}, np.ones((4, 2)), None, "requires y to be passed, but the target y is None"),
    ],
)
def test_bad_input(kwargs, X, y, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BayesianLinearRegression(**kwargs).fit(X, y)


def test_predict_errors():
    est = BayesianLinearRegression()
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(np.ones((2, 3)))
    est.fit(np.random.default_rng(0).standard_normal((20, 3)), np.arange(20.0))
    with pytest.raises(ValueError, match="X has 4 features, but .* is expecting 3 features"):
        est.predict(np.ones((2, 4)))


def _integer_weights(n, seed=0):
    """Frequency weights 0…3 (some rows dropped, some counted thrice), seeded."""
    return np.random.default_rng(seed).integers(0, 4, n).astype(float)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_integer_weights_equal_repeated_rows(fit_intercept):
    """Frequency weights: a fit with w_i ∈ {0, …, 3} is the fit to the data with row i
    written w_i times — coefficients, α, β, covariance, the score (log evidence) and the
    predictive sd, all to float64 precision. Counting n rows instead of Σw in β's update
    or in the evidence moves β and the score far outside this tolerance."""
    X, y = load_diabetes(return_X_y=True)
    w = _integer_weights(len(y))
    rows = np.repeat(np.arange(len(y)), w.astype(int))
    kw = {"tol": 1e-12, "max_iter": 20_000, "fit_intercept": fit_intercept}
    ours = BayesianLinearRegression(**kw).fit(X, y, sample_weight=w)
    rep = BayesianLinearRegression(**kw).fit(X[rows], y[rows])
    assert ours.n_iter_ == rep.n_iter_
    for name in ("coef_", "intercept_", "alpha_", "beta_", "sigma_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(rep, name), rtol=1e-8)
    np.testing.assert_allclose(ours.scores_, rep.scores_, rtol=1e-10)
    np.testing.assert_allclose(
        ours.predict(X[:9], return_std=True), rep.predict(X[:9], return_std=True), rtol=1e-8
    )


def test_sample_weight_agrees_with_bayesian_ridge():
    """Real-valued weights against scikit-learn's BayesianRidge(sample_weight=...): the
    same fit and the same score (both count Σw observations, as repeated rows do)."""
    X, y = load_diabetes(return_X_y=True)
    w = np.random.default_rng(1).uniform(0.1, 3.0, len(y))
    ours = BayesianLinearRegression(tol=1e-12, max_iter=20_000).fit(X, y, sample_weight=w)
    ref = BayesianRidge(tol=1e-10, max_iter=100_000, compute_score=True).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-5)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-5)
    np.testing.assert_allclose(ours.alpha_, ref.lambda_, rtol=1e-5)
    np.testing.assert_allclose(ours.beta_, ref.alpha_, rtol=1e-5)
    np.testing.assert_allclose(ours.sigma_, ref.sigma_, rtol=1e-5)
    np.testing.assert_allclose(
        ours.predict(X[::7], return_std=True), ref.predict(X[::7], return_std=True), rtol=1e-5
    )
    np.testing.assert_allclose(ours.scores_[-1], ref.scores_[-1], rtol=1e-8)


@pytest.mark.parametrize("hyper", ["mackay", "evidence"])
def test_sampled_fits_count_the_weights(hyper):
    """cg-solved sample-based fits with weights land on the exact weighted fit: MacKay EM
    (β's update counts Σw = 1.5 n) within γ̂'s Monte Carlo error, SLQ evidence ascent
    within its probe noise; counting n would put β 1/3 low."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((600, 20)) * np.arange(1, 21) ** -0.5
    y = X @ rng.standard_normal(20) + 0.5 * rng.standard_normal(600)
    w = rng.uniform(0.5, 2.5, 600)
    exact = BayesianLinearRegression(tol=1e-10, max_iter=10_000).fit(X, y, sample_weight=w)
    rule = blm.EvidenceAscent(learning_rate=0.3, slq=blm.SLQ(depth=20, n_probes=64))
    est = BayesianLinearRegression(
        solver=blm.CG(tol=1e-10),
        n_samples=64,
        random_state=0,
        hyper=rule if hyper == "evidence" else hyper,
        max_iter=300,
        tol=1e-5,
    ).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(est.beta_, exact.beta_, rtol=0.02)
    np.testing.assert_allclose(est.alpha_, exact.alpha_, rtol=0.1)
    np.testing.assert_allclose(est.coef_, exact.coef_, rtol=0.01, atol=0.01)


def test_score_is_r2_as_scikit_learn():
    from sklearn.metrics import r2_score

    X, y = load_diabetes(return_X_y=True)
    Y = np.stack([y, 0.5 * y + X[:, 0] * 100], axis=1)
    w = np.random.default_rng(3).uniform(0.1, 2.0, len(y))
    for target in (y, Y):
        est = BayesianLinearRegression().fit(X[:300], target[:300])
        pred = est.predict(X[300:])
        assert est.score(X[300:], target[300:]) == pytest.approx(r2_score(target[300:], pred))
        assert est.score(X[300:], target[300:], sample_weight=w[300:]) == pytest.approx(
            r2_score(target[300:], pred, sample_weight=w[300:])
        )
    with pytest.raises(ValueError, match="y must have shape"):
        est.score(X[300:], y[300:])


@pytest.mark.parametrize(
    "w, match",
    [
        (np.ones(5), "X and sample_weight must have the same number of rows"),
        (-np.ones(4), "sample_weight must be >= 0 and not all zero"),
        (np.zeros(4), "sample_weight must be >= 0 and not all zero"),
        ([1.0, np.inf, 1.0, 1.0], "sample_weight holds 1 non-finite"),
        (np.ones((4, 1)), "sample_weight must be 1-D"),
    ],
)
def test_bad_sample_weight(w, match):
    with pytest.raises(ValueError, match=match):
        BayesianLinearRegression().fit(np.ones((4, 2)), np.arange(4.0), sample_weight=w)


def test_works_in_scikit_learn_model_selection_and_pipelines():
    """A drop-in for BayesianRidge where users put it: cross-validation (the fold scores
    are our R² of fits on the folds), grid search, and a pipeline whose predict passes
    return_std through and whose fit routes sample_weight."""
    from sklearn.base import clone, is_regressor
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    est = BayesianLinearRegression(alpha_init=2.0)
    assert is_regressor(est) and clone(est).get_params() == est.get_params()
    folds = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(est, X, y, cv=folds)
    manual = [
        BayesianLinearRegression(alpha_init=2.0).fit(X[a], y[a]).score(X[b], y[b])
        for a, b in folds.split(X)
    ]
    np.testing.assert_allclose(scores, manual, rtol=1e-12)
    grid = GridSearchCV(est, {"fit_intercept": [False, True]}, cv=folds).fit(X, y)
    assert grid.best_params_ == {"fit_intercept": True}  # y's mean is 152, its sd 77
    np.testing.assert_allclose(grid.best_score_, np.mean(manual), rtol=1e-12)
    pipe = make_pipeline(StandardScaler(), BayesianLinearRegression())
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    pipe.fit(X, y, bayesianlinearregression__sample_weight=w)
    Xs = StandardScaler().fit(X).transform(X)
    ref = BayesianLinearRegression().fit(Xs, y, sample_weight=w)
    assert ref.n_features_in_ == pipe.n_features_in_ == 10
    mean, std = pipe.predict(X[:5], return_std=True)
    ref_mean, ref_std = ref.predict(Xs[:5], return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-10)
    np.testing.assert_allclose(std, ref_std, rtol=1e-10)


def _sklearn_checks():
    from sklearn.utils.estimator_checks import parametrize_with_checks

    return parametrize_with_checks([BayesianLinearRegression()])


@pytest.mark.filterwarnings("ignore")
@_sklearn_checks()
def test_scikit_learn_estimator_checks(estimator, check):
    """scikit-learn's own conformance suite (input validation and its messages, clone,
    fit idempotence, sample weights as repeated rows, sparse input, …) in float64."""
    check(estimator)


def test_exact_solver_refuses_a_fit_that_cannot_fit(monkeypatch, tmp_path):
    """Its estimated peak (blm.memory.estimate_exact_memory) against the memory available,
    before anything is formed: in memory 5·(n·d + d²) numbers, streamed 5·d² + 3·b·d."""
    import h5py

    import blm.estimator_fit
    from blm import HDF5Dataset

    X, y = load_diabetes(return_X_y=True)
    need = 5 * (442 * 10 + 10 * 10) * 8
    monkeypatch.setattr(blm.estimator_fit, "available_memory", lambda: need - 1)
    with pytest.raises(MemoryError, match="solver='exact' forms the posterior densely"):
        BayesianLinearRegression().fit(X, y)
    assert BayesianLinearRegression(solver="cg", n_samples=2).fit(X, y).coef_.shape == (10,)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    data = HDF5Dataset(path, block_size=100)
    streamed = (5 * 10 * 10 + 3 * 100 * 10) * 8
    monkeypatch.setattr(blm.estimator_fit, "available_memory", lambda: streamed)
    BayesianLinearRegression().fit(data)  # fits: the file's rows are never all in memory
    monkeypatch.setattr(blm.estimator_fit, "available_memory", lambda: streamed - 1)
    with pytest.raises(MemoryError, match="for n = 442 rows and d = 10 weights"):
        BayesianLinearRegression().fit(data)
    monkeypatch.setattr(blm.estimator_fit, "available_memory", lambda: need)
    BayesianLinearRegression().fit(X, y)


def test_sigma_refuses_a_covariance_that_cannot_fit(monkeypatch):
    """d² numbers twice (device array and NumPy copy): 2·10²·8 = 1 600 bytes here."""
    import blm.estimator_predict

    X, y = load_diabetes(return_X_y=True)
    est = BayesianLinearRegression(solver="cg", n_samples=4, random_state=0).fit(X, y)
    monkeypatch.setattr(blm.estimator_predict, "available_memory", lambda: 1_599)
    with pytest.raises(MemoryError, match="sigma_ is the 10 x 10 posterior covariance"):
        _ = est.sigma_
    monkeypatch.setattr(blm.estimator_predict, "available_memory", lambda: 1_600)
    assert est.sigma_.shape == (10, 10)
    # likewise predict's (t·m)² covariance: 2·5²·8 = 400 bytes for 5 rows
    monkeypatch.setattr(blm.estimator_predict, "available_memory", lambda: 399)
    with pytest.raises(MemoryError, match="return_cov: the covariance of 5 rows x 1 outputs"):
        est.predict(X[:5], return_cov=True)
    monkeypatch.setattr(blm.estimator_predict, "available_memory", lambda: 400)
    assert est.predict(X[:5], return_cov=True)[1].shape == (5, 5)
