"""L-BFGS with a strong-Wolfe line search, one iteration per call, in the caller's thread.

:func:`optkit.solvers.loop.drive` pulls iterations through ``step``; :class:`Lbfgs` is the matching pull-style
minimiser: each :meth:`Lbfgs.iterate` runs the two-loop recursion (Nocedal & Wright, *Numerical Optimization*,
2nd ed., Alg. 7.4) and a line search, and returns. No thread, no SciPy loop: the per-iteration overhead is a few
vector operations.

Line search: bracketing and zoom for the strong Wolfe conditions (Nocedal & Wright Alg. 3.5/3.6, eqs. 3.7a-b)
with safeguarded cubic interpolation (eq. 3.59). Near the optimum function differences reach rounding level
before the gradient is small; as in Hager & Zhang (SIAM J. Optim. 16, 2005, eq. 4.1 "approximate Wolfe") a step is
also accepted when :math:`(2\\delta - 1)\\phi'(0) \\ge \\phi'(t) \\ge \\sigma\\phi'(0)` and
:math:`\\phi(t) \\le \\phi(0) + \\epsilon|\\phi(0)|`, which uses derivatives only where values cannot decide.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np

__all__ = ["Lbfgs"]


class Lbfgs:
    """Minimise ``fun_and_grad`` from ``x0``, one L-BFGS iteration per :meth:`iterate`.

    Parameters
    ----------
    fun_and_grad
        ``x -> (f, grad)``; ``f = inf`` marks a point outside the domain (the step is shortened).
    x0
        Starting point (copied).
    memory
        Number of correction pairs :math:`(s, y)` kept.
    c1, c2
        Sufficient-decrease and curvature constants of the strong Wolfe conditions.
    max_evaluations
        Function evaluations allowed per line search.
    """

    def __init__(self, fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, *,
                 memory: int = 10, c1: float = 1e-4, c2: float = 0.9, max_evaluations: int = 30,
                 approximate_epsilon: float = 1e-10) -> None:
        self._fun_and_grad = fun_and_grad
        self.memory = memory
        self.c1, self.c2 = c1, c2
        self.max_evaluations = max_evaluations
        self.approximate_epsilon = approximate_epsilon
        self.x = np.array(x0, dtype=np.float64)
        f, g = fun_and_grad(self.x)
        self.f, self.g = float(f), np.array(g, dtype=np.float64)
        self.evaluations = 1
        self._pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=memory)

    def reset(self) -> None:
        """Forget the curvature pairs (the next direction is steepest descent)."""
        self._pairs.clear()

    def direction(self) -> np.ndarray:
        """:math:`-H g` by the two-loop recursion, scaled by :math:`s^\\top y / y^\\top y` (N&W eq. 7.20)."""
        q = -self.g
        if not self._pairs:
            scale = 1.0 / max(float(np.max(np.abs(q))), 1e-300)
            return q * min(1.0, scale)
        coefficients = []
        for s, y, rho in reversed(self._pairs):
            c = rho * float(s @ q)
            coefficients.append(c)
            q -= c * y
        s, y, rho = self._pairs[-1]
        q *= 1.0 / (rho * float(y @ y))
        for (s, y, rho), c in zip(self._pairs, reversed(coefficients)):
            q += (c - rho * float(y @ q)) * s
        return q

    def iterate(self) -> bool:
        """One L-BFGS iteration. Returns False (state unchanged) when the line search finds no acceptable step."""
        d = self.direction()
        slope = float(self.g @ d)
        if not slope < 0.0:  # not a descent direction (inexact curvature): restart from steepest descent
            self.reset()
            d = self.direction()
            slope = float(self.g @ d)
            if not slope < 0.0:
                return False
        found = self._line_search(d, slope)
        if found is None:
            return False
        _, x_new, f_new, g_new = found
        s, y = x_new - self.x, g_new - self.g
        sy = float(s @ y)
        if sy > 1e-12 * float(y @ y) and sy > 0.0:
            self._pairs.append((s, y, 1.0 / sy))
        self.x, self.f, self.g = x_new, f_new, g_new
        return True

    def _evaluate(self, d: np.ndarray, t: float) -> tuple[np.ndarray, float, np.ndarray, float]:
        x = self.x + t * d
        f, g = self._fun_and_grad(x)
        self.evaluations += 1
        g = np.asarray(g, dtype=np.float64)
        return x, float(f), g, float(g @ d)

    def _acceptable(self, t: float, f: float, slope_t: float, slope0: float) -> bool | None:
        """True: strong Wolfe or approximate Wolfe holds; None: sufficient decrease fails."""
        f0 = self.f
        armijo = f <= f0 + self.c1 * t * slope0
        approximate = (f <= f0 + self.approximate_epsilon * abs(f0)
                       and self.c2 * slope0 <= slope_t <= (2 * self.c1 - 1) * slope0)
        if not (armijo or approximate):
            return None
        return abs(slope_t) <= -self.c2 * slope0 or approximate

    def _line_search(self, d: np.ndarray, slope0: float):
        f0 = self.f
        t_prev, f_prev, slope_prev = 0.0, f0, slope0
        t = 1.0
        evaluations = 0
        while evaluations < self.max_evaluations:
            x, f, g, slope_t = self._evaluate(d, t)
            evaluations += 1
            if not math.isfinite(f) or not np.all(np.isfinite(g)):
                t = 0.5 * (t_prev + t) if t > t_prev else 0.5 * t
                continue
            verdict = self._acceptable(t, f, slope_t, slope0)
            if verdict is None or (evaluations > 1 and f >= f_prev):
                return self._zoom(d, slope0, t_prev, f_prev, slope_prev, t, f, slope_t, evaluations)
            if verdict:
                return t, x, f, g
            if slope_t >= 0.0:
                return self._zoom(d, slope0, t, f, slope_t, t_prev, f_prev, slope_prev, evaluations)
            t_prev, f_prev, slope_prev = t, f, slope_t
            t = 4.0 * t  # still descending steeply at t: extrapolate
        return None

    def _zoom(self, d, slope0, t_lo, f_lo, slope_lo, t_hi, f_hi, slope_hi, evaluations):
        """N&W Alg. 3.6: ``t_lo`` satisfies sufficient decrease with the lowest value; the minimiser is between."""
        best = None
        while evaluations < self.max_evaluations:
            lo, hi = min(t_lo, t_hi), max(t_lo, t_hi)
            if hi - lo <= 1e-16 * max(hi, 1.0):
                break
            t = _cubic(t_lo, f_lo, slope_lo, t_hi, f_hi, slope_hi, lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo))
            x, f, g, slope_t = self._evaluate(d, t)
            evaluations += 1
            if not math.isfinite(f) or not np.all(np.isfinite(g)):
                t_hi, f_hi, slope_hi = t, math.inf, math.nan
                continue
            verdict = self._acceptable(t, f, slope_t, slope0)
            if verdict is None or f >= f_lo:
                t_hi, f_hi, slope_hi = t, f, slope_t
                continue
            if verdict:
                return t, x, f, g
            best = (t, x, f, g)
            if slope_t * (t_hi - t_lo) >= 0.0:
                t_hi, f_hi, slope_hi = t_lo, f_lo, slope_lo
            t_lo, f_lo, slope_lo = t, f, slope_t
        # No Wolfe point: a point with sufficient decrease still makes progress (curvature pair may be skipped).
        if best is not None and best[2] < self.f:
            return best
        return None


def _cubic(t0: float, f0: float, d0: float, t1: float, f1: float, d1: float, low: float, high: float) -> float:
    """Minimiser of the cubic interpolating values and slopes at t0, t1 (N&W eq. 3.59), clipped to [low, high]."""
    if math.isfinite(f1) and math.isfinite(d1) and t0 != t1:
        d_1 = d0 + d1 - 3.0 * (f0 - f1) / (t0 - t1)
        radicand = d_1 * d_1 - d0 * d1
        if radicand >= 0.0:
            d_2 = math.copysign(math.sqrt(radicand), t1 - t0)
            denominator = d1 - d0 + 2.0 * d_2
            if denominator != 0.0:
                t = t1 - (t1 - t0) * (d1 + d_2 - d_1) / denominator
                if math.isfinite(t):
                    return min(max(t, low), high)
    return 0.5 * (low + high)
