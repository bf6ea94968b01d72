r"""MacKay's update from posterior samples: no log-determinant, no H⁻¹.

Given the posterior mean θ̄ and k samples z_j ~ N(0, H⁻¹), the effective number of
parameters γ = Tr(H⁻¹M), M = ΦᵀBΦ, has two unbiased per-sample estimates, because
E[z zᵀ] = H⁻¹:

    data form:   a_j = z_jᵀ M z_j                (a forward pass; the papers' estimator)
    prior form:  d − p_j,  p_j = z_jᵀ A z_j      (no data pass)

Their sum s_j = a_j + p_j = z_jᵀHz_j has known mean d, so s_j − d is a zero-mean control
variate, and the *combined* estimator (the default)

    γ̂ = mean_j a_j − c (mean_j s_j − d),   c = γ̂_data / d ∈ [0, 1]

interpolates between them (c = 0: data form, c = 1: prior form). A flat prior group
(α_g = 0) has γ_g = d_g exactly (H⁻¹A has no part there), and that value is used. With
w_i = λ_i/(λ_i+α) the eigenvalues of H⁻¹M (scalar α), z = H^{-1/2}ε gives a = Σ w_i ε_i², s = Σ ε_i², and

    Var_data = (2/k) Σ w_i²,   Var_prior = (2/k) Σ (1 − w_i)²,   Var_comb = (2/k) Σ (w_i − w̄)²

at the optimal c = γ/d: never more than either (it removes d·w̄² resp. d·(1−w̄)²). The data
form wins when few directions are data-determined (γ ≪ d: wide random features,
networks), the prior form when almost all are (γ ≈ d); the combination needs no choice.
Estimating c from the same samples adds a bias of order 1/k, far below the noise. Every
estimate is projected onto γ_g's range [0, d_g], and the total is capped at n·m ≥ rank Φ.
Per prior group g the same holds with a_{j,g} = z_{j,g}ᵀ(Mz_j)_g (one jvp + vjp pass when
there are several groups), p_{j,g} = α_g‖z_{j,g}‖² and d_g, except that c = γ_g/d_g is no
longer the optimum: a_{j,g} carries cross terms z_{j,g}ᵀM_{g,h}z_{j,h} with the other
groups, and they can dominate it. Where a direction of large posterior variance spans
several groups with Mv = 0 (a flat constant and a complete set of penalised dummies:
v = e_const − 1_G, held by α_G alone), a_{j,g} swings by ±s_j·β·Σ_i(Φw_j)_i between
the groups (s_j the sample's weight on v), the data form's mean over 16 samples can turn
negative, and γ̂_g = 0 sent α_G to 0 on a crossed panel of 10⁵ rows (20 period effects
whose α is 6.3 once this is fixed; 7.1 by the exact solver on 3 000 of the units). The
same cross terms sit in s_{j,g} = z_{j,g}ᵀ(Hz_j)_g, so with several
groups c_g is the regression coefficient of the control variate, Cov_j(a_{j,g}, s_{j,g}) /
Var_j(s_{j,g}) clipped to [0, 1] (the variance-optimal c; ≈ 1, the prior form, in that
case; γ̂_data,g/d_g where k < 4 or s does not vary). For a Gaussian likelihood the
split of γ̂ by output, γ̂_k ∝ mean_j ‖√β_k Φ_k z_j‖², is rescaled to sum to γ̂.

The update then is the exact one with γ replaced by γ̂ (Gamma hyperpriors optional):

    α_g ← (γ̂_g + 2a_α)/(‖θ̄_g‖² + 2b_α),     β_k ← (n − γ̂_k + 2a_β)/(‖y_k − Φ_kθ̄‖² + 2b_β).

α ← γ̂/‖θ̄‖² is a ratio of estimates; its relative noise is about √(2/(kγ)) or less, so a
single sample is often enough once γ is in the hundreds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from blm import operators as ops
from blm.evidence.closed_form import GammaHyperprior
from blm.evidence.loop import (
    DEFAULT_LOOP,
    HyperparameterFit,
    LoopSettings,
    Solve,
    solve_and_update,
)
from blm.features import Features
from blm.likelihoods import Likelihood
from blm.priors import Prior
from blm.solvers.problem import Problem
from blm.solvers.sampled import SampledPosterior

GammaEstimator = Literal["combined", "data", "prior"]


class GammaTerms(NamedTuple):
    """The per-sample terms of γ̂ and the mean's residual, all from one data pass."""

    a: Float[Array, "k G"]  # z_{j,g}ᵀ(Mz_j)_g
    p: Float[Array, "k G"]  # z_{j,g}ᵀ(Az_j)_g
    quad: Float[Array, "k m"]  # a_j split by output
    residual_sq: Float[Array, " m"] | None  # ‖y_k − Φ_kθ̄‖², Gaussian likelihood only


def gamma_terms(
    posterior: SampledPosterior,
    features: Features,
    likelihood: Likelihood,
    prior: Prior,
    dataset,
    block_size: int | None = None,
) -> GammaTerms:
    """Per-sample terms a_{j,g} = z_{j,g}ᵀ(Mz_j)_g, p_{j,g} = z_{j,g}ᵀ(Az_j)_g, the per-output
    split of a_j and, for a Gaussian likelihood, the residual of θ̄: one pass over the data
    (``ops.sample_statistics``; with several prior groups it also returns Mz)."""
    z = posterior.samples
    grouped = prior.n_groups > 1
    mean = posterior.mean if likelihood.noise_precision is not None else None
    stats = ops.sample_statistics(
        features, likelihood, dataset, z, mean, block_size, with_normal=grouped
    )
    if grouped:
        a = jax.vmap(prior.group_sum)(z * stats.normal)
    else:
        a = jnp.sum(stats.quad, axis=1, keepdims=True)
    p = jax.vmap(prior.group_sum)(prior.mul(z**2))
    return GammaTerms(a, p, stats.quad, stats.residual_sq)


def gamma_from_terms(
    terms: GammaTerms, prior: Prior, n_values: int, estimator: GammaEstimator = "combined"
) -> tuple[Float[Array, " G"], Float[Array, " m"]]:
    """(γ̂_g per prior group, γ̂_k per output) from the per-sample terms; ``n_values`` = n·m
    bounds the total (γ ≤ rank Φ)."""
    a, p = terms.a, terms.p
    d_g = prior.group_sizes
    data = jnp.mean(a, axis=0)
    if estimator == "data":
        gamma_g = data
    elif estimator == "prior":
        gamma_g = d_g - jnp.mean(p, axis=0)
    elif estimator == "combined":
        gamma_g = data - _control_coefficient(a, a + p, data / d_g) * (
            jnp.mean(a + p, axis=0) - d_g
        )
    else:
        raise ValueError(f"estimator must be 'combined', 'data' or 'prior', got {estimator!r}")
    # γ_g ∈ [0, d_g] (projecting an estimate only lowers its error), and γ ≤ rank Φ ≤ n·m:
    # a larger total (unconverged samples, d ≫ n) is scaled down, or β's update turns negative
    gamma_g = jnp.clip(gamma_g, 0.0, d_g)
    gamma_g = jnp.where(prior.alpha == 0, d_g, gamma_g)  # flat: Tr(H⁻¹A) has no part there
    gamma_g = gamma_g * jnp.minimum(1.0, n_values / jnp.sum(gamma_g))
    split = jnp.mean(terms.quad, axis=0)
    gamma_k = split * (jnp.sum(gamma_g) / jnp.sum(split))
    return gamma_g, gamma_k


def _control_coefficient(
    a: Float[Array, "k G"], s: Float[Array, "k G"], scalar: Float[Array, " G"]
) -> Float[Array, " G"]:
    """c_g of the combined estimator, in [0, 1]: ``scalar`` (γ̂_data/d, the optimum for one
    group) with one group or k < 4 samples, else the regression coefficient
    Cov_j(a_{j,g}, s_{j,g}) / Var_j(s_{j,g}) (``scalar`` where s does not vary)."""
    k, n_groups = a.shape
    if n_groups == 1 or k < 4:
        return jnp.clip(scalar, 0.0, 1.0)
    sc = s - jnp.mean(s, axis=0)
    var = jnp.sum(sc**2, axis=0)
    cov = jnp.sum((a - jnp.mean(a, axis=0)) * sc, axis=0)
    return jnp.clip(jnp.where(var > 0, cov / jnp.where(var > 0, var, 1.0), scalar), 0.0, 1.0)


def effective_dimension(
    posterior: SampledPosterior,
    features: Features,
    likelihood: Likelihood,
    prior: Prior,
    dataset,
    estimator: GammaEstimator = "combined",
    block_size: int | None = None,
) -> tuple[Float[Array, " G"], Float[Array, " m"]]:
    """(γ̂_g per prior group (G,), γ̂_k per output (m,)) from the samples."""
    terms = gamma_terms(posterior, features, likelihood, prior, dataset, block_size)
    return gamma_from_terms(terms, prior, dataset.n * features.m, estimator)


def sample_mackay_step(
    posterior: SampledPosterior,
    features: Features,
    likelihood: Likelihood,
    prior: Prior,
    dataset,
    hyper: GammaHyperprior = GammaHyperprior(),
    estimator: GammaEstimator = "combined",
    block_size: int | None = None,
):
    """One MacKay update from a sampled posterior, one pass over the data. Returns
    (α (G,), β, info): β (m,) is updated for a Gaussian likelihood and empty for others
    (nothing to fit)."""
    terms = gamma_terms(posterior, features, likelihood, prior, dataset, block_size)
    gamma_g, gamma_k = gamma_from_terms(terms, prior, dataset.n * features.m, estimator)
    new_alpha = (gamma_g + 2 * hyper.alpha_shape) / (
        prior.group_sum(posterior.mean**2) + 2 * hyper.alpha_rate
    )
    info = {"gamma": jnp.sum(gamma_g)}
    if likelihood.noise_precision is None:
        return new_alpha, jnp.zeros(0), info
    sse = terms.residual_sq
    new_beta = (dataset.n_observations - gamma_k + 2 * hyper.beta_shape) / (
        sse + 2 * hyper.beta_rate
    )
    info["data_fit"] = jnp.sum(likelihood.beta * sse)
    return new_alpha, new_beta, info


def fit_mackay(
    solve: Solve,
    problem: Problem,
    loop: LoopSettings = DEFAULT_LOOP,
    *,
    hyper: GammaHyperprior = GammaHyperprior(),
    estimator: GammaEstimator = "combined",
    evidence: Callable[[Prior, Likelihood], float] | None = None,
) -> HyperparameterFit:
    r"""Sample-based MacKay EM with any solver backend and likelihood.

    E-step: ``solve(likelihood, prior, init)`` returns the posterior mean and samples at
    the current hyperparameters, warm-started from the previous step's solution
    (``init``; None at the first step). M-step: ``sample_mackay_step``,

        α_g ← (γ̂_g + 2a_α)/(‖θ̄_g‖² + 2b_α),   β_k ← (n − γ̂_k + 2a_β)/(‖y_k − Φ_kθ̄‖² + 2b_β),

    β_k only where the likelihood has a free noise precision (its β the starting
    value); others keep theirs. Pass a ``solve`` that keeps its random key fixed (common
    random numbers across steps) so the iteration settles on a fixed point.

    Args:
        solve: the E-step (``Solve``).
        problem: features, likelihood (starting β), prior (starting α), data and block
            size (``blm.solvers.problem.Problem``).
        loop: how the loop runs and stops (``LoopSettings``: max_iter, tol, progress,
            checkpointer, schedule, fixed groups, final solve).
        hyper: Gamma hyperpriors on α and β.
        estimator: γ̂'s form, ``"combined"``, ``"data"`` or ``"prior"`` (module docstring).
        evidence: ``evidence(prior, likelihood)``, where the caller can afford it (e.g.
            the dense closed form for small d), scores each step's hyperparameters; the
            scores land in the trajectory (``score``), NaN without it. EM itself never
            needs them.

    Returns:
        A ``HyperparameterFit`` (the posterior solved at the final α, β unless
        ``loop.final_solve`` declined it).

    Raises:
        HyperparameterRangeError: an update left (0, ∞), or gave NaN.

    Example:
        >>> fit = fit_mackay(solve, problem, LoopSettings(max_iter=20, tol=1e-6))  # doctest: +SKIP
    """
    features, likelihood, prior, dataset = problem.parts()

    def update(post, lik, p):
        new_alpha, new_beta, info = sample_mackay_step(
            post, features, lik, p, dataset, hyper, estimator, problem.block_size
        )
        if evidence is not None:
            info["score"] = evidence(p, lik)
        return new_alpha, new_beta, info

    return solve_and_update(solve, update, prior, likelihood, loop)
