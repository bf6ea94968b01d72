"""The warnings and errors blm raises that a caller may want to catch by class.

``ConvergenceWarning``: a fit that stopped at a cap (``max_iter``, ``em_steps``, a
solver's ``max_iter`` or ``n_steps``) before its tolerance. Where scikit-learn is
installed it subclasses ``sklearn.exceptions.ConvergenceWarning``, so
``warnings.filterwarnings("ignore", category=sklearn.exceptions.ConvergenceWarning)``
(and scikit-learn's own tooling) treat blm's as its own. The class is built on first
use: importing scikit-learn costs a second and a half, which ``import blm`` does not pay.

Example:
    >>> import warnings, blm
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always", blm.ConvergenceWarning)
"""

from __future__ import annotations

import functools
import importlib.util

__all__ = ["ConvergenceWarning"]  # noqa: F822 (built on first use by __getattr__)


@functools.cache
def convergence_warning() -> type[UserWarning]:
    """The ``ConvergenceWarning`` class (one for the process): a subclass of
    scikit-learn's where it is installed, else of ``UserWarning``."""
    bases: tuple[type, ...] = (UserWarning,)
    if importlib.util.find_spec("sklearn") is not None:
        from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

        bases = (SklearnConvergenceWarning,)
    return type(
        "ConvergenceWarning",
        bases,
        {
            "__module__": "blm.exceptions",
            "__doc__": "A fit stopped at a cap before its tolerance: its result is less "
            "accurate than asked. The message names the argument to raise.",
        },
    )


def warn_not_converged(message: str, stacklevel: int = 3) -> None:
    """Warn ``message`` with ``ConvergenceWarning`` (``stacklevel`` counted from the
    caller of this function)."""
    import warnings

    warnings.warn(message, convergence_warning(), stacklevel=stacklevel + 1)


def __getattr__(name: str):
    if name == "ConvergenceWarning":
        return convergence_warning()
    raise AttributeError(f"module 'blm.exceptions' has no attribute {name!r}")
