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
    precision = _precision_tree(params, positive(alpha, "alpha"))

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


def _precision_tree(params, alpha: np.ndarray):
    """α shaped like ``params``: one scalar per leaf (α of size 1, e.g. a scalar prior's
    ``post.alpha``), or the (d,) vector cut into leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if alpha.size == 1:
        return jax.tree_util.tree_unflatten(treedef, [float(alpha.item())] * len(leaves))
    d = sum(leaf.size for leaf in leaves)
    if alpha.shape != (d,):
        raise ValueError(
            f"alpha must be a scalar or one precision per weight, shape ({d},), got {alpha.shape}"
        )
    cuts = np.cumsum([leaf.size for leaf in leaves])[:-1]
    parts = np.split(alpha, cuts)
    return jax.tree_util.tree_unflatten(
        treedef,
        [
            jnp.asarray(a, leaf.dtype).reshape(leaf.shape)
            for a, leaf in zip(parts, leaves, strict=True)
        ],
    )
