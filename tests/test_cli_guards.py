"""The command line never loses data: refused outputs, clean errors for bad files,
progress bars only where asked, and ``blm coef`` printing its whole table. Run in this
process (``cli.main``): the refusals come before any fit."""

import hashlib

import h5py
import numpy as np
import pytest

from blm import BayesianLinearRegression, LaplacePosterior, cli
from blm._progress import StepBar


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setattr(cli, "keep_compiled_programs", lambda: None)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A data file, a fitted posterior of it, a truncated copy and a text file."""
    folder = tmp_path_factory.mktemp("guards")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 12))
    y = X @ rng.standard_normal(12) + rng.standard_normal(300) + 2.0
    data, post = folder / "data.h5", folder / "post.h5"
    with h5py.File(data, "w") as f:
        f["X"], f["y"] = X, y
    assert cli.main(["fit", str(data), "--out", str(post), "--no-progress"]) == 0
    raw = data.read_bytes()
    (folder / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    (folder / "text.h5").write_text("not HDF5\n")
    return folder, data, post


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "{data}", "--out", "{data}"],
        ["fit", "{data}", "--out", "{dir}/p.h5", "--checkpoint", "{data}"],
        ["predict", "{post}", "{data}", "--out", "{post}", "--force"],
        ["predict", "{post}", "{data}", "--out", "{data}", "--force"],
        ["coef", "{post}", "--out", "{post}", "--force"],
    ],
)
def test_an_out_that_is_an_input_is_refused_and_the_input_kept(files, args, capsys):
    folder, data, post = files
    before = {p: _digest(p) for p in (data, post)}
    args = [a.format(dir=folder, data=data, post=post) for a in args]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "input" in err, err
    assert {p: _digest(p) for p in (data, post)} == before  # byte for byte


def test_an_existing_out_needs_force(files, capsys, tmp_path):
    folder, data, post = files
    target = tmp_path / "pred.h5"
    target.write_bytes(b"keep me")
    assert cli.main(["predict", str(post), str(data), "--out", str(target)]) == 2
    assert "--out" in capsys.readouterr().err and target.read_bytes() == b"keep me"
    assert cli.main(["predict", str(post), str(data), "--out", str(target), "--force"]) == 0
    with h5py.File(target, "r") as f:
        assert f["mean"].shape == (300,)


@pytest.mark.parametrize("command", ["fit", "predict", "coef"])
def test_an_out_in_a_missing_folder_is_refused_before_any_work(files, command, capsys):
    folder, data, post = files
    inputs = {"fit": [str(data)], "predict": [str(post), str(data)], "coef": [str(post)]}
    out = str(folder / "no" / "such" / "folder" / "x.h5")
    assert cli.main([command, *inputs[command], "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "does not exist" in err


@pytest.mark.parametrize("bad", ["truncated.h5", "text.h5"])
@pytest.mark.parametrize("command", ["fit", "predict-data", "predict-posterior", "coef", "info"])
def test_a_truncated_or_foreign_file_is_one_clean_error(files, bad, command, capsys, tmp_path):
    folder, data, post = files
    bad = str(folder / bad)
    out = ["--out", str(tmp_path / "o.h5")]
    argv = {
        "fit": ["fit", bad, *out],
        "predict-data": ["predict", str(post), bad, *out],
        "predict-posterior": ["predict", bad, str(data), *out],
        "coef": ["coef", bad],
        "info": ["info", bad],
    }[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "not a readable HDF5 file" in err and "Traceback" not in err


def test_load_and_save_name_the_path(files, tmp_path):
    folder, data, post = files
    with pytest.raises(ValueError, match="path: .* not a readable HDF5 file"):
        BayesianLinearRegression.load(folder / "truncated.h5")
    with pytest.raises(ValueError, match="path: .* not a readable HDF5 file"):
        LaplacePosterior.load(folder / "truncated.h5", None)
    est = BayesianLinearRegression.load(post)
    with pytest.raises(FileNotFoundError, match="path: the folder .* does not exist"):
        est.save(tmp_path / "missing" / "post.h5")


def test_samples_with_the_exact_solver_is_refused(files, capsys, tmp_path):
    folder, data, _ = files
    argv = ["fit", str(data), "--solver", "exact", "--samples", "8", "--out", str(tmp_path / "p")]
    assert cli.main(argv) == 2
    assert "--samples applies to --solver sgd or cg" in capsys.readouterr().err


def test_coef_prints_the_whole_table_without_out(files, capsys):
    _, _, post = files
    assert cli.main(["coef", str(post)]) == 0
    text = capsys.readouterr().out
    rows = [line.split()[0] for line in text.splitlines() if line.startswith("x")]
    assert sorted(rows) == sorted(f"x{j}" for j in range(12))  # all 12, none cut
    assert "intercept" in text and "noise sd" in text
    assert cli.main(["coef", str(post), "--rows", "3", "--sort", "column"]) == 0
    text = capsys.readouterr().out
    rows = [line.split()[0] for line in text.splitlines() if line.startswith("x")]
    assert rows == ["x0", "x1", "x2"] and "9 more" in text
    est = BayesianLinearRegression.load(post)
    noise = [line for line in text.splitlines() if line.startswith("noise sd")][0]
    np.testing.assert_allclose(float(noise.split()[2]), 1 / np.sqrt(est.beta_), rtol=1e-3)


def test_help_shows_defaults_without_markup(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    text = capsys.readouterr().out
    assert "(default: 0)" in text and "``" not in text  # --seed
    # the loop's caps, which depend on --likelihood, say both (no "(default: None)")
    assert "(default 300; classifiers 100)" in " ".join(text.split())
    assert "default: None" not in text
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_progress_goes_to_a_file_only_when_asked(files, tmp_path, capfd):
    """stderr here is not a terminal: no bars by default, bars with --progress."""
    _, data, _ = files
    assert cli.main(["fit", str(data), "--out", str(tmp_path / "a.h5")]) == 0
    assert "EM" not in capfd.readouterr().err
    assert cli.main(["fit", str(data), "--out", str(tmp_path / "b.h5"), "--progress"]) == 0
    assert "EM (auto: exact)" in capfd.readouterr().err


def test_a_step_bar_starts_at_a_resumed_step_and_ends_full(capsys):
    bar = StepBar(True, 10, "EM")
    bar(4, 0.1)  # the first step after resuming at step 3
    assert bar.bar.n == 4
    bar(5, 0.01)
    bar.close()  # converged at step 5 of 10: the bar ends complete
    assert bar.bar.n == bar.bar.total == 5
    off = StepBar(False, 10, "EM")
    assert off.callback is None
    off.close()


def test_a_demo_out_dir_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep")
    assert cli.main(["demo", "--out-dir", str(target)]) == 2
    assert "--out-dir" in capsys.readouterr().err and target.read_text() == "keep"


def test_a_convergence_warning_points_at_the_callers_line():
    import warnings

    X = np.random.default_rng(0).standard_normal((40, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BayesianLinearRegression(max_iter=1).fit(X, X[:, 0])
    (warning,) = [w for w in caught if "not converged" in str(w.message)]
    assert warning.filename == __file__  # this file's line, not one inside blm
