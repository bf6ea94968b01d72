r"""MAP training of an Equinox network under the same model the Laplace step assumes:

    w̄ = argmin_w  −Σ_i log p(y_i | f(w, x_i)) + ½ α ‖w‖²,

by minibatched Adam (optax) with the data term rescaled by n/b, so that the
linearised posterior is centred at a mode of the posterior it approximates.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from blm._checks import as_float_array, positive, positive_int
from blm.likelihoods import Likelihood


def train_map(
    model: eqx.Module,
    X,
    y,
    likelihood: Likelihood,
    key: jax.Array,
    alpha: float = 1.0,
    n_steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
) -> eqx.Module:
    """The network after ``n_steps`` Adam steps on the negative log joint (see module
    docstring); its floating-point arrays are the trained parameters."""
    X = jnp.asarray(as_float_array(X, "X"))
    Y = jnp.asarray(likelihood.encode_targets(y), X.dtype)
    n = X.shape[0]
    batch_size = min(positive_int(batch_size, "batch_size"), n)
    positive_int(n_steps, "n_steps")
    alpha = float(positive(alpha, "alpha"))
    optimizer = optax.adam(float(positive(learning_rate, "learning_rate")))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, xb, yb):
        net = eqx.combine(p, static)
        f = jax.vmap(net)(xb).reshape(yb.shape)
        sq = sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(p))
        return -n / xb.shape[0] * likelihood.log_likelihood(f, yb) + 0.5 * alpha * sq

    @jax.jit
    def run(p, state, key):
        def step(carry, k):
            p, state = carry
            idx = jax.random.choice(k, n, (batch_size,), replace=False)
            g = jax.grad(loss)(p, X[idx], Y[idx])
            updates, state = optimizer.update(g, state, p)
            return (optax.apply_updates(p, updates), state), None

        (p, state), _ = jax.lax.scan(step, (p, state), jax.random.split(key, n_steps))
        return p

    params = run(params, optimizer.init(params), key)
    return eqx.combine(params, static)
