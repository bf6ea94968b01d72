r"""Quality of predictive distributions, from predicted class probabilities (t, C) and
integer labels (t,). NumPy only; every function returns a float.

    nll       = −(1/t) Σ_i log p_i[y_i]
    accuracy  = (1/t) Σ_i [argmax p_i = y_i]
    brier     = (1/t) Σ_i ‖p_i − e_{y_i}‖²
    ece       = Σ_b (|B_b|/t) |acc(B_b) − conf(B_b)|   (equal-width confidence bins)
    entropy   = −Σ_c p_ic log p_ic                        (per input)
    auroc     = P(score_out > score_in) + ½ P(equal)    (Mann–Whitney; OoD detection)
"""

from __future__ import annotations

import numpy as np


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, float), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(
            f"probs must be (t, C) and labels (t,), got {probs.shape} and {labels.shape}"
        )
    if np.any(labels < 0) or np.any(labels >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    return probs, labels.astype(int)


def nll(probs, labels) -> float:
    """Mean negative log-likelihood of the labels (probabilities floored at 1e-12)."""
    probs, labels = _check(probs, labels)
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))))


def accuracy(probs, labels) -> float:
    """Fraction of inputs whose most probable class is the label."""
    probs, labels = _check(probs, labels)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def brier(probs, labels) -> float:
    """Mean squared distance between the probabilities and the one-hot label."""
    probs, labels = _check(probs, labels)
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability(probs, labels, n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin: (mean confidence, accuracy, count); empty bins give NaN."""
    probs, labels = _check(probs, labels)
    conf = np.max(probs, axis=1)
    correct = np.argmax(probs, axis=1) == labels
    which = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, n_bins) / count
        acc = np.bincount(which, correct.astype(float), n_bins) / count
    return mean_conf, acc, count


def ece(probs, labels, n_bins: int = 15) -> float:
    """Expected calibration error over ``n_bins`` equal-width confidence bins."""
    mean_conf, acc, count = reliability(probs, labels, n_bins)
    used = count > 0
    return float(np.sum(count[used] * np.abs(acc[used] - mean_conf[used])) / np.sum(count))


def entropy(probs) -> np.ndarray:
    """Predictive entropy per input, (t,)."""
    probs = np.asarray(probs, float)
    return -np.sum(probs * np.log(np.maximum(probs, 1e-300)), axis=-1)


def auroc(score_in, score_out) -> float:
    """Area under the ROC curve for telling out-of-distribution inputs (higher score)
    from in-distribution ones: the Mann–Whitney statistic, ties counted half."""
    score_in, score_out = np.ravel(score_in), np.ravel(score_out)
    if score_in.size == 0 or score_out.size == 0:
        raise ValueError("score_in and score_out must both be non-empty")
    from scipy.stats import rankdata  # here: scipy.stats takes 0.6 s to import

    ranks = rankdata(np.concatenate([score_in, score_out]))
    n_in, n_out = score_in.size, score_out.size
    return float((np.sum(ranks[n_in:]) - n_out * (n_out + 1) / 2) / (n_in * n_out))


def classification_report(probs, labels, probs_ood=None) -> dict[str, float]:
    """NLL, accuracy, ECE and Brier score on labelled inputs, and with ``probs_ood`` the
    AUROC of telling the out-of-distribution inputs apart by predictive entropy."""
    report = {
        "nll": nll(probs, labels),
        "accuracy": accuracy(probs, labels),
        "ece": ece(probs, labels),
        "brier": brier(probs, labels),
    }
    if probs_ood is not None:
        report["auroc"] = auroc(entropy(probs), entropy(probs_ood))
    return report
