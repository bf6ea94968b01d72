r"""Sketched Lanczos uncertainty (SLU): a low-memory summary of the top of the GGN spectrum.

For the generalised Gauss–Newton matrix G = Σ_i J_iᵀ B_i J_i = ΦᵀBΦ of a linearised model,
Lanczos without reorthogonalisation keeps only its current vectors (O(d) memory) and
writes each Lanczos vector v_j through a sketch S: ℝ^d → ℝ^s into an r × s buffer, so
the summary costs r·s numbers instead of r·d (Miani et al., 2024). Afterwards:

1. T = WΛWᵀ (the r × r tridiagonal matrix);
2. the sketched Ritz vectors (SV)W; Lanczos without reorthogonalisation repeats converged
   Ritz pairs ("ghosts");
3. the left singular vectors of (SV)W Λ, each direction once however many ghosts it has,
   valued by the Ritz values of the copies it merges; the k of largest value form Ũ
   (s × k) with values λ̃ (``ritz_basis``). Orthogonalising in sketch space stands in for
   orthogonalising in ℝ^d because S preserves inner products to (1 ± ε).

Scores of an input x with outputs t = 1..m (J(x)ᵀe_t by one vjp each):

    SLU(x)         = Σ_t ‖J(x)ᵀe_t‖² − ‖ŨᵀS J(x)ᵀe_t‖²             (local-ensemble score)
    Laplace(x, α)  = (1/α) Σ_t ‖J(x)ᵀe_t‖² − Σ_i λ̃_i/(λ̃_i + α) (ũ_iᵀS J(x)ᵀe_t)²,

the latter Tr J(x)(U_kΛ_kU_kᵀ + αI)⁻¹J(x)ᵀ, the linearised-Laplace predictive variance with
the GGN replaced by its top-k part. ``deflate = k₀`` first computes k₀ eigenvectors U₀ in
full (high memory, Lanczos with reorthogonalisation), runs the sketched Lanczos on
(I − U₀U₀ᵀ)G(I − U₀U₀ᵀ), and subtracts ‖U₀ᵀJᵀe_t‖² exactly (the preconditioned variant).

Sketches: ``SRFTSketch`` (random signs, orthonormal DCT, s of the d coordinates sampled
without replacement, scaled by √(d/s); O(d log d) per vector, stores only s indices),
``SparseJLSketch`` (ζ nonzeros ±1/√ζ per column, one in each of ζ row blocks; O(ζd)),
and ``IdentitySketch`` (s = d, the high-memory reference). Signs and rows come from two
independent keys and are regenerated at every application, never stored as d numbers.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from matfree import decomp

from blm import operators as ops
from blm._checks import positive_int
from blm.features import Features
from blm.likelihoods import Likelihood


class Sketch(eqx.Module):
    """A linear map S: ℝ^d → ℝ^s with E‖Sx‖² = ‖x‖²; vmappable over x."""

    d: int = eqx.field(static=True)
    s: int = eqx.field(static=True)

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " s"]:
        """S x."""

    @property
    def stored_numbers(self) -> int:
        """Numbers the sketch itself keeps (its random state is regenerated from keys)."""
        return 0


class IdentitySketch(Sketch):
    """S = I (s = d): the unsketched, high-memory reference."""

    def __init__(self, d: int):
        self.d = self.s = positive_int(d, "d")

    def __call__(self, x):
        return x


def _check_sizes(d: int, s: int) -> tuple[int, int]:
    d, s = positive_int(d, "d"), positive_int(s, "s")
    if s > d:
        raise ValueError(f"s: sketch size {s} exceeds the dimension d={d}")
    return d, s


class SRFTSketch(Sketch):
    r"""Subsampled randomized trigonometric transform S x = √(d/s) R F D x: D random signs,
    F the orthonormal DCT-II (any length, no padding needed), R s rows without replacement."""

    sign_key: jax.Array
    rows: Int[Array, " s"]

    def __init__(self, key: jax.Array, d: int, s: int):
        self.d, self.s = _check_sizes(d, s)
        sign_key, row_key = jax.random.split(key)
        self.sign_key = sign_key
        self.rows = jax.random.permutation(row_key, self.d)[: self.s]

    def __call__(self, x):
        signs = jax.random.rademacher(self.sign_key, (self.d,), x.dtype)
        mixed = jax.scipy.fft.dct(signs * x, norm="ortho")
        return jnp.sqrt(self.d / self.s) * mixed[self.rows]

    @property
    def stored_numbers(self) -> int:
        return self.s


class SparseJLSketch(Sketch):
    r"""Sparse Johnson–Lindenstrauss: column i of S has ζ nonzeros ±1/√ζ, one in each of ζ
    blocks of s/ζ rows (so never two in the same row)."""

    key: jax.Array
    nnz: int = eqx.field(static=True)

    def __init__(self, key: jax.Array, d: int, s: int, nnz: int = 4):
        self.d, s = _check_sizes(d, s)
        self.nnz = positive_int(nnz, "nnz")
        if s < self.nnz:
            raise ValueError(f"s: sketch size {s} is below nnz={self.nnz}")
        self.s = (s // self.nnz) * self.nnz
        self.key = key

    def __call__(self, x):
        sign_key, row_key = jax.random.split(self.key)
        block = self.s // self.nnz
        offsets = jax.random.randint(row_key, (self.d, self.nnz), 0, block)
        rows = offsets + block * jnp.arange(self.nnz)
        signs = jax.random.rademacher(sign_key, (self.d, self.nnz), x.dtype)
        values = (x[:, None] * signs / jnp.sqrt(self.nnz)).ravel()
        return jax.ops.segment_sum(values, rows.ravel(), num_segments=self.s)


def lanczos_sketched(
    matvec, v0: Float[Array, " d"], n_iter: int, sketch: Sketch
) -> tuple[Float[Array, " r"], Float[Array, " r"], Float[Array, "r s"]]:
    """Lanczos without reorthogonalisation, keeping only (v_{j−1}, v_j) and writing S v_j.

    Returns the diagonal α (r,) of T, the β (r,) — T's off-diagonal β_1..β_{r−1} and the
    final β_r, the norm of the residual that sets the Ritz pairs' error bounds — and the
    sketched vectors S v_j as rows (r, s). Memory: three d-vectors plus the r × s buffer."""
    v0 = v0 / jnp.linalg.norm(v0)

    def step(carry, _):
        v_prev, v, beta_prev = carry
        w = matvec(v) - beta_prev * v_prev
        alpha = jnp.vdot(v, w)
        w = w - alpha * v
        beta = jnp.linalg.norm(w)
        v_next = w / jnp.where(beta > 0, beta, 1.0)
        return (v, v_next, beta), (alpha, beta, sketch(v))

    init = (jnp.zeros_like(v0), v0, jnp.zeros((), v0.dtype))
    _, (alphas, betas, sv) = jax.lax.scan(step, init, None, length=n_iter)
    return alphas, betas, sv


def ritz_basis(
    alphas, betas, sv: Float[Array, "r s"], rank: int
) -> tuple[Float[Array, "s k"], Float[Array, " k"]]:
    """Post-hoc orthogonalisation of the sketched Ritz vectors Ŷ = (SV)W (columns ŷ_j, Ritz
    values θ_j ≥ 0; ``betas`` as ``lanczos_sketched`` returns them, r long).

    A Ritz pair is converged when its residual bound β_r|W_{r,j}| is below √ε·θ_max.
    Among the converged pairs the left singular vectors of ŶΘ span each direction once (a
    ghost, a converged repeated copy, only inflates a singular value). The unconverged
    pairs — among them ghosts still forming, mixtures of a converged direction and others
    — are orthogonalised separately against that span, so they cannot tilt it, and only
    fill the places the converged ones leave (Lanczos converges the top of the spectrum
    first). Each direction ũ gets the Ritz value θ_j of the copy ŷ_j closest to it
    (largest (ũᵀŷ_j)²). Returns ``rank`` directions, converged first, each part by
    decreasing λ̃: (Ũ (s, k), λ̃)."""
    alphas, betas, sv = np.asarray(alphas), np.asarray(betas), np.asarray(sv)
    T = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    theta, W = np.linalg.eigh(T)
    theta = np.maximum(theta, 0.0)
    ritz = sv.T @ W  # (s, r)
    tol = np.sqrt(np.finfo(sv.dtype).eps) * max(theta.max(), np.finfo(sv.dtype).tiny)
    converged = np.abs(betas[-1] * W[-1]) <= tol
    directions, values = [], []
    for part in (converged, ~converged):
        cols = ritz[:, part]
        if directions:  # against the converged span first
            span = np.concatenate(directions, axis=1)
            cols = cols - span @ (span.T @ cols)
        if cols.shape[1] == 0:
            continue
        U, sing, _ = np.linalg.svd(cols * theta[part], full_matrices=False)
        U = U[:, sing > 1e-10 * max(sing[0], np.finfo(sv.dtype).tiny)]
        c2 = (U.T @ ritz) ** 2  # (r′, r)
        vals = theta[np.argmax(c2, axis=1)]
        order = np.argsort(vals)[::-1]
        directions.append(U[:, order])
        values.append(vals[order])
    U, values = np.concatenate(directions, axis=1)[:, :rank], np.concatenate(values)[:rank]
    return jnp.asarray(U), jnp.asarray(values)


class SketchedLanczosSummary(eqx.Module):
    """The stored summary: sketch S, basis Ũ (s × k), values λ̃ (k,), and for the
    preconditioned variant the deflated eigenvectors U₀ (d × k₀) with values λ₀."""

    sketch: Sketch
    basis: Float[Array, "s k"]
    values: Float[Array, " k"]
    deflation: Float[Array, "d k0"]
    deflation_values: Float[Array, " k0"]
    n_iter: int = eqx.field(static=True)

    def _projections(self, rows: Float[Array, "m d"]):
        deflated = rows @ self.deflation  # (m, k0)
        rest = rows - deflated @ self.deflation.T
        sketched = jax.vmap(self.sketch)(rest) @ self.basis  # (m, k)
        return jnp.sum(rows**2, axis=1), deflated, sketched

    def score(self, features: Features, inputs, batch_size: int = 64) -> Float[Array, " b"]:
        """SLU(x) = Σ_t ‖J(x)ᵀe_t‖² − ‖U₀ᵀJ(x)ᵀe_t‖² − ‖ŨᵀS(I − U₀U₀ᵀ)J(x)ᵀe_t‖²."""
        return _scores(self, features, inputs, None, batch_size)

    def laplace_variance(
        self, features: Features, inputs, prior_precision: float, batch_size: int = 64
    ) -> Float[Array, " b"]:
        """Tr J(x)(UΛUᵀ + αI)⁻¹J(x)ᵀ with the summary's eigenpairs (U₀ and Ũ) and α."""
        return _scores(self, features, inputs, jnp.asarray(prior_precision), batch_size)

    def memory_report(self) -> dict[str, float]:
        """What the summary costs, in numbers and in units of d: ``stored`` (kept after
        fitting), ``buffer`` (the r × s sketched Lanczos vectors, the peak while fitting,
        beside three d-vectors of working memory), and their bytes."""
        d = self.sketch.d
        itemsize = self.basis.dtype.itemsize
        buffer = self.n_iter * self.sketch.s + self.deflation.size
        return {
            "d": d,
            "stored_numbers": self.stored_numbers,
            "stored_over_d": self.stored_numbers / d,
            "stored_bytes": self.stored_numbers * itemsize,
            "buffer_numbers": buffer,
            "buffer_over_d": buffer / d,
            "buffer_bytes": buffer * itemsize,
        }

    @property
    def stored_numbers(self) -> int:
        """Numbers held by the summary: s·k + k + d·k₀ + k₀ + the sketch's own."""
        return int(
            self.basis.size
            + self.values.size
            + self.deflation.size
            + self.deflation_values.size
            + self.sketch.stored_numbers
        )


@eqx.filter_jit
def _score_batch(summary, features, xb, alpha):
    eye = jnp.eye(features.m, dtype=summary.basis.dtype)

    def one(rows):  # rows J(x)ᵀe_t, (m, d)
        norms, deflated, sketched = summary._projections(rows)
        if alpha is None:
            return jnp.sum(norms - jnp.sum(deflated**2, 1) - jnp.sum(sketched**2, 1))
        w0 = summary.deflation_values / (summary.deflation_values + alpha)
        w = summary.values / (summary.values + alpha)
        return jnp.sum(norms - deflated**2 @ w0 - sketched**2 @ w) / alpha

    return jax.vmap(one)(features.factor_rows(xb, jnp.broadcast_to(eye, (xb.shape[0], *eye.shape))))


def _scores(summary, features, inputs, alpha, batch_size):
    n = int(jax.tree_util.tree_leaves(inputs)[0].shape[0])
    parts = [
        _score_batch(summary, features, inputs[i : i + batch_size], alpha)
        for i in range(0, n, batch_size)
    ]
    return jnp.concatenate(parts)


def top_eigenvectors(matvec, v0, depth: int, rank: int):
    """(U (d, k), λ (k,)): the top-``rank`` Ritz pairs of Lanczos with full
    reorthogonalisation (matfree) of depth ``depth``: the high-memory (depth · d) route."""
    result = decomp.tridiag_sym(depth, custom_vjp=False)(matvec, v0 / jnp.linalg.norm(v0))
    lam, W = jnp.linalg.eigh(result.J_small)
    top = jnp.argsort(lam)[::-1][:rank]
    return result.Q_tall.T @ W[:, top], lam[top]


def sketched_lanczos(
    features: Features,
    likelihood: Likelihood,
    dataset,
    key: jax.Array,
    rank: int,
    n_iter: int,
    sketch: Sketch,
    deflate: int = 0,
    deflate_depth: int | None = None,
    block_size: int | None = None,
) -> SketchedLanczosSummary:
    """The SLU summary of G = ΦᵀBΦ (the GGN of a linearised network, or of any features):
    ``n_iter`` sketched Lanczos steps from a random start, the top ``rank`` directions
    kept; ``deflate = k₀`` > 0 first takes k₀ eigenvectors in full (Lanczos with full
    reorthogonalisation of depth ``deflate_depth``, default min(d, 4k₀ + 20); it holds
    depth·d numbers while it runs, k₀·d after) and sketches the rest (the preconditioned
    variant)."""
    rank, n_iter = positive_int(rank, "rank"), positive_int(n_iter, "n_iter")
    deflate = positive_int(deflate, "deflate", minimum=0)
    if sketch.d != features.d:
        raise ValueError(f"sketch: maps ℝ^{sketch.d}, the features have d={features.d}")
    if n_iter > features.d:
        raise ValueError(f"n_iter: {n_iter} Lanczos steps exceed d={features.d}")
    if 2 * rank > sketch.s and sketch.s < features.d:
        raise ValueError(
            f"rank: {rank} directions in a sketch of size s={sketch.s}: a k-dimensional subspace "
            "keeps its geometry only for s ≫ k (the score then measures sketch noise); keep "
            "rank ≤ s/2, better s/4"
        )
    blocks = ops.traced_blocks(features, dataset, block_size)
    k_start, k_deflate = jax.random.split(key)
    dtype = blocks.dtype
    if deflate:
        v0 = jax.random.normal(k_deflate, (features.d,), dtype)
        depth = min(features.d, 4 * deflate + 20) if deflate_depth is None else deflate_depth
        if not deflate <= depth <= features.d:
            raise ValueError(f"deflate_depth must lie in [deflate, d] = [{deflate}, {features.d}]")
        U0, lam0 = ggn_top_eigenpairs(features, likelihood, blocks, v0, depth, deflate)
    else:
        U0, lam0 = jnp.zeros((features.d, 0), dtype), jnp.zeros(0, dtype)
    v0 = jax.random.normal(k_start, (features.d,), dtype)
    alphas, betas, sv = _sketched_run(features, likelihood, blocks, U0, v0, n_iter, sketch)
    basis, values = ritz_basis(alphas, betas, sv, rank)
    return SketchedLanczosSummary(sketch, basis, values, U0, lam0, n_iter)


def _ggn(features, likelihood, blocks):
    """v ↦ ΦᵀBΦv at the likelihood's own precisions (a Gaussian's β; none for others)."""
    beta = likelihood.noise_precision
    beta = jnp.zeros(0, blocks.dtype) if beta is None else beta
    return lambda v: ops.normal_operator((v, beta), features, likelihood, blocks)


@eqx.filter_jit
def ggn_top_eigenpairs(features, likelihood, blocks, v0, depth, rank):
    """(U (d, k), λ (k,)): top-``rank`` Ritz pairs of G = ΦᵀBΦ over ``blocks`` by Lanczos
    of ``depth`` with full reorthogonalisation (holds depth·d numbers), jit-compiled."""
    return top_eigenvectors(_ggn(features, likelihood, blocks), v0, depth, rank)


@eqx.filter_jit
def _sketched_run(features, likelihood, blocks, U0, v0, n_iter, sketch):
    ggn = _ggn(features, likelihood, blocks)

    def deflated(v):  # (I − U₀U₀ᵀ) G (I − U₀U₀ᵀ) v
        v = v - U0 @ (U0.T @ v)
        w = ggn(v)
        return w - U0 @ (U0.T @ w)

    return lanczos_sketched(deflated, v0 - U0 @ (U0.T @ v0), n_iter, sketch)
