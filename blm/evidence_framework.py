r"""MacKay's evidence framework for a network: its weights and its prior precision together.

Linearised Laplace takes the trained weights w̄ to be the mode of p(w | D, α) for the α it
is given. A network trained at one weight decay α_t and handed to EM breaks that as soon
as EM moves α: with ``centre="map"`` the update α = γ/‖w̄‖² settles where ‖w̄‖ (set by
α_t) says, and with ``centre="linear"`` the linear model's own mean can shrink faster
than γ so that α runs away. MacKay (1992) fits both, alternating

    w̄ ← argmin_w −Σ_i log p(y_i | f(w, x_i)) + ½ α ‖w‖²     (``train_map``, warm-started)
    α ← γ(α) / ‖w̄‖²,   γ = Tr(H⁻¹ G) from the samples            (``LinearisedModel.fit``)

until the α the evidence asks for is the one the network was trained at (within ``tol``):
a joint fixed point, where w̄ is the mode under the prior whose precision the evidence
picks and the Laplace approximation is centred where it assumes. A Gaussian likelihood's
noise precision β is refitted with α and the next round trains at it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import equinox as eqx
import jax
import numpy as np

from blm._checks import positive, positive_int
from blm._progress import close, progress_bar
from blm.exceptions import warn
from blm.laplace import LaplacePosterior, LinearisedModel, linearise
from blm.laplace_settings import EMOptions, Hyperparameters, Training, WarmStart
from blm.likelihoods import Likelihood
from blm.rules import MacKay
from blm.training import train_map

DEFAULT_TRAINING = Training()
DEFAULT_EM = EMOptions()


@dataclass
class EvidenceFit:
    """The network trained at the final α, its linearisation and linearised posterior, the
    α of each training round (``alphas[0]`` the starting one) and whether the rounds
    converged."""

    model: eqx.Module
    linearised: LinearisedModel
    posterior: LaplacePosterior
    alphas: list[float] = field(default_factory=list)
    converged: bool = False


def train_with_evidence(
    model: eqx.Module,
    data: tuple,
    likelihood: Likelihood,
    key: jax.Array,
    *,
    alpha: float = 1.0,
    rounds: int = 8,
    tol: float = 0.05,
    training: Training = DEFAULT_TRAINING,
    em: EMOptions = DEFAULT_EM,
    progress: bool = False,
) -> EvidenceFit:
    """MacKay's evidence framework for a network: train it at α, fit α to the evidence,
    retrain at the new α, until the two agree (module docstring).

    Trains ``model`` at ``alpha`` (``training.first_steps`` Adam steps), then up to
    ``rounds`` times: linearise, fit α (and β) by ``em.em_steps`` MacKay steps
    (``LinearisedModel.fit`` with the ``em`` settings; centred at the MAP by default) and,
    unless that α is within ``tol`` (relative) of the one just trained at, retrain from
    the current weights at the new α for ``training.steps`` steps. From the second round
    on the samples warm-start from the previous round's, so their SGD steps accumulate
    across rounds; a round that retrains skips the solve at its fitted α (the next
    round's first E-step solves there around the retrained w̄ anyway). A scalar α only:
    with one α per layer the rounds did not settle in our tests (ReLU layers trade scale,
    and the evidence follows the trade).

    Args:
        model: the Equinox network (its floating-point arrays are the weights).
        data: (X, y) training inputs and targets.
        likelihood: ``blm.Gaussian(β)`` (β refitted each round), ``Bernoulli`` or
            ``Categorical``.
        key: training and sampling key.
        alpha: the weight decay α > 0 the first training uses.
        rounds: training rounds at most (≥ 1).
        tol: the relative distance between the α trained at and the α fitted that ends
            the rounds.
        training: ``blm.Training(first_steps, steps, batch_size, learning_rate)``.
        em: ``blm.EMOptions(n_samples, solver, hyper, em_steps, tol, memory_limit)``:
            each round's fit (``em_steps=3`` by default; ``solver="exact"`` for exact
            MacKay steps on the dense GGN of a small network).
        progress: one bar over the rounds (with the latest α).

    Returns:
        An ``EvidenceFit``: the network trained at the final α, its linearisation and
        posterior, the α of each round and whether the rounds converged.

    Raises:
        ValueError: ``alpha``, ``rounds`` or ``tol`` out of range.
        TypeError: ``training`` or ``em`` of another type.

    Warns when ``rounds`` end before the fixed point.

    Example:
        >>> fit = blm.train_with_evidence(net, (X, y), blm.Gaussian(1.0), key)  # doctest: +SKIP
    """
    positive(alpha, "alpha")
    positive_int(rounds, "rounds")
    positive(tol, "tol")
    for value, name, kind in ((training, "training", Training), (em, "em", EMOptions)):
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be blm.{kind.__name__}(...), got {value!r}")
    X, y = data
    hyper = MacKay(centre="map") if em.hyper is None else em.hyper
    fit_options = {
        "n_samples": em.n_samples,
        "solver": em.solver,
        "hyper": hyper,
        "em_steps": em.em_steps,
        "tol": em.tol,
        "memory_limit": em.memory_limit,
    }
    train_options = {"batch_size": training.batch_size, "learning_rate": training.learning_rate}
    k_train, k_fit = jax.random.split(key)
    alpha, beta = float(alpha), None
    alphas = [alpha]
    net = train_map(
        model, X, y, likelihood, k_train, alpha=alpha, n_steps=training.first_steps, **train_options
    )
    bar = progress_bar(progress, rounds, "evidence rounds", "round")
    post = None
    for r in range(rounds):
        lm = linearise(net, (X, y), likelihood)

        def settled(fitted, _beta, trained_at=alpha):
            return abs(float(fitted[0]) - trained_at) <= tol * trained_at

        with warnings.catch_warnings():  # one round's EM need not converge: the rounds do
            warnings.simplefilter("ignore", UserWarning)
            post = lm.fit(
                key=k_fit,
                start=Hyperparameters(alpha=alpha, beta=beta),
                warm=WarmStart(
                    samples=None if post is None else post.samples,
                    final_solve=True if r == rounds - 1 else settled,
                ),
                **fit_options,
            )
        new = float(post.alpha[0])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(alpha=f"{new:.4g}")
        if settled(post.alpha, post.beta):
            close(bar)
            return EvidenceFit(net, lm, post, alphas, True)
        if r == rounds - 1:
            break
        alpha = new
        alphas.append(alpha)
        if likelihood.noise_precision is not None:
            beta = float(np.mean(post.beta))
            likelihood = likelihood.with_beta(post.beta)
        net = train_map(
            net,
            X,
            y,
            likelihood,
            jax.random.fold_in(k_train, r + 1),
            alpha=alpha,
            n_steps=training.steps,
            **train_options,
        )
    close(bar)
    warn(
        f"the evidence framework did not reach its fixed point in rounds={rounds}: the last "
        f"round trained at alpha {alpha:.4g} and EM asked for {new:.4g}; raise rounds"
    )
    return EvidenceFit(net, lm, post, alphas, False)
