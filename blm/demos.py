r"""The digits pipeline behind ``blm demo``, ``experiments/digits_lla.py`` and the notebook:
train an MLP on scikit-learn's digits together with its prior precision (MacKay's
evidence framework, ``blm.train_with_evidence``), and score MAP, diagonal Laplace and
linearised Laplace on held-out digits, on digits rotated by 90° (out of distribution:
AUROC) and on digits rotated by 30° with their labels kept (dataset shift: NLL, ECE,
accuracy).

Diagonal Laplace (the simple baseline) keeps only diag(GGN) = g: H ≈ diag(g) + αI,
with α from MacKay's fixed point α = Σ_i g_i/(g_i + α) / ‖w̄‖² (exact for a diagonal
H), and predicts through the same linearised predictive with samples z = ε/√(g + α).
It is also scored at linearised Laplace's EM α, which isolates the cost of the diagonal
approximation from that of its evidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from blm import operators as ops
from blm._checks import positive
from blm.datasets import digits_split, rotate_digits
from blm.evidence_framework import train_with_evidence
from blm.laplace import LaplacePosterior, linearise
from blm.laplace_settings import EMOptions, Training
from blm.likelihoods import Categorical
from blm.solvers.config import SGD
from blm.solvers.sampled import SampledPosterior
from blm.uncertainty.metrics import auroc, classification_report

SHIFT_KEYS = ("nll", "ece", "accuracy")


@dataclass
class DigitsResult:
    """Per method: metrics (nll, accuracy, ece, brier, auroc, auroc_var, and nll_shift,
    ece_shift, accuracy_shift on the shifted digits); plus what was fitted."""

    reports: dict[str, dict[str, float]] = field(default_factory=dict)
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    probs_shift: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    alpha: np.ndarray | None = None
    alpha_diag: float = float("nan")
    d: int = 0
    width: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    alphas_trained: list[float] = field(default_factory=list)
    converged: bool = False
    posterior: LaplacePosterior | None = None


def diagonal_laplace(
    lm,
    n_samples: int,
    key,
    iters: int = 10_000,
    alpha: float | None = None,
    ggn_diagonal: jax.Array | None = None,
) -> tuple[SampledPosterior, float]:
    """Samples of the diagonal Laplace posterior N(w̄, (diag(GGN) + αI)⁻¹), α by MacKay
    (or the given ``alpha``); ``ggn_diagonal``: diag(GGN) if already computed (else one
    pass over the data)."""
    g = ggn_diagonal
    if g is None:
        g = ops.normal_diagonal(lm.features, lm.likelihood, lm.dataset, lm.block_size)
    w2 = float(jnp.sum(lm.features.w**2))
    fixed = alpha is not None
    alpha = float(positive(alpha, "alpha")) if fixed else 1.0
    for _ in range(0 if fixed else iters):
        new = float(jnp.sum(g / (g + alpha))) / w2
        done = abs(new - alpha) <= 1e-12 * alpha
        alpha = new
        if done:
            break
    eps = jax.random.normal(key, (n_samples, lm.features.d), g.dtype)
    return SampledPosterior(lm.features.w, eps / jnp.sqrt(g + alpha)), alpha


@dataclass(frozen=True)
class DigitsSetup:
    """The digits demo's network, training and fit.

    Args:
        width: hidden units of each of the MLP's two hidden layers.
        alpha_train: the weight decay of the first training.
        train_steps: Adam steps of the first training.
        n_samples: posterior samples.
        em_steps: MacKay steps per evidence round.
        rounds: evidence rounds at most.
        sgd_steps: SGD steps per posterior solve.
        rotation: degrees the out-of-distribution test digits are rotated by.
        shift: degrees the shifted test digits are rotated by.
    """

    width: int = 64
    alpha_train: float = 1e-2
    train_steps: int = 6000
    n_samples: int = 16
    em_steps: int = 3
    rounds: int = 8
    sgd_steps: int = 600
    rotation: float = 90.0
    shift: float = 30.0


DEFAULT_SETUP = DigitsSetup()
"""The demo's setup (``blm demo``)."""


def run_digits(
    seed: int = 0,
    setup: DigitsSetup = DEFAULT_SETUP,
    *,
    progress: bool = False,
    with_diagonal: bool = True,
) -> DigitsResult:
    """Train, linearise, fit and score on one random split of the digits (``seed``).

    The network and α are fitted together by MacKay's evidence framework
    (``train_with_evidence``: first trained at ``setup.alpha_train`` for
    ``setup.train_steps``, then up to ``setup.rounds`` rounds of ``setup.em_steps`` EM
    steps and retraining at the new α), so the MAP and linearised Laplace share the
    weights and the α the evidence picks. Out of distribution: the test digits rotated
    by ``setup.rotation``; under shift: rotated by ``setup.shift``, scored against their
    labels (``*_shift`` metrics).

    Args:
        seed: the split's and the network's seed.
        setup: the network, training and fit (``DigitsSetup``).
        progress: bars over the evidence rounds.
        with_diagonal: also score diagonal Laplace.

    Returns:
        A ``DigitsResult`` (reports per method, timings, α).
    """
    width, n_samples, rotation, shift = setup.width, setup.n_samples, setup.rotation, setup.shift
    Xtr, ytr, Xte, yte = digits_split(seed)
    Xood, Xshift = rotate_digits(Xte, rotation), rotate_digits(Xte, shift)
    lik = Categorical(10)
    out = DigitsResult(labels=yte, width=width)
    key = jax.random.PRNGKey(seed)
    k_init, k_train, k_diag = jax.random.split(key, 3)
    t0 = time.perf_counter()
    fit = train_with_evidence(
        eqx.nn.MLP(64, 10, width, 2, key=k_init),
        (Xtr, ytr),
        lik,
        k_train,
        alpha=setup.alpha_train,
        rounds=setup.rounds,
        training=Training(first_steps=setup.train_steps),
        em=EMOptions(
            n_samples=n_samples, em_steps=setup.em_steps, solver=SGD(n_steps=setup.sgd_steps)
        ),
        progress=progress,
    )
    net, lm, post = fit.model, fit.linearised, fit.posterior
    out.seconds["train + linearised Laplace"] = time.perf_counter() - t0
    out.alphas_trained, out.converged = fit.alphas, fit.converged

    def logits(X):
        return jax.vmap(net)(jnp.asarray(X, jnp.result_type(float)))

    probs = {"MAP": tuple(jax.nn.softmax(logits(X)) for X in (Xte, Xood, Xshift))}
    out.alpha, out.d, out.posterior = post.alpha, lm.features.d, post
    for method in ("mc", "probit"):
        probs[f"LLA ({method})"] = tuple(
            post.predict_proba(X, method=method) for X in (Xte, Xood, Xshift)
        )
    posteriors = {("LLA (mc)", "LLA (probit)"): post}
    t0 = time.perf_counter()
    last = last_layer_laplace(net, Xtr, ytr, lik)
    out.seconds["last-layer Laplace"] = time.perf_counter() - t0
    probs["last layer (probit)"] = tuple(
        last.predict_proba(X, method="probit") for X in (Xte, Xood, Xshift)
    )
    posteriors[("last layer (probit)",)] = last
    if with_diagonal:
        t0 = time.perf_counter()
        g = ops.normal_diagonal(lm.features, lik, lm.dataset, lm.block_size)
        samples, out.alpha_diag = diagonal_laplace(lm, n_samples, k_diag, ggn_diagonal=g)
        at_em, _ = diagonal_laplace(
            lm, n_samples, k_diag, alpha=float(post.alpha[0]), ggn_diagonal=g
        )
        for name, (draws, alpha) in {
            "diagonal Laplace": (samples, out.alpha_diag),
            "diagonal Laplace (LLA's α)": (at_em, float(post.alpha[0])),
        }.items():
            diag = LaplacePosterior(lm.features, lik, [alpha], draws, post.groups)
            posteriors[(name,)] = diag
            probs[name] = tuple(diag.predict_proba(X, method="probit") for X in (Xte, Xood, Xshift))
        out.seconds["diagonal Laplace"] = time.perf_counter() - t0
    for name, (p_in, p_ood, p_shift) in probs.items():
        out.probs[name] = np.asarray(p_in)
        out.probs_shift[name] = np.asarray(p_shift)
        out.reports[name] = classification_report(np.asarray(p_in), yte, np.asarray(p_ood))
        shifted = classification_report(np.asarray(p_shift), yte)
        out.reports[name].update({f"{k}_shift": shifted[k] for k in SHIFT_KEYS})
    for names, posterior in posteriors.items():
        score_in, score_ood = (logit_variance(posterior, X) for X in (Xte, Xood))
        for name in names:
            out.reports[name]["auroc_var"] = auroc(score_in, score_ood)
    return out


def last_layer_laplace(net: eqx.nn.MLP, X, y, likelihood) -> LaplacePosterior:
    """Linearised Laplace of the MLP's last layer alone (laplace-torch's default
    subset), its exact GGN and α by exact MacKay steps, the other layers at their
    trained weights."""
    off = jax.tree_util.tree_map(lambda _: False, net)
    spec = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), off, (True, True))
    lm = linearise(net, (X, y), likelihood, filter_spec=spec)
    return lm.fit(solver="exact", em_steps=100)


def logit_variance(posterior: LaplacePosterior, X) -> np.ndarray:
    """Σ_c Var(f_c(x)) under the linearised posterior: an OoD score (t,)."""
    _, fz = posterior.outputs(X)
    return np.asarray(jnp.sum(jnp.mean(fz**2, axis=0), axis=-1))


def reliability_plot(result: DigitsResult, path: str, n_bins: int = 10) -> None:
    """Reliability diagrams (accuracy against confidence per bin) of every method on the
    held-out digits and on the shifted (rotated) ones, with each bin's count of digits
    beneath, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from blm.uncertainty.metrics import reliability

    panels = (("held-out digits", result.probs), ("shifted: rotated by 30°", result.probs_shift))
    fig, axes = plt.subplots(
        2, 2, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = 1.0 / n_bins / (len(result.probs) + 1)
    for col, (title, probs) in enumerate(panels):
        ax, counts = axes[0, col], axes[1, col]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
        for i, (name, p) in enumerate(probs.items()):
            conf, acc, count = reliability(p, result.labels, n_bins)
            used = count > 0
            line = ax.plot(conf[used], acc[used], marker="o", ms=3, label=name)[0]
            edges = np.arange(n_bins) / n_bins + (i + 0.5) * width
            counts.bar(edges, count, width=width, color=line.get_color())
        ax.set_title(title)
        ax.set_ylabel("accuracy")
        counts.set_xlabel("confidence")
        counts.set_ylabel("digits per bin")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


COLUMNS = (
    ("NLL", "held-out negative log likelihood per digit (lower is better)"),
    ("acc", "held-out accuracy (higher is better)"),
    ("ECE", "expected calibration error, |accuracy - confidence| over 10 bins (lower)"),
    ("Brier", "squared error of the predicted probabilities (lower)"),
    (
        "AUROC H",
        "telling digits rotated by 90° (out of distribution) from held-out ones by "
        "predictive entropy (higher; 0.5 is chance)",
    ),
    ("AUROC V", "the same by the logit variance, Laplace methods only (higher)"),
    ("shift NLL, ECE, acc", "the held-out digits rotated by 30°, labels kept (as above)"),
)

VERDICT = (
    "What linearised Laplace buys here: its logit variance finds the out-of-distribution "
    "digits (AUROC V) and it is better calibrated than the MAP network under shift; what "
    "it costs: in distribution its predictive is wider than this already calibrated MAP "
    "network's, so held-out NLL is higher at the evidence's alpha (the method, not a bug: "
    "the same numbers as laplace-torch's full-network GGN Laplace)."
)


def format_table(reports: dict[str, dict[str, float]]) -> str:
    """One row per method: NLL, accuracy, ECE, Brier, OoD AUROC by predictive entropy (H)
    and by logit variance (V, Laplace methods only), and NLL, ECE, accuracy under shift."""
    head = (
        f"{'method':<20}{'NLL':>8}{'acc':>8}{'ECE':>8}{'Brier':>8}{'AUROC H':>9}{'AUROC V':>9}"
        f"{'| shift NLL':>12}{'ECE':>8}{'acc':>8}"
    )
    lines = [head]
    for name, r in reports.items():
        lines.append(
            f"{name:<20}{r['nll']:>8.4f}{r['accuracy']:>8.4f}{r['ece']:>8.4f}"
            f"{r['brier']:>8.4f}{r.get('auroc', float('nan')):>9.4f}"
            f"{r.get('auroc_var', float('nan')):>9.4f}"
            f"{r['nll_shift']:>12.4f}{r['ece_shift']:>8.4f}{r['accuracy_shift']:>8.4f}"
        )
    return "\n".join(lines)
