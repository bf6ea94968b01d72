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
    params = est.get_params()
    groups = params.pop("prior_groups")
    if params["covariance_columns"] is not None:  # JSON takes no NumPy integers
        params["covariance_columns"] = [int(c) for c in np.ravel(params["covariance_columns"])]
    if params["fixed_alpha"] is not None:  # pairs: JSON's keys would turn labels into strings
        params["fixed_alpha"] = [
            [label.item() if isinstance(label, np.generic) else label, float(value)]
            for label, value in params["fixed_alpha"].items()
        ]
    params["solver"], params["hyper"] = _encoded(params["solver"]), _encoded(params["hyper"])
    post = est.posterior_
    with atomic_h5(path) as f:
        f.attrs["format"] = FORMAT
        f.attrs["params"] = json.dumps(params)
        f.attrs["y_1d"] = est._y_1d
        f.attrs["n_iter"] = est.n_iter_
        f.attrs["n_solves"] = est.n_solves_
        f.attrs["solver_choice"] = type(est.solver_).__name__.lower()
        f.attrs["solver_reason"] = est.solver_reason_
        f.attrs["converged"] = bool(est.converged_)
        f.attrs["last_change"] = float(est.last_change_)
        for name in ("X_offset_", "y_offset_", "scores_"):
            f[name.rstrip("_")] = np.asarray(getattr(est, name))
        f["alpha"], f["beta"] = np.atleast_1d(est.alpha_), np.atleast_1d(est.beta_)
        if groups is not None:  # integer or string labels
            groups = np.asarray(groups)
            strings = np.issubdtype(groups.dtype, np.str_)
            f["prior_groups"] = groups.astype(h5py.string_dtype()) if strings else groups
        write_trajectory(f.create_group("trajectory"), est.trajectory_)
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
        if hasattr(est, "samples_"):
            f["samples"] = est.samples_
        if hasattr(est, "coef_covariance_"):
            f["coef_covariance"] = est.coef_covariance_
        if hasattr(est, "feature_names_in_"):
            f["feature_names"] = np.asarray(est.feature_names_in_, dtype=h5py.string_dtype())


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
        if f.attrs.get("format") != FORMAT:
            raise ValueError(
                f"path: {path!r} is not a blm regression posterior (format attribute "
                f"{f.attrs.get('format')!r}, expected {FORMAT!r})"
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
        est._y_1d = bool(f.attrs["y_1d"])
        est.n_iter_ = int(f.attrs["n_iter"])
        est.n_solves_ = int(f.attrs.get("n_solves", est.n_iter_ + 1))  # older files: plain
        # files written before solver="auto" ran the solver given
        chosen = str(f.attrs.get("solver_choice", "")) if is_auto(est.solver) else None
        est.solver_ = as_solver(chosen or est.solver).resolved(DESIGN_DEFAULTS)
        est.solver_reason_ = str(f.attrs.get("solver_reason", "given"))
        # files written before these were recorded: not known to have converged
        est.converged_ = bool(f.attrs.get("converged", False))
        est.last_change_ = float(f.attrs.get("last_change", np.nan))
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
        if "feature_names" in f:
            est.feature_names_in_ = np.asarray(f["feature_names"].asstr()[()], dtype=object)
        if est.prior_groups is not None:
            est.prior_group_names_ = np.unique(est.prior_groups)
    est._set_coefficients()
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
