"""What a solver works on, as one argument: ``Problem`` (features Φ, likelihood B, prior
A, data) and ``Passes`` (full passes over the data a caller already made).

Example:
    >>> import blm, numpy as np
    >>> from blm.solvers.problem import Problem
    >>> X, y = np.eye(3), np.ones((3, 1))
    >>> p = Problem(blm.LinearFeatures(3), blm.Gaussian(1.0), blm.Prior.scalar(1.0, 3),
    ...             blm.ArrayDataset(X, y))
    >>> p.prior.d
    3
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from jaxtyping import Array, Float


@dataclass(frozen=True)
class Problem:
    """What a solver works on: features Φ, likelihood (B), prior (A) and data, with the
    rows read per block.

    Args:
        features: Φ (``blm.Features``).
        likelihood: B (``blm.Likelihood``).
        prior: A (``blm.Prior``).
        dataset: the rows (``blm.data.Dataset``).
        block_size: rows per pass block (None: the features' own bound).
        outputs: θ is ``outputs`` contiguous blocks, one per output, each scaled by its
            own β_k (a design matrix with m outputs); None where it is not (a network),
            and then passes are remade whenever β changes.
    """

    features: Any
    likelihood: Any
    prior: Any
    dataset: Any
    block_size: int | None = None
    outputs: int | None = 1

    def parts(self) -> tuple:
        """(features, likelihood, prior, dataset)."""
        return self.features, self.likelihood, self.prior, self.dataset

    def at(self, likelihood=None, prior=None) -> Problem:
        """The same problem at another likelihood (β) and/or prior (α)."""
        changes = {"likelihood": likelihood, "prior": prior}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Passes:
    """Full passes over the data that a caller (an EM loop) already made at this
    likelihood, so a solve need not repeat them; a field left None is computed.

    Args:
        data_diagonal: diag(ΦᵀBΦ) (d,), the data part of the Jacobi preconditioner.
        data_coarse: ΦᵀBΦZ (q, d) for the coarse blocks' indicators Z (cg's two-level
            preconditioner).
        noise_rhs: the targets' pass [ΦᵀBY; ΦᵀLξ_j] (k + 1, d) for the solve's key
            (``blm.solvers.targets.targets_pass``).
    """

    data_diagonal: Float[Array, " d"] | None = None
    data_coarse: Float[Array, "q d"] | None = None
    noise_rhs: Float[Array, "k1 d"] | None = None


NO_PASSES = Passes()
