r"""Bundled real data sets turned into regression designs (no network: the data ship
with scikit-learn and statsmodels, installed by the ``examples`` extra).

* ``co2_design``: weekly Mauna Loa CO₂ (statsmodels), a climate-style regression on a
  polynomial trend plus random Fourier features of time (Rahimi & Recht), so the number
  of columns can be made as large as wanted.
* ``macro_design``: US quarterly macro-economic series (statsmodels ``macrodata``):
  inflation regressed on standardised current and lagged indicators, with one prior
  group per indicator.
* ``digits_split``: scikit-learn's 8 × 8 handwritten digits scaled to [0, 1], split into
  train and test, with ``rotate_digits`` giving the rotated copies used as
  out-of-distribution inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from blm.features import RandomFourierFeatures


def _need(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"this data set needs {module!r}: pip install 'blm[examples]'") from err


def co2_series() -> tuple[np.ndarray, np.ndarray]:
    """(time in years since 1958, CO₂ in ppm), missing weeks dropped."""
    sm = _need("statsmodels.api")
    df = sm.datasets.co2.load_pandas().data.dropna()
    t = (df.index - df.index[0]).days.to_numpy() / 365.25
    return t, df["co2"].to_numpy(dtype=float)


def co2_design(
    n_features: int = 200, lengthscale: float = 0.5, degree: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Design for CO₂: [polynomial trend in t/10 | random Fourier features of t]
    (``blm.RandomFourierFeatures``, lengthscale in years).

    Returns (X, y, t); X has ``degree + n_features`` columns.
    """
    t, y = co2_series()
    trend = np.stack([(t / 10.0) ** k for k in range(1, degree + 1)], axis=1)
    rff = RandomFourierFeatures(jax.random.PRNGKey(seed), 1, n_features, lengthscale)
    return np.hstack([trend, np.asarray(rff.transform(jnp.asarray(t[:, None])), dtype=float)]), y, t


MACRO_INDICATORS = (
    "realgdp",
    "realcons",
    "realinv",
    "realgovt",
    "realdpi",
    "m1",
    "tbilrate",
    "unemp",
    "pop",
)
"""The indicators of ``macro_design``, in its column (and prior group) order."""


def macro_design(lags: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inflation on standardised indicators and their lags (statsmodels ``macrodata``).

    Returns (X, y, groups): one prior group per indicator (its current value and lags).
    """
    sm = _need("statsmodels.api")
    df = sm.datasets.macrodata.load_pandas().data
    names = MACRO_INDICATORS
    growth = {"realgdp", "realcons", "realinv", "realgovt", "realdpi", "m1", "pop"}
    series = []
    for name in names:
        v = df[name].to_numpy(dtype=float)
        series.append(np.diff(np.log(v)) * 400 if name in growth else v[1:])
    Z = np.stack(series, axis=1)
    Z = (Z - Z.mean(0)) / Z.std(0)
    y = df["infl"].to_numpy(dtype=float)[1:]
    cols, groups = [], []
    for lag in range(lags + 1):
        cols.append(Z[lags - lag : len(Z) - lag])
        groups.extend(range(len(names)))
    return np.hstack(cols), y[lags:], np.asarray(groups)


def digits_split(
    seed: int = 0, n_train: int = 1200
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): the 1 797 digits as 64 pixels in [0, 1] and labels
    0–9, a random ``n_train`` of them for training (``seed``) and the rest for testing."""
    datasets = _need("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    idx = np.random.default_rng(seed).permutation(len(y))
    tr, te = idx[:n_train], idx[n_train:]
    return X[tr] / 16.0, y[tr], X[te] / 16.0, y[te]


def rotate_digits(X: np.ndarray, degrees: float = 90.0) -> np.ndarray:
    """Each 8 × 8 digit (a row of 64 pixels) rotated by ``degrees`` (bilinear, zero fill):
    inputs off the training distribution."""
    from scipy.ndimage import rotate

    images = np.asarray(X).reshape(-1, 8, 8)
    out = rotate(images, degrees, axes=(1, 2), reshape=False, order=1, mode="constant")
    return np.clip(out, 0.0, 1.0).reshape(len(images), 64)


def image_patches(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random 8 × 8 grey-level patches of scikit-learn's two bundled photographs
    (``load_sample_images``), block-averaged from 32 × 32 and each stretched to span
    [0, 1] like a digit's pixels: natural-image inputs with digit-like contrast, out of
    the digits' distribution."""
    datasets = _need("sklearn.datasets")
    images = [img.mean(axis=2) / 255.0 for img in datasets.load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((n, 64))
    for i in range(n):
        img = images[rng.integers(len(images))]
        r, c = rng.integers(img.shape[0] - 32), rng.integers(img.shape[1] - 32)
        patch = img[r : r + 32, c : c + 32].reshape(8, 4, 8, 4).mean(axis=(1, 3)).ravel()
        out[i] = (patch - patch.min()) / max(patch.max() - patch.min(), 1e-12)
    return out
