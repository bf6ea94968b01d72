r"""``BayesianLinearRegression``: the scikit-learn-style estimator.

Notation follows the papers, not scikit-learn: ``alpha_`` is the prior precision of the
weights (scikit-learn's ``lambda_``) and ``beta_`` the noise precision (scikit-learn's
``alpha_``). The Gamma hyperprior arguments keep scikit-learn's names and meanings:
``lambda_1, lambda_2`` (shape, rate) act on ``alpha_``; ``alpha_1, alpha_2`` on ``beta_``.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from statistics import NormalDist

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from blm import operators as ops
from blm._checks import (
    as_csr,
    as_float_array,
    check_feature_names,
    feature_names,
    frequency_weights,
    non_negative,
    not_fitted_error,
    positive,
    positive_int,
    same_length,
)
from blm._progress import progress_bar
from blm.checkpoint import Checkpointer
from blm.data import ArrayDataset, HDF5Dataset, SparseHDF5Dataset, default_dtype, sparse_rows
from blm.estimator_defaults import ESTIMATOR_DEFAULTS as DEFAULTS
from blm.evidence.ascent import AdamAscent, effective_dimension_from_gradient, fit_evidence
from blm.evidence.closed_form import DenseGaussianModel, GammaHyperprior, exact_mackay_step
from blm.evidence.loop import SolveSchedule, iterate_hyperparameters
from blm.evidence.mackay import fit_mackay
from blm.exceptions import warn_not_converged
from blm.features import LinearFeatures, SparseLinearFeatures
from blm.likelihoods import Gaussian
from blm.memory import available_memory, check_exact_memory, estimate_exact_memory
from blm.persistence import load_estimator, save_estimator
from blm.precision import computing_in, in_fitted_precision, input_dtype
from blm.priors import Prior
from blm.rules import EvidenceAscent, MacKay, Rule, as_rule
from blm.solvers.cg import cg_solve
from blm.solvers.config import CG, DESIGN_DEFAULTS, Exact, Problem, Solver, as_solver
from blm.solvers.sampled import SampledPosterior

SAMPLED_DEFAULT_K = 16
"""Posterior samples an sgd/cg fit draws unless ``n_samples`` says otherwise."""


@eqx.filter_jit
def _exact_score(model, prior, beta, hyperprior):
    post = model.posterior(prior, beta)
    return model.log_evidence(post, beta) + hyperprior.log_density(prior.alpha, beta)


@eqx.filter_jit
def _exact_evidence_and_grad(model, prior, beta):
    return model.log_evidence_and_grad(prior, beta)


class BayesianLinearRegression:
    r"""Bayesian linear regression with evidence-tuned prior and noise precisions.

    Model: y = Xθ + b + η, θ ~ N(0, A⁻¹), η ~ N(0, β⁻¹) per output. A = α I, or
    diag(α_g) over the groups given by ``prior_groups``. α and β are fitted by
    MacKay's fixed-point iteration (maximising the evidence, with optional Gamma
    hyperpriors), then the posterior N(θ̄, H⁻¹), H = β XᵀX + A, is reported.

    Multi-output targets y of shape (n, m) get one β per output and an m × p
    coefficient matrix; the weights of all outputs share the prior.

    ``hyper="evidence"`` instead maximises the evidence (plus hyperprior) by Adam on
    (log α, log β): with the dense closed form for ``solver="exact"``, and with log det H
    by stochastic Lanczos quadrature and exact adjoint gradients for ``"sgd"``/``"cg"``
    (θ̄ from the solver; see ``blm.evidence.lanczos``). Both methods reach the same
    optimum; MacKay's fixed point usually needs fewer steps.

    With ``solver="exact"`` α, β follow MacKay's exact fixed point (dense Cholesky).
    With ``"sgd"`` (sample-then-optimise, minibatched) or ``"cg"`` (conjugate gradients,
    full batch) each EM step draws ``n_samples`` posterior samples matrix-free and
    updates α, β with the sample-based effective dimension γ̂ = mean_j z_jᵀΦᵀBΦz_j;
    the noise of the samples is the same at every step (common random numbers), and
    each step warm-starts from the previous solution.

    Parameters:
        n_samples: posterior samples: kept in ``samples_``, and used by ``sgd``/``cg``
            for γ̂ and for predictive variances (at least 1 there). None (default): 16
            for sgd/cg, none for exact.
        random_state: seed of the samples (and of SGD's minibatches).
        max_iter, tol: stop the hyperparameter iteration after ``max_iter`` steps or
            when no α_g, β_k changes by more than ``tol`` relative.
        fit_intercept: centre X and y before fitting, as scikit-learn does (the
            intercept gets no prior and no posterior variance).
        alpha_1, alpha_2: Gamma(shape, rate) hyperprior on the noise precision β.
        lambda_1, lambda_2: Gamma(shape, rate) hyperprior on the weight precision α.
        alpha_init, beta_init: starting α (default 1) and β (default 1/Var(y)).
        prior_groups: optional group label per input column (non-negative integers, or
            strings such as "unit", "period") for one α_g per group.
        solver: the posterior solver: ``"exact"`` (dense Cholesky), ``"cg"`` or ``"sgd"``
            (matrix-free) for their default objects, or a configured one:
            ``blm.Exact()``, ``blm.CG(tol, max_iter, preconditioner, ...)``,
            ``blm.SGD(n_steps, batch_size, ..., svrg=blm.SVRG(), tol)`` (see
            ``blm.solvers.config``; their ``None`` fields take the design-matrix defaults
            ``DESIGN_DEFAULTS``: cg tol 1e-6, sgd 2 000 steps with Jacobi preconditioning).
            Where a solve has a tolerance (cg; sgd with svrg and tol), early EM steps are
            solved loosely, to clip(0.01·Δ, tol, 1e-2) with Δ the previous step's
            relative change of α, β, and the fit stops only after a step solved to
            ``tol`` (``SolveSchedule``; the same fixed point, about half the solver
            work): ``adaptive_tol=False`` on the solver solves every step to ``tol``. A
            final solve that stops at its cap before ``tol`` warns.
        progress: show a progress bar over the EM steps.
        hyper: the hyperparameter rule: ``"mackay"`` (fixed-point EM, default) or
            ``"evidence"`` (gradient ascent) for their default objects, or a configured
            ``blm.MacKay(gamma=...)`` (the form of the sampled γ̂: ``"combined"`` by
            default here, ``"data"`` or ``"prior"``; see ``blm.evidence.mackay``) or
            ``blm.EvidenceAscent(learning_rate=0.1, slq=blm.SLQ(depth=50, n_probes=8))``.
        exact_evidence: for sgd/cg with MacKay EM, also score every step by the exact
            evidence (forms Φ and its d × d Gram densely: memory n·m·d + d², a Cholesky per
            step). None (default): only where that is cheap, d·m ≤ 2 048 and
            n·m·d ≤ 5·10⁷.
        covariance_columns: indices of s columns of X whose joint posterior covariance
            (per output) is computed after the fit, into ``coef_covariance_``: from the
            Cholesky factor (exact), else by cg on H with the s unit vectors as
            right-hand sides whatever the solver (to cg's ``tol``, default 1e-6; memory
            s·m·d, one pass over the data per iteration). For the few coefficients of
            interest beside many nuisance ones (a panel's fixed effects), where
            ``coef_std_`` from k samples is good only to about 1/√(2k) (less where H is
            nearly diagonal, see ``coef_std_``).
        fixed_alpha: ``{label: α}`` for prior groups whose precision is given, not fitted
            (labels of ``prior_groups``). α = 0 is a flat prior: that group's coefficients
            are unpenalised, as the intercept is (a mixed model's fixed effects beside
            the random effects of the fitted groups); the evidence is then the
            restricted likelihood, and its maximum in the other α_g and β is the REML
            estimate of their variance components (tested against statsmodels' MixedLM
            with ``fit_intercept=False`` and the constant among the flat columns: the
            centred intercept is not counted in β's n − γ, as in scikit-learn). The
            flat columns must be linearly independent, and independent of the
            intercept with ``fit_intercept`` (a complete set of dummies is not: drop
            one); every solver checks (sgd/cg by one pass over the data with the d_f
            flat unit vectors, where d_f·d ≤ 2²⁵; beyond, they assume it). Flat groups need
            ``hyper="mackay"``.

    Attributes (after ``fit``):
        coef_, intercept_: posterior mean of the weights and the intercept.
        alpha_: weight prior precision (array when there are several groups, in the
            order of ``prior_group_names_``).
        prior_group_names_: with ``prior_groups``, its distinct labels, sorted: the
            groups of ``alpha_``.
        beta_: noise precision (array when there are several outputs).
        sigma_: posterior covariance H⁻¹ of the weights (from the samples for sgd/cg).
        feature_names_in_: the column names of X when fitted to a table with string
            column names (pandas), or to an HDF5 file whose X has a ``columns`` attribute.
        coef_std_: marginal posterior standard deviations √diag(H⁻¹), shaped as coef_
            (from the samples for sgd/cg; never forms H⁻¹).
        coef_covariance_: with ``covariance_columns``, their posterior covariance
            (s, s), or (m, s, s) with m outputs (exact, or solved to cg's tolerance).
        scores_: log evidence + log hyperprior at each step and at the end (exact
            solver); for sgd/cg the SLQ estimate at each step with ``hyper="evidence"``
            (its last entry, at the final hyperparameters, NaN); with MacKay EM and
            ``exact_evidence`` the dense closed form at every step and at the end, else NaN
            (EM never needs the log-determinant).
        trajectory_: α, β, γ, data fit and score at each step.
        n_iter_: hyperparameter steps taken.
        converged_: whether the hyperparameter loop met ``tol`` before ``max_iter`` and
            the final solve (cg; sgd with a tol) its tolerance before its cap; where
            either did not, ``fit`` warned with ``blm.ConvergenceWarning`` naming the
            argument to raise.
        last_change_: the largest relative change of any α_g, β_k at the last step.
        samples_: ``n_samples`` posterior draws of ``coef_`` (if ``n_samples > 0``).
    """

    def __init__(
        self,
        solver: str | Solver = DEFAULTS["solver"],
        n_samples: int | None = DEFAULTS["n_samples"],
        random_state: int | None = None,
        max_iter: int = DEFAULTS["max_iter"],
        tol: float = DEFAULTS["tol"],
        fit_intercept: bool = True,
        alpha_1: float = 1e-6,
        alpha_2: float = 1e-6,
        lambda_1: float = 1e-6,
        lambda_2: float = 1e-6,
        alpha_init: float | None = None,
        beta_init: float | None = None,
        prior_groups=None,
        progress: bool = False,
        hyper: str | Rule = DEFAULTS["hyper"],
        exact_evidence: bool | None = None,
        covariance_columns=None,
        fixed_alpha: dict | None = None,
    ):
        self.solver = solver
        self.n_samples = n_samples
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.alpha_1 = alpha_1
        self.alpha_2 = alpha_2
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.alpha_init = alpha_init
        self.beta_init = beta_init
        self.prior_groups = prior_groups
        self.progress = progress
        self.hyper = hyper
        self.exact_evidence = exact_evidence
        self.covariance_columns = covariance_columns
        self.fixed_alpha = fixed_alpha

    # -- scikit-learn protocol ----------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Constructor arguments as a dict (scikit-learn protocol)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> BayesianLinearRegression:
        """Set constructor arguments (scikit-learn protocol)."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{name!r} is not a parameter of BayesianLinearRegression; valid: {valid}"
                )
            setattr(self, name, value)
        return self

    _estimator_type = "regressor"  # scikit-learn < 1.6 reads this

    def __sklearn_tags__(self):
        """scikit-learn ≥ 1.6's tags (asked only by scikit-learn, so importable then):
        a regressor for ``cross_val_score``, ``GridSearchCV`` and pipelines; dense or
        scipy sparse 2-D inputs, one or several outputs."""
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(
            estimator_type="regressor",
            target_tags=TargetTags(required=True, multi_output=True, single_output=True),
            regressor_tags=RegressorTags(),
            input_tags=InputTags(two_d_array=True, sparse=True),
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"BayesianLinearRegression({args})"

    # -- fitting -------------------------------------------------------------------
    def _k(self) -> int:
        """``n_samples``, or its default: 16 for sgd/cg, 0 for exact."""
        if self.n_samples is not None:
            return int(self.n_samples)
        return 0 if self._exact() else SAMPLED_DEFAULT_K

    def _solver_object(self) -> Solver:
        """``solver`` as an object, its ``None`` fields set for a design matrix."""
        return as_solver(self.solver).resolved(DESIGN_DEFAULTS)

    def _rule(self) -> Rule:
        """``hyper`` as an object, its ``None`` fields set for a design matrix."""
        return as_rule(self.hyper).resolved(DESIGN_DEFAULTS)

    def _exact(self) -> bool:
        return isinstance(self._solver_object(), Exact)

    def _evidence(self) -> bool:
        return isinstance(self._rule(), EvidenceAscent)

    def _solver_name(self) -> str:
        return self.solver if isinstance(self.solver, str) else type(self.solver).__name__

    def _validate(self) -> None:
        self._solver_object(), self._rule()  # TypeError naming solver / hyper
        if self.exact_evidence not in (None, True, False):
            raise ValueError(
                f"exact_evidence must be None, True or False, got {self.exact_evidence!r}"
            )
        if self.n_samples is not None:
            minimum = 0 if self._exact() else 1
            positive_int(self.n_samples, "n_samples", minimum=minimum)
        positive_int(self.max_iter, "max_iter")
        positive(self.tol, "tol")
        for name in ("alpha_1", "alpha_2", "lambda_1", "lambda_2"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(
                    f"{name} must be a finite number >= 0, got {getattr(self, name)!r}"
                )
        for name in ("alpha_init", "beta_init"):
            if getattr(self, name) is not None:
                positive(getattr(self, name), name)

    def fit(
        self,
        X,
        y=None,
        sample_weight=None,
        *,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
        checkpoint_every: float = 60.0,
    ) -> BayesianLinearRegression:
        """Fit α, β and the posterior of the weights to data X (n, p), y (n,) or (n, m),
        or to an ``HDF5Dataset`` X (y None) read in row blocks: then nothing of size
        n·p is held in memory (the exact solver keeps the p × p Gram; centring is applied
        as blocks are read). A scipy sparse X is fitted as a ``SparseHDF5Dataset`` is:
        never densified by sgd/cg, and centred as a dense X is (each row carries one
        more (column, value) pair that the features read as −x̄: the same fit as
        ``X.toarray()``, as scikit-learn's sparse ``Ridge`` centres implicitly).

        ``sample_weight`` (n,) ≥ 0 (in memory, also for a file): frequency weights as in
        scikit-learn's ``BayesianRidge``, row i's likelihood N(y_i; x_iθ, 1/β)^{w_i}: the
        offsets are weighted means, rows are scaled by √w_i, and β's update and the
        evidence count Σw observations (a row of weight 2 is two rows; w = 1 is the
        unweighted fit).

        ``checkpoint``: a file where the hyperparameter loop's state is written at most
        every ``checkpoint_every`` seconds and when the fit is interrupted (Ctrl-C);
        ``resume=True`` continues from it (same data and settings, else ValueError), and
        gives the result an uninterrupted fit would have.

        Precision follows X (``blm.precision``): float32 data are computed in float32
        and give float32 attributes and predictions, anything else float64, inside
        ``jax.enable_x64`` (JAX's global flag untouched); an ``HDF5Dataset`` in JAX's
        current default."""
        self._validate()
        self._dtype = input_dtype(X)
        with computing_in(self._dtype):
            return self._fit(X, y, sample_weight, checkpoint, resume, checkpoint_every)

    def _fit(self, X, y, sample_weight, checkpoint, resume, checkpoint_every):
        names = X.feature_names if isinstance(X, HDF5Dataset) else feature_names(X)
        features, dataset = self._prepare(X, y, sample_weight)
        self.X_offset_ = np.asarray(self.X_offset_, self._dtype)
        self.y_offset_ = np.asarray(self.y_offset_, self._dtype)
        columns = self._covariance_columns(self.X_offset_.shape[0])
        self._checkpointer = None
        if checkpoint is not None:
            self._checkpointer = Checkpointer(
                checkpoint, checkpoint_every, self._fingerprint(X, y, sample_weight), resume
            )
        elif resume:
            raise ValueError("resume: needs a checkpoint file to resume from")
        p, m = self.X_offset_.shape[0], dataset.m
        groups = self._groups(p, m)
        n_groups = int(groups.max()) + 1
        alpha0 = np.full(n_groups, 1.0 if self.alpha_init is None else float(self.alpha_init))
        fixed, fixed_values = self._fixed_alpha(p, n_groups)
        alpha0[fixed] = fixed_values[fixed]
        eps = np.finfo(np.float64).eps
        beta0 = (
            1.0 / (self._y_var + eps)
            if self.beta_init is None
            else np.full(m, float(self.beta_init))
        )
        hyperprior = GammaHyperprior(self.lambda_1, self.lambda_2, self.alpha_1, self.alpha_2)
        template = Prior(alpha0, groups)
        key = jax.random.PRNGKey(0 if self.random_state is None else self.random_state)
        if self._exact():
            alpha, beta, info = self._fit_exact(
                features, dataset, template, beta0, hyperprior, fixed
            )
        else:
            alpha, beta, info = self._fit_sampled(
                features, dataset, template, Gaussian(beta0), hyperprior, key, fixed
            )
        post = info["posterior"]
        loop_converged, self.last_change_, solved = self._loop_report
        del self._loop_report
        self.converged_ = bool(loop_converged and solved)
        if not loop_converged:
            warn_not_converged(
                f"BayesianLinearRegression: the hyperparameter loop stopped at "
                f"max_iter={self.max_iter} with the last relative change of alpha, beta "
                f"{self.last_change_:.2e} above tol={self.tol:g}: not converged; raise "
                "max_iter (or tol)",
                stacklevel=2,
            )
        self.scores_ = np.asarray([*self.trajectory_.score, float(info.get("score", np.nan))])
        self.posterior_ = post
        self.alpha_ = float(alpha[0]) if n_groups == 1 else np.asarray(alpha)
        if self.prior_groups is not None:
            self.prior_group_names_ = np.unique(self._group_labels_given(p))
        self.beta_ = float(beta[0]) if m == 1 else np.asarray(beta)
        self._set_coefficients()
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # from an earlier fit to a table
        if columns is not None:
            dtype = default_dtype()
            self.coef_covariance_ = self._coef_covariance(
                columns,
                features,
                dataset,
                template.with_alpha(jnp.asarray(alpha, dtype)),
                Gaussian(jnp.asarray(beta, dtype)),
            )
        elif hasattr(self, "coef_covariance_"):
            del self.coef_covariance_  # from an earlier fit with other columns
        if self._k() > 0:
            if self._exact():
                z = post.sample(jax.random.fold_in(key, 1), self._k())
            else:
                z = post.samples
            draws = np.asarray(post.mean + z).reshape(-1, m, p)
            self.samples_ = draws[:, 0] if self._y_1d else draws
        return self

    def _set_coefficients(self) -> None:
        """coef_, intercept_, n_features_in_ and the feature map from posterior_ and the
        offsets."""
        p, m = self.X_offset_.shape[0], self.y_offset_.shape[0]
        self.n_features_in_ = p
        coef = np.asarray(self.posterior_.mean).reshape(m, p)
        self.coef_ = coef[0] if self._y_1d else coef
        intercept = self.y_offset_ - coef @ self.X_offset_
        self.intercept_ = float(intercept[0]) if self._y_1d else intercept
        self._features = LinearFeatures(p, m)

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to an HDF5 file (``blm.persistence`` has the layout);
        written under a temporary name and renamed, so a killed process never leaves a
        truncated file in its place."""
        save_estimator(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BayesianLinearRegression:
        """A fitted model read from a file written by ``save``."""
        return load_estimator(cls, path)

    def _fingerprint(self, X, y, sample_weight=None) -> str:
        """A hash of the settings (progress bars aside), the precision (float32 or
        float64) and the data (an HDF5 file by path, names, shape and modification time;
        arrays by content)."""
        params = {k: v for k, v in self.get_params().items() if k != "progress"}
        params["dtype"] = str(default_dtype())
        groups = params.pop("prior_groups")  # whole (an array's repr elides the middle)
        if groups is not None:
            labels, codes = np.unique(np.asarray(groups), return_inverse=True)
            params["prior_groups"] = (labels.tolist(), hashlib.sha256(codes.tobytes()).hexdigest())
        for name in ("solver", "hyper"):  # objects by their fields, arrays whole
            params[name] = repr(jax.tree.map(np.asarray, params[name]))
            leaves = jax.tree.leaves(as_solver(self.solver) if name == "solver" else 0)
            for leaf in leaves:
                params[name] += hashlib.sha256(np.ascontiguousarray(leaf).tobytes()).hexdigest()
        h = hashlib.sha256(repr(sorted(params.items())).encode())
        arrays = [] if sample_weight is None else [sample_weight]
        if isinstance(X, HDF5Dataset):
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

    def _prepare(self, X, y, sample_weight=None):
        """(features, centred dataset); sets X_offset_, y_offset_ and the output shape."""
        if isinstance(X, HDF5Dataset):
            if y is not None:
                raise ValueError("y: must be None when X is an HDF5Dataset (it holds the targets)")
            self._y_1d = X.y_ndim == 1
            w = None if sample_weight is None else frequency_weights(sample_weight, X.n)
            sparse = isinstance(X, SparseHDF5Dataset)
            if not sparse and len(X.input_shape) != 1:
                raise ValueError(f"X: rows must be vectors, the file's are {X.input_shape}")
            p, m = X.n_columns if sparse else X.input_shape[0], X.m
            x_mean, y_mean, self._y_var = X.moments(sample_weight=w)
            if self.fit_intercept:
                self.X_offset_, self.y_offset_ = x_mean, y_mean
            else:
                self.X_offset_, self.y_offset_ = np.zeros(p), np.zeros(m)
            if sparse:  # centred by each row's offset pair, never filled in
                x_offset = self.X_offset_ if self.fit_intercept else None
                features = SparseLinearFeatures(p, m, x_offset=x_offset)
                return features, X.shifted(x_offset, self.y_offset_, w)
            dataset = X.shifted(self.X_offset_, self.y_offset_, w)
            return LinearFeatures(p, m), dataset
        sparse = scipy.sparse.issparse(X)
        X = as_csr(X, "X") if sparse else as_float_array(X, "X", ndim=2)
        X = X.astype(self._dtype, copy=False)
        if y is None:
            raise ValueError(
                "y: this estimator requires y to be passed, but the target y is None (only an "
                "HDF5Dataset X holds its own targets)"
            )
        y = as_float_array(y, "y", ndim=(1, 2)).astype(self._dtype, copy=False)
        same_length(X.shape[0], y.shape[0], "X", "y")
        self._y_1d = y.ndim == 1
        Y = y.reshape(y.shape[0], -1)
        n, p = X.shape
        w = None if sample_weight is None else frequency_weights(sample_weight, n)
        y_mean = np.average(Y, axis=0, weights=w)
        self.y_offset_ = y_mean if self.fit_intercept else np.zeros(Y.shape[1])
        self._y_var = np.average((Y - y_mean) ** 2, axis=0, weights=w)
        root = None if w is None else np.sqrt(w)  # rows scaled by √w_i
        n_obs = None if w is None else w.sum()
        Yc = _row_scaled(Y - self.y_offset_, root)
        if not self.fit_intercept:
            self.X_offset_ = np.zeros(p)
        elif sparse:  # Xᵀw / Σw: a dense (p,) vector, X never densified
            weights = np.ones(n) if w is None else w
            self.X_offset_ = np.asarray(X.T @ weights).reshape(p) / weights.sum()
        else:
            self.X_offset_ = np.average(X, axis=0, weights=w)
        if sparse:  # as a SparseHDF5Dataset: centred by each row's offset pair
            x_offset = self.X_offset_ if self.fit_intercept else None
            rows = sparse_rows(X, root, centred=self.fit_intercept)
            dataset = ArrayDataset(rows, Yc, n_observations=n_obs)
            return SparseLinearFeatures(p, Y.shape[1], x_offset=x_offset), dataset
        dataset = ArrayDataset(_row_scaled(X - self.X_offset_, root), Yc, n_observations=n_obs)
        return LinearFeatures(p, Y.shape[1]), dataset

    def _fixed_alpha(self, p: int, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask of the groups whose α is given, the given values), in the groups' order
        (the sorted labels of ``prior_groups``), from ``fixed_alpha``."""
        mask, values = np.zeros(n_groups, bool), np.zeros(n_groups)
        if self.fixed_alpha is None:
            return mask, values
        if not isinstance(self.fixed_alpha, dict) or not self.fixed_alpha:
            raise ValueError(
                f"fixed_alpha must be a non-empty dict {{group label: alpha >= 0}}, got "
                f"{self.fixed_alpha!r}"
            )
        if self.prior_groups is None:
            raise ValueError("fixed_alpha: needs prior_groups (its keys are their labels)")
        labels = np.unique(self._group_labels_given(p)).tolist()
        for label, value in self.fixed_alpha.items():
            if label not in labels:
                raise ValueError(
                    f"fixed_alpha: {label!r} is not a label of prior_groups "
                    f"({labels if len(labels) <= 10 else labels[:10] + ['…']})"
                )
            g = labels.index(label)
            mask[g], values[g] = True, float(non_negative(value, f"fixed_alpha[{label!r}]"))
        if self._evidence() and np.any(mask & (values == 0)):
            raise ValueError(
                "fixed_alpha: a flat group (alpha 0) needs hyper='mackay' (the evidence "
                "ascent works on log alpha)"
            )
        if np.all(mask) and not np.any(values > 0):
            raise ValueError("fixed_alpha: at least one prior group needs alpha > 0")
        return mask, values

    def _fit_exact(self, features, dataset, template: Prior, beta0, hyperprior, fixed):
        """α, β by MacKay's exact fixed point or by Adam on the dense evidence (the α_g of
        the groups ``fixed`` kept)."""
        dtype = default_dtype()
        streamed = dataset.block_size if isinstance(dataset, HDF5Dataset) else None
        itemsize = np.dtype(dtype).itemsize
        flat = template.has_flat  # the dual form needs A⁻¹: primal
        check_exact_memory(
            estimate_exact_memory(dataset.n, dataset.m, features.d, itemsize, streamed, flat),
            "the posterior",
            f"n = {dataset.n} rows and d = {features.d} weights",
            "use solver='cg' or solver='sgd' (matrix-free: memory of order (n_samples + 1)·d "
            "beside the data)",
            available_memory(),
        )
        model = DenseGaussianModel.from_data(features, dataset, "primal" if flat else "auto")
        if flat:
            cols = np.flatnonzero(np.asarray(template.precision()) == 0)
            gram = np.asarray(model.gram)
            _check_flat_columns(
                np.einsum("k,kde->de", beta0, gram[:, cols][:, :, cols]), gram.dtype
            )
        if self._evidence():
            learning_rate = self._rule().learning_rate
            ascent = AdamAscent(template.alpha, beta0, hyperprior, learning_rate)
            resumed = self._checkpointer.resumed if self._checkpointer is not None else None
            if resumed is not None:
                ascent.restore(resumed.extra)

        def step(alpha, beta):
            p, b = template.with_alpha(jnp.asarray(alpha, dtype)), jnp.asarray(beta, dtype)
            if not self._evidence():
                return exact_mackay_step(model, p, b, hyperprior)
            value, g_alpha, g_beta, post = _exact_evidence_and_grad(model, p, b)
            new_alpha, new_beta, score = ascent.step(alpha, beta, float(value), g_alpha, g_beta)
            gamma = effective_dimension_from_gradient(g_alpha, alpha, p.group_sum(post.mean**2))
            info = {"posterior": post, "score": score, "gamma": float(np.sum(gamma))}
            info["data_fit"] = float(jnp.sum(b * model.residual_sq(post.mean)))
            return new_alpha, new_beta, info

        def step_summary(alpha, beta):
            new_alpha, new_beta, info = step(alpha, beta)
            return new_alpha, new_beta, {k: v for k, v in info.items() if k != "posterior"}

        alpha, beta, self.n_iter_, self.trajectory_, report = iterate_hyperparameters(
            step_summary,
            np.asarray(template.alpha),
            beta0,
            self.max_iter,
            self.tol,
            self._progress_callback(),
            self._checkpointer,
            ascent.state_arrays if self._evidence() else dict,
            fixed,
        )
        self._loop_report = (report["converged"], report["change"], True)
        if not self._evidence():
            return alpha, beta, step(alpha, beta)[2]  # the posterior at the final α, β
        value, _, _, post = _exact_evidence_and_grad(
            model, template.with_alpha(jnp.asarray(alpha, dtype)), jnp.asarray(beta, dtype)
        )
        score = float(value) + float(hyperprior.log_density(jnp.asarray(alpha), jnp.asarray(beta)))
        return alpha, beta, {"posterior": post, "score": score}

    def _fit_sampled(self, features, dataset, template: Prior, likelihood, hyperprior, key, fixed):
        """α, β by sample-based MacKay EM or SLQ evidence ascent around an sgd/cg solver
        (the α_g of the groups ``fixed`` kept)."""
        solve, schedule, final_tol = self._solver(features, dataset, template, key)
        if template.has_flat:
            self._check_flat_block(features, dataset, template, likelihood)
        progress = self._progress_callback()
        score = None
        rule = self._rule()
        if isinstance(rule, MacKay):
            score = self._exact_scorer(features, dataset, hyperprior)
            fit = fit_mackay(
                solve,
                features,
                template,
                likelihood,
                dataset,
                hyperprior,
                rule.gamma,
                self.max_iter,
                self.tol,
                progress,
                evidence=score,
                checkpointer=self._checkpointer,
                schedule=schedule,
                fixed=fixed,
            )
        else:
            fit = fit_evidence(
                solve,
                features,
                template,
                likelihood,
                dataset,
                jax.random.fold_in(key, 2),
                rule.slq,
                hyperprior,
                rule.learning_rate,
                self.max_iter,
                self.tol,
                progress,
                self._checkpointer,
                schedule,
                fixed,
            )
        self.n_iter_, self.trajectory_, self.diagnostics_ = (
            fit.n_iter,
            fit.trajectory,
            fit.diagnostics,
        )
        fit.warn_if_unsolved(final_tol, self._solver_object())
        self._loop_report = (fit.converged, fit.last_change, fit.solve_converged(final_tol))
        info = {"posterior": fit.posterior}
        if score is not None:
            dtype = default_dtype()
            info["score"] = score(
                template.with_alpha(jnp.asarray(fit.alpha, dtype)),
                likelihood.with_beta(jnp.asarray(fit.beta, dtype)),
            )
        return fit.alpha, fit.beta, info

    def _check_flat_block(self, features, dataset, prior: Prior, likelihood) -> None:
        """The exact solver's collinearity check of the flat columns (``_check_flat_columns``)
        for sgd/cg, from one pass over the data: (ΦᵀBΦ)_ff = E_fᵀΦᵀBΦE_f with the unit
        vectors E_f of the d_f flat coordinates (memory d_f·d). Skipped where that would
        exceed ``FLAT_CHECK_NUMBERS`` (then the columns are assumed independent)."""
        cols = np.flatnonzero(np.asarray(prior.precision()) == 0)
        if cols.size * features.d > FLAT_CHECK_NUMBERS:
            return
        dtype = default_dtype()
        units = jnp.zeros((cols.size, features.d), dtype).at[np.arange(cols.size), cols].set(1)
        block_size = self._solver_object().block_size
        gram = ops.normal_matvec(features, likelihood, dataset, units, block_size)[:, cols]
        _check_flat_columns(gram, dtype)

    def _exact_scorer(self, features, dataset, hyperprior):
        """(prior, likelihood) -> exact log evidence + log hyperprior from the dense
        closed form, or None where ``exact_evidence`` says not to (auto: when cheap)."""
        d, m, n = features.d, features.m, dataset.n
        wanted = self.exact_evidence
        if wanted is None:
            wanted = d * m <= 2048 and n * m * d <= 5e7
        if not wanted:
            return None
        model = DenseGaussianModel.from_data(features, dataset, "primal")  # flat groups too

        return lambda prior, likelihood: float(
            _exact_score(model, prior, likelihood.beta, hyperprior)
        )

    def _solver(self, features, dataset, prior: Prior, key):
        """(solve, schedule, tol): solve(likelihood, prior, init, tol=None) -> (posterior,
        diagnostics) by the sgd/cg solver object, with one key for every call (common
        random numbers across EM steps) and its state's passes carried from call to call
        (rescaled to each β); schedule: the ``SolveSchedule`` to the solver's tolerance,
        None with ``adaptive_tol=False`` or without a tolerance (plain sgd); tol: the final
        solves' tolerance."""
        solver = self._solver_object()
        problem = Problem(features, None, prior, dataset, outputs=features.m)
        state = solver.init(problem, key, self._k())
        final = solver.final_tol
        adaptive = final is not None and solver.adaptive_tol is not False
        schedule = SolveSchedule(final) if adaptive else None

        def solve(lik, prior, init, tol=None):
            return solver.solve(state, lik, prior, init, tol)

        return solve, schedule, final

    def _progress_callback(self):
        if not self.progress:
            return None
        name = "EM" if self.hyper == "mackay" else "evidence ascent"
        bar = progress_bar(True, self.max_iter, f"{name} ({self._solver_name()})")

        def update(it, change):
            bar.update(1)
            bar.set_postfix(change=f"{change:.2e}")

        return update

    @property
    @in_fitted_precision
    def sigma_(self) -> np.ndarray:
        """Posterior covariance H⁻¹ of the weights (exact, or the samples' second moment):
        d² numbers, refused with ``MemoryError`` where they (twice: the device's array
        and NumPy's copy) would not fit in the memory available."""
        self._check_fitted()
        d = int(self.posterior_.mean.shape[0])
        need = 2 * d * d * np.dtype(self.posterior_.mean.dtype).itemsize
        if need > available_memory():
            raise MemoryError(
                f"sigma_ is the {d} x {d} posterior covariance, {need / 2**30:.1f} GiB with its "
                "copy, more than the memory available; use coef_std_ (marginal sds), "
                "covariance_columns (the covariance of chosen coefficients), samples_ (draws "
                "of the coefficients) or predict(X, return_std=True), which never form it"
            )
        return np.asarray(self.posterior_.covariance())

    @property
    @in_fitted_precision
    def coef_std_(self) -> np.ndarray:
        """Marginal posterior standard deviation of each weight, √diag(H⁻¹), shaped as
        ``coef_`` (a 95 % credible interval is ``coef_ ± 1.96 coef_std_``). Exact for the
        exact solver (from the Cholesky factor, d numbers at a time beside it); for sgd/cg
        the samples' estimate of diag(H⁻¹) with diag(H) as control variate
        (``SampledPosterior.diag_covariance``): the plain √((1/k) Σ_j z_ji²) is off by
        about 1/√(2k) relative (18 % at k = 16, 5 % at k = 200), the controlled one by
        that times √(1 − 1/(H_ii v_i)²) (3–4 % at k = 16 for a panel's one-hot effects;
        ``posterior_.diag_covariance_rel_sd() / 2`` estimates it per coefficient):
        memory d, where ``sigma_`` needs d²."""
        self._check_fitted()
        p, m = self.X_offset_.shape[0], self.y_offset_.shape[0]
        std = np.sqrt(np.asarray(self.posterior_.diag_covariance())).reshape(m, p)
        return std[0] if self._y_1d else std

    @in_fitted_precision
    def _sd_error(self) -> float:
        """The median relative error of the sampled ``coef_std_``, in %: half the
        predicted relative sd of diag(H⁻¹)'s estimate (``diag_covariance_rel_sd``)."""
        return 50 * float(np.median(np.asarray(self.posterior_.diag_covariance_rel_sd())))

    def _alpha_text(self) -> str:
        names = getattr(self, "prior_group_names_", None)
        if names is None or np.ndim(self.alpha_) == 0:
            return _short(self.alpha_)
        return _named([str(n) for n in names], np.asarray(self.alpha_))

    def summary(self, level: float = 0.95, max_rows: int = 20) -> str:
        """A table of the coefficients: name (``feature_names_in_``, else x0, x1, …),
        posterior mean, sd and the central ``level`` credible interval mean ± z·sd
        (z = Φ⁻¹((1 + level)/2); the posterior is Gaussian), the ``covariance_columns``
        first with their solved sds, then the largest |mean|/sd up to ``max_rows`` in all;
        and the fit: solver, n_iter_, α, β, effective number of parameters γ."""
        self._check_fitted()
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        max_rows = positive_int(max_rows, "max_rows")
        p, m = self.X_offset_.shape[0], self.y_offset_.shape[0]
        names = getattr(self, "feature_names_in_", None)
        names = [f"x{j}" for j in range(p)] if names is None else [str(n) for n in names]
        z = NormalDist().inv_cdf(0.5 + level / 2)
        coef, std = np.atleast_2d(self.coef_), np.atleast_2d(self.coef_std_)
        solved = np.full((m, p), False)
        if hasattr(self, "coef_covariance_"):
            cov = self.coef_covariance_.reshape(m, -1, len(self.covariance_columns))
            cols = list(self.covariance_columns)
            std[:, cols] = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
            solved[:, cols] = True
        k = getattr(self.posterior_, "k", 0)
        head = f"{'':<16}{'coef':>11}{'sd':>9} {f'[{level:.0%} credible interval]':>28}"
        lines = [
            f"BayesianLinearRegression(solver={self._solver_name()!r}): {self.n_iter_} steps, "
            f"alpha = {self._alpha_text()}, beta = {_short(self.beta_)}, "
            f"gamma = {self.trajectory_.gamma[-1]:.1f}",
            "sd: exact"
            if not k
            else f"sd: from {k} samples (±{self._sd_error():.0f} % median)"
            + (", * solved exactly (covariance_columns)" if solved.any() else ""),
        ]
        for out in range(m):
            if m > 1:
                lines.append(f"output {out}:")
            lines.append(head)
            order = sorted(
                range(p), key=lambda j: (not solved[out, j], -abs(coef[out, j]) / std[out, j])
            )
            for j in order[:max_rows]:
                c, s = coef[out, j], std[out, j]
                mark = "*" if solved[out, j] and k else " "
                lines.append(
                    f"{names[j][:15]:<16}{c:>11.4g}{s:>9.4g}{mark}{c - z * s:>14.4g}{c + z * s:>14.4g}"
                )
            if p > max_rows:
                lines.append(f"… {p - max_rows} more (max_rows)")
        return "\n".join(lines)

    def _covariance_columns(self, p: int) -> np.ndarray | None:
        if self.covariance_columns is None:
            return None
        cols = np.asarray(self.covariance_columns)
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
                f"of X), got {self.covariance_columns!r}"
            )
        return cols

    def _coef_covariance(self, columns, features, dataset, prior, likelihood) -> np.ndarray:
        """The posterior covariance of the weights of ``columns``, per output: rows
        H⁻¹e_i for the s·m unit vectors e_i at those weights (θ is the row-major ravel of
        the (m, p) coefficients, and H is block-diagonal over the outputs)."""
        p, m, s = self.X_offset_.shape[0], self.y_offset_.shape[0], columns.size
        index = (np.arange(m)[:, None] * p + columns).ravel()  # (m·s,) places in θ
        unit = jnp.zeros((m * s, m * p), default_dtype()).at[np.arange(m * s), index].set(1.0)
        if isinstance(self.posterior_, SampledPosterior):
            solver = self._solver_object()
            solver = solver if isinstance(solver, CG) else CG().resolved(DESIGN_DEFAULTS)
            blocks = solver.blocks(prior, features.m)
            solved, diagnostics = cg_solve(
                features,
                likelihood,
                prior,
                dataset,
                unit,
                tol=solver.tol,
                max_iter=solver.max_iter,
                block_size=solver.block_size,
                progress=self.progress,
                coarse_blocks=False if blocks is None else blocks,
            )
            if not diagnostics.converged:
                warn_not_converged(
                    "coef_covariance_: cg stopped at max_iter with relative residual "
                    f"{diagnostics.rel_change[-1]:.2e}; raise blm.CG(max_iter=...)",
                    stacklevel=3,
                )
        else:
            solved = self.posterior_.cov_mul(unit)
        blocks = np.asarray(solved)[:, index].reshape(m, s, m, s)
        cov = np.stack([blocks[k, :, k, :] for k in range(m)])
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))  # cg's solves are symmetric to its tol
        return cov[0] if self._y_1d else cov

    def _groups(self, p: int, m: int) -> np.ndarray:
        """Each coefficient's group index (p·m,), the groups numbered in the order of
        ``_group_labels`` (the sorted distinct labels)."""
        if self.prior_groups is None:
            return np.zeros(p * m, np.int32)
        _, g = np.unique(self._group_labels_given(p), return_inverse=True)
        return np.tile(g.astype(np.int32), m)

    def _group_labels_given(self, p: int) -> np.ndarray:
        g = np.asarray(self.prior_groups)
        integers = np.issubdtype(g.dtype, np.integer) and g.size and g.min() >= 0
        if g.shape != (p,) or not (integers or np.issubdtype(g.dtype, np.str_)):
            raise ValueError(
                f"prior_groups must be {p} labels (one per column of X): non-negative "
                f"integers or strings, got shape {g.shape}, dtype {g.dtype}"
            )
        return g

    # -- prediction ------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "posterior_"):
            raise not_fitted_error(
                "this BayesianLinearRegression is not fitted yet; call fit(X, y) first"
            )

    def predict(self, X, return_std: bool = False, return_cov: bool = False):
        """Predictive mean, and with ``return_std`` the predictive standard deviation
        √(x H⁻¹ xᵀ + 1/β) (x centred as in fit), per output; or with ``return_cov`` the
        predictive covariance of the t new observations, X_c H⁻¹ X_cᵀ + I/β, as
        scikit-learn's ``GaussianProcessRegressor`` returns it: (t, t), or (t, t, m) for
        m outputs (independent a posteriori); for sgd/cg the samples' rank-k estimate.
        E.g. the sd of an area mean wᵀy* is √(wᵀ cov w). X: an array, or a scipy sparse
        matrix (then x H⁻¹ xᵀ from the samples by sparse products, never densified for
        sgd/cg)."""
        self._check_fitted()
        self._check_names(X)
        return self._predict(X, return_std, return_cov)

    def _check_names(self, X) -> None:
        fitted = getattr(self, "feature_names_in_", None)
        check_feature_names(fitted, feature_names(X), type(self).__name__)

    def _validated_rows(self, X):
        """X as a float array or a CSR array of the fitted number of columns."""
        X = as_csr(X, "X") if scipy.sparse.issparse(X) else as_float_array(X, "X", ndim=2)
        p = self.X_offset_.shape[0]
        if X.shape[1] != p:
            raise ValueError(
                f"X has {X.shape[1]} features, but BayesianLinearRegression is expecting {p} "
                "features as input (the columns of X in fit)"
            )
        return X

    def _centred_products(self, X, weights) -> np.ndarray:
        """(x_i − x̄) w_jkᵀ for the rows x_i of X (dense, or sparse and never densified)
        and n weight vectors w_j (n, m·p), output k's block w_jk: (t, m, n)."""
        p, m = self.X_offset_.shape[0], self.y_offset_.shape[0]
        W = np.asarray(weights, self._dtype).reshape(-1, m, p)
        return np.stack([X @ W[:, k].T for k in range(m)], axis=1) - (W @ self.X_offset_).T

    @in_fitted_precision
    def _predict(self, X, return_std: bool = False, return_cov: bool = False):
        """``predict`` without the column-name check (``blm predict`` checks a file's
        names once, then predicts its rows block by block)."""
        if return_std and return_cov:
            raise ValueError("return_std and return_cov: at most one of them can be True")
        X = self._validated_rows(X)
        coef = np.atleast_2d(self.coef_)
        mean = np.asarray(X @ coef.T) + self.y_offset_ - coef @ self.X_offset_
        mean = mean[:, 0] if self._y_1d else mean
        if not (return_std or return_cov):
            return mean
        m, t = self.y_offset_.shape[0], X.shape[0]
        if return_cov:
            need = 2 * m * t * t * np.dtype(default_dtype()).itemsize
            if need > available_memory():
                raise MemoryError(
                    f"return_cov: the covariance of {t} rows x {m} outputs needs "
                    f"{need / 2**30:.1f} GiB (twice m·t² numbers), more than the memory "
                    "available; predict fewer rows at a time, or use return_std=True"
                )
        if scipy.sparse.issparse(X) and isinstance(self.posterior_, SampledPosterior):
            proj = self._centred_products(X, self.posterior_.samples)  # (t, m, k)
            k = proj.shape[-1]
            cov = np.einsum("tmk,smk->mts", proj, proj) / k if return_cov else None
            var = np.mean(proj**2, axis=-1).T  # (m, t)
        else:
            X = X.toarray() if scipy.sparse.issparse(X) else X
            Xc = jnp.asarray(X - self.X_offset_, default_dtype())
            rows = self._features.dense(Xc)  # (t, m, d): output k's rows in [:, k]
            if return_cov:  # outputs are independent: one t × t block each
                cov = np.stack(
                    [
                        np.asarray(self.posterior_.predictive_covariance(rows[:, k]))
                        for k in range(m)
                    ]
                )
            else:
                var = self.posterior_.predictive_variance(rows.reshape(t * m, -1))
                var = np.asarray(var).reshape(t, m).T
        noise = 1.0 / np.atleast_1d(self.beta_)  # (m,)
        if return_cov:
            cov = (cov + noise[:, None, None] * np.eye(t)).astype(mean.dtype, copy=False)
            return mean, (cov[0] if self._y_1d else cov.transpose(1, 2, 0))
        std = np.sqrt(var + noise[:, None]).T.astype(mean.dtype, copy=False)  # (t, m)
        return mean, (std[:, 0] if self._y_1d else std)

    @in_fitted_precision
    def sample_y(self, X, n_samples: int = 1, random_state=0, noise: bool = True) -> np.ndarray:
        """Draws from the posterior predictive at the rows of X, as scikit-learn's
        ``GaussianProcessRegressor.sample_y``: y*_j = (x − x̄) θ_j + ȳ (+ ε_j, ε_j ~ N(0, 1/β)
        with ``noise``) for posterior draws θ_j, one per column: (t, n_samples), or
        (t, m, n_samples) for m outputs. Exact solver: fresh draws from the Cholesky
        factor; sgd/cg: the first ``n_samples`` of the k stored draws (n_samples ≤ k).
        For posterior predictive checks and nonlinear functionals of a prediction (the
        maximum of a forecast path, the chance a mean exceeds a threshold)."""
        self._check_fitted()
        self._check_names(X)
        n_samples = positive_int(n_samples, "n_samples")
        X = self._validated_rows(X)
        rng = np.random.default_rng(random_state)
        post = self.posterior_
        if isinstance(post, SampledPosterior):
            if n_samples > post.k:
                raise ValueError(
                    f"n_samples must be at most the {post.k} draws stored by the {self._solver_name()} "
                    f"fit, got {n_samples}; refit with n_samples={n_samples}"
                )
            z = post.samples[:n_samples]
        else:
            z = post.sample(jax.random.PRNGKey(int(rng.integers(2**31))), n_samples)
        draws = self._centred_products(X, post.mean + z) + self.y_offset_[None, :, None]
        if noise:
            scale = 1.0 / np.sqrt(np.atleast_1d(self.beta_))
            draws = draws + scale[None, :, None] * rng.standard_normal(draws.shape)
        draws = draws.astype(np.result_type(X.dtype, self._dtype), copy=False)
        return draws[:, 0] if self._y_1d else draws

    def score(self, X, y, sample_weight=None) -> float:
        """R² = 1 − Σ_i w_i(y_i − ŷ_i)² / Σ_i w_i(y_i − ȳ_w)² of the predictive mean ŷ
        (scikit-learn's ``RegressorMixin.score``; several outputs: the mean of their R²;
        a constant target scores 1 if predicted exactly, else 0)."""
        pred = np.asarray(self.predict(X))
        pred = pred.reshape(pred.shape[0], -1)
        y = as_float_array(y, "y", ndim=(1, 2))
        Y = y.reshape(y.shape[0], -1)
        if Y.shape != pred.shape:
            raise ValueError(f"y must have shape {pred.shape} (rows of X, outputs), got {y.shape}")
        n = pred.shape[0]
        w = np.ones(n) if sample_weight is None else frequency_weights(sample_weight, n)
        resid = w @ (Y - pred) ** 2
        total = w @ (Y - np.average(Y, axis=0, weights=w)) ** 2
        r2 = np.where(total > 0, 1.0 - resid / np.where(total > 0, total, 1.0), 1.0 * (resid == 0))
        return float(np.mean(r2))


def _named(names, values) -> str:
    """`name value, …` for up to 8 named hyperparameters (a flat prior's 0 as "flat"),
    else ``_short``."""
    if len(names) > 8:
        return _short(values)
    text = [
        f"{name}: {'flat' if v == 0 else f'{v:.4g}'}" for name, v in zip(names, values, strict=True)
    ]
    return "{" + ", ".join(text) + "}"


FLAT_CHECK_NUMBERS = 2**25
"""The largest d_f·d (flat coordinates × weights) whose flat block sgd/cg check for
collinearity (256 MiB of float64 unit vectors)."""


def _check_flat_columns(gram, dtype) -> None:
    """Refuse flat prior groups whose columns are collinear: a null vector v of
    H = ΦᵀBΦ + A has Av = 0, so it lives on the flat coordinates f, and H is singular
    exactly where ``gram`` = H_ff = (ΦᵀBΦ)_ff is. Its rank with ``numpy.linalg.matrix_rank``'s
    tolerance, σ_max·d_f·eps in the precision ``dtype`` the Gram was accumulated in (×10
    for the rounding of that accumulation)."""
    gram = np.asarray(gram, np.float64)
    singular = np.linalg.svd(gram, compute_uv=False)
    if singular[-1] <= 10 * len(gram) * np.finfo(dtype).eps * singular[0]:
        raise ValueError(
            "fixed_alpha: H = XᵀBX + A is singular with these flat (alpha 0) groups: their "
            "columns are collinear, with each other or, with fit_intercept, with the "
            "intercept (a complete set of dummies sums to it): drop a column, or give the "
            "group an alpha > 0"
        )


def _short(values) -> str:
    """A hyperparameter for a summary line: 4 digits, a list up to 8 values, else a range."""
    v = np.atleast_1d(np.asarray(values, np.float64))
    if v.size == 1:
        return f"{v[0]:.4g}"
    if v.size <= 8:
        return "[" + ", ".join(f"{x:.4g}" for x in v) + "]"
    return f"{v.size} values in [{v.min():.4g}, {v.max():.4g}]"


def _row_scaled(a: np.ndarray, root: np.ndarray | None) -> np.ndarray:
    """Rows of ``a`` times √w_i (``root``), or ``a`` itself without weights (no copy)."""
    return a if root is None else root[:, None] * a
