r"""Layer-wise Kronecker-factored GGN for networks of ``eqx.nn.Linear`` layers: KFAC, EFB,
INF, and the Kronecker-preserving spectral sparsification.

For a linear layer s = W a + b (W: out × in) and one row r = φ_iᵀL_i e_l of the GGN
G = Σ_{i,l} r rᵀ, the layer's block of r is g ⊗ ā with g = ∂(Lᵀf)_l/∂s (the bias part)
and ā = (a, 1) the layer's input with a one for the bias, in the Kronecker order
(o, j) ↦ o·(in + 1) + j (``Layer.index`` maps it to the flat parameter vector, weight
row-major then bias). Then per layer, with n examples,

    KFAC:  G ≈ Σ_{i,l} g gᵀ ⊗ (1/n) Σ_i ā āᵀ = G_g ⊗ A = (U_g ⊗ U_a)(S_g ⊗ S_a)(U_g ⊗ U_a)ᵀ
    EFB:   the same eigenbasis with corrected eigenvalues Λ_(o,j) = Σ_{i,l} ((U_gᵀg)_o (U_aᵀā)_j)²
    INF:   EFB + D,  D = diag(G) − diag(EFB),  diag(G) = Σ_{i,l} g² ⊗ ā²  (exact)

(George et al., 2018; Lee et al., 2020). Keeping the top K of the EFB eigenvalues Λ_(o,j)
while keeping eigenvectors Kronecker products means keeping the index sets O and J of
those pairs and *every* Λ on the grid O × J (``sparsify``): rank L = |O|·|J| ≥ K, and the
eigenvectors are U_g[:, O] ⊗ U_a[:, J], stored as the two factors.

ā is read off the per-example rows themselves (the weight part of g ⊗ ā is g āᵀ, so
a = (weight part)ᵀg/‖g‖²), so no forward hooks are needed; rows with g = 0 add nothing.
The rows are formed in batches and held (n·m × d): meant for small networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from blm._checks import positive_int
from blm.network import NetworkFeatures
from blm.uncertainty.information import InformationForm


@eqx.filter_jit
def _rows(features, likelihood, xb):
    L = likelihood.sqrt_precision(features.offset(xb))  # (b, m, m)
    return features.factor_rows(xb, L).reshape(-1, features.d)


def jacobian_rows(features, likelihood, X, batch_size: int = 256) -> Float[Array, "nm d"]:
    """All rows φ_iᵀL_i e_l of G = Σ r rᵀ, shape (n·m, d), ``batch_size`` inputs at a time."""
    X = jnp.asarray(X)
    batch_size = positive_int(batch_size, "batch_size")
    return jnp.concatenate(
        [_rows(features, likelihood, X[i : i + batch_size]) for i in range(0, len(X), batch_size)]
    )


@dataclass
class Layer:
    """One linear layer's Kronecker factors. ``index`` (out·(in+1),) maps the Kronecker
    order to positions in the flat parameter vector."""

    name: str
    index: np.ndarray
    out: int
    inp: int
    Ug: np.ndarray
    sg: np.ndarray
    Ua: np.ndarray
    sa: np.ndarray
    efb: np.ndarray  # Λ (out, in+1)
    diag: np.ndarray  # exact diag(G) (out, in+1)

    def _dense(self, values) -> np.ndarray:
        V = np.kron(self.Ug, self.Ua)
        return (V * values.ravel()) @ V.T

    def kfac(self) -> np.ndarray:
        """G_g ⊗ A in Kronecker order (dense, small layers)."""
        return self._dense(np.outer(self.sg, self.sa))

    def efb_matrix(self) -> np.ndarray:
        return self._dense(self.efb)

    def inf_matrix(self) -> np.ndarray:
        """EFB + D with D = diag(G) − diag(EFB) unclamped (the exact diagonal; D may be
        negative where EFB overshoots — ``InformationForm`` clamps it for sampling)."""
        return self.efb_matrix() + np.diag((self.diag - self.efb_diag()).ravel())

    def efb_diag(self) -> np.ndarray:
        """diag((U_g ⊗ U_a) Λ (U_g ⊗ U_a)ᵀ) = (U_g²) Λ (U_a²)ᵀ, without forming the kron."""
        return (self.Ug**2) @ self.efb @ (self.Ua**2).T

    def sparsify(self, k: int):
        """Top-k EFB eigenvalues kept with Kronecker structure: (O, J, Λ[O][:, J])."""
        return sparsify(self.efb, k)


def sparsify(grid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kronecker-preserving spectral sparsification of eigenvalues Λ_(o,j) on an
    (n_g, n_a) grid: the top-``k`` entries' row set O and column set J, and Λ on O × J
    (|O|·|J| ≥ k values). E.g. S_g ⊗ S_a with (2, 1.5) ⊗ (3, 2, 1): the top 3 (6, 4.5, 4)
    use rows {0, 1} and columns {0, 1}, so 4 eigenvalues are kept."""
    grid = np.asarray(grid)
    k = positive_int(k, "k")
    if k > grid.size:
        raise ValueError(f"k: cannot keep {k} of {grid.size} eigenvalues")
    top = np.argsort(grid.ravel())[::-1][:k]
    rows, cols = np.unravel_index(top, grid.shape)
    O, J = np.unique(rows), np.unique(cols)
    return O, J, grid[np.ix_(O, J)]


def _layer_inputs(g: np.ndarray, W: np.ndarray, m: int) -> np.ndarray:
    """ā_i = (a_i, 1) per example from its rows' weight parts g āᵀ: a = (g āᵀ)ᵀg/‖g‖², read
    off the example's row with the largest ‖g‖ (all its rows share a_i; a = 0 if all g = 0)."""
    gg = np.sum(g**2, axis=1).reshape(-1, m)
    best = np.arange(gg.shape[0]) * m + np.argmax(gg, axis=1)
    norm = gg.max(axis=1)
    a = np.einsum("roi,ro->ri", W[best], g[best]) / np.where(norm > 0, norm, 1)[:, None]
    return np.concatenate([np.where(norm[:, None] > 0, a, 0.0), np.ones((len(a), 1))], axis=1)


def linear_layers(features: NetworkFeatures, rows: np.ndarray) -> list[Layer]:
    """The Kronecker factors of every layer (a weight (out, in) and a bias (out,)) from the
    GGN's per-example rows (``jacobian_rows``)."""
    offsets = np.cumsum([0, *(math.prod(s) for s in features.shapes)])
    by_layer: dict[str, list[int]] = {}
    for leaf, layer in enumerate(features.leaf_layers):
        by_layer.setdefault(layer, []).append(leaf)
    positions = {}  # layer → (weight positions (out, in), bias positions (out,))
    for name, leaves in by_layer.items():
        shapes = [features.shapes[i] for i in leaves]
        if len(leaves) != 2 or len(shapes[0]) != 2 or shapes[1] != (shapes[0][0],):
            raise TypeError(
                f"features: layer {name!r} has leaves of shapes {shapes}; Kronecker factors "
                "need linear layers with a weight (out, in) and a bias (out,)"
            )
        out, inp = shapes[0]
        positions[name] = (
            offsets[leaves[0]] + np.arange(out * inp).reshape(out, inp),
            offsets[leaves[1]] + np.arange(out),
        )
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != features.d or rows.shape[0] % features.m:
        raise ValueError(
            f"rows must be (n·m, d) = (n·{features.m}, {features.d}) as from jacobian_rows, "
            f"got shape {rows.shape}"
        )
    layers = []
    for name, (w_pos, b_pos) in positions.items():
        out, inp = w_pos.shape
        index = np.concatenate([w_pos, b_pos[:, None]], axis=1).ravel()
        g = rows[:, b_pos]  # (n·m, out)
        W = rows[:, w_pos.ravel()].reshape(-1, out, inp)
        a_ex = _layer_inputs(g, W, features.m)  # (n, in + 1)
        a_bar = np.repeat(a_ex, features.m, axis=0)  # the input of each row's example
        G_g = g.T @ g
        A = a_ex.T @ a_ex / len(a_ex)
        sg, Ug = np.linalg.eigh(G_g)
        sa, Ua = np.linalg.eigh(A)
        pg, pa = g @ Ug, a_bar @ Ua
        efb = (pg**2).T @ (pa**2)
        diag = (g**2).T @ (a_bar**2)
        layers.append(Layer(name, index, out, inp, Ug, sg, Ua, sa, efb, diag))
    return layers


def sparse_information_form(
    layers: list[Layer], d: int, mean, ggn_diagonal, fraction: float, tau: float, scale: float = 1.0
):
    """The INF at a rank fraction: per layer the top ⌈fraction·d_layer⌉ EFB eigenvalues
    kept with Kronecker structure (``sparsify``), the eigenvectors U_g[:, O] ⊗ U_a[:, J]
    placed at the layer's coordinates, and D restoring the exact diagonal (clamped at 0):
    an ``InformationForm`` with its exact low-rank sampler."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    columns, values = [], []
    for layer in layers:
        O, J, kept = layer.sparsify(max(1, math.ceil(fraction * layer.index.size)))
        block = np.zeros((d, kept.size))
        block[layer.index] = np.kron(layer.Ug[:, O], layer.Ua[:, J])
        columns.append(block)
        values.append(kept.ravel())
    U = np.concatenate(columns, axis=1)
    return InformationForm.from_low_rank(mean, U, np.concatenate(values), ggn_diagonal, scale, tau)
