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


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the caller of this function
    point at the first frame outside the blm package: the user's line, not blm's."""
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1  # the warning's own frame is level 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the user's code (``user_stacklevel``)."""
    import warnings

    warnings.warn(message, category, stacklevel=user_stacklevel())


def warn_not_converged(message: str, stacklevel: int | None = None) -> None:
    """Warn ``message`` with ``ConvergenceWarning``, pointing at the user's code (the
    first frame outside blm; ``stacklevel`` is accepted for old callers and ignored)."""
    warn(message, convergence_warning())


def __getattr__(name: str):
    if name == "ConvergenceWarning":
        return convergence_warning()
    raise AttributeError(f"module 'blm.exceptions' has no attribute {name!r}")
