"""``BayesianLinearRegression``'s data preparation: the inputs checked and centred
(dense, scipy sparse or a streamed HDF5 file; frequency weights as √w row scaling), the
prior groups, the fixed α of ``fixed_alpha``, the ``covariance_columns`` checked, and
the checkpoint fingerprint of the settings and the data.

Each function takes the estimator ``est`` whose settings it reads and (``prepare``)
whose offsets it sets.
"""

from __future__ import annotations

import hashlib
import os

import jax
import numpy as np
import scipy.sparse

from blm._checks import (
    as_csr,
    as_float_array,
    frequency_weights,
    non_negative,
    positive,
    positive_int,
    same_length,
)
from blm.csr import sparse_rows
from blm.data import ArrayDataset, default_dtype, is_file
from blm.estimator_defaults import SAMPLED_DEFAULT_K
from blm.features import LinearFeatures, SparseLinearFeatures
from blm.solvers.auto import choose_solver
from blm.solvers.config import DESIGN_DEFAULTS, Solver, as_solver


def is_auto(solver) -> bool:
    """Whether ``solver`` is ``"auto"`` (chosen when fit sees the data)."""
    return isinstance(solver, str) and solver == "auto"


def validate(est) -> None:
    """Check the settings of ``est``, naming the one that is wrong."""
    auto = is_auto(est.solver)
    if not auto:
        est._solver_object()  # TypeError naming solver
    est._rule()  # TypeError naming hyper
    if est.exact_evidence not in (None, True, False):
        raise ValueError(f"exact_evidence must be None, True or False, got {est.exact_evidence!r}")
    if est.n_samples is not None:
        minimum = 0 if auto or est._exact() else 1
        positive_int(est.n_samples, "n_samples", minimum=minimum)
    positive_int(est.max_iter, "max_iter")
    positive(est.tol, "tol")
    if est.evidence_tol is not None:
        positive(est.evidence_tol, "evidence_tol")
    for name in ("alpha_1", "alpha_2", "lambda_1", "lambda_2"):
        if not np.isfinite(getattr(est, name)) or getattr(est, name) < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {getattr(est, name)!r}")
    for name in ("alpha_init", "beta_init"):
        if getattr(est, name) is not None:
            positive(getattr(est, name), name)


def choose(est, features, dataset) -> tuple[Solver, str]:
    """``est``'s solver object for (features, dataset) and why: ``"auto"``'s choice
    (``choose_solver``) and its reason, else the solver given and "given". Raises
    ValueError where ``"auto"`` chose a sampled solver and ``n_samples`` is 0."""
    if not is_auto(est.solver):
        return as_solver(est.solver).resolved(DESIGN_DEFAULTS), "given"
    p = est.X_offset_.shape[0]
    sparse = isinstance(features, SparseLinearFeatures)
    choice = choose_solver(
        n=dataset.n,
        m=dataset.m,
        p=p,
        row_entries=dataset.input_shape[0] if sparse else p,
        n_samples=SAMPLED_DEFAULT_K if est.n_samples in (None, 0) else int(est.n_samples),
        streamed=not dataset.in_memory,
        itemsize=np.dtype(default_dtype()).itemsize,
    )
    if choice.name != "exact" and est.n_samples == 0:
        raise ValueError(
            f"n_samples: solver='auto' chose {choice.name!r} ({choice.reason}), which needs "
            "n_samples >= 1; give n_samples >= 1 or solver='exact'"
        )
    return as_solver(choice.name).resolved(DESIGN_DEFAULTS), choice.reason


def fingerprint(est, X, y, sample_weight=None) -> str:
    """A hash of the settings (progress bars aside), the precision (float32 or
    float64) and the data (an HDF5 file by path, names, shape and modification time;
    arrays by content)."""
    params = {k: v for k, v in est.get_params().items() if k != "progress"}
    params["dtype"] = str(default_dtype())
    groups = params.pop("prior_groups")  # whole (an array's repr elides the middle)
    if groups is not None:
        labels, codes = np.unique(np.asarray(groups), return_inverse=True)
        params["prior_groups"] = (labels.tolist(), hashlib.sha256(codes.tobytes()).hexdigest())
    for name in ("solver", "hyper"):  # objects by their fields, arrays whole
        params[name] = repr(jax.tree.map(np.asarray, params[name]))
        solver = name == "solver" and not is_auto(est.solver)
        leaves = jax.tree.leaves(as_solver(est.solver) if solver else 0)
        for leaf in leaves:
            params[name] += hashlib.sha256(np.ascontiguousarray(leaf).tobytes()).hexdigest()
    h = hashlib.sha256(repr(sorted(params.items())).encode())
    arrays = [] if sample_weight is None else [sample_weight]
    if is_file(X):
        stamp = (os.path.abspath(X.path), X.x_name, X.y_name, X.n, X.m, X.input_shape)
        h.update(repr((stamp, os.path.getmtime(X.path))).encode())
    elif scipy.sparse.issparse(X):
        X = scipy.sparse.csr_array(X)
        arrays += [X.data, X.indices, X.indptr, X.shape, y]
    else:
        arrays += [X, y]
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def prepare(est, X, y, sample_weight=None):
    """(features, centred dataset); sets X_offset_, y_offset_ and the output shape."""
    if is_file(X):
        if y is not None:
            raise ValueError("y: must be None when X is an HDF5Dataset (it holds the targets)")
        est._y_1d = X.y_ndim == 1
        w = None if sample_weight is None else frequency_weights(sample_weight, X.n)
        sparse = X.sparse_rows
        if not sparse and len(X.input_shape) != 1:
            raise ValueError(f"X: rows must be vectors, the file's are {X.input_shape}")
        p, m = X.n_columns if sparse else X.input_shape[0], X.m
        x_mean, y_mean, est._y_var = X.moments(sample_weight=w)
        if est.fit_intercept:
            est.X_offset_, est.y_offset_ = x_mean, y_mean
        else:
            est.X_offset_, est.y_offset_ = np.zeros(p), np.zeros(m)
        if sparse:  # centred by each row's offset pair, never filled in
            x_offset = est.X_offset_ if est.fit_intercept else None
            features = SparseLinearFeatures(p, m, x_offset=x_offset)
            return features, X.shifted(x_offset, est.y_offset_, w)
        dataset = X.shifted(est.X_offset_, est.y_offset_, w)
        return LinearFeatures(p, m), dataset
    sparse = scipy.sparse.issparse(X)
    X = as_csr(X, "X") if sparse else as_float_array(X, "X", ndim=2)
    X = X.astype(est._dtype, copy=False)
    if y is None:
        raise ValueError(
            "y: this estimator requires y to be passed, but the target y is None (only an "
            "HDF5Dataset X holds its own targets)"
        )
    y = as_float_array(y, "y", ndim=(1, 2)).astype(est._dtype, copy=False)
    same_length(X.shape[0], y.shape[0], "X", "y")
    est._y_1d = y.ndim == 1
    Y = y.reshape(y.shape[0], -1)
    n, p = X.shape
    w = None if sample_weight is None else frequency_weights(sample_weight, n)
    y_mean = np.average(Y, axis=0, weights=w)
    est.y_offset_ = y_mean if est.fit_intercept else np.zeros(Y.shape[1])
    est._y_var = np.average((Y - y_mean) ** 2, axis=0, weights=w)
    root = None if w is None else np.sqrt(w)  # rows scaled by √w_i
    n_obs = None if w is None else w.sum()
    Yc = _row_scaled(Y - est.y_offset_, root)
    if not est.fit_intercept:
        est.X_offset_ = np.zeros(p)
    elif sparse:  # Xᵀw / Σw: a dense (p,) vector, X never densified
        weights = np.ones(n) if w is None else w
        est.X_offset_ = np.asarray(X.T @ weights).reshape(p) / weights.sum()
    else:
        est.X_offset_ = np.average(X, axis=0, weights=w)
    if sparse:  # as a SparseHDF5Dataset: centred by each row's offset pair
        x_offset = est.X_offset_ if est.fit_intercept else None
        rows = sparse_rows(X, root, centred=est.fit_intercept)
        dataset = ArrayDataset(rows, Yc, n_observations=n_obs)
        return SparseLinearFeatures(p, Y.shape[1], x_offset=x_offset), dataset
    dataset = ArrayDataset(_row_scaled(X - est.X_offset_, root), Yc, n_observations=n_obs)
    return LinearFeatures(p, Y.shape[1]), dataset


def starting_hyperparameters(est, p: int, m: int, n_groups: int):
    """(α⁰ (G,), β⁰ (m,), fixed mask (G,)): ``alpha_init`` (default 1) for every group but
    the ``fixed_alpha`` ones at their given values, and ``beta_init`` (default 1/Var y)."""
    alpha0 = np.full(n_groups, 1.0 if est.alpha_init is None else float(est.alpha_init))
    fixed, fixed_values = fixed_alpha(est, p, n_groups)
    alpha0[fixed] = fixed_values[fixed]
    eps = np.finfo(np.float64).eps
    beta0 = 1.0 / (est._y_var + eps) if est.beta_init is None else np.full(m, float(est.beta_init))
    return alpha0, beta0, fixed


def fixed_alpha(est, p: int, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the groups whose α is given, the given values), in the groups' order
    (the sorted labels of ``prior_groups``), from ``fixed_alpha``."""
    mask, values = np.zeros(n_groups, bool), np.zeros(n_groups)
    if est.fixed_alpha is None:
        return mask, values
    if not isinstance(est.fixed_alpha, dict) or not est.fixed_alpha:
        raise ValueError(
            f"fixed_alpha must be a non-empty dict {{group label: alpha >= 0}}, got "
            f"{est.fixed_alpha!r}"
        )
    if est.prior_groups is None:
        raise ValueError("fixed_alpha: needs prior_groups (its keys are their labels)")
    labels = np.unique(group_labels_given(est, p)).tolist()
    for label, value in est.fixed_alpha.items():
        if label not in labels:
            raise ValueError(
                f"fixed_alpha: {label!r} is not a label of prior_groups "
                f"({labels if len(labels) <= 10 else labels[:10] + ['…']})"
            )
        g = labels.index(label)
        mask[g], values[g] = True, float(non_negative(value, f"fixed_alpha[{label!r}]"))
    if est._evidence() and np.any(mask & (values == 0)):
        raise ValueError(
            "fixed_alpha: a flat group (alpha 0) needs hyper='mackay' (the evidence "
            "ascent works on log alpha)"
        )
    if np.all(mask) and not np.any(values > 0):
        raise ValueError("fixed_alpha: at least one prior group needs alpha > 0")
    return mask, values


def covariance_columns(est, p: int) -> np.ndarray | None:
    if est.covariance_columns is None:
        return None
    cols = np.asarray(est.covariance_columns)
    if (
        cols.ndim != 1
        or cols.size == 0
        or not np.issubdtype(cols.dtype, np.integer)
        or cols.min() < 0
        or cols.max() >= p
        or np.unique(cols).size != cols.size
    ):
        raise ValueError(
            f"covariance_columns must be distinct column indices in [0, {p}) (the columns "
            f"of X), got {est.covariance_columns!r}"
        )
    return cols


def groups(est, p: int, m: int) -> np.ndarray:
    """Each coefficient's group index (p·m,), the groups numbered in the order of
    ``_group_labels`` (the sorted distinct labels)."""
    if est.prior_groups is None:
        return np.zeros(p * m, np.int32)
    _, g = np.unique(group_labels_given(est, p), return_inverse=True)
    return np.tile(g.astype(np.int32), m)


def group_labels_given(est, p: int) -> np.ndarray:
    g = np.asarray(est.prior_groups)
    integers = np.issubdtype(g.dtype, np.integer) and g.size and g.min() >= 0
    if g.shape != (p,) or not (integers or np.issubdtype(g.dtype, np.str_)):
        raise ValueError(
            f"prior_groups must be {p} labels (one per column of X): non-negative "
            f"integers or strings, got shape {g.shape}, dtype {g.dtype}"
        )
    return g


# -- prediction ------------------------------------------------------------------


def _row_scaled(a: np.ndarray, root: np.ndarray | None) -> np.ndarray:
    """Rows of ``a`` times √w_i (``root``), or ``a`` itself without weights (no copy)."""
    return a if root is None else root[:, None] * a
