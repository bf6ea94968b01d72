"""``BayesianLinearRegression``'s predictions: the predictive mean, sd √(x H⁻¹ xᵀ + 1/β)
or covariance X_c H⁻¹ X_cᵀ + I/β of new rows (dense, or sparse and never densified for
sampled posteriors), and draws from the posterior predictive, all in the precision the
model was fitted in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from blm._checks import as_csr, as_float_array, frequency_weights, positive_int
from blm.data import default_dtype
from blm.memory import available_memory
from blm.precision import in_fitted_precision
from blm.solvers.sampled import SampledPosterior


def validated_rows(est, X):
    """X as a float array or a CSR array of the fitted number of columns."""
    X = as_csr(X, "X") if scipy.sparse.issparse(X) else as_float_array(X, "X", ndim=2)
    p = est.X_offset_.shape[0]
    if X.shape[1] != p:
        raise ValueError(
            f"X has {X.shape[1]} features, but BayesianLinearRegression is expecting {p} "
            "features as input (the columns of X in fit)"
        )
    return X


def centred_products(est, X, weights) -> np.ndarray:
    """(x_i − x̄) w_jkᵀ for the rows x_i of X (dense, or sparse and never densified)
    and n weight vectors w_j (n, m·p), output k's block w_jk: (t, m, n)."""
    p, m = est.X_offset_.shape[0], est.y_offset_.shape[0]
    W = np.asarray(weights, est._dtype).reshape(-1, m, p)
    return np.stack([X @ W[:, k].T for k in range(m)], axis=1) - (W @ est.X_offset_).T


@in_fitted_precision
def predict(est, X, return_std: bool = False, return_cov: bool = False):
    """``predict`` without the column-name check (``blm predict`` checks a file's
    names once, then predicts its rows block by block)."""
    if return_std and return_cov:
        raise ValueError("return_std and return_cov: at most one of them can be True")
    X = validated_rows(est, X)
    coef = np.atleast_2d(est.coef_)
    mean = np.asarray(X @ coef.T) + est.y_offset_ - coef @ est.X_offset_
    mean = mean[:, 0] if est._y_1d else mean
    if not (return_std or return_cov):
        return mean
    m, t = est.y_offset_.shape[0], X.shape[0]
    if return_cov:
        need = 2 * m * t * t * np.dtype(default_dtype()).itemsize
        if need > available_memory():
            raise MemoryError(
                f"return_cov: the covariance of {t} rows x {m} outputs needs "
                f"{need / 2**30:.1f} GiB (twice m·t² numbers), more than the memory "
                "available; predict fewer rows at a time, or use return_std=True"
            )
    if scipy.sparse.issparse(X) and isinstance(est.posterior_, SampledPosterior):
        proj = centred_products(est, X, est.posterior_.samples)  # (t, m, k)
        k = proj.shape[-1]
        cov = np.einsum("tmk,smk->mts", proj, proj) / k if return_cov else None
        var = np.mean(proj**2, axis=-1).T  # (m, t)
    else:
        X = X.toarray() if scipy.sparse.issparse(X) else X
        Xc = jnp.asarray(X - est.X_offset_, default_dtype())
        rows = est._features.dense(Xc)  # (t, m, d): output k's rows in [:, k]
        if return_cov:  # outputs are independent: one t × t block each
            cov = np.stack(
                [np.asarray(est.posterior_.predictive_covariance(rows[:, k])) for k in range(m)]
            )
        else:
            var = est.posterior_.predictive_variance(rows.reshape(t * m, -1))
            var = np.asarray(var).reshape(t, m).T
    noise = 1.0 / np.atleast_1d(est.beta_)  # (m,)
    if return_cov:
        cov = (cov + noise[:, None, None] * np.eye(t)).astype(mean.dtype, copy=False)
        return mean, (cov[0] if est._y_1d else cov.transpose(1, 2, 0))
    std = np.sqrt(var + noise[:, None]).T.astype(mean.dtype, copy=False)  # (t, m)
    return mean, (std[:, 0] if est._y_1d else std)


@in_fitted_precision
def sample_y(est, X, n_samples: int = 1, random_state=0, noise: bool = True) -> np.ndarray:
    """Draws from the posterior predictive at the rows of X, as scikit-learn's
    ``GaussianProcessRegressor.sample_y``: y*_j = (x − x̄) θ_j + ȳ (+ ε_j, ε_j ~ N(0, 1/β)
    with ``noise``) for posterior draws θ_j, one per column: (t, n_samples), or
    (t, m, n_samples) for m outputs. Exact solver: fresh draws from the Cholesky
    factor; sgd/cg: the first ``n_samples`` of the k stored draws (n_samples ≤ k).
    For posterior predictive checks and nonlinear functionals of a prediction (the
    maximum of a forecast path, the chance a mean exceeds a threshold)."""
    est._check_fitted()
    est._check_names(X)
    n_samples = positive_int(n_samples, "n_samples")
    X = validated_rows(est, X)
    rng = np.random.default_rng(random_state)
    post = est.posterior_
    if isinstance(post, SampledPosterior):
        if n_samples > post.k:
            raise ValueError(
                f"n_samples must be at most the {post.k} draws stored by the {est._solver_name()} "
                f"fit, got {n_samples}; refit with n_samples={n_samples}"
            )
        z = post.samples[:n_samples]
    else:
        z = post.sample(jax.random.PRNGKey(int(rng.integers(2**31))), n_samples)
    draws = centred_products(est, X, post.mean + z) + est.y_offset_[None, :, None]
    if noise:
        scale = 1.0 / np.sqrt(np.atleast_1d(est.beta_))
        draws = draws + scale[None, :, None] * rng.standard_normal(draws.shape)
    draws = draws.astype(np.result_type(X.dtype, est._dtype), copy=False)
    return draws[:, 0] if est._y_1d else draws


@in_fitted_precision
def covariance(est) -> np.ndarray:
    """Posterior covariance H⁻¹ of the weights (exact, or the samples' second moment):
    d² numbers, refused with ``MemoryError`` where they (twice: the device's array
    and NumPy's copy) would not fit in the memory available."""
    est._check_fitted()
    d = int(est.posterior_.mean.shape[0])
    need = 2 * d * d * np.dtype(est.posterior_.mean.dtype).itemsize
    if need > available_memory():
        raise MemoryError(
            f"sigma_ is the {d} x {d} posterior covariance, {need / 2**30:.1f} GiB with its "
            "copy, more than the memory available; use coef_std_ (marginal sds), "
            "covariance_columns (the covariance of chosen coefficients), samples_ (draws "
            "of the coefficients) or predict(X, return_std=True), which never form it"
        )
    return np.asarray(est.posterior_.covariance())


@in_fitted_precision
def coef_std(est) -> np.ndarray:
    """Marginal posterior standard deviation of each weight, √diag(H⁻¹), shaped as
    ``coef_`` (a 95 % credible interval is ``coef_ ± 1.96 coef_std_``). Exact for the
    exact solver (from the Cholesky factor, d numbers at a time beside it); for sgd/cg
    the samples' estimate of diag(H⁻¹) with diag(H) as control variate
    (``SampledPosterior.diag_covariance``): the plain √((1/k) Σ_j z_ji²) is off by
    about 1/√(2k) relative (18 % at k = 16, 5 % at k = 200), the controlled one by
    that times √(1 − 1/(H_ii v_i)²) (3–4 % at k = 16 for a panel's one-hot effects;
    ``posterior_.diag_covariance_rel_sd() / 2`` estimates it per coefficient):
    memory d, where ``sigma_`` needs d²."""
    est._check_fitted()
    p, m = est.X_offset_.shape[0], est.y_offset_.shape[0]
    std = np.sqrt(np.asarray(est.posterior_.diag_covariance())).reshape(m, p)
    return std[0] if est._y_1d else std


def r2_score(est, X, y, sample_weight=None) -> float:
    """R² = 1 − Σ_i w_i(y_i − ŷ_i)² / Σ_i w_i(y_i − ȳ_w)² of the predictive mean ŷ
    (scikit-learn's ``RegressorMixin.score``; several outputs: the mean of their R²;
    a constant target scores 1 if predicted exactly, else 0)."""
    pred = np.asarray(est.predict(X))
    pred = pred.reshape(pred.shape[0], -1)
    y = as_float_array(y, "y", ndim=(1, 2))
    Y = y.reshape(y.shape[0], -1)
    if Y.shape != pred.shape:
        raise ValueError(f"y must have shape {pred.shape} (rows of X, outputs), got {y.shape}")
    n = pred.shape[0]
    w = np.ones(n) if sample_weight is None else frequency_weights(sample_weight, n)
    resid = w @ (Y - pred) ** 2
    total = w @ (Y - np.average(Y, axis=0, weights=w)) ** 2
    r2 = np.where(total > 0, 1.0 - resid / np.where(total > 0, total, 1.0), 1.0 * (resid == 0))
    return float(np.mean(r2))
