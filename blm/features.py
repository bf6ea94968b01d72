r"""Feature maps: the linear map Φ of the model, applied one batch of inputs at a time.

For a batch of inputs x_b (b rows) a feature map gives

    jvp(x_b, z) = φ(x_b) z        ∈ ℝ^{b×m}
    vjp(x_b, v) = φ(x_b)ᵀ v       ∈ ℝ^{d}   (summed over the rows of the batch)

on flat parameter vectors z ∈ ℝ^d. Both are linear in their second argument and
vmappable over a leading sample axis of it. ``linearize(x_b)`` returns the pair with
the primal work shared, so that k samples cost one primal pass per batch (for a
network this is ``jax.linearize``; for a design matrix there is no primal work).

Where the rows come from (memory or an HDF5 file) is the job of ``blm.data``; the
feature map only says how a batch of rows acts on parameters.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from blm._checks import positive_int


class Features(eqx.Module):
    """Interface of a feature map φ: inputs ↦ (m × d) matrices, applied matrix-free."""

    @property
    @abc.abstractmethod
    def d(self) -> int:
        """Number of parameters."""

    @property
    @abc.abstractmethod
    def m(self) -> int:
        """Number of outputs per input."""

    @abc.abstractmethod
    def jvp(self, inputs, z: Float[Array, " d"]) -> Float[Array, "b m"]:
        """φ(x_b) z."""

    @abc.abstractmethod
    def vjp(self, inputs, v: Float[Array, "b m"]) -> Float[Array, " d"]:
        """φ(x_b)ᵀ v = Σ_i φ(x_i)ᵀ v_i."""

    def offset(self, inputs) -> Float[Array, "b m"]:
        """The model's output at the expansion point (zero for a plain design matrix)."""
        return jnp.zeros((_n_rows(inputs), self.m))

    def groups(self) -> Int[Array, " d"]:
        """Default group index per coordinate for per-group priors (one group)."""
        return jnp.zeros(self.d, jnp.int32)

    def linearize(
        self, inputs
    ) -> tuple[Float[Array, "b m"], Callable[[Array], Array], Callable[[Array], Array]]:
        """(offset, z ↦ φ(x_b) z, v ↦ φ(x_b)ᵀ v) with the primal work done once."""
        return self.offset(inputs), lambda z: self.jvp(inputs, z), lambda v: self.vjp(inputs, v)

    def dense(self, inputs) -> Float[Array, "b m d"]:
        """φ(x_b) as an explicit (b, m, d) array, for small problems and oracles."""
        basis = jnp.eye(self.d, dtype=jnp.result_type(float))
        cols = jax.vmap(lambda e: self.jvp(inputs, e))(basis)  # (d, b, m)
        return jnp.moveaxis(cols, 0, -1)


def _n_rows(inputs) -> int:
    return int(jax.tree_util.tree_leaves(inputs)[0].shape[0])


class LinearFeatures(Features):
    r"""φ(x) = I_m ⊗ xᵀ: a design matrix with p columns and m outputs.

    The parameter vector θ ∈ ℝ^{m·p} is the row-major ravel of the (m, p) coefficient
    matrix Θ (one row of coefficients per output, as scikit-learn's ``coef_``), so
    φ(x_b) θ = x_b Θᵀ and φ(x_b)ᵀ v = ravel(vᵀ x_b).
    """

    n_inputs: int = eqx.field(static=True)
    n_outputs: int = eqx.field(static=True)

    def __init__(self, n_inputs: int, n_outputs: int = 1):
        self.n_inputs = positive_int(n_inputs, "n_inputs")
        self.n_outputs = positive_int(n_outputs, "n_outputs")

    @property
    def d(self) -> int:
        return self.n_inputs * self.n_outputs

    @property
    def m(self) -> int:
        return self.n_outputs

    def jvp(self, inputs, z):
        return inputs @ jnp.reshape(z, (self.n_outputs, self.n_inputs)).T

    def vjp(self, inputs, v):
        return jnp.ravel(v.T @ inputs)

    def dense(self, inputs):
        eye = jnp.eye(self.n_outputs, dtype=inputs.dtype)
        return jnp.einsum("kl,bp->bklp", eye, inputs).reshape(
            inputs.shape[0], self.n_outputs, self.d
        )

    def groups_by_output(self) -> Int[Array, " d"]:
        """One prior group per output's coefficients."""
        return jnp.asarray(np.repeat(np.arange(self.n_outputs), self.n_inputs), jnp.int32)
