r"""Gaussian priors θ ~ N(0, A⁻¹) with a diagonal precision A.

One class covers the three cases of the design: a scalar α (one group holding every
coordinate), a per-group α_g (a group index per coordinate, e.g. one group per
network layer), and a fully diagonal prior (one group per coordinate). The
precision of coordinate i is ``alpha[groups[i]]``.

α_g = 0 is a flat (improper) prior: group g's coordinates are unpenalised, as an
intercept is, and H = ΦᵀBΦ + A must then be positive definite through the data (their
columns of Φ linearly independent). A flat group has no prior draws and no A⁻¹ there;
log det A sums over the proper groups only, so the evidence is defined up to the flat
prior's constant, and it is then the restricted (REML) likelihood of the other
hyperparameters: the flat coefficients are integrated out (Harville 1974).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from blm._checks import as_float_array, non_negative, positive, positive_int


def log_proper(alpha: Float[Array, " G"]) -> Float[Array, " G"]:
    """log α where α > 0, and 0 where α = 0 (a flat group, which has no log-density
    term); its gradient is finite there too."""
    flat = alpha == 0
    return jnp.where(flat, 0.0, jnp.log(jnp.where(flat, 1.0, alpha)))


class Prior(eqx.Module):
    r"""Diagonal Gaussian prior N(0, A⁻¹), A = diag(α_{g(i)}).

    Args:
        alpha: precision per group, shape ``(G,)``, each ≥ 0 (0: flat), at least one > 0.
        groups: group index of each coordinate, shape ``(d,)``, values in ``[0, G)``,
            every group non-empty.

    Attributes:
        alpha: precision per group, shape ``(G,)``.
        groups: group index of each coordinate, shape ``(d,)``.

    Raises:
        ValueError: ``alpha`` negative, non-finite or all zero; ``groups`` empty, out of
            range or leaving a group empty. TypeError: ``groups`` not integers.

    Example:
        >>> import blm
        >>> blm.Prior([1.0, 0.0], [0, 0, 1]).precision().tolist()
        [1.0, 1.0, 0.0]
    """

    alpha: Float[Array, " G"]
    groups: Int[Array, " d"]
    n_groups: int = eqx.field(static=True)

    def __init__(self, alpha, groups):
        groups_np = np.asarray(groups)
        if groups_np.ndim != 1 or groups_np.size == 0:
            raise ValueError(
                f"groups must be a non-empty 1-D index array, got shape {groups_np.shape}"
            )
        if not np.issubdtype(groups_np.dtype, np.integer):
            raise TypeError(f"groups must hold integers, got dtype {groups_np.dtype}")
        alpha_np = non_negative(alpha, "alpha").reshape(-1)
        if not np.any(alpha_np > 0):
            raise ValueError(
                "alpha: at least one group needs a proper prior (alpha > 0); 0 marks a flat "
                "(unpenalised) group"
            )
        n_groups = alpha_np.shape[0]
        if groups_np.min() < 0 or groups_np.max() >= n_groups:
            raise ValueError(
                f"groups must index into alpha's {n_groups} group(s), got values in "
                f"[{groups_np.min()}, {groups_np.max()}]"
            )
        counts = np.bincount(groups_np, minlength=n_groups)
        if np.any(counts == 0):
            raise ValueError(f"groups leaves group(s) {np.flatnonzero(counts == 0).tolist()} empty")
        self.alpha = jnp.asarray(alpha_np, dtype=jnp.result_type(float))
        self.groups = jnp.asarray(groups_np, dtype=jnp.int32)
        self.n_groups = int(n_groups)

    # -- constructors -------------------------------------------------------------
    @classmethod
    def scalar(cls, alpha: float, d: int) -> Prior:
        """A = α I on ``d`` coordinates.

        Args:
            alpha: α > 0.
            d: the number of coordinates.

        Returns:
            The one-group ``Prior``.

        Raises:
            ValueError: α not positive, d < 1.
        """
        d = positive_int(d, "d")
        return cls(jnp.reshape(jnp.asarray(positive(alpha, "alpha")), (1,)), np.zeros(d, np.int32))

    @classmethod
    def grouped(cls, alpha, groups) -> Prior:
        """A = diag(α_{g(i)}) with one precision per group.

        Args:
            alpha: (G,) precisions, ≥ 0 (0: a flat group).
            groups: (d,) group of each coordinate in [0, G).

        Returns:
            The ``Prior`` (see the class for what it checks).
        """
        return cls(alpha, groups)

    @classmethod
    def diagonal(cls, alpha) -> Prior:
        """A = diag(α) with one precision per coordinate (ARD).

        Args:
            alpha: (d,) precisions, ≥ 0.

        Returns:
            The ``Prior`` with d groups.
        """
        alpha_np = as_float_array(alpha, "alpha", ndim=1)
        return cls(alpha_np, np.arange(alpha_np.shape[0], dtype=np.int32))

    def with_alpha(self, alpha) -> Prior:
        """The same grouping with new precisions (traceable: no validation, so it can run
        under ``jit``/``grad``; callers validate user input).

        Args:
            alpha: (G,) precisions, or a scalar broadcast to every group.

        Returns:
            The new ``Prior``.
        """
        alpha = jnp.broadcast_to(jnp.asarray(alpha, self.alpha.dtype), self.alpha.shape)
        return eqx.tree_at(lambda p: p.alpha, self, alpha)

    # -- the operator A --------------------------------------------------------------
    @property
    def d(self) -> int:
        return int(self.groups.shape[0])

    @property
    def group_sizes(self) -> Int[Array, " G"]:
        """d_g, the number of coordinates in each group."""
        return jnp.bincount(self.groups, length=self.n_groups)

    def precision(self) -> Float[Array, " d"]:
        """diag(A).

        Returns:
            (d,) the precision of each coordinate.
        """
        return self.alpha[self.groups]

    def mul(self, z: Float[Array, "... d"]) -> Float[Array, "... d"]:
        """A z.

        Args:
            z: (..., d) vectors.

        Returns:
            (..., d) A z.
        """
        return self.precision() * z

    @property
    def has_flat(self) -> bool:
        """Whether any group is flat (α_g = 0); needs a concrete ``alpha`` (not traced)."""
        return bool(np.any(np.asarray(self.alpha) == 0))

    def proper(self) -> Float[Array, " d"]:
        """1.0 where the coordinate's prior is proper (α > 0), 0.0 where flat, ``(d,)``."""
        return (self.precision() > 0).astype(self.alpha.dtype)

    def solve(self, z: Float[Array, "... d"]) -> Float[Array, "... d"]:
        """A⁻¹ z (proper priors; inf on flat coordinates)."""
        return z / self.precision()

    def sqrt_mul(self, xi: Float[Array, "... d"]) -> Float[Array, "... d"]:
        """A^{1/2} ξ: with ξ ~ N(0, I) this has covariance A."""
        return jnp.sqrt(self.precision()) * xi

    def inv_sqrt_mul(self, xi: Float[Array, "... d"]) -> Float[Array, "... d"]:
        """A^{-1/2} ξ: with ξ ~ N(0, I) this is a prior draw θ⁰ ~ N(0, A⁻¹)."""
        return xi / jnp.sqrt(self.precision())

    def sample(self, key: jax.Array, k: int) -> Float[Array, "k d"]:
        """``k`` prior draws θ⁰ ~ N(0, A⁻¹) (proper priors).

        Args:
            key: a JAX PRNG key.
            k: the number of draws.

        Returns:
            (k, d) draws.
        """
        return self.inv_sqrt_mul(jax.random.normal(key, (k, self.d), self.alpha.dtype))

    def logdet(self) -> Float[Array, ""]:
        """log det A = Σ_g d_g log α_g over the proper groups (a flat group's improper
        constant left out)."""
        return jnp.sum(self.group_sizes * log_proper(self.alpha))

    def group_sum(self, v: Float[Array, " d"]) -> Float[Array, " G"]:
        """Σ_{i ∈ g} v_i for each group g (e.g. ‖θ_g‖² from v = θ²)."""
        return jax.ops.segment_sum(v, self.groups, num_segments=self.n_groups)
