r"""Linearised Laplace for a trained Equinox network.

Around the trained weights w̄ the network is replaced by its linearisation
f(w̄, x) + J(x)(w − w̄). With the likelihood's Hessian B_i at f̄_i = f(w̄, x_i) this is the
Bayesian linear model of ``blm`` with

    features   φ(x) = J(x) = ∂f(w̄, x)/∂w                 (``blm.network.NetworkFeatures``)
    targets    Ỹ_i = J_i w̄ + u_i,  B_i u_i = ∇_f log p(y_i | f̄_i)
    prior      w ~ N(0, A⁻¹),  A = α I or one α_g per parameter leaf (layer weight/bias)
    posterior  N(θ̄, H⁻¹),  H = Σ_i J_iᵀ B_i J_i + A   (the generalised Gauss–Newton + A)

(for a Gaussian likelihood Ỹ_i = y_i − f̄_i + J_i w̄ and the linear model is exact; for
softmax / Bernoulli θ̄ is one Newton step of the linearised log-likelihood from w̄).
``linearise`` builds it; ``LinearisedModel.fit`` draws k samples z_j ~ N(0, H⁻¹) by
sample-then-optimise SGD and tunes α (and β for regression) by sample-based MacKay EM;
the returned ``LaplacePosterior`` predicts with mean f(w̄, x) and the samples' spread
J(x) z_j, and saves to / loads from HDF5 (``blm.laplace_posterior``, re-exported here).
Where the GGN fits in memory, ``fit(solver="exact")`` forms it densely and runs exact
MacKay steps instead; its posterior keeps the Cholesky factor and predicts with the
exact J(x)H⁻¹J(x)ᵀ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from blm import laplace_evidence
from blm._checks import as_float_array, positive, positive_int, same_length
from blm._progress import StepBar
from blm.data import ArrayDataset, default_dtype, is_file
from blm.evidence.closed_form import DenseGaussianModel
from blm.evidence.loop import (
    HyperparameterFit,
    HyperparameterRangeError,
    relative_change,
)
from blm.exceptions import warn_not_converged
from blm.laplace_posterior import LaplacePosterior, dense_jacobian
from blm.laplace_settings import (
    COLD_START,
    DEFAULT_START,
    Hyperparameters,
    WarmStart,
    check_fixed_alpha,
)
from blm.likelihoods import Likelihood, checked_likelihood, observations_per_row
from blm.memory import (
    MemoryEstimate,
    check_exact_memory,
    check_memory,
    estimate_exact_memory,
    estimate_sgd_memory,
)
from blm.network import NetworkFeatures
from blm.pipeline import FitSettings, fit_hyperparameters
from blm.priors import Prior
from blm.rules import MacKay, as_rule
from blm.solvers.config import NETWORK_DEFAULTS, SGD, Exact, Problem, Solver, as_solver
from blm.solvers.exact import ExactPosterior
from blm.solvers.sampled import SampledPosterior

# a last EM step that moved α by more than this is a loop still travelling, not the jitter
# of a sample-based γ̂ (within ±10 % at k = 16 on the digits MLP once converged)
UNCONVERGED = 0.25


@eqx.filter_jit
def _block_pseudo_targets(features, likelihood, xb, yb):
    """(f(w̄, x_b), J_b w̄ + u_b) from one linearisation of the batch."""
    f0, jvp, _ = features.linearize(xb)
    return f0, jvp(features.w) + likelihood.pseudo_targets(f0, yb)


def linearise(
    model: eqx.Module | PyTree,
    data,
    likelihood: Likelihood,
    *,
    filter_spec=eqx.is_inexact_array,
    apply=None,
    block_size: int = 256,
) -> LinearisedModel:
    """The Bayesian linear model of ``model`` linearised at its current weights w̄:
    f(w, x) ≈ f(w̄, x) + J(x)(w − w̄), J(x) = ∂f/∂w at w̄, with the likelihood's
    curvature B in f, so that the posterior precision is JᵀBJ + A (the GGN plus the
    prior). J is applied by Jacobian-vector products, never formed.

    Args:
        model: an Equinox module (called as ``model(x)``), or any pytree of parameters
            with ``apply(params, x)`` — a Flax linen model's ``variables`` with
            ``apply=module.apply``, a Flax NNX model's ``nnx.split`` state with
            ``apply=lambda state, x: nnx.merge(graphdef, state)(x)``, a dict of arrays.
        data: ``(X, y)`` with X of shape (n, *input_shape) and y the targets (n,) or
            (n, m) for ``Gaussian``, integer labels (n,) for ``Categorical``/``Bernoulli``;
            or an ``HDF5Dataset`` holding both: then the inputs are read in blocks at
            every pass and only n·m numbers (targets, pseudo-targets, f(w̄, x_i)) are kept
            in memory.
        likelihood: ``Gaussian(β)``, ``Bernoulli()`` or ``Categorical(m)``.
        filter_spec: the parameters to linearise (default every floating-point array;
            a pytree of booleans freezes leaves, as in ``eqx.partition``).
        apply: ``apply(model, x)`` maps one input to its output (default ``model(x)``).
        block_size: rows pushed through the network at a time in full passes.

    Returns:
        A ``LinearisedModel``; its ``fit`` gives the ``LaplacePosterior``. Each layer (the
        leaves sharing a parent path, e.g. a layer's weight and bias) is one prior group.

    Raises:
        ValueError, TypeError: naming the argument, for empty data, an output size the
            likelihood does not expect, labels outside the class range, or non-floating
            parameters.

    Example:
        >>> import blm, equinox as eqx, jax, numpy as np
        >>> net = eqx.nn.MLP(2, 1, 8, 1, key=jax.random.PRNGKey(0))
        >>> X = np.random.default_rng(0).standard_normal((40, 2)); y = X[:, 0]
        >>> lm = blm.linearise(net, (X, y), blm.Gaussian(4.0))
        >>> post = lm.fit(solver="exact", em_steps=50)
        >>> post.alpha.shape
        (1,)
    """
    checked_likelihood(likelihood)
    if is_file(data) and data.sparse_rows:
        raise TypeError("data: a network takes dense inputs; got a sparse (CSR) HDF5 dataset")
    if is_file(data):
        X, y, input_shape = None, data.targets(), data.input_shape
    else:
        try:
            X, y = data
        except (TypeError, ValueError) as err:
            raise TypeError("data must be a pair (X, y) of arrays or an HDF5Dataset") from err
        X = as_float_array(X, "X")
        if X.ndim < 1 or X.shape[0] == 0:
            raise ValueError(f"X must hold at least one input row, got shape {X.shape}")
        input_shape = X.shape[1:]
    targets = likelihood.encode_targets(y)
    if X is None:
        source = data.with_targets(targets)
    else:
        same_length(X.shape[0], targets.shape[0], "X", "y")
        source = ArrayDataset(X, targets)
    input_dtype = None if X is None else X.dtype
    features = NetworkFeatures(model, input_shape, filter_spec, apply, input_dtype)
    if features.m != likelihood.m:
        raise ValueError(
            f"model outputs shape {features.output_shape} per input ({features.m} numbers) but "
            f"the likelihood expects m={likelihood.m} outputs"
        )
    block_size = positive_int(block_size, "block_size")
    parts = [
        _block_pseudo_targets(features, likelihood, xb, yb)
        for xb, yb, _ in source.blocks(block_size)
    ]
    offsets = jnp.concatenate([f0 for f0, _ in parts])
    pseudo = jnp.concatenate([p for _, p in parts])
    if not bool(jnp.all(jnp.isfinite(pseudo))):
        raise FloatingPointError(
            "the linearised targets are not finite: the network's outputs saturate so far that "
            "the likelihood's curvature underflows (check the trained model)"
        )
    return LinearisedModel(
        features, likelihood, source.with_targets(pseudo), targets, offsets, block_size
    )


class LinearisedModel:
    """The linear model of a network (``linearise``'s result): ``features``,
    ``likelihood``, ``dataset`` (inputs and pseudo-targets), the encoded ``targets`` and
    the network's ``offsets`` f(w̄, x_i) on the training inputs."""

    def __init__(
        self, features: NetworkFeatures, likelihood, dataset, targets, offsets, block_size: int
    ):
        self.features = features
        self.likelihood = likelihood
        self.dataset = dataset
        self.targets = targets
        self.offsets = offsets
        self.block_size = block_size

    def prior(
        self,
        alpha: float = 1.0,
        per_layer: bool = False,
        fixed_alpha: Mapping[str, float] | None = None,
    ) -> Prior:
        """α I, or one α per layer (``per_layer``; weight and bias together), all starting
        at ``alpha`` but the layers named in ``fixed_alpha`` (see ``fixed_layers``)."""
        self.fixed_layers(fixed_alpha, per_layer)  # names and values checked
        groups = np.asarray(self.features.groups())
        n_groups = int(groups.max()) + 1 if per_layer else 1
        alphas = np.full(n_groups, float(alpha))
        for name, value in (fixed_alpha or {}).items():
            alphas[self.features.group_names.index(name)] = value
        return Prior(alphas, groups if per_layer else 0 * groups)

    def fixed_layers(
        self, fixed_alpha: Mapping[str, float] | None, per_layer: bool
    ) -> np.ndarray | None:
        """The mask over layers whose α is given, not fitted: ``fixed_alpha`` maps layer
        names (``features.group_names``, e.g. ``".layers[2]"``) to a precision > 0, and
        needs one α per layer (``per_layer``). None without it."""
        check_fixed_alpha(fixed_alpha, per_layer)
        if fixed_alpha is None:
            return None
        names = self.features.group_names
        for name in fixed_alpha:
            if name not in names:
                raise ValueError(
                    f"fixed_alpha: no layer {name!r}; this network's layers are {list(names)}"
                )
        return np.isin(np.asarray(names), list(fixed_alpha))

    def memory_estimate(self, n_samples: int, batch_size: int) -> MemoryEstimate:
        """The peak memory of ``fit`` with these sizes (``blm.memory``)."""
        return estimate_sgd_memory(
            self.features.d,
            n_samples,
            max(batch_size, self.block_size),
            self.features.m,
            self.features.activation_size(),
            np.dtype(default_dtype()).itemsize,
        )

    def fit(
        self,
        n_samples: int = 16,
        key: jax.Array | int = 0,
        *,
        solver: str | Solver = "sgd",
        hyper: str | MacKay = "mackay",
        em_steps: int = 5,
        tol: float = 1e-3,
        start: Hyperparameters = DEFAULT_START,
        warm: WarmStart = COLD_START,
        progress: bool = False,
        memory_limit: int | None = None,
    ) -> LaplacePosterior:
        r"""The linearised posterior N(θ̄, H⁻¹), H = Σ_i J_iᵀB_iJ_i + A, with ``n_samples``
        samples, and α (per layer with ``start.per_layer``; β too for a Gaussian
        likelihood) tuned by ``em_steps`` MacKay steps, warm-started from w̄:

            α_g ← γ_g/‖c_g‖²,   β ← (n·m − γ)/‖y − f(w̄) − J(θ̄ − w̄)‖²,

        γ_g exact (``solver="exact"``) or γ̂_g from the samples, c = θ̄ or w̄
        (``blm.MacKay(centre=...)``). ``em_steps=0`` fits no hyperparameter: the
        posterior at ``start.alpha`` (and ``start.beta``, else the β of the ``Gaussian``
        given to ``linearise``) as given, e.g. at the weight decay the network was
        trained with (α = nλ for a loss (1/n)Σ_i ℓ_i + (λ/2)‖w‖²), in one solve.

        Args:
            n_samples: posterior samples z_j ~ N(0, H⁻¹) (≥ 1).
            key: the samples' key (an int or a PRNG key).
            solver: ``"sgd"`` / ``blm.SGD(...)`` (default; its ``None`` fields take the
                network defaults ``NETWORK_DEFAULTS``: 1 000 steps, no Jacobi scaling,
                since a network's Jacobian columns are strongly correlated across layers;
                batch_size min(256, n), Polyak averaging over the last half),
                ``"cg"`` / ``blm.CG(...)`` (batched conjugate gradients, full passes;
                tol 1e-4 here unless given), or ``"exact"`` / ``blm.Exact()``: the GGN
                formed densely from the whitened Jacobian rows L_iᵀJ_i (the d × d Gram
                accumulated block by block where d ≤ n·m: last-layer Laplace on a large
                dataset; else the dual (n·m)²), exact MacKay steps on it, a posterior
                that keeps the Cholesky factor (exact predictive variances, exact draws,
                and ``log_evidence`` Laplace's approximation around w̄), computed in
                float64 under ``jax_enable_x64`` whatever the network's precision.
            hyper: ``"mackay"`` or ``blm.MacKay(gamma=..., centre=...)``. γ̂'s form
                defaults to the data form mean_j z_jᵀΦᵀBΦz_j (``blm.evidence.mackay``):
                plain SGD hardly moves a sample in the directions the prior dominates
                (most of a network's), which biases the combined form upwards. The
                centre defaults to ``"map"`` (w̄): EM ends at the stationary point of
                Laplace's evidence around w̄, the one ``post.log_evidence`` reports and
                laplace-torch's ``log_marginal_likelihood`` computes. ``"linear"`` (θ̄,
                the seed papers' sample-based EM) maximises the linear model's evidence
                instead, and an exact fit then reports that one. With ``"linear"`` and a
                very confident classifier α can run away upwards; with ``"map"`` a
                network trained with little weight decay gets a small α and a wide
                predictive: both mean the network was trained at an α the evidence
                rejects (``blm.train_with_evidence`` retrains it).
            em_steps: MacKay steps (0: none).
            tol: stop EM once no α_g, β changes by more than this, relative.
            start: where α, β start and which layers' α are given
                (``blm.Hyperparameters``).
            warm: ``blm.WarmStart(samples, final_solve)``: starting samples (n_samples,
                d), e.g. a fit's at nearby weights (ignored by the exact solver); and
                whether to solve once more at the fitted α (sgd, cg; False or a function
                of the fitted (α, β) returning False skips it, leaving the last
                E-step's mean and samples: a warm start for a fit that follows).
            progress: a bar over the EM steps (and inside each solve).
            memory_limit: bytes the fit may use (default: what is available); the peak
                is estimated before anything runs.

        Returns:
            A ``LaplacePosterior`` with ``converged`` and ``last_change``.

        Raises:
            MemoryError: the estimated peak exceeds ``memory_limit`` (naming what to
                lower; for the exact solver, solver='sgd').
            ValueError: bad ``n_samples``, ``em_steps``, ``warm.samples`` shape or
                layer names in ``start.fixed_alpha``; a rule other than MacKay's.
            HyperparameterRangeError: α ran away (the message says why and what to do).

        A last EM step that still moves α by more than 25 % warns
        (``ConvergenceWarning``).

        Example:
            >>> post = lm.fit(16, em_steps=5, start=blm.Hyperparameters(per_layer=True))  # doctest: +SKIP
        """
        solver = as_solver(solver).resolved(NETWORK_DEFAULTS)
        rule = as_rule(hyper).resolved(NETWORK_DEFAULTS)
        if not isinstance(rule, MacKay):
            raise ValueError(
                f"hyper: LinearisedModel.fit fits by MacKay EM (blm.MacKay(...)), got {hyper!r}"
            )
        for value, name, kind in ((start, "start", Hyperparameters), (warm, "warm", WarmStart)):
            if not isinstance(value, kind):
                raise TypeError(f"{name} must be blm.{kind.__name__}(...), got {value!r}")
        k = positive_int(n_samples, "n_samples")
        positive_int(em_steps, "em_steps", minimum=0)
        first = w = self.features.w
        if warm.samples is not None:  # warm start: the mean at w̄, the samples given
            samples = jnp.asarray(warm.samples, w.dtype)
            if samples.shape != (k, self.features.d):
                raise ValueError(
                    f"warm.samples must have shape (n_samples, d) = {(k, self.features.d)}, "
                    f"got {samples.shape}"
                )
            first = jnp.concatenate([w[None], samples])
        key = jax.random.PRNGKey(key) if isinstance(key, int) else key
        likelihood = self.likelihood
        if likelihood.noise_precision is not None and start.beta is not None:
            likelihood = likelihood.with_beta(positive(start.beta, "beta"))
        elif likelihood.noise_precision is not None and em_steps > 0 and not start.fixed_beta:
            # EM's start: the MAP network's residuals, 1/β ≈ their mean square
            resid = self.targets - np.asarray(self.offsets)
            likelihood = likelihood.with_beta(1.0 / max(float(np.mean(resid**2)), 1e-12))
        # em_steps=0 without a starting beta: the β of the Gaussian given to linearise
        prior = self.prior(start.alpha, start.per_layer, start.fixed_alpha)
        bar = StepBar(progress, em_steps, "EM")
        run = _Run(
            likelihood=likelihood,
            prior=prior,
            key=key,
            k=k,
            centre=rule.centre,
            memory_limit=memory_limit,
            settings=FitSettings(
                max_iter=em_steps,
                tol=tol,
                fixed=self.fixed_layers(start.fixed_alpha, start.per_layer),
                progress=bar.callback,
                fit_beta=likelihood.noise_precision is not None and not start.fixed_beta,
            ),
        )
        try:
            if isinstance(solver, Exact):
                fit, exact = self._fit_exact(run, rule)
            else:
                exact = None
                fit = self._fit_sampled(run, solver, rule, progress, first, warm.final_solve)
        except HyperparameterRangeError as err:
            if not err.runaway:
                raise
            raise HyperparameterRangeError(
                f"{err}. For a network (no hyperprior here): an alpha running away means it "
                "was trained at an alpha the evidence rejects (per_layer=True shows it "
                "soonest: ReLU layers trade scale): retrain it at the fitted alpha "
                "(blm.train_with_evidence), or use blm.MacKay(centre='map'), whose update "
                "has a fixed point",
                runaway=True,
            ) from err
        finally:
            bar.close()
        steps = fit.trajectory.alpha
        last = relative_change(steps[-1], fit.alpha) if steps else 0.0
        if last > UNCONVERGED:
            warn_not_converged(
                f"MacKay EM has not converged: alpha changed by {last:.0%} in the last of "
                f"em_steps={em_steps} steps (now {np.round(fit.alpha, 4).tolist()}). Run more "
                "em_steps; if alpha keeps moving one way, the network was trained at an alpha "
                "the evidence rejects: retrain it at the new alpha "
                "(blm.train_with_evidence)",
            )
        if likelihood.noise_precision is not None:
            likelihood = likelihood.with_beta(jnp.asarray(fit.beta))
        post = LaplacePosterior(
            self.features,
            likelihood,
            np.asarray(fit.alpha),
            fit.posterior,
            prior.groups,
            fit.trajectory,
            fit.diagnostics,
            exact,
            self._reported_evidence(fit, exact, likelihood, rule.centre),
        )
        post.converged, post.last_change = bool(fit.converged), float(fit.last_change)
        return post

    def _reported_evidence(self, fit, exact, likelihood, centre: str) -> float | None:
        """The evidence an exact fit maximised, at its α, β: Laplace's around w̄
        (centre "map") or the linear model's (centre "linear"); None for a sampled fit."""
        if exact is None:
            return None
        if centre == "linear":
            return float(fit.score)
        return laplace_evidence.laplace_log_evidence(self, exact.prior, likelihood, exact.logdet())

    def log_evidence(
        self,
        post: LaplacePosterior,
        key: jax.Array | int = 0,
        depth: int = 50,
        n_probes: int = 8,
        probes=None,
        *,
        alpha=None,
        beta=None,
    ) -> float:
        r"""Laplace's log evidence around w̄ (MacKay 1992), at ``post``'s α, β or at given ones:

            log p(y | α, β) ≈ log p(y | w̄) − ½ w̄ᵀAw̄ + ½ log det A − ½ log det H,

        H = Σ_i J_iᵀB_iJ_i + A at w̄, what networks and hyperparameters are compared by.
        The curvature is not refitted at a new (α, β): an exact posterior's log det H
        comes from its Cholesky factor (``ExactPosterior.logdet_at``: exact), a sampled
        one's by stochastic Lanczos quadrature on H applied matrix-free (one pass over the
        data per Lanczos step and probe), whose error is the probes' (Hutchinson's) plus
        the quadrature's: sd √(2(‖log H‖_F² − Σ_i (log H)_ii²)/P) for Rademacher probes.

        Args:
            post: a posterior fitted by this model.
            key: the probes' key (SLQ).
            depth: the Lanczos depth (SLQ; ≤ d).
            n_probes: Rademacher probes (SLQ).
            probes: (P, d) probes in place of random ones, e.g. ``basis_probes(d)`` for
                the exact trace.
            alpha: the prior precisions to evaluate at, a scalar or one per group of
                ``post`` (None: ``post.alpha``).
            beta: the Gaussian noise precision(s) to evaluate at (None: ``post``'s); for
                an exact posterior β may change only by one factor for every output.

        Returns:
            The log evidence (nats).

        Raises:
            ValueError: ``post`` fitted for another network, ``alpha`` or ``beta`` of the
                wrong shape or not positive, ``beta`` for a likelihood without a noise
                precision, or a depth above d.
            FloatingPointError: Lanczos broke down.

        Example:
            >>> lm.log_evidence(post, alpha=2 * post.alpha)  # doctest: +SKIP
        """
        return laplace_evidence.log_evidence(
            self,
            post,
            key=key,
            depth=depth,
            n_probes=n_probes,
            probes=probes,
            alpha=alpha,
            beta=beta,
        )

    def _fit_sampled(self, run: _Run, solver, rule, progress, start, final_solve):
        """Sample-based MacKay EM around the SGD sampler (``fit``'s default) or CG, both
        warm-started from ``start`` ((k + 1, d): w̄ and the given samples, or w̄ alone),
        through the one pipeline (``blm.pipeline.fit_hyperparameters``)."""
        w, k, n = self.features.w, run.k, self.dataset.n
        batch = solver.config(n).batch_size if isinstance(solver, SGD) else self.block_size
        check_memory(self.memory_estimate(k, batch), run.memory_limit)
        if isinstance(solver, SGD):
            first = start
        else:
            samples = start[1:] if start.ndim == 2 else jnp.zeros((k, w.shape[0]), w.dtype)
            first = SampledPosterior(mean=w, samples=samples)
        return fit_hyperparameters(
            Problem(self.features, run.likelihood, run.prior, self.dataset, self.block_size, None),
            solver,
            rule,
            settings=dataclasses.replace(
                run.settings, final_solve=final_solve, solve_progress=progress
            ),
            key=run.key,
            n_samples=k,
            centre=w if run.centre == "map" else None,
            init=first,
        )

    def _fit_exact(self, run: _Run, rule) -> tuple[HyperparameterFit, ExactPosterior]:
        """Exact MacKay steps on the dense (whitened) GGN; the posterior at the final α, β
        with k exact draws."""
        likelihood = run.likelihood
        gaussian = likelihood.noise_precision is not None
        n, m, d = self.dataset.n, self.features.m, self.features.d
        dtype = jnp.result_type(float)
        rows, outputs = (n, m) if gaussian else (n * m, 1)
        primal = d <= rows * outputs  # then only the Gram matrices are kept, block by block
        block_rows = self.block_size * (1 if gaussian else m)
        check_exact_memory(
            estimate_exact_memory(
                rows, outputs, d, np.dtype(dtype).itemsize, block_rows if primal else None
            ),
            "the GGN",
            f"n = {n} inputs, m = {m} outputs and d = {d} weights",
            "use solver='sgd' (memory of order (n_samples + 1)·d), or select fewer weights "
            "with filter_spec (e.g. the last layer)",
            run.memory_limit,
        )
        model = DenseGaussianModel.from_data(
            self.features,
            self.dataset,
            "primal" if primal else "dual",
            self.block_size,
            rows=lambda xb, yb: _dense_block(self.features, likelihood, xb, yb, dtype),
            accumulate=primal,
            # whitened rows (non-Gaussian): the directions B_i observes, n·rank(B_i)
            n_observations=None if gaussian else n * observations_per_row(likelihood),
        )
        centre_w = jnp.asarray(self.features.w, dtype) if run.centre == "map" else None

        def check(posterior, alpha):
            if not bool(jnp.all(jnp.isfinite(posterior.mean))):
                raise FloatingPointError(
                    f"solver='exact': the Cholesky factor of H = GGN + A is not finite in "
                    f"{np.dtype(dtype).name} at alpha={[float(f'{a:.3g}') for a in np.ravel(alpha)]} "
                    "(H too ill-conditioned for this precision): enable float64 "
                    "(jax.config.update('jax_enable_x64', True)) or use solver='sgd'"
                )

        fit = fit_hyperparameters(
            Problem(self.features, likelihood, run.prior, self.dataset, self.block_size, None),
            Exact(),
            rule,
            settings=dataclasses.replace(run.settings, check=check),
            dense=model,
            centre=centre_w,
        )
        exact = fit.posterior
        mean = exact.mean if centre_w is None else centre_w
        posterior = SampledPosterior(mean=mean, samples=exact.sample(run.key, run.k))
        return dataclasses.replace(fit, posterior=posterior), exact


@dataclass(frozen=True)
class _Run:
    """What ``fit`` hands its exact and sampled paths: the starting likelihood and
    prior, the key, k, the M-step's centre, the memory limit and the pipeline's
    settings (no hyperprior on a network)."""

    likelihood: Likelihood
    prior: Prior
    key: jax.Array
    k: int
    centre: str
    memory_limit: int | None
    settings: FitSettings


@eqx.filter_jit
def _dense_block(features, likelihood, xb, yb, dtype):
    """One block's rows of the dense model in ``dtype``, by reverse mode (m vjps per
    input): the Jacobian J_i (b, m, d) and targets Ỹ_i (b, m) for a Gaussian likelihood
    (its β stays a hyperparameter of the dense model); otherwise the whitened
    Ψ_i = L_iᵀJ_i and ỹ_i = L_iᵀỸ_i (B_i = L_iL_iᵀ at f(w̄, x_i)) as one output of b·m
    rows (β = 1)."""
    b, m = yb.shape
    if likelihood.noise_precision is not None:
        return dense_jacobian(features, xb).astype(dtype), yb.astype(dtype)
    L = likelihood.sqrt_precision(features.offset(xb))
    rows = features.factor_rows(xb, L).reshape(b * m, 1, features.d)
    return rows.astype(dtype), jnp.einsum("bkl,bk->bl", L, yb).reshape(b * m, 1).astype(dtype)
