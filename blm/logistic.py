r"""``BayesianLogisticRegression``: binary and multinomial logistic regression with an
evidence-tuned Gaussian prior, the scikit-learn classifier (``blm.glm`` fits it).

Model: p(y_i = k | x_i) = softmax(x_i Wᵀ + b)_k (K > 2 classes; one logit x_i w + b with
σ for two), w ~ N(0, A⁻¹) with A = α I or diag(α_g) over ``prior_groups``, the intercept
flat (unpenalised). The MAP θ̂ (Newton, each system solved by the chosen solver), the
Laplace posterior N(θ̂, H⁻¹), H = Σ_i w_i φ_iᵀB_iφ_i + A the exact Hessian, and α
maximising Laplace's evidence by MacKay's update, all alternating to their joint fixed
point (MacKay 1992's evidence framework).
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from blm import estimator_data, glm_data, logistic_report
from blm._checks import (
    check_feature_names,
    feature_names,
    frequency_weights,
    not_fitted_error,
    one_of,
    positive,
)
from blm._params import RegressorParams
from blm.data import default_dtype, is_file
from blm.estimator_defaults import CLASSIFIER_DEFAULTS, SAMPLED_DEFAULT_K
from blm.exceptions import warn, warn_not_converged
from blm.glm import (
    GLMFeatures,
    GLMModel,
    NewtonSettings,
    fit_glm,
    intercept_basis,
    logistic_likelihood,
)
from blm.persistence import load_classifier, save_classifier
from blm.precision import computing_in, in_fitted_precision, input_dtype
from blm.priors import Prior
from blm.rules import MacKay, as_rule
from blm.solvers.auto import choose_solver
from blm.solvers.config import DESIGN_DEFAULTS, Exact, Solver, as_solver
from blm.uncertainty.predictive import mc_probs, probit_from_variance


class BayesianLogisticRegression(RegressorParams):
    r"""Bayesian logistic (two classes) and multinomial (more) regression.

    Args:
        solver: ``"auto"`` (exact where the dense Hessian fits and is cheap, else cg;
            ``blm.solvers.auto``), ``"exact"``, ``"cg"``, ``"sgd"`` or a solver object
            (``blm.CG(tol=...)``): it solves each Newton system and draws the samples.
        n_samples: posterior draws kept in ``samples_`` (and used by sgd/cg for γ̂ and
            the Monte Carlo predictive); None: 16 for sgd/cg, 0 for exact.
        random_state: seed of the samples.
        max_iter, tol: joint Newton–MacKay steps at most; stop when no α_g moves by more
            than ``tol`` relative and the Newton step by less than ``tol``·max(‖θ‖, 1).
        evidence_tol: or (exact solver) when the Laplace evidence is predicted to gain
            less than this many nats from further steps (an α_g the data do not
            determine, e.g. a group without signal whose α runs to ∞, then ends the
            fit); None: ``tol`` alone.
        fit_intercept: an unpenalised intercept per logit (sum-to-zero over K > 2
            classes, where a common shift is unidentified).
        alpha_init: the starting (``fit_alpha=False``: the fixed) prior precision.
        fit_alpha: tune α by the evidence (False: the MAP and Laplace posterior at
            ``alpha_init``, i.e. scikit-learn's ``LogisticRegression(C=1/alpha_init)``).
        prior_groups: a group label per column of X for one α_g per group.
        fixed_alpha: ``{label: α ≥ 0}`` for groups whose α is given (0: unpenalised).
        hyper: ``"mackay"`` or ``blm.MacKay(gamma=...)`` (the sampled γ̂ form).

    Attributes (after ``fit``):
        classes_, coef_ ((1, p) or (K, p)), intercept_ ((1,) or (K,)), coef_std_
        (posterior sd, shaped as coef_), alpha_ (per group), log_evidence_ (Laplace's,
        NaN for sampled solvers), samples_ (draws of coef_, (k, *coef_.shape)),
        n_iter_, converged_, last_change_, solver_, solver_reason_, n_features_in_.

    Example:
        >>> from sklearn.datasets import load_breast_cancer  # doctest: +SKIP
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 3)); y = (X[:, 0] + rng.normal(size=200) > 0)
        >>> clf = BayesianLogisticRegression().fit(X, y)
        >>> clf.predict_proba(X[:2]).shape
        (2, 2)
    """

    def __init__(
        self,
        *,
        solver: str | Solver = "auto",
        n_samples: int | None = None,
        random_state: int | None = None,
        max_iter: int = CLASSIFIER_DEFAULTS["max_iter"],
        tol: float = CLASSIFIER_DEFAULTS["tol"],
        evidence_tol: float | None = CLASSIFIER_DEFAULTS["evidence_tol"],
        fit_intercept: bool = True,
        alpha_init: float = 1.0,
        fit_alpha: bool = True,
        prior_groups=None,
        fixed_alpha: dict | None = None,
        hyper: str | MacKay = "mackay",
    ):
        self.solver = solver
        self.n_samples = n_samples
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.evidence_tol = evidence_tol
        self.fit_intercept = fit_intercept
        self.alpha_init = alpha_init
        self.fit_alpha = fit_alpha
        self.prior_groups = prior_groups
        self.fixed_alpha = fixed_alpha
        self.hyper = hyper

    _estimator_type = "classifier"

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_class=True),
            input_tags=InputTags(two_d_array=True, sparse=True),
        )

    def _evidence(self) -> bool:  # estimator_data.fixed_alpha asks: flat groups allowed
        return False

    def _validate(self) -> None:
        if not (isinstance(self.max_iter, int | np.integer) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        positive(self.tol, "tol")
        if self.evidence_tol is not None:
            positive(self.evidence_tol, "evidence_tol")
        positive(self.alpha_init, "alpha_init")
        if not isinstance(self.fit_alpha, bool | np.bool_):
            raise ValueError(f"fit_alpha must be True or False, got {self.fit_alpha!r}")
        if not isinstance(self.fit_intercept, bool | np.bool_):
            raise ValueError(f"fit_intercept must be True or False, got {self.fit_intercept!r}")
        if not estimator_data.is_auto(self.solver):
            as_solver(self.solver)
        if not isinstance(as_rule(self.hyper), MacKay):
            raise ValueError(
                f"hyper: the classifier tunes alpha by MacKay's rule, got {self.hyper!r}"
            )
        if self.n_samples is not None:
            if (
                isinstance(self.n_samples, bool)
                or not isinstance(self.n_samples, int | np.integer)
                or self.n_samples < 0
            ):
                raise ValueError(f"n_samples must be an integer >= 0, got {self.n_samples!r}")

    # -- fitting -------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None) -> BayesianLogisticRegression:
        """Fit the MAP, the Laplace posterior and α to X (n, p) (dense, scipy sparse, or
        an ``HDF5Dataset`` holding its labels, y None) and class labels y (n,).

        ``sample_weight``: frequency weights (row i's log-likelihood times w_i).

        Raises:
            ValueError: one class only, NaN, mismatched lengths, bad settings (naming
                the argument).
        """
        self._validate()
        self._dtype = input_dtype(X)
        with computing_in(self._dtype):
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight):
        if is_file(X):
            if y is not None:
                raise ValueError("y: must be None when X is an HDF5Dataset (it holds the labels)")
            y, names = X.targets(), X.feature_names
        else:
            names = feature_names(X)
            if y is None:
                raise ValueError(
                    "y: this estimator requires y to be passed, but the target y is None"
                )
            y = np.asarray(y)
            if y.ndim == 2 and y.shape[1] == 1:
                warn_column_vector()
        self.classes_, index = glm_data.encode_labels(y)
        K = self.classes_.size
        if sample_weight is not None:
            weights = frequency_weights(sample_weight, index.shape[0])
            present = np.unique(index[weights > 0])
            if present.size < 2:
                raise ValueError(
                    "y: a classifier needs at least 2 classes with positive sample_weight; "
                    f"only class {self.classes_[present].tolist()} has any"
                )
        targets = glm_data.one_hot(index, K)
        outputs = 1 if K == 2 else K
        base, dataset, p = glm_data.prepare(X, targets, sample_weight, outputs, self._dtype)
        self.n_features_in_ = p
        if names is not None:
            self.feature_names_in_ = names
        basis = intercept_basis(outputs, self.fit_intercept)
        groups, alpha0, fixed = self._prior(p, outputs, basis.shape[1])
        d = groups.shape[0]
        self.solver_, self.solver_reason_ = self._choose(dataset, d, outputs)
        k = self.n_samples
        if k is None:
            k = 0 if isinstance(self.solver_, Exact) else SAMPLED_DEFAULT_K
        if k == 0 and not isinstance(self.solver_, Exact):
            raise ValueError(
                f"n_samples: solver {type(self.solver_).__name__} needs n_samples >= 1"
            )
        rule = as_rule(self.hyper).resolved(DESIGN_DEFAULTS)
        key = jax.random.PRNGKey(0 if self.random_state is None else self.random_state)
        model = GLMModel(base, logistic_likelihood(K), dataset, basis, None)
        fit = fit_glm(
            model,
            Prior(alpha0, groups),
            self.solver_,
            rule,
            settings=NewtonSettings(
                max_iter=int(self.max_iter),
                tol=float(self.tol),
                evidence_tol=None if self.evidence_tol is None else float(self.evidence_tol),
                fit_alpha=bool(self.fit_alpha),
                fixed=fixed,
            ),
            key=key,
            n_samples=int(k),
        )
        self._store(fit, p, outputs, basis)
        return self

    def _prior(self, p: int, outputs: int, q: int):
        """(group per coefficient (K·p + q,), starting α per group, fixed mask): the
        columns' groups tiled over the logits, the intercept one more flat, fixed group."""
        col_groups = estimator_data.groups(self, p, outputs)
        if self.prior_groups is not None:
            self.prior_group_names_ = np.unique(estimator_data.group_labels_given(self, p))
        n_groups = int(col_groups.max()) + 1
        alpha0 = np.full(n_groups, float(self.alpha_init))
        fixed, values = estimator_data.fixed_alpha(self, p, n_groups)
        alpha0[fixed] = values[fixed]
        if q:
            col_groups = np.concatenate([col_groups, np.full(q, n_groups, np.int32)])
            alpha0, fixed = np.append(alpha0, 0.0), np.append(fixed, True)
        return col_groups, alpha0, fixed

    def _choose(self, dataset, d: int, outputs: int):
        if not estimator_data.is_auto(self.solver):
            solver = as_solver(self.solver).resolved(DESIGN_DEFAULTS)
            return _fixed_tolerance(solver), "given"
        row_entries = dataset.input_shape[0] if len(dataset.input_shape) == 2 else d
        choice = choose_solver(
            n=dataset.n * outputs,
            m=1,
            p=d,
            row_entries=min(row_entries * outputs, d),
            n_samples=SAMPLED_DEFAULT_K if not self.n_samples else int(self.n_samples),
            streamed=not dataset.in_memory,
            itemsize=np.dtype(default_dtype()).itemsize,
        )
        solver = as_solver(choice.name).resolved(DESIGN_DEFAULTS)
        return _fixed_tolerance(solver), choice.reason

    def _store(self, fit, p: int, outputs: int, basis: np.ndarray) -> None:
        dtype = self._dtype
        theta = np.asarray(fit.theta, np.float64)
        W = theta[: outputs * p].reshape(outputs, p)
        self.coef_ = W.astype(dtype)
        self.intercept_ = (basis @ theta[outputs * p :]).astype(dtype)
        if fit.exact is not None:
            var = np.asarray(fit.exact.diag_covariance(), np.float64)
        else:
            var = np.mean(np.asarray(fit.posterior.samples, np.float64) ** 2, axis=0)
        self.coef_std_ = np.sqrt(var[: outputs * p]).reshape(outputs, p).astype(dtype)
        self.alpha_ = np.asarray(fit.alpha[: -1 if basis.shape[1] else None], dtype)
        draws = np.asarray(fit.posterior.samples, np.float64)[:, : outputs * p]
        self.samples_ = (W[None] + draws.reshape(-1, outputs, p)).astype(dtype)
        self.log_evidence_ = float(fit.log_evidence)
        self.n_iter_, self.converged_, self.last_change_ = (
            fit.n_iter,
            fit.converged,
            fit.last_change,
        )
        self._theta, self._basis, self._exact = fit.theta, basis, fit.exact
        self._draws = np.asarray(fit.posterior.samples)
        if fit.stop_note:
            warn_not_converged(fit.stop_note)
        elif not fit.converged:
            warn_not_converged(
                f"the Newton–MacKay iteration stopped at max_iter={self.max_iter} with the "
                f"last relative change {fit.last_change:.2g} > tol={self.tol:g}; raise "
                "max_iter (or tol)"
            )

    # -- prediction ----------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise not_fitted_error(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )

    def _logits(
        self, X, with_draws: bool = False, *, names_checked: bool = False
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(MAP logits (t, m), exact or sampled logit variances (t, m), the draws' logit
        deviations φ(x)z_j (k, t, m) where ``with_draws``, else empty). X's column names
        are checked against the fitted ones unless the caller has (``names_checked``:
        ``blm predict`` checks the file's)."""
        self._check_fitted()
        if is_file(X):
            raise TypeError("X: predict takes in-memory arrays (read the file's rows first)")
        if not names_checked:
            check_feature_names(
                getattr(self, "feature_names_in_", None), feature_names(X), type(self).__name__
            )
        rows, p = glm_data.design_rows(X, None, self._dtype)
        if p != self.n_features_in_:
            raise ValueError(
                f"X has {p} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        outputs = self.coef_.shape[0]
        base = (glm_data.SparseLinearFeatures if rows.ndim == 3 else glm_data.LinearFeatures)(
            p + 1, outputs
        )
        features = GLMFeatures(base, jnp.asarray(self._theta), self._basis)
        t = rows.shape[0]
        rows, _ = glm_data.padded(rows, np.zeros((t, 1)))  # nearby sizes share compiled code
        draws = jnp.asarray(self._draws, default_dtype())
        parts = [
            _logit_moments(
                features,
                jnp.asarray(rows[i : i + PREDICT_ROWS], default_dtype()),
                self._exact,
                draws,
                with_draws,
            )
            for i in range(0, rows.shape[0], PREDICT_ROWS)
        ]
        f, var, fz = (jnp.concatenate(a, axis=-2)[..., :t, :] for a in zip(*parts, strict=True))
        return f, var, fz

    @in_fitted_precision
    def decision_function(self, X) -> np.ndarray:
        """The predictive logits f(x)/√(1 + π v(x)/8), f the MAP logits and v their
        posterior variances: (t,) for two classes (the second class's log-odds), else
        (t, K). Their sigmoid (softmax) is ``predict_proba``'s probit predictive, so the
        two rank inputs alike; ``map_logits`` gives f itself."""
        f, var, _ = self._logits(X)
        f = np.asarray(f / jnp.sqrt(1 + jnp.pi / 8 * var), self._dtype)
        return f[:, 0] if f.shape[1] == 1 else f

    @in_fitted_precision
    def map_logits(self, X) -> np.ndarray:
        """The MAP logits x Wᵀ + b, (t, 1) or (t, K)."""
        return np.asarray(self._logits(X)[0], self._dtype)

    @in_fitted_precision
    def predict_proba(self, X, method: str = "probit") -> np.ndarray:
        """Posterior predictive class probabilities (t, K) in the order of ``classes_``.

        ``"probit"``: softmax(f / √(1 + π v/8)) with v the logit variances
        diag φ(x)H⁻¹φ(x)ᵀ (MacKay 1992; of the centred logits for K > 2 classes, which
        softmax sees); ``"mc"``: the mean over the posterior draws of
        softmax(φ(x)(θ̂ + z_j)) (needs n_samples ≥ 1).
        """
        return self._probabilities(X, method)

    @in_fitted_precision
    def _probabilities(self, X, method: str, *, names_checked: bool = False) -> np.ndarray:
        one_of(method, "method", ("probit", "mc"))
        if method == "mc" and self._draws.shape[0] == 0:
            raise ValueError("method: 'mc' needs posterior draws; fit with n_samples >= 1")
        f, var, fz = self._logits(X, with_draws=method == "mc", names_checked=names_checked)
        lik = logistic_likelihood(self.classes_.size)
        probs = probit_from_variance(lik, f, var) if method == "probit" else mc_probs(lik, f, fz)
        return np.asarray(probs, self._dtype)

    def predict_log_proba(self, X, method: str = "probit") -> np.ndarray:
        """log ``predict_proba``."""
        return np.log(self.predict_proba(X, method))

    def predict(self, X) -> np.ndarray:
        """The most probable class under the (probit) predictive."""
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of ``predict`` (weighted by ``sample_weight``)."""
        self._check_fitted()
        _, index = glm_data.encode_labels(y, self.classes_)  # unseen labels: an error
        hits = np.argmax(self.predict_proba(X), axis=1) == index
        return float(np.average(hits, weights=sample_weight))

    def summary(
        self, level: float = 0.95, max_rows: int | None = 20, *, sort: str = "signal"
    ) -> str:
        """The coefficient table (``blm.logistic_report.summary``): per logit, MAP
        coefficient, sd, ``level`` credible interval and odds ratio exp(coef) with its
        interval, ``sort`` order up to ``max_rows`` (None: all); α, log evidence, steps.

        Example:
            >>> print(clf.summary(max_rows=None, sort="column"))  # doctest: +SKIP
        """
        return logistic_report.summary(self, level, max_rows, sort=sort)

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted classifier to an HDF5 file (``blm.persistence``'s
        ``CLASSIFIER_FORMAT``), under a temporary name renamed into place.

        Raises:
            TypeError: labels HDF5 cannot hold (neither numbers, booleans nor strings).
            OSError: the folder is missing or not writable (naming ``path``).

        Example:
            >>> clf.save("clf.h5"); BayesianLogisticRegression.load("clf.h5")  # doctest: +SKIP
        """
        save_classifier(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BayesianLogisticRegression:
        """A fitted classifier read from a file written by ``save``: it predicts as the
        saved one.

        Raises:
            OSError, ValueError: a missing or unreadable file, or not a classifier's
                (naming ``path``).
        """
        return load_classifier(cls, path)


def warn_column_vector() -> None:
    """scikit-learn's ``DataConversionWarning`` for a column-vector y (where installed)."""
    try:
        from sklearn.exceptions import DataConversionWarning
    except ImportError:
        DataConversionWarning = UserWarning  # noqa: N806
    warn(
        "A column-vector y was passed when a 1d array was expected; it is read as y.ravel()",
        DataConversionWarning,
    )


PREDICT_ROWS = 4096
"""Rows whose logits and variances are computed at once in prediction."""


@eqx.filter_jit
def _logit_moments(features: GLMFeatures, rows, exact, draws, with_draws: bool):
    """(f (b, m), var (b, m), φz_j (k, b, m) or (0, b, m)) of one block of rows. With
    K > 2 softmax logits the variances are those of the centred logits f_k − mean_l f_l:
    softmax ignores a common shift, and the shift's variance (the prior's, along
    W_k += w for every k) would otherwise moderate every probability towards 1/K."""

    def centred(a):
        return a if a.shape[-1] == 1 else a - jnp.mean(a, axis=-1, keepdims=True)

    f = features.offset(rows)
    fz = jax.vmap(lambda z: features.jvp(rows, z))(draws)
    if exact is not None:
        J = jnp.swapaxes(centred(jnp.swapaxes(features.dense(rows), 1, 2)), 1, 2)
        var = jax.vmap(exact.predictive_variance, in_axes=1, out_axes=1)(J)
    else:
        var = jnp.mean(centred(fz) ** 2, axis=0)
    return f, var, fz if with_draws else fz[:0]


def _fixed_tolerance(solver: Solver) -> Solver:
    """A sampled solver without loose early solves: each Newton system to the final tol
    (a loosely solved Newton step would stop the iteration short of the MAP)."""
    if isinstance(solver, Exact) or getattr(solver, "adaptive_tol", False) is False:
        return solver
    import dataclasses

    return dataclasses.replace(solver, adaptive_tol=False)
