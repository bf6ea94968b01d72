r"""``BayesianLinearRegression``: the scikit-learn-style estimator.

Notation follows the papers, not scikit-learn: ``alpha_`` is the prior precision of the
weights (scikit-learn's ``lambda_``) and ``beta_`` the noise precision (scikit-learn's
``alpha_``). The Gamma hyperprior arguments keep scikit-learn's names and meanings:
``lambda_1, lambda_2`` (shape, rate) act on ``alpha_``; ``alpha_1, alpha_2`` on ``beta_``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from blm import estimator_data, estimator_predict, estimator_report
from blm._checks import (
    check_feature_names,
    feature_names,
    not_fitted_error,
)
from blm._params import RegressorParams
from blm.checkpoint import Checkpointer
from blm.data import default_dtype, is_file
from blm.estimator_defaults import ESTIMATOR_DEFAULTS as DEFAULTS
from blm.estimator_defaults import SAMPLED_DEFAULT_K
from blm.estimator_fit import coef_covariance, fit_posterior, record_fit
from blm.evidence.closed_form import GammaHyperprior
from blm.features import LinearFeatures
from blm.likelihoods import Gaussian
from blm.persistence import load_estimator, save_estimator
from blm.precision import computing_in, input_dtype
from blm.priors import Prior
from blm.rules import EvidenceAscent, Rule, as_rule
from blm.solvers.config import DESIGN_DEFAULTS, Exact, Solver, as_solver


class BayesianLinearRegression(RegressorParams):
    r"""Bayesian linear regression with evidence-tuned prior and noise precisions.

    Model: y = Xθ + b + η, θ ~ N(0, A⁻¹), η ~ N(0, β⁻¹) per output, A = α I or diag(α_g)
    over ``prior_groups``; an (n, m) target gets one β per output and shares the prior.
    α, β maximise the evidence (with optional Gamma hyperpriors) by MacKay's fixed point
    (``hyper="mackay"``) or Adam on (log α, log β) (``"evidence"``; log det H by
    stochastic Lanczos quadrature for sgd/cg), then the posterior N(θ̄, H⁻¹),
    H = β XᵀX + A, is reported. ``"exact"`` factors H (or its dual) by Cholesky; ``"sgd"``
    (sample-then-optimise) and ``"cg"`` draw ``n_samples`` samples matrix-free at each
    EM step, with common random numbers and warm starts, for γ̂ = mean_j z_jᵀΦᵀBΦz_j.
    All of it runs in ``blm.pipeline.fit_hyperparameters``.

    Example:
        >>> from sklearn.datasets import load_diabetes
        >>> X, y = load_diabetes(return_X_y=True)
        >>> est = BayesianLinearRegression().fit(X, y)  # agrees with BayesianRidge
        >>> mean, std = est.predict(X[:3], return_std=True)

    Parameters:
        n_samples: posterior samples: kept in ``samples_``, and used by ``sgd``/``cg``
            for γ̂ and for predictive variances (at least 1 there). None (default): 16
            for sgd/cg, none for exact.
        random_state: seed of the samples (and of SGD's minibatches).
        max_iter, tol: stop the hyperparameter iteration after ``max_iter`` steps or
            when no α_g, β_k changes by more than ``tol`` relative.
        evidence_tol: or when the log evidence (+ hyperprior) is predicted to gain less
            than ``evidence_tol`` nats from all further MacKay steps (where they are scored:
            the exact solver, and sgd/cg MacKay with ``exact_evidence``;
            ``blm.evidence.loop.StoppingRule``), so that an α_g the data barely determine
            (flat evidence along it) does not keep the fit running. None: ``tol`` alone.
        fit_intercept: centre X and y before fitting, as scikit-learn does (the
            intercept gets no prior and no posterior variance).
        alpha_1, alpha_2: Gamma(shape, rate) hyperprior on the noise precision β.
        lambda_1, lambda_2: Gamma(shape, rate) hyperprior on the weight precision α.
        alpha_init, beta_init: starting α (default 1) and β (default 1/Var(y)).
        prior_groups: optional group label per input column (non-negative integers, or
            strings such as "unit", "period") for one α_g per group.
        solver: the posterior solver: ``"auto"`` (default: exact where the dense model
            fits in memory and costs at most about 30 passes over the data per step, else
            sgd for rows streamed from a file, else cg; ``blm.solvers.auto``; the choice
            and the reason in ``solver_`` and ``solver_reason_``), ``"exact"`` (dense
            Cholesky), ``"cg"`` or ``"sgd"`` (matrix-free) for their default objects, or a
            configured one:
            ``blm.Exact()``, ``blm.CG(tol, max_iter, preconditioner, ...)``,
            ``blm.SGD(n_steps, batch_size, ..., svrg=blm.SVRG(), tol)``, whose ``None``
            fields take the design-matrix defaults (``blm.solvers.config``: cg tol 1e-6,
            sgd 2 000 steps with Jacobi). Where a solve has a tolerance, early EM steps
            are solved loosely (``SolveSchedule``) unless the solver's
            ``adaptive_tol=False``; a final solve stopped at its cap warns.
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
        covariance_columns: s column indices whose joint posterior covariance goes into
            ``coef_covariance_``: from the Cholesky factor (exact), else by cg on the s
            unit vectors (``blm.estimator_fit.coef_covariance``) — for a few coefficients
            beside many nuisance ones, where ``coef_std_`` from k samples is good to
            about 1/√(2k).
        fixed_alpha: ``{label: α}`` for prior groups whose precision is given, not fitted
            (labels of ``prior_groups``). α = 0 is a flat prior, unpenalised as the
            intercept is (a mixed model's fixed effects): the evidence is then the
            restricted likelihood and its maximum the REML estimate of the other
            groups' variance components. Flat columns must be linearly independent (of
            the intercept too, with ``fit_intercept``: drop one dummy); every solver
            checks. Flat groups need ``hyper="mackay"``.

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
        scores_: log evidence + log hyperprior at each step and at the end: exact
            (exact solver, or sgd/cg MacKay with ``exact_evidence``), the SLQ estimate
            (sgd/cg evidence ascent; NaN at the end), else NaN.
        trajectory_: α, β, γ, data fit and score at each step.
        solver_: the solver the fit ran (the object; ``"auto"``'s choice).
        solver_reason_: why ``"auto"`` chose it (or "given").
        n_solves_: posterior solves (dense factorisations, or sgd/cg solves) the fit ran.
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
        evidence_tol: float | None = DEFAULTS["evidence_tol"],
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
        self.evidence_tol = evidence_tol

    # -- fitting -------------------------------------------------------------------
    def _k(self) -> int:
        """``n_samples``, or its default: 16 for sgd/cg, 0 for exact."""
        if self.n_samples is not None:
            return int(self.n_samples)
        return 0 if self._exact() else SAMPLED_DEFAULT_K

    def _solver_object(self) -> Solver:
        """``solver`` as an object, its ``None`` fields set for a design matrix (for
        ``"auto"``: the one chosen for the data being fitted, or fitted)."""
        if estimator_data.is_auto(self.solver):
            if not hasattr(self, "solver_"):
                raise RuntimeError("solver='auto' is chosen when fit sees the data")
            return self.solver_
        return as_solver(self.solver).resolved(DESIGN_DEFAULTS)

    def _rule(self) -> Rule:
        """``hyper`` as an object, its ``None`` fields set for a design matrix."""
        return as_rule(self.hyper).resolved(DESIGN_DEFAULTS)

    def _exact(self) -> bool:
        return isinstance(self._solver_object(), Exact)

    def _evidence(self) -> bool:
        return isinstance(self._rule(), EvidenceAscent)

    def _solver_name(self) -> str:
        if estimator_data.is_auto(self.solver):
            chosen = getattr(self, "solver_", None)
            return "auto" if chosen is None else f"auto: {type(chosen).__name__.lower()}"
        return self.solver if isinstance(self.solver, str) else type(self.solver).__name__

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
        estimator_data.validate(self)
        self._dtype = input_dtype(X)
        with computing_in(self._dtype):
            return self._fit(X, y, sample_weight, checkpoint, resume, checkpoint_every)

    def _fit(self, X, y, sample_weight, checkpoint, resume, checkpoint_every):
        names = X.feature_names if is_file(X) else feature_names(X)
        features, dataset = estimator_data.prepare(self, X, y, sample_weight)
        self.X_offset_ = np.asarray(self.X_offset_, self._dtype)
        self.y_offset_ = np.asarray(self.y_offset_, self._dtype)
        columns = estimator_data.covariance_columns(self, self.X_offset_.shape[0])
        self._checkpointer = None
        if checkpoint is not None:
            fingerprint = estimator_data.fingerprint(self, X, y, sample_weight)
            self._checkpointer = Checkpointer(checkpoint, checkpoint_every, fingerprint, resume)
        elif resume:
            raise ValueError("resume: needs a checkpoint file to resume from")
        p, m = self.X_offset_.shape[0], dataset.m
        self.solver_, self.solver_reason_ = estimator_data.choose(self, features, dataset)
        groups = estimator_data.groups(self, p, m)
        n_groups = int(groups.max()) + 1
        alpha0, beta0, fixed = estimator_data.starting_hyperparameters(self, p, m, n_groups)
        hyperprior = GammaHyperprior(self.lambda_1, self.lambda_2, self.alpha_1, self.alpha_2)
        template = Prior(alpha0, groups)
        key = jax.random.PRNGKey(0 if self.random_state is None else self.random_state)
        fit = fit_posterior(self, features, dataset, template, beta0, hyperprior, fixed, key)
        alpha, beta, post = fit.alpha, fit.beta, fit.posterior
        record_fit(self, fit)
        self.scores_ = np.asarray([*self.trajectory_.score, float(fit.score)])
        self.posterior_ = post
        self.alpha_ = float(alpha[0]) if n_groups == 1 else np.asarray(alpha)
        if self.prior_groups is not None:
            self.prior_group_names_ = np.unique(estimator_data.group_labels_given(self, p))
        self.beta_ = float(beta[0]) if m == 1 else np.asarray(beta)
        self._set_coefficients()
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # from an earlier fit to a table
        if columns is not None:
            dtype = default_dtype()
            self.coef_covariance_ = coef_covariance(
                self,
                columns,
                features,
                dataset,
                template.with_alpha(jnp.asarray(alpha, dtype)),
                Gaussian(jnp.asarray(beta, dtype)),
            )
        elif hasattr(self, "coef_covariance_"):
            del self.coef_covariance_  # from an earlier fit with other columns
        if self._k() > 0:
            z = post.zero_mean_draws(jax.random.fold_in(key, 1), self._k())
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

    # -- the pieces in their own modules ---------------------------------------------
    def summary(
        self, level: float = 0.95, max_rows: int | None = 20, *, sort: str = "signal"
    ) -> str:
        """The coefficient table and the fit (``blm.estimator_report.summary``): name,
        posterior mean, sd and the central ``level`` credible interval, ordered by
        ``sort`` ("signal": largest |mean|/sd first, "abs", "column") up to ``max_rows``
        (None: all); the intercept and noise sd; solver, steps, converged or not, α by
        group, β, γ.

        Example:
            >>> est = BayesianLinearRegression().fit(X, y)  # doctest: +SKIP
            >>> print(est.summary(max_rows=None, sort="column"))  # doctest: +SKIP
        """
        return estimator_report.summary(self, level, max_rows, sort=sort)

    def sample_y(self, X, n_samples: int = 1, random_state=0, noise: bool = True) -> np.ndarray:
        """Draws from the posterior predictive at the rows of X, as scikit-learn's
        ``GaussianProcessRegressor.sample_y``: (t, n_samples), or (t, m, n_samples) for m
        outputs (``blm.estimator_predict.sample_y``)."""
        return estimator_predict.sample_y(self, X, n_samples, random_state, noise)

    @property
    def sigma_(self) -> np.ndarray:
        """Posterior covariance H⁻¹ of the weights, (d, d) (``blm.estimator_predict.covariance``;
        refused where it would not fit in memory)."""
        return estimator_predict.covariance(self)

    @property
    def coef_std_(self) -> np.ndarray:
        """Marginal posterior sd √diag(H⁻¹) of each weight, shaped as ``coef_``: exact, or the
        samples' control-variate estimate (``blm.estimator_predict.coef_std``)."""
        return estimator_predict.coef_std(self)

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
        return estimator_predict.predict(self, X, return_std, return_cov)

    def _check_names(self, X) -> None:
        fitted = getattr(self, "feature_names_in_", None)
        check_feature_names(fitted, feature_names(X), type(self).__name__)

    def score(self, X, y, sample_weight=None) -> float:
        """R² of the predictive mean, weighted by ``sample_weight`` (scikit-learn's
        ``RegressorMixin.score``; ``blm.estimator_predict.r2_score``)."""
        return estimator_predict.r2_score(self, X, y, sample_weight)
