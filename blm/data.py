r"""Where the rows come from: datasets in memory or in HDF5 files, read in row blocks.

A dataset holds n inputs x_i (any trailing shape: a design-matrix row, an image) and
targets y_i ∈ ℝ^m (a 1-D target is read as m = 1). ``blocks(block_size, key)`` yields
(x_b, y_b, rows_b) triples covering every row once, shuffled when a key is given;
rows_b are the global row indices (random noise is keyed by them, so a draw does not
depend on the block size or order). Nothing but one
block at a time is ever read from an HDF5 file, so n·d may exceed memory.

HDF5 layout read here: a dataset of inputs (default name ``"X"``, shape ``(n, ...)``) and
one of targets (default ``"y"``, shape ``(n,)`` or ``(n, m)``) in the same file.
"""

from __future__ import annotations

import abc
import copy
import os
from collections.abc import Iterator

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from blm._checks import (
    as_float_array,
    check_finite,
    frequency_weights,
    positive,
    positive_int,
    same_length,
)
from blm.csr import padded_rows, scaled_values, with_offset_pair
from blm.h5io import open_h5


def default_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, float32 otherwise (JAX's default)."""
    return np.dtype(jnp.result_type(float))


def _row_order(n: int, block_size: int, key: jax.Array | None) -> list[np.ndarray]:
    order = np.arange(n) if key is None else np.asarray(jax.random.permutation(key, n))
    return [order[i : i + block_size] for i in range(0, n, block_size)]


class Dataset(abc.ABC):
    """What every dataset gives (abstract): its sizes, its rows in blocks, and whether
    it is held in memory (solvers then slice it on the device) or streamed (read one
    block at a time)."""

    in_memory: bool = False
    """True for rows held in memory (``ArrayDataset``), False for streamed ones."""

    @property
    @abc.abstractmethod
    def n(self) -> int:
        """Rows."""

    @property
    @abc.abstractmethod
    def n_observations(self) -> float:
        """Observations the likelihood counts (n, or Σw under frequency weights)."""

    @property
    @abc.abstractmethod
    def m(self) -> int:
        """Outputs per row."""

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input row."""

    @abc.abstractmethod
    def blocks(self, block_size: int | None = None, key: jax.Array | None = None) -> Iterator:
        """(x_b, y_b, rows_b) covering every row once, shuffled with a ``key``."""


class ArrayDataset(Dataset):
    """Inputs and targets held in memory.

    ``n_observations``: how many observations the Gaussian likelihood counts (its
    ½ n_obs log β term, so MacKay's β = (n_obs − γ)/‖y − Φθ̄‖²): the n rows by default;
    Σ_i w_i for rows already scaled by √w_i under frequency weights (a row of weight 2
    counts as two, as in scikit-learn's ``BayesianRidge(sample_weight=...)``)."""

    in_memory = True

    def __init__(self, X, y, n_observations: float | None = None):
        X = as_float_array(X, "X")
        if X.ndim < 1:
            raise ValueError(f"X must have a leading row axis, got shape {X.shape}")
        y = as_float_array(y, "y", ndim=(1, 2))
        same_length(X.shape[0], y.shape[0], "X", "y")
        dtype = default_dtype()
        self.X = jnp.asarray(X, dtype)
        self.y = jnp.asarray(y.reshape(y.shape[0], -1), dtype)
        self._n_observations = None
        if n_observations is not None:
            self._n_observations = float(positive(n_observations, "n_observations"))

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_observations(self) -> float:
        """Observations the likelihood counts: n, or the given Σw (see the class)."""
        return float(self.n if self._n_observations is None else self._n_observations)

    @property
    def m(self) -> int:
        return int(self.y.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])

    def with_targets(self, y) -> ArrayDataset:
        """The same inputs with targets ``y`` (n,) or (n, m)."""
        y = as_float_array(y, "y", ndim=(1, 2))
        same_length(self.n, y.shape[0], "X", "y")
        view = copy.copy(self)
        view.y = jnp.asarray(y.reshape(self.n, -1), default_dtype())
        return view

    def blocks(self, block_size: int | None = None, key: jax.Array | None = None) -> Iterator:
        """(x_b, y_b, rows_b) of at most ``block_size`` rows (all rows if None); rows_b are
        the rows' indices in the dataset."""
        block_size = self.n if block_size is None else positive_int(block_size, "block_size")
        if key is None:  # in order: contiguous slices, far cheaper than a gather
            for i in range(0, self.n, block_size):
                stop = min(i + block_size, self.n)
                yield self.X[i:stop], self.y[i:stop], jnp.arange(i, stop)
            return
        for rows in _row_order(self.n, block_size, key):
            yield self.X[rows], self.y[rows], jnp.asarray(rows)


def column_names(node: h5py.Dataset | h5py.Group) -> np.ndarray | None:
    """The ``columns`` attribute of an inputs' dataset (or sparse group) as an object
    array of strings, or None without one."""
    columns = node.attrs.get("columns")
    if columns is None:
        return None
    return np.asarray([c.decode() if isinstance(c, bytes) else str(c) for c in columns], object)


class FileDataset(Dataset):
    """Inputs and targets streamed from an HDF5 file in row blocks (h5py): what a dense
    (``HDF5Dataset``) and a CSR (``SparseHDF5Dataset``) file share (abstract). The
    layouts differ in how the inputs are laid out, read, centred and summed.

    The file is opened for each pass and closed after it. Targets are checked for
    NaN/inf when the dataset is made (they are n·m numbers); inputs are checked block
    by block as they are read.
    """

    def __init__(self, path: str | os.PathLike, x: str = "X", y: str = "y", block_size: int = 4096):
        self.path = os.fspath(path)
        self.x_name, self.y_name = x, y
        self.block_size = positive_int(block_size, "block_size")
        self.x_offset = self.y_offset = self._targets = None
        self._scale_targets = True  # targets scaled by √w_i with the rows (``unscaled_targets``)
        self.row_scale: np.ndarray | None = None  # √w_i of frequency weights (``shifted``)
        self._weight_sum: float | None = None  # Σ w_i, with row_scale
        with open_h5(self.path, "path") as f:
            n_x, self._input_shape = self._x_layout(f)
            if y not in f or not isinstance(f[y], h5py.Dataset):
                raise ValueError(
                    f"y: no dataset named {y!r} in {self.path!r}; it holds {_names(f)}"
                )
            ys = f[y].shape
            if len(ys) not in (1, 2):
                raise ValueError(f"y: dataset {y!r} must be 1-D or 2-D, got shape {ys}")
            same_length(n_x, ys[0], f"x (dataset {x!r})", f"y (dataset {y!r})")
            if n_x == 0:
                raise ValueError(f"x: dataset {x!r} in {self.path!r} has no rows")
            # string targets are class labels (a classifier reads them whole, ``targets``)
            self.y_labels = h5py.check_string_dtype(f[y].dtype) is not None
            for start in range(0, ys[0] if not self.y_labels else 0, 1 << 20):
                check_finite(
                    f[y][start : start + (1 << 20)], f"y (dataset {y!r}, rows from {start})"
                )
            self._n, self._m = int(n_x), int(ys[1]) if len(ys) == 2 else 1
            self.y_ndim = len(ys)

    @abc.abstractmethod
    def _x_layout(self, f: h5py.File) -> tuple[int, tuple[int, ...]]:
        """(rows, shape of one input as ``blocks`` hands it) of the file's inputs, checked."""

    @property
    @abc.abstractmethod
    def sparse_rows(self) -> bool:
        """Whether the inputs are padded (column, value) rows for ``SparseLinearFeatures``."""

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input as ``blocks`` hands it."""

    @abc.abstractmethod
    def _weighted_row_sum(self, xb: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Σ_i w_i x_i over a block as stored, in float64."""

    @abc.abstractmethod
    def shifted(self, x_offset, y_offset, sample_weight=None) -> FileDataset:
        """The same file read centred (x − x_offset, y − y_offset), rows scaled by √w_i
        with frequency weights."""

    @abc.abstractmethod
    def _prepared_x(self, xb: np.ndarray, start: int) -> np.ndarray:
        """Rows from ``start`` as ``blocks`` hands them (centred and scaled where set)."""

    @abc.abstractmethod
    def _read_x(self, f: h5py.File, start: int, stop: int, dtype) -> np.ndarray:
        """Input rows start:stop as stored, checked finite."""

    @property
    def n(self) -> int:
        return self._n

    @property
    def n_observations(self) -> float:
        """Observations the likelihood counts: the n rows, or Σw in a view ``shifted``
        with frequency weights."""
        return float(self._n if self._weight_sum is None else self._weight_sum)

    @property
    def m(self) -> int:
        return self._m

    @property
    def feature_names(self) -> np.ndarray | None:
        """The inputs' column names, from a ``columns`` attribute of the X dataset (or
        group) as ``data_scripts/bundled_to_hdf5.py`` writes it; None without one."""
        with h5py.File(self.path, "r") as f:
            return column_names(f[self.x_name])

    def moments(self, block_size: int | None = None, sample_weight=None) -> tuple[np.ndarray, ...]:
        """(x̄ (input_shape), ȳ (m,), Var y (m,)) of the rows as stored, in one streamed
        pass (float64 sums; the variance by Chan et al.'s pairwise update, stable when
        |ȳ| ≫ sd y); with ``sample_weight`` (n,) the weighted means and variance."""
        w_all = None if sample_weight is None else frequency_weights(sample_weight, self.n)
        sx, mean_y, m2_y = 0.0, np.zeros(self.m), np.zeros(self.m)
        total = 0.0
        for xb, yb, start in self._raw_blocks(block_size or self.block_size):
            w = np.ones(len(yb)) if w_all is None else w_all[start : start + len(yb)]
            w_b = w.sum()
            if w_b == 0:
                continue
            sx = sx + self._weighted_row_sum(xb, w)
            yb = yb.astype(np.float64)
            mean_b = w @ yb / w_b
            delta = mean_b - mean_y
            m2_y += w @ (yb - mean_b) ** 2 + delta**2 * total * w_b / (total + w_b)
            mean_y += delta * w_b / (total + w_b)
            total += w_b
        return sx / total, mean_y, m2_y / total

    def _weighted(self, sample_weight) -> FileDataset:
        """A copy whose rows are scaled by √w (``sample_weight`` checked), or unscaled."""
        view = copy.copy(self)
        if sample_weight is not None:
            w = frequency_weights(sample_weight, self.n)
            view.row_scale, view._weight_sum = np.sqrt(w), float(w.sum())
        return view

    def targets(self) -> np.ndarray:
        """The targets as stored in the file, read whole ((n,) or (n, m): n·m numbers, or
        class labels as ``str``)."""
        with h5py.File(self.path, "r") as f:
            d = f[self.y_name]
            return d.asstr()[()].astype(str) if self.y_labels else d[()]

    def unscaled_targets(self) -> FileDataset:
        """The same view with its targets (the file's or ``with_targets``') read as they
        are, never scaled by √w_i: for a model whose rows' targets are formed from
        unscaled ones, as a GLM's labels and its (already scaled) pseudo-targets
        (``blm.glm``); the inputs are still scaled."""
        view = copy.copy(self)
        view._scale_targets = False
        return view

    def with_targets(self, y) -> FileDataset:
        """The same inputs read with targets ``y`` (n,) or (n, m) held in memory in place
        of the file's (e.g. a linearised network's pseudo-targets)."""
        y = as_float_array(y, "y", ndim=(1, 2))
        same_length(self.n, y.shape[0], "the file's inputs", "y")
        view = copy.copy(self)
        view._targets = np.asarray(y.reshape(self.n, -1), default_dtype())
        view._m, view.y_ndim, view.y_offset = view._targets.shape[1], y.ndim, None
        return view

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Input rows start:stop as read by ``blocks`` (x_offset subtracted, scaled)."""
        with h5py.File(self.path, "r") as f:
            return self._prepared_x(self._read_x(f, start, stop, default_dtype()), start)

    def _raw_blocks(self, block_size: int, starts=None):
        """(x_b, y_b (rows, m), start) as numpy arrays in the default dtype, checked finite
        (y_b from the file, or from ``with_targets``)."""
        dtype = default_dtype()
        starts = np.arange(0, self.n, block_size) if starts is None else starts
        with h5py.File(self.path, "r") as f:
            for start in starts:
                stop = min(start + block_size, self.n)
                xb = self._read_x(f, start, stop, dtype)
                if self._targets is None:
                    if self.y_labels:
                        raise ValueError(
                            f"y: dataset {self.y_name!r} holds strings (class labels); a "
                            "regression needs numbers (classify them: "
                            "BayesianLogisticRegression, blm fit --likelihood categorical)"
                        )
                    yb = np.asarray(f[self.y_name][start:stop], dtype=dtype)
                else:
                    yb = self._targets[start:stop]
                yield xb, yb.reshape(stop - start, -1), start

    def blocks(self, block_size: int | None = None, key: jax.Array | None = None) -> Iterator:
        """(x_b, y_b, rows_b) read from disk (rows_b: the rows' indices). With a key, the order of contiguous blocks and
        the rows within each block are shuffled (contiguous reads keep the I/O fast)."""
        block_size = (
            self.block_size if block_size is None else positive_int(block_size, "block_size")
        )
        starts = np.arange(0, self.n, block_size)
        if key is not None:
            key, sub = jax.random.split(key)
            starts = starts[np.asarray(jax.random.permutation(sub, len(starts)))]
        for xb, yb, start in self._raw_blocks(block_size, starts):
            xb = self._prepared_x(xb, start)
            if self.y_offset is not None:
                yb = (yb - self.y_offset).astype(yb.dtype)
            if self.row_scale is not None and self._scale_targets:
                yb = yb * self.row_scale[start : start + len(yb), None].astype(yb.dtype)
            rows = np.arange(start, start + len(xb))
            if key is not None:
                key, sub = jax.random.split(key)
                perm = np.asarray(jax.random.permutation(sub, len(xb)))
                xb, yb, rows = xb[perm], yb[perm], rows[perm]
            yield jnp.asarray(xb), jnp.asarray(yb), jnp.asarray(rows)


class HDF5Dataset(FileDataset):
    """A dense design in an HDF5 file: the dataset ``x`` (n, …) of inputs and ``y`` (n,)
    or (n, m) of targets (numbers, or class labels as strings), streamed in row blocks.

    Args:
        path: the file.
        x: the inputs' dataset name.
        y: the targets' dataset name.
        block_size: rows per read.

    Raises:
        ValueError: a missing dataset (naming what the file holds), shapes that do not
            match, no rows, or non-finite targets.

    Example:
        >>> ds = blm.HDF5Dataset("diabetes.h5", x="X", y="y")  # doctest: +SKIP
    """

    @property
    def sparse_rows(self) -> bool:
        return False

    def _x_layout(self, f: h5py.File) -> tuple[int, tuple[int, ...]]:
        """(rows, shape of one input) of the inputs' dataset, checked."""
        if self.x_name not in f or not isinstance(f[self.x_name], h5py.Dataset):
            raise ValueError(
                f"x: no dataset named {self.x_name!r} in {self.path!r}; it holds {_names(f)}"
            )
        xs = f[self.x_name].shape
        if len(xs) < 1:
            raise ValueError(
                f"x: dataset {self.x_name!r} must have a leading row axis, got shape {xs}"
            )
        return int(xs[0]), tuple(int(v) for v in xs[1:])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    @staticmethod
    def _weighted_row_sum(xb: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Σ_i w_i x_i over a block, in float64 (never a float64 copy of the block)."""
        total = np.zeros(xb.shape[1:])
        for i in range(0, len(xb), 4096):
            total += np.tensordot(w[i : i + 4096], xb[i : i + 4096], axes=1)
        return total

    def shifted(self, x_offset, y_offset, sample_weight=None) -> HDF5Dataset:
        """The same file read as (x − x_offset, y − y_offset): centring without a copy;
        with frequency weights w (n,) each row also scaled by √w_i, and Σw observations
        counted (``ArrayDataset``): the weighted least-squares rows of a linear model.

        Args:
            x_offset: (input_shape) subtracted from every input row.
            y_offset: (m,) subtracted from every target row.
            sample_weight: (n,) frequency weights ≥ 0, or None.

        Returns:
            A view of the same file (nothing is copied or written).

        Raises:
            ValueError: offsets of the wrong shapes, or bad weights.
        """
        view = self._weighted(sample_weight)
        x_offset = np.asarray(x_offset, np.float64)
        y_offset = np.asarray(y_offset, np.float64).reshape(-1)
        if x_offset.shape != self.input_shape or y_offset.shape != (self.m,):
            raise ValueError(
                f"x_offset, y_offset must have shapes {self.input_shape} and ({self.m},), got "
                f"{x_offset.shape} and {y_offset.shape}"
            )
        view.x_offset, view.y_offset = x_offset, y_offset
        return view

    def _prepared_x(self, xb: np.ndarray, start: int) -> np.ndarray:
        """Rows from ``start`` centred (x − x_offset) and scaled by √w_i where set."""
        if self.x_offset is not None:
            xb = (xb - self.x_offset).astype(xb.dtype)
        if self.row_scale is None:
            return xb
        return self._scaled_x(xb, self.row_scale[start : start + len(xb)].astype(xb.dtype))

    @staticmethod
    def _scaled_x(xb: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return xb * scale.reshape(-1, *(1,) * (xb.ndim - 1))

    def _read_x(self, f: h5py.File, start: int, stop: int, dtype) -> np.ndarray:
        """Input rows start:stop, checked finite."""
        xb = np.asarray(f[self.x_name][start:stop], dtype=dtype)
        check_finite(xb, f"x (dataset {self.x_name!r}, rows {start}:{stop})")
        return xb


def _names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


class SparseHDF5Dataset(FileDataset):
    r"""A sparse design stored in CSR form in an HDF5 file, streamed in row blocks.

    Layout: a group (default ``"X"``) with datasets ``data`` (nnz,) float, ``indices``
    (nnz,) int column indices, ``indptr`` (n + 1,) int, and the attribute ``shape`` =
    (n, p); targets as for ``HDF5Dataset``. E.g. an econometric panel: per row the
    one-hot unit and time effects and a few dense covariates.

    Each block is handed to the features as padded rows (b, r, 2): for row i its r
    (column index, value) pairs, r the largest row length in the file, padding (0, 0).
    ``SparseLinearFeatures`` applies them by gather and scatter-add, so memory is
    O(b·r + d) and nothing of size n·p exists. Column indices travel as floats, exact
    below 2²⁴ in float32 (enable ``jax_enable_x64`` for wider designs). Centring would
    fill the rows in, so ``shifted(x̄, …)`` appends one pair (p, 1) to each row instead
    (scaled by √w_i with the values), which ``SparseLinearFeatures(p, m, x_offset=x̄)``
    reads as −x̄: the centred design, still sparse.

    Args:
        path: the file.
        x: the CSR group's name.
        y: the targets' dataset name.
        block_size: rows per read.

    Raises:
        ValueError: no CSR group named ``x`` (naming what the file holds), an
            inconsistent one, or targets as ``HDF5Dataset`` refuses them.

    Example:
        >>> ds = blm.SparseHDF5Dataset("panel.h5", x="X", y="y")  # doctest: +SKIP
    """

    def _x_layout(self, f: h5py.File) -> tuple[int, tuple[int, ...]]:
        g = f.get(self.x_name)
        parts = ("data", "indices", "indptr")
        if (
            not isinstance(g, h5py.Group)
            or any(k not in g for k in parts)
            or "shape" not in g.attrs
        ):
            raise ValueError(
                f"x: no CSR group {self.x_name!r} (datasets data, indices, indptr and attribute "
                f"shape) in {self.path!r}; it holds {_names(f)}"
            )
        n, p = (int(v) for v in g.attrs["shape"])
        indptr = g["indptr"]
        if indptr.shape != (n + 1,) or g["data"].shape != g["indices"].shape:
            raise ValueError(
                f"x: CSR group {self.x_name!r} is inconsistent: indptr has shape {indptr.shape} "
                f"for n = {n} rows, data {g['data'].shape}, indices {g['indices'].shape}"
            )
        if np.dtype(default_dtype()) == np.float32 and p >= 1 << 24:
            raise ValueError(f"x: {p} columns need float64 column indices; enable jax_enable_x64")
        width = 0
        for start in range(0, n, 1 << 20):
            ptr = indptr[start : start + (1 << 20) + 1]
            width = max(width, int(np.max(np.diff(ptr), initial=0)))
        self.n_columns = p
        return n, (max(width, 1), 2)

    @property
    def sparse_rows(self) -> bool:
        return True

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(r, 2), or (r + 1, 2) in a centred view (the offset pair)."""
        width, pair = self._input_shape
        return (width + (self.x_offset is not None), pair)

    def _weighted_row_sum(self, xb: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Σ_i w_i x_i (p,) of padded rows: a weighted count of each column's values."""
        cols = xb[..., 0].astype(np.int64).ravel()
        values = (xb[..., 1].astype(np.float64) * w[:, None]).ravel()
        return np.bincount(cols, values, minlength=self.n_columns)

    def shifted(self, x_offset, y_offset, sample_weight=None) -> SparseHDF5Dataset:
        """The same file read with y − y_offset and, where ``x_offset`` = x̄ (p,) is given
        (None: inputs as stored), each row's offset pair (p, 1) appended for
        ``SparseLinearFeatures(p, m, x_offset=x̄)``; rows scaled by √w_i with frequency
        weights (see ``HDF5Dataset.shifted``)."""
        view = self._weighted(sample_weight)
        if x_offset is not None:
            x_offset = np.asarray(x_offset, np.float64)
            if x_offset.shape != (self.n_columns,):
                raise ValueError(
                    f"x_offset must be None or have shape ({self.n_columns},), got {x_offset.shape}"
                )
        view.x_offset = x_offset
        view.y_offset = np.asarray(y_offset, np.float64).reshape(self.m)
        return view

    def _prepared_x(self, xb: np.ndarray, start: int) -> np.ndarray:
        """Rows from ``start`` with the offset pair where centred, scaled by √w_i where
        set (the column indices kept)."""
        if self.x_offset is not None:
            xb = with_offset_pair(xb, self.n_columns)
        if self.row_scale is None:
            return xb
        return scaled_values(xb, self.row_scale[start : start + len(xb)].astype(xb.dtype))

    def _read_x(self, f: h5py.File, start: int, stop: int, dtype) -> np.ndarray:
        """Rows start:stop as padded (column, value) pairs (b, r, 2), checked."""
        g = f[self.x_name]
        ptr = g["indptr"][start : stop + 1].astype(np.int64)
        data = np.asarray(g["data"][ptr[0] : ptr[-1]], dtype=dtype)
        check_finite(data, f"x (CSR group {self.x_name!r}, rows {start}:{stop})")
        index = g["indices"][ptr[0] : ptr[-1]]
        if index.size and (index.min() < 0 or index.max() >= self.n_columns):
            raise ValueError(
                f"x: column indices of rows {start}:{stop} leave [0, {self.n_columns})"
            )
        return padded_rows(data, index, ptr - ptr[0], self._input_shape[0], dtype)


def open_hdf5(
    path: str | os.PathLike, x: str = "X", y: str = "y", block_size: int = 4096
) -> FileDataset:
    """An ``HDF5Dataset``, or a ``SparseHDF5Dataset`` when ``x`` names a CSR group."""
    path = os.fspath(path)
    with open_h5(path, "path") as f:
        sparse = isinstance(f.get(x), h5py.Group)
    return (SparseHDF5Dataset if sparse else HDF5Dataset)(path, x, y, block_size)


def is_file(X) -> bool:
    """Whether ``X`` is a dataset streamed from a file (dense or CSR HDF5)."""
    return isinstance(X, FileDataset)
