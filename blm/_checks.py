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
    if arr.dtype == object and arr.ndim > 0:  # e.g. numbers of mixed Python types
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must hold numbers: {err}") from err
    _check_real(arr.dtype, name)
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
            hint = ""
            if allowed == (2,) and arr.ndim == 1:
                hint = (
                    ". Reshape your data either using array.reshape(-1, 1) if it has a single "
                    "feature or array.reshape(1, -1) if it is a single sample"
                )
            raise ValueError(f"{name} must be {want}, got shape {arr.shape}{hint}")
    if arr.size == 0:
        if arr.ndim == 2:
            _check_rows_and_columns(arr.shape, name)
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one value is needed")
    check_finite(arr, name)
    return arr


def as_csr(value, name: str):
    """A scipy sparse matrix ``value`` as a float64 ``csr_array``; raise naming ``name`` if
    it is complex, empty or holds NaN/inf."""
    import scipy.sparse

    _check_real(value.dtype, name)
    arr = scipy.sparse.csr_array(value, dtype=np.float64)
    _check_rows_and_columns(arr.shape, name)
    check_finite(arr.data, name)
    return arr


def _check_real(dtype, name: str) -> None:
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(
            f"{name} must hold real numbers (Complex data not supported), got dtype {dtype}"
        )


def _check_rows_and_columns(shape: tuple[int, int], name: str) -> None:
    """Raise if a 2-D ``shape`` has no rows or no columns (scikit-learn's wording)."""
    if 0 in shape:
        what = "sample(s)" if shape[0] == 0 else "feature(s)"
        raise ValueError(f"{name} has 0 {what} (shape={shape}) while a minimum of 1 is required.")


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


def non_negative(value, name: str) -> np.ndarray:
    """``value`` as a float array whose entries are all finite and ≥ 0."""
    arr = as_float_array(value, name)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {arr if arr.size < 8 else arr.min()}")
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
            f"sample_weight must be >= 0 and not all zero, got min {w.min()}, sum {w.sum()}"
        )
    return w


class _NotFittedError(ValueError, AttributeError):
    """Used before fitting, where scikit-learn (whose NotFittedError it mirrors) is absent."""


def not_fitted_error(message: str) -> Exception:
    """The error for using an unfitted estimator: scikit-learn's ``NotFittedError`` where
    scikit-learn is installed (its model selection and checks expect it), else one that
    is, like it, both a ValueError and an AttributeError."""
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        return _NotFittedError(message)
    return NotFittedError(message)


def feature_names(X) -> np.ndarray | None:
    """The column names of a table X (a pandas DataFrame, or anything with ``columns``)
    as an object array when they are all strings, else None (scikit-learn's rule; mixed
    string and non-string names raise TypeError naming X)."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    is_str = [isinstance(name, str) for name in names]
    if all(is_str) and names.size:
        return names
    if any(is_str):
        raise TypeError(
            "X: feature names must all be strings, or none of them; got "
            f"{sorted({type(name).__name__ for name in names})}; convert them, e.g. "
            "X.columns = X.columns.astype(str)"
        )
    return None


def check_feature_names(
    fitted: np.ndarray | None, names: np.ndarray | None, estimator: str
) -> None:
    """Column names at predict time (``feature_names(X)``) against those at fit
    (scikit-learn's checks and wording): a ValueError listing unseen and missing names or
    a changed order; a UserWarning when only one of the two has names."""
    from blm.exceptions import warn

    if (fitted is None) != (names is None):
        has, had = ("has", "without") if fitted is None else ("does not have valid", "with")
        warn(f"X {has} feature names, but {estimator} was fitted {had} feature names")
    if fitted is None or names is None:
        return
    if len(names) == len(fitted) and np.array_equal(names, fitted):
        return
    message = "The feature names should match those that were passed during fit.\n"
    unexpected = sorted(set(names) - set(fitted))
    missing = sorted(set(fitted) - set(names))
    for title, group in (
        ("Feature names unseen at fit time:\n", unexpected),
        ("Feature names seen at fit time, yet now missing:\n", missing),
    ):
        if group:
            message += title + "".join(f"- {name}\n" for name in group[:5])
            message += "- ...\n" if len(group) > 5 else ""
    if not unexpected and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)
