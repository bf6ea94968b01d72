r"""Feature maps: the linear map Φ of the model, applied one batch of inputs at a time.

For a batch of inputs x_b (b rows) a feature map gives

    jvp(x_b, z) = φ(x_b) z        ∈ ℝ^{b×m}
    vjp(x_b, v) = φ(x_b)ᵀ v       ∈ ℝ^{d}   (summed over the rows of the batch)

on flat parameter vectors z ∈ ℝ^d. Both are linear in their second argument and
vmappable over a leading sample axis of it. ``linearize(x_b)`` returns the pair with
the primal work shared, so that k samples cost one primal pass per batch (for a
network this is ``jax.linearize``; for a design matrix there is no primal work), and
``linearize_many(x_b)`` the pair for k vectors at once, rows first ((b, k, m) outputs).

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

from blm._checks import positive, positive_int

FEATURE_BLOCK_BYTES = 1 << 28
"""Bytes of computed feature rows a full pass holds at once by default (256 MiB)."""


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

    def block_rows(self) -> int | None:
        """Default rows per block of a full pass (``blm.operators.block_rows``): a bound on
        the inputs whose features are computed at once, or None for no bound. Generic
        features (networks: activations and k + 1 tangents per row): 256."""
        return 256

    def linearize(
        self, inputs
    ) -> tuple[Float[Array, "b m"], Callable[[Array], Array], Callable[[Array], Array]]:
        """(offset, z ↦ φ(x_b) z, v ↦ φ(x_b)ᵀ v) with the primal work done once."""
        return self.offset(inputs), lambda z: self.jvp(inputs, z), lambda v: self.vjp(inputs, v)

    def linearize_many(
        self, inputs
    ) -> tuple[Float[Array, "b m"], Callable[[Array], Array], Callable[[Array], Array]]:
        """``linearize`` for k vectors at once, rows first: (offset,
        Z (k, d) ↦ [φ(x_i) z_j]_{i,j} (b, k, m), V (b, k, m) ↦ [Σ_i φ(x_i)ᵀ V_{i,j}]_j (k, d)).

        The full passes and the minibatch steps work in this layout: for a design matrix it
        is two plain matrix products, t(x_b) Zᵀ and Vᵀ t(x_b), with nothing transposed in
        between (``LinearFeatures``). Generic: ``linearize``'s pair vmapped over the
        sample axis."""
        f0, jvp, vjp = self.linearize(inputs)
        return f0, jax.vmap(jvp, out_axes=1), jax.vmap(vjp, in_axes=1)

    def _factor_row(self, x, L: Float[Array, "m m"]) -> Float[Array, "m d"]:
        """φ_iᵀL e_l for l = 1..m, one input x (one vjp per column of L)."""
        xi = jax.tree_util.tree_map(lambda a: a[None], x)
        return jax.vmap(lambda col: self.vjp(xi, col[None]))(L.T)

    def factor_rows(self, inputs, factor: Float[Array, "b m m"]) -> Float[Array, "b m d"]:
        """The rows φ_iᵀL_i e_l of every input i and column l of its factor L_i, so that
        Σ_i Σ_l r rᵀ = ΦᵀBΦ for B_i = L_iL_iᵀ (with L_i = I: the rows J(x_i)ᵀe_l)."""
        return jax.lax.map(lambda a: self._factor_row(*a), (inputs, factor))

    def sq_rows(self, inputs, factor: Float[Array, "b m m"]) -> Float[Array, " d"]:
        """Σ_i Σ_l (φ_iᵀ L_i e_l)², φ_i ∈ ℝ^{m×d} the Jacobian of input i and L_i a factor of
        B_i = L_i L_iᵀ: the diagonal of ΦᵀBΦ = Σ_i (L_iᵀφ_i)ᵀ(L_iᵀφ_i), also for a
        non-diagonal B (softmax). Generic: one vjp per row and column of L_i, one input's
        rows at a time (never b × m × d)."""
        rows_sq = jax.lax.map(
            lambda a: jnp.sum(self._factor_row(*a) ** 2, axis=0), (inputs, factor)
        )
        return jnp.sum(rows_sq, axis=0)

    def dense(self, inputs) -> Float[Array, "b m d"]:
        """φ(x_b) as an explicit (b, m, d) array, for small problems and oracles."""
        basis = jnp.eye(self.d, dtype=jnp.result_type(float))
        cols = jax.vmap(lambda e: self.jvp(inputs, e))(basis)  # (d, b, m)
        return jnp.moveaxis(cols, 0, -1)


def _n_rows(inputs) -> int:
    return int(jax.tree_util.tree_leaves(inputs)[0].shape[0])


def _sum_over_row_chunks(fn, *arrays, chunk: int = 1024):
    """Σ_c fn(*(a[c] for a in arrays)) over chunks c of ``chunk`` rows, so that fn's
    temporaries are chunk-sized: for fn = wᵀt², XLA would otherwise square every row of
    an in-memory design at once (n × p more memory; measured 20 000 × 10 000 float32:
    +763 MiB and 0.42 s whole, +39 MiB and 0.19 s in chunks of 1 024 rows)."""
    n = arrays[0].shape[0]
    full = n - n % chunk
    total = fn(*(a[full:] for a in arrays))
    if full:

        def body(acc, start):
            part = fn(*(jax.lax.dynamic_slice_in_dim(a, start, chunk) for a in arrays))
            return acc + part, None

        total = jax.lax.scan(body, total, jnp.arange(0, full, chunk))[0]
    return total


class DesignFeatures(Features):
    r"""A design with p columns and m outputs, φ(x) = I_m ⊗ t(x)ᵀ (abstract): the
    parameter vector θ ∈ ℝ^{m·p} is the row-major ravel of the (m, p) coefficient matrix
    Θ (one row of coefficients per output, as scikit-learn's ``coef_``), so
    φ(x_b) θ = t(x_b) Θᵀ and φ(x_b)ᵀ v = ravel(vᵀ t(x_b)). ``RowFeatures`` forms the rows
    t(x_b) of a batch; ``SparseLinearFeatures`` applies sparse rows without forming them.
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

    def groups_by_output(self) -> Int[Array, " d"]:
        """One prior group per output's coefficients."""
        return jnp.asarray(np.repeat(np.arange(self.n_outputs), self.n_inputs), jnp.int32)


class RowFeatures(DesignFeatures):
    r"""A design whose rows t(x_b) (b, p) are formed per batch by ``transform``
    (abstract): products, squared rows and the dense Jacobian from them."""

    @abc.abstractmethod
    def transform(self, inputs) -> Float[Array, "b p"]:
        """The design rows of a batch of inputs."""

    def block_rows(self) -> int | None:
        """Rows computed from raw inputs: as many as fit p numbers each, twice (the rows
        and their pre-activation), in ``FEATURE_BLOCK_BYTES``."""
        itemsize = jnp.dtype(jnp.result_type(float)).itemsize
        return max(1, FEATURE_BLOCK_BYTES // (2 * self.n_inputs * itemsize))

    def _jvp_rows(self, rows, z):
        return rows @ jnp.reshape(z, (self.n_outputs, self.n_inputs)).T

    def _vjp_rows(self, rows, v):
        return jnp.ravel(v.T @ rows)

    def jvp(self, inputs, z):
        return self._jvp_rows(self.transform(inputs), z)

    def vjp(self, inputs, v):
        return self._vjp_rows(self.transform(inputs), v)

    def linearize(self, inputs):
        rows = self.transform(inputs)  # computed once, shared by every z and v
        f0 = jnp.zeros((rows.shape[0], self.m), rows.dtype)
        return f0, lambda z: self._jvp_rows(rows, z), lambda v: self._vjp_rows(rows, v)

    def linearize_many(self, inputs):
        # (b, p)(p, k·m) and (k·m, b)(b, p) as two 2-D products, the b axis of V contracted
        # where it lies: vmapping the one-vector pair instead moves the sample axis to the
        # front between them (XLA then copies V and takes a slower product; a full pass over
        # 50 000 × 10 000 float32 rows with 17 vectors took 0.50 s that way, 0.36 s this way)
        rows = self.transform(inputs)
        f0 = jnp.zeros((rows.shape[0], self.m), rows.dtype)
        m, p = self.n_outputs, self.n_inputs

        def jvps(Z):
            if Z.ndim != 2 or Z.shape[1] != m * p:
                raise ValueError(f"Z must have shape (k, d) with d = {m * p}, got {Z.shape}")
            return (rows @ Z.reshape(-1, p).T).reshape(rows.shape[0], -1, m)

        def vjps(V):
            if V.ndim != 3 or V.shape[::2] != (rows.shape[0], m):
                raise ValueError(
                    f"V must have shape (b, k, m) with b = {rows.shape[0]}, m = {m}, got {V.shape}"
                )
            flat = V.reshape(V.shape[0], -1)  # (b, k·m)
            return jax.lax.dot_general(flat, rows, (((0,), (0,)), ((), ()))).reshape(-1, m * p)

        return f0, jvps, vjps

    def sq_rows(self, inputs, factor):
        # φ_iᵀL_i e_l = L_i[:, l] ⊗ t_i: output k's block gets Σ_l L_kl² t_i² = (B_i)_kk t_i²
        w = jnp.sum(factor**2, axis=-1)  # (b, m)
        return jnp.ravel(
            _sum_over_row_chunks(lambda wc, tc: wc.T @ tc**2, w, self.transform(inputs))
        )

    def dense(self, inputs):
        rows = self.transform(inputs)
        eye = jnp.eye(self.n_outputs, dtype=rows.dtype)
        return jnp.einsum("kl,bp->bklp", eye, rows).reshape(rows.shape[0], self.n_outputs, self.d)


class LinearFeatures(RowFeatures):
    r"""φ(x) = I_m ⊗ xᵀ: a design matrix with p columns and m outputs, the inputs being
    its rows (see ``DesignFeatures`` for θ's layout).

    Args:
        n_inputs: p, the design's columns.
        n_outputs: m, the outputs (θ holds m·p coefficients).

    Example:
        >>> import blm, jax.numpy as jnp
        >>> blm.LinearFeatures(3, 2).d
        6
    """

    def transform(self, inputs) -> Float[Array, "b p"]:
        """The design rows of a batch: the inputs themselves."""
        return inputs

    def block_rows(self) -> int | None:
        """None: the rows are the inputs (a block of an in-memory design would only copy
        it)."""
        return None


class SparseLinearFeatures(DesignFeatures):
    r"""A sparse design matrix with p columns and m outputs, φ(x) = I_m ⊗ t(x)ᵀ as in
    ``LinearFeatures``, where each input is a padded sparse row: r (column, value) pairs
    (b, r, 2), padding (0, 0) (``blm.csr.padded_rows``, ``SparseHDF5Dataset``).

    φ(x_b)θ gathers: (φ(x_b)θ)_{ik} = Σ_j v_ij Θ[k, c_ij]; φ(x_b)ᵀu scatter-adds:
    Θ̃[k, c_ij] += v_ij u_ik. Cost O(b·r·m) per batch plus O(d) for the output; the
    n × p design never exists. θ is the row-major ravel of Θ (m, p), as for
    ``LinearFeatures``.

    Centred (``x_offset`` = x̄ given): the rows are t_i = s_i (x_i − x̄), as a dense design
    is centred for an intercept, without filling them in. Each row then carries one more
    pair (p, s_i) (``blm.data.with_offset_pair``; s_i = 1, or √w_i under frequency
    weights, 0 for a padding row), read as a column p whose coefficient is −Θx̄:
    t_iΘᵀ = Σ_j v_ij Θ[:, c_ij] − s_i Θx̄, and the scatter's column p folds back as
    Θ̃ − Θ̃[:, p] x̄ᵀ. Cost O(m·p) more per batch.
    """

    x_offset: Float[Array, " p"] | None

    def __init__(self, n_inputs: int, n_outputs: int = 1, x_offset=None):
        super().__init__(n_inputs, n_outputs)
        if x_offset is not None:
            x_offset = jnp.asarray(x_offset, jnp.result_type(float))
            if x_offset.shape != (self.n_inputs,) or not bool(jnp.all(jnp.isfinite(x_offset))):
                raise ValueError(
                    f"x_offset must be {self.n_inputs} finite column means, got shape "
                    f"{x_offset.shape}"
                )
        self.x_offset = x_offset

    def block_rows(self) -> int | None:
        """None: a block costs b·r·m numbers, never b × p."""
        return None

    @staticmethod
    def _split(inputs):
        return inputs[..., 0].astype(jnp.int32), inputs[..., 1]

    def jvp(self, inputs, z):
        cols, vals = self._split(inputs)
        Z = jnp.reshape(z, (self.n_outputs, self.n_inputs))
        if self.x_offset is not None:  # column p: −Θx̄
            Z = jnp.concatenate([Z, -(Z @ self.x_offset)[:, None]], axis=1)
        return jnp.einsum("kbr,br->bk", Z[:, cols], vals)

    def _scatter(self, cols, weights):
        """Θ̃ (m, p) with Θ̃[k, c_ij] += weights[k, i, j] (column p folded back as −x̄ times
        its sum when centred), raveled."""
        return jnp.ravel(self._fold(self._scatter_wide(cols, weights)))

    def _scatter_wide(self, cols, weights):
        """Θ̃ (m, p), or (m, p + 1) with the offset pairs' column p when centred."""
        width = self.n_inputs + (self.x_offset is not None)
        out = jnp.zeros((self.n_outputs, width), weights.dtype)
        return out.at[:, cols].add(weights)

    def _fold(self, wide):
        if self.x_offset is None:
            return wide
        return wide[:, :-1] - wide[:, -1:] * self.x_offset

    def vjp(self, inputs, v):
        cols, vals = self._split(inputs)
        return self._scatter(cols, vals[None] * v.T[:, :, None])

    def sq_rows(self, inputs, factor):
        # Σ_i (B_i)_kk t_ij²; centred, t_ij = v_ij − s_i x̄_j expands to
        # Σ w v² − 2 x̄_j Σ w s v + x̄_j² Σ w s², each a scatter over the pairs
        cols, vals = self._split(inputs)
        w = jnp.sum(factor**2, axis=-1).T[:, :, None]  # (m, b, 1): (B_i)_kk
        squares = self._scatter_wide(cols, w * vals[None] ** 2)
        if self.x_offset is None:
            return jnp.ravel(squares)
        s = jnp.sum(jnp.where(cols == self.n_inputs, vals, 0.0), axis=-1)  # (b,) s_i
        cross = self._scatter_wide(cols, w * (vals * s[:, None])[None])[:, :-1]
        x = self.x_offset
        return jnp.ravel(squares[:, :-1] - 2.0 * x * cross + x**2 * squares[:, -1:])

    def dense(self, inputs):
        cols, vals = self._split(inputs)
        b = cols.shape[0]
        width = self.n_inputs + (self.x_offset is not None)
        rows = jnp.zeros((b, width), vals.dtype).at[jnp.arange(b)[:, None], cols].add(vals)
        rows = self._fold(rows)
        eye = jnp.eye(self.n_outputs, dtype=rows.dtype)
        return jnp.einsum("kl,bp->bklp", eye, rows).reshape(b, self.n_outputs, self.d)


class RandomFourierFeatures(RowFeatures):
    r"""φ(x) = √(2/D) cos(x Ω + b), Ω ~ N(0, ℓ⁻²I), b ~ U[0, 2π): D random features of an
    RBF kernel with lengthscale ℓ (Rahimi & Recht), computed batch by batch from the
    raw inputs x ∈ ℝ^p, so the n × D design is never held in memory.
    """

    omega: Float[Array, "p D"]
    phase: Float[Array, " D"]

    def __init__(
        self,
        key: jax.Array,
        n_raw: int,
        n_features: int,
        lengthscale: float = 1.0,
        n_outputs: int = 1,
    ):
        super().__init__(n_features, n_outputs)
        n_raw = positive_int(n_raw, "n_raw")
        lengthscale = float(positive(lengthscale, "lengthscale"))
        k1, k2 = jax.random.split(key)
        dtype = jnp.result_type(float)
        self.omega = jax.random.normal(k1, (n_raw, n_features), dtype) / lengthscale
        self.phase = jax.random.uniform(k2, (n_features,), dtype, 0.0, 2 * jnp.pi)

    def transform(self, inputs):
        return jnp.sqrt(2.0 / self.n_inputs) * jnp.cos(inputs @ self.omega + self.phase)
