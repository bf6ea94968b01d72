"""blm: Bayesian linear models too large to form, matrix-free in JAX."""

from blm.data import ArrayDataset, HDF5Dataset
from blm.estimator import BayesianLinearRegression
from blm.features import Features, LinearFeatures, RandomFourierFeatures
from blm.likelihoods import Gaussian, Likelihood
from blm.priors import Prior
from blm.solvers.exact import ExactPosterior

__all__ = [
    "ArrayDataset",
    "BayesianLinearRegression",
    "ExactPosterior",
    "Features",
    "Gaussian",
    "HDF5Dataset",
    "Likelihood",
    "LinearFeatures",
    "Prior",
    "RandomFourierFeatures",
]
__version__ = "0.1.0"
