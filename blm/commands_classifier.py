"""``blm fit --likelihood bernoulli|categorical`` and what ``predict``, ``coef`` and
``info`` do with a fitted classifier (``BayesianLogisticRegression``): the class labels
in ``--y`` (numbers or strings), probabilities out.

``bernoulli`` needs exactly two classes (one logit, the log-odds of the second class
in sorted order); ``categorical`` takes two or more (two: the same model as
``bernoulli``; more: K softmax logits). The settings are the classifier's
(``CLASSIFIER_DEFAULTS``: ``--max-iter`` 100, ``--tol`` 1e-5, ``--evidence-tol``
1e-9); flags that configure only the regression's loop are refused by name.
"""

from __future__ import annotations

import argparse

import numpy as np

from blm.estimator_defaults import CLASSIFIER_DEFAULTS

LIKELIHOODS = ("gaussian", "bernoulli", "categorical")

_REGRESSION_ONLY = {
    "--covariance-columns": lambda a: a.covariance_columns is not None,
    "--resume": lambda a: a.resume,
    "--checkpoint": lambda a: a.checkpoint is not None,
    "--hyper evidence": lambda a: a.hyper != "mackay",
}


def check_flags(args: argparse.Namespace) -> None:
    """Refuse the regression-only flags with a classifier likelihood.

    Raises:
        ValueError: naming the flag and ``--likelihood``.
    """
    for flag, given in _REGRESSION_ONLY.items():
        if given(args):
            raise ValueError(
                f"{flag} applies to --likelihood gaussian (regression), not "
                f"--likelihood {args.likelihood} (a classifier fit keeps no checkpoint, "
                "tunes alpha by MacKay's rule and has no covariance columns)"
            )


def classifier(args: argparse.Namespace, common: dict):
    """The ``BayesianLogisticRegression`` the flags describe (``common``: the settings
    both estimators take, solver, samples, seed, prior groups, fixed α)."""
    from blm import BayesianLogisticRegression

    check_flags(args)
    return BayesianLogisticRegression(**common, **stopping(args, CLASSIFIER_DEFAULTS))


def stopping(args: argparse.Namespace, defaults) -> dict:
    """``max_iter``, ``tol`` and ``evidence_tol`` from --max-iter, --tol and
    --evidence-tol, each absent flag the fitted estimator's default (``defaults``; the
    regression's and the classifier's differ); --evidence-tol 0: --tol alone."""
    evidence_tol = defaults["evidence_tol"] if args.evidence_tol is None else args.evidence_tol
    return {
        "max_iter": defaults["max_iter"] if args.max_iter is None else args.max_iter,
        "tol": defaults["tol"] if args.tol is None else args.tol,
        "evidence_tol": evidence_tol or None,
    }


def check_classes(labels: np.ndarray, likelihood: str) -> None:
    """``bernoulli`` with other than two classes is an error naming ``--y`` (checked
    before the fit).

    Raises:
        ValueError: naming ``--y`` and ``--likelihood``.
    """
    classes = np.unique(np.asarray(labels).ravel())
    if likelihood == "bernoulli" and classes.size != 2:
        raise ValueError(
            f"--y: --likelihood bernoulli needs two classes, the labels hold "
            f"{classes.size} ({_classes_text(classes)}); use --likelihood categorical"
        )


def _classes_text(classes: np.ndarray) -> str:
    shown = ", ".join(str(c) for c in classes[:10])
    return shown + (f", … ({classes.size} in all)" if classes.size > 10 else "")


def fitted_text(est, out: str) -> str:
    """The line ``blm fit`` prints after a classifier fit."""
    from blm.estimator_report import alpha_text

    state = (
        "converged"
        if est.converged_
        else (f"NOT converged (last relative change {est.last_change_:.2e}; raise --max-iter)")
    )
    return (
        f"blm fit: {est.classes_.size} classes ({_classes_text(est.classes_)}), alpha = "
        f"{alpha_text(est)}, log evidence {est.log_evidence_:.6g} after {est.n_iter_} steps "
        f"({state}); classifier written to {out}"
    )


def prediction_datasets(est, n: int) -> dict:
    """What ``blm predict`` writes for a classifier: ``proba`` (n, K) in the order of
    ``classes`` and ``label`` (n,), the most probable class, as name → (shape, dtype)."""
    import h5py

    strings = est.classes_.dtype.kind in "UO"
    labels = h5py.string_dtype() if strings else est.classes_.dtype
    return {"proba": ((n, est.classes_.size), "f8"), "label": ((n,), labels)}


def predicted(est, rows) -> dict:
    """The probit predictive probabilities and most probable class of ``rows`` (their
    column names checked by the caller against the file's)."""
    proba = est._probabilities(rows, "probit", names_checked=True)
    label = est.classes_[np.argmax(proba, axis=1)]
    return {"proba": proba, "label": label.astype(object) if label.dtype.kind == "U" else label}


def info(est, path: str) -> None:
    """``blm info`` for a classifier file."""
    from blm.estimator_report import alpha_text

    k = est.samples_.shape[0]
    print(f"classifier file: {path}")
    print(f"classes:         {est.classes_.size}: {_classes_text(est.classes_)}")
    print(f"solver:          {type(est.solver_).__name__} ({est.solver_reason_})")
    print(f"weights:         p = {est.n_features_in_}, {est.coef_.shape[0]} logit(s)")
    print(f"precision:       {est.coef_.dtype}")
    print(f"alpha:           {alpha_text(est)}")
    print(f"steps:           {est.n_iter_}, {'converged' if est.converged_ else 'NOT converged'}")
    print(f"log evidence:    {est.log_evidence_:.6g} (Laplace's; NaN for sampled solvers)")
    if est._exact is not None:
        print("posterior:       exact (Cholesky factor)")
    if k:
        print(f"samples stored:  {k}")


def is_classifier(est) -> bool:
    """Whether a loaded estimator is a classifier (it has ``classes_``)."""
    return hasattr(est, "classes_")
