"""MacKay's evidence framework for a network (weights and α together), and the warning for
an EM loop that has not converged."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blm
from blm.evidence_framework import train_with_evidence
from blm.laplace import linearise
from blm.likelihoods import Categorical, Gaussian

# these fits stop EM after one or two steps on purpose (a fixed alpha to compare at,
# a round trip, bad input): its "not converged" warning is expected
EM_STOPPED_EARLY = pytest.mark.filterwarnings("ignore:MacKay EM has not converged")


def _regression(n: int = 60):
    """y = sin 2x + noise (sd 0.3) for a 1-6-6-1 tanh MLP (d = 61)."""
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (n, 1)))
    y = np.sin(2 * X[:, 0]) + 0.3 * np.asarray(jax.random.normal(jax.random.PRNGKey(5), (n,)))
    net = eqx.nn.MLP(1, 1, 6, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    return net, X, y


def _fit(**options):
    """train_with_evidence on the regression problem: (fit, X, y)."""
    net, X, y = _regression()
    return train_with_evidence(net, (X, y), Gaussian(1.0), jax.random.PRNGKey(0), **options), X, y


def _exact_update(fit, X, y, alpha, beta):
    """MacKay's update around the returned network w̄ from (α, β), on its dense Jacobian:
    α = γ/‖w̄‖², β = (n − γ)/‖y − f(w̄)‖², γ = Tr((G + α)⁻¹G), G = βJᵀJ."""
    feats = fit.linearised.features
    J = np.asarray(feats.dense(jnp.asarray(X)))[:, 0, :]
    w = np.asarray(feats.w)
    resid = y - np.asarray(feats.offset(jnp.asarray(X)))[:, 0]
    G = beta * J.T @ J
    gamma = np.trace(np.linalg.solve(G + alpha * np.eye(len(w)), G))
    return gamma / (w @ w), (len(y) - gamma) / (resid @ resid)


def test_rounds_reach_the_exact_joint_fixed_point():
    """At the returned network w̄ (trained at α_t), the exact MacKay update on its dense
    Jacobian, α = γ/‖w̄‖², β = (n − γ)/‖y − f(w̄)‖² with γ = Tr((G + α)⁻¹G), G = βJᵀJ,
    gives back the α and β it was fitted at: the weights and the hyperparameters agree."""
    fit, X, y = _fit(
        alpha=1e-2,
        rounds=10,
        training=blm.Training(first_steps=3000, steps=1500, batch_size=60, learning_rate=1e-2),
        em=blm.EMOptions(n_samples=32, solver=blm.SGD(n_steps=3000, batch_size=30)),
    )
    assert fit.converged and len(fit.alphas) >= 2 and fit.alphas[0] == 1e-2
    alpha_t = fit.alphas[-1]
    assert abs(float(fit.posterior.alpha[0]) - alpha_t) <= 0.05 * alpha_t
    alpha, beta = float(fit.posterior.alpha[0]), float(fit.posterior.beta[0])
    new_alpha, new_beta = _exact_update(fit, X, y, alpha, beta)
    np.testing.assert_allclose(new_alpha, alpha, rtol=0.15)
    np.testing.assert_allclose(new_beta, beta, rtol=0.1)
    # and it moved: the starting α was far from the fixed point
    assert alpha > 0.1


def test_exact_rounds_end_on_mackays_update_at_the_returned_network():
    """With ``solver="exact"`` (the dense GGN: MacKay's 1992 evidence framework without
    sampling) the last round's step is the exact update around the returned w̄ from the
    (α, β) it started at: α = γ/‖w̄‖², β = (n − γ)/‖y − f(w̄)‖², γ = Tr((G + α)⁻¹G),
    G = βJᵀJ, to rounding; and that α is within tol of the one the network was trained at."""
    fit, X, y = _fit(
        alpha=1e-2,
        rounds=12,
        tol=0.02,
        training=blm.Training(first_steps=3000, steps=1500, batch_size=60, learning_rate=1e-2),
        em=blm.EMOptions(n_samples=4, solver="exact", em_steps=1),
    )
    assert fit.converged and fit.posterior.exact is not None
    alpha_t = fit.alphas[-1]
    assert abs(float(fit.posterior.alpha[0]) - alpha_t) <= 0.02 * alpha_t
    alpha0, beta0 = fit.posterior.trajectory.alpha[0][0], fit.posterior.trajectory.beta[0][0]
    assert alpha0 == alpha_t
    new_alpha, new_beta = _exact_update(fit, X, y, alpha0, beta0)
    np.testing.assert_allclose(fit.posterior.alpha, [new_alpha], rtol=1e-8)
    np.testing.assert_allclose(fit.posterior.beta, [new_beta], rtol=1e-8)


def test_only_the_last_round_solves_at_its_fitted_alpha(monkeypatch):
    """A round that retrains skips the solve at its fitted α (the next round's first
    E-step solves there around the new w̄): em_steps solves per such round, em_steps + 1
    in the last, whose posterior (returned) is solved at the α it reports."""
    import blm.pipeline
    import blm.solvers.config

    fits, solves = [], []
    fit_mackay, sgd = blm.pipeline.fit_mackay, blm.solvers.config.sgd

    def counted_fit(*args, **kwargs):
        fits.append(fit_mackay(*args, **kwargs))
        return fits[-1]

    def counted_sgd(*args, **kwargs):
        solves.append(1)
        return sgd(*args, **kwargs)

    monkeypatch.setattr(blm.pipeline, "fit_mackay", counted_fit)
    monkeypatch.setattr(blm.solvers.config, "sgd", counted_sgd)
    with pytest.warns(UserWarning, match="rounds=3"):  # tol=1e-6: no round settles
        fit, _, _ = _fit(
            alpha=1e-2,
            rounds=3,
            tol=1e-6,
            training=blm.Training(first_steps=500, steps=200),
            em=blm.EMOptions(n_samples=4, solver=blm.SGD(n_steps=200)),
        )
    assert [f.solved_at_final for f in fits] == [False, False, True]
    assert len(solves) == sum(f.n_iter for f in fits) + 1 == 10
    assert fit.posterior.samples is fits[-1].posterior.samples
    np.testing.assert_array_equal(fit.posterior.alpha, fits[-1].alpha)


def test_running_out_of_rounds_warns_and_says_so():
    with pytest.warns(UserWarning, match="rounds=1"):
        fit, _, _ = _fit(
            alpha=1e-4,
            rounds=1,
            training=blm.Training(first_steps=500),
            em=blm.EMOptions(n_samples=4, solver=blm.SGD(n_steps=200)),
        )
    assert not fit.converged and fit.alphas == [1e-4]


def test_bad_arguments_are_named():
    net, X, y = _regression()
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="alpha"):
        train_with_evidence(net, (X, y), Gaussian(1.0), key, alpha=0.0)
    with pytest.raises(ValueError, match="rounds"):
        train_with_evidence(net, (X, y), Gaussian(1.0), key, rounds=0)
    with pytest.raises(ValueError, match="steps"):
        blm.Training(steps=0)
    with pytest.raises(ValueError, match="em_steps"):
        blm.EMOptions(em_steps=0)
    # per-layer α and the rounds' own settings (α, β, key, warm start) have no field here
    with pytest.raises(TypeError, match="per_layer"):
        blm.EMOptions(per_layer=True)
    with pytest.raises(TypeError, match="em must be blm.EMOptions"):
        train_with_evidence(net, (X, y), Gaussian(1.0), key, em={"n_samples": 4})
    with pytest.raises(TypeError, match="training must be blm.Training"):
        train_with_evidence(net, (X, y), Gaussian(1.0), key, training={"n_steps": 5})


@EM_STOPPED_EARLY
def test_fit_warm_start_is_used_and_its_shape_checked():
    """With a step size of ~0 the samples cannot move: they come back as given."""
    net, X, y = _regression()
    lm = linearise(net, (X, y), Gaussian(1.0))
    given = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (4, lm.features.d)))
    post = lm.fit(
        n_samples=4,
        em_steps=1,
        solver=blm.SGD(n_steps=2, learning_rate=1e-30),
        warm=blm.WarmStart(samples=given),
    )
    np.testing.assert_allclose(post.samples, given, atol=1e-12)
    with pytest.raises(ValueError, match="warm.samples"):
        lm.fit(n_samples=4, warm=blm.WarmStart(samples=np.zeros((3, lm.features.d))))


def test_fit_warns_when_em_is_still_travelling():
    """From α far below what the evidence wants, one EM step moves α by orders of
    magnitude: the fit says it has not converged rather than returning it silently."""
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (60, 4)))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    net = eqx.nn.MLP(4, 3, 16, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    lm = linearise(net, (X, y), Categorical(3))
    with pytest.warns(UserWarning, match="em_steps=1"):
        lm.fit(
            n_samples=4,
            em_steps=1,
            solver=blm.SGD(n_steps=100),
            start=blm.Hyperparameters(alpha=1e-5),
        )
