r"""Closed-form evidence and the exact MacKay fixed point for a Gaussian likelihood.

For y_i = φ(x_i)θ + η_i, η_i ~ N(0, diag(β)⁻¹), θ ~ N(0, A⁻¹), H = Σ_k β_k Φ_kᵀΦ_k + A
(Φ_k: the rows of output k), the log evidence is

    log p(Y | α, β) = −½ Σ_k β_k ‖y_k − Φ_k θ̄‖² − ½ θ̄ᵀAθ̄ − ½ log det H + ½ log det A
                      + ½ n Σ_k log β_k − ½ n·m log 2π.

Setting its derivatives to zero gives MacKay's fixed point, with the effective number
of parameters γ = Tr(H⁻¹ΦᵀBΦ) = d − Tr(A H⁻¹), split by prior group and by output:

    γ_g = d_g − α_g Σ_{i∈g} (H⁻¹)_ii,        α_g ← (γ_g + 2 a_α) / (‖θ̄_g‖² + 2 b_α),
    γ_k = β_k Tr(H⁻¹ Φ_kᵀΦ_k),               β_k ← (n − γ_k + 2 a_β) / (‖y_k − Φ_kθ̄‖² + 2 b_β).

(a, b) are optional Gamma(shape, rate) hyperpriors on α and β (scikit-learn's
``lambda_1, lambda_2`` and ``alpha_1, alpha_2``); with them the fixed point maximises
the evidence plus Σ (a log α − b α) terms, which is what scikit-learn reports as score.
Everything here is dense (O(d³) or O(N³)): the oracle for the scalable estimators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from blm.data import ArrayDataset, HDF5Dataset
from blm.features import Features
from blm.priors import Prior, log_proper
from blm.solvers.exact import ExactPosterior


@dataclass(frozen=True)
class GammaHyperprior:
    """Gamma(shape, rate) hyperpriors on α (weights) and β (noise); zeros = flat."""

    alpha_shape: float = 0.0
    alpha_rate: float = 0.0
    beta_shape: float = 0.0
    beta_rate: float = 0.0

    def log_density(self, alpha: Array, beta: Array) -> Array:
        """Σ (a log α − b α) + Σ (a log β − b β), without normalising constants; a flat
        prior group (α_g = 0, not a hyperparameter) contributes nothing."""
        on_alpha = self.alpha_shape * log_proper(alpha) - self.alpha_rate * alpha  # 0 if flat
        return jnp.sum(on_alpha) + jnp.sum(self.beta_shape * jnp.log(beta) - self.beta_rate * beta)


def log_evidence_from_terms(
    prior: Prior,
    beta: Float[Array, " m"],
    mean: Float[Array, " d"],
    residual_sq: Float[Array, " m"],
    logdet_h: Float[Array, ""],
    n: int,
) -> Float[Array, ""]:
    """−½ Σ_k β_k‖y_k − Φ_kθ̄‖² − ½ θ̄ᵀAθ̄ − ½ log det H + ½ log det A + ½ n Σ_k log β_k
    − ½ n·m log 2π, from its pieces (log det H exact here, by SLQ in ``lanczos``)."""
    m = residual_sq.shape[0]
    return 0.5 * (
        -jnp.sum(beta * residual_sq)
        - jnp.sum(prior.precision() * mean**2)
        - logdet_h
        + prior.logdet()
        + n * jnp.sum(jnp.log(beta))
        - n * m * jnp.log(2 * jnp.pi)
    )


def _primal_stats(Phi, Y):
    """(Φ_kᵀΦ_k (m, d, d), Φ_kᵀy_k (m, d), y_kᵀy_k (m,)) of rows Φ (n, m, d), Y (n, m)."""
    return (
        jnp.einsum("nkd,nke->kde", Phi, Phi),
        jnp.einsum("nkd,nk->kd", Phi, Y),
        jnp.sum(Y**2, axis=0),
    )


def _resolve_form(form: str, n: int, m: int, d: int) -> Literal["primal", "dual"]:
    """``"auto"``: the smaller system, primal (d × d) where d ≤ n·m, else dual."""
    if form == "auto":
        return "primal" if d <= n * m else "dual"
    if form not in ("primal", "dual"):
        raise ValueError(f"form must be 'auto', 'primal' or 'dual', got {form!r}")
    return form


def row_padding(n: int) -> int:
    """Zero rows that take n to the next multiple of 2^(⌊log₂ n⌋ − 3) (< n/8)."""
    return -n % (1 << max(n.bit_length() - 4, 0))


class DenseGaussianModel(eqx.Module):
    """A Gaussian linear model formed densely: Φ (n, m, d), Y (n, m), and in primal form
    the per-output Gram matrices Φ_kᵀΦ_k, Φ_kᵀy_k, y_kᵀy_k accumulated once.

    Built from a streamed (HDF5) dataset, only the primal statistics are kept (Φ and Y
    are None: memory m·d², nothing of size n·d); residuals then come from
    ‖y_k − Φ_kθ‖² = y_kᵀy_k − 2θᵀΦ_kᵀy_k + θᵀΦ_kᵀΦ_kθ."""

    Phi: Float[Array, "n m d"] | None
    Y: Float[Array, "n m"] | None
    gram: Float[Array, "m d d"] | None
    cross: Float[Array, "m d"] | None
    form: Literal["primal", "dual"] = eqx.field(static=True)
    yty: Float[Array, " m"] | None = None
    n_observations: Float[Array, ""] | None = None  # a leaf: new counts reuse compiled code

    @classmethod
    def from_data(
        cls,
        features: Features,
        dataset: ArrayDataset | HDF5Dataset,
        form: Literal["auto", "primal", "dual"] = "auto",
        block_size: int | None = None,
        rows: Callable | None = None,
        accumulate: bool | None = None,
        n_observations: float | None = None,
    ) -> DenseGaussianModel:
        """Form Φ by streaming the dataset's blocks through ``rows(x_b, y_b)`` → (Φ_b
        (b', m', d), Y_b (b', m')) (default ``features.dense`` and the targets; a network's
        whitened Jacobian rows in ``blm.laplace``). With ``accumulate`` (default: for an
        HDF5 dataset) only the primal statistics are kept, block by block: memory m'·d²,
        nothing of size n·d; otherwise every row, in the form ``form`` picks.
        ``n_observations``: the n of the evidence's ½ n Σ_k log β_k and its 2π constant
        (default the dataset's; whitened rows of a likelihood observing r directions per
        input count n·r)."""
        if rows is None:
            if dataset.m != features.m:
                raise ValueError(
                    f"dataset has m={dataset.m} outputs but features have m={features.m}"
                )
            dense = eqx.filter_jit(features.dense)

            def rows(xb, yb):
                return dense(xb), yb

        accumulate = (not dataset.in_memory) if accumulate is None else accumulate
        if n_observations is None:
            n_observations = dataset.n_observations
        if accumulate:
            if form == "dual":
                raise ValueError(
                    "form: 'dual' needs Φ in memory; accumulated statistics are primal"
                )
            stats = None
            for xb, yb, _ in dataset.blocks(block_size):
                block = _primal_stats(*rows(xb, yb))
                stats = block if stats is None else jax.tree.map(jnp.add, stats, block)
            gram, cross, yty = stats
            n_obs = jnp.asarray(n_observations, gram.dtype)
            return cls(None, None, gram, cross, "primal", yty, n_obs)
        phis, ys = [], []
        for xb, yb, _ in dataset.blocks(block_size):
            phi_b, y_b = rows(xb, yb)
            phis.append(phi_b)
            ys.append(y_b)
        n = sum(len(y_b) for y_b in ys)
        form = _resolve_form(form, n, *phis[0].shape[1:])
        if form == "primal":  # pad here, or from_arrays copies the concatenated Φ to pad it
            pad = row_padding(n)
            phis.append(jnp.zeros((pad, *phis[0].shape[1:]), phis[0].dtype))
            ys.append(jnp.zeros((pad, ys[0].shape[1]), ys[0].dtype))
        return cls.from_arrays(jnp.concatenate(phis), jnp.concatenate(ys), form, n_observations)

    @classmethod
    def from_arrays(
        cls,
        Phi,
        Y,
        form: Literal["auto", "primal", "dual"] = "auto",
        n_observations: float | None = None,
    ) -> DenseGaussianModel:
        """From a dense (n, m, d) feature array and (n, m) targets; ``n_observations``
        the likelihood counts (default n; Σw for rows scaled by √w, see ``ArrayDataset``).

        In primal form Φ and Y are padded with zero rows to a multiple of 2^(⌊log₂ n⌋ − 3)
        (at most 1/8 more rows; a zero row changes no Gram matrix, residual or γ_k), so
        that fits to nearby n (cross-validation folds, subsamples) reuse compiled code."""
        n, m, d = Phi.shape
        if Y.shape != (n, m):
            raise ValueError(f"Y must have shape (n, m)={(n, m)}, got {Y.shape}")
        form = _resolve_form(form, n, m, d)
        gram = cross = None
        if form == "primal":
            pad = row_padding(n)
            if pad:
                Phi = jnp.pad(Phi, ((0, pad), (0, 0), (0, 0)))
                Y = jnp.pad(Y, ((0, pad), (0, 0)))
            gram, cross, _ = _primal_stats(Phi, Y)
        n_obs = jnp.asarray(n if n_observations is None else n_observations, Phi.dtype)
        return cls(Phi=Phi, Y=Y, gram=gram, cross=cross, form=form, n_observations=n_obs)

    @property
    def n(self) -> Float[Array, ""]:
        """Observations the likelihood counts (the rows, or Σw under frequency weights)."""
        return self.n_observations

    @property
    def m(self) -> int:
        return int(self.gram.shape[0] if self.Phi is None else self.Phi.shape[1])

    def posterior(self, prior: Prior, beta: Float[Array, " m"]) -> ExactPosterior:
        """N(θ̄, H⁻¹) for the given prior and noise precisions."""
        if self.form == "primal":
            return ExactPosterior.from_gram(
                jnp.einsum("k,kde->de", beta, self.gram), beta @ self.cross, prior
            )
        sqrt_beta = jnp.sqrt(beta)
        Psi = (self.Phi * sqrt_beta[None, :, None]).reshape(-1, self.Phi.shape[-1])
        return ExactPosterior.fit(Psi, (self.Y * sqrt_beta).reshape(-1), prior, form="dual")

    def residual_sq(self, mean: Float[Array, " d"]) -> Float[Array, " m"]:
        """‖y_k − Φ_k θ̄‖² for each output k."""
        if self.Phi is None:
            fit = jnp.einsum("d,kde,e->k", mean, self.gram, mean) - 2 * self.cross @ mean
            return jnp.maximum(self.yty + fit, 0.0)
        r = self.Y - jnp.einsum("nkd,d->nk", self.Phi, mean)
        return jnp.sum(r**2, axis=0)

    def gamma_per_output(
        self, post: ExactPosterior, beta: Float[Array, " m"]
    ) -> Float[Array, " m"]:
        """γ_k = β_k Tr(H⁻¹Φ_kᵀΦ_k); they sum to γ = d − Tr(AH⁻¹)."""
        if self.m == 1:
            return jnp.reshape(
                post.prior.d - jnp.sum(post.prior.precision() * post.diag_covariance()), (1,)
            )
        if self.Phi is None:
            return beta * jnp.einsum("de,ked->k", post.covariance(), self.gram)
        per_row = jax.vmap(post.predictive_variance, in_axes=1)(self.Phi)  # (m, n)
        return beta * jnp.sum(per_row, axis=1)

    def log_evidence(self, post: ExactPosterior, beta: Float[Array, " m"]) -> Float[Array, ""]:
        """log p(Y | α, β) at the posterior ``post`` (built with the same α, β)."""
        return log_evidence_from_terms(
            post.prior, beta, post.mean, self.residual_sq(post.mean), post.logdet(), self.n
        )

    def log_evidence_and_grad(self, prior: Prior, beta: Float[Array, " m"]):
        """(log p(Y | α, β), ∂/∂log α (G,), ∂/∂log β (m,), posterior) by autodiff through
        the dense Cholesky: the oracle for the SLQ evidence and its adjoint gradient."""

        def evidence(log_alpha, log_beta):
            b = jnp.exp(log_beta)
            post = self.posterior(prior.with_alpha(jnp.exp(log_alpha)), b)
            return self.log_evidence(post, b), post

        (value, post), (g_alpha, g_beta) = jax.value_and_grad(evidence, (0, 1), has_aux=True)(
            jnp.log(prior.alpha), jnp.log(beta)
        )
        return value, g_alpha, g_beta, post

    def mackay_step(
        self,
        prior: Prior,
        beta,
        hyper: GammaHyperprior = GammaHyperprior(),
        centre: Float[Array, " d"] | None = None,
    ):
        """One exact MacKay update. Returns (new α (G,), new β (m,), info) where info holds
        the posterior, γ per group, the evidence and the score (evidence + hyperprior).

        α_g = (γ_g + 2a)/(‖c_g‖² + 2b) and β_k = (n − γ_k + 2a')/(‖y_k − Φ_kc‖² + 2b') with
        c the posterior mean θ̄, or ``centre`` where given (the MAP weights w̄ of a network:
        MacKay's Laplace update around the mode, ``LinearisedModel.fit(hyper=blm.MacKay(centre="map"))``).
        The evidence in info is taken at the same c: at ``centre``, Laplace's evidence
        around the mode, the objective that update ascends."""
        post = self.posterior(prior, beta)
        c = post.mean if centre is None else centre
        gamma_g = prior.group_sizes - prior.group_sum(prior.precision() * post.diag_covariance())
        gamma_k = self.gamma_per_output(post, beta)
        new_alpha = (gamma_g + 2 * hyper.alpha_shape) / (
            prior.group_sum(c**2) + 2 * hyper.alpha_rate
        )
        residual_sq = self.residual_sq(c)
        new_beta = (self.n - gamma_k + 2 * hyper.beta_shape) / (residual_sq + 2 * hyper.beta_rate)
        evidence = log_evidence_from_terms(prior, beta, c, residual_sq, post.logdet(), self.n)
        info = {
            "posterior": post,
            "gamma": jnp.sum(gamma_g),
            "data_fit": jnp.sum(beta * residual_sq),
            "evidence": evidence,
            "score": evidence + hyper.log_density(prior.alpha, beta),
        }
        return new_alpha, new_beta, info


@eqx.filter_jit
def exact_mackay_step(
    model: DenseGaussianModel,
    prior: Prior,
    beta,
    hyper: GammaHyperprior = GammaHyperprior(),
    centre: Float[Array, " d"] | None = None,
):
    """``model.mackay_step`` compiled: the same shapes (and, in primal form, nearby n)
    reuse one compilation across refits."""
    return model.mackay_step(prior, beta, hyper, centre)
