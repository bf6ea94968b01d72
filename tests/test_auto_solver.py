"""``solver="auto"``: exact where the dense model is cheap, cg for a large sparse design,
sgd for rows streamed from a file; the choice and its reason are kept and saved."""

import warnings

import numpy as np
import pytest
import scipy.sparse

import blm
from blm.solvers.auto import PASSES, choose_solver


def test_auto_picks_exact_on_a_small_problem_and_says_why(rng):
    X = rng.standard_normal((200, 6))
    y = X @ rng.standard_normal(6) + rng.standard_normal(200)
    est = blm.BayesianLinearRegression().fit(X, y)
    assert isinstance(est.solver_, blm.Exact)
    assert "fits in memory" in est.solver_reason_ and "passes" in est.solver_reason_
    exact = blm.BayesianLinearRegression(solver="exact").fit(X, y)
    np.testing.assert_allclose(est.coef_, exact.coef_, rtol=1e-12)
    assert exact.solver_reason_ == "given"
    assert "auto: exact" in est.summary()


def test_auto_picks_cg_on_a_large_sparse_design():
    rng = np.random.default_rng(1)
    n, p, per_row = 1000, 5000, 5
    cols = rng.integers(0, p, size=(n, per_row))
    X = scipy.sparse.csr_matrix(
        (rng.standard_normal(n * per_row), cols.ravel(), np.arange(0, n * per_row + 1, per_row)),
        shape=(n, p),
    )
    y = X @ rng.standard_normal(p) * 0.1 + rng.standard_normal(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blm.ConvergenceWarning)  # 3 steps: not converged
        est = blm.BayesianLinearRegression(max_iter=3, random_state=0).fit(X, y)
    assert isinstance(est.solver_, blm.CG), est.solver_reason_
    assert f"more than {PASSES}" in est.solver_reason_
    assert est.samples_.shape == (16, p)


def test_choose_solver_regimes():
    small = choose_solver(n=10_000, m=1, p=100, row_entries=100, n_samples=16, streamed=False)
    assert small.name == "exact"
    wide = choose_solver(
        n=10_000, m=1, p=20_000, row_entries=20_000, n_samples=16, streamed=False, memory=2**40
    )
    assert wide.name == "cg" and "passes" in wide.reason
    tall_file = choose_solver(
        n=10**7, m=1, p=50_000, row_entries=50_000, n_samples=16, streamed=True, memory=2**40
    )
    assert tall_file.name == "sgd" and "streamed" in tall_file.reason
    # cheap, but no room: the memory decides, and says so
    cramped = choose_solver(
        n=10_000, m=1, p=2_000, row_entries=2_000, n_samples=16, streamed=False, memory=2**20
    )
    assert cramped.name == "cg" and "does not fit" in cramped.reason


def test_auto_with_no_samples_where_it_chose_a_sampled_solver_is_refused():
    rng = np.random.default_rng(2)
    X = scipy.sparse.random(500, 4000, density=0.001, random_state=2, format="csr")
    y = rng.standard_normal(500)
    with pytest.raises(ValueError, match="n_samples: solver='auto' chose 'cg'"):
        blm.BayesianLinearRegression(n_samples=0).fit(X, y)


def test_auto_choice_is_saved_and_loaded(rng, tmp_path):
    X = rng.standard_normal((100, 4))
    y = X @ rng.standard_normal(4) + rng.standard_normal(100)
    est = blm.BayesianLinearRegression().fit(X, y)
    path = tmp_path / "post.h5"
    est.save(path)
    back = blm.BayesianLinearRegression.load(path)
    assert back.solver == "auto" and isinstance(back.solver_, blm.Exact)
    assert back.solver_reason_ == est.solver_reason_
    assert back.n_solves_ == est.n_solves_
    np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-12)


def test_cli_auto_refuses_sampled_solver_flags(tmp_path, capsys, monkeypatch):
    import h5py

    from blm import cli

    monkeypatch.setattr(cli, "keep_compiled_programs", lambda: None)
    rng = np.random.default_rng(0)
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = rng.standard_normal((50, 3)), rng.standard_normal(50)
    out = tmp_path / "p.h5"
    assert cli.main(["fit", str(path), "--solver-tol", "1e-4", "--out", str(out)]) != 0
    assert "--solver-tol configures a sampled solver" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["fit", str(path), "--out", str(out), "--no-progress"]) == 0
    assert cli.main(["info", str(out)]) == 0
    assert "auto chose:      Exact" in capsys.readouterr().out


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ({"n": 0}, ValueError, "n must be >= 1"),
        ({"p": 2.5}, TypeError, "p must be an integer"),
        ({"row_entries": -1}, ValueError, "row_entries must be >= 1"),
        ({"n_samples": -1}, ValueError, "n_samples must be >= 0"),
    ],
)
def test_choose_solver_names_a_bad_size(bad, error, match):
    sizes = dict(n=100, m=1, p=10, row_entries=10, n_samples=16, streamed=False)
    with pytest.raises(error, match=match):
        choose_solver(**{**sizes, **bad})
