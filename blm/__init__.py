"""blm: Bayesian linear models too large to form, matrix-free in JAX."""

from blm.data import ArrayDataset, HDF5Dataset, SparseHDF5Dataset
from blm.estimator import BayesianLinearRegression
from blm.evidence.lanczos import SLQ
from blm.evidence_framework import EvidenceFit, train_with_evidence
from blm.features import Features, LinearFeatures, RandomFourierFeatures, SparseLinearFeatures
from blm.laplace import LaplacePosterior, linearise
from blm.laplace_settings import EMOptions, Hyperparameters, Training, WarmStart
from blm.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood
from blm.logistic import BayesianLogisticRegression
from blm.network import NetworkFeatures
from blm.priors import Prior
from blm.rules import EvidenceAscent, MacKay, Rule
from blm.sharding import data_parallel
from blm.solvers.config import CG, SGD, SVRG, Exact, Solver
from blm.solvers.exact import ExactPosterior

__all__ = [
    "Training",
    "WarmStart",
    "ArrayDataset",
    "CG",
    "EvidenceAscent",
    "Exact",
    "MacKay",
    "Rule",
    "SGD",
    "SLQ",
    "SVRG",
    "Solver",
    "BayesianLinearRegression",
    "BayesianLogisticRegression",
    "Bernoulli",
    "Categorical",
    "EMOptions",
    "EvidenceFit",
    "ExactPosterior",
    "Features",
    "Gaussian",
    "HDF5Dataset",
    "Hyperparameters",
    "LaplacePosterior",
    "Likelihood",
    "LinearFeatures",
    "NetworkFeatures",
    "Prior",
    "RandomFourierFeatures",
    "SparseHDF5Dataset",
    "SparseLinearFeatures",
    "linearise",
    "train_with_evidence",
    "data_parallel",
    "ConvergenceWarning",  # noqa: F822 (built on first use: see blm.exceptions)
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "ConvergenceWarning":  # a subclass of scikit-learn's, imported when asked
        from blm.exceptions import convergence_warning

        return convergence_warning()
    raise AttributeError(f"module 'blm' has no attribute {name!r}")
