"""Sparse (CSR) rows as the padded (column, value) pairs ``SparseLinearFeatures`` reads:
conversion from CSR, the centring pair, row scaling, and CSR blocks of an HDF5 group.

Example:
    >>> import numpy as np
    >>> from blm.csr import padded_rows
    >>> rows = padded_rows(np.array([2.0, 3.0]), np.array([0, 2]), np.array([0, 1, 2]), 1, float)
    >>> rows[:, 0].tolist()
    [[0.0, 2.0], [2.0, 3.0]]
"""

from __future__ import annotations

import h5py
import numpy as np

from blm._checks import positive_int


def _default_dtype() -> np.dtype:
    from blm.data import default_dtype

    return default_dtype()


def padded_rows(data, indices, indptr, width: int, dtype=None) -> np.ndarray:
    """CSR rows (data, indices, indptr from 0) as (b, width, 2) (column, value) pairs,
    padded with (0, 0): the input format of ``SparseLinearFeatures``."""
    counts = np.diff(indptr)
    if counts.size and counts.max() > width:
        raise ValueError(f"width: rows have up to {counts.max()} entries, more than {width}")
    out = np.zeros((len(counts), width, 2), dtype or _default_dtype())
    row = np.repeat(np.arange(len(counts)), counts)
    slot = np.arange(len(indices)) - np.repeat(indptr[:-1], counts)
    out[row, slot, 0], out[row, slot, 1] = indices, data
    return out


def sparse_rows(X, row_scale: np.ndarray | None = None, centred: bool = False) -> np.ndarray:
    """A scipy CSR array (n, p) as padded (column, value) rows (n, r, 2), r its longest
    row (at least 1), with the offset pair (p, 1) appended to each row if ``centred``,
    values scaled by ``row_scale`` (n,) where given: the in-memory input format of
    ``SparseLinearFeatures``, as a ``SparseHDF5Dataset`` (``shifted``) reads it."""
    if not isinstance(centred, bool):
        raise TypeError(f"centred must be True or False, got {centred!r}")
    if np.dtype(_default_dtype()) == np.float32 and X.shape[1] >= 1 << 24:
        raise ValueError(
            f"X: {X.shape[1]} columns need float64 column indices; enable jax_enable_x64"
        )
    width = max(int(np.diff(X.indptr).max(initial=0)), 1)
    rows = padded_rows(X.data, X.indices, X.indptr, width, np.float64)
    rows = with_offset_pair(rows, X.shape[1]) if centred else rows
    return rows if row_scale is None else scaled_values(rows, row_scale)


def with_offset_pair(rows: np.ndarray, p: int) -> np.ndarray:
    """Padded (column, value) rows (b, r, 2) with the pair (p, 1) appended to each
    (b, r + 1, 2): the column that ``SparseLinearFeatures(p, m, x_offset=x̄)`` reads as
    −x̄, so that each row acts as x_i − x̄ (scaled rows scale it too)."""
    rows = np.asarray(rows)
    if rows.ndim != 3 or rows.shape[-1] != 2:
        raise ValueError(f"rows must be padded (column, value) pairs (b, r, 2), got {rows.shape}")
    p = positive_int(p, "p")
    pair = np.broadcast_to(np.asarray([p, 1], rows.dtype), (len(rows), 1, 2))
    return np.concatenate([rows, pair], axis=1)


def scaled_values(rows: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Padded (column, value) rows (b, r, 2) with row i's values times scale_i, the
    columns kept."""
    return np.stack([rows[..., 0], rows[..., 1] * scale[:, None]], axis=-1)


def csr_block(group: h5py.Group, start: int, stop: int):
    """Rows start:stop of a CSR group as a scipy ``csr_array`` (float64)."""
    import scipy.sparse

    ptr = group["indptr"][start : stop + 1].astype(np.int64)
    data = group["data"][ptr[0] : ptr[-1]].astype(np.float64)
    indices = group["indices"][ptr[0] : ptr[-1]]
    shape = (stop - start, int(group.attrs["shape"][1]))
    return scipy.sparse.csr_array((data, indices, ptr - ptr[0]), shape=shape)
