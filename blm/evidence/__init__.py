"""Hyperparameters α (prior precision) and β (noise precision): evidence and its maximisers."""

from blm.evidence.closed_form import DenseGaussianModel, GammaHyperprior
from blm.evidence.loop import Trajectory, iterate_hyperparameters

__all__ = ["DenseGaussianModel", "GammaHyperprior", "Trajectory", "iterate_hyperparameters"]
