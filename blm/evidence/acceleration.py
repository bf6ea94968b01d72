r"""Anderson acceleration of the exact MacKay fixed point, safeguarded by the evidence.

MacKay's update F: (α, β) ↦ (γ_g/‖θ̄_g‖², (n − γ_k)/‖y_k − Φ_kθ̄‖²) converges linearly, and
slowly where the evidence is flat along some α_g (a group the data barely determine, the
columns of an ARD fit). Anderson's extrapolation (type II, Walker and Ni 2011) works in
u = (log α_free, log β), the free coordinates in log space, so that every extrapolated
point is a valid precision: from the accepted point u_k with residual f_k = F(u_k) − u_k
and the last ``memory`` differences ΔU, ΔF of points and residuals,

    u' = u_k + f_k − (ΔU + ΔF)c,   c = argmin_c ‖f_k − ΔF c‖,

(no history: u' = F(u_k), plain MacKay), its move from u_k shortened to at most
``STEP_FACTOR`` times the plain step's largest coordinate move (the evidence can have
several maxima — a design with fewer rows than columns has one at noise-free
interpolation — and an unbounded extrapolation jumps between them). u' is evaluated (its
MacKay step scores its input by the exact evidence) and accepted when its evidence is no
lower than at u_k and its own step stays in range; otherwise the history restarts and the
plain step F(u_k) is taken. An iteration costs
one dense solve, two where the candidate is refused; the fixed points are MacKay's
(f = 0 there), and the evidence never decreases across an accepted extrapolation.
(SQUAREM, measured beside it, took more solves on every problem of
``benchmarks/hyper_convergence.py``.)

Example:
    >>> import numpy as np
    >>> step = lambda a, b: (np.sqrt(a), b, {"score": -float(np.log(a[0]) ** 2)})
    >>> acc = Anderson(step, free=np.array([True]), fit_beta=False)
    >>> alpha, beta = np.array([100.0]), np.zeros(0)
    >>> for _ in range(4):
    ...     alpha, beta, info = acc.step(alpha, beta)
    >>> bool(abs(alpha[0] - 1.0) < 1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from blm.evidence.loop import unbounded_above

STEP_FACTOR = 10.0
"""An extrapolated step moves no coordinate of u further than this many times the plain
step's largest move: the extrapolation follows the basin the plain iteration is in,
rather than jumping to another maximum of the evidence (whose score may be higher)."""


class Anderson:
    """Anderson acceleration (type II) of a MacKay step ``step(α, β) -> (α', β', info)``
    whose ``info["score"]`` is the log evidence (+ hyperprior) at its input (α, β).

    Args:
        step: the plain fixed-point map.
        free: mask (G,) of the α_g that are fitted (fixed and flat groups are not).
        fit_beta: whether β is fitted (else kept as given).
        memory: the differences kept (≥ 1).

    ``step`` (the method) is itself a fixed-point map for ``iterate_hyperparameters``: its
    info is the plain step's at the input, with ``"evaluations"`` the plain steps it ran.
    """

    def __init__(self, step: Callable, *, free: np.ndarray, fit_beta: bool, memory: int = 5):
        if memory < 1:
            raise ValueError(f"memory must be >= 1, got {memory}")
        self._plain, self._free, self._fit_beta = step, np.asarray(free, bool), fit_beta
        self._memory = memory
        self._cache: tuple | None = None  # ((α, β), plain step's output there)
        self._points: list[np.ndarray] = []
        self._residuals: list[np.ndarray] = []

    def _pack(self, alpha, beta) -> np.ndarray:
        parts = [np.log(np.asarray(alpha, float)[self._free])]
        if self._fit_beta:
            parts.append(np.log(np.asarray(beta, float)))
        return np.concatenate(parts)

    def _unpack(self, u: np.ndarray, alpha, beta):
        limit = np.log(unbounded_above(alpha))  # the loop's bound: squares stay finite
        u = np.clip(u, -limit, limit)
        alpha = np.array(alpha, copy=True)
        n_free = int(self._free.sum())
        alpha[self._free] = np.exp(u[:n_free]).astype(alpha.dtype)
        beta = np.asarray(beta)
        if self._fit_beta:
            beta = np.exp(u[n_free:]).astype(beta.dtype)
        return alpha, beta

    def _in_range(self, alpha, beta) -> bool:
        """Whether a MacKay step's output is a valid next point: finite, and positive in
        the fitted coordinates (a candidate whose step leaves the range is refused, so the
        loop never sees an out-of-range update the plain iteration would not make)."""
        alpha, beta = np.asarray(alpha), np.asarray(beta)
        if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))):
            return False
        return bool(np.all(alpha[self._free] > 0) and (not self._fit_beta or np.all(beta > 0)))

    def _evaluate(self, alpha, beta):
        cached = self._cache
        if (
            cached is not None
            and np.array_equal(cached[0][0], alpha)
            and np.array_equal(cached[0][1], beta)
        ):
            return cached[1], 0
        return self._plain(alpha, beta), 1

    def step(self, alpha, beta):
        """One Anderson iteration from (α, β): (next α, next β, info at the input)."""
        (a1, b1, info), evaluations = self._evaluate(alpha, beta)
        self._cache = None
        u = self._pack(alpha, beta)
        f = self._pack(a1, b1) - u
        report = {**info, "evaluations": evaluations}
        if not np.all(np.isfinite(f)):
            return a1, b1, report
        self._points = [*self._points, u][-(self._memory + 1) :]
        self._residuals = [*self._residuals, f][-(self._memory + 1) :]
        if len(self._points) < 2:
            return a1, b1, report
        d_u = np.diff(np.asarray(self._points), axis=0)
        d_f = np.diff(np.asarray(self._residuals), axis=0)
        coef = np.linalg.lstsq(d_f.T, f, rcond=None)[0]
        candidate = u + f - (d_u + d_f).T @ coef
        step, reach = candidate - u, STEP_FACTOR * np.max(np.abs(f))
        if np.max(np.abs(step)) > reach:  # a trust region around the plain step's length
            candidate = u + step * (reach / np.max(np.abs(step)))
        if not np.all(np.isfinite(candidate)) or np.allclose(candidate, u + f, rtol=0, atol=1e-14):
            return a1, b1, report
        ac, bc = self._unpack(candidate, alpha, beta)
        try:
            out = self._plain(ac, bc)
        except (FloatingPointError, ValueError, np.linalg.LinAlgError):
            out = None
        report["evaluations"] = evaluations + 1
        score = float(info.get("score", np.nan))
        score_c = np.nan if out is None else float(out[2].get("score", np.nan))
        valid = out is not None and self._in_range(out[0], out[1])
        if valid and np.isfinite(score_c) and score_c >= score - 1e-12 * abs(score):
            self._cache = ((ac, bc), out)
            return ac, bc, report
        self._points, self._residuals = [u], [f]  # restart from the plain step
        return a1, b1, report
