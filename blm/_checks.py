"""Input validation: every public entry point checks its arguments here and raises
an error that names the argument and says what was expected."""

from __future__ import annotations

import numbers

import numpy as np


def as_float_array(value, name: str, ndim: tuple[int, ...] | int | None = None) -> np.ndarray:
    """``value`` as a floating NumPy array; raise naming ``name`` if it is not numeric,
    has the wrong number of dimensions, is empty or holds NaN/inf."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # pragma: no cover - numpy raises many kinds here
        raise TypeError(
            f"{name} must be array-like of numbers, got {type(value).__name__}"
        ) from err
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(f"{k}-D" for k in allowed)
            raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one value is needed")
    check_finite(arr, name)
    return arr


def check_finite(arr, name: str) -> None:
    """Raise if ``arr`` holds NaN or inf, saying where the first one is."""
    arr = np.asarray(arr)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), first at index {first}"
        )


def positive(value, name: str) -> np.ndarray:
    """``value`` as a float array whose entries are all finite and strictly positive."""
    arr = as_float_array(value, name)
    if np.any(arr <= 0):
        raise ValueError(
            f"{name} must be strictly positive, got {arr if arr.size < 8 else arr.min()}"
        )
    return arr


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as a Python int no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def one_of(value, name: str, options: tuple[str, ...]) -> str:
    """``value`` if it is one of ``options``; raise listing them otherwise."""
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def same_length(a_len: int, b_len: int, a_name: str, b_name: str) -> None:
    """Raise if two data arrays do not have the same number of rows."""
    if a_len != b_len:
        raise ValueError(
            f"{a_name} and {b_name} must have the same number of rows, got {a_len} and {b_len}"
        )


def frequency_weights(sample_weight, n: int) -> np.ndarray:
    """``sample_weight`` as n finite float64 weights ≥ 0 with a positive sum."""
    w = as_float_array(sample_weight, "sample_weight", ndim=1)
    same_length(n, w.shape[0], "X", "sample_weight")
    if np.any(w < 0) or not w.sum() > 0:
        raise ValueError(
            f"sample_weight must be >= 0 with a positive sum, got min {w.min()}, sum {w.sum()}"
        )
    return w
