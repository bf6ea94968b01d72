"""Solvers and hyperparameter rules as configuration objects (issue 35, items 1, 2, 7):
each validates its fields where it is built and names the one that is wrong; a string
names the default object; the front doors refuse an object of the wrong kind by the
argument's name; the objects round-trip through a saved model; and the command line
fits as the Python API does with the same defaults."""

import subprocess
import sys
import warnings

import equinox as eqx
import h5py
import jax
import numpy as np
import pytest

import blm
from blm.estimator_defaults import ESTIMATOR_DEFAULTS
from blm.evidence.loop import LoopSettings
from blm.solvers.cg import CGSettings


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: blm.CG(tol=-1.0), "CG.tol must be a positive number"),
        (lambda: blm.CG(tol=float("nan")), "CG.tol must be a positive number"),
        (lambda: blm.CG(max_iter=0), "CG.max_iter must be an integer >= 1"),
        (lambda: blm.CG(preconditioner="ilu"), "CG.preconditioner must be one of"),
        (lambda: blm.CG(preconditioner="jacobi", coarse_blocks=[0, 1]), "CG.coarse_blocks"),
        (lambda: blm.CG(adaptive_tol="yes"), "CG.adaptive_tol must be True, False or None"),
        (lambda: blm.SGD(n_steps=0), "SGD.n_steps must be an integer >= 1"),
        (lambda: blm.SGD(n_steps=2.5), "SGD.n_steps must be an integer"),
        (lambda: blm.SGD(batch_size=-3), "SGD.batch_size"),
        (lambda: blm.SGD(learning_rate=0.0), "SGD.learning_rate must be a positive number"),
        (lambda: blm.SGD(momentum=1.0), r"SGD.momentum must be in \[0, 1\)"),
        (lambda: blm.SGD(polyak=1.5), "SGD.polyak"),
        (lambda: blm.SGD(tol=1e-4), "SGD.tol needs svrg"),
        (lambda: blm.SGD(svrg=True), "SGD.svrg must be blm.SVRG"),
        (lambda: blm.SGD(objective="adam"), "SGD.objective"),
        (lambda: blm.SVRG(snapshot_every=0), "SVRG.snapshot_every must be an integer >= 1"),
        (lambda: blm.Exact(form="cholesky"), "Exact.form must be"),
        (lambda: blm.MacKay(gamma="exact"), "MacKay.gamma must be one of"),
        (lambda: blm.EvidenceAscent(learning_rate=-0.1), "EvidenceAscent.learning_rate"),
        (lambda: blm.EvidenceAscent(slq={"depth": 5}), "EvidenceAscent.slq must be blm.SLQ"),
        (lambda: blm.SLQ(depth=0), "depth"),
        (lambda: blm.MacKay(centre="mode"), "MacKay.centre must be one of"),
        (lambda: blm.Hyperparameters(alpha=0.0), "alpha must be strictly positive"),
        (lambda: blm.Hyperparameters(beta=-1.0), "beta must be strictly positive"),
        (lambda: blm.Hyperparameters(fixed_alpha={"a": 1.0}), "fixed_alpha needs per_layer"),
        (
            lambda: blm.Hyperparameters(per_layer=True, fixed_alpha={"a": 0.0}),
            r"fixed_alpha\['a'\] must be strictly positive",
        ),
        (lambda: blm.EMOptions(n_samples=0), "n_samples must be >= 1"),
        (lambda: blm.EMOptions(em_steps=0), "em_steps must be >= 1"),
        (lambda: blm.EMOptions(tol=0.0), "tol must be strictly positive"),
        (lambda: blm.Training(first_steps=0), "first_steps must be >= 1"),
        (lambda: blm.Training(learning_rate=-1.0), "learning_rate must be strictly positive"),
        (lambda: CGSettings(tol=-1e-3), "tol must be strictly positive"),
        (lambda: CGSettings(max_iter=0), "max_iter must be >= 1"),
        (lambda: LoopSettings(max_iter=-1), "max_iter must be >= 0"),
    ],
)
def test_each_object_names_the_field_it_refuses(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: blm.Hyperparameters(per_layer="yes"), "per_layer must be True or False"),
        (
            lambda: blm.Hyperparameters(per_layer=True, fixed_alpha=[2.0]),
            "fixed_alpha must map layer names",
        ),
        (lambda: blm.WarmStart(final_solve="no"), "final_solve must be True, False or a function"),
        (lambda: LoopSettings(final_solve=1.0), "final_solve must be True, False or a function"),
    ],
)
def test_each_object_names_the_field_of_the_wrong_type(build, match):
    with pytest.raises(TypeError, match=match):
        build()


def _diabetes():
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True)


def test_the_front_doors_name_the_argument_given_the_wrong_object():
    X, y = _diabetes()
    with pytest.raises(TypeError, match="solver must be one of 'exact', 'cg', 'sgd'"):
        blm.BayesianLinearRegression(solver=blm.MacKay()).fit(X, y)
    with pytest.raises(ValueError, match="solver must be one of .* got 'lbfgs'"):
        blm.BayesianLinearRegression(solver="lbfgs").fit(X, y)
    with pytest.raises(TypeError, match="hyper must be one of 'mackay', 'evidence'"):
        blm.BayesianLinearRegression(hyper=blm.CG()).fit(X, y)
    with pytest.raises(ValueError, match="hyper must be one of .* got 'adam'"):
        blm.BayesianLinearRegression(hyper="adam").fit(X, y)
    net = eqx.nn.Linear(3, 1, key=jax.random.PRNGKey(0))
    Xn = np.random.default_rng(0).normal(size=(20, 3))
    lm = blm.linearise(net, (Xn, Xn[:, :1]), blm.Gaussian(1.0))
    with pytest.raises(ValueError, match="hyper: LinearisedModel.fit fits by MacKay EM"):
        lm.fit(hyper=blm.EvidenceAscent())
    with pytest.raises(TypeError, match="solver must be one of"):
        lm.fit(solver=blm.SLQ())
    with pytest.raises(TypeError, match=r"start must be blm.Hyperparameters\(...\)"):
        lm.fit(start={"alpha": 2.0})
    with pytest.raises(TypeError, match=r"warm must be blm.WarmStart\(...\)"):
        lm.fit(warm=np.zeros((16, 4)))


def test_strings_are_the_default_objects_and_none_fields_take_the_problems_defaults():
    from blm.solvers.config import DESIGN_DEFAULTS, NETWORK_DEFAULTS, as_solver

    assert as_solver("cg") == blm.CG() and as_solver("sgd") == blm.SGD()
    assert blm.CG().resolved(DESIGN_DEFAULTS).tol == 1e-6
    assert blm.CG().resolved(NETWORK_DEFAULTS).tol == 1e-4
    assert blm.CG(tol=1e-3).resolved(NETWORK_DEFAULTS).tol == 1e-3  # given: kept
    design, network = (blm.SGD().resolved(d) for d in (DESIGN_DEFAULTS, NETWORK_DEFAULTS))
    assert (design.n_steps, design.precondition) == (2000, True)
    assert (network.n_steps, network.precondition) == (1000, False)
    assert blm.MacKay().resolved(DESIGN_DEFAULTS).gamma == "combined"
    assert blm.MacKay().resolved(NETWORK_DEFAULTS).gamma == "data"
    config = blm.SGD(svrg=blm.SVRG(), tol=1e-4).resolved(DESIGN_DEFAULTS).config(1000)
    assert config.snapshot_every == 2 and config.momentum == 0.5  # half an epoch of 256
    assert blm.SGD().resolved(DESIGN_DEFAULTS).config(100).batch_size == 100


def test_a_string_and_its_object_fit_the_same_and_objects_round_trip(tmp_path):
    X, y = _diabetes()
    kw = {"n_samples": 4, "random_state": 0, "max_iter": 5}
    by_name = blm.BayesianLinearRegression(solver="cg", **kw).fit(X, y)
    by_object = blm.BayesianLinearRegression(solver=blm.CG(tol=1e-6), **kw).fit(X, y)
    np.testing.assert_array_equal(by_name.samples_, by_object.samples_)
    rule = blm.EvidenceAscent(learning_rate=0.05, slq=blm.SLQ(depth=8, n_probes=3))
    solver = blm.SGD(n_steps=50, batch_size=64, svrg=blm.SVRG(snapshot_every=5), tol=1e-3)
    est = blm.BayesianLinearRegression(solver=solver, hyper=rule, **kw)
    est.fit(X, y)
    est.save(tmp_path / "m.h5")
    back = blm.BayesianLinearRegression.load(tmp_path / "m.h5")
    assert back.solver == solver and back.hyper == rule
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "blm", *map(str, args)], capture_output=True, text=True
    )


def test_blm_fit_without_options_is_the_estimators_default_fit(tmp_path):
    """One table of defaults: `blm fit DATA.h5` (float32, JAX's default for a file) fits
    as `BayesianLinearRegression().fit` of the same file does."""
    X, y = _diabetes()
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X.astype(np.float32), y.astype(np.float32)
    out = _run("fit", path, "--quiet", "--out", tmp_path / "post.h5")
    assert out.returncode == 0, out.stderr
    cli = blm.BayesianLinearRegression.load(tmp_path / "post.h5")
    with jax.enable_x64(False):
        ref = blm.BayesianLinearRegression().fit(blm.HDF5Dataset(path))
    assert cli.get_params() == {**ref.get_params(), "random_state": 0, "progress": False}
    assert cli.solver == ESTIMATOR_DEFAULTS["solver"] and cli.max_iter == 300
    assert cli.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(cli.alpha_, ref.alpha_, rtol=1e-6)
    np.testing.assert_allclose(cli.beta_, ref.beta_, rtol=1e-6)
    np.testing.assert_allclose(cli.coef_, ref.coef_, rtol=1e-5, atol=1e-5 * abs(ref.coef_).max())


def test_a_file_saved_with_the_old_option_dicts_loads_as_objects(tmp_path):
    """Posterior files written before solvers and rules were objects kept
    ``solver_options``, ``gamma_estimator`` and ``evidence_options`` in their settings:
    they load, as the objects those dicts configured."""
    import json

    X, y = _diabetes()
    est = blm.BayesianLinearRegression(solver="sgd", n_samples=2, max_iter=2, random_state=0)
    with warnings.catch_warnings():  # two steps: not converged, and it says so
        warnings.simplefilter("ignore")
        est.fit(X, y)
    for old, solver, hyper in [
        (
            {
                "solver": "sgd",
                "solver_options": {
                    "n_steps": 50,
                    "snapshot_every": 5,
                    "tol": 1e-3,
                    "progress": True,
                },
                "gamma_estimator": "data",
                "hyper": "mackay",
            },
            blm.SGD(n_steps=50, svrg=blm.SVRG(snapshot_every=5), tol=1e-3),
            blm.MacKay(gamma="data"),
        ),
        (
            {
                "solver": "cg",
                "solver_options": {"tol": 1e-8, "coarse_blocks": False},
                "gamma_estimator": "combined",
                "hyper": "evidence",
                "evidence_options": {"depth": 20, "learning_rate": 0.3},
            },
            blm.CG(tol=1e-8, preconditioner="jacobi"),
            blm.EvidenceAscent(learning_rate=0.3, slq=blm.SLQ(depth=20)),
        ),
        ({"solver": "cg", "solver_options": None, "gamma_estimator": "combined"}, "cg", "mackay"),
    ]:
        path = tmp_path / "old.h5"
        est.save(path)
        with h5py.File(path, "r+") as f:
            params = json.loads(f.attrs["params"])
            params.update(old)
            params.setdefault("hyper", "mackay")
            f.attrs["params"] = json.dumps(params)
        back = blm.BayesianLinearRegression.load(path)
        assert back.solver == solver and back.hyper == hyper
        np.testing.assert_array_equal(back.coef_, est.coef_)
