r"""Evidence maximisation by gradient ascent on the log-hyperparameters (optax).

η = (log α_g, log β_k) follows Adam on the score

    S(η) = log p(Y | α, β) + Σ_g (a_α log α_g − b_α α_g) + Σ_k (a_β log β_k − b_β β_k)

(the Gamma hyperpriors of ``GammaHyperprior``; zero by default), whose η-gradient is the
evidence gradient plus a − b·exp(η). The evidence and its gradient come from an
``objective``: the dense closed form (small problems) or stochastic Lanczos quadrature
with θ̄ from any solver (``fit_evidence``). Optimising log α keeps α > 0 and makes the
steps scale-free. The gradient also gives the effective dimension for free:
∂ log p/∂ log α_g = ½(γ_g − α_g‖θ̄_g‖²), so γ_g = 2 ∂ log p/∂ log α_g + α_g‖θ̄_g‖²
(reported in the trajectory; MacKay's update is the fixed point of the same equation).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from blm._checks import positive
from blm.evidence.closed_form import GammaHyperprior
from blm.evidence.lanczos import SLQ, rademacher_probes, slq_log_evidence
from blm.evidence.loop import HyperparameterFit, LoopSettings, Solve, solve_and_update
from blm.operators import traced_blocks
from blm.solvers.problem import Problem

EVIDENCE_LOOP = LoopSettings(max_iter=200)
"""``fit_evidence``'s default loop: 200 steps at most, relative tolerance 1e-4."""

# objective(α, β) -> (log evidence, ∂/∂log α (G,), ∂/∂log β (m,), info)
Objective = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray, np.ndarray, dict]]


class AdamAscent:
    """One Adam step per call on (log α, log β): ``step(α, β, value, ∂log α, ∂log β)``
    returns the new (α, β) and the score S(η) at the input. The optimiser state lives
    between calls."""

    def __init__(
        self, alpha, beta, hyper: GammaHyperprior = GammaHyperprior(), learning_rate: float = 0.1
    ):
        self.hyper = hyper
        self.optimizer = optax.adam(float(positive(learning_rate, "learning_rate")))
        self.state = self.optimizer.init(self._eta(alpha, beta))

    @staticmethod
    def _eta(alpha, beta):
        return jnp.log(jnp.asarray(alpha, float)), jnp.log(jnp.asarray(beta, float))

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Adam's state as named arrays (for a checkpoint)."""
        return {f"adam_{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(self.state))}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Set Adam's state from ``state_arrays()`` output."""
        leaves, treedef = jax.tree.flatten(self.state)
        self.state = jax.tree.unflatten(
            treedef, [jnp.asarray(arrays[f"adam_{i}"], leaf.dtype) for i, leaf in enumerate(leaves)]
        )

    def step(self, alpha, beta, value: float, g_alpha, g_beta):
        """Ascend the score from (α, β) given the evidence's value and log-gradient."""
        h = self.hyper
        alpha, beta = np.asarray(alpha, float), np.asarray(beta, float)
        g_alpha = np.asarray(g_alpha) + h.alpha_shape - h.alpha_rate * alpha
        g_beta = np.asarray(g_beta) + h.beta_shape - h.beta_rate * beta
        eta = self._eta(alpha, beta)
        minus_grad = (-jnp.asarray(g_alpha), -jnp.asarray(g_beta))
        updates, self.state = self.optimizer.update(minus_grad, self.state, eta)
        new_log_alpha, new_log_beta = optax.apply_updates(eta, updates)
        score = value + float(h.log_density(jnp.asarray(alpha), jnp.asarray(beta)))
        return np.exp(np.asarray(new_log_alpha)), np.exp(np.asarray(new_log_beta)), score


def effective_dimension_from_gradient(g_alpha, alpha, mean_sq_by_group) -> np.ndarray:
    """γ_g = 2 ∂log p/∂log α_g + α_g‖θ̄_g‖² (exact where the gradient is)."""
    return 2 * np.asarray(g_alpha) + np.asarray(alpha) * np.asarray(mean_sq_by_group)


def fit_evidence(
    solve: Solve,
    problem: Problem,
    key: jax.Array,
    loop: LoopSettings = EVIDENCE_LOOP,
    *,
    slq: SLQ = SLQ(),
    hyper: GammaHyperprior = GammaHyperprior(),
    learning_rate: float = 0.1,
) -> HyperparameterFit:
    r"""Maximise the evidence over (α_g, β_k) by Adam on log-hyperparameters, with log det H
    by stochastic Lanczos quadrature and its exact adjoint gradient.

    Each step: ``solve(likelihood, prior, init)`` gives θ̄ (warm-started; its samples are
    not used here), ``slq_log_evidence`` the evidence

        log p(Y | α, β) = ½ Σ_g d_g log α_g + ½ n Σ_k log β_k − ½ log det H − ½ E(θ̄) − (nm/2) log 2π

    (E(θ̄) = Σ_k β_k‖y_k − Φ_kθ̄‖² + θ̄ᵀAθ̄) and its gradient at θ̄ with the same ``slq.n_probes`` Rademacher probes at every
    step (drawn from ``key``), then one Adam step. The trajectory's score is the SLQ
    evidence plus hyperprior, and its γ the effective dimension read off the gradient.

    Args:
        solve: the E-step (``Solve``).
        problem: features, a Gaussian likelihood (starting β), prior (starting α, every
            α_g > 0: the ascent works on log α), data and block size.
        key: the probes' key.
        loop: how the loop runs and stops (``LoopSettings``; default 200 steps, tol 1e-4).
            ``fixed`` groups keep the prior's α_g (> 0; a flat group needs ``fit_mackay``).
        slq: the quadrature's depth, probes and block size (``SLQ``).
        hyper: Gamma hyperpriors on α and β.
        learning_rate: Adam's step on log α, log β.

    Returns:
        A ``HyperparameterFit``.

    Raises:
        TypeError: a likelihood without a free noise precision.
        ValueError: a flat prior group.

    Example:
        >>> fit = fit_evidence(solve, problem, jax.random.PRNGKey(1))  # doctest: +SKIP
    """
    features, likelihood, prior, dataset = problem.parts()
    if likelihood.noise_precision is None:
        raise TypeError(
            f"likelihood: evidence ascent fits a Gaussian noise precision, got "
            f"{type(likelihood).__name__}; use fit_mackay for other likelihoods"
        )
    if prior.has_flat:
        raise ValueError(
            "prior: evidence ascent works on log α and cannot hold a flat group (alpha 0); "
            "use MacKay's updates (fit_mackay, hyper='mackay')"
        )
    probes = rademacher_probes(key, slq.n_probes, prior.d)
    blocks = traced_blocks(features, dataset, slq.block_size)
    ascent = AdamAscent(prior.alpha, likelihood.beta, hyper, learning_rate)
    if loop.checkpointer is not None and loop.checkpointer.resumed is not None:
        ascent.restore(loop.checkpointer.resumed.extra)

    def update(post, lik, p):
        value, g_alpha, g_beta, info = slq_log_evidence(
            features, lik, p, dataset, post.mean, probes, slq, blocks
        )
        new_alpha, new_beta, score = ascent.step(p.alpha, lik.beta, value, g_alpha, g_beta)
        gamma = effective_dimension_from_gradient(g_alpha, p.alpha, p.group_sum(post.mean**2))
        return (
            new_alpha,
            new_beta,
            {
                "score": score,
                "gamma": float(np.sum(gamma)),
                "data_fit": float(np.sum(np.asarray(lik.beta) * info["residual_sq"])),
            },
        )

    return solve_and_update(solve, update, prior, likelihood, loop, ascent.state_arrays)
