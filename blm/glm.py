r"""Laplace-approximate Bayesian GLMs with evidence-tuned priors (the evidence framework).

For a canonical-link GLM (``Bernoulli``: logistic, ``Categorical``: multinomial) with
design rows x_i, frequency weights w_i and θ ~ N(0, A⁻¹):

    log p(θ | y, α) = Σ_i w_i log p(y_i | f_i) − ½ θᵀAθ + const,   f_i = φ(x_i) θ
    H(θ) = Σ_i w_i φ_iᵀ B_i(θ) φ_i + A                            (the exact Hessian)
    MAP θ̂ by Newton's method: θ ← θ + t H⁻¹(Σ_i w_i φ_iᵀ(y_i − p_i) − Aθ), t by backtracking
    Laplace: p(θ | y) ≈ N(θ̂, H(θ̂)⁻¹),  log p(y | α) ≈ log p(y, θ̂) + ½ log det A − ½ log det H
    MacKay:  α_g ← γ_g / ‖θ̂_g‖²,  γ_g = d_g − α_g Tr_g(H⁻¹)
    Laplace's stationary point (B depends on θ̂, and θ̂ on α: dθ̂/dα_g = −H⁻¹E_gθ̂):
             α_g ← γ_g / (‖θ̂_g‖² − u_gᵀθ̂_g),   u = H⁻¹ ∂log det H/∂θ

Each Newton step is one solve of the linear model linearised at θ (``GLMFeatures``, its
output offset f_i and curvature B_i at θ; pseudo-targets f_i + u_i, B_i u_i = y_i − p_i),
by the chosen solver through the one pipeline (``blm.pipeline.fit_hyperparameters``,
one MacKay step per Newton step, its α corrected by the u term with the gradient
estimated from the draws, ``_sampled_laplace_alpha``): α and θ move together to the
joint fixed point (the MAP at α, and α Laplace's at that MAP), where the loop stops. The
exact solver instead iterates α ↦ (Newton to θ̂(α), the update) under Anderson
acceleration (``_ExactMap``).

The design carries one more column, p, holding s_i = √w_i (the rows are s_i x_i): it is
the intercept's column, and it lets ``GLMFeatures`` evaluate B_i at the unscaled f_i. The
intercept is flat (α = 0, unpenalised, as scikit-learn's); with K > 2 classes it lives in
the K − 1 sum-to-zero directions (``basis``), since a common shift of every class's
intercept leaves the softmax unchanged and would make H singular.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from blm.evidence.closed_form import DenseGaussianModel
from blm.evidence.loop import HyperparameterRangeError, StoppingRule, fixed_mask
from blm.features import Features, LinearFeatures, SparseLinearFeatures
from blm.glm_laplace import (
    _laplace_alpha,
    _laplace_evidence,
    _penalty,
    _sampled_laplace_alpha,
)
from blm.likelihoods import Bernoulli, Likelihood
from blm.pipeline import FitSettings, fit_hyperparameters
from blm.priors import Prior
from blm.rules import MacKay
from blm.solvers.config import Exact, Problem, Solver
from blm.solvers.sampled import SampledPosterior


def intercept_basis(n_classes_out: int, fit_intercept: bool) -> np.ndarray:
    """The intercept's basis Q (K, q): none (q = 0), [[1]] for one logit, or an
    orthonormal basis of the sum-zero vectors (q = K − 1) for K softmax logits."""
    if not fit_intercept:
        return np.zeros((n_classes_out, 0))
    if n_classes_out == 1:
        return np.ones((1, 1))
    centred = np.eye(n_classes_out) - 1.0 / n_classes_out
    u, _, _ = np.linalg.svd(centred)
    return u[:, : n_classes_out - 1]


class GLMFeatures(Features):
    r"""The linear predictor of a GLM, linearised at θ₀: f = φ(x)θ with
    θ = [vec(W) (K·p, row-major as ``coef_``), c (q)], and the full coefficients
    Θ = [W, Qc] (K, p + 1) applied to rows [s_i x_i, s_i] by ``base``
    (``LinearFeatures(p + 1, K)`` or ``SparseLinearFeatures(p + 1, K)``).
    ``offset`` is the unscaled predictor f_i(θ₀) = (row_i Θ₀ᵀ)/s_i, where the likelihood
    evaluates B_i (0 on zero-weight padding rows)."""

    base: LinearFeatures
    theta0: Float[Array, " d"]
    basis: Float[Array, "K q"]

    def __init__(self, base: LinearFeatures, theta0, basis):
        self.base = base
        self.basis = jnp.asarray(basis, jnp.result_type(float))
        self.theta0 = jnp.asarray(theta0, jnp.result_type(float))
        if self.theta0.shape != (self.d,):
            raise ValueError(f"theta0 must have shape ({self.d},), got {self.theta0.shape}")

    @property
    def p(self) -> int:
        return self.base.n_inputs - 1

    @property
    def m(self) -> int:
        return self.base.n_outputs

    @property
    def d(self) -> int:
        return self.m * self.p + int(self.basis.shape[1])

    def full(self, theta: Float[Array, "... d"]) -> Float[Array, "... D"]:
        """Θ = [W, Qc] raveled (…, K·(p + 1)) from θ (…, d)."""
        lead = theta.shape[:-1]
        W = theta[..., : self.m * self.p].reshape(*lead, self.m, self.p)
        b = theta[..., self.m * self.p :] @ self.basis.T  # (…, K)
        return jnp.concatenate([W, b[..., None]], axis=-1).reshape(*lead, -1)

    def reduce(self, g: Float[Array, "... D"]) -> Float[Array, "... d"]:
        """The transpose of ``full``: [vec(G[:, :p]), Qᵀ G[:, p]]."""
        lead = g.shape[:-1]
        G = g.reshape(*lead, self.m, self.p + 1)
        W = G[..., : self.p].reshape(*lead, -1)
        return jnp.concatenate([W, G[..., self.p] @ self.basis], axis=-1)

    def row_scale(self, inputs) -> Float[Array, " b"]:
        """s_i, the constant column's value in each row."""
        if isinstance(self.base, SparseLinearFeatures):
            cols, vals = inputs[..., 0], inputs[..., 1]
            return jnp.sum(jnp.where(cols == self.p, vals, 0.0), axis=-1)
        return inputs[:, self.p]

    def _unscaled(self, inputs, scaled_f):
        s = self.row_scale(inputs)[:, None]
        return jnp.where(s > 0, scaled_f / jnp.where(s > 0, s, 1.0), 0.0)

    def offset(self, inputs):
        return self._unscaled(inputs, self.base.jvp(inputs, self.full(self.theta0)))

    def jvp(self, inputs, z):
        return self.base.jvp(inputs, self.full(z))

    def vjp(self, inputs, v):
        return self.reduce(self.base.vjp(inputs, v))

    def linearize(self, inputs):
        _, jvp, vjp = self.base.linearize(inputs)
        f0 = self._unscaled(inputs, jvp(self.full(self.theta0)))
        return f0, lambda z: jvp(self.full(z)), lambda v: self.reduce(vjp(v))

    def linearize_many(self, inputs):
        _, jvps, vjps = self.base.linearize_many(inputs)
        f0 = self._unscaled(inputs, self.base.jvp(inputs, self.full(self.theta0)))
        return f0, lambda Z: jvps(self.full(Z)), lambda V: self.reduce(vjps(V))

    def block_rows(self) -> int | None:
        return self.base.block_rows()

    def sq_rows(self, inputs, factor):
        full = self.base.sq_rows(inputs, factor).reshape(self.m, self.p + 1)
        s = self.row_scale(inputs)
        rotated = jnp.einsum("kq,bkl->bql", self.basis, factor)  # Qᵀ L_i
        intercept = jnp.einsum("b,bql->q", s**2, rotated**2)
        return jnp.concatenate([full[:, : self.p].ravel(), intercept])

    def dense(self, inputs):
        D = self.base.dense(inputs)  # (b, K, K·(p + 1))
        b = D.shape[0]
        D = D.reshape(b, self.m, self.m, self.p + 1)
        W = D[..., : self.p].reshape(b, self.m, -1)
        return jnp.concatenate([W, D[..., self.p] @ self.basis], axis=-1)


@eqx.filter_jit
def _block_pseudo(features: GLMFeatures, likelihood, xb, yb):
    """(s_i(f_i + u_i) (b, m), Σ_i w_i log p(y_i | f_i)) at θ₀ for one block."""
    f0 = features.offset(xb)
    s = features.row_scale(xb)
    u = likelihood.pseudo_targets(f0, yb)
    per_row = jax.vmap(lambda f, y: likelihood.log_likelihood(f[None], y[None]))(f0, yb)
    return s[:, None] * (f0 + u), jnp.sum(s**2 * per_row)


def linearised_targets(features: GLMFeatures, likelihood, labels, block_size) -> tuple:
    """(pseudo-targets (n, m), weighted log-likelihood at θ₀) in one pass over ``labels``,
    a dataset of the rows and the encoded labels."""
    parts, total = [], 0.0
    for xb, yb, _ in labels.blocks(block_size):
        pseudo, ll = _block_pseudo(features, likelihood, xb, yb)
        parts.append(pseudo)
        total = total + ll
    return jnp.concatenate(parts), float(total)


def log_posterior(features: GLMFeatures, likelihood, labels, prior: Prior, block_size) -> float:
    """Σ_i w_i log p(y_i | f_i(θ₀)) − ½ θ₀ᵀAθ₀ (the penalised log-likelihood at θ₀)."""
    _, ll = linearised_targets(features, likelihood, labels, block_size)
    return ll - 0.5 * float(jnp.sum(prior.precision() * features.theta0**2))


@eqx.filter_jit
def _whitened_block(features: GLMFeatures, likelihood, xb, yb):
    """Rows L_iᵀφ̃_i (b·m, 1, d) and targets L_iᵀỹ_i (b·m, 1) of the dense model."""
    L = likelihood.sqrt_precision(features.offset(xb))  # (b, m, m)
    rows = jnp.einsum("bkl,bkd->bld", L, features.dense(xb))
    b, m = yb.shape
    return rows.reshape(b * m, 1, features.d), jnp.einsum("bkl,bk->bl", L, yb).reshape(b * m, 1)


@eqx.filter_jit
def _structured_stats(features: GLMFeatures, likelihood, xb, yb):
    r"""(Σ_i φ̃_iᵀB_iφ̃_i (1, d, d), Σ_i φ̃_iᵀB_iỹ_i (1, d), Σ_i ỹ_iᵀB_iỹ_i (1,)) of a
    block of dense rows x̃_i = [s_i x_i, s_i], the statistics ``_whitened_block``'s rows
    give, from the rows' structure: φ̃_i = (I_K ⊗ x̃_i)T (T: θ ↦ Θ, ``full``), so the
    full coefficients' Gram is G_{(k,j),(l,j')} = Σ_i B_i,kl x̃_ij x̃_ij' — K² products
    of (p + 1)² for each row instead of the K·d² of the K whitened rows (d ≈ K·p) — and
    the Gram in θ is TᵀGT (``reduce`` on both sides)."""
    L = likelihood.sqrt_precision(features.offset(xb))  # (b, K, K), B_i = L_iL_iᵀ
    B = jnp.einsum("bkl,bjl->bkj", L, L)
    D = features.m * (features.p + 1)
    G = jnp.einsum("bkl,bj,bJ->kjlJ", B, xb, xb).reshape(D, D)
    gram = features.reduce(features.reduce(G).T)
    cross = features.reduce(jnp.einsum("bkl,bl,bj->kj", B, yb, xb).reshape(D))
    yty = jnp.einsum("bk,bkl,bl->", yb, B, yb)
    return gram[None], cross[None], yty[None]


def dense_model(features: GLMFeatures, likelihood, dataset, block_size) -> DenseGaussianModel:
    """The whitened dense linear model at θ₀ (its Gram accumulated block by block; for
    dense rows from their structure, ``_structured_stats``)."""
    if not isinstance(features.base, SparseLinearFeatures):
        stats = None
        for xb, yb, _ in dataset.blocks(block_size):
            block = _structured_stats(features, likelihood, xb, yb)
            stats = block if stats is None else jax.tree.map(jnp.add, stats, block)
        gram, cross, yty = stats
        n_obs = jnp.asarray(dataset.n_observations, gram.dtype)
        return DenseGaussianModel(None, None, gram, cross, "primal", yty, n_obs)
    return DenseGaussianModel.from_data(
        features,
        dataset,
        "primal",
        block_size,
        rows=lambda xb, yb: _whitened_block(features, likelihood, xb, yb),
        accumulate=True,
    )


SEPARABLE_ALPHA = 1e-10
"""A fitted α below this is the evidence driving the prior away: (nearly) separable data."""


def _separable_note(alpha, running: bool = False) -> str:
    """The warning for an α the evidence drives to 0 (below ``SEPARABLE_ALPHA``, or
    ``running`` there, ``_running_to_zero``), or ""."""
    alpha = np.asarray(alpha, float)
    if not (running or np.any((alpha > 0) & (alpha < SEPARABLE_ALPHA))):
        return ""
    return (
        f"the evidence drives alpha to 0 (stopped at {alpha.tolist()}): the classes are "
        "(nearly) separable, and only the prior keeps the MAP finite; give alpha "
        "(fit_alpha=False, alpha_init=...) or fixed_alpha"
    )


@dataclass(frozen=True)
class NewtonSettings:
    """The joint Newton–MacKay loop's settings.

    Args:
        max_iter: joint steps at most.
        tol: stop when no α_g changes by more than ``tol`` relative and the Newton step
            moves θ by less than ``tol`` relative (‖Δθ‖ ≤ tol·max(‖θ‖, 1)).
        fit_alpha: tune α (False: the MAP and posterior at the given α).
        fixed: mask (G,) of the groups whose α is given (the intercept's, flat).
        max_halvings: backtracking halvings of a Newton step at most.
        evidence_tol: or (exact solver) stop when the Laplace evidence is predicted to
            gain less than this many nats from all further steps (``StoppingRule``): an
            α_g the data do not determine (a group without signal, whose α runs to ∞
            with the evidence flat) then ends the fit; None: ``tol`` alone.
    """

    max_iter: int = 100
    tol: float = 1e-5
    fit_alpha: bool = True
    fixed: np.ndarray | None = None
    max_halvings: int = 30
    evidence_tol: float | None = 1e-9

    def __post_init__(self) -> None:
        for name in ("max_iter", "max_halvings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"NewtonSettings.{name} must be an integer >= 1, got {value!r}")
        for name in ("tol", "evidence_tol"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"NewtonSettings.{name} must be a positive number, got {value!r}")


@dataclass
class GLMFit:
    """The fitted GLM: MAP ``theta`` and α, the Laplace posterior at them
    (``posterior``: mean θ̂ and k zero-mean draws; ``exact`` the factored one or None),
    the Laplace log evidence (NaN for sampled solvers), the steps and convergence."""

    theta: np.ndarray
    alpha: np.ndarray
    posterior: SampledPosterior
    exact: object
    log_evidence: float
    n_iter: int
    converged: bool
    last_change: float
    trajectory: list = field(default_factory=list)
    stop_note: str = ""

    @classmethod
    def of(cls, theta, prior: Prior, posterior, exact, evidence: float, report) -> GLMFit:
        """From the MAP, the fitted prior, the posteriors and the loop's ``_Report``."""
        return cls(
            np.asarray(theta),
            np.asarray(prior.alpha),
            posterior,
            exact,
            float(evidence),
            report.n_iter,
            report.converged,
            report.last_change,
            report.trajectory,
            report.stop_note,
        )


@dataclass(frozen=True)
class _Report:
    """How the loop ended: steps, convergence, last relative change, the trajectory, and
    why it stopped early where α left the range (``stop_note``: the caller warns)."""

    n_iter: int
    converged: bool
    last_change: float
    trajectory: list
    stop_note: str = ""


class GLMModel:
    """The pieces one linearisation needs: base features, likelihood, rows with labels."""

    def __init__(self, base, likelihood: Likelihood, labels, basis, block_size):
        self.base, self.likelihood, self.labels = base, likelihood, labels
        self.basis, self.block_size = basis, block_size

    def log_posterior(self, theta, prior: Prior) -> float:
        """The penalised log-likelihood at θ (``log_posterior``)."""
        features = GLMFeatures(self.base, theta, self.basis)
        return log_posterior(features, self.likelihood, self.labels, prior, self.block_size)

    def at(self, theta) -> tuple[GLMFeatures, object, float]:
        """(features at θ, the dataset of pseudo-targets, log-likelihood at θ)."""
        features = GLMFeatures(self.base, theta, self.basis)
        pseudo, ll = linearised_targets(features, self.likelihood, self.labels, self.block_size)
        return features, self.labels.with_targets(pseudo), ll


def _relative(new, old) -> float:
    new, old = np.asarray(new, float), np.asarray(old, float)
    scale = np.where(old > 0, old, 1.0)
    return float(np.max(np.abs(new - old) / scale, initial=0.0))


def fit_glm(
    model: GLMModel,
    prior: Prior,
    solver: Solver,
    rule: MacKay,
    *,
    settings: NewtonSettings,
    key: jax.Array,
    n_samples: int,
) -> GLMFit:
    """The joint Newton–MacKay iteration of the module docstring, then the Laplace
    posterior at the fixed point (``n_samples`` draws; the exact factor for ``Exact``)."""
    m, p, q = model.base.n_outputs, model.base.n_inputs - 1, np.shape(model.basis)[1]
    theta = jnp.zeros(m * p + q, jnp.result_type(float))
    alpha = np.asarray(prior.alpha, float)
    if isinstance(solver, Exact):
        return _fit_exact(model, prior, theta, settings, key, n_samples)
    step_rule = MacKay(gamma=rule.gamma, accelerate=False)
    warm, trajectory, converged, change, note = None, [], False, np.inf, ""
    n_iter = 0
    for n_iter in range(1, settings.max_iter + 1):
        features, pseudo, ll = model.at(theta)
        p = prior.with_alpha(jnp.asarray(alpha, theta.dtype))
        try:
            fit = fit_hyperparameters(
                Problem(features, model.likelihood, p, pseudo, model.block_size, None),
                solver,
                step_rule,
                settings=FitSettings(
                    max_iter=int(settings.fit_alpha),  # 0: the posterior at the given α
                    tol=settings.tol,
                    fixed=settings.fixed,
                    fit_beta=False,
                    final_solve=not settings.fit_alpha,
                ),
                key=key,
                n_samples=n_samples,
                init=warm,
            )
        except HyperparameterRangeError:
            note = (  # a sampled γ̂_g of 0: a group pruned away, or a MAP running away
                f"MacKay's update of alpha left (0, inf) at step {n_iter} (stopped at "
                f"{np.round(alpha, 6).tolist()}): a prior group the labels do not determine "
                "(its sampled gamma came out 0) or (nearly) separable classes; give that "
                "group's alpha (fixed_alpha), or use solver='exact'"
            )
            break
        new_alpha = alpha
        if settings.fit_alpha:  # MacKay's sampled update with the curvature's correction
            new_alpha = _sampled_laplace_alpha(
                model, features, fit.posterior, fit.alpha, p, settings.fixed
            )
        target = jnp.asarray(fit.posterior.mean, theta.dtype)  # solved at the old α
        base = ll - _penalty(p, theta)
        theta_new = _backtrack(model, p, theta, target, settings.max_halvings, base)
        warm = SampledPosterior(mean=theta_new, samples=fit.posterior.samples)
        if settings.fit_alpha and np.any((new_alpha > 0) & (new_alpha < SEPARABLE_ALPHA)):
            alpha, theta, note = new_alpha, theta_new, _separable_note(new_alpha)
            break  # the evidence drives α to 0: separable data (the caller says so)
        step = float(jnp.linalg.norm(theta_new - theta)) / max(float(jnp.linalg.norm(theta)), 1.0)
        change = max(_relative(new_alpha, alpha), step)
        trajectory.append({"alpha": new_alpha, "step": step, "log_likelihood": ll})
        theta, alpha = theta_new, new_alpha
        if not np.all(np.isfinite(alpha)) or not bool(jnp.all(jnp.isfinite(theta))):
            raise FloatingPointError(
                f"the Newton–MacKay iteration left the finite range at step {n_iter} "
                f"(alpha {np.round(alpha, 6).tolist()})"
            )
        if change <= settings.tol:
            converged = True
            break
    report = _Report(n_iter, converged, change, trajectory, note)
    p = prior.with_alpha(jnp.asarray(alpha, theta.dtype))
    return _sampled_result(model, p, theta, solver, key=key, k=n_samples, warm=warm, report=report)


class _ExactMap:
    """α ↦ (the Laplace-evidence update at the MAP θ̂(α), its evidence): Newton to θ̂(α)
    (warm-started from the last MAP), then ``_laplace_alpha`` and the Laplace evidence
    there; a map whose fixed points are the evidence's stationary points, for
    ``Anderson``."""

    def __init__(self, model: GLMModel, prior: Prior, theta, settings: NewtonSettings):
        self.model, self.prior, self.theta, self.settings = model, prior, theta, settings
        self.newton_steps = 0
        self.newton_tol = NEWTON_TOL  # loosened while α still moves (``_fit_exact``)

    def map_at(self, alpha) -> tuple:
        """(θ̂(α), features at it, posterior there, log-likelihood there)."""
        p = self.prior.with_alpha(jnp.asarray(alpha, self.theta.dtype))
        theta = self.theta
        for _ in range(NEWTON_STEPS):
            features, pseudo, ll = self.model.at(theta)
            post = dense_model(
                features, self.model.likelihood, pseudo, self.model.block_size
            ).posterior(p, jnp.ones(1, theta.dtype))
            base = ll - _penalty(p, theta)
            new = _backtrack(self.model, p, theta, post.mean, self.settings.max_halvings, base)
            self.newton_steps += 1
            moved = float(jnp.linalg.norm(new - theta))
            theta = new
            if moved <= self.newton_tol * max(float(jnp.linalg.norm(theta)), 1.0):
                break
        self.theta = theta
        return theta, features, post, ll, p

    def __call__(self, alpha, beta):
        theta, features, post, ll, p = self.map_at(alpha)
        new = _laplace_alpha(self.model, features, post, p, self.settings.fixed)
        return new, beta, {"score": _laplace_evidence(ll, theta, p, post.logdet())}


NEWTON_STEPS = 50
"""Newton steps to the MAP at one α at most (from a warm start: two or three)."""
NEWTON_TOL = 1e-10
"""The MAP is reached when a Newton step moves θ by less than this, relative."""
LOOSE_NEWTON = (1e-2, 1e-4)
"""While α moves by a relative c per step, the MAP at a trial α is solved to
min(1e-2·c, 1e-4) (never tighter than ``NEWTON_TOL``): the update's error then stays a
hundredth of its step, and the final MAP is solved to ``NEWTON_TOL``."""


DRIFT_STEPS = 6
"""Steps over which ``_running_to_zero`` looks for an α falling without end."""


def _running_to_zero(trajectory: list, free: np.ndarray) -> bool:
    """Whether, over the last ``DRIFT_STEPS`` steps, some fitted α_g fell at every step
    by a log-step no smaller than its first, while the evidence rose at every step by a
    gain no smaller than its first: an iteration with a finite fixed point has shrinking
    steps and gains, so this one runs to α_g = 0 (separable classes: the evidence's sup
    is there), which would otherwise take hundreds of steps to reach ``SEPARABLE_ALPHA``."""
    if len(trajectory) < DRIFT_STEPS + 1 or not np.any(free):
        return False
    recent = trajectory[-(DRIFT_STEPS + 1) :]
    scores = np.asarray([t["score"] for t in recent], float)
    gains = np.diff(scores)
    if not (np.all(np.isfinite(gains)) and np.all(gains > 0) and gains[-1] >= gains[0]):
        return False
    log_alpha = np.log(np.asarray([np.asarray(t["alpha"], float)[free] for t in recent]))
    steps = np.diff(log_alpha, axis=0)  # (DRIFT_STEPS, free groups)
    falling = np.all(steps < -1e-3, axis=0) & (steps[-1] <= steps[0])
    return bool(np.any(falling))


def _fit_exact(model: GLMModel, prior: Prior, theta, settings: NewtonSettings, key, k):
    """The exact path: Anderson-accelerated iteration of ``_ExactMap`` on log α (the
    evidence never lower across an accepted extrapolation), then the posterior at θ̂."""
    from blm.evidence.acceleration import Anderson

    plain = _ExactMap(model, prior, theta, settings)
    alpha = np.asarray(prior.alpha, float)
    free = ~fixed_mask(settings.fixed, alpha.shape[0]) & (alpha > 0)
    accelerated = Anderson(plain, free=free, fit_beta=False)
    beta, trajectory, converged, change, n_iter = np.zeros(0), [], False, np.inf, 0
    stopping = StoppingRule(settings.tol, settings.evidence_tol)
    if settings.fit_alpha:
        for n_iter in range(1, settings.max_iter + 1):
            new, beta, info = accelerated.step(alpha, beta)
            new = np.asarray(new, float)
            change = _relative(new, alpha)
            trajectory.append({"alpha": new, "score": info.get("score")})
            scores = [t["score"] for t in trajectory]
            if not np.all(np.isfinite(new)):
                raise FloatingPointError(f"alpha left the finite range at step {n_iter}")
            if stopping.evidence_settled(scores, theta.dtype):
                converged = True  # the evidence has settled: keep the α it was scored at
                break
            alpha = new
            if np.any((alpha > 0) & (alpha < SEPARABLE_ALPHA)) or change <= settings.tol:
                converged = change <= settings.tol
                break
            if _running_to_zero(trajectory, free):
                break  # the evidence rises ever faster as an α falls: its sup is at α = 0
            plain.newton_tol = max(NEWTON_TOL, min(LOOSE_NEWTON[0] * change, LOOSE_NEWTON[1]))
    plain.newton_tol = NEWTON_TOL
    theta, _, post, ll, p = plain.map_at(alpha)
    report = _Report(
        n_iter or 1,
        converged or not settings.fit_alpha,
        change if settings.fit_alpha else 0.0,
        trajectory,
        _separable_note(alpha, _running_to_zero(trajectory, free)) if settings.fit_alpha else "",
    )
    evidence = _laplace_evidence(ll, theta, p, post.logdet())
    draws = post.sample(key, k) if k > 0 else jnp.zeros((0, theta.shape[0]), theta.dtype)
    return GLMFit.of(theta, p, SampledPosterior(mean=theta, samples=draws), post, evidence, report)


def _backtrack(model: GLMModel, prior: Prior, theta, target, max_halvings: int, base: float):
    """θ + t(target − θ) with t = 1, ½, … the first that does not lower the penalised
    log-likelihood at ``prior`` below ``base`` (its value at θ, known from the pass that
    linearised there); a Newton step from θ is an ascent direction."""
    direction, t = target - theta, 1.0
    for _ in range(max_halvings):
        candidate = theta + t * direction
        value = model.log_posterior(candidate, prior)
        if np.isfinite(value) and value >= base - 1e-12 * max(abs(base), 1.0):
            return candidate
        t *= 0.5
    return theta


def _sampled_result(model: GLMModel, prior: Prior, theta, solver, *, key, k, warm, report):
    """The sampled posterior at θ̂ and the fitted ``prior``: k draws solved around it."""
    features, pseudo, _ = model.at(theta)
    problem = Problem(features, model.likelihood, prior, pseudo, model.block_size, None)
    solved, _ = solver.solve(solver.init(problem, key, k), model.likelihood, prior, warm)
    posterior = SampledPosterior(mean=theta, samples=solved.samples)
    return GLMFit.of(theta, prior, posterior, None, float("nan"), report)


def logistic_likelihood(n_classes: int) -> Likelihood:
    """``Bernoulli()`` for two classes, ``Categorical(K)`` for more."""
    from blm.likelihoods import Categorical

    return Bernoulli() if n_classes == 2 else Categorical(n_classes)
