"""``blm predict``, ``coef`` and ``info``: the commands that read a fitted posterior (a
regression's or a classifier's, ``blm.persistence.load_any``), in the precision it was
fitted in."""

from __future__ import annotations

import argparse

import numpy as np

from blm import commands_classifier as classify
from blm.commands import _converged_text, _enable_float64, _fail, _report, check_out
from blm.h5io import atomic_h5, open_h5


def _load(posterior: str):
    """The fitted estimator in ``posterior`` (a regression posterior or a classifier);
    errors name the argument ``posterior``."""
    from blm.persistence import load_any

    with open_h5(posterior, "posterior"):
        pass
    return load_any(posterior)


def _predict_rows(est, rows) -> dict:
    from blm.estimator_predict import predict

    mean, std = predict(est, rows, return_std=True)
    return {"mean": mean, "std": std}


def _precision_of(posterior: str) -> None:
    """Compute in float64 where the posterior file was fitted in float64 (a file that
    is not a posterior is left to ``BayesianLinearRegression.load`` to name)."""

    try:
        with open_h5(posterior, "posterior") as f:
            mean = f["posterior/mean"] if "posterior/mean" in f else f["coef"]
            float64 = mean.dtype == np.float64
    except (OSError, KeyError, ValueError):
        return
    if float64:
        _enable_float64()


def predict(args: argparse.Namespace) -> int:
    """Write the predictive mean and standard deviation of every row of DATA.h5."""
    import h5py

    from blm._checks import check_feature_names
    from blm.csr import csr_block
    from blm.data import column_names
    from blm.persistence import label_array as persistence_labels

    _precision_of(args.posterior)
    try:
        check_out(args.out, [args.posterior, args.data], args.force)
        est = _load(args.posterior)
        classifier = classify.is_classifier(est)
        with open_h5(args.data, "data") as f:
            if args.x not in f:
                raise ValueError(f"--x: no dataset named {args.x!r} in {args.data!r}")
            xd = f[args.x]
            p = est.n_features_in_ if classifier else est.X_offset_.shape[0]
            sparse = isinstance(xd, h5py.Group)
            shape = tuple(xd.attrs["shape"]) if sparse else xd.shape
            if len(shape) != 2 or shape[1] != p:
                raise ValueError(
                    f"--x: {args.x!r} has shape {shape}; the posterior was fitted to rows of "
                    f"{p} columns"
                )
            fitted = getattr(est, "feature_names_in_", None)
            check_feature_names(fitted, column_names(xd), "the posterior")
            n = shape[0]
            layout = classify.prediction_datasets(est, n) if classifier else _moments(est, n)
            with atomic_h5(args.out, "--out") as out:
                written = {name: out.create_dataset(name, *spec) for name, spec in layout.items()}
                if classifier:
                    out["classes"] = persistence_labels(est.classes_)
                for start in range(0, n, args.block_size):
                    stop = min(start + args.block_size, n)
                    rows = csr_block(xd, start, stop) if sparse else xd[start:stop]
                    values = (
                        classify.predicted(est, rows) if classifier else _predict_rows(est, rows)
                    )
                    for name, value in values.items():
                        written[name][start:stop] = value
    except (OSError, ValueError) as err:
        return _fail("predict", err)
    what = "probabilities and labels" if classifier else "mean and std"
    print(f"blm predict: {what} of {n} rows written to {args.out}")
    return 0


def _moments(est, n: int) -> dict:
    """What ``blm predict`` writes for a regression: ``mean`` and ``std``."""
    shape = (n,) if est._y_1d else (n, est.y_offset_.shape[0])
    return {"mean": (shape, "f8"), "std": (shape, "f8")}


def coef(args: argparse.Namespace) -> int:
    """Print the coefficient table (``summary``: every weight unless ``--rows``, the
    intercept and the noise sd); with ``--out``, also write the posterior mean ``coef``
    and marginal standard deviation ``std`` of every weight ((p,), or (m, p) for m
    outputs), the ``intercept``, and the columns' ``names`` when the data file had them."""
    import h5py

    _precision_of(args.posterior)
    try:
        if args.out is not None:
            check_out(args.out, [args.posterior], args.force)
        if args.rows is not None and args.rows < 1:
            raise ValueError(f"--rows: expected a positive number of rows, got {args.rows}")
        est = _load(args.posterior)
    except (OSError, ValueError) as err:
        return _fail("coef", err)
    print(est.summary(max_rows=args.rows, sort=args.sort))
    if args.out is None:
        return 0
    with atomic_h5(args.out, "--out") as out:
        out["coef"], out["std"], out["intercept"] = est.coef_, est.coef_std_, est.intercept_
        if classify.is_classifier(est):
            from blm.persistence import label_array  # (loads JAX: not at import)

            out["classes"] = label_array(est.classes_)
        if hasattr(est, "coef_covariance_"):
            out["covariance"] = est.coef_covariance_
            out["covariance_columns"] = np.asarray(est.covariance_columns)
        if hasattr(est, "feature_names_in_"):
            out["names"] = np.asarray(est.feature_names_in_, dtype=h5py.string_dtype())
    if classify.is_classifier(est):  # exact, or the draws' sd
        k = 0 if est._exact is not None else est.samples_.shape[0]
        source = f"estimated from {k} samples" if k else "exact"
    else:
        k = getattr(est.posterior_, "k", 0)
        source = (
            f"estimated from {k} samples, ±{_report().sd_error(est):.0f} % median" if k else "exact"
        )
    print(f"blm coef: mean and sd ({source}) of {est.coef_.size} weights written to {args.out}")
    return 0


def info(args: argparse.Namespace) -> int:
    """Print what a posterior file holds."""

    _precision_of(args.posterior)
    try:
        est = _load(args.posterior)
    except (OSError, ValueError) as err:
        return _fail("info", err)
    if classify.is_classifier(est):
        classify.info(est, args.posterior)
        return 0
    post = est.posterior_
    k = post.samples.shape[0] if hasattr(post, "samples") else 0
    print(f"posterior file:  {args.posterior}")
    one_line = " ".join(f"{est.solver}, {est.hyper}".split()).replace("( ", "(").replace(" )", ")")
    print(f"solver, hyper:   {one_line}")
    if est.solver_reason_ != "given":
        print(f"auto chose:      {type(est.solver_).__name__}: {est.solver_reason_}")
    print(f"solves:          {est.n_solves_}")
    print(f"weights:         p = {est.X_offset_.shape[0]}, m = {est.y_offset_.shape[0]} outputs")
    print(f"precision:       {np.asarray(post.mean).dtype}")
    print(f"alpha:           {_report().alpha_text(est)}")
    if est.fixed_alpha:
        given = ", ".join(f"{label}={value:g}" for label, value in est.fixed_alpha.items())
        print(f"alpha given:     {given} (not fitted; 0: flat, unpenalised)")
    print(f"beta:            {est.beta_}")
    print(f"steps:           {est.n_iter_}, {_converged_text(est)}")
    print(
        f"final score:     {est.scores_[-1]:.6g} (log evidence + log hyperprior at the fitted "
        "alpha, beta; NaN where not computed)"
    )
    print(f"samples stored:  {k}" if k else "posterior:       exact (Cholesky factor)")
    if hasattr(est, "coef_covariance_"):
        print(f"covariance of:   columns {list(est.covariance_columns)} (blm coef writes it)")
    return 0
