r"""Full passes of the linear model over a dataset, one block of rows at a time.

    matvec(z)          = Φ z                        (n, m)   (rows in dataset order)
    rmatvec(v)         = Φᵀ v                       (d,)
    normal_matvec(z)   = Φᵀ B Φ z                   (…, d)   (z may carry a sample axis)
    rhs()              = Φᵀ B Y                     (d,)
    noise_rhs(key, k)  = Φᵀ L ξ_j, j = 1..k         (k, d)   ξ ~ N(0, I), L Lᵀ = B
    noise_rhs(key, k, with_data=True) = [ΦᵀBY; ΦᵀLξ_j]  (k+1, d) in one pass
    sample_statistics(z, θ̄)                              one pass for MacKay's M-step:
        quad           = Σ_i (φ_i z_j)ᵀ B_i (φ_i z_j)  (k, m)   per output, B diagonal
        residual_sq    = ‖y_k − Φ_k θ̄‖²              (m,)     if θ̄ is given
        normal         = ΦᵀBΦ z_j                     (k, d)   if asked
    normal_diagonal()  = diag(Φᵀ B Φ)               (d,)     (Jacobi preconditioner)

Only one block of inputs is in memory at a time, so these work on HDF5 data larger
than memory. The per-block kernels are jit-compiled once per block shape; the primal
work of the feature map is shared across a leading sample axis of z.

The noise ξ_{j,i} ∈ ℝ^m of row i is drawn from ``fold_in(key, i)``: the same draw
whatever the block size or order, so a minibatched objective can regenerate exactly
the noise that a full pass used.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from blm._checks import positive_int
from blm.data import default_dtype
from blm.features import Features
from blm.likelihoods import Likelihood
from blm.sharding import put_rows


def _check(features: Features, dataset) -> None:
    if dataset.m != features.m:
        raise ValueError(
            f"dataset has m={dataset.m} outputs per row but features have m={features.m}"
        )


def block_rows(features: Features, dataset, block_size: int | None = None) -> int | None:
    """Rows per block of a full pass: ``block_size`` if given, else the features' bound
    (``Features.block_rows``: None for a plain or sparse design, rows of 256 MiB for
    random features, 256 inputs for a network), capped by a file's own block size. None
    means no bound: all rows of an in-memory array at once, a file's own blocks."""
    if block_size is not None:
        return positive_int(block_size, "block_size")
    rows = features.block_rows()
    if rows is None or dataset.in_memory:
        return rows
    return min(rows, dataset.block_size)


def _accumulate(features: Features, dataset, block_size: int | None, kernel):
    """Σ over blocks of kernel(x_b, y_b, rows_b) (an array or a tuple of them), after
    checking the dataset fits."""
    _check(features, dataset)
    total = None
    for block in dataset.blocks(block_rows(features, dataset, block_size)):
        out = kernel(*put_rows(block))
        total = out if total is None else jax.tree_util.tree_map(jnp.add, total, out)
    return total


def row_noise(
    key: jax.Array, rows: Int[Array, " b"], k: int, m: int, dtype
) -> Float[Array, "b k m"]:
    """Standard normal ξ_{i,j} for the given global rows i and samples j < k, rows first
    (the layout of ``Features.linearize_many``)."""
    return jax.vmap(lambda r: jax.random.normal(jax.random.fold_in(key, r), (k, m), dtype))(rows)


@eqx.filter_jit
def _block_matvec(features, xb, z):
    if z.ndim == 2:
        return jnp.swapaxes(features.linearize_many(xb)[1](z), 0, 1)
    return features.linearize(xb)[1](z)


@eqx.filter_jit
def _block_rmatvec(features, xb, v):
    if v.ndim == 3:
        return features.linearize_many(xb)[2](jnp.swapaxes(v, 0, 1))
    return features.linearize(xb)[2](v)


@eqx.filter_jit
def _block_normal(features, likelihood, xb, z):
    if z.ndim == 2:
        f0, jvps, vjps = features.linearize_many(xb)
        return vjps(likelihood.precision_mul(f0[:, None], jvps(z)))
    f0, jvp, vjp = features.linearize(xb)
    return vjp(likelihood.precision_mul(f0, jvp(z)))


@eqx.filter_jit
def _block_rhs(features, likelihood, xb, yb):
    f0, _, vjp = features.linearize(xb)
    return vjp(likelihood.precision_mul(f0, yb))


@eqx.filter_jit
def _block_noise_rhs(features, likelihood, xb, yb, rows, key, k, with_data):
    f0, _, vjps = features.linearize_many(xb)
    xi = row_noise(key, rows, k, f0.shape[-1], f0.dtype)
    v = likelihood.sqrt_mul(f0[:, None], xi)  # L_i ξ_{i,j}: (b, k, m)
    if with_data:
        v = jnp.concatenate([likelihood.precision_mul(f0, yb)[:, None], v], axis=1)
    return vjps(v)


def matvec(features: Features, dataset, z: Float[Array, "... d"], block_size: int | None = None):
    """Φ z, shape (n, m) (or (k, n, m) for z of shape (k, d))."""
    _check(features, dataset)
    blocks = dataset.blocks(block_rows(features, dataset, block_size))
    out = [_block_matvec(features, xb, z) for xb, _, _ in blocks]
    return jnp.concatenate(out, axis=-2)


def rmatvec(features: Features, dataset, v: Float[Array, "... n m"], block_size: int | None = None):
    """Φᵀ v for v of shape (n, m) (or (k, n, m)), rows in dataset order."""
    _check(features, dataset)
    if v.shape[-2:] != (dataset.n, dataset.m):
        raise ValueError(f"v must end in shape (n, m)={(dataset.n, dataset.m)}, got {v.shape}")
    return _accumulate(
        features,
        dataset,
        block_size,
        lambda xb, _y, rows: _block_rmatvec(features, xb, v[..., rows, :]),
    )


def normal_matvec(
    features: Features,
    likelihood: Likelihood,
    dataset,
    z: Float[Array, "... d"],
    block_size: int | None = None,
):
    """ΦᵀBΦ z (the data part of H applied to z), summed over blocks."""
    return _accumulate(
        features, dataset, block_size, lambda xb, _y, _r: _block_normal(features, likelihood, xb, z)
    )


def rhs(features: Features, likelihood: Likelihood, dataset, block_size: int | None = None):
    """ΦᵀB Y, the right-hand side of H θ̄ = ΦᵀBY."""
    return _accumulate(
        features, dataset, block_size, lambda xb, yb, _r: _block_rhs(features, likelihood, xb, yb)
    )


def noise_rhs(
    features: Features,
    likelihood: Likelihood,
    dataset,
    key: jax.Array,
    k: int,
    block_size: int | None = None,
    with_data: bool = False,
):
    """Φᵀ L ξ_j for k independent ξ_j ~ N(0, I_{n·m}): each has covariance ΦᵀBΦ; shape
    (k, d). ``with_data``: [ΦᵀBY; ΦᵀLξ_1; …; ΦᵀLξ_k], shape (k + 1, d), ``rhs`` from the
    same pass (the primal of each block shared by all k + 1 products)."""
    if not isinstance(with_data, bool):
        raise TypeError(f"with_data must be True or False, got {with_data!r}")
    return _accumulate(
        features,
        dataset,
        block_size,
        lambda xb, yb, rows: _block_noise_rhs(
            features, likelihood, xb, yb, rows, key, k, with_data
        ),
    )


class SampleStatistics(NamedTuple):
    """What MacKay's M-step reads from the data, from one pass (``sample_statistics``)."""

    quad: Float[Array, "k m"]
    residual_sq: Float[Array, " m"] | None
    normal: Float[Array, "k d"] | None


@eqx.filter_jit
def _block_sample_statistics(features, likelihood, xb, yb, z, mean, with_normal):
    f0, jvps, vjps = features.linearize_many(xb)
    if mean is None:
        fz, residual_sq = jvps(z), None
    else:  # θ̄ rides along as one more vector: its jvp shares the block's primal work
        f = jvps(jnp.concatenate([mean[None], z]))  # (b, k + 1, m)
        fz, residual_sq = f[:, 1:], jnp.sum((yb - f[:, 0]) ** 2, axis=0)
    bfz = likelihood.precision_mul(f0[:, None], fz)
    normal = vjps(bfz) if with_normal else None
    return SampleStatistics(jnp.sum(fz * bfz, axis=0), residual_sq, normal)


def sample_statistics(
    features: Features,
    likelihood: Likelihood,
    dataset,
    z: Float[Array, "k d"],
    mean: Float[Array, " d"] | None = None,
    block_size: int | None = None,
    with_normal: bool = False,
) -> SampleStatistics:
    """One pass over the data for samples z_j (and a mean θ̄):

        quad_{jk}     = Σ_i (φ_i z_j)_k (B_i φ_i z_j)_k     (k, m); Σ_k quad_{jk} = z_jᵀΦᵀBΦz_j
        residual_sq_k = ‖y_k − Φ_k θ̄‖²                     (m,), when ``mean`` is given
        normal_j      = ΦᵀBΦ z_j                           (k, d), when ``with_normal``

    (the split of quad by output assumes a diagonal B, as Gaussian's; its sum does not).
    θ̄ is one more vector of the same jvp, so the residual costs no pass of its own."""
    if not isinstance(with_normal, bool):
        raise TypeError(f"with_normal must be True or False, got {with_normal!r}")
    if jnp.ndim(z) != 2 or jnp.shape(z)[1] != features.d:
        raise ValueError(f"z must have shape (k, d) with d = {features.d}, got {jnp.shape(z)}")
    if mean is not None and jnp.shape(mean) != (features.d,):
        raise ValueError(f"mean must have shape (d,) = ({features.d},), got {jnp.shape(mean)}")
    return _accumulate(
        features,
        dataset,
        block_size,
        lambda xb, yb, _r: _block_sample_statistics(
            features, likelihood, xb, yb, z, mean, with_normal
        ),
    )


@eqx.filter_jit
def _block_residual_sq(features, xb, yb, theta):
    f0, jvp, _ = features.linearize(xb)
    return jnp.sum((yb - jvp(theta)) ** 2, axis=0)


def residual_sq(
    features: Features, dataset, theta: Float[Array, " d"], block_size: int | None = None
):
    """‖y_k − Φ_k θ‖² for each output k, shape (m,)."""
    return _accumulate(
        features,
        dataset,
        block_size,
        lambda xb, yb, _r: _block_residual_sq(features, xb, yb, theta),
    )


@eqx.filter_jit
def _block_normal_diagonal(features, likelihood, xb):
    f0 = features.offset(xb)
    return features.sq_rows(xb, likelihood.sqrt_precision(f0))


def normal_diagonal(
    features: Features, likelihood: Likelihood, dataset, block_size: int | None = None
):
    """diag(ΦᵀBΦ) = Σ_i Σ_l (φ_iᵀL_i e_l)² with B_i = L_iL_iᵀ, shape (d,)."""
    return _accumulate(
        features,
        dataset,
        block_size,
        lambda xb, _y, _r: _block_normal_diagonal(features, likelihood, xb),
    )


def normal_diagonal_and_matvec(
    features: Features,
    likelihood: Likelihood,
    dataset,
    z: Float[Array, "q d"],
    block_size: int | None = None,
) -> tuple[Float[Array, " d"], Float[Array, "q d"]]:
    """(diag(ΦᵀBΦ), ΦᵀBΦ z) in one pass over the data (a preconditioner's set-up)."""
    return _accumulate(
        features,
        dataset,
        block_size,
        lambda xb, _y, _r: (
            _block_normal_diagonal(features, likelihood, xb),
            _block_normal(features, likelihood, xb, z),
        ),
    )


# -- ΦᵀBΦ as one traceable function (for code that loops inside jit, e.g. Lanczos) -------
class StackedBlocks(eqx.Module):
    """An in-memory dataset cut into equal row blocks for ``lax.scan``: inputs
    (n_blocks, b, ...), and a mask (n_blocks, b) that is 0 on the padding rows."""

    X: Array
    mask: Float[Array, "nb b"]

    @classmethod
    def from_dataset(cls, dataset, block_size: int | None = None) -> StackedBlocks:
        """Pad the rows to a multiple of ``block_size`` (default: one block of all rows)."""
        if not hasattr(dataset, "X"):
            raise TypeError(
                "dataset: stacking needs the rows in memory (an ArrayDataset), got "
                f"{type(dataset).__name__}; use traced_blocks, which streams it"
            )
        n = dataset.n
        b = n if block_size is None else min(positive_int(block_size, "block_size"), n)
        nb = -(-n // b)
        pad = nb * b - n
        X = jnp.concatenate([dataset.X, jnp.zeros((pad, *dataset.X.shape[1:]), dataset.X.dtype)])
        mask = (jnp.arange(nb * b) < n).astype(dataset.X.dtype)
        return cls(X=X.reshape(nb, b, *dataset.X.shape[1:]), mask=mask.reshape(nb, b))

    @property
    def dtype(self):
        return self.X.dtype

    def scan_over(self):
        return self.X, self.mask

    def block(self, item):
        """(x_b, mask_b) of one scanned item."""
        return item


class StreamedBlocks(eqx.Module):
    """A streamed (HDF5) dataset read block by block *inside* a traced loop: the scan runs
    over block indices and each block's inputs come from the file through
    ``jax.pure_callback``, so a traced pass (Lanczos, its adjoint) holds one block, never
    the n rows. Every pass reads the whole file."""

    dataset: object = eqx.field(static=True)
    block_size: int = eqx.field(static=True)

    @property
    def dtype(self):
        return default_dtype()

    @property
    def n_blocks(self) -> int:
        return -(-self.dataset.n // self.block_size)

    def scan_over(self):
        return jnp.arange(self.n_blocks)

    def _read(self, index) -> np.ndarray:
        b, n = self.block_size, self.dataset.n
        start = int(index) * b
        xb = self.dataset.read_rows(start, min(start + b, n))
        out = np.zeros((b, *xb.shape[1:]), self.dtype)
        out[: len(xb)] = xb
        return out

    def block(self, index):
        """(x_b, mask_b) of block ``index``, the inputs read on the host."""
        b = self.block_size
        shape = jax.ShapeDtypeStruct((b, *self.dataset.input_shape), self.dtype)
        xb = jax.pure_callback(self._read, shape, index, vmap_method="sequential")
        mask = (index * b + jnp.arange(b) < self.dataset.n).astype(self.dtype)
        return xb, mask


def traced_blocks(
    features: Features, dataset, block_size: int | None = None
) -> StackedBlocks | StreamedBlocks:
    """The rows of ``dataset`` for traced passes of ``features`` (``normal_operator``):
    stacked in memory for an ``ArrayDataset``, read block by block from the file for an
    ``HDF5Dataset`` (``block_size`` default: ``block_rows``, for a file at most its own)."""
    block_size = block_rows(features, dataset, block_size)
    if dataset.in_memory:
        return StackedBlocks.from_dataset(dataset, block_size)
    b = dataset.block_size if block_size is None else block_size
    return StreamedBlocks(dataset, min(b, dataset.n))


def _likelihood_at(likelihood: Likelihood, beta):
    """The likelihood with noise precisions β if it has any (Gaussian), else unchanged."""
    return likelihood if likelihood.noise_precision is None else likelihood.with_beta(beta)


def _scan_blocks(features, blocks: StackedBlocks | StreamedBlocks, body, init):
    def step(acc, item):
        xb, mask = blocks.block(item)
        return jax.tree_util.tree_map(jnp.add, acc, body(features.linearize(xb), mask)), None

    return jax.lax.scan(step, init, blocks.scan_over())[0]


@eqx.filter_custom_vjp
def normal_operator(vb, features: Features, likelihood: Likelihood, blocks):
    r"""ΦᵀB(β)Φ v for one vector v (d,), traceable, with B at noise precisions β.

    ``vb = (v, β)``: β (m,) replaces a Gaussian likelihood's precisions (other
    likelihoods have none: pass an empty array). Differentiable in both by a custom VJP
    that never stores the network's residuals: ΦᵀBΦ is symmetric, so v̄ = ΦᵀBΦ c̄ for a
    cotangent c̄, and for a Gaussian ∂(c̄ᵀΦᵀBΦv)/∂β_k = Σ_i (Φc̄)_ik (Φv)_ik."""
    v, beta = vb
    lik = _likelihood_at(likelihood, beta)

    def body(lin, mask):
        f0, jvp, vjp = lin
        return vjp(lik.precision_mul(f0, mask[:, None] * jvp(v)))

    return _scan_blocks(features, blocks, body, jnp.zeros_like(v))


@normal_operator.def_fwd
def _normal_operator_fwd(perturbed, vb, features, likelihood, blocks):
    return normal_operator(vb, features, likelihood, blocks), None


@normal_operator.def_bwd
def _normal_operator_bwd(residuals, ct, perturbed, vb, features, likelihood, blocks):
    v, beta = vb
    lik = _likelihood_at(likelihood, beta)
    # the β-cotangent costs a second jvp per block: only when β is differentiated
    with_beta = bool(perturbed[1]) and likelihood.noise_precision is not None

    def body(lin, mask):
        f0, jvp, vjp = lin
        fc = mask[:, None] * jvp(ct)
        grad_beta = jnp.sum(fc * jvp(v), axis=0) if with_beta else jnp.zeros_like(beta)
        return vjp(lik.precision_mul(f0, fc)), grad_beta

    grad_v, grad_beta = _scan_blocks(
        features, blocks, body, (jnp.zeros_like(v), jnp.zeros_like(beta))
    )
    return grad_v, grad_beta if with_beta else None
