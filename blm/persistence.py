"""A fitted ``BayesianLinearRegression`` in an HDF5 file, and back.

Layout (``format`` attribute ``"blm.BayesianLinearRegression/1"``):

- attrs: ``params`` (the constructor arguments as JSON, ``prior_groups`` aside),
  ``y_1d``, ``n_iter``, ``posterior`` (``"exact"`` or ``"sampled"``), ``form``;
- ``X_offset`` (p,), ``y_offset`` (m,), ``alpha`` (G,), ``beta`` (m,), ``scores``,
  ``prior_groups`` (p,) integer or string labels when given, ``trajectory/{alpha,beta,gamma,data_fit,score}``;
- ``posterior/``: ``mean`` (m·p,), and ``samples`` (k, m·p) for sgd/cg (with
  ``precision_diagonal`` diag(H) and ``rhs_second_moment`` where the solver kept them,
  for ``diag_covariance``'s control variate), or ``chol``
  (the Cholesky factor of H, or of the dual system with ``psi``) for the exact solver,
  with ``prior_alpha``, ``prior_groups``;
- ``samples`` (k, [m,] p): ``samples_`` when ``n_samples > 0``;
- ``coef_covariance`` ([m,] s, s): ``coef_covariance_`` when ``covariance_columns`` is set;
- ``feature_names`` (p,) strings: ``feature_names_in_`` when fitted with column names.

Files are written under a temporary name and renamed into place (``atomic_h5``).
"""

from __future__ import annotations

import dataclasses
import json
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from blm.checkpoint import read_trajectory, write_trajectory
from blm.estimator_data import is_auto
from blm.h5io import atomic_h5, open_h5
from blm.precision import computing_in
from blm.priors import Prior
from blm.solvers.config import DESIGN_DEFAULTS, as_solver
from blm.solvers.exact import ExactPosterior
from blm.solvers.sampled import SampledPosterior

FORMAT = "blm.BayesianLinearRegression/1"


def save_estimator(est, path: str | os.PathLike) -> None:
    """Write the fitted estimator ``est`` to ``path`` (see the module docstring)."""
    est._check_fitted()
    post = est.posterior_
    with atomic_h5(path) as f:
        _write_common(f, est, FORMAT)
        f.attrs["y_1d"] = est._y_1d
        f.attrs["n_solves"] = est.n_solves_
        for name in ("X_offset_", "y_offset_", "scores_"):
            f[name.rstrip("_")] = np.asarray(getattr(est, name))
        f["beta"] = np.atleast_1d(est.beta_)
        write_trajectory(f.create_group("trajectory"), est.trajectory_)
        _write_posterior(f, post)
        if hasattr(est, "samples_"):
            f["samples"] = est.samples_
        if hasattr(est, "coef_covariance_"):
            f["coef_covariance"] = est.coef_covariance_


def _write_common(f: h5py.File, est, format_: str) -> None:
    """What every saved estimator holds: format, settings, the fit's steps and
    convergence, the solver chosen, α, prior groups and column names."""
    params = est.get_params()
    groups = params.pop("prior_groups")
    if params.get("covariance_columns") is not None:  # JSON takes no NumPy integers
        params["covariance_columns"] = [int(c) for c in np.ravel(params["covariance_columns"])]
    if params["fixed_alpha"] is not None:  # pairs: JSON's keys would turn labels into strings
        params["fixed_alpha"] = [
            [label.item() if isinstance(label, np.generic) else label, float(value)]
            for label, value in params["fixed_alpha"].items()
        ]
    params["solver"], params["hyper"] = _encoded(params["solver"]), _encoded(params["hyper"])
    f.attrs["format"] = format_
    f.attrs["params"] = json.dumps(params)
    f.attrs["n_iter"] = est.n_iter_
    f.attrs["solver_choice"] = type(est.solver_).__name__.lower()
    f.attrs["solver_reason"] = est.solver_reason_
    f.attrs["converged"] = bool(est.converged_)
    f.attrs["last_change"] = float(est.last_change_)
    f["alpha"] = np.atleast_1d(est.alpha_)
    if groups is not None:  # integer or string labels
        groups = np.asarray(groups)
        strings = np.issubdtype(groups.dtype, np.str_)
        f["prior_groups"] = groups.astype(h5py.string_dtype()) if strings else groups
    if hasattr(est, "feature_names_in_"):
        f["feature_names"] = np.asarray(est.feature_names_in_, dtype=h5py.string_dtype())


def _write_posterior(f: h5py.File, post) -> None:
    """The posterior in group ``posterior``: exact (Cholesky factor) or sampled."""
    g = f.create_group("posterior")
    g["mean"] = np.asarray(post.mean)
    if isinstance(post, ExactPosterior):
        f.attrs["posterior"], f.attrs["form"] = "exact", post.form
        g["chol"] = np.asarray(post.chol)
        g["prior_alpha"] = np.asarray(post.prior.alpha)
        g["prior_groups"] = np.asarray(post.prior.groups)
        if post.psi is not None:
            g["psi"] = np.asarray(post.psi)
    else:
        f.attrs["posterior"] = "sampled"
        g["samples"] = np.asarray(post.samples)
        if post.precision_diagonal is not None:
            g["precision_diagonal"] = np.asarray(post.precision_diagonal)
            g["rhs_second_moment"] = np.asarray(post.rhs_second_moment)


def _configs() -> dict:
    from blm.evidence.lanczos import SLQ
    from blm.rules import EvidenceAscent, MacKay
    from blm.solvers.config import CG, SGD, SVRG, Exact

    return {c.__name__: c for c in (Exact, CG, SGD, SVRG, MacKay, EvidenceAscent, SLQ)}


def _encoded(value):
    """A solver or rule object (or a name) as JSON-ready data: {"class": name, fields}."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encoded(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"class": type(value).__name__, **fields}
    if isinstance(value, np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    return value


def _decoded(value):
    """The object ``_encoded`` wrote."""
    if not isinstance(value, dict):
        return value
    fields = {k: _decoded(v) for k, v in value.items() if k != "class"}
    return _configs()[value["class"]](**fields)


def _upgraded(params: dict) -> dict:
    """Settings of a file written before solvers and rules were objects: its
    ``solver_options``, ``gamma_estimator`` and ``evidence_options`` dicts as the
    ``solver`` and ``hyper`` objects they configured (``progress`` dropped; an sgd
    ``snapshot_every`` as ``svrg=SVRG(...)``)."""
    if not {"solver_options", "gamma_estimator", "evidence_options"} & set(params):
        return params
    from blm.evidence.lanczos import SLQ
    from blm.rules import EvidenceAscent, MacKay
    from blm.solvers.config import SOLVER_NAMES, SVRG

    params = dict(params)
    options = dict(params.pop("solver_options", None) or {})
    options.pop("progress", None)
    if options and params.get("solver") == "sgd" and "snapshot_every" in options:
        options["svrg"] = SVRG(snapshot_every=options.pop("snapshot_every"))
    if params.get("solver") == "cg":
        if options.pop("coarse_blocks", True) is False:
            options["preconditioner"] = "jacobi"
        if options.pop("precondition", True) is False:
            options["preconditioner"] = "none"
    if options and isinstance(params.get("solver"), str):
        params["solver"] = SOLVER_NAMES[params["solver"]](**options)
    gamma = params.pop("gamma_estimator", None)
    evidence = dict(params.pop("evidence_options", None) or {})
    if params.get("hyper") == "evidence" and evidence:
        rate = evidence.pop("learning_rate", 0.1)
        params["hyper"] = EvidenceAscent(learning_rate=rate, slq=SLQ(**evidence))
    elif params.get("hyper") == "mackay" and gamma not in (None, "combined"):
        params["hyper"] = MacKay(gamma=gamma)
    return params


def load_estimator(cls, path: str | os.PathLike):
    """Read an estimator written by ``save_estimator``; it predicts as the saved one."""
    path = os.fspath(path)
    with open_h5(path, "path") as f:
        est = _read_common(f, cls, path, FORMAT, "regression posterior")
        est._y_1d = bool(f.attrs["y_1d"])
        est.n_solves_ = int(f.attrs.get("n_solves", est.n_iter_ + 1))  # older files: plain
        est.X_offset_, est.y_offset_ = f["X_offset"][()], f["y_offset"][()]
        est.scores_ = f["scores"][()]
        alpha, beta = f["alpha"][()], f["beta"][()]
        est.alpha_ = float(alpha[0]) if alpha.size == 1 else alpha
        est.beta_ = float(beta[0]) if beta.size == 1 else beta
        est.trajectory_ = read_trajectory(f["trajectory"])
        g = f["posterior"]
        est._dtype = np.dtype(g["mean"].dtype)
        with computing_in(est._dtype):
            est.posterior_ = _posterior(f, g)
        if "samples" in f:
            est.samples_ = f["samples"][()]
        if "coef_covariance" in f:
            est.coef_covariance_ = f["coef_covariance"][()]
    est._set_coefficients()
    return est


def _read_common(f: h5py.File, cls, path: str, format_: str, what: str):
    """The estimator ``_write_common`` saved: constructed from its settings, with the
    fit's steps, convergence, solver, column names and prior group names set.

    Raises:
        ValueError: naming ``path``, where the file is not of ``format_``.
    """
    if f.attrs.get("format") != format_:
        found = f.attrs.get("format")
        hint = f" (a {found.split('/')[0]} file: load it with that class)" if found else ""
        raise ValueError(
            f"path: {path!r} is not a blm {what} (format attribute {found!r}, expected "
            f"{format_!r}){hint}"
        )
    params = _upgraded(json.loads(f.attrs["params"]))
    if params.get("fixed_alpha") is not None:
        params["fixed_alpha"] = {label: value for label, value in params["fixed_alpha"]}
    if "prior_groups" in f:
        d = f["prior_groups"]
        strings = h5py.check_string_dtype(d.dtype) is not None
        params["prior_groups"] = d.asstr()[()].astype(str) if strings else d[()]
    params["solver"], params["hyper"] = _decoded(params["solver"]), _decoded(params["hyper"])
    est = cls(**params)
    est.n_iter_ = int(f.attrs["n_iter"])
    # files written before solver="auto" ran the solver given
    chosen = str(f.attrs.get("solver_choice", "")) if is_auto(est.solver) else None
    est.solver_ = as_solver(chosen or est.solver).resolved(DESIGN_DEFAULTS)
    est.solver_reason_ = str(f.attrs.get("solver_reason", "given"))
    # files written before these were recorded: not known to have converged
    est.converged_ = bool(f.attrs.get("converged", False))
    est.last_change_ = float(f.attrs.get("last_change", np.nan))
    if "feature_names" in f:
        est.feature_names_in_ = np.asarray(f["feature_names"].asstr()[()], dtype=object)
    if est.prior_groups is not None:
        est.prior_group_names_ = np.unique(est.prior_groups)
    return est


def _posterior(f: h5py.File, g: h5py.Group):
    """The saved posterior (exact or sampled), as JAX arrays in the current precision."""
    mean = jnp.asarray(g["mean"][()])
    if f.attrs["posterior"] == "exact":
        prior = Prior(g["prior_alpha"][()], g["prior_groups"][()])
        psi = jnp.asarray(g["psi"][()]) if "psi" in g else None
        return ExactPosterior(mean, prior, jnp.asarray(g["chol"][()]), psi, str(f.attrs["form"]))
    control = [
        jnp.asarray(g[name][()]) if name in g else None
        for name in ("precision_diagonal", "rhs_second_moment")
    ]
    return SampledPosterior(mean, jnp.asarray(g["samples"][()]), *control)


CLASSIFIER_FORMAT = "blm.BayesianLogisticRegression/1"
"""Layout of a saved classifier: the common attrs and datasets (``params``, ``n_iter``,
``converged``, ``last_change``, ``solver_choice``, ``solver_reason``, ``alpha``,
``prior_groups``, ``feature_names``), ``log_evidence``, ``n_features_in`` attrs;
``classes`` (K,) (attr ``dtype``: the labels' NumPy dtype), ``coef``, ``intercept``,
``coef_std``, ``samples``; ``theta`` (the MAP in the fit's coordinates), ``basis`` (the
intercepts' basis), ``draws`` (k, d) zero-mean posterior draws of θ, and for the exact
solver the ``posterior`` group (the Cholesky factor of H)."""


def save_classifier(est, path: str | os.PathLike) -> None:
    """Write the fitted ``BayesianLogisticRegression`` ``est`` to ``path``
    (``CLASSIFIER_FORMAT``).

    Raises:
        TypeError: naming ``classes_`` where the labels are neither numbers, booleans
            nor strings (HDF5 holds no other label type).
    """
    est._check_fitted()
    classes = label_array(est.classes_)
    with atomic_h5(path) as f:
        _write_common(f, est, CLASSIFIER_FORMAT)
        f.attrs["log_evidence"] = float(est.log_evidence_)
        f.attrs["n_features_in"] = int(est.n_features_in_)
        f["classes"] = classes
        f["classes"].attrs["dtype"] = est.classes_.dtype.str  # "|O" for object labels
        for name in ("coef_", "intercept_", "coef_std_", "samples_"):
            f[name.rstrip("_")] = np.asarray(getattr(est, name))
        f["theta"], f["basis"] = np.asarray(est._theta), np.asarray(est._basis)
        f["draws"] = np.asarray(est._draws)
        if est._exact is not None:
            _write_posterior(f, est._exact)


def label_array(classes: np.ndarray) -> np.ndarray:
    """Class labels as HDF5 stores them (``save_classifier``, ``blm predict``): numbers and booleans as they are, strings as
    variable-length UTF-8."""
    if classes.dtype.kind in "biuf":
        return classes
    numbers = np.asarray(classes.tolist()) if classes.dtype.kind == "O" else classes
    if numbers.dtype.kind in "biuf":  # Python numbers held as objects
        return numbers
    if classes.dtype.kind == "U" or all(isinstance(c, str) for c in classes):
        return np.asarray(classes, dtype=object).astype(h5py.string_dtype())
    kinds = sorted({type(c).__name__ for c in classes})
    raise TypeError(
        f"classes_: labels of type {', '.join(kinds)} cannot be saved to HDF5; fit with "
        "number, boolean or string labels"
    )


def load_classifier(cls, path: str | os.PathLike):
    """Read a classifier written by ``save_classifier``; it predicts as the saved one.

    Raises:
        OSError, ValueError: naming ``path`` (missing, not HDF5, not a classifier).
    """
    path = os.fspath(path)
    with open_h5(path, "path") as f:
        est = _read_common(f, cls, path, CLASSIFIER_FORMAT, "classifier")
        d = f["classes"]
        dtype = np.dtype(d.attrs["dtype"])
        strings = h5py.check_string_dtype(d.dtype) is not None
        est.classes_ = (d.asstr()[()] if strings else d[()]).astype(dtype)
        est.log_evidence_ = float(f.attrs["log_evidence"])
        est.n_features_in_ = int(f.attrs["n_features_in"])
        for name in ("coef_", "intercept_", "coef_std_", "samples_"):
            setattr(est, name, f[name.rstrip("_")][()])
        est.alpha_ = f["alpha"][()]
        est._dtype = np.dtype(est.coef_.dtype)
        with computing_in(est._dtype):
            est._theta = jnp.asarray(f["theta"][()])
            est._basis, est._draws = f["basis"][()], f["draws"][()]
            est._exact = _posterior(f, f["posterior"]) if "posterior" in f else None
    return est


def load_any(path: str | os.PathLike):
    """The estimator saved in ``path``, of the class its format names (a regression
    posterior or a classifier).

    Raises:
        OSError, ValueError: naming ``path``.
    """
    from blm.estimator import BayesianLinearRegression
    from blm.logistic import BayesianLogisticRegression

    with open_h5(os.fspath(path), "path") as f:
        found = f.attrs.get("format")
    if found == CLASSIFIER_FORMAT:
        return BayesianLogisticRegression.load(path)
    return BayesianLinearRegression.load(path)
