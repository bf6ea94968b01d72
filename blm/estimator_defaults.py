"""The defaults ``BayesianLinearRegression`` and ``blm fit`` share: one table, read by the
estimator's signature and by the command line's flags, so ``blm fit DATA.h5`` fits as
``BayesianLinearRegression().fit`` does (imports nothing heavy: ``blm --help`` reads it
without loading JAX).

Example:
    >>> from blm.estimator_defaults import ESTIMATOR_DEFAULTS
    >>> ESTIMATOR_DEFAULTS["max_iter"]
    300
"""

from types import MappingProxyType

ESTIMATOR_DEFAULTS = MappingProxyType(
    {
        "solver": "exact",  # the dense closed form; "cg"/"sgd" for data too large to form
        "n_samples": None,  # 16 for sgd/cg, none for exact
        "max_iter": 300,  # hyperparameter steps at most
        "tol": 1e-6,  # the largest relative change of any alpha_g, beta_k to stop at
        "hyper": "mackay",  # MacKay's fixed point
    }
)
