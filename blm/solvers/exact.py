r"""The exact solver: dense Cholesky, the oracle every other backend is tested against.

It works on the *whitened* design: with B_i = L_i L_iᵀ, the rows Ψ_i = L_iᵀ φ(x_i) and
targets ỹ_i = L_iᵀ y_i turn the model into one with unit noise,

    H = ΨᵀΨ + A,   θ̄ = H⁻¹ Ψᵀ ỹ.

Two forms, chosen by size (N = n·m rows, d parameters):

* primal (d ≤ N): factor H = L_H L_Hᵀ (d × d);
* dual   (d > N): Woodbury, H⁻¹ = A⁻¹ − A⁻¹Ψᵀ K⁻¹ Ψ A⁻¹ with K = I_N + Ψ A⁻¹ Ψᵀ,
  factor K = L_K L_Kᵀ (N × N); then θ̄ = A⁻¹Ψᵀ K⁻¹ ỹ and log det H = log det A + log det K.

Memory is O(d²) or O(N²) and time cubic: use it for small problems, or as the reference.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular
from jaxtyping import Array, Float

from blm._checks import positive
from blm.likelihoods import Likelihood
from blm.priors import Prior
from blm.solvers.posterior import Posterior


def whiten(
    Phi: Float[Array, "n m d"],
    Y: Float[Array, "n m"],
    likelihood: Likelihood,
    f: Array | None = None,
) -> tuple[Float[Array, "N d"], Float[Array, " N"]]:
    """Ψ_i = L_iᵀ φ(x_i) and ỹ_i = L_iᵀ y_i, stacked into N = n·m rows (B_i = L_i L_iᵀ at f)."""
    f = jnp.zeros(Y.shape, Phi.dtype) if f is None else f
    L = likelihood.sqrt_precision(f)  # (n, m, m)
    Psi = jnp.einsum("nkl,nkd->nld", L, Phi).reshape(-1, Phi.shape[-1])
    ytilde = jnp.einsum("nkl,nk->nl", L, Y).reshape(-1)
    return Psi, ytilde


class ExactPosterior(Posterior):
    """N(θ̄, H⁻¹) held as a Cholesky factor, in primal or dual form."""

    mean: Float[Array, " d"]
    prior: Prior
    chol: Array  # L_H (d, d) in primal form, L_K (N, N) in dual form
    psi: Array | None  # Ψ (N, d), kept in dual form only
    form: Literal["primal", "dual"] = eqx.field(static=True)

    # -- construction -----------------------------------------------------------
    @classmethod
    def fit(
        cls,
        Psi: Float[Array, "N d"],
        ytilde: Float[Array, " N"],
        prior: Prior,
        form: Literal["auto", "primal", "dual"] = "auto",
    ) -> ExactPosterior:
        """Posterior of the whitened model; ``form="auto"`` takes the smaller system."""
        if Psi.ndim != 2 or Psi.shape[1] != prior.d or ytilde.shape != (Psi.shape[0],):
            raise ValueError(
                f"Psi must be (N, d={prior.d}) and ytilde (N,), got {Psi.shape} and {ytilde.shape}"
            )
        if form == "auto":
            form = "primal" if prior.d <= Psi.shape[0] else "dual"
        if form == "primal":
            return cls.from_gram(Psi.T @ Psi, Psi.T @ ytilde, prior)
        if form == "dual":
            return _dual(Psi, ytilde, prior)
        raise ValueError(f"form must be 'auto', 'primal' or 'dual', got {form!r}")

    @classmethod
    def from_gram(
        cls, gram: Float[Array, "d d"], rhs: Float[Array, " d"], prior: Prior
    ) -> ExactPosterior:
        """Primal form from ΨᵀΨ and Ψᵀỹ (e.g. accumulated over row blocks)."""
        return _primal(gram, rhs, prior)

    # -- the covariance H⁻¹ -------------------------------------------------------
    def cov_mul(self, v: Float[Array, "... d"]) -> Float[Array, "... d"]:
        """H⁻¹ v (v may carry leading batch axes)."""
        vt = jnp.moveaxis(jnp.atleast_2d(v), -1, 0)  # (d, k)
        if self.form == "primal":
            out = cho_solve((self.chol, True), vt)
        else:
            a_inv = 1.0 / self.prior.precision()[:, None]
            av = a_inv * vt
            out = av - a_inv * (self.psi.T @ cho_solve((self.chol, True), self.psi @ av))
        return jnp.moveaxis(out, 0, -1).reshape(v.shape)

    def covariance(self) -> Float[Array, "d d"]:
        """H⁻¹ as a dense matrix."""
        return self.cov_mul(jnp.eye(self.prior.d, dtype=self.mean.dtype))

    def predictive_variance(self, rows: Float[Array, "t d"]) -> Float[Array, " t"]:
        """diag(J H⁻¹ Jᵀ) for feature rows J (e.g. φ(x*) for one output each)."""
        if self.form == "primal":
            w = solve_triangular(self.chol, rows.T, lower=True)
            return jnp.sum(w**2, axis=0)
        ainv_jt = self.prior.solve(rows).T  # A⁻¹Jᵀ (d, t)
        w = solve_triangular(self.chol, self.psi @ ainv_jt, lower=True)
        return jnp.sum(rows.T * ainv_jt, axis=0) - jnp.sum(w**2, axis=0)

    def predictive_covariance(self, rows: Float[Array, "t d"]) -> Float[Array, "t t"]:
        """J H⁻¹ Jᵀ for feature rows J: primal WᵀW with W = L_H⁻¹Jᵀ; dual (Woodbury)
        JA⁻¹Jᵀ − VᵀV with V = L_K⁻¹ΨA⁻¹Jᵀ."""
        if self.form == "primal":
            w = solve_triangular(self.chol, rows.T, lower=True)
            return w.T @ w
        ainv_jt = self.prior.solve(rows).T
        w = solve_triangular(self.chol, self.psi @ ainv_jt, lower=True)
        return rows @ ainv_jt - w.T @ w

    def diag_covariance(self, block: int = 2048) -> Float[Array, " d"]:
        """diag(H⁻¹) without forming H⁻¹: (H⁻¹)_ii = ‖L_H⁻¹ e_i‖² in primal form, solved
        for ``block`` columns e_i at a time (memory d·block beside the factor); in dual
        form 1/a_i − ‖L_K⁻¹ Ψ A⁻¹ e_i‖² (Woodbury)."""
        if self.form == "primal":
            d, parts = self.prior.d, []
            for s in range(0, d, block):
                cols = jnp.eye(d, min(block, d - s), -s, dtype=self.mean.dtype)  # e_s, e_s+1, …
                parts.append(jnp.sum(solve_triangular(self.chol, cols, lower=True) ** 2, axis=0))
            return jnp.concatenate(parts)
        w = solve_triangular(self.chol, self.prior.solve(self.psi), lower=True)
        return 1.0 / self.prior.precision() - jnp.sum(w**2, axis=0)

    def logdet(self) -> Float[Array, ""]:
        """log det H."""
        logdet_chol = 2.0 * jnp.sum(jnp.log(jnp.diag(self.chol)))
        return logdet_chol if self.form == "primal" else logdet_chol + self.prior.logdet()

    def logdet_at(self, prior: Prior, scale: float = 1.0) -> Float[Array, ""]:
        r"""log det(c·ΨᵀΨ + A′) at another prior A′ (and the data term scaled by c, e.g. a
        Gaussian noise precision changed by the factor c), from this factor without the
        rows: primal, ΨᵀΨ = L_HL_Hᵀ − A and one d × d Cholesky; dual, log det A′ +
        log det(I + c·ΨA′⁻¹Ψᵀ) from the kept Ψ.

        Args:
            prior: A′, with the same d.
            scale: c > 0.

        Returns:
            The log-determinant (a scalar array).

        Raises:
            ValueError: a prior of another dimension, or c not positive.
        """
        if prior.d != self.prior.d:
            raise ValueError(f"prior must have d = {self.prior.d}, got {prior.d}")
        c = float(positive(scale, "scale"))
        if self.form == "primal":
            gram = self.chol @ self.chol.T - jnp.diag(self.prior.precision())
            H = c * gram + jnp.diag(prior.precision())
            return 2.0 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(H))))
        K = (
            jnp.eye(self.psi.shape[0], dtype=self.psi.dtype)
            + c * self.psi @ prior.solve(self.psi).T
        )
        return 2.0 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(K)))) + prior.logdet()

    def zero_mean_draws(self, key: jax.Array, k: int) -> Float[Array, "k d"]:
        """k fresh draws z ~ N(0, H⁻¹) from the factor (``sample``)."""
        return self.sample(key, k)

    def sample(self, key: jax.Array, k: int) -> Float[Array, "k d"]:
        """k draws z ~ N(0, H⁻¹) (zero-mean; add ``mean`` for posterior draws).

        Primal: z = L_H⁻ᵀ ε. Dual: z = H⁻¹(Ψᵀε + A^{1/2}ε′), whose covariance is
        H⁻¹(ΨᵀΨ + A)H⁻¹ = H⁻¹.
        """
        d = self.prior.d
        if self.form == "primal":
            eps = jax.random.normal(key, (d, k), self.mean.dtype)
            return solve_triangular(self.chol, eps, lower=True, trans="T").T
        k1, k2 = jax.random.split(key)
        eps = jax.random.normal(k1, (k, self.psi.shape[0]), self.mean.dtype)
        eps_prior = jax.random.normal(k2, (k, d), self.mean.dtype)
        return self.cov_mul(eps @ self.psi + self.prior.sqrt_mul(eps_prior))


def _primal(gram, rhs, prior: Prior) -> ExactPosterior:
    H = gram + jnp.diag(prior.precision())
    chol = jnp.linalg.cholesky(H)
    mean = cho_solve((chol, True), rhs)
    return ExactPosterior(mean=mean, prior=prior, chol=chol, psi=None, form="primal")


def _dual(Psi, ytilde, prior: Prior) -> ExactPosterior:
    ainv_psit = prior.solve(Psi).T  # A⁻¹Ψᵀ (d, N)
    K = jnp.eye(Psi.shape[0], dtype=Psi.dtype) + Psi @ ainv_psit
    chol = jnp.linalg.cholesky(K)
    mean = ainv_psit @ cho_solve((chol, True), ytilde)
    return ExactPosterior(mean=mean, prior=prior, chol=chol, psi=Psi, form="dual")
