"""``linearise`` of any JAX model: a pytree of parameters with ``apply(params, x)``.
Flax linen and Flax NNX versions of an Equinox MLP, with the Equinox weights copied,
give the same posterior (per-layer α, β, predictive) to 1e-10 in float64."""

import equinox as eqx
import jax
import numpy as np
import pytest
from flax import linen, nnx  # the dev extra installs flax

import blm


@pytest.fixture(scope="module")
def problem():
    X = np.random.default_rng(0).standard_normal((60, 3))
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    mlp = eqx.nn.MLP(3, 1, 8, 1, key=jax.random.PRNGKey(0))
    ref = _fit(mlp, X, y)
    return X, y, mlp, ref


def _fit(model, X, y, apply=None):
    lm = blm.linearise(model, (X, y), blm.Gaussian(4.0), apply=apply)
    return lm, lm.fit(
        solver="exact", em_steps=200, tol=1e-12, start=blm.Hyperparameters(per_layer=True)
    )


def _same(ref, other, X):
    (lm0, a), (lm1, b) = ref, other
    assert lm1.features.d == lm0.features.d == 3 * 8 + 8 + 8 + 1
    assert len(lm1.features.group_names) == 2  # one group per layer: weight and bias together
    np.testing.assert_allclose(b.alpha, a.alpha, rtol=1e-10)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-10)
    for got, want in zip(b.predict(X[:7]), a.predict(X[:7]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.log_evidence, a.log_evidence, rtol=1e-10)


def test_flax_linen_variables_with_apply(problem):
    X, y, mlp, ref = problem

    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x):
            h = jax.nn.relu(linen.Dense(8, name="hidden")(x))
            return linen.Dense(1, name="out")(h)

    module = MLP()
    shapes = jax.tree_util.tree_map(np.shape, module.init(jax.random.PRNGKey(1), X[0]))
    first, last = mlp.layers
    variables = {
        "params": {
            "hidden": {"kernel": first.weight.T, "bias": first.bias},  # linen: (in, out)
            "out": {"kernel": last.weight.T, "bias": last.bias},
        }
    }
    assert jax.tree_util.tree_map(np.shape, variables) == shapes
    _same(ref, _fit(variables, X, y, apply=module.apply), X)


def test_flax_nnx_state_with_apply(problem):
    X, y, mlp, ref = problem

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(3, 8, param_dtype=np.float64, rngs=rngs)
            self.out = nnx.Linear(8, 1, param_dtype=np.float64, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))

    model = MLP(nnx.Rngs(0))
    first, last = mlp.layers
    model.hidden.kernel[...], model.hidden.bias[...] = first.weight.T, first.bias
    model.out.kernel[...], model.out.bias[...] = last.weight.T, last.bias
    graphdef, state = nnx.split(model)
    fitted = _fit(state, X, y, apply=lambda s, x: nnx.merge(graphdef, s)(x))
    assert fitted[0].features.group_names == ("['hidden']", "['out']")
    _same(ref, fitted, X)


def test_a_dict_of_arrays_with_apply_and_a_wrong_apply_is_named(problem):
    X, y, mlp, ref = problem
    first, last = mlp.layers
    params = {"a": {"w": first.weight, "b": first.bias}, "z": {"w": last.weight, "b": last.bias}}

    def apply(p, x):
        return p["z"]["w"] @ jax.nn.relu(p["a"]["w"] @ x + p["a"]["b"]) + p["z"]["b"]

    _same(ref, _fit(params, X, y, apply=apply), X)
    with pytest.raises(ValueError, match="model cannot be applied"):
        blm.linearise(params, (X, y), blm.Gaussian(4.0), apply=lambda p, x: p["missing"])


def test_float32_weights_with_float64_inputs_are_linearised_in_float64(problem):
    """A model initialised in float32 (Flax's default) fitted to float64 data: its weights
    are promoted, not the data cut, and the fit is the float64 network's with the same
    (float32-representable) weights."""
    X, y, mlp, _ = problem

    def cast(tree, dtype):
        return jax.tree_util.tree_map(
            lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree
        )

    as32 = cast(mlp, np.float32)
    same64 = cast(as32, np.float64)
    lm, post = _fit(as32, X, y)
    assert lm.features.w.dtype == np.float64
    _same(_fit(same64, X, y), (lm, post), X)
