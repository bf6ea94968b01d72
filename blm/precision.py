"""Precision follows the input, as in scikit-learn.

float32 arrays are computed in float32 and give float32 results; float64 arrays (and
integers, booleans, lists) are computed in float64 and give float64 results. The
computation runs inside ``jax.enable_x64(...)``, a context that never changes the
user's global ``jax_enable_x64`` flag. A streamed ``HDF5Dataset`` is computed in JAX's
current default precision (float32 unless ``jax_enable_x64`` is on; ``blm fit
--float64``): its precision is a memory choice for data too large to hold.

Example:
    >>> import numpy as np
    >>> from blm.precision import computing_in, input_dtype
    >>> input_dtype(np.ones((3, 2), np.float32))
    dtype('float32')
    >>> with computing_in(np.float64):
    ...     pass  # jnp arrays made here default to float64
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from blm.data import default_dtype, is_file

FLOAT32, FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def input_dtype(X: Any) -> np.dtype:
    """The precision a fit to ``X`` computes in: float32 for float32 data (a NumPy or
    scipy sparse array, a table whose columns are all float32), JAX's current default
    for an ``HDF5Dataset``, float64 for anything else.

    Args:
        X: the inputs given to ``fit``.

    Returns:
        ``np.dtype('float32')`` or ``np.dtype('float64')``.
    """
    if is_file(X):
        return np.dtype(default_dtype())
    dtype = getattr(X, "dtype", None)
    if dtype is None and hasattr(X, "dtypes"):  # a pandas table: one dtype per column
        kinds = {np.dtype(d) if isinstance(d, np.dtype) else None for d in X.dtypes}
        dtype = kinds.pop() if len(kinds) == 1 else None
    try:
        return FLOAT32 if np.dtype(dtype) == FLOAT32 else FLOAT64
    except TypeError:  # an extension dtype
        return FLOAT64


def computing_in(dtype: np.dtype | type) -> Any:
    """A context computing in ``dtype`` (float32 or float64): ``jax.enable_x64`` on for
    float64, off for float32; the global flag is restored on exit.

    Args:
        dtype: ``np.float32`` or ``np.float64``.

    Raises:
        ValueError: for any other dtype.
    """
    dtype = np.dtype(dtype)
    if dtype not in (FLOAT32, FLOAT64):
        raise ValueError(f"dtype: float32 or float64 expected, got {dtype}")
    return jax.enable_x64(dtype == FLOAT64)


def in_fitted_precision(method: Callable) -> Callable:
    """Run a fitted object's method in the precision it was fitted in (its ``_dtype``;
    float64 arrays would be truncated to float32 outside ``jax.enable_x64``)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        dtype = getattr(self, "_dtype", None)
        if dtype is None:  # not fitted: the method raises its own error
            return method(self, *args, **kwargs)
        with computing_in(dtype):
            return method(self, *args, **kwargs)

    return wrapper
