r"""A trained Equinox network as a feature map: φ(x) = ∂f(w, x)/∂w at the trained w̄.

The network's floating-point parameters (selected by ``filter_spec``, by default
``eqx.is_inexact_array``) are flattened once into one vector w̄ ∈ ℝ^d, leaf after leaf in
pytree order; the rest of the module (activations, integer buffers, frozen leaves) is
held fixed. For a batch x_b,

    jvp(x_b, z) = ∂/∂ε f(w̄ + εz, x_b)        (forward mode, (b, m))
    vjp(x_b, v) = (∂f(w̄, x_b)/∂w)ᵀ v          (reverse mode, (d,))

and ``linearize(x_b)`` runs the network once (``jax.linearize``) and returns f(w̄, x_b)
with the linear maps z ↦ J z and its transpose v ↦ Jᵀ v (``jax.linear_transpose``), so
k samples share one primal pass and the Jacobian J (b·m × d) is never formed.

The model maps one input to its output (Equinox's convention); batches are vmapped.
Each layer (the leaves sharing a parent path, e.g. ``.layers[0].weight`` and
``.layers[0].bias``) is one prior group (``groups``, named in ``group_names``), for
per-layer priors.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from blm.features import Features


def _call(model, x):
    return model(x)


def _reject_integer_parameters(model) -> None:
    """With the default filter an integer array would silently be held fixed: refuse it."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(model)[0]:
        if isinstance(leaf, jax.Array | np.ndarray) and not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise TypeError(
                f"model parameter {jax.tree_util.keystr(path)} has dtype {leaf.dtype}: integer "
                "leaves cannot be linearised; cast them to float, or pass a filter_spec that "
                "leaves them out (they are then held fixed)"
            )


def _layer(leaf_name: str) -> str:
    """The parent path of a leaf: ``.layers[0].weight`` → ``.layers[0]``; a Flax NNX
    variable's payload ``['l1']['kernel'].value`` → ``['l1']``."""
    name = leaf_name.removesuffix(".value")
    return name[: max(name.rfind("."), name.rfind("["))] or name


class NetworkFeatures(Features):
    """The Jacobian features of ``apply(model, x)`` at the model's current parameters."""

    w: Float[Array, " d"]
    static: Any
    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    leaf_names: tuple[str, ...] = eqx.field(static=True)
    input_shape: tuple[int, ...] = eqx.field(static=True)
    output_shape: tuple[int, ...] = eqx.field(static=True)
    apply: Callable = eqx.field(static=True)

    def __init__(
        self,
        model: eqx.Module,
        input_shape: tuple[int, ...],
        filter_spec=eqx.is_inexact_array,
        apply: Callable | None = None,
        input_dtype=None,
    ):
        """``input_shape``: the shape of one input; ``apply(model, x)`` (default
        ``model(x)``) maps one input to the output whose size is m; ``input_dtype``: the
        inputs' dtype, which the parameters are promoted to where it is wider (float32
        weights with float64 inputs are linearised in float64, as precision follows the
        input)."""
        if filter_spec is eqx.is_inexact_array:
            _reject_integer_parameters(model)
        params, static = eqx.partition(model, filter_spec)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
        if not with_paths:
            raise TypeError(
                "model has no floating-point parameters to linearise (filter_spec selected none)"
            )
        leaves = [jnp.asarray(leaf) for _, leaf in with_paths]
        for (path, _), leaf in zip(with_paths, leaves, strict=True):
            if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                raise TypeError(
                    f"model parameter {jax.tree_util.keystr(path)} has dtype {leaf.dtype}; "
                    "only floating-point leaves can be linearised (exclude it with filter_spec)"
                )
        dtype = jnp.result_type(*leaves)
        if input_dtype is not None:
            dtype = jnp.result_type(dtype, input_dtype)
        self.w = jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in leaves])
        self.static = static
        self.treedef = treedef
        self.shapes = tuple(tuple(leaf.shape) for leaf in leaves)
        self.leaf_names = tuple(jax.tree_util.keystr(path) for path, _ in with_paths)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.apply = _call if apply is None else apply
        x = jax.ShapeDtypeStruct(self.input_shape, dtype)
        try:
            out = jax.eval_shape(lambda w, x: self.apply(self.model(w), x), self.w, x)
        except Exception as err:
            raise ValueError(
                f"model cannot be applied to one input of shape {self.input_shape}: {err}"
            ) from err
        self.output_shape = tuple(out.shape)

    # -- the network as a function of its flat parameters ------------------------
    def model(self, w: Float[Array, " d"] | None = None) -> eqx.Module:
        """The network with parameters ``w`` (default: the expansion point w̄)."""
        w = self.w if w is None else w
        cuts = np.cumsum([math.prod(s) for s in self.shapes])[:-1]
        leaves = [
            jnp.reshape(part, shape)
            for part, shape in zip(jnp.split(w, cuts), self.shapes, strict=True)
        ]
        return eqx.combine(jax.tree_util.tree_unflatten(self.treedef, leaves), self.static)

    def forward(self, w: Float[Array, " d"], inputs) -> Float[Array, "b m"]:
        """f(w, x_b) for a batch, as (b, m)."""
        model = self.model(w)
        out = jax.vmap(lambda x: self.apply(model, x))(inputs)
        return jnp.reshape(out, (out.shape[0], self.m))

    # -- the Features contract --------------------------------------------------
    @property
    def d(self) -> int:
        return int(self.w.shape[0])

    @property
    def m(self) -> int:
        return math.prod(self.output_shape)

    def offset(self, inputs):
        return self.forward(self.w, inputs)

    def jvp(self, inputs, z):
        return jax.jvp(lambda w: self.forward(w, inputs), (self.w,), (z.astype(self.w.dtype),))[1]

    def vjp(self, inputs, v):
        _, pullback = jax.vjp(lambda w: self.forward(w, inputs), self.w)
        return pullback(v.astype(self.w.dtype))[0]

    def linearize(self, inputs):
        f0, jvp = jax.linearize(lambda w: self.forward(w, inputs), self.w)
        transpose = jax.linear_transpose(jvp, self.w)
        return f0, jvp, lambda v: transpose(v.astype(f0.dtype))[0]

    @property
    def leaf_layers(self) -> tuple[str, ...]:
        """The layer of each leaf: its path without the last key (``.layers[0].weight``
        and ``.layers[0].bias`` are in layer ``.layers[0]``)."""
        return tuple(_layer(name) for name in self.leaf_names)

    @property
    def group_names(self) -> tuple[str, ...]:
        """The layers, in order of first appearance."""
        return tuple(dict.fromkeys(self.leaf_layers))

    def groups(self) -> Int[Array, " d"]:
        """One prior group per layer (its weight and bias together): a bias alone is too
        few numbers for a stable per-group evidence update."""
        names = self.group_names
        index = [names.index(layer) for layer in self.leaf_layers]
        sizes = [math.prod(s) for s in self.shapes]
        return jnp.asarray(np.repeat(index, sizes), jnp.int32)

    # -- identity of the model -----------------------------------------------------
    def structure_hash(self) -> str:
        """A hash of the parameters' tree structure, leaf shapes and the output shape:
        equal for two instances of one architecture, different otherwise."""
        text = repr((str(self.treedef), self.shapes, self.input_shape, self.output_shape))
        return hashlib.sha256(text.encode()).hexdigest()

    def weights_hash(self) -> str:
        """A hash of the expansion point w̄ itself."""
        return hashlib.sha256(np.asarray(self.w).tobytes()).hexdigest()

    def activation_size(self) -> int:
        """Numbers produced by one forward pass on one input (the intermediates a
        ``linearize`` keeps, and each tangent carries), from the traced program."""
        x = jax.ShapeDtypeStruct(self.input_shape, self.w.dtype)
        model = self.model()  # closed over: its weights are constants, not traced work
        jaxpr = jax.make_jaxpr(lambda x: self.apply(model, x))(x)
        return int(
            sum(
                math.prod(v.aval.shape)
                for eqn in jaxpr.jaxpr.eqns
                for v in eqn.outvars
                if hasattr(v.aval, "shape")
            )
        )
