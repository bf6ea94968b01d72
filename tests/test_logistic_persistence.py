"""A fitted BayesianLogisticRegression saved and loaded (it predicts as the saved one),
and the command line's classifiers: ``blm fit --likelihood bernoulli|categorical`` on
class labels in an HDF5 file, ``blm predict`` writing probabilities, ``coef`` and
``info`` (float64, in this process)."""

import h5py
import numpy as np
import pytest

from blm import BayesianLinearRegression, cli
from blm.logistic import BayesianLogisticRegression
from blm.persistence import load_any


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setattr(cli, "keep_compiled_programs", lambda: None)


def _three_class(rng, n=300, p=4):
    X = rng.normal(size=(n, p))
    logits = X @ rng.normal(size=(3, p)).T + rng.gumbel(size=(n, 3))
    return X, np.asarray(["low", "mid", "high"])[np.argmax(logits, axis=1)]


def _same_predictions(a, b, X):
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))


@pytest.mark.parametrize(
    "solver, labels",
    [("exact", "strings"), ("cg", "booleans"), ("exact", "integers")],
)
def test_saved_classifier_predicts_as_the_fitted_one(rng, tmp_path, solver, labels):
    X, y = _three_class(rng)
    if labels == "booleans":
        y = y == "high"
    elif labels == "integers":
        y = np.searchsorted(np.unique(y), y) * 10 - 5
    clf = BayesianLogisticRegression(
        solver=solver, n_samples=4, random_state=1, prior_groups=np.array([0, 0, 1, 1])
    ).fit(X, y)
    clf.save(tmp_path / "clf.h5")
    back = BayesianLogisticRegression.load(tmp_path / "clf.h5")
    assert back.get_params().keys() == clf.get_params().keys()
    np.testing.assert_array_equal(back.classes_, clf.classes_)
    assert back.classes_.dtype == clf.classes_.dtype
    for name in ("coef_", "intercept_", "coef_std_", "alpha_", "samples_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(clf, name), err_msg=name)
    assert back.n_iter_ == clf.n_iter_ and back.converged_ == clf.converged_
    assert type(back.solver_) is type(clf.solver_)
    _same_predictions(clf, back, X[:50])
    np.testing.assert_array_equal(
        back.predict_proba(X[:20], method="mc"), clf.predict_proba(X[:20], method="mc")
    )
    assert back.summary() == clf.summary()
    assert type(load_any(tmp_path / "clf.h5")) is BayesianLogisticRegression


def test_saving_names_what_hdf5_cannot_hold_and_loading_the_wrong_class(rng, tmp_path):
    X, y = _three_class(rng, n=120)
    import datetime

    with pytest.raises(ValueError, match="mixed types"):
        BayesianLogisticRegression().fit(X, np.array([1 if v == "low" else "x" for v in y], object))
    days = {"low": datetime.date(2026, 1, 1), "mid": datetime.date(2026, 1, 2)}
    dates = np.array([days.get(v, datetime.date(2026, 1, 3)) for v in y], dtype=object)
    clf = BayesianLogisticRegression().fit(X, dates)  # sortable labels HDF5 cannot hold
    with pytest.raises(TypeError, match="classes_"):
        clf.save(tmp_path / "mixed.h5")
    assert not (tmp_path / "mixed.h5").exists()
    clf = BayesianLogisticRegression().fit(X, y)
    clf.save(tmp_path / "clf.h5")
    with pytest.raises(ValueError, match="BayesianLogisticRegression"):
        BayesianLinearRegression.load(tmp_path / "clf.h5")
    BayesianLinearRegression(solver="exact").fit(X, X[:, 0]).save(tmp_path / "reg.h5")
    with pytest.raises(ValueError, match="not a blm classifier"):
        BayesianLogisticRegression.load(tmp_path / "reg.h5")


@pytest.fixture(scope="module")
def iris_file(tmp_path_factory):
    """scikit-learn's iris as an HDF5 file: string labels ``y``, a binary ``yb``, named
    columns, frequency weights."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    path = tmp_path_factory.mktemp("iris") / "iris.h5"
    with h5py.File(path, "w") as f:
        f["X"] = X
        f["X"].attrs["columns"] = ["sepal_l", "sepal_w", "petal_l", "petal_w"]
        f["y"] = names.astype(object).astype(h5py.string_dtype())
        f["yb"] = (y == 2).astype(np.int64)
        f["w"] = np.arange(150) % 3
    return path, X, names


def test_blm_fit_categorical_equals_the_estimator_and_predict_writes_probabilities(
    iris_file, tmp_path, capsys
):
    path, X, names = iris_file
    out, pred = tmp_path / "clf.h5", tmp_path / "pred.h5"
    args = ["fit", str(path), "--likelihood", "categorical", "--weights", "w", "--float64"]
    args += ["--solver", "exact"]
    assert cli.main([*args, "--out", str(out)]) == 0
    assert "3 classes" in capsys.readouterr().out
    w = np.arange(150) % 3
    ref = BayesianLogisticRegression(solver="exact").fit(X, names, sample_weight=w)
    fitted = BayesianLogisticRegression.load(out)
    np.testing.assert_allclose(fitted.coef_, ref.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fitted.alpha_, ref.alpha_, rtol=1e-8)
    assert list(fitted.feature_names_in_) == ["sepal_l", "sepal_w", "petal_l", "petal_w"]
    assert cli.main(["predict", str(out), str(path), "--out", str(pred)]) == 0
    with h5py.File(pred, "r") as f:
        proba, label = f["proba"][()], f["label"].asstr()[()]
        classes = f["classes"].asstr()[()]
    assert list(classes) == ["setosa", "versicolor", "virginica"]
    np.testing.assert_allclose(proba, ref.predict_proba(X), rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(label, ref.predict(X))
    assert cli.main(["coef", str(out), "--rows", "2"]) == 0
    text = capsys.readouterr().out
    assert "class virginica" in text and "odds" in text and "2 more" in text
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "classes:         3" in text and "float64" in text


def test_blm_fit_bernoulli_by_cg_on_integer_labels(iris_file, tmp_path, capsys):
    path, X, names = iris_file
    out = tmp_path / "b.h5"
    argv = ["fit", str(path), "--y", "yb", "--likelihood", "bernoulli", "--solver", "cg"]
    assert cli.main([*argv, "--samples", "8", "--float64", "--out", str(out)]) == 0
    fitted = BayesianLogisticRegression.load(out)
    y = (names == "virginica").astype(np.int64)
    ref = BayesianLogisticRegression(solver="cg", n_samples=8, random_state=0).fit(X, y)
    assert list(fitted.classes_) == [0, 1] and fitted.samples_.shape[0] == 8
    np.testing.assert_allclose(fitted.alpha_, ref.alpha_, rtol=1e-6)
    np.testing.assert_allclose(fitted.predict_proba(X), ref.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--likelihood", "bernoulli"], "--y: --likelihood bernoulli needs two classes"),
        (["--likelihood", "categorical", "--resume"], "--resume applies to --likelihood gaussian"),
        (["--likelihood", "categorical", "--hyper", "evidence"], "--hyper evidence applies"),
        (["--likelihood", "categorical", "--covariance-columns", "0"], "--covariance-columns"),
        ([], "holds strings (class labels)"),  # a regression on string labels
    ],
)
def test_classifier_flags_and_labels_refused_by_name(iris_file, tmp_path, capsys, extra, message):
    path, _, _ = iris_file
    out = tmp_path / "never.h5"
    assert cli.main(["fit", str(path), *extra, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
