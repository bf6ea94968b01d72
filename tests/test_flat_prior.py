"""Flat (α = 0) and fixed prior groups: unpenalised coefficients beside tuned ones.

Oracles: the dense posterior with A = diag(0, …, α_g) (float64), the REML estimates of
statsmodels' MixedLM for a random-intercept model, and the exact evidence's gradient
(zero in every fitted hyperparameter at the fixed point, not in a fixed one).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import statsmodels.api as sm

import blm
from blm import ArrayDataset, BayesianLinearRegression, Gaussian, LinearFeatures, Prior
from blm.evidence.closed_form import DenseGaussianModel, GammaHyperprior
from blm.evidence.mackay import GammaTerms, gamma_from_terms
from blm.solvers.cg import CGSettings, cg
from blm.solvers.problem import Problem
from blm.solvers.sgd import SGDConfig, gradient_variance, sgd
from blm.solvers.targets import draw_targets, split_key

KEY = jax.random.PRNGKey(0)
# no Gamma hyperpriors: the fixed points are the evidence's own
FLAT_HYPERPRIOR = {"alpha_1": 0.0, "alpha_2": 0.0, "lambda_1": 0.0, "lambda_2": 0.0}


def _flat_problem(rng, n=150, p=8):
    """A design whose first 3 columns have a flat prior, the other 5 a proper one."""
    X = rng.standard_normal((n, p)) * np.linspace(1.0, 0.3, p)
    y = X @ rng.standard_normal(p) + 0.4 * rng.standard_normal(n)
    groups = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    prior = Prior.grouped([0.0, 2.0], groups)
    feats, ds, lik = LinearFeatures(p, 1), ArrayDataset(X, y[:, None]), Gaussian(3.0)
    H = 3.0 * X.T @ X + np.diag(np.asarray(prior.precision()))
    return X, y, feats, ds, prior, lik, H


def test_prior_with_a_flat_group():
    prior = Prior.grouped([0.0, 2.0], [0, 1, 1])
    assert prior.has_flat and not Prior.grouped([1.0, 2.0], [0, 1, 1]).has_flat
    np.testing.assert_array_equal(prior.proper(), [0.0, 1.0, 1.0])
    np.testing.assert_allclose(prior.logdet(), 2 * np.log(2.0))  # the flat constant left out
    g = jax.grad(lambda a: prior.with_alpha(a).logdet())(jnp.array([0.0, 2.0]))
    np.testing.assert_allclose(g, [0.0, 1.0])  # finite: no log 0 in the gradient either
    with pytest.raises(ValueError, match="at least one group needs a proper prior"):
        Prior.grouped([0.0, 0.0], [0, 1])
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        Prior.grouped([1.0, -1.0], [0, 1])
    hyper = GammaHyperprior(1.5, 0.5, 0.0, 0.0)
    np.testing.assert_allclose(
        hyper.log_density(jnp.array([0.0, 2.0]), jnp.array([1.0])), 1.5 * np.log(2.0) - 1.0
    )


def test_cg_with_a_flat_group_solves_h_and_draws_covariance_h_inverse(rng):
    """The flat coordinates' θ⁰ is 0 and their noise stays in the right-hand side: cg's
    mean is H⁻¹XᵀBy and its k = 2 000 samples have covariance H⁻¹ (3σ Monte Carlo bound;
    dropping the flat coordinates' noise, or doubling it, fails)."""
    X, y, feats, ds, prior, lik, H = _flat_problem(rng)
    post, diag = cg(Problem(feats, lik, prior, ds), KEY, 2000, CGSettings(tol=1e-12))
    assert diag.converged
    np.testing.assert_allclose(post.mean, np.linalg.solve(H, 3.0 * X.T @ y), rtol=1e-9)
    cov, S = np.linalg.inv(H), np.asarray(post.covariance())
    sigma_mc = np.sqrt((np.sum(cov**2) + np.trace(cov) ** 2) / 2000)
    assert np.linalg.norm(S - cov) < 3 * sigma_mc
    flat = np.diag(cov)[:3]
    assert np.all(np.abs(np.diag(S)[:3] / flat - 1) < 0.15)  # ±3 sd of a variance at k = 2000
    with pytest.raises(ValueError, match=r"coordinates \[1\] have a flat prior"):
        cg(Problem(feats, lik, prior, ArrayDataset(X * (np.arange(8) != 1), y[:, None])), KEY, 2)
    targets = draw_targets(feats, lik, prior, ds, split_key(KEY)[0], 4)
    assert np.all(np.asarray(targets.theta0)[:, :3] == 0)
    assert np.all(np.asarray(targets.centres)[:, :3] == 0)
    assert np.all(np.asarray(targets.linear)[:, 3:] == 0)
    np.testing.assert_allclose(
        targets.rhs(prior) - targets.noise(prior), prior.mul(targets.theta0), atol=1e-12
    )


@pytest.mark.parametrize("objective", ["low-variance", "standard"])
def test_sgd_with_a_flat_group_reaches_cg_minimisers(rng, objective):
    """sgd and cg with one key solve the same k + 1 quadratics: with a flat group the
    low-variance form's linear term ℓ carries the flat coordinates' noise (without it
    their samples would be 0 there)."""
    X, y, feats, ds, prior, lik, H = _flat_problem(rng)
    ref, _ = cg(Problem(feats, lik, prior, ds), KEY, 4, CGSettings(tol=1e-12))
    config = SGDConfig(n_steps=3000, batch_size=ds.n, objective=objective)
    post, diag = sgd(Problem(feats, lik, prior, ds), KEY, 4, config)
    assert np.linalg.norm(post.mean - ref.mean) / np.linalg.norm(ref.mean) < 1e-4
    assert np.linalg.norm(post.samples - ref.samples) / np.linalg.norm(ref.samples) < 1e-4
    z = np.asarray(ref.samples)[:, :3]
    assert np.all(np.abs(z) > 0)
    # the exact objective at the minimiser: −½ rᵀH⁻¹r per column (ℓ included in r)
    snap = SGDConfig(n_steps=400, batch_size=30, snapshot_every=5, objective=objective)
    _, diag = sgd(Problem(feats, lik, prior, ds), KEY, 4, snap)
    if objective == "low-variance":
        targets = draw_targets(feats, lik, prior, ds, split_key(KEY)[0], 4)
        r = np.asarray(targets.rhs(prior))
        theta_n = np.asarray(targets.centres)
        a = np.asarray(prior.precision())
        expected = -0.5 * np.sum(r * np.linalg.solve(H, r.T).T, axis=1) + 0.5 * np.sum(
            a * theta_n**2, axis=1
        )
        np.testing.assert_allclose(diag.objective[-1][1:], expected, rtol=1e-6)


def test_low_variance_gradient_is_noiseless_at_zero_with_a_flat_group(rng):
    X, y, feats, ds, prior, lik, H = _flat_problem(rng)
    zero = jnp.zeros((6, 8))
    low = gradient_variance(
        Problem(feats, lik, prior, ds), KEY, 6, objective="low-variance", batch_size=10, z=zero
    )
    std = gradient_variance(
        Problem(feats, lik, prior, ds), KEY, 6, objective="standard", batch_size=10, z=zero
    )
    assert np.all(low < 1e-20) and np.all(std > 1.0)


def test_gamma_of_a_flat_group_is_its_size():
    prior = Prior.grouped([0.0, 2.0], [0, 0, 1, 1, 1])
    k = 4
    terms = GammaTerms(
        a=jnp.full((k, 2), 1.3), p=jnp.full((k, 2), 0.5), quad=jnp.ones((k, 1)), residual_sq=None
    )
    gamma_g, _ = gamma_from_terms(terms, prior, 100)
    assert float(gamma_g[0]) == 2.0
    assert 0 < float(gamma_g[1]) < 3


def _dense_fixed_point(X, y, alpha, beta, flat):
    """(γ per group, H⁻¹, θ̄) of the dense model, prior precision alpha on ~flat."""
    a = np.where(flat, 0.0, alpha)
    H = beta * X.T @ X + np.diag(a)
    cov = np.linalg.inv(H)
    mean = beta * cov @ X.T @ y
    return cov, mean, a


def test_exact_fit_with_a_flat_group_is_the_mackay_fixed_point(rng):
    """α of the proper group = γ_z/‖θ̄_z‖² with γ_z = d_z − α tr(H⁻¹)_zz, β = (n − γ)/‖r‖²
    with γ counting the flat coefficients whole, all from the dense posterior; the exact
    evidence's gradient in log α_z and log β vanishes there."""
    X, y, *_ = _flat_problem(rng)
    est = BayesianLinearRegression(
        prior_groups=["x"] * 3 + ["z"] * 5,
        fixed_alpha={"x": 0.0},
        fit_intercept=False,
        tol=1e-12,
        max_iter=500,
        **FLAT_HYPERPRIOR,
    ).fit(X, y)
    assert est.alpha_[0] == 0.0
    flat = np.arange(8) < 3
    cov, mean, a = _dense_fixed_point(X, y, est.alpha_[1], est.beta_, flat)
    np.testing.assert_allclose(est.coef_, mean, rtol=1e-9)
    gamma_z = 5 - est.alpha_[1] * np.trace(cov[3:, 3:])
    np.testing.assert_allclose(est.alpha_[1], gamma_z / np.sum(mean[3:] ** 2), rtol=1e-8)
    gamma = 8 - est.alpha_[1] * np.trace(cov[3:, 3:])
    resid = np.sum((y - X @ mean) ** 2)
    np.testing.assert_allclose(est.beta_, (150 - gamma) / resid, rtol=1e-8)
    model = DenseGaussianModel.from_arrays(jnp.asarray(X)[:, None], jnp.asarray(y)[:, None])
    prior = Prior.grouped(est.alpha_, np.repeat([0, 1], [3, 5]))
    _, g_alpha, g_beta, _ = model.log_evidence_and_grad(prior, jnp.array([est.beta_]))
    assert abs(float(g_alpha[1])) < 1e-6 and abs(float(g_beta[0])) < 1e-6
    assert "x: flat" in est.summary()


@pytest.mark.parametrize("hyper", ["mackay", "evidence"])
def test_fixed_positive_alpha_is_kept_and_the_rest_is_stationary(rng, hyper):
    """MacKay's fixed point or Adam on the evidence, with α_x given: α_x stays exactly,
    and the evidence's gradient vanishes in the fitted log α_z, log β only."""
    X, y, *_ = _flat_problem(rng)
    labels = ["x"] * 3 + ["z"] * 5
    est = BayesianLinearRegression(
        prior_groups=labels,
        fixed_alpha={"x": 40.0},
        fit_intercept=False,
        tol=1e-12 if hyper == "mackay" else 1e-9,
        max_iter=500 if hyper == "mackay" else 5000,
        hyper=hyper,
        **FLAT_HYPERPRIOR,
    ).fit(X, y)
    assert est.alpha_[0] == 40.0
    model = DenseGaussianModel.from_arrays(jnp.asarray(X)[:, None], jnp.asarray(y)[:, None])
    prior = Prior.grouped(est.alpha_, np.repeat([0, 1], [3, 5]))
    _, g_alpha, g_beta, _ = model.log_evidence_and_grad(prior, jnp.array([est.beta_]))
    assert abs(float(g_alpha[1])) < 1e-5 and abs(float(g_beta[0])) < 1e-5
    assert abs(float(g_alpha[0])) > 0.1  # 40 is not where the evidence would put it
    free = BayesianLinearRegression(
        prior_groups=labels, fit_intercept=False, tol=1e-12, max_iter=500, **FLAT_HYPERPRIOR
    ).fit(X, y)
    assert abs(free.alpha_[0] - 40.0) > 1.0


def _random_intercepts(rng, units=40, per=8):
    unit = np.repeat(np.arange(units), per)
    x = rng.standard_normal(unit.size)
    y = (
        1.0
        + 0.7 * x
        + 0.8 * rng.standard_normal(units)[unit]
        + 0.5 * rng.standard_normal(unit.size)
    )
    return unit, x, y


def test_flat_fixed_effects_give_statsmodels_mixedlm_reml(rng):
    """A random-intercept model y = b₀ + b₁x + u_unit + ε: blm with the constant and x flat
    and one-hot units as a prior group is REML. σ_u² = 1/α_unit, σ² = 1/β and the fixed
    effects agree with MixedLM(reml=True) to 1e-4 (counting the flat coefficients in β's
    n − γ or not moves σ² by 2/(n − γ) ≈ 0.7 %)."""
    unit, x, y = _random_intercepts(rng)
    X = np.column_stack([np.ones_like(x), x, np.eye(unit.max() + 1)[unit]])
    labels = ["fixed", "fixed"] + ["unit"] * (unit.max() + 1)
    ref = sm.MixedLM(y, X[:, :2], groups=unit).fit(reml=True, method="lbfgs")
    fits = [
        BayesianLinearRegression(
            solver=blm.CG(tol=1e-10) if solver == "cg" else solver,
            prior_groups=labels,
            fixed_alpha={"fixed": 0.0},
            fit_intercept=False,
            tol=1e-10,
            max_iter=2000,
            n_samples=8,
            random_state=0,
            **FLAT_HYPERPRIOR,
        ).fit(X, y)
        for solver in ("exact", "cg")
    ]
    exact, sampled = fits
    np.testing.assert_allclose(1 / exact.beta_, ref.scale, rtol=1e-4)
    np.testing.assert_allclose(1 / exact.alpha_[1], ref.cov_re[0, 0], rtol=1e-4)
    np.testing.assert_allclose(exact.coef_[:2], ref.fe_params, rtol=1e-4)
    # REML, not ML: ML's σ_u² is visibly smaller (by about d_fixed / units = 5 %)
    ml = sm.MixedLM(y, X[:, :2], groups=unit).fit(reml=False, method="lbfgs")
    assert ml.cov_re[0, 0] < 0.98 / exact.alpha_[1]
    # cg with 8 samples: γ̂ of the flat group is exact, the unit group's is sampled
    assert sampled.alpha_[0] == 0.0
    np.testing.assert_allclose(sampled.alpha_[1], exact.alpha_[1], rtol=0.1)
    np.testing.assert_allclose(sampled.beta_, exact.beta_, rtol=0.02)
    np.testing.assert_allclose(sampled.coef_[:2], exact.coef_[:2], rtol=0.02)


def test_fixed_alpha_bad_input_and_collinear_flat_columns(rng):
    X, y, *_ = _flat_problem(rng)
    labels = ["x"] * 3 + ["z"] * 5
    cases = [
        ({"fixed_alpha": {"x": 0.0}}, "needs prior_groups"),
        ({"prior_groups": labels, "fixed_alpha": {"w": 1.0}}, "'w' is not a label"),
        ({"prior_groups": labels, "fixed_alpha": {"x": -1.0}}, r"fixed_alpha\['x'\] must be >= 0"),
        ({"prior_groups": labels, "fixed_alpha": [("x", 0.0)]}, "must be a non-empty dict"),
        ({"prior_groups": labels, "fixed_alpha": {"x": 0.0, "z": 0.0}}, "needs alpha > 0"),
        (
            {"prior_groups": labels, "fixed_alpha": {"x": 0.0}, "hyper": "evidence"},
            "needs hyper='mackay'",
        ),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            BayesianLinearRegression(**kwargs).fit(X, y)
    # a complete set of dummies is collinear with the centred intercept
    unit, x, yy = _random_intercepts(rng, units=5, per=6)
    D = np.column_stack([np.eye(5)[unit], x])
    for solver in ("exact", "cg", "sgd"):  # sgd/cg: the flat block from one pass
        est = BayesianLinearRegression(
            prior_groups=["u"] * 5 + ["x"], fixed_alpha={"u": 0.0}, solver=solver, n_samples=4
        )
        with pytest.raises(ValueError, match="singular with these flat"):
            est.fit(D, yy)
        # dropping one dummy makes it identified: the fit runs
        est.set_params(prior_groups=["u"] * 4 + ["x"])
        assert np.all(np.isfinite(est.fit(D[:, 1:], yy).coef_))


def test_fixed_alpha_survives_save_and_load(rng, tmp_path):
    X, y, *_ = _flat_problem(rng)
    for groups, fixed in (
        ([0, 0, 0, 1, 1, 1, 1, 1], {0: 0.0}),
        (["x"] * 3 + ["z"] * 5, {"x": 2.5}),
    ):
        est = BayesianLinearRegression(prior_groups=groups, fixed_alpha=fixed).fit(X, y)
        est.save(tmp_path / "m.h5")
        back = BayesianLinearRegression.load(tmp_path / "m.h5")
        assert back.get_params()["fixed_alpha"] == fixed
        np.testing.assert_allclose(back.predict(X), est.predict(X))
        np.testing.assert_allclose(back.alpha_, est.alpha_)


def test_exact_memory_estimate_is_primal_with_a_flat_group(monkeypatch, rng):
    """d > n would take the dual form (A⁻¹ needed); a flat group forces the primal one, and
    the estimate before the fit follows: 5·(n·d + d²) numbers, not 12·n·d + 3·n²."""
    import blm.estimator_fit

    X, y = rng.standard_normal((20, 40)), rng.standard_normal(20)
    labels = ["x"] * 2 + ["z"] * 38
    primal = 5 * (20 * 40 + 40 * 40) * 8
    assert (12 * 20 * 40 + 3 * 20**2) * 8 < primal
    monkeypatch.setattr(blm.estimator_fit, "available_memory", lambda: primal - 1)
    BayesianLinearRegression(prior_groups=labels).fit(X, y)  # dual: fits
    flat = BayesianLinearRegression(prior_groups=labels, fixed_alpha={"x": 0.0})
    with pytest.raises(MemoryError, match="forms the posterior densely"):
        flat.fit(X, y)
    monkeypatch.setattr(blm.estimator_fit, "available_memory", lambda: primal)
    assert np.all(np.isfinite(flat.fit(X, y).coef_))


def test_loop_keeps_fixed_groups_and_names_a_collapsing_alpha():
    """The α of a fixed group stays (0 included, and 0 → 0 is no change); a fitted α
    proposed at 0 or at inf (or past √(largest float) of its precision) stops the loop with
    the reason for each."""
    from blm.evidence.loop import iterate_hyperparameters, relative_change

    def step(alpha, beta):
        return np.array([5.0, 2.0]), beta, {}

    fixed = np.array([True, False])
    alpha, beta, n_iter, _, _ = iterate_hyperparameters(
        step, np.array([0.0, 1.0]), np.array([1.0]), 10, 1e-9, fixed=fixed
    )
    np.testing.assert_array_equal(alpha, [0.0, 2.0])
    assert n_iter == 2 and relative_change(np.zeros(2), np.zeros(2)) == 0.0
    for bad, reason in ((0.0, "alpha reaching 0"), (np.inf, "growing without bound")):
        with pytest.raises(FloatingPointError, match=reason):
            iterate_hyperparameters(
                lambda a, b, v=bad: (np.array([1.0, v]), b, {}),
                np.array([0.0, 1.0]),
                np.array([1.0]),
                10,
                1e-9,
                fixed=fixed,
            )
    # float32: an α past √(largest float32) = 1.8e19 is infinite there (its square overflows)
    for value, runs in ((1e18, True), (1e20, False)):

        def step32(a, b, v=value):
            return np.array([1.0, v], np.float32), b, {}

        args = (step32, np.array([0.0, 1.0]), np.array([1.0]), 10, 1e-9)
        if runs:
            assert iterate_hyperparameters(*args, fixed=fixed)[2] == 2
            continue
        with pytest.raises(FloatingPointError, match=r"without bound \(here: past 1.8e\+19"):
            iterate_hyperparameters(*args, fixed=fixed)
    with pytest.raises(ValueError, match="fixed must be a boolean mask over the 2"):
        iterate_hyperparameters(step, np.ones(2), np.ones(1), 3, 1e-9, fixed=np.ones(3, bool))
