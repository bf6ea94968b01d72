r"""A fitted linearised-Laplace posterior: predictions and persistence.

With the network output f̄(x) = f(w̄, x), samples z_j ~ N(0, H⁻¹) (or, after an exact fit,
the Cholesky factor of H) the predictive is f̄(x) + J(x)z: regression mean f̄(x) and
variance diag J(x)H⁻¹J(x)ᵀ + 1/β, classification by Monte Carlo over the samples or the
probit approximation (``blm.uncertainty.predictive``). ``blm.laplace`` fits it.
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from blm._checks import as_float_array, one_of, positive_int
from blm.evidence.loop import Trajectory
from blm.h5io import atomic_h5, open_h5
from blm.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    Likelihood,
    is_classifier,
    n_classes_of,
)
from blm.network import NetworkFeatures
from blm.priors import Prior
from blm.solvers.exact import ExactPosterior
from blm.solvers.sampled import SampledPosterior
from blm.uncertainty.predictive import mc_probs, probit_from_variance, sampled_outputs


def dense_jacobian(features: NetworkFeatures, xb: Array) -> Float[Array, "b m d"]:
    """J(x_i) = ∂f(w̄, x_i)/∂w for a block of inputs, by reverse mode (m vjps per input:
    ``factor_rows`` with L_i = I), as an explicit (b, m, d) array."""
    b, m = xb.shape[0], features.m
    eye = jnp.broadcast_to(jnp.eye(m, dtype=features.w.dtype), (b, m, m))
    return features.factor_rows(xb, eye)


@eqx.filter_jit
def _exact_block(features, exact: ExactPosterior, xb):
    """f(w̄, x_b) and diag J_l H⁻¹J_lᵀ of each output l, from the Jacobian rows (b, m, d)."""
    rows = dense_jacobian(features, xb).astype(exact.chol.dtype)
    var = jax.vmap(exact.predictive_variance, in_axes=1, out_axes=1)(rows)
    return features.offset(xb), var


class LaplacePosterior:
    """A fitted linearised-Laplace posterior: ``mean`` θ̄ (d,), ``samples`` z_j (k, d),
    ``alpha`` (G,), ``beta`` (Gaussian only), the EM ``trajectory`` and the last solve's
    ``diagnostics``; ``exact`` the Cholesky-factored posterior where it was fitted with
    ``solver="exact"`` (then variances are exact, the samples exact draws), else None,
    and ``log_evidence`` its Laplace log evidence (None without ``exact``:
    ``LinearisedModel.log_evidence`` estimates it for any posterior); ``converged``
    whether EM met its ``tol`` within ``em_steps`` (True for ``em_steps=0``) and
    ``last_change`` the last step's largest relative change of α (β).
    Predictions need only this object (and can be saved with ``save``)."""

    def __init__(
        self,
        features: NetworkFeatures,
        likelihood: Likelihood,
        alpha,
        posterior: SampledPosterior,
        groups,
        trajectory: Trajectory | None = None,
        diagnostics=None,
        exact: ExactPosterior | None = None,
        log_evidence: float | None = None,
    ):
        self.features = features
        self.likelihood = likelihood
        self.alpha = np.asarray(alpha)
        self.posterior = posterior
        self.groups = np.asarray(groups)
        self.trajectory = trajectory
        self.diagnostics = diagnostics
        self.exact = exact
        self.log_evidence = log_evidence
        self.converged = True  # set by LinearisedModel.fit: EM met its tol
        self.last_change = 0.0  # the last EM step's largest relative change of α (β)

    @property
    def mean(self) -> jax.Array:
        return self.posterior.mean

    @property
    def samples(self) -> jax.Array:
        return self.posterior.samples

    @property
    def beta(self) -> np.ndarray | None:
        return (
            np.asarray(self.likelihood.beta)
            if self.likelihood.noise_precision is not None
            else None
        )

    # -- prediction ----------------------------------------------------------------
    def _inputs(self, X) -> jax.Array:
        X = as_float_array(X, "X")
        if tuple(X.shape[1:]) != self.features.input_shape:
            raise ValueError(
                f"X must have rows of shape {self.features.input_shape}, got {X.shape[1:]}"
            )
        return jnp.asarray(X, self.features.w.dtype)

    def outputs(self, X, block_size: int = 256) -> tuple[jax.Array, jax.Array]:
        """The network's outputs and the samples' linearised deviations.

        Args:
            X: inputs (t, *input_shape).
            block_size: inputs per Jacobian-vector pass.

        Returns:
            (f(w̄, x) (t, m), J(x) z_j (k, t, m)).

        Raises:
            ValueError: rows of another shape than the network's inputs.
        """
        X = self._inputs(X)
        return sampled_outputs(
            self.features, X, self.samples, positive_int(block_size, "block_size")
        )

    def output_variance(self, X, block_size: int = 256) -> tuple[jax.Array, jax.Array]:
        """The variance of each linearised output, v = diag J(x)H⁻¹J(x)ᵀ: exact where the
        posterior is factored (``exact``; the Jacobian rows of ``block_size`` inputs at a
        time), else the samples' (1/k)Σ_j (J(x)z_j)².

        Args:
            X: inputs (t, *input_shape).
            block_size: inputs per pass.

        Returns:
            (f(w̄, x), v(x)), each (t, m).
        """
        if self.exact is None:
            f0, fz = self.outputs(X, block_size)
            return f0, jnp.mean(fz**2, axis=0)
        X, b = self._inputs(X), positive_int(block_size, "block_size")
        parts = [_exact_block(self.features, self.exact, X[i : i + b]) for i in range(0, len(X), b)]
        return jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts])

    def predict(self, X, block_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Regression: the predictive mean f(w̄, x) and variance v(x) + 1/β, with v the
        linearised output variance (``output_variance``: exact, or the samples').

        Args:
            X: inputs (t, *input_shape).
            block_size: inputs per pass.

        Returns:
            (mean, variance), each (t, m).

        Raises:
            TypeError: the likelihood is not Gaussian (use ``predict_proba``).

        Example:
            >>> mean, var = post.predict(X_test)  # doctest: +SKIP
        """
        if self.likelihood.noise_precision is None:
            raise TypeError("predict is for a Gaussian likelihood; use predict_proba")
        f0, var = self.output_variance(X, block_size)
        return np.asarray(f0), np.asarray(var + 1.0 / self.likelihood.beta)

    def predict_proba(self, X, method: str = "mc", block_size: int = 256) -> np.ndarray:
        """Classification: class probabilities, by Monte Carlo over the samples,
        p(x) = (1/k) Σ_j softmax(f(w̄, x) + J(x)z_j) (``"mc"``), or the probit
        approximation softmax(f/√(1 + πv/8)) with the logit variances v (exact where the
        posterior is factored; ``"probit"``).

        Args:
            X: inputs (t, *input_shape).
            method: ``"mc"`` or ``"probit"``.
            block_size: inputs per pass.

        Returns:
            (t, C) probabilities (C = 2 for ``Bernoulli``).

        Raises:
            TypeError: the likelihood is not a classifier's; ValueError: another method.

        Example:
            >>> proba = post.predict_proba(X_test, method="probit")  # doctest: +SKIP
        """
        if not is_classifier(self.likelihood):
            raise TypeError("predict_proba needs a Categorical or Bernoulli likelihood")
        one_of(method, "method", ("mc", "probit"))
        if method == "mc":
            return np.asarray(mc_probs(self.likelihood, *self.outputs(X, block_size)))
        return np.asarray(
            probit_from_variance(self.likelihood, *self.output_variance(X, block_size))
        )

    # -- persistence -----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write mean, samples, α, β, groups, the exact posterior's Cholesky factor (and Ψ
        in dual form) where there is one, and the model's structure and weight hashes to
        an HDF5 file (written to a temporary name, then renamed into place).

        Args:
            path: the file to write (its directory must exist).

        Raises:
            ValueError: naming ``path`` where it cannot be written.

        Example:
            >>> post.save("post.h5")  # doctest: +SKIP
        """
        with atomic_h5(path) as f:
            f["mean"] = np.asarray(self.mean)
            f["samples"] = np.asarray(self.samples)
            f["alpha"] = self.alpha
            f["groups"] = self.groups
            if self.exact is not None:
                f["exact/chol"] = np.asarray(self.exact.chol)
                f["exact/mean"] = np.asarray(self.exact.mean)
                f["exact"].attrs["form"] = self.exact.form
                if self.exact.psi is not None:
                    f["exact/psi"] = np.asarray(self.exact.psi)
                if self.log_evidence is not None:
                    f["exact"].attrs["log_evidence"] = self.log_evidence
            f.attrs["likelihood"] = type(self.likelihood).__name__
            if self.likelihood.noise_precision is not None:
                f["beta"] = np.asarray(self.likelihood.beta)
            if n_classes_of(self.likelihood) is not None:
                f.attrs["n_classes"] = n_classes_of(self.likelihood)
            f.attrs["structure_hash"] = self.features.structure_hash()
            f.attrs["weights_hash"] = self.features.weights_hash()
            f.attrs["input_shape"] = np.asarray(self.features.input_shape, np.int64)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        model: eqx.Module,
        filter_spec=eqx.is_inexact_array,
        apply=None,
    ) -> LaplacePosterior:
        """Read a posterior saved by ``save`` for ``model`` (the network it was fitted
        around).

        Args:
            path: the file.
            model: the trained network the posterior was fitted around.
            filter_spec: the leaves linearised, as given to ``linearise``.
            apply: the apply function, as given to ``linearise`` (non-Equinox models).

        Returns:
            The ``LaplacePosterior``, predicting as the saved one.

        Raises:
            ValueError: not a blm posterior file, or one fitted for another
                architecture or other weights.

        Example:
            >>> post = LaplacePosterior.load("post.h5", net)  # doctest: +SKIP
        """
        path = os.fspath(path)
        with open_h5(path, "path") as f:
            missing = [k for k in ("mean", "samples", "alpha", "groups") if k not in f]
            if missing or "structure_hash" not in f.attrs:
                raise ValueError(f"path: {path!r} is not a blm posterior file (lacks {missing})")
            features = NetworkFeatures(model, tuple(f.attrs["input_shape"]), filter_spec, apply)
            if features.structure_hash() != f.attrs["structure_hash"]:
                raise ValueError(
                    f"model: the posterior in {path!r} was fitted for another architecture "
                    "(parameter structure, shapes or output shape differ)"
                )
            if features.weights_hash() != f.attrs["weights_hash"]:
                raise ValueError(
                    f"model: the posterior in {path!r} was fitted around other weights than "
                    "this model's; load it with the network it was linearised at"
                )
            kind = f.attrs["likelihood"]
            if kind == "Gaussian":
                likelihood = Gaussian(f["beta"][()])
            elif kind == "Categorical":
                likelihood = Categorical(int(f.attrs["n_classes"]))
            else:
                likelihood = Bernoulli()
            dtype = features.w.dtype
            posterior = SampledPosterior(
                jnp.asarray(f["mean"][()], dtype), jnp.asarray(f["samples"][()], dtype)
            )
            alpha, groups = f["alpha"][()], f["groups"][()]
            exact, log_evidence = None, None
            if "exact" in f:
                g = f["exact"]
                exact = ExactPosterior(
                    mean=jnp.asarray(g["mean"][()]),
                    prior=Prior(alpha, groups),
                    chol=jnp.asarray(g["chol"][()]),
                    psi=jnp.asarray(g["psi"][()]) if "psi" in g else None,
                    form=str(g.attrs["form"]),
                )
                if "log_evidence" in g.attrs:
                    log_evidence = float(g.attrs["log_evidence"])
            return cls(
                features, likelihood, alpha, posterior, groups, None, None, exact, log_evidence
            )
