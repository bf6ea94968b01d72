"""HDF5 files opened and written safely: every entry point (``blm fit``/``predict``/
``coef``/``info``, ``HDF5Dataset``, ``load``, ``save``) goes through these, so that a
missing, truncated or non-HDF5 file and a missing or read-only folder end in one clear
error naming the argument, never in an h5py traceback, and a killed writer never leaves
a half-written file.

``atomic_h5(path)`` writes under a temporary name in the same folder and renames into
place only when the writing finished: a killed process leaves the old file (or none).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import h5py


@contextlib.contextmanager
def open_h5(path: str | os.PathLike, argument: str = "path") -> Iterator[h5py.File]:
    """``path`` opened for reading.

    Args:
        path: the file.
        argument: the name the caller knows the file by, used in errors (``"data"``,
            ``"--x"``, ``"path"``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not HDF5 or is truncated.

    Example:
        >>> with open_h5("missing.h5", "data") as f:  # doctest: +SKIP
        FileNotFoundError: data: no HDF5 file at 'missing.h5'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argument}: no HDF5 file at {path!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"{argument}: {path!r} is not a readable HDF5 file (truncated, or not HDF5: {err})"
        ) from err
    with f:
        yield f


def check_writable(path: str | os.PathLike, argument: str = "path") -> None:
    """Raise unless a file can be written at ``path``: its folder exists and is writable,
    and ``path`` is not a folder.

    Raises:
        FileNotFoundError: the folder does not exist.
        PermissionError: the folder is not writable.
        IsADirectoryError: ``path`` is a folder.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{argument}: {path!r} is a folder, expected a file name")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{argument}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{argument}: the folder {folder!r} is not writable")


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, argument: str = "path") -> Iterator[h5py.File]:
    """An HDF5 file opened for writing under a temporary name, renamed to ``path`` when
    the block ends without an error (removed if it raises).

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError: as ``check_writable``.
    """
    path = os.fspath(path)
    check_writable(path, argument)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
