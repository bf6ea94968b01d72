"""``BayesianLogisticRegression.summary``: the coefficient table of a fitted classifier
(log-odds or softmax logits, their posterior sds, credible intervals and odds ratios) and
the fit's lines."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from blm._checks import positive_int
from blm.estimator_report import SORTS, _order, alpha_text


def summary(est, level: float = 0.95, max_rows: int | None = 20, *, sort: str = "signal") -> str:
    r"""The coefficients' table per logit (one for two classes: the log-odds of
    ``classes_[1]``; K softmax logits for K > 2): name, MAP coefficient, posterior sd,
    the central ``level`` credible interval coef ± z·sd (z = Φ⁻¹((1 + level)/2): the
    Laplace posterior is Gaussian), and the odds ratio exp(coef) with its interval; rows
    in ``sort`` order ("signal": largest \|coef\|/sd first, "abs", "column") up to
    ``max_rows`` (None: all); then the intercept, α by group, the Laplace log evidence,
    the steps and convergence.

    Raises:
        ValueError: ``level`` outside (0, 1), ``sort`` not one of ``SORTS``, or
            ``max_rows`` not a positive integer or None.

    Example:
        >>> import numpy as np, blm
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 2)); y = X[:, 0] + rng.normal(size=100) > 0
        >>> print(blm.BayesianLogisticRegression().fit(X, y).summary())  # doctest: +ELLIPSIS
        class True (log-odds, 95% interval; odds = exp(coef))
        ...
    """
    est._check_fitted()
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
    p = est.n_features_in_
    max_rows = p if max_rows is None else positive_int(max_rows, "max_rows")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    names = getattr(est, "feature_names_in_", None)
    names = [f"x{j}" for j in range(p)] if names is None else [str(n) for n in names]
    coef, std = np.asarray(est.coef_, np.float64), np.asarray(est.coef_std_, np.float64)
    head = (
        f"{'':16s} {'coef':>10s} {'sd':>9s} {'lower':>9s} {'upper':>9s} {'odds':>9s} "
        f"{'o.lower':>9s} {'o.upper':>9s}"
    )
    classes = [est.classes_[1]] if coef.shape[0] == 1 else list(est.classes_)
    lines = []
    for k, cls in enumerate(classes):
        what = "softmax logit" if len(classes) > 1 else "log-odds"
        lines.append(f"class {cls!s} ({what}, {level:.0%} interval; odds = exp(coef))")
        lines.append(head)
        for j in _order(coef[k], std[k], np.zeros(p, bool), sort)[:max_rows]:
            c, s = coef[k, j], std[k, j]
            lo, hi = c - z * s, c + z * s
            lines.append(
                f"{names[j][:16]:16s} {c:10.4g} {s:9.3g} {lo:9.3g} {hi:9.3g} "
                f"{np.exp(c):9.3g} {np.exp(lo):9.3g} {np.exp(hi):9.3g}"
            )
        if p > max_rows:
            lines.append(f"… {p - max_rows} more (max_rows; blm coef --rows)")
        if est.fit_intercept:
            lines.append(f"{'intercept':16s} {float(est.intercept_[k]):10.4g}   (flat prior)")
    k = est.samples_.shape[0]
    source = "exact" if est._exact is not None else f"from {k} samples"
    lines.append(f"alpha: {alpha_text(est)}   log evidence: {est.log_evidence_:.4f}   sd: {source}")
    state = "converged" if est.converged_ else "NOT converged"
    lines.append(
        f"{state} after {est.n_iter_} steps (last change {est.last_change_:.2g}); "
        f"solver {type(est.solver_).__name__}"
    )
    return "\n".join(lines)
