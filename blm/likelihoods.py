r"""Likelihoods p(y | f) of the linear model's outputs f = φ(x) θ ∈ ℝ^m.

Each one supplies, per data point i, the precision B_i (the Hessian of −log p(y_i | f)
in f) and a factor L_i with L_i L_iᵀ = B_i. Solvers use B only through these:
``precision_mul`` (B_i v_i), ``sqrt_mul`` (L_i ξ_i, which turns standard normal noise ξ
into noise of covariance B, also for a singular B) and ``sqrt_precision`` (the dense
L_i, to whiten a small design for the exact solver).

For a model linearised at f̄_i = f(w̄, x_i) (``blm.linearised``), B_i is evaluated at
f̄_i and the targets of the linear model are the pseudo-targets J_i w̄ + u_i, with u_i any
solution of B_i u_i = ∇_f log p(y_i | f̄_i) (``pseudo_targets``): then ΦᵀB(Jw̄ + u) =
ΦᵀBJw̄ + Φᵀ∇ log p, so the linear model's mean is one Newton step of the linearised
log-likelihood from w̄ (for a Gaussian, u_i = y_i − f̄_i and the step is exact).

``Gaussian`` (regression), ``Bernoulli`` (m = 1 logit) and ``Categorical`` (m logits,
softmax) are here. ``encode_targets`` checks user labels and returns them as (n, m).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from blm._checks import as_float_array, positive, positive_int


class Likelihood(eqx.Module):
    """Interface every likelihood implements; ``f`` and ``y`` have shape ``(b, m)``.
    ``precision_mul`` and ``sqrt_mul`` act on the last axis and broadcast: f of shape
    (b, 1, m) against v of shape (b, k, m) applies each row's B_i (L_i) to its k vectors."""

    @property
    @abc.abstractmethod
    def m(self) -> int:
        """Number of outputs per data point."""

    @abc.abstractmethod
    def precision_mul(self, f: Float[Array, "b m"], v: Float[Array, "b m"]) -> Float[Array, "b m"]:
        """B_i v_i for each row."""

    @abc.abstractmethod
    def sqrt_mul(self, f: Float[Array, "b m"], xi: Float[Array, "b m"]) -> Float[Array, "b m"]:
        """L_i ξ_i with L_i L_iᵀ = B_i."""

    @abc.abstractmethod
    def sqrt_precision(self, f: Float[Array, "b m"]) -> Float[Array, "b m m"]:
        """The factors L_i themselves (dense; for small problems)."""

    @abc.abstractmethod
    def precision_diagonal(self, f: Float[Array, "b m"]) -> Float[Array, "b m"]:
        """diag(B_i) for each row."""

    @abc.abstractmethod
    def log_likelihood(self, f: Float[Array, "b m"], y: Float[Array, "b m"]) -> Float[Array, ""]:
        """Σ_i log p(y_i | f_i)."""

    @abc.abstractmethod
    def logdet_precision(self, f: Float[Array, "b m"]) -> Float[Array, ""]:
        """Σ_i log det B_i (enters the evidence)."""

    @abc.abstractmethod
    def pseudo_targets(self, f: Float[Array, "b m"], y: Float[Array, "b m"]) -> Float[Array, "b m"]:
        """u_i with B_i u_i = ∇_f log p(y_i | f_i): the Newton increment in output space."""

    @abc.abstractmethod
    def encode_targets(self, y) -> np.ndarray:
        """User targets as a float (n, m) array, checked (e.g. labels in the class range)."""

    @property
    @abc.abstractmethod
    def noise_precision(self) -> Float[Array, " m"] | None:
        """The free noise precisions β (m,) that the evidence fits, or None where the
        likelihood has none (its B_i is fixed by f_i, as a classifier's)."""

    @abc.abstractmethod
    def with_noise_precision(self, beta) -> Likelihood:
        """The same likelihood with noise precisions ``beta`` (traceable); one without a
        noise precision returns itself for ``beta`` None or empty.

        Raises:
            ValueError: ``beta`` given to a likelihood without a noise precision.
        """


def _without_noise_precision(likelihood: Likelihood, beta) -> Likelihood:
    if beta is not None and np.size(beta) > 0:
        raise ValueError(
            f"beta: {type(likelihood).__name__} has no noise precision to set (got {beta!r})"
        )
    return likelihood


class Gaussian(Likelihood):
    r"""y_i ~ N(f_i, diag(β)⁻¹): one noise precision β_k per output k.

    B_i = diag(β) for every i, so L_i = diag(√β). With ``m`` outputs and a scalar β
    given, the same β is used for every output.

    Args:
        beta: β > 0, a scalar or one per output.
        m: the number of outputs (None: as many as ``beta`` holds).

    Raises:
        ValueError: β not positive, or neither 1 nor m values.

    Example:
        >>> import blm
        >>> blm.Gaussian(4.0, m=2).beta.tolist()
        [4.0, 4.0]
    """

    beta: Float[Array, " m"]

    def __init__(self, beta, m: int | None = None):
        beta_np = positive(beta, "beta").reshape(-1)
        if m is not None:
            if beta_np.shape[0] == 1:
                beta_np = beta_np.repeat(m)
            elif beta_np.shape[0] != m:
                raise ValueError(f"beta must have 1 or m={m} entries, got {beta_np.shape[0]}")
        self.beta = jnp.asarray(beta_np, dtype=jnp.result_type(float))

    def with_beta(self, beta) -> Gaussian:
        """The same likelihood with new noise precisions (traceable, no validation).

        Args:
            beta: (m,) precisions, or a scalar for every output.

        Returns:
            The new ``Gaussian``.
        """
        beta = jnp.broadcast_to(jnp.asarray(beta, self.beta.dtype), self.beta.shape)
        return eqx.tree_at(lambda g: g.beta, self, beta)

    @property
    def noise_precision(self) -> Float[Array, " m"]:
        return self.beta

    def with_noise_precision(self, beta) -> Gaussian:
        return self.with_beta(beta)

    @property
    def m(self) -> int:
        return int(self.beta.shape[0])

    def precision_mul(self, f, v):
        return self.beta * v

    def sqrt_mul(self, f, xi):
        return jnp.sqrt(self.beta) * xi

    def precision_diagonal(self, f):
        return jnp.broadcast_to(self.beta, f.shape)

    def sqrt_precision(self, f):
        return jnp.broadcast_to(jnp.diag(jnp.sqrt(self.beta)), (f.shape[0], self.m, self.m))

    def log_likelihood(self, f, y):
        r = y - f
        n = f.shape[0]
        return 0.5 * (
            n * jnp.sum(jnp.log(self.beta))
            - jnp.sum(self.beta * r**2)
            - n * self.m * jnp.log(2 * jnp.pi)
        )

    def logdet_precision(self, f):
        return f.shape[0] * jnp.sum(jnp.log(self.beta))

    def pseudo_targets(self, f, y):
        return y - f

    def encode_targets(self, y) -> np.ndarray:
        y = as_float_array(y, "y", ndim=(1, 2))
        y = y.reshape(y.shape[0], -1)
        if y.shape[1] != self.m:
            raise ValueError(
                f"y must have m={self.m} columns for this likelihood, got {y.shape[1]}"
            )
        return y


def _labels(y, n_classes: int) -> np.ndarray:
    """Integer class labels in [0, n_classes), as a 1-D int array (a clear error otherwise)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y must be a non-empty 1-D array of class labels, got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        if not np.issubdtype(y.dtype, np.floating) or np.any(y != np.round(y)):
            raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if np.any(y < 0) or np.any(y >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)]
        raise ValueError(
            f"y holds labels outside the class range [0, {n_classes}): e.g. {bad[:5].tolist()}"
        )
    return y.astype(np.int64)


class _Classifier(Likelihood):
    """Abstract: a likelihood whose precision B_i is fixed by f_i (no noise precision)."""

    @property
    def noise_precision(self) -> None:
        return None

    def with_noise_precision(self, beta) -> Likelihood:
        return _without_noise_precision(self, beta)


class Bernoulli(_Classifier):
    r"""y_i ∈ {0, 1} with p(y_i = 1 | f_i) = σ(f_i), one logit per input (m = 1).

    B_i = p_i(1 − p_i), L_i = √B_i, and u_i = (y_i − p_i)/(p_i(1 − p_i)) (the working
    response of iteratively reweighted least squares). No arguments.

    Example:
        >>> import blm
        >>> blm.Bernoulli().m
        1
    """

    @property
    def m(self) -> int:
        return 1

    def _b(self, f):
        p = jax.nn.sigmoid(f)
        return p * (1 - p)

    def precision_mul(self, f, v):
        return self._b(f) * v

    def sqrt_mul(self, f, xi):
        return jnp.sqrt(self._b(f)) * xi

    def precision_diagonal(self, f):
        return self._b(f)

    def sqrt_precision(self, f):
        return jnp.sqrt(self._b(f))[..., None]

    def log_likelihood(self, f, y):
        return jnp.sum(y * f - jax.nn.softplus(f))

    def logdet_precision(self, f):
        return jnp.sum(jnp.log(self._b(f)))

    def pseudo_targets(self, f, y):
        # (y − p)/(p(1 − p)) = y/p − (1 − y)/(1 − p), with 1/p = 1 + e^{−f}: no 0/0 at
        # saturated logits
        return jnp.where(y > 0, y * (1 + jnp.exp(-f)), 0.0) - jnp.where(
            y < 1, (1 - y) * (1 + jnp.exp(f)), 0.0
        )

    def encode_targets(self, y) -> np.ndarray:
        return _labels(y, 2).astype(np.float64)[:, None]

    def probs(self, f: Float[Array, "... 1"]) -> Float[Array, "... 2"]:
        """Class probabilities (1 − σ(f), σ(f))."""
        p = jax.nn.sigmoid(f)
        return jnp.concatenate([1 - p, p], axis=-1)


class Categorical(_Classifier):
    r"""y_i ∈ {0, …, m−1} with p(y_i | f_i) = softmax(f_i): m logits per input.

    B_i = diag(p_i) − p_i p_iᵀ (singular: the logits' common shift is free), with the
    factor L_i = diag(√p_i) − p_i √p_iᵀ: L_i L_iᵀ = diag(p) − 2ppᵀ + p(Σ_k p_k)pᵀ = B_i.
    The gradient is y_i − p_i (y one-hot), and u_i = y_i/p_i − 1 solves B_i u_i = y_i − p_i
    because Σ_k (y_ik − p_ik) = 0.

    Args:
        n_classes: m ≥ 2 classes (labels 0, …, m − 1).

    Raises:
        ValueError: fewer than 2 classes.

    Example:
        >>> import blm
        >>> blm.Categorical(10).m
        10
    """

    n_classes: int = eqx.field(static=True)

    def __init__(self, n_classes: int):
        self.n_classes = positive_int(n_classes, "n_classes", minimum=2)

    @property
    def m(self) -> int:
        return self.n_classes

    def precision_mul(self, f, v):
        p = jax.nn.softmax(f, axis=-1)
        return p * v - p * jnp.sum(p * v, axis=-1, keepdims=True)

    def sqrt_mul(self, f, xi):
        p = jax.nn.softmax(f, axis=-1)
        s = jnp.sqrt(p)
        return s * xi - p * jnp.sum(s * xi, axis=-1, keepdims=True)

    def precision_diagonal(self, f):
        p = jax.nn.softmax(f, axis=-1)
        return p - p**2

    def sqrt_precision(self, f):
        p = jax.nn.softmax(f, axis=-1)
        s = jnp.sqrt(p)
        return jax.vmap(jnp.diag)(s) - p[:, :, None] * s[:, None, :]

    def log_likelihood(self, f, y):
        return jnp.sum(y * jax.nn.log_softmax(f, axis=-1))

    def logdet_precision(self, f):
        """−∞: B_i is singular (the evidence of a softmax model needs a reduced basis)."""
        return jnp.asarray(-jnp.inf, f.dtype)

    def pseudo_targets(self, f, y):
        # 1/p_k = exp(logsumexp(f) − f_k); classes with y_k = 0 contribute 0 (no 0·∞)
        inv_p = jnp.exp(jax.nn.logsumexp(f, axis=-1, keepdims=True) - f)
        return jnp.where(y > 0, y * inv_p, 0.0) - 1.0

    def encode_targets(self, y) -> np.ndarray:
        return np.eye(self.n_classes)[_labels(y, self.n_classes)]

    def probs(self, f: Float[Array, "... m"]) -> Float[Array, "... m"]:
        """Class probabilities softmax(f)."""
        return jax.nn.softmax(f, axis=-1)


def is_classifier(likelihood: Likelihood) -> bool:
    """Whether ``likelihood`` is over class labels (``Bernoulli``, ``Categorical``)."""
    return isinstance(likelihood, _Classifier)


def n_classes_of(likelihood: Likelihood) -> int | None:
    """A ``Categorical``'s number of classes; None for any other likelihood."""
    return likelihood.n_classes if isinstance(likelihood, Categorical) else None


def observations_per_row(likelihood: Likelihood) -> int:
    """The rank of B_i, the directions of one row's outputs the likelihood observes: m,
    or m − 1 for a ``Categorical`` (its logits' common shift is unobserved)."""
    return likelihood.m - 1 if isinstance(likelihood, Categorical) else likelihood.m


def checked_likelihood(likelihood, name: str = "likelihood") -> Likelihood:
    """``likelihood`` if it is a blm ``Likelihood``, else a ``TypeError`` naming ``name``."""
    if not isinstance(likelihood, Likelihood):
        raise TypeError(f"{name} must be a blm Likelihood, got {type(likelihood).__name__}")
    return likelihood
