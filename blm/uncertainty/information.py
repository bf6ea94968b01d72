r"""Sparse information form: low-rank + exact-diagonal precision and its exact sampler.

The posterior precision is kept as

    Ĥ = N (U Λ Uᵀ + D) + τ I,        D = max(diag(G) − diag(UΛUᵀ), 0),

with U Λ Uᵀ (d × L, rank L) a low-rank approximation of the GGN G (Lanczos on any model,
or a Kronecker-preserving sparsification of a layer's eigenbasis, ``blm.uncertainty.kron``)
and D putting back G's exact diagonal (Lee et al., 2020). N (data scale) and τ (prior
precision) are the usual Laplace hyperparameters; with G summed over the data, N = 1
and τ = α.

**Exact low-rank sampler.** Write Ĥ = D′ + WWᵀ with D′ = N D + τ I and W = √N U Λ^{1/2},
and V = D′^{-1/2} W (d × L). Then Ĥ⁻¹ = D′^{-1/2}(I + VVᵀ)⁻¹D′^{-1/2}, and with the L × L
Cholesky factors A Aᵀ = VᵀV and B Bᵀ = I + AᵀA,

    F = D′^{-1/2} (I − V C Vᵀ),     C = A⁻ᵀ (I − B⁻ᵀ) A⁻¹,     F Fᵀ = Ĥ⁻¹ exactly:

(I − VCVᵀ)(I − VCVᵀ)ᵀ = I − V A⁻ᵀ[X + Xᵀ − XXᵀ]A⁻¹Vᵀ with X = I − B⁻ᵀ, and
X + Xᵀ − XXᵀ = I − (I − X)(I − X)ᵀ = I − (I + AᵀA)⁻¹ = Aᵀ(I + AAᵀ)⁻¹A (push-through), so
the product is I − V(I + VᵀV)⁻¹Vᵀ = (I + VVᵀ)⁻¹ (Woodbury). θ = θ̄ + F x, x ~ N(0, I), costs
O(dL) per draw after O(dL² + L³) set-up. (The published variant factors B Bᵀ = I + AAᵀ
with C = A⁻ᵀ(B − I)A⁻¹ instead and is only approximately right; a test shows the gap.)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from blm import operators as ops
from blm._checks import positive, positive_int
from blm.features import Features
from blm.likelihoods import Likelihood
from blm.solvers.sampled import SampledPosterior
from blm.uncertainty.sketched import ggn_top_eigenpairs


class InformationForm(eqx.Module):
    """N(θ̄, Ĥ⁻¹) with Ĥ = N(UΛUᵀ + D) + τI (see the module docstring)."""

    mean: Float[Array, " d"]
    U: Float[Array, "d L"]
    lam: Float[Array, " L"]
    D: Float[Array, " d"]
    scale: float
    tau: float

    @classmethod
    def from_low_rank(
        cls, mean, U, lam, ggn_diagonal, scale: float = 1.0, tau: float = 1.0
    ) -> InformationForm:
        """D = max(diag(G) − diag(UΛUᵀ), 0) so that diag(Ĥ) = N diag(G) + τ wherever the
        low-rank part does not already exceed it."""
        mean, U, lam = jnp.asarray(mean), jnp.asarray(U), jnp.asarray(lam)
        ggn_diagonal = jnp.asarray(ggn_diagonal)
        if mean.ndim != 1 or U.shape != (mean.shape[0], lam.shape[0]) or lam.ndim != 1:
            raise ValueError(
                f"U must be (d, L) for mean (d,) and lam (L,), got U {U.shape}, mean "
                f"{mean.shape}, lam {lam.shape}"
            )
        if ggn_diagonal.shape != mean.shape:
            raise ValueError(
                f"ggn_diagonal must have shape {mean.shape} like mean, got {ggn_diagonal.shape}"
            )
        lam = jnp.maximum(lam, 0.0)
        D = jnp.maximum(ggn_diagonal - jnp.sum(U**2 * lam, axis=1), 0.0)
        return cls(
            mean,
            U,
            lam,
            D,
            float(positive(scale, "scale")),
            float(positive(tau, "tau")),
        )

    def precision(self) -> Float[Array, "d d"]:
        """Ĥ densely (small d only; the oracle)."""
        low = (self.U * self.lam) @ self.U.T
        return self.scale * (low + jnp.diag(self.D)) + self.tau * jnp.eye(self.U.shape[0])

    def _parts(self):
        d_prime = self.scale * self.D + self.tau
        V = (self.U * jnp.sqrt(self.scale * self.lam)) / jnp.sqrt(d_prime)[:, None]
        return d_prime, V

    def factor_core(self) -> Float[Array, "L L"]:
        """C = A⁻ᵀ(I − B⁻ᵀ)A⁻¹ with AAᵀ = VᵀV, BBᵀ = I + AᵀA (L × L only)."""
        _, V = self._parts()
        L = V.shape[1]
        A = jnp.linalg.cholesky(V.T @ V)
        B = jnp.linalg.cholesky(jnp.eye(L) + A.T @ A)
        Ainv = jax.scipy.linalg.solve_triangular(A, jnp.eye(L), lower=True)
        X = jnp.eye(L) - jax.scipy.linalg.solve_triangular(B, jnp.eye(L), lower=True).T
        return Ainv.T @ X @ Ainv

    def factor_mul(self, x: Float[Array, "... d"], core=None) -> Float[Array, "... d"]:
        """F x = D′^{-1/2}(x − V C Vᵀ x): with x ~ N(0, I), a draw from N(0, Ĥ⁻¹)."""
        d_prime, V = self._parts()
        core = self.factor_core() if core is None else core
        return (x - ((x @ V) @ core.T) @ V.T) / jnp.sqrt(d_prime)

    def sample(self, key: jax.Array, k: int) -> SampledPosterior:
        """θ̄ and k draws z_j = F x_j ~ N(0, Ĥ⁻¹), as the other posteriors return them."""
        x = jax.random.normal(key, (positive_int(k, "k"), self.mean.shape[0]), self.mean.dtype)
        return SampledPosterior(mean=self.mean, samples=self.factor_mul(x))


def lanczos_information_form(
    features: Features,
    likelihood: Likelihood,
    dataset,
    mean: Float[Array, " d"],
    key: jax.Array,
    rank: int,
    tau: float,
    depth: int | None = None,
    block_size: int | None = None,
) -> InformationForm:
    """The information form of any model: U, Λ the top ``rank`` Ritz pairs of G by Lanczos
    with full reorthogonalisation (matfree, ``depth`` default min(d, 2·rank + 20)), and
    diag(G) exactly from per-example Jacobian rows (``operators.normal_diagonal``)."""
    rank = positive_int(rank, "rank")
    depth = min(features.d, 2 * rank + 20) if depth is None else positive_int(depth, "depth")
    if not rank <= depth <= features.d:
        raise ValueError(f"depth must lie in [rank, d] = [{rank}, {features.d}], got {depth}")
    blocks = ops.traced_blocks(features, dataset, block_size)
    v0 = jax.random.normal(key, (features.d,), blocks.dtype)
    U, lam = ggn_top_eigenpairs(features, likelihood, blocks, v0, depth, rank)
    diag = ops.normal_diagonal(features, likelihood, dataset, block_size)
    return InformationForm.from_low_rank(mean, U, lam, diag, 1.0, tau)
