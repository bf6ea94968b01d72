"""One evidence-tuned BayesianLogisticRegression fit against scikit-learn's
LogisticRegressionCV(Cs=10, cv=5): wall time, held-out log loss, accuracy and ECE.

    python benchmarks/logistic_vs_sklearn.py [--n 20000 --d 200] [--out FILE]

Problems: a generated binary problem (n rows, d standard-normal columns, true weights
N(0, 1/d)·3, logistic noise; 25 % held out) and scikit-learn's digits (10 classes,
64 pixels scaled to [0, 1], 30 % held out). blm: ``solver="auto"`` (exact at these
sizes), predictions by the probit predictive (and, from the same fit, the MAP plug-in
softmax, to separate the tuned α from the posterior's moderation); scikit-learn: lbfgs, tol 1e-4 (its
default), the C of best 5-fold log loss refitted on all training rows. Both float64,
same machine, same run. The issue's size is ``--n 100000 --d 1000``.
"""

from __future__ import annotations

import argparse
import pathlib
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import train_test_split

from blm import BayesianLogisticRegression
from blm.uncertainty.metrics import accuracy, ece, nll


def generated(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = 3.0 * rng.standard_normal(d) / np.sqrt(d)
    y = (X @ w + rng.logistic(size=n) > 0).astype(int)
    return train_test_split(X, y, test_size=0.25, random_state=seed)


def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.3, random_state=0)


def _map_probs(clf, X) -> np.ndarray:
    """softmax (sigmoid) of the MAP logits: the plug-in predictive at the same fit, no
    posterior moderation."""
    f = clf.map_logits(X)
    if f.shape[1] == 1:
        p1 = 1 / (1 + np.exp(-f[:, 0]))
        return np.stack([1 - p1, p1], axis=1)
    e = np.exp(f - f.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def measure(name: str, split) -> list[str]:
    X_tr, X_te, y_tr, y_te = split
    rows = []
    t = time.perf_counter()
    clf = BayesianLogisticRegression().fit(X_tr, y_tr)
    blm_time = time.perf_counter() - t
    labels = np.searchsorted(clf.classes_, y_te)
    probs = clf.predict_proba(X_te)
    rows.append((name, "blm (evidence)", blm_time, probs, labels, f"alpha {clf.alpha_[0]:.4g}"))
    rows.append((name, "blm MAP plug-in", blm_time, _map_probs(clf, X_te), labels, "same fit"))
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=1000)
        cv.fit(X_tr, y_tr)
    cv_time = time.perf_counter() - t
    rows.append((name, "sklearn CV", cv_time, cv.predict_proba(X_te), labels, f"C {cv.C_[0]:.4g}"))
    out = []
    for problem, method, seconds, p, lab, setting in rows:
        out.append(
            f"{problem:22s} {method:16s} {seconds:8.2f} {nll(p, lab):9.4f} "
            f"{accuracy(p, lab):8.4f} {ece(p, lab):8.4f}  {setting}"
        )
    ratio = cv_time / blm_time
    gap = nll(rows[0][3], labels) / nll(rows[-1][3], labels) - 1
    out.append(f"{'':22s} time ratio sklearn/blm {ratio:.1f}x, log-loss gap {gap:+.2%}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=200)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    head = f"{'problem':22s} {'method':16s} {'time s':>8s} {'log loss':>9s} {'acc':>8s} {'ECE':>8s}"
    lines = [head]
    lines += measure(f"generated {args.n}x{args.d}", generated(args.n, args.d))
    lines += measure("digits (10 classes)", digits())
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
