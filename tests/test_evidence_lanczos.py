"""The SLQ log evidence, its adjoint gradients, and evidence ascent, against the dense
closed form (float64)."""

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matfree import funm

import blm
from blm import ArrayDataset, BayesianLinearRegression, Gaussian, LinearFeatures, Prior
from blm import operators as ops
from blm.data import HDF5Dataset
from blm.evidence.ascent import fit_evidence
from blm.evidence.closed_form import DenseGaussianModel
from blm.evidence.lanczos import (
    SLQ,
    basis_probes,
    logm_sym,
    rademacher_probes,
    slq_log_evidence,
    slq_logdet,
)
from blm.evidence.loop import LoopSettings
from blm.likelihoods import Categorical
from blm.network import NetworkFeatures
from blm.solvers.problem import Problem
from tests.conftest import random_problem


def _problem(rng, n=50, p=14, m=1, groups=None, alpha=(0.7,), beta=(1.3,)):
    X, Y = random_problem(rng, n, p, m, decay=0.5)
    feats, ds = LinearFeatures(p, m), ArrayDataset(X, Y)
    groups = np.zeros(p * m, np.int32) if groups is None else groups
    prior, lik = Prior(np.asarray(alpha), groups), Gaussian(np.asarray(beta), m)
    model = DenseGaussianModel.from_data(feats, ds)
    return feats, ds, prior, lik, model


def _dense_h(model, prior, lik):
    gram = jnp.einsum("k,nkd,nke->de", lik.beta, model.Phi, model.Phi)
    return gram + jnp.diag(prior.precision())


def _dense_grad(model, prior, lik):
    value, g_alpha, g_beta, post = model.log_evidence_and_grad(prior, lik.beta)
    return float(value), np.asarray(g_alpha), np.asarray(g_beta), post.mean


def test_full_depth_slq_equals_slogdet(rng):
    """K = d with the basis probes √d e_i: Lanczos quadrature is exact per probe and the
    probe average is the trace, so SLQ log det H = slogdet(H)."""
    feats, ds, prior, lik, model = _problem(rng, groups=np.arange(14) % 3, alpha=(0.5, 2.0, 9.0))
    H = _dense_h(model, prior, lik)
    blocks = ops.StackedBlocks.from_dataset(ds, 16)

    def hmul(v):
        return ops.normal_operator((v, lik.beta), feats, lik, blocks) + prior.mul(v)

    exact = np.linalg.slogdet(np.asarray(H))[1]
    np.testing.assert_allclose(slq_logdet(hmul, basis_probes(14), 14), exact, rtol=1e-10)
    # shallower: still a lower-order quadrature, visibly wrong at K = 2
    assert abs(float(slq_logdet(hmul, basis_probes(14), 2)) - exact) > 1e-3


def test_slq_estimate_is_unbiased_within_its_variance(rng):
    """Rademacher probes: Var of one probe's vᵀlog(H)v is 2 Σ_{i≠j} (log H)_ij²; the mean of
    P = 400 probes at full depth lies within 4 standard errors (a factor 2 would not)."""
    feats, ds, prior, lik, model = _problem(rng, n=30, p=40, alpha=(3.0,))
    H = np.asarray(_dense_h(model, prior, lik))
    lam, V = np.linalg.eigh(H)
    logH = (V * np.log(lam)) @ V.T
    sd = np.sqrt(2 * (np.sum(logH**2) - np.sum(np.diag(logH) ** 2)) / 400)
    probes = rademacher_probes(jax.random.PRNGKey(0), 400, 40)
    est = float(slq_logdet(lambda v: jnp.asarray(H) @ v, probes, 40, probe_batch=100))
    exact = np.sum(np.log(lam))
    assert abs(est - exact) < 4 * sd
    assert 4 * sd < 0.1 * abs(exact)  # tight enough to catch a wrong factor or term


@pytest.mark.parametrize(
    "m, groups, alpha, beta",
    [
        (1, None, (0.7,), (1.3,)),  # scalar α, scalar β
        (1, np.arange(14) % 3, (0.5, 2.0, 9.0), (1.3,)),  # per-group α_g
        (2, np.tile(np.arange(14) % 2, 2), (0.5, 3.0), (1.3, 0.4)),  # per-output β_k
    ],
)
def test_evidence_gradients_match_dense_autodiff_and_finite_differences(
    rng, m, groups, alpha, beta
):
    feats, ds, prior, lik, model = _problem(rng, m=m, groups=groups, alpha=alpha, beta=beta)
    value, g_alpha, g_beta, mean = _dense_grad(model, prior, lik)
    # the output blocks of H decouple, so each basis probe's Krylov space has dimension p
    config = SLQ(depth=14, block_size=16)
    v, ga, gb, info = slq_log_evidence(feats, lik, prior, ds, mean, basis_probes(14 * m), config)
    np.testing.assert_allclose(v, value, rtol=1e-10)
    np.testing.assert_allclose(ga, g_alpha, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gb, g_beta, rtol=1e-7, atol=1e-8)

    # central finite differences of the dense evidence in log α_g and log β_k
    def dense_value(la, lb):
        b = jnp.exp(lb)
        return float(model.log_evidence(model.posterior(prior.with_alpha(jnp.exp(la)), b), b))

    la, lb, h = np.log(alpha), np.log(lik.beta), 1e-5
    for i in range(len(la)):
        e = np.eye(len(la))[i] * h
        fd = (dense_value(la + e, lb) - dense_value(la - e, lb)) / (2 * h)
        np.testing.assert_allclose(ga[i], fd, rtol=1e-5, atol=1e-6)
    for k in range(len(lb)):
        e = np.eye(len(lb))[k] * h
        fd = (dense_value(la, lb + e) - dense_value(la, lb - e)) / (2 * h)
        np.testing.assert_allclose(gb[k], fd, rtol=1e-5, atol=1e-6)


def test_adjoint_equals_backprop_through_the_same_lanczos_run(rng):
    feats, ds, prior, lik, model = _problem(
        rng, n=60, p=30, groups=np.arange(30) % 2, alpha=(0.4, 3.0)
    )
    *_, mean = _dense_grad(model, prior, lik)
    probes = rademacher_probes(jax.random.PRNGKey(3), 5, 30)
    out = [
        slq_log_evidence(feats, lik, prior, ds, mean, probes, SLQ(depth=8, adjoint=a))
        for a in (True, False)
    ]
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-12)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-9)
    np.testing.assert_allclose(out[0][2], out[1][2], rtol=1e-9)


def test_log_vjp_is_finite_and_exact_at_repeated_eigenvalues():
    """eigh's VJP divides by λ_i − λ_j; the Daleckii–Krein VJP of logm_sym has the limit 1/λ.
    Oracle: the directional derivative of the scalar u ᵀlog(T + tE)u by finite differences
    (E symmetric), where T = diag(2, 2, 5) has a double eigenvalue."""
    Q = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))[0]
    T = jnp.diag(jnp.asarray([2.0, 2.0, 5.0]))
    E = jnp.asarray([[0.3, 0.1, -0.2], [0.1, -0.5, 0.4], [-0.2, 0.4, 0.7]])
    u = jnp.asarray([0.6, -0.3, 0.9])

    def quad(f, A):
        return u @ f(A) @ u

    eigh_log = funm.dense_funm_sym_eigh(jnp.log)
    assert not np.all(np.isfinite(jax.grad(lambda A: quad(eigh_log, A))(T)))
    g = jax.grad(lambda A: quad(logm_sym, A))(T)
    fd = (quad(logm_sym, T + 1e-6 * E) - quad(logm_sym, T - 1e-6 * E)) / 2e-6
    np.testing.assert_allclose(jnp.sum(g * E), fd, rtol=1e-6)
    # distinct eigenvalues: the same as eigh's VJP
    T2 = jnp.asarray(Q @ np.diag([1.0, 2.0, 5.0]) @ Q.T)
    np.testing.assert_allclose(
        jax.grad(lambda A: quad(logm_sym, A))(T2),
        jax.grad(lambda A: quad(eigh_log, A))(T2),
        rtol=1e-10,
    )


def test_lanczos_past_an_invariant_subspace_is_exact(rng):
    """n = 30 < d = 40: H = XᵀX + αI has 10 eigenvalues equal to α, so every probe's Krylov
    space is invariant after 31 steps and plain Lanczos continued to K = 40 produces
    indefinite garbage (log of negative Ritz values). Truncated at the breakdown, each
    probe's quadrature is exact: the estimate at K = 40 equals the one at K = 31 with
    the exact per-probe value, and adjoint = backprop = finite differences."""
    X = jnp.asarray(rng.standard_normal((30, 40)))
    probes = rademacher_probes(jax.random.PRNGKey(0), 6, 40)

    def matvec(v, la):
        return X.T @ (X @ v) + jnp.exp(la) * v

    def estimate(la, depth, adjoint=True):
        return slq_logdet(matvec, probes, depth, la, adjoint=adjoint)

    H = np.asarray(X.T @ X) + np.exp(0.5) * np.eye(40)
    lam, V = np.linalg.eigh(H)
    per_probe = np.einsum("pd,de,pe->p", probes, (V * np.log(lam)) @ V.T, probes)
    np.testing.assert_allclose(estimate(0.5, 40), per_probe.mean(), rtol=1e-9)
    np.testing.assert_allclose(estimate(0.5, 40), estimate(0.5, 31), rtol=1e-10)
    g = float(jax.grad(estimate)(0.5, 40))
    assert np.isfinite(g)
    np.testing.assert_allclose(g, jax.grad(estimate)(0.5, 40, False), rtol=1e-9)
    fd = (float(estimate(0.5 + 1e-5, 40)) - float(estimate(0.5 - 1e-5, 40))) / 2e-5
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_breakdown_is_reported_not_returned(rng):
    """Basis probes on a 2-output model: each probe's Krylov space is one output block
    (dimension 14), so depth 28 divides 0 by 0."""
    feats, ds, prior, lik, model = _problem(rng, m=2, alpha=(0.5,), beta=(1.3, 0.4))
    *_, mean = _dense_grad(model, prior, lik)
    with pytest.raises(FloatingPointError, match="depth: Lanczos broke down at Krylov depth 28"):
        slq_log_evidence(feats, lik, prior, ds, mean, basis_probes(28), SLQ(depth=28))


def test_normal_operator_and_its_vjp_for_a_network_and_for_gaussian_beta(rng):
    """ΦᵀBΦv for a softmax network (B non-diagonal) equals the dense GGN product; the VJP in
    v is the same operator; for a Gaussian the β-cotangent is Σ_i (Φc)_ik(Φv)_ik."""
    net = eqx.nn.MLP(3, 3, 8, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    feats = NetworkFeatures(net, (3,))
    X = rng.standard_normal((11, 3))
    lik = Categorical(3)
    ds = ArrayDataset(X, np.zeros((11, 3)))
    J = feats.dense(jnp.asarray(X))  # (n, m, d)
    L = lik.sqrt_precision(feats.offset(jnp.asarray(X)))
    G = jnp.einsum("nmd,nml,nkl,nke->de", J, L, L, J)
    blocks = ops.StackedBlocks.from_dataset(ds, 4)
    v, c = rng.standard_normal((2, feats.d))
    empty = jnp.zeros(0)
    np.testing.assert_allclose(
        ops.normal_operator((v, empty), feats, lik, blocks), G @ v, rtol=1e-10, atol=1e-12
    )
    _, vjp = jax.vjp(lambda u: ops.normal_operator((u, empty), feats, lik, blocks), jnp.asarray(v))
    np.testing.assert_allclose(vjp(jnp.asarray(c))[0], G @ c, rtol=1e-10, atol=1e-12)

    feats_lin, ds_lin, _, glik, model = _problem(rng, m=2, beta=(1.3, 0.4))
    blocks = ops.StackedBlocks.from_dataset(ds_lin, 16)
    v, c = rng.standard_normal((2, 28))

    def dense(u, beta):
        return jnp.einsum("k,nkd,nke,e->d", beta, model.Phi, model.Phi, u)

    def ours(u, beta):
        return ops.normal_operator((u, beta), feats_lin, glik, blocks)

    np.testing.assert_allclose(ours(v, glik.beta), dense(v, glik.beta), rtol=1e-10)
    g_ours = jax.vjp(ours, jnp.asarray(v), glik.beta)[1](jnp.asarray(c))
    g_dense = jax.vjp(dense, jnp.asarray(v), glik.beta)[1](jnp.asarray(c))
    for a, b in zip(g_ours, g_dense, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_estimator_evidence_ascent_reaches_mackays_fixed_point(rng):
    """Both maximise the same score: exact evidence ascent lands on MacKay's fixed point,
    and SLQ ascent around CG lands within the probe noise of it."""
    X, Y = random_problem(rng, 200, 30, 1, decay=1.0)
    y = Y[:, 0]
    mackay = BayesianLinearRegression(solver="exact").fit(X, y)
    ascent = BayesianLinearRegression(solver="exact", hyper="evidence").fit(X, y)
    np.testing.assert_allclose(ascent.alpha_, mackay.alpha_, rtol=1e-4)
    np.testing.assert_allclose(ascent.beta_, mackay.beta_, rtol=1e-4)
    np.testing.assert_allclose(ascent.scores_[-1], mackay.scores_[-1], rtol=1e-8)
    assert np.all(np.diff(ascent.trajectory_.score[:20]) > -1e-9)  # an ascent
    gamma = ascent.trajectory_.gamma[-1]
    np.testing.assert_allclose(gamma, mackay.trajectory_.gamma[-1], rtol=1e-3)

    slq = BayesianLinearRegression(
        solver="cg",
        hyper=blm.EvidenceAscent(learning_rate=0.3, slq=blm.SLQ(depth=30, n_probes=64)),
        n_samples=1,
        random_state=0,
        max_iter=300,
        tol=1e-4,
    ).fit(X, y)
    np.testing.assert_allclose(slq.alpha_, mackay.alpha_, rtol=0.05)
    np.testing.assert_allclose(slq.beta_, mackay.beta_, rtol=0.02)
    assert np.isfinite(slq.trajectory_.score).all()


def test_fit_evidence_with_random_features_and_grouped_prior():
    """fit_evidence around any solver (here the exact mean, so the test isolates the SLQ
    gradient and the Adam loop): per-group α_g and β land within the probe noise
    (64 probes: a few %) of the exact evidence maximiser, MacKay's exact fixed point."""
    from blm import RandomFourierFeatures
    from blm.evidence.closed_form import GammaHyperprior
    from blm.evidence.loop import iterate_hyperparameters
    from blm.solvers.sampled import SampledPosterior

    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (400, 2))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.2 * rng.standard_normal(400)
    feats = RandomFourierFeatures(jax.random.PRNGKey(0), 2, 40, lengthscale=1.0)
    ds = ArrayDataset(x, y - y.mean())
    prior = Prior.grouped(np.ones(2), np.arange(40) % 2)
    model = DenseGaussianModel.from_data(feats, ds)

    @jax.jit
    def mackay(alpha, beta):
        a, b, _ = model.mackay_step(prior.with_alpha(alpha), beta, GammaHyperprior())
        return a, b, {}

    alpha_star, beta_star, *_ = iterate_hyperparameters(mackay, np.ones(2), np.ones(1), 3000, 1e-10)
    mean_at = jax.jit(lambda a, b: model.posterior(prior.with_alpha(a), b).mean)

    def solve(lik, p, init):
        return SampledPosterior(mean=mean_at(p.alpha, lik.beta), samples=jnp.zeros((1, 40))), None

    fit = fit_evidence(
        solve,
        Problem(feats, Gaussian(1.0), prior, ds),
        jax.random.PRNGKey(5),
        LoopSettings(max_iter=1000, tol=1e-4),
        slq=SLQ(depth=40, n_probes=64),
        learning_rate=0.2,
    )
    np.testing.assert_allclose(fit.alpha, alpha_star, rtol=0.05)
    np.testing.assert_allclose(fit.beta, beta_star, rtol=0.01)
    assert fit.n_iter < 1000 and len(fit.trajectory.score) == fit.n_iter
    # its γ (read off the gradient) is the exact effective dimension to the same noise
    post = model.posterior(prior.with_alpha(alpha_star), beta_star)
    gamma = 40 - float(jnp.sum(post.prior.precision() * post.diag_covariance()))
    np.testing.assert_allclose(fit.trajectory.gamma[-1], gamma, rtol=0.05)


def test_bad_input_is_named(rng):
    feats, ds, prior, lik, model = _problem(rng)
    mean = jnp.zeros(14)
    with pytest.raises(TypeError, match="likelihood: the evidence"):
        slq_log_evidence(feats, Categorical(3), prior, ds, mean, basis_probes(14))
    with pytest.raises(ValueError, match="depth: Krylov depth 20 exceeds d=14"):
        slq_log_evidence(feats, lik, prior, ds, mean, basis_probes(14), SLQ(depth=20))
    with pytest.raises(ValueError, match="probes must have d=14"):
        slq_log_evidence(feats, lik, prior, ds, mean, basis_probes(5), SLQ(depth=5))
    with pytest.raises(ValueError, match="n_probes"):
        SLQ(n_probes=0)
    X, y = np.asarray(ds.X), np.asarray(ds.y)[:, 0]
    with pytest.raises(ValueError, match="hyper must be one of"):
        BayesianLinearRegression(hyper="laplace").fit(X, y)
    with pytest.raises(TypeError, match="EvidenceAscent.__init__.. got an unexpected keyword"):
        blm.EvidenceAscent(steps=3)
    with pytest.raises(ValueError, match="EvidenceAscent.slq must be blm.SLQ"):
        blm.EvidenceAscent(slq={"depth": 3})


def test_slq_evidence_streams_an_hdf5_file_inside_its_traced_loop(rng, tmp_path):
    """Lanczos and its adjoint read the file block by block (``StreamedBlocks``: a host
    callback per block inside the scan): value and gradients equal the in-memory ones,
    and at full depth with basis probes the dense closed form."""
    feats, ds, prior, lik, model = _problem(rng, n=50, groups=np.arange(14) % 2, alpha=(0.5, 3.0))
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = np.asarray(ds.X), np.asarray(ds.y)
    disk = HDF5Dataset(path, block_size=16)
    blocks = ops.traced_blocks(feats, disk)
    assert isinstance(blocks, ops.StreamedBlocks) and blocks.n_blocks == 4
    assert not jax.tree_util.tree_leaves(blocks)  # no rows held
    value, g_alpha, g_beta, post = _dense_grad(model, prior, lik)
    config = SLQ(depth=14, block_size=16)
    streamed = slq_log_evidence(feats, lik, prior, disk, post, basis_probes(14), config)
    in_memory = slq_log_evidence(feats, lik, prior, ds, post, basis_probes(14), config)
    for a, b in zip(streamed[:3], in_memory[:3], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    np.testing.assert_allclose(streamed[0], value, rtol=1e-8)
    np.testing.assert_allclose(streamed[1], g_alpha, rtol=1e-6)
    np.testing.assert_allclose(streamed[2], g_beta, rtol=1e-6)
    # the other traced passes (top GGN eigenpairs of the information form) stream too
    from blm.uncertainty.information import lanczos_information_form

    forms = [
        lanczos_information_form(feats, lik, data, post, jax.random.PRNGKey(0), 4, 1.0, 14, 16)
        for data in (disk, ds)
    ]
    np.testing.assert_allclose(forms[0].lam, forms[1].lam, rtol=1e-9)
    np.testing.assert_allclose(forms[0].D, forms[1].D, rtol=1e-9)
    ggn = np.asarray(_dense_h(model, prior, lik)) - np.diag(np.asarray(prior.precision()))
    top = np.sort(np.linalg.eigvalsh(ggn))[-4:]  # a Gaussian's GGN carries its β
    np.testing.assert_allclose(np.sort(np.asarray(forms[0].lam)), top, rtol=1e-8)


def test_fit_evidence_refuses_a_likelihood_without_noise_precision(rng):
    feats, ds, prior, lik, model = _problem(rng)
    with pytest.raises(TypeError, match="likelihood: evidence ascent fits a Gaussian"):
        fit_evidence(None, Problem(feats, Categorical(3), prior, ds), jax.random.PRNGKey(0))
    from blm.evidence.ascent import AdamAscent

    with pytest.raises(ValueError, match="learning_rate"):
        AdamAscent(np.ones(1), np.ones(1), learning_rate=0.0)
    with pytest.raises(ValueError, match="block_size"):
        ops.StackedBlocks.from_dataset(ds, 0)
