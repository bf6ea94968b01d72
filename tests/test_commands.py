"""blm fit / predict / info as a user runs them, bad input, and checkpoint/resume."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from unittest import mock

import h5py
import jax
import numpy as np
import pytest

import blm
from blm import BayesianLinearRegression, cli, commands

BLM = [sys.executable, "-m", "blm"]


def _run(*args):
    """``blm ARGS`` in this process, as the shell runs it: in JAX's default float32
    unless ``--float64`` (or a float64 posterior), stdout and stderr captured (not a
    terminal: no progress bars), no persistent compilation cache of the user's."""
    argv = list(map(str, args))
    stdout, stderr = io.StringIO(), io.StringIO()
    precision = contextlib.nullcontext() if "--float64" in argv else jax.enable_x64(False)
    with (
        mock.patch.object(cli, "keep_compiled_programs", lambda: None),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        precision,
    ):
        code = cli.main(argv)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 30))
    y = X @ (0.3 * rng.standard_normal(30)) + rng.standard_normal(2000) + 4.0
    path = tmp_path_factory.mktemp("cli") / "data.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"], f["g"], f["y_short"] = X, y, np.arange(30) % 2, y[:-1]
        f["w"], f["w_neg"] = rng.uniform(0.2, 3.0, 2000), -np.ones(2000)
        f["X_wide"] = np.hstack([X, X])
        for name, labels in (("g_named", ["late", "early"]), ("g_short_names", ["one"])):
            f[name] = np.arange(30) % 2
            f[name].attrs["names"] = np.asarray(labels, dtype=h5py.string_dtype())
    return path, X, y


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_fit_predict_info(tmp_path, data, precision):
    """The commands against the estimator in this (float64) process: in JAX's default
    float32 to 1e-5, with ``fit --float64`` to 1e-9, and predict/coef then compute in the
    posterior's float64 too (in float32 they would miss by ~1e-6)."""
    path, X, y = data
    post, pred = tmp_path / "post.h5", tmp_path / "pred.h5"
    wide = ["--float64"] if precision == "float64" else []
    out = _run("fit", path, "--solver", "exact", "--groups", "g", "--out", post, *wide)
    assert out.returncode == 0, out.stderr
    assert len(out.stderr) < 10_000  # stderr is not a terminal: no progress bars
    assert not (tmp_path / "post.h5.ckpt").exists()  # removed once the result is written
    ref = BayesianLinearRegression(prior_groups=np.arange(30) % 2).fit(X, y)  # the same defaults
    est = BayesianLinearRegression.load(post)
    assert np.asarray(est.posterior_.mean).dtype == precision
    close = 1e-5 if precision == "float32" else 1e-9
    np.testing.assert_allclose(est.alpha_, ref.alpha_, rtol=close / 10)
    np.testing.assert_allclose(est.beta_, ref.beta_, rtol=close / 10)
    out = _run("predict", post, path, "--out", pred, "--block-size", 300)
    assert out.returncode == 0, out.stderr
    with h5py.File(pred, "r") as f:
        mean, std = f["mean"][()], f["std"][()]
    ref_mean, ref_std = ref.predict(X, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=close, atol=close)
    np.testing.assert_allclose(std, ref_std, rtol=close)
    out = _run("coef", post, "--out", tmp_path / "coef.h5")
    assert out.returncode == 0 and "(exact) of 30 weights" in out.stdout, out.stderr
    assert "[95% credible interval]" in out.stdout and "x29" in out.stdout  # every row
    assert "intercept" in out.stdout and "noise sd" in out.stdout
    with h5py.File(tmp_path / "coef.h5", "r") as f:
        np.testing.assert_allclose(f["coef"][()], ref.coef_, rtol=close, atol=close / 10)
        np.testing.assert_allclose(f["std"][()], np.sqrt(np.diag(ref.sigma_)), rtol=close)
        np.testing.assert_allclose(f["intercept"][()], ref.intercept_, rtol=close, atol=close / 10)
    out = _run("info", post)
    assert out.returncode == 0 and "exact, mackay" in out.stdout and "p = 30" in out.stdout
    assert f"precision:       {precision}" in out.stdout


def test_fit_names_the_groups_from_the_files_names(tmp_path, data):
    """--groups with a ``names`` attribute (group g is names[g], as data_scripts write
    it) fits with those labels: α in their sorted order (here the integer order swapped),
    printed with the names by fit and info, kept by the posterior file; names that do
    not cover the values are refused by name."""
    path, X, y = data
    post = tmp_path / "post.h5"
    out = _run("fit", path, "--solver", "exact", "--groups", "g_named", "--out", post, "--quiet")
    assert out.returncode == 0, out.stderr
    ref = BayesianLinearRegression(prior_groups=np.arange(30) % 2).fit(X, y)  # the same defaults
    est = BayesianLinearRegression.load(post)
    np.testing.assert_array_equal(est.prior_group_names_, ["early", "late"])
    np.testing.assert_allclose(est.alpha_, ref.alpha_[::-1], rtol=1e-5)
    text = f"{{early: {est.alpha_[0]:.4g}, late: {est.alpha_[1]:.4g}}}"
    assert f"alpha = {text}" in out.stdout
    assert f"alpha:           {text}" in _run("info", post).stdout
    out = _run("fit", path, "--groups", "g_short_names", "--out", post, "--force")
    assert out.returncode != 0 and "must number its 1 names from 0" in out.stderr
    # --fixed-alpha names a group: its α is kept (0: flat, printed so), the other fitted
    fixed = ("--fixed-alpha", "late=0")
    out = _run(
        "fit", path, "--solver", "exact", "--groups", "g_named", *fixed, "--out", post, "--force"
    )
    assert out.returncode == 0, out.stderr
    est = BayesianLinearRegression.load(post)
    assert est.alpha_[1] == 0 and est.get_params()["fixed_alpha"] == {"late": 0.0}
    ref = BayesianLinearRegression(
        prior_groups=np.where(np.arange(30) % 2, "early", "late"),
        fixed_alpha={"late": 0.0},
        max_iter=30,
        tol=1e-3,
    ).fit(X, y)
    np.testing.assert_allclose(est.alpha_, ref.alpha_, rtol=1e-5)
    assert "late: flat" in out.stdout
    assert "alpha given:     late=0 (not fitted" in _run("info", post).stdout
    # parsing in-process (the estimator names unknown labels: tests/test_flat_prior.py)
    names = np.asarray(["late", "early"])
    assert commands._fixed_alpha(["late=0", "early=2.5"], names) == {"late": 0.0, "early": 2.5}
    assert commands._fixed_alpha(["1=0.5"], np.arange(3)) == {1: 0.5}
    for bad, groups in (("late", names), ("=1", names), ("x=1", np.arange(3))):
        with pytest.raises(ValueError, match="--fixed-alpha must be GROUP=ALPHA"):
            commands._fixed_alpha([bad], groups)
    with pytest.raises(ValueError, match="--fixed-alpha: needs --groups"):
        commands._fixed_alpha(["late=0"], None)


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "{dir}/missing.h5", "--out", "{dir}/p.h5"], "no HDF5 file at"),
        (["fit", "{data}", "--x", "Z", "--out", "{dir}/p.h5"], "x: no dataset named 'Z'"),
        (["fit", "{data}", "--y", "y_short", "--out", "{dir}/p.h5"], "must have the same number"),
        (["fit", "{data}", "--groups", "G", "--out", "{dir}/p.h5"], "--groups: no dataset"),
        (["fit", "{data}", "--weights", "W", "--out", "{dir}/p.h5"], "--weights: no dataset"),
        (["fit", "{data}", "--weights", "w_neg", "--out", "{dir}/p.h5"], "sample_weight must be"),
        (["fit", "{data}", "--out", "{dir}/p.h5", "--resume"], "no checkpoint at"),
        (
            ["predict", "{dir}/missing.h5", "{data}", "--out", "{dir}/q.h5"],
            "posterior: no HDF5 file",
        ),
        (["predict", "{data}", "{data}", "--out", "{dir}/q.h5"], "not a blm regression posterior"),
        (["info", "{dir}/missing.h5"], "posterior: no HDF5 file"),
        (["coef", "{data}", "--out", "{dir}/c.h5"], "not a blm regression posterior"),
        (
            ["fit", "{data}", "--solver", "exact", "--solver-tol", "1e-4", "--out", "{dir}/p.h5"],
            "--solver-tol applies to --solver sgd or cg",
        ),
        (
            ["fit", "{data}", "--solver", "sgd", "--solver-tol", "0", "--out", "{dir}/p.h5"],
            "--solver-tol must be",
        ),
        (["fit", "{data}", "--fixed-solver-tol", "--out", "{dir}/p.h5"], "--fixed-solver-tol"),
        (
            ["fit", "{data}", "--solver", "exact", "--fixed-solver-tol", "--out", "{dir}/p.h5"],
            "applies where a solve has a tolerance",
        ),
        (
            ["fit", "{data}", "--solver", "sgd", "--solver-tol", "nan", "--out", "{dir}/p.h5"],
            "--solver-tol must be",
        ),
        (
            ["fit", "{data}", "--solver", "cg", "--snapshot-every", "5", "--out", "{dir}/p.h5"],
            "--snapshot-every applies to --solver sgd",
        ),
        (
            ["fit", "{data}", "--solver", "sgd", "--snapshot-every", "0", "--out", "{dir}/p.h5"],
            "--snapshot-every must",
        ),
    ],
)
def test_bad_input_is_named(tmp_path, data, args, message, capsys, monkeypatch):
    """In this process (the refusals come before any fit): exit status 2 and a message
    naming the option, no traceback."""
    args = [a.format(dir=tmp_path, data=data[0]) for a in args]
    monkeypatch.setattr(cli, "keep_compiled_programs", lambda: None)
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_solver_tol_solves_sgd_to_cgs_criterion(tmp_path, data):
    """``--solver-tol`` turns sgd into SVRG stopped at cg's criterion (snapshots every half
    epoch, ⌈2 000/(2·100)⌉ = 10 steps): every EM step's posterior is then the one cg finds
    for the same sample objectives (same seed; both runs float32, so the same draws), and
    α, β agree up to the two tolerances; plain sgd for the cap's 5 000 steps (250 epochs)
    lands 1e-3 away."""
    path = data[0]
    runs = {}
    common = ["--samples", 16, "--max-iter", 30, "--tol", 1e-3, "--quiet", "--seed", 3]
    sgd = ["--solver", "sgd", "--batch-size", 100, "--steps", 5000]
    for name, extra in [
        ("svrg", [*sgd, "--solver-tol", 1e-5]),
        ("cg", ["--solver", "cg", "--solver-tol", 1e-6]),
        ("plain", sgd),
    ]:
        out = _run("fit", path, *common, *extra, "--out", tmp_path / f"{name}.h5")
        assert out.returncode == 0, out.stderr
        runs[name] = BayesianLinearRegression.load(tmp_path / f"{name}.h5")
    est, ref = runs["svrg"], runs["cg"]
    assert est.solver.svrg.snapshot_every == 10 and est.solver.tol == 1e-5
    assert ref.solver == blm.CG(tol=1e-6)
    assert est.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(est.alpha_, ref.alpha_, rtol=1e-4)
    np.testing.assert_allclose(est.beta_, ref.beta_, rtol=1e-5)
    assert abs(runs["plain"].alpha_ / ref.alpha_ - 1) > 5e-4
    assert "snapshot_every=10" in _run("info", tmp_path / "svrg.h5").stdout
    fixed = tmp_path / "fixed.h5"
    out = _run("fit", path, *common, "--solver", "cg", "--fixed-solver-tol", "--out", fixed)
    assert out.returncode == 0, out.stderr
    assert BayesianLinearRegression.load(fixed).solver == blm.CG(adaptive_tol=False)
    out = _run("coef", tmp_path / "cg.h5", "--out", tmp_path / "coef.h5")
    # the sds' median relative error, from diag(H)'s control variate: on these nearly
    # orthogonal columns far below the plain 16 samples' 1/√32 = 18 %
    error = 50 * np.median(np.asarray(ref.posterior_.diag_covariance_rel_sd()))
    assert error < 5
    assert f"(estimated from 16 samples, ±{error:.0f} % median)" in out.stdout, out.stdout
    with h5py.File(tmp_path / "coef.h5", "r") as f:
        np.testing.assert_allclose(f["std"][()], ref.coef_std_, rtol=1e-6)


def test_weights_are_the_estimators_sample_weight(tmp_path, data):
    path, X, y = data
    with h5py.File(path, "r") as f:
        w = f["w"][()]
    post = tmp_path / "post.h5"
    out = _run("fit", path, "--solver", "exact", "--weights", "w", "--out", post, "--quiet")
    assert out.returncode == 0, out.stderr
    ref = BayesianLinearRegression(max_iter=30, tol=1e-3).fit(X, y, sample_weight=w)
    est = BayesianLinearRegression.load(post)
    assert (
        abs(ref.beta_ / BayesianLinearRegression(max_iter=30, tol=1e-3).fit(X, y).beta_ - 1) > 0.01
    )
    np.testing.assert_allclose(est.alpha_, ref.alpha_, rtol=1e-5)
    np.testing.assert_allclose(est.beta_, ref.beta_, rtol=1e-5)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-5, atol=1e-6)


def test_covariance_columns_of_a_streamed_weighted_cg_fit(tmp_path, data):
    """``--covariance-columns 3,0`` on a file read in 700-row blocks, with weights: the
    covariance ``blm coef`` writes is H⁻¹ = (β X_cᵀWX_c + αI)⁻¹ at the fitted α, β,
    restricted to columns 3 and 0 (X_c centred at the weighted means), to the float32
    command's precision."""
    path, X, y = data
    with h5py.File(path, "r") as f:
        w = f["w"][()]
    post, coef = tmp_path / "post.h5", tmp_path / "coef.h5"
    args = ["--solver", "cg", "--samples", 4, "--weights", "w", "--block-size", 700, "--quiet"]
    out = _run("fit", path, *args, "--covariance-columns", "3,0", "--out", post)
    assert out.returncode == 0, out.stderr
    assert _run("coef", post, "--out", coef).returncode == 0
    est = BayesianLinearRegression.load(post)
    Xc = X - np.average(X, axis=0, weights=w)
    H = est.beta_ * Xc.T @ (w[:, None] * Xc) + est.alpha_ * np.eye(30)
    with h5py.File(coef, "r") as f:
        np.testing.assert_array_equal(f["covariance_columns"][()], [3, 0])
        np.testing.assert_allclose(
            f["covariance"][()], np.linalg.inv(H)[np.ix_([3, 0], [3, 0])], rtol=1e-4, atol=1e-9
        )
    assert "covariance of:   columns [3, 0]" in _run("info", post).stdout
    bad = _run("fit", path, "--covariance-columns", "3;0", "--out", tmp_path / "p.h5")
    assert bad.returncode == 2 and "--covariance-columns must be comma-separated" in bad.stderr


def test_predict_names_mismatched_columns(tmp_path, data):
    path = data[0]
    post = tmp_path / "post.h5"
    assert _run("fit", path, "--solver", "exact", "--out", post, "--quiet").returncode == 0
    out = _run("predict", post, path, "--x", "X_wide", "--out", tmp_path / "q.h5")
    assert out.returncode == 2 and "rows of 30 columns" in out.stderr
    assert not (tmp_path / "q.h5").exists()


# SGD steps per EM step of the checkpointed fit. The fit converges in 5 EM steps (α
# repeats to float32), so the interrupt must land in the 4 steps after the first
# checkpoint: at 300 SGD steps that window was ~1 s, and a loaded machine once let the fit
# finish first (rc 0, not 130); at 3 000 it is ~6 s
SGD_STEPS = 3000


def _fit_args(path, out):
    return [
        "fit",
        path,
        "--solver",
        "sgd",
        "--samples",
        4,
        "--steps",
        SGD_STEPS,
        "--batch-size",
        100,
        "--max-iter",
        6,
        "--tol",
        1e-12,
        "--checkpoint-every",
        0,
        "--quiet",
        "--out",
        out,
    ]


def _wait_for(path, proc, seconds=240):
    start = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, "the fit ended before its first checkpoint"
        assert time.monotonic() - start < seconds
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The checkpointed fit run to its end without interruption (shared by both ways of
    stopping it)."""
    whole = tmp_path_factory.mktemp("whole") / "whole.h5"
    assert _run(*_fit_args(data[0], whole)).returncode == 0
    return BayesianLinearRegression.load(whole)


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_interrupted_fit_resumes_to_the_uninterrupted_result(tmp_path, data, uninterrupted, how):
    path = data[0]
    out = tmp_path / "part.h5"
    ckpt = tmp_path / "part.h5.ckpt"
    proc = subprocess.Popen(
        [*BLM, *map(str, _fit_args(path, out))], stderr=subprocess.PIPE, text=True
    )
    _wait_for(ckpt, proc)
    assert proc.poll() is None  # still fitting when stopped
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if how == "ctrl-c":
        assert proc.returncode == 130 and "--resume" in err
    assert not out.exists() and ckpt.exists()
    with h5py.File(ckpt, "r") as f:
        assert 1 <= f.attrs["iteration"] < 6
    resumed = _run(*_fit_args(path, out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = uninterrupted, BayesianLinearRegression.load(out)
    np.testing.assert_allclose(b.alpha_, a.alpha_, rtol=1e-6)
    np.testing.assert_allclose(b.beta_, a.beta_, rtol=1e-6)
    # float32 fit: a coefficient near 0 is compared on the scale of the largest (1e-6 of
    # it is ~8 float32 ulps there; 1e-9 absolute was 1/50 ulp and failed on rounding alone)
    scale = float(np.abs(a.coef_).max())
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(b.trajectory_.alpha, a.trajectory_.alpha, rtol=1e-6)
    assert not ckpt.exists()


def test_resume_refuses_another_fit(tmp_path, data):
    path = data[0]
    out = tmp_path / "p.h5"
    ckpt = tmp_path / "p.h5.ckpt"
    proc = subprocess.Popen(
        [*BLM, *map(str, _fit_args(path, out))], stderr=subprocess.PIPE, text=True
    )
    _wait_for(ckpt, proc)
    proc.kill()
    proc.communicate(timeout=60)
    args = _fit_args(path, out)
    args[args.index("--samples") + 1] = 8
    res = _run(*args, "--resume")
    assert res.returncode == 2 and "belongs to another fit" in res.stderr
    res = _run(*_fit_args(path, out), "--float64", "--resume")  # another precision
    assert res.returncode == 2 and "belongs to another fit" in res.stderr


def test_blm_keeps_compiled_programs_in_the_users_cache(tmp_path):
    """Outside the tests (whose own cache ``conftest`` names) the commands keep jax's
    compiled programs, every one, in $XDG_CACHE_HOME/blm/jax; a JAX_COMPILATION_CACHE_DIR
    the user set wins (empty: none); no folder, no cache."""
    from blm.cli import keep_compiled_programs

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    code = (
        "import jax; from blm.cli import keep_compiled_programs as keep; print(keep()); "
        "jax.jit(lambda x: x + 1)(1.0); print(jax.config.jax_persistent_cache_min_compile_time_secs)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "XDG_CACHE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "blm" / "jax"
    assert out.stdout.split() == [str(folder), "0.0"]
    assert any(p.name.endswith("-cache") for p in folder.iterdir())  # the program kept
    assert keep_compiled_programs({"JAX_COMPILATION_CACHE_DIR": ""}) is None
    (tmp_path / "file").write_text("")
    assert keep_compiled_programs({"XDG_CACHE_HOME": str(tmp_path / "file")}) is None


def test_trim_cache_deletes_the_least_recently_written_down_to_half(tmp_path):
    from blm.cli import trim_cache

    for age, size in enumerate([20, 20, 25, 10, 25]):  # age 0 the newest
        path = tmp_path / f"entry{age}-cache"
        path.write_bytes(b"x" * size)
        os.utime(path, (1e9 - age, 1e9 - age))
    trim_cache(tmp_path, 100)  # 100 bytes held: not over, nothing goes
    assert len(list(tmp_path.iterdir())) == 5
    trim_cache(tmp_path, 90)  # 100 > 90: the oldest go until ≤ 45 remain (25, 10, 25 go)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry0-cache", "entry1-cache"]


def test_trim_cache_skips_an_entry_another_run_deleted(tmp_path, monkeypatch):
    import blm.cli

    class Deleted:  # listed, then gone before its stat (another worker trimmed it)
        path = str(tmp_path / "gone-cache")

        def is_file(self):
            return True

        def stat(self):
            raise FileNotFoundError(self.path)

    (tmp_path / "kept-cache").write_bytes(b"x" * 30)
    listing = [*os.scandir(tmp_path), Deleted()]
    monkeypatch.setattr(blm.cli.os, "scandir", lambda folder: iter(listing))
    blm.cli.trim_cache(tmp_path, 20)  # 30 > 20 bytes: the one real entry goes
    assert list(tmp_path.iterdir()) == []


SCRIPTS = __import__("pathlib").Path(__file__).parent.parent / "data_scripts"


def test_data_scripts_feed_blm_fit(tmp_path):
    macro, panel = tmp_path / "macro.h5", tmp_path / "panel.h5"
    script = [
        sys.executable,
        str(SCRIPTS / "bundled_to_hdf5.py"),
        "macro",
        str(macro),
        "--lags",
        "2",
    ]
    assert subprocess.run(script, capture_output=True, timeout=120).returncode == 0
    with h5py.File(macro, "r") as f:
        assert f["X"].shape == (200, 27) and list(f["groups"].attrs["names"])[0] == "realgdp"
        assert f["y"].attrs["units"] == "percent per year"
    out = _run(
        "fit",
        macro,
        "--groups",
        "groups",
        "--solver",
        "exact",
        "--out",
        tmp_path / "m.h5",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    est = BayesianLinearRegression.load(tmp_path / "m.h5")
    assert est.alpha_.shape == (9,)
    assert _run("coef", tmp_path / "m.h5", "--out", tmp_path / "c.h5").returncode == 0
    with h5py.File(macro, "r") as f, h5py.File(tmp_path / "c.h5", "r") as c:
        columns = list(f["X"].attrs["columns"])
        assert list(est.feature_names_in_) == columns and list(c["names"].asstr()) == columns
    out = _run("predict", tmp_path / "m.h5", macro, "--out", tmp_path / "p.h5")
    assert out.returncode == 0 and "feature names" not in out.stderr, out.stderr
    with h5py.File(macro, "a") as f:  # the same file with its columns in another order
        f["X"].attrs["columns"] = np.asarray(columns[::-1], dtype=h5py.string_dtype())
    out = _run("predict", tmp_path / "m.h5", macro, "--out", tmp_path / "p.h5", "--force")
    assert out.returncode == 2 and "must be in the same order as they were in fit" in out.stderr
    script = [
        sys.executable,
        str(SCRIPTS / "synthetic_hdf5.py"),
        "panel",
        str(panel),
        "--units",
        "300",
    ]
    assert subprocess.run(script, capture_output=True, timeout=120).returncode == 0
    post = tmp_path / "panel_post.h5"
    out = _run(
        "fit",
        panel,
        "--groups",
        "groups",
        "--solver",
        "cg",
        "--samples",
        4,
        "--out",
        post,
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    out = _run("predict", post, panel, "--out", tmp_path / "pred.h5", "--block-size", 128)
    assert out.returncode == 0, out.stderr
    with h5py.File(tmp_path / "pred.h5", "r") as f, h5py.File(panel, "r") as g:
        mean, std, y = f["mean"][()], f["std"][()], g["y"][()]
    assert mean.shape == (600,) and np.all(std > 0)
    assert np.mean(np.abs(y - mean) < 2 * std) > 0.9  # calibrated bands on the fitted rows
