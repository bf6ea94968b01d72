r"""MAP training of an Equinox network under the same model the Laplace step assumes:

    w̄ = argmin_w  −Σ_i log p(y_i | f(w, x_i)) + ½ Σ_j α_j w_j²,

by minibatched Adam (optax) with the data term rescaled by n/b, so that the
linearised posterior is centred at a mode of the posterior it approximates. The
precision is one α for every weight, or one per weight (e.g. per layer: α_j = α_{g(j)}
for the prior groups g of ``NetworkFeatures``), in the order the network's
floating-point leaves flatten (leaf after leaf, pytree order, as ``NetworkFeatures.w``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import ArrayLike, Float

from blm._checks import as_float_array, positive, positive_int
from blm.likelihoods import Likelihood
from blm.network import NetworkFeatures


def train_map(
    model: eqx.Module,
    X,
    y,
    likelihood: Likelihood,
    key: jax.Array,
    alpha: float | Float[ArrayLike, " d"] = 1.0,
    n_steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
) -> eqx.Module:
    """The network after ``n_steps`` Adam steps on the negative log joint (see module
    docstring); its floating-point arrays are the trained parameters. ``alpha``: a
    scalar, or a vector of the d per-weight precisions."""
    X = jnp.asarray(as_float_array(X, "X"))
    Y = jnp.asarray(likelihood.encode_targets(y), X.dtype)
    n = X.shape[0]
    batch_size = min(positive_int(batch_size, "batch_size"), n)
    positive_int(n_steps, "n_steps")
    optimizer = optax.adam(float(positive(learning_rate, "learning_rate")))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    precision = _precision_tree(model, X.shape[1:], positive(alpha, "alpha"))

    def loss(p, xb, yb):
        net = eqx.combine(p, static)
        f = jax.vmap(net)(xb).reshape(yb.shape)
        sq = jax.tree_util.tree_map(lambda a, leaf: jnp.sum(a * leaf**2), precision, p)
        return -n / xb.shape[0] * likelihood.log_likelihood(f, yb) + 0.5 * sum(
            jax.tree_util.tree_leaves(sq)
        )

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


def _precision_tree(model: eqx.Module, input_shape: tuple[int, ...], alpha: np.ndarray):
    """α shaped like the network's floating-point parameters: a size-1 α on every weight,
    or the (d,) vector cut into leaves exactly as ``NetworkFeatures`` cuts w."""
    features = NetworkFeatures(model, input_shape)
    if alpha.size != 1 and alpha.shape != (features.d,):
        raise ValueError(
            f"alpha must be a scalar or one precision per weight, shape ({features.d},), "
            f"got {alpha.shape}"
        )
    flat = jnp.broadcast_to(jnp.asarray(alpha.ravel(), features.w.dtype), (features.d,))
    return eqx.filter(features.model(flat), eqx.is_inexact_array)
