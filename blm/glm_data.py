"""A GLM's rows: the inputs (dense, scipy sparse, a dense or CSR HDF5 file) as rows
[s_i x_i, s_i] with s_i = √w_i (``blm.glm``), and class labels encoded against
``classes_``.

Example:
    >>> import numpy as np
    >>> from blm.glm_data import dense_rows
    >>> dense_rows(np.array([[1.0, 2.0]]), np.array([2.0]))  # s = √w for w = 4
    array([[2., 4., 2.]])
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from blm._checks import as_csr, as_float_array, frequency_weights, same_length
from blm.csr import sparse_rows
from blm.data import ArrayDataset, Dataset, HDF5Dataset, is_file
from blm.evidence.closed_form import row_padding
from blm.features import LinearFeatures, SparseLinearFeatures


def dense_rows(X: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """[s_i x_i, s_i] (n, p + 1), s_i = ``scale`` (default 1)."""
    s = np.ones(X.shape[0], X.dtype) if scale is None else scale.astype(X.dtype)
    return np.concatenate([X * s[:, None], s[:, None]], axis=1)


class ConstantColumnDataset(Dataset):
    """A dense HDF5 file read as rows [s_i x_i, s_i]: the file's rows scaled by √w_i
    (``HDF5Dataset.shifted``) with the column s_i appended, and targets held in memory
    (``with_targets``). Streamed: one block in memory at a time."""

    in_memory = False

    def __init__(self, inner: HDF5Dataset):
        self.inner = inner

    @property
    def n(self) -> int:
        return self.inner.n

    @property
    def n_observations(self) -> float:
        return self.inner.n_observations

    @property
    def m(self) -> int:
        return self.inner.m

    @property
    def block_size(self) -> int:
        return self.inner.block_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.inner.input_shape[0] + 1,)

    def _scale(self, start: int, stop: int) -> np.ndarray:
        if self.inner.row_scale is None:
            return np.ones(stop - start)
        return self.inner.row_scale[start:stop]

    def with_targets(self, y) -> ConstantColumnDataset:
        return ConstantColumnDataset(self.inner.with_targets(y))

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        xb = self.inner.read_rows(start, stop)
        return np.concatenate([xb, self._scale(start, stop)[:, None].astype(xb.dtype)], axis=1)

    def blocks(self, block_size: int | None = None, key: jax.Array | None = None) -> Iterator:
        for xb, yb, rows in self.inner.blocks(block_size, key):
            r = np.asarray(rows)
            s = np.ones(len(r)) if self.inner.row_scale is None else self.inner.row_scale[r]
            yield jnp.concatenate([xb, jnp.asarray(s, xb.dtype)[:, None]], axis=1), yb, rows


def encode_labels(y, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(classes_, the index of each label in it). With ``classes`` given (predict time),
    a label outside it is an error naming y.

    Raises:
        ValueError: y not 1-D, empty, holding NaN, a single class (fit), or labels not in
            ``classes``.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y must be a non-empty 1-D array of class labels, got shape {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError("y: class labels must not be NaN or infinite")
    if y.dtype.kind == "f" and np.any(y != np.round(y)):
        raise ValueError(
            "y: Unknown label type: continuous (non-integer floats); a classifier takes "
            "class labels (integers, strings, booleans)"
        )
    if y.dtype.kind == "O":
        y = y.astype(str) if all(isinstance(v, str) for v in y) else y
    if classes is None:
        try:
            classes = np.unique(y)
        except TypeError as err:  # e.g. numbers and strings: no order between them
            kinds = sorted({type(v).__name__ for v in y})
            raise ValueError(
                f"y: labels of mixed types ({', '.join(kinds)}) cannot be ordered into "
                "classes_; give labels of one type"
            ) from err
        if classes.size < 2:
            raise ValueError(
                f"y: a classifier needs at least 2 classes; the data hold one class only "
                f"({classes[0]!r})"
            )
    index = np.searchsorted(classes, y)
    index = np.clip(index, 0, classes.size - 1)
    bad = classes[index] != y
    if np.any(bad):
        raise ValueError(
            f"y holds labels not among classes_ {classes.tolist()[:10]}: e.g. "
            f"{np.unique(y[bad])[:5].tolist()}"
        )
    return classes, index


def one_hot(index: np.ndarray, n_classes: int) -> np.ndarray:
    """Targets for ``Bernoulli`` ((n, 1): 1 for the second class) or ``Categorical``
    (one-hot (n, K))."""
    if n_classes == 2:
        return index.astype(np.float64)[:, None]
    return np.eye(n_classes)[index]


def prepare(X, targets: np.ndarray | None, sample_weight, n_outputs: int, dtype):
    """(base features on p + 1 columns, the dataset of rows and targets, p). The rows
    are scaled by √w_i, the targets never (labels, and later the GLM's pseudo-targets
    s_i(f_i + u_i), are the rows' targets as they are)."""
    if is_file(X):
        w = None if sample_weight is None else frequency_weights(sample_weight, X.n)
        if X.sparse_rows:
            p = X.n_columns
            view = X.shifted(np.zeros(p), np.zeros(X.m), w).with_targets(targets)
            return SparseLinearFeatures(p + 1, n_outputs), view.unscaled_targets(), p
        if len(X.input_shape) != 1:
            raise ValueError(f"X: rows must be vectors, the file's are {X.input_shape}")
        p = X.input_shape[0]
        view = X.shifted(np.zeros(p), np.zeros(X.m), w).with_targets(targets)
        return LinearFeatures(p + 1, n_outputs), ConstantColumnDataset(view.unscaled_targets()), p
    rows, p = design_rows(X, sample_weight, dtype)
    same_length(rows.shape[0], targets.shape[0], "X", "y")
    dataset = ArrayDataset(*padded(rows, targets))
    sparse = scipy.sparse.issparse(X)
    return (SparseLinearFeatures if sparse else LinearFeatures)(p + 1, n_outputs), dataset, p


def padded(rows: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and targets with zero rows (s_i = 0: weight 0, no term anywhere) up to the
    next multiple of 2^(⌊log₂ n⌋ − 3) (``row_padding``), so that fits to nearby n
    (cross-validation folds, scikit-learn's checks) reuse compiled code."""
    pad = row_padding(rows.shape[0])
    if not pad:
        return rows, targets
    zeros = np.zeros((pad, *rows.shape[1:]), rows.dtype)
    return np.concatenate([rows, zeros]), np.concatenate(
        [targets, np.zeros((pad, targets.shape[1]))]
    )


def design_rows(X, sample_weight, dtype) -> tuple[np.ndarray, int]:
    """In-memory rows [s_i x_i, s_i] (dense (n, p + 1) or padded sparse pairs) and p."""
    if scipy.sparse.issparse(X):
        X = as_csr(X, "X").astype(dtype, copy=False)
        w = None if sample_weight is None else frequency_weights(sample_weight, X.shape[0])
        return sparse_rows(X, None if w is None else np.sqrt(w), centred=True), X.shape[1]
    X = as_float_array(X, "X", ndim=2).astype(dtype, copy=False)
    w = None if sample_weight is None else frequency_weights(sample_weight, X.shape[0])
    return dense_rows(X, None if w is None else np.sqrt(w)), X.shape[1]
