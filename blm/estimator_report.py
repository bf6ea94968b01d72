"""``BayesianLinearRegression.summary``: the coefficient table and the fit's line, and
the short texts of hyperparameters that ``blm fit``, ``blm info`` and ``blm coef`` print.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from blm import estimator_data
from blm._checks import positive_int
from blm.precision import in_fitted_precision


@in_fitted_precision
def sd_error(est) -> float:
    """The median relative error of the sampled ``coef_std_``, in %: half the
    predicted relative sd of diag(H⁻¹)'s estimate (``diag_covariance_rel_sd``)."""
    return 50 * float(np.median(np.asarray(est.posterior_.diag_covariance_rel_sd())))


def alpha_text(est) -> str:
    names = getattr(est, "prior_group_names_", None)
    if names is None or np.ndim(est.alpha_) == 0:
        return _short(est.alpha_)
    return _named([str(n) for n in names], np.asarray(est.alpha_))


SORTS = ("signal", "abs", "column")

WEAK_GAMMA = 2.0
"""Groups whose effective number of parameters γ_g is below this are reported as weakly
determined: MacKay's error bar on log α_g, √(2/γ_g), exceeds 1 (α_g uncertain by more
than a factor e; the evidence is flat along it)."""


def group_gamma(est) -> np.ndarray:
    """γ_g = |g| − α_g Σ_{i∈g} Var(θ_i) per prior group (G,), from ``coef_std_`` (exact,
    or from the samples; each projected onto [0, |g|]); NaN for flat (α_g = 0) groups."""
    p, m = est.X_offset_.shape[0], est.y_offset_.shape[0]
    groups = estimator_data.groups(est, p, m)
    alpha = np.atleast_1d(np.asarray(est.alpha_, np.float64))
    var = np.ravel(np.atleast_2d(np.asarray(est.coef_std_, np.float64)) ** 2)
    sizes = np.bincount(groups, minlength=alpha.size).astype(float)
    gamma = sizes - alpha * np.bincount(groups, var, minlength=alpha.size)
    return np.where(alpha > 0, np.clip(gamma, 0.0, sizes), np.nan)


def weak_groups(est) -> list[str]:
    """The fitted (not ``fixed_alpha``) groups with γ_g < ``WEAK_GAMMA``, by name."""
    gamma = group_gamma(est)
    names = getattr(est, "prior_group_names_", None)
    names = [str(n) for n in names] if names is not None else [str(g) for g in range(gamma.size)]
    given = {str(label) for label in (est.fixed_alpha or {})}
    return [
        f"{name} (gamma {g:.2g})"
        for name, g in zip(names, gamma, strict=True)
        if np.isfinite(g) and g < WEAK_GAMMA and name not in given
    ]


def summary(est, level: float = 0.95, max_rows: int | None = 20, *, sort: str = "signal") -> str:
    """A table of the coefficients: name (``feature_names_in_``, else x0, x1, …),
    posterior mean, sd and the central ``level`` credible interval mean ± z·sd
    (z = Φ⁻¹((1 + level)/2); the posterior is Gaussian), the ``covariance_columns``
    first with their solved sds, then the others in ``sort`` order ("signal": largest
    |mean|/sd first, "abs": largest |mean| first, "column": as the columns come) up to
    ``max_rows`` in all (None: every row); then the intercept and the noise sd 1/√β per
    output; and the fit: solver, n_iter_, converged or not, α by group, β, effective
    number of parameters γ, and the groups whose α the data barely determine
    (``weak_groups``: γ_g < 2).

    Raises:
        ValueError: ``level`` outside (0, 1), ``sort`` not one of ``SORTS``, or
            ``max_rows`` not a positive integer or None.
    """
    est._check_fitted()
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
    p, m = est.X_offset_.shape[0], est.y_offset_.shape[0]
    max_rows = p if max_rows is None else positive_int(max_rows, "max_rows")
    names = getattr(est, "feature_names_in_", None)
    names = [f"x{j}" for j in range(p)] if names is None else [str(n) for n in names]
    z = NormalDist().inv_cdf(0.5 + level / 2)
    coef, std = np.atleast_2d(est.coef_), np.atleast_2d(est.coef_std_)
    solved = np.full((m, p), False)
    if hasattr(est, "coef_covariance_"):
        cov = est.coef_covariance_.reshape(m, -1, len(est.covariance_columns))
        cols = list(est.covariance_columns)
        std[:, cols] = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        solved[:, cols] = True
    k = getattr(est.posterior_, "k", 0)
    head = f"{'':<16}{'coef':>11}{'sd':>9} {f'[{level:.0%} credible interval]':>28}"
    lines = [
        f"BayesianLinearRegression(solver={est._solver_name()!r}): {est.n_iter_} steps "
        f"({'converged' if est.converged_ else 'NOT converged'}), "
        f"alpha = {alpha_text(est)}, beta = {_short(est.beta_)}, "
        f"gamma = {est.trajectory_.gamma[-1]:.1f}",
        "sd: exact"
        if not k
        else f"sd: from {k} samples (±{sd_error(est):.0f} % median)"
        + (", * solved exactly (covariance_columns)" if solved.any() else ""),
    ]
    weak = weak_groups(est)
    if weak:
        shown = ", ".join(weak[:8]) + (f" and {len(weak) - 8} more" if len(weak) > 8 else "")
        lines.append(
            f"weakly determined alpha (gamma_g < {WEAK_GAMMA:g}, log-alpha error bar "
            f"sqrt(2/gamma_g) > 1; the evidence is flat along it): {shown}"
        )
    intercept = np.broadcast_to(np.asarray(est.intercept_, np.float64), (m,))
    noise_sd = 1.0 / np.sqrt(np.broadcast_to(np.asarray(est.beta_, np.float64), (m,)))
    for out in range(m):
        if m > 1:
            lines.append(f"output {out}:")
        lines.append(head)
        for j in _order(coef[out], std[out], solved[out], sort)[:max_rows]:
            c, s = coef[out, j], std[out, j]
            mark = "*" if solved[out, j] and k else " "
            lines.append(
                f"{names[j][:15]:<16}{c:>11.4g}{s:>9.4g}{mark}{c - z * s:>14.4g}{c + z * s:>14.4g}"
            )
        if p > max_rows:
            lines.append(f"… {p - max_rows} more (max_rows; blm coef --rows)")
        lines.append(f"{'intercept':<16}{intercept[out]:>11.4g}   (centred: not a random weight)")
        lines.append(f"{'noise sd':<16}{noise_sd[out]:>11.4g}   (1/√beta)")
    return "\n".join(lines)


def _order(coef, std, solved, sort: str) -> list[int]:
    """Row order of one output's table: solved columns first, then by ``sort``."""
    key = {
        "signal": lambda j: -abs(coef[j]) / std[j],
        "abs": lambda j: -abs(coef[j]),
        "column": lambda j: j,
    }[sort]
    return sorted(range(coef.size), key=lambda j: (not solved[j], key(j)))


def _named(names, values) -> str:
    """`name: value, …` for every named hyperparameter (a flat prior's 0 as "flat")."""
    text = [
        f"{name}: {'flat' if v == 0 else f'{v:.4g}'}" for name, v in zip(names, values, strict=True)
    ]
    return "{" + ", ".join(text) + "}"


def _short(values) -> str:
    """A hyperparameter for a summary line: 4 digits, a list up to 8 values, else a range."""
    v = np.atleast_1d(np.asarray(values, np.float64))
    if v.size == 1:
        return f"{v[0]:.4g}"
    if v.size <= 8:
        return "[" + ", ".join(f"{x:.4g}" for x in v) + "]"
    return f"{v.size} values in [{v.min():.4g}, {v.max():.4g}]"
