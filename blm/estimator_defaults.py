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
        "solver": "auto",  # exact where the dense model is cheap, else cg (sgd for files)
        "n_samples": None,  # 16 for sgd/cg, none for exact
        "max_iter": 300,  # hyperparameter steps at most
        "tol": 1e-6,  # the largest relative change of any alpha_g, beta_k to stop at
        "evidence_tol": 1e-9,  # or the evidence's predicted further gain, in nats
        "hyper": "mackay",  # MacKay's fixed point
    }
)

CLASSIFIER_DEFAULTS = MappingProxyType(
    {
        "max_iter": 100,  # joint Newton-MacKay steps at most
        "tol": 1e-5,  # the largest relative change of alpha_g and of the MAP to stop at
        "evidence_tol": 1e-9,  # or the Laplace evidence's predicted further gain (exact)
    }
)
"""``BayesianLogisticRegression``'s defaults, shared with ``blm fit --likelihood
bernoulli|categorical``."""

SAMPLED_DEFAULT_K = 16
"""Posterior samples an sgd/cg fit draws unless ``n_samples`` says otherwise."""
