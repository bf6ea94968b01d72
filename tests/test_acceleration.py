"""The accelerated MacKay rule (Anderson, safeguarded by the exact evidence) and the
evidence-based stopping rule: same fixed point as plain MacKay, never a lower evidence,
fewer solves, and a fit that stops once the evidence has stopped moving."""

import warnings

import numpy as np
import pytest

import blm
from blm.evidence.acceleration import Anderson
from blm.evidence.loop import StoppingRule


def _weak_group_problem(seed=3):
    """Three prior groups of five columns; the last group's columns are 20x smaller, so
    its alpha is weakly determined and plain MacKay crawls (214 solves at seed 3)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((60, 15))
    X[:, 10:] *= 0.05
    y = X @ rng.standard_normal(15) + 0.3 * rng.standard_normal(60)
    return X, y, np.arange(15) // 5


def _fit(X, y, groups, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither fit may stop unconverged
        return blm.BayesianLinearRegression(prior_groups=groups, **kw).fit(X, y)


@pytest.mark.parametrize("seed", [0, 3])
def test_accelerated_rule_reaches_plain_mackays_fixed_point_in_fewer_solves(seed):
    X, y, groups = _weak_group_problem(seed)
    settings = dict(max_iter=3000, tol=1e-10, evidence_tol=None)
    plain = _fit(X, y, groups, hyper=blm.MacKay(accelerate=False), **settings)
    fast = _fit(X, y, groups, **settings)  # the default rule accelerates
    np.testing.assert_allclose(fast.alpha_, plain.alpha_, rtol=1e-7)
    np.testing.assert_allclose(fast.beta_, plain.beta_, rtol=1e-8)
    np.testing.assert_allclose(fast.coef_, plain.coef_, rtol=1e-8, atol=1e-10)
    assert abs(fast.scores_[-1] - plain.scores_[-1]) < 1e-8
    assert fast.n_solves_ < plain.n_solves_
    if seed == 3:  # the slow one: at least 3x fewer dense solves
        assert 3 * fast.n_solves_ <= plain.n_solves_, (fast.n_solves_, plain.n_solves_)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_accelerated_rule_never_lowers_the_exact_evidence(seed):
    X, y, groups = _weak_group_problem(seed)
    est = _fit(X, y, groups, max_iter=3000, tol=1e-10, evidence_tol=None)
    scores = est.scores_
    assert np.all(np.diff(scores) >= -1e-10 * np.abs(scores[:-1])), np.diff(scores).min()


def test_the_fitted_alpha_maximises_the_exact_evidence():
    """At the accelerated fit's (alpha, beta), moving any one coordinate by 1 % either way
    lowers the dense evidence: a maximum, not just a stopping point."""
    X, y, groups = _weak_group_problem(1)
    est = _fit(X, y, groups, max_iter=3000, tol=1e-10, evidence_tol=None)
    Xc, yc = X - X.mean(0), y - y.mean()

    def log_evidence(alpha_g, beta):
        a = np.asarray(alpha_g)[groups]
        H = beta * Xc.T @ Xc + np.diag(a)
        mean = np.linalg.solve(H, beta * Xc.T @ yc)
        n = len(yc)
        return 0.5 * (
            -beta * np.sum((yc - Xc @ mean) ** 2)
            - np.sum(a * mean**2)
            - np.linalg.slogdet(H)[1]
            + np.sum(np.log(a))
            + n * np.log(beta)
            - n * np.log(2 * np.pi)
        )

    best = log_evidence(est.alpha_, est.beta_)
    for g in range(3):
        for factor in (0.99, 1.01):
            alpha = np.array(est.alpha_, copy=True)
            alpha[g] *= factor
            assert log_evidence(alpha, est.beta_) < best
    for factor in (0.99, 1.01):
        assert log_evidence(est.alpha_, est.beta_ * factor) < best


def test_fixed_groups_and_beta_stay_fixed_under_acceleration():
    X, y, groups = _weak_group_problem(3)
    est = _fit(X, y, groups, fixed_alpha={2: 7.5}, beta_init=4.0, max_iter=3000, evidence_tol=None)
    assert est.alpha_[2] == 7.5
    plain = _fit(
        X,
        y,
        groups,
        fixed_alpha={2: 7.5},
        hyper=blm.MacKay(accelerate=False),
        beta_init=4.0,
        max_iter=3000,
        evidence_tol=None,
    )
    np.testing.assert_allclose(est.alpha_, plain.alpha_, rtol=1e-5)


def test_anderson_solves_a_scalar_fixed_point_and_refuses_a_lower_score():
    # F(a) = sqrt(a): fixed point 1, the score -(log a)^2 rises towards it
    calls = []

    def step(alpha, beta):
        calls.append(alpha.copy())
        return np.sqrt(alpha), beta, {"score": -float(np.log(alpha[0]) ** 2)}

    acc = Anderson(step, free=np.array([True]), fit_beta=False)
    alpha, beta = np.array([1e4]), np.zeros(0)
    for _ in range(5):
        alpha, beta, info = acc.step(alpha, beta)
    assert abs(alpha[0] - 1.0) < 1e-10
    assert len(calls) <= 10
    with pytest.raises(ValueError, match="memory"):
        Anderson(step, free=np.array([True]), fit_beta=False, memory=0)


def test_mackay_accelerate_must_be_a_bool():
    with pytest.raises(ValueError, match="MacKay.accelerate"):
        blm.MacKay(accelerate="yes")
    assert blm.MacKay().accelerate is True


# -- the stopping rule ------------------------------------------------------------------
def test_evidence_tol_stops_a_flat_fit_early_within_the_tolerance():
    """The weak group's alpha crawls; the evidence stops moving long before it does: the
    evidence-tol fit ends within 1e-4 nats of the tol-only optimum in fewer solves."""
    X, y, groups = _weak_group_problem(3)
    full = _fit(
        X,
        y,
        groups,
        hyper=blm.MacKay(accelerate=False),
        max_iter=3000,
        tol=1e-10,
        evidence_tol=None,
    )
    early = _fit(
        X,
        y,
        groups,
        hyper=blm.MacKay(accelerate=False),
        max_iter=3000,
        tol=1e-10,
        evidence_tol=1e-5,
    )
    assert early.converged_
    assert 0 <= full.scores_[-1] - early.scores_[-1] < 1e-4
    assert 2 * early.n_solves_ <= full.n_solves_, (early.n_solves_, full.n_solves_)
    np.testing.assert_allclose(early.alpha_[:2], full.alpha_[:2], rtol=1e-3)


def test_stopping_rule_distrusts_a_rate_that_has_not_settled():
    rule = StoppingRule(tol=1e-6, evidence_tol=1e-5)
    # a fast start then a slow linear tail (macrodata's shape): gains 700, 29, 0.016, 4e-4
    fast_start = [-1500.0, -800.0, -771.0, -770.984, -770.9836]
    assert not rule.evidence_settled(fast_start, np.float64)
    # a settled rate of 0.5 whose remaining gain 1e-6 is below the tolerance
    tail = [-10.0, -10 + 8e-6, -10 + 12e-6, -10 + 14e-6, -10 + 15e-6]
    assert rule.evidence_settled(tail, np.float64)
    # the same numbers 1000x larger are not
    assert not rule.evidence_settled([-10 + 1000 * (s + 10) for s in tail], np.float64)
    # a drop beyond rounding is never settled; too few scores never are
    assert not rule.evidence_settled([-10.0, -9.0, -8.5, -8.4, -8.6], np.float64)
    assert not rule.evidence_settled([-10.0, -10.0], np.float64)
    assert not StoppingRule(1e-6).evidence_settled(tail, np.float64)


def test_stopping_rule_floor_is_the_scores_precision():
    rule = StoppingRule(tol=1e-6, evidence_tol=1e-9)
    # gains of 1e-3 on a score of 1e4: rounding in float32 (eps 1.2e-7), not in float64
    wobble = [1e4, 1e4 + 1e-3, 1e4 + 2e-3, 1e4 + 1e-3, 1e4 + 2e-3]
    assert rule.evidence_settled(wobble, np.float32)
    assert not rule.evidence_settled(wobble, np.float64)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_evidence_tol_is_checked(bad):
    X, y, groups = _weak_group_problem(0)
    with pytest.raises(ValueError, match="evidence_tol"):
        blm.BayesianLinearRegression(evidence_tol=bad).fit(X, y)
    with pytest.raises(ValueError, match="evidence_tol"):
        StoppingRule(1e-6, evidence_tol=bad)


def test_group_gamma_is_the_exact_effective_dimension_and_summary_names_weak_groups():
    """gamma_g = |g| - alpha_g tr_g(Sigma) from the dense posterior covariance (oracle), and
    summary() names the group whose columns the data barely see (gamma_g < 2) and only it."""
    from blm.estimator_report import group_gamma, weak_groups

    X, y, groups = _weak_group_problem(3)
    est = _fit(X, y, groups.astype(str), max_iter=3000)
    sigma = np.diag(est.sigma_)
    oracle = np.array([5 - est.alpha_[g] * sigma[groups == g].sum() for g in range(3)])
    np.testing.assert_allclose(group_gamma(est), oracle, rtol=1e-10)
    np.testing.assert_allclose(group_gamma(est).sum(), 15 - np.sum(est.alpha_[groups] * sigma))
    assert oracle[2] < 2 < min(oracle[:2])
    assert [name.split()[0] for name in weak_groups(est)] == ["2"]
    assert "weakly determined alpha" in est.summary() and "2 (gamma" in est.summary()
    given = _fit(X, y, groups.astype(str), fixed_alpha={"2": 300.0}, max_iter=3000)
    assert weak_groups(given) == []  # a given alpha is not reported
