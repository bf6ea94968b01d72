"""Data parallelism across devices: rows of every block and minibatch split over a mesh.

    with blm.data_parallel():            # all of jax.devices(), or pass a list
        est = BayesianLinearRegression(solver="sgd", n_samples=16).fit(X, y)

Inside the block each row block read from a dataset is placed on a one-axis
``jax.sharding.Mesh`` split along its rows (``NamedSharding(mesh, P("data"))``), the
SGD iterate (mean and samples, (k + 1) × d) is replicated, and each minibatch is
constrained to be split along rows: every device computes the Jacobian products of its
shard of the batch, and XLA all-reduces Φᵀ(·) sums, the only communication.

With ``shard_parameters=True`` (for d·k too large for one device) every array of the
iterate and of the problem whose last axis is d (the iterate, the optimiser's momentum
and running average, regulariser centres, preconditioner, prior groups) is split along
that axis over the same devices instead: each holds d/D coordinates of every sample,
and XLA gathers the parameters for the Jacobian products and scatters the gradient
(more communication, 1/D of the memory). d must divide by the device count, else the
arrays stay replicated. The code
is the same for one device, several GPUs, or several hosts after
``jax.distributed.initialize()`` (then ``jax.devices()`` spans the hosts; each process
must read the same blocks). A block or batch whose rows do not divide evenly over the
devices is replicated instead (correct, not parallel): choose ``batch_size`` and
``block_size`` as multiples of the device count. Results equal the one-device run up to
the order of floating-point sums.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_ROWS: contextvars.ContextVar[NamedSharding | None] = contextvars.ContextVar(
    "blm_row_sharding", default=None
)
_SHARD_PARAMETERS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "blm_shard_parameters", default=False
)


@contextlib.contextmanager
def data_parallel(
    devices: Sequence[jax.Device] | None = None, shard_parameters: bool = False
) -> Iterator[Mesh]:
    """Split rows over ``devices`` for the fits run inside the ``with`` block; with
    ``shard_parameters`` also split the d-axis of the iterate and problem.

    Args:
        devices: the devices of one process (default: all of ``jax.devices()``).
        shard_parameters: also split θ (d) over the devices, for d too large for one.

    Yields:
        The ``jax.sharding.Mesh`` (axis ``"data"``).

    Raises:
        ValueError: no devices; TypeError: ``shard_parameters`` not a bool.

    Example:
        >>> with blm.data_parallel():  # doctest: +SKIP
        ...     est = blm.BayesianLinearRegression(solver="cg").fit(X, y)
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    if not isinstance(shard_parameters, bool):
        raise TypeError(f"shard_parameters must be True or False, got {shard_parameters!r}")
    mesh = Mesh(np.asarray(devices), ("data",))
    token = _ROWS.set(NamedSharding(mesh, PartitionSpec("data")))
    token_p = _SHARD_PARAMETERS.set(shard_parameters)
    try:
        yield mesh
    finally:
        _SHARD_PARAMETERS.reset(token_p)
        _ROWS.reset(token)


def row_sharding() -> NamedSharding | None:
    """The active row sharding (None outside ``data_parallel``)."""
    return _ROWS.get()


def _splits(sharding: NamedSharding | None, n_rows: int) -> bool:
    return sharding is not None and n_rows % sharding.mesh.size == 0


def put_rows(tree):
    """Place the arrays of ``tree`` (all with the same leading row axis) split along rows
    over the active mesh, replicated where the rows do not divide; unchanged outside
    ``data_parallel``."""
    sharding = row_sharding()
    if sharding is None:
        return tree
    n_rows = jax.tree.leaves(tree)[0].shape[0]
    target = sharding if _splits(sharding, n_rows) else replicated(sharding)
    return jax.device_put(tree, target)


def replicated(sharding: NamedSharding) -> NamedSharding:
    """The same mesh, every array whole on every device."""
    return NamedSharding(sharding.mesh, PartitionSpec())


def place_parameters(tree, d: int):
    """The arrays of ``tree`` (e.g. an iterate, an ``eqx.Module``) over the active mesh:
    replicated, or, with ``shard_parameters``, split along a last axis of length ``d``
    (when d divides by the device count); unchanged outside ``data_parallel``."""
    sharding = row_sharding()
    if sharding is None:
        return tree
    split = _SHARD_PARAMETERS.get() and d % sharding.mesh.size == 0

    def place(a):
        if split and a.ndim >= 1 and a.shape[-1] == d:
            spec = PartitionSpec(*([None] * (a.ndim - 1)), "data")
            return jax.device_put(a, NamedSharding(sharding.mesh, spec))
        return jax.device_put(a, replicated(sharding))

    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree.map(place, arrays), static)


def constrain_rows(tree, sharding: NamedSharding | None):
    """Inside jit: ask for ``tree`` (leading row axis) split along rows over
    ``sharding``'s mesh (a no-op for None or rows that do not divide)."""
    n_rows = jax.tree.leaves(tree)[0].shape[0]
    if not _splits(sharding, n_rows):
        return tree
    return jax.lax.with_sharding_constraint(tree, sharding)
