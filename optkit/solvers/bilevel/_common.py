r"""Parts shared by the bilevel solvers: counted oracles, lower-level projections and multipliers, an accelerated
inner projected-gradient loop, penalty schedules, step-size estimates, the reference lower-level solve and the
result builder.

Every bilevel ``Result`` carries ``x = (x, y)``, ``fun`` = the upper objective :math:`F(x, y)`, and in ``info``:
``upper_objective``, ``lower_gap`` :math:`f(x, y) - \min_{y'} f(x, y')` (the minimum computed to high accuracy by
SciPy, never assumed), ``constraint_violation`` (:meth:`BilevelProblem.constraint_violation`), and
``hypergradient_norm`` (the method's estimate, where one is defined).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from optkit._arrays import as_generator
from optkit.problems.bilevel import BilevelProblem
from optkit.problems.sets import Box, Reals
from optkit.solvers.loop import LoopOutcome
from optkit.solvers.result import Result, Status

DEFAULT_SEED = 0


# ------------------------------------------------------------------------------------------ oracles
class Oracles:
    """Counted oracles of a :class:`BilevelProblem` (full or minibatch)."""

    def __init__(self, problem: BilevelProblem) -> None:
        self.problem = problem
        self.counts: dict[str, float] = {
            "upper_grad": 0, "lower_grad": 0, "lower_hvp": 0, "upper_value": 0, "lower_value": 0, "projections": 0,
        }

    def upper_grad(self, x: np.ndarray, y: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        self.counts["upper_grad"] += 1
        up = self.problem.upper
        return up.grad(x, y) if idx is None else up.batch_grad(x, y, idx)

    def lower_grad(self, x: np.ndarray, y: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        self.counts["lower_grad"] += 1
        low = self.problem.lower
        return low.grad(x, y) if idx is None else low.batch_grad(x, y, idx)

    def lower_hvp(self, x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.counts["lower_hvp"] += 1
        return self.problem.lower.hvp(x, y, vx, vy)

    def upper_value(self, x: np.ndarray, y: np.ndarray) -> float:
        self.counts["upper_value"] += 1
        return self.problem.upper.value(x, y)

    def lower_value(self, x: np.ndarray, y: np.ndarray) -> float:
        self.counts["lower_value"] += 1
        return self.problem.lower.value(x, y)

    def project_x(self, x: np.ndarray) -> np.ndarray:
        return self.problem.x_set.project(x)

    @property
    def oracle_calls(self) -> float:
        """Gradients plus Hessian-vector products (the benchmark's oracle count)."""
        c = self.counts
        return c["upper_grad"] + c["lower_grad"] + c["lower_hvp"]


class Sampler:
    """Minibatches of sample indices for a finite-sum level (``None`` = the full objective)."""

    def __init__(self, n_samples: int | None, batch_size: int | None, rng: np.random.Generator) -> None:
        self.n, self.rng = n_samples, rng
        self.batch = None if (n_samples is None or batch_size is None or batch_size >= n_samples) else batch_size

    def __call__(self) -> np.ndarray | None:
        if self.batch is None:
            return None
        return self.rng.integers(0, self.n, size=self.batch)


def seed_info(seed: Any) -> tuple[np.random.Generator, dict[str, Any]]:
    """The generator for ``seed`` and what to write in ``Result.info`` (the default seed is said explicitly)."""
    if seed is None:
        return as_generator(DEFAULT_SEED), {"seed": DEFAULT_SEED, "seed_note": f"no seed given: used the fixed "
                                            f"default seed {DEFAULT_SEED}"}
    rng = as_generator(seed)
    return rng, {"seed": seed if isinstance(seed, (int, np.integer)) else "Generator"}


# ------------------------------------------------------------------------------ lower feasible sets
class LowerFeasibleSet:
    r"""Projection onto :math:`K(x) = \{y \in Y : A_x x + A_y y \le b,\ E_x x + E_y y = e\}` (affine coupling) and
    the multipliers of the coupled constraints at a point.

    Closed forms: :math:`Y` only; equalities only with :math:`Y = \mathbb{R}^m` (affine projection with a
    precomputed pseudo-inverse); one inequality row with :math:`Y = \mathbb{R}^m` (a half-space); more than 20
    inequality rows with :math:`Y = \mathbb{R}^m` that each own a private coordinate and share at most 64 (exact,
    :class:`~optkit.problems.bilevel_sets.SharedHalfSpaces`). Otherwise
    Dykstra's alternating projections (Boyle & Dykstra 1986) over :math:`Y`, the affine set and each half-space.
    """

    def __init__(self, problem: BilevelProblem) -> None:
        self.problem = problem
        self.y_set = problem.y_set
        cons = problem.lower_constraints
        self.ineq = self.eq = None
        if cons is not None:
            if not cons.is_affine:
                raise ValueError("coupled lower constraints must be affine (A_x, A_y, b) for this method")
            self.ineq, self.eq = cons.affine("inequality"), cons.affine("equality")
        self.coupled = self.ineq is not None or self.eq is not None
        if self.eq is not None:
            self._eq_pinv = np.linalg.pinv(self.eq[1])
        self._free_y = type(self.y_set) is Reals
        self.identity = self._free_y and not self.coupled  # project() returns y unchanged (as a new array)
        # Many inequality rows that each own a private coordinate and share a few (the SVM margin rows): an exact
        # finite-Newton projection instead of Dykstra's cycles over hundreds of overlapping half-spaces.
        self._shared = None
        if self.ineq is not None and self.eq is None and self._free_y and self.ineq[1].shape[0] > 20:
            # lazy: _projection imports this module
            from optkit.solvers.bilevel._projection import shared_rows_projector

            self._shared = shared_rows_projector(self.ineq[1])

    def project(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if not self.coupled:
            return self.y_set.project(y)
        if self._shared is not None:
            A_x, _, b = self.ineq
            return self._shared(y, b - A_x @ x)
        pieces: list[Callable[[np.ndarray], np.ndarray]] = []
        if not self._free_y:
            pieces.append(self.y_set.project)
        if self.eq is not None:
            E_x, E_y, e = self.eq
            rhs = e - E_x @ x
            pinv = self._eq_pinv
            pieces.append(lambda v, E_y=E_y, rhs=rhs, pinv=pinv: v - pinv @ (E_y @ v - rhs))
        if self.ineq is not None:
            A_x, A_y, b = self.ineq
            rhs = b - A_x @ x
            for row, bound in zip(A_y, rhs, strict=True):
                norm2 = float(row @ row)
                if norm2 == 0.0:
                    continue
                pieces.append(lambda v, row=row, bound=bound, norm2=norm2:
                              v - max(0.0, (row @ v - bound) / norm2) * row)
        if len(pieces) == 1:
            return pieces[0](y)
        return _dykstra(pieces, y)

    def multipliers(self, x: np.ndarray, y: np.ndarray, grad_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""Multipliers :math:`(\nu, \mu)` of the coupled inequality/equality at an (approximate) minimiser ``y``
        of a function with gradient ``grad_y``: the least-squares solution of the KKT stationarity
        :math:`\nabla_y + A_y^\top\nu + E_y^\top\mu + (\text{normal cone of } Y) = 0`, :math:`\nu \ge 0` on the
        active rows (non-negative least squares)."""
        from scipy.optimize import nnls

        m = y.size
        cols, signs = [], []  # columns of the NNLS matrix
        n_ineq = 0 if self.ineq is None else self.ineq[2].size
        n_eq = 0 if self.eq is None else self.eq[2].size
        scale = max(1.0, float(np.linalg.norm(y)))
        active = np.zeros(n_ineq, dtype=bool)
        if self.ineq is not None:
            A_x, A_y, b = self.ineq
            slack = A_x @ x + A_y @ y - b
            active = slack >= -1e-7 * scale
            for i in np.flatnonzero(active):
                cols.append(A_y[i])
                signs.append(("ineq", i, 1.0))
        if self.eq is not None:
            for i in range(n_eq):
                cols.append(self.eq[1][i])
                signs.append(("eq", i, 1.0))
                cols.append(-self.eq[1][i])
                signs.append(("eq", i, -1.0))
        if isinstance(self.y_set, Box) and not self._free_y:
            lower, upper = self.y_set.lower, self.y_set.upper
            for j in np.flatnonzero(y <= lower + 1e-9 * scale):
                cols.append(-np.eye(m)[j])
                signs.append(("box", j, 1.0))
            for j in np.flatnonzero(y >= upper - 1e-9 * scale):
                cols.append(np.eye(m)[j])
                signs.append(("box", j, 1.0))
        nu, mu = np.zeros(n_ineq), np.zeros(n_eq)
        if not cols:
            return nu, mu
        coef, _ = nnls(np.array(cols).T, -grad_y, maxiter=50 * len(cols))
        for (kind, i, sign), value in zip(signs, coef, strict=True):
            if kind == "ineq":
                nu[i] += value
            elif kind == "eq":
                mu[i] += sign * value
        return nu, mu

    def x_gradient(self, nu: np.ndarray, mu: np.ndarray) -> np.ndarray:
        r""":math:`A_x^\top\nu + E_x^\top\mu`: the constraints' contribution to :math:`\nabla_x` of a value function."""
        n = self.problem.dims[0]
        out = np.zeros(n)
        if self.ineq is not None:
            out += self.ineq[0].T @ nu
        if self.eq is not None:
            out += self.eq[0].T @ mu
        return out


def _dykstra(projections: list[Callable[[np.ndarray], np.ndarray]], y: np.ndarray, *, tol: float = 1e-13,
             max_iter: int = 10_000) -> np.ndarray:
    """Dykstra's algorithm: the projection onto an intersection of convex sets from projections onto each."""
    increments = [np.zeros_like(y) for _ in projections]
    current = np.array(y, dtype=float)
    for _ in range(max_iter):
        previous = current
        for i, project in enumerate(projections):
            shifted = current + increments[i]
            new = project(shifted)
            increments[i] = shifted - new
            current = new
        if np.linalg.norm(current - previous) <= tol * max(1.0, float(np.linalg.norm(current))):
            break
    return current


# --------------------------------------------------------------------------------------- inner solver
class InnerState:
    """Warm state of an accelerated inner loop: the iterate, the extrapolated point, the momentum and step."""

    def __init__(self, y: np.ndarray, step: float = 1.0) -> None:
        self.y = np.array(y, dtype=float)
        self.v = self.y.copy()
        self.t = 1.0
        self.step = step
        self.residual = math.inf


def inner_solve(
    state: InnerState,
    value: Callable[[np.ndarray], float],
    grad: Callable[[np.ndarray], np.ndarray],
    project: Callable[[np.ndarray], np.ndarray],
    *,
    tol: float,
    max_steps: int,
    accelerate: bool = True,
) -> int:
    r"""Accelerated projected gradient with backtracking and adaptive restart on a smooth function over a convex set.

    FISTA steps (Beck & Teboulle 2009, eq. 4.1–4.3) :math:`y^+ = P(v - t\nabla\phi(v))`, with the step :math:`t`
    found by the sufficient-decrease test :math:`\phi(y^+) \le \phi(v) + \langle\nabla\phi(v), y^+ - v\rangle +
    \|y^+ - v\|^2/(2t)` (halving; tried 1.5 times larger at each call) and the gradient restart of O'Donoghue &
    Candès (2015, §3.2). Stops when the gradient mapping :math:`\|v - y^+\|/t \le` ``tol`` or after
    ``max_steps``. Returns the number of steps taken; ``state`` is updated in place (warm start).
    """
    steps = 0
    state.step *= 1.5
    while steps < max_steps:
        v = state.v if accelerate else state.y
        fv, gv = value(v), grad(v)
        while True:
            y_new = project(v - state.step * gv)
            d = y_new - v
            if value(y_new) <= fv + gv @ d + (d @ d) / (2 * state.step) + 1e-12 * abs(fv) or state.step < 1e-14:
                break
            state.step *= 0.5
        steps += 1
        state.residual = float(np.linalg.norm(d)) / state.step
        if accelerate:
            t_new = 0.5 * (1 + math.sqrt(1 + 4 * state.t**2))
            if (v - y_new) @ (y_new - state.y) > 0:  # restart: momentum points uphill
                t_new, state.t = 1.0, 1.0
                state.v = y_new.copy()
            else:
                state.v = y_new + ((state.t - 1) / t_new) * (y_new - state.y)
            state.t = t_new
        state.y = y_new
        if state.residual <= tol:
            state.v = state.y.copy()
            state.t = 1.0
            break
    return steps


# -------------------------------------------------------------------------------- schedules and steps
def schedule(start: float, final: float, k: int, *, kind: str = "geometric", rate: float = 0.5) -> float:
    r"""A penalty schedule from ``start`` to ``final``.

    ``"geometric"``: :math:`s_k = s_0 r^k` clipped at the final value (either direction); ``"polynomial"``:
    :math:`s_k = s_0 (k+1)^{r}` clipped at the final value (LV-HBA's :math:`c_k`, F2SA's :math:`\lambda_k`);
    ``"linear"``: :math:`s_0 + (s_f - s_0)\min(1, k/r)` (V-PBGD's ramp over ``r`` iterations); ``"constant"``.
    """
    if kind == "constant" or start == final:
        return final
    if kind == "geometric":
        value = start * rate**k
    elif kind == "polynomial":
        value = start * (k + 1) ** rate
    elif kind == "linear":
        value = start + (final - start) * min(1.0, k / max(rate, 1.0))
    else:
        raise ValueError(f"unknown schedule kind {kind!r}; choose 'geometric', 'polynomial', 'linear' or 'constant'")
    return min(value, final) if final >= start else max(value, final)


class SecantStep:
    r"""Outer step :math:`1/L_k` with :math:`L_k = \max(L_{k-1}, \|g_k - g_{k-1}\| / \|x_k - x_{k-1}\|)`: a
    monotone secant estimate of the Lipschitz constant of the (approximate) hypergradient, or a fixed step."""

    def __init__(self, step: float | None, initial_lipschitz: float = 1.0) -> None:
        self.fixed = step
        self.lipschitz = initial_lipschitz
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, x: np.ndarray, g: np.ndarray) -> float:
        if self.fixed is not None:
            return self.fixed
        first = self._last is None
        if not first:
            dx = np.linalg.norm(x - self._last[0])
            # below ~1e-10 relative, the change in g is inner-solve noise rather than curvature
            if dx > 1e-10 * max(1.0, float(np.linalg.norm(x))):
                estimate = float(np.linalg.norm(g - self._last[1]) / dx)
                if math.isfinite(estimate):
                    self.lipschitz = max(self.lipschitz, estimate)
        self._last = (x.copy(), g.copy())
        step = 1.0 / self.lipschitz
        if first:  # no curvature seen yet: a short first move (5% of max(1, ||x||)) to measure it
            norm = float(np.linalg.norm(g))
            if norm > 0:
                step = min(step, 0.05 * max(1.0, float(np.linalg.norm(x))) / norm)
        return step


class BBStep:
    r"""Barzilai–Borwein outer step (Barzilai & Borwein 1988, eq. (5)): :math:`\alpha_k = \|s\|^2 / \langle s,
    y\rangle` with :math:`s = x_k - x_{k-1}`, :math:`y = g_k - g_{k-1}` (the long "BB1" step, the inverse of a
    Rayleigh quotient of the averaged Hessian, so it lies in :math:`[1/\lambda_{max}, 1/\lambda_{min}]` on a
    quadratic). Non-monotone and without line search: meant for smooth, strongly convex hyper-objectives (with
    inexact warm-started inner solves it still converges on the benchopt quadratic). When :math:`\langle s, y\rangle
    \le 0` or the pair is degenerate, the previous step is kept; the first step moves 5% of :math:`\max(1,\|x\|)`,
    and every step is clipped to :math:`[10^{-10}, 10^{10}]`."""

    def __init__(self) -> None:
        self.alpha: float | None = None
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, x: np.ndarray, g: np.ndarray) -> float:
        if self._last is None:
            norm = float(np.linalg.norm(g))
            self.alpha = 0.05 * max(1.0, float(np.linalg.norm(x))) / norm if norm > 0 else 1.0
        else:
            s, d = x - self._last[0], g - self._last[1]
            sd = float(s @ d)
            if sd > 0 and math.isfinite(sd):
                self.alpha = float(s @ s) / sd
        self._last = (x.copy(), g.copy())
        self.alpha = min(max(float(self.alpha), 1e-10), 1e10)
        return self.alpha


def outer_step_rule(rule: str, step: float | None) -> SecantStep | BBStep:
    """``"secant"`` (monotone :math:`1/L` estimate, or the fixed ``step``) or ``"bb"`` (Barzilai–Borwein)."""
    if rule == "secant" or step is not None:
        if rule not in ("secant", "bb"):
            raise ValueError(f"outer_step must be 'secant' or 'bb', got {rule!r}")
        return SecantStep(step)
    if rule == "bb":
        return BBStep()
    raise ValueError(f"outer_step must be 'secant' or 'bb', got {rule!r}")


def probe_lipschitz(grad: Callable[[np.ndarray], np.ndarray], y: np.ndarray, *, iterations: int = 8) -> float:
    r"""Largest curvature of a function along :math:`y` by power iteration on gradient differences
    :math:`(\nabla\phi(y + h v) - \nabla\phi(y))/h` (a Hessian-free estimate; times 1.1 for safety)."""
    rng = np.random.default_rng(1)
    v = rng.standard_normal(y.size)
    v /= np.linalg.norm(v)
    g0 = grad(y)
    h = 1e-4 * max(1.0, float(np.linalg.norm(y)))
    estimate = 1e-12
    for _ in range(iterations):
        w = (grad(y + h * v) - g0) / h
        estimate = float(np.linalg.norm(w))
        if estimate == 0.0 or not np.isfinite(estimate):
            break
        v = w / estimate
    return 1.1 * max(estimate, 1e-12)


def gradient_mapping(x: np.ndarray, g: np.ndarray, step: float, project: Callable[[np.ndarray], np.ndarray]) -> Any:
    """``(x_new, ||x - x_new|| / step)``: a projected step and the norm of its gradient mapping."""
    x_new = project(x - step * g)
    return x_new, float(np.linalg.norm(x - x_new)) / step


# ----------------------------------------------------------------------------- reference lower solve
def lower_minimum(problem: BilevelProblem, x: np.ndarray, y_start: np.ndarray) -> tuple[float, np.ndarray]:
    r""":math:`\min_{y \in Y,\ g(x,y)\le0,\ h(x,y)=0} f(x, y)` to high accuracy.

    When the problem declares its lower objective convex quadratic in :math:`y` (``lower_quadratic``) with affine
    coupled constraints and a box (or free) :math:`Y`, this is one QP solved by CVXPY with Clarabel (interior
    point, tolerances 1e-10; see :func:`_lower_qp`). Otherwise SciPy, from ``y_start`` and
    ``y0`` (the better is kept; the lower level may be nonconvex): L-BFGS-B for a box :math:`Y` without coupled
    constraints; SLSQP with the constraints (affine or by autodiff Jacobians) otherwise; for a non-box :math:`Y`,
    the accelerated projected-gradient loop run to a gradient mapping of 1e-10."""
    from scipy.optimize import minimize

    low, cons, y_set = problem.lower, problem.lower_constraints, problem.y_set
    x = np.asarray(x, dtype=float)
    if problem.has_lower_quadratic and (cons is None or cons.is_affine) and isinstance(y_set, (Box, Reals)):
        y = _lower_qp(problem, x)
        if y is not None:
            return low.value(x, y), y

    def fun(y: np.ndarray) -> tuple[float, np.ndarray]:
        return low.value(x, y), low.grad(x, y)[1]

    best_value, best_y = math.inf, np.asarray(y_start, dtype=float)
    starts = [np.asarray(y_start, dtype=float), np.asarray(problem.y0, dtype=float)]
    for start in starts:
        if not isinstance(y_set, Box):
            state = InnerState(y_set.project(start))
            inner_solve(state, lambda y: low.value(x, y), lambda y: low.grad(x, y)[1], y_set.project,
                        tol=1e-10, max_steps=20_000)
            value, y = low.value(x, state.y), state.y
        elif cons is None:
            bounds = list(zip(*BilevelProblem._box_bounds(y_set), strict=True))
            res = minimize(fun, y_set.project(start), jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": 20_000, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 30})
            value, y = float(res.fun), res.x
        else:
            constraints = []
            for kind, ctype in (("inequality", "ineq"), ("equality", "eq")):
                if (cons.n_inequality if kind == "inequality" else cons.n_equality) == 0:
                    continue
                sign = -1.0 if kind == "inequality" else 1.0  # SciPy wants c(y) >= 0

                def cfun(y: np.ndarray, kind: str = kind, sign: float = sign) -> np.ndarray:
                    return sign * cons.value(kind, x, y)

                def cjac(y: np.ndarray, kind: str = kind, sign: float = sign) -> np.ndarray:
                    if cons.is_affine:  # constant Jacobian A_y: no per-row products
                        return sign * cons.affine(kind)[1]
                    k = cons.n_inequality if kind == "inequality" else cons.n_equality
                    rows = [cons.vjp(kind, x, y, np.eye(k)[i])[1] for i in range(k)]
                    return sign * np.array(rows)

                constraints.append({"type": ctype, "fun": cfun, "jac": cjac})
            bounds = list(zip(*BilevelProblem._box_bounds(y_set), strict=True))
            res = minimize(fun, y_set.project(start), jac=True, method="SLSQP", bounds=bounds,
                           constraints=constraints, options={"maxiter": 2000, "ftol": 1e-15})
            value, y = float(res.fun), res.x
            if cons.violation(x, y) > 1e-7 * max(1.0, float(np.linalg.norm(y))):
                continue
        if value < best_value:
            best_value, best_y = value, y
    return best_value, best_y


def _lower_qp(problem: BilevelProblem, x: np.ndarray) -> np.ndarray | None:
    r"""The minimiser of the declared quadratic lower level
    :math:`\min_y \tfrac12 y^\top Q(x) y + q(x)^\top y` s.t. :math:`A_y y \le b - A_x x`,
    :math:`E_y y = e - E_x x`, :math:`y \in Y` (a box), by CVXPY + Clarabel with sparse constraint matrices.
    Returns None when Clarabel does not report an optimal solution (the caller then falls back to SciPy)."""
    import cvxpy as cp
    import scipy.sparse as sp

    Q, q = problem.lower_quadratic_at(x)
    m = q.size
    y = cp.Variable(m)
    if Q.ndim == 1:
        if np.any(Q < 0):
            raise ValueError("lower_quadratic: the diagonal Q(x) has negative entries; the lower level is not convex")
        quadratic = 0.5 * cp.sum(cp.multiply(Q, cp.square(y)))
    else:
        quadratic = 0.5 * cp.quad_form(y, cp.psd_wrap(0.5 * (Q + Q.T)))
    constraints = []
    cons = problem.lower_constraints
    if cons is not None:
        for kind in ("inequality", "equality"):
            part = cons.affine(kind)
            if part is None:
                continue
            A_x, A_y, b = part
            lhs, rhs = sp.csr_matrix(A_y) @ y, b - A_x @ x
            constraints.append(lhs <= rhs if kind == "inequality" else lhs == rhs)
    if isinstance(problem.y_set, Box):
        lower, upper = problem.y_set.lower, problem.y_set.upper
        for bound, sign in ((lower, 1.0), (upper, -1.0)):
            finite_rows = np.flatnonzero(np.isfinite(bound))
            if finite_rows.size:
                constraints.append(sign * y[finite_rows] >= sign * bound[finite_rows])
    qp = cp.Problem(cp.Minimize(quadratic + q @ y), constraints)
    try:
        qp.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    except cp.error.SolverError:
        return None
    if qp.status != cp.OPTIMAL or y.value is None:
        return None
    return np.asarray(y.value, dtype=np.float64)


# ----------------------------------------------------------------------------------------- results
def finish(
    problem: BilevelProblem,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    outcome: LoopOutcome,
    oracles: Oracles,
    *,
    hypergradient_norm: float | None,
    info: dict[str, Any] | None = None,
    compute_gap: bool = True,
    backend: str = "numpy",
) -> Result:
    """Build the bilevel :class:`Result`: the pair ``(x, y)``, the upper objective, the computed lower-level gap,
    the constraint violation and the hypergradient-norm estimate (in ``info``), and the loop's record."""
    status, message = outcome.status, outcome.message
    upper = problem.upper.value(x, y)
    details: dict[str, Any] = dict(info or {})
    if compute_gap:
        lower_here = problem.lower.value(x, y)
        lower_star, _ = lower_minimum(problem, x, y)
        violation_y = 0.0 if problem.lower_constraints is None else problem.lower_constraints.violation(x, y)
        if violation_y <= 1e-9 and problem.y_set.contains(y):
            lower_star = min(lower_star, lower_here)  # y itself is feasible: the minimum is at most f(x, y)
        details["lower_gap"] = lower_here - lower_star
        details["lower_value"] = lower_here
    details["upper_objective"] = upper
    details["constraint_violation"] = problem.constraint_violation(x, y)
    details["hypergradient_norm"] = hypergradient_norm
    details["oracle_calls"] = oracles.oracle_calls
    if not (np.isfinite(upper) and np.all(np.isfinite(x)) and np.all(np.isfinite(y))) and status is not Status.NUMERICAL_ERROR:
        status = Status.NUMERICAL_ERROR
        message = f"{method}: the final point or its upper objective is not finite; " + Status.NUMERICAL_ERROR.advice
    counts = {k: v for k, v in oracles.counts.items()}
    counts.update({k: v for k, v in outcome.counts.items() if k not in counts})
    return Result(
        x=(np.array(x), np.array(y)),
        fun=upper,
        status=status,
        message=message,
        nit=outcome.nit,
        counts=counts,
        residuals=dict(outcome.residuals),
        history=outcome.history,
        wall_time=outcome.wall_time,
        method=method,
        backend=backend,
        info=details,
    )


def finite(*arrays: np.ndarray) -> bool:
    """Whether every entry of every array is finite (``ndarray.all`` rather than the slower ``np.all`` wrapper)."""
    for a in arrays:
        if not np.isfinite(a).all():
            return False
    return True


def strongly_convex_unconstrained(problem: BilevelProblem, method: str) -> str | None:
    """Refusal reason for AID/ITD: they need an unconstrained lower level, strongly convex in ``y``.

    Strong convexity is checked at ``(x0, y0)`` from the dense lower Hessian in ``y`` (``m`` Hessian-vector
    products) when ``m <= 256``; larger problems are trusted.
    """
    why = "implicit/iterative differentiation needs y*(x) to be unique and differentiable"
    if problem.lower_constraints is not None:
        return (f"method {method!r} needs an unconstrained lower level, but this problem has coupled lower "
                f"constraints ({why}); use 'penalty', 'v-pbgd' or 'lv-hba'")
    if type(problem.y_set) is not Reals:
        return (f"method {method!r} needs Y = R^m, but y_set is {problem.y_set!r} ({why}); use 'penalty', 'v-pbgd' "
                "or 'lv-hba'")
    if not problem.lower.has_hvp:
        return f"method {method!r} needs Hessian-vector products of the lower objective; give hvp or use JAX"
    m = problem.dims[1]
    if m <= 256:
        smallest, largest = _lower_hessian_extremes(problem)
        if smallest <= 1e-8 * max(1.0, abs(largest)):
            return (f"method {method!r} needs a lower level strongly convex in y, but the lower Hessian at (x0, y0) "
                    f"has smallest eigenvalue {smallest:.2e} (the lower solution set is not a single point and "
                    f"{why}); use 'penalty', 'v-pbgd' or 'lv-hba'")
    return None


# the extreme eigenvalues of the lower Hessian in y at (x0, y0), per problem (a BilevelProblem is immutable: its
# start and objectives are fixed at construction); weak keys, so a problem's entry goes with the problem
_HESSIAN_EXTREMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _lower_hessian_extremes(problem: BilevelProblem) -> tuple[float, float]:
    """Smallest and largest eigenvalue of the dense lower Hessian in ``y`` at ``(x0, y0)`` (``m`` Hessian-vector
    products), computed once per problem: ``optkit.solve`` checks acceptance and the solver checks it again."""
    cached = _HESSIAN_EXTREMES.get(problem)
    if cached is None:
        n, m = problem.dims
        x, y = problem.x0, problem.y0
        zero = np.zeros(n)
        hess = np.array([problem.lower.hvp(x, y, zero, e)[1] for e in np.eye(m)])
        eig = np.linalg.eigvalsh(0.5 * (hess + hess.T))
        cached = (float(eig[0]), float(eig[-1]))
        _HESSIAN_EXTREMES[problem] = cached
    return cached
