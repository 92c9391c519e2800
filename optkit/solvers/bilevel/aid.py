r"""``"aid"``: approximate implicit differentiation (Pedregosa 2016, HOAG; Ghadimi & Wang 2018), for unconstrained
lower levels strongly convex in :math:`y`.

With :math:`y^*(x) = \arg\min_y f(x, y)`, the implicit function theorem gives

.. math::

    \nabla\varphi(x) = \nabla_x F(x, y^*) - \nabla^2_{xy} f(x, y^*)\, v, \qquad
    \nabla^2_{yy} f(x, y^*)\, v = \nabla_y F(x, y^*)

(notes ``algorithms/bilevel.md`` §1.2 with :math:`\sigma \to 0`). Each outer iteration warm-starts gradient descent
on :math:`y` (step :math:`1/\ell`, :math:`\ell` from power iteration on Hessian-vector products) and conjugate
gradient on :math:`v` (warm-started), then takes a projected step on x (secant step by default). Both inner solves
stop at ``inner_rtol`` times the current outer residual (or after the fixed ``inner_steps``/``cg_steps``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._common import (
    Oracles, SecantStep, finish, finite, outer_step_rule, strongly_convex_unconstrained,
)
from optkit.solvers.bilevel._implicit import lower_lipschitz, run_outer
from optkit.solvers.loop import Step, check_positive, check_positive_int, drive
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result, Status

__all__ = ["aid", "aid_hypergradient"]


def _accepts(problem: BilevelProblem) -> str | None:
    return strongly_convex_unconstrained(problem, "aid")


def _example() -> BilevelProblem:
    from optkit.problems.library.bilevel_toys import t1

    return t1().problem


def _conjugate_gradient(oracles: Oracles, x: np.ndarray, y: np.ndarray, rhs: np.ndarray, v: np.ndarray,
                        tol: float, max_steps: int) -> tuple[np.ndarray, np.ndarray, float]:
    """CG on :math:`\\nabla^2_{yy} f\\, v = b`, tracking :math:`\\nabla^2_{xy} f\\, v` alongside (one HVP per step).

    Returns ``(v, cross, residual_norm)`` with ``cross`` :math:`= \\nabla^2_{xy} f(x, y)\\, v`."""
    zero = np.zeros(x.size)
    cross, hv = oracles.lower_hvp(x, y, zero, v)
    r = rhs - hv
    p = r.copy()
    rr = float(r @ r)
    for _ in range(max_steps):
        if np.sqrt(rr) <= tol:
            break
        hx, hp = oracles.lower_hvp(x, y, zero, p)
        curvature = float(p @ hp)
        if curvature <= 0:
            break
        a = rr / curvature
        v = v + a * p
        cross = cross + a * hx
        r = r - a * hp
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return v, cross, float(np.sqrt(rr))


def aid_hypergradient(problem: BilevelProblem, x: Any, *, tol: float = 1e-12, max_steps: int = 100_000) -> np.ndarray:
    r"""The implicit hypergradient :math:`\nabla\varphi(x)` with the lower problem and the linear system solved to
    ``tol`` (gradient descent from ``y0``, then CG). For tests and references."""
    oracles = Oracles(problem)
    x = np.asarray(x, dtype=float)
    y = np.array(problem.y0, dtype=float)
    lipschitz = lower_lipschitz(oracles, x, y)
    for _ in range(max_steps):
        g = oracles.lower_grad(x, y)[1]
        if np.linalg.norm(g) <= tol:
            break
        y = y - g / lipschitz
    Fx, Fy = oracles.upper_grad(x, y)
    v, cross, _ = _conjugate_gradient(oracles, x, y, Fy, np.zeros_like(y), tol, 10 * y.size + 100)
    return Fx - cross


@register("aid", BilevelProblem, backends=("numpy",), accepts=_accepts, example=_example)
def aid(
    problem: BilevelProblem,
    *,
    tol: float = 1e-6,
    max_iter: int = 2000,
    step: float | None = None,
    inner_steps: int | None = None,
    cg_steps: int | None = None,
    inner_rtol: float = 0.1,
    inner_max: int = 10_000,
    outer_step: str = "secant",
    linear_solver: str = "cg",
    time_limit: float | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""Approximate implicit differentiation with conjugate gradient on the lower Hessian.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.BilevelProblem` whose lower level is unconstrained and strongly convex in y
        (refused otherwise, with the reason).
    tol
        Stop when the projected hypergradient mapping and the lower gradient norm are both at most ``tol``.
    max_iter
        Outer iterations.
    step
        Outer step; ``None``: :math:`1/L` with a secant estimate of the hypergradient's Lipschitz constant.
    inner_steps, cg_steps
        Fixed numbers of inner gradient steps and CG steps per outer step; ``None`` (default): adaptive, to
        ``inner_rtol`` times the current outer residual (at most ``inner_max``).
    inner_rtol, inner_max
        See above.
    outer_step
        ``"secant"`` (default: :math:`1/L_k`, monotone secant estimate) or ``"bb"`` (Barzilai–Borwein long step,
        non-monotone, for strongly convex hyper-objectives; with warm-started fixed inner steps it is the fastest
        setting on the benchopt quadratic). Ignored when ``step`` is given.
    linear_solver
        ``"cg"`` (default): conjugate gradient on :math:`\nabla^2_{yy} f\, v = \nabla_y F`, warm-started;
        ``"gd"``: ``cg_steps`` warm-started gradient (Richardson) steps :math:`v \leftarrow v + (\nabla_y F -
        \nabla^2_{yy} f\, v)/\ell`, one Hessian-vector product each, the hypergradient using the cross term of the
        last product (the lagged-:math:`v` estimate of single-loop AID); needs ``cg_steps``.
    time_limit, backend, callback, progress, seed
        See :func:`optkit.solve` (deterministic: ``seed`` is ignored).

    Returns
    -------
    Result
        ``x = (x, y)``; ``residuals["hypergradient_norm"]`` is the projected hypergradient mapping;
        ``info["hypergradient"]`` the last estimate.

    Examples
    --------
    >>> import optkit
    >>> from optkit.problems.library.bilevel_toys import t1
    >>> result = optkit.solve(t1().problem, "aid")
    >>> bool(abs(result.x[0][0] - 0.5) < 1e-6)
    True
    """
    resolve_backend(backend, ("numpy",))
    reason = _accepts(problem)
    if reason is not None:
        raise ValueError(reason)
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    if step is not None:
        step = check_positive("step", step)
    if inner_steps is not None:
        inner_steps = check_positive_int("inner_steps", inner_steps)
    if cg_steps is not None:
        cg_steps = check_positive_int("cg_steps", cg_steps)
    inner_rtol = check_positive("inner_rtol", inner_rtol)
    inner_max = check_positive_int("inner_max", inner_max)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    if linear_solver not in ("cg", "gd"):
        raise ValueError(f"linear_solver must be 'cg' or 'gd', got {linear_solver!r}")
    if linear_solver == "gd" and cg_steps is None:
        raise ValueError("linear_solver='gd' needs a fixed number of steps: set cg_steps")
    rule = outer_step_rule(outer_step, step)
    oracles = Oracles(problem)
    x0 = problem.x_set.project(problem.x0)
    lipschitz = lower_lipschitz(oracles, x0, problem.y0)
    state: dict[str, Any] = {"x": x0, "y": np.array(problem.y0), "v": np.zeros(problem.dims[1]), "residual": 1.0}

    def hypergradient(x: np.ndarray, st: dict[str, Any]) -> tuple[np.ndarray, float]:
        target = max(1e-14, inner_rtol * min(1.0, st["residual"]))
        y = st["y"]
        g = oracles.lower_grad(x, y)[1]
        for _ in range(inner_steps if inner_steps is not None else inner_max):
            if inner_steps is None and np.linalg.norm(g) <= target:
                break
            y = y - g / lipschitz
            g = oracles.lower_grad(x, y)[1]
        st["y"] = y
        Fx, Fy = oracles.upper_grad(x, y)
        if linear_solver == "gd":
            v, zero = st["v"], np.zeros(x.size)
            for _ in range(cg_steps):
                cross, hv = oracles.lower_hvp(x, y, zero, v)
                v = v + (Fy - hv) / lipschitz
        else:
            v, cross, _ = _conjugate_gradient(oracles, x, y, Fy, st["v"], 0.0 if cg_steps is not None else target,
                                              cg_steps if cg_steps is not None else inner_max)
        st["v"] = v
        st["hypergradient"] = Fx - cross
        return Fx - cross, float(np.linalg.norm(g))

    info = {"lower_lipschitz": lipschitz, "outer_step": outer_step if step is None else "fixed",
            "linear_solver": linear_solver}
    if isinstance(rule, SecantStep):
        return run_outer(problem, "aid", oracles, hypergradient, state, tol=tol, max_iter=max_iter, step=step,
                         time_limit=time_limit, callback=callback, progress=progress, info=info)
    return _run_with_rule(problem, oracles, hypergradient, state, rule, tol=tol, max_iter=max_iter,
                          time_limit=time_limit, callback=callback, progress=progress, info=info)


def _run_with_rule(problem: BilevelProblem, oracles: Oracles, hypergradient: Any, state: dict[str, Any], rule: Any,
                   *, tol: float, max_iter: int, time_limit: float | None, callback: Any, progress: bool,
                   info: dict[str, Any]) -> Result:
    """The outer loop of :func:`~optkit.solvers.bilevel._implicit.run_outer` with a given step rule (BB)."""

    def step_fn(budget: int) -> Step:
        x = state["x"]
        before = oracles.oracle_calls
        g, inner = hypergradient(x, state)
        alpha = rule(x, g)
        x_new = problem.x_set.project(x - alpha * g)
        if not finite(x_new, g, state["y"]):
            return Step(1, {"hypergradient_norm": math.nan, "inner_residual": math.nan},
                        status=Status.NUMERICAL_ERROR,
                        message="aid: a non-finite iterate appeared; the last finite iterate is returned. "
                        "Try outer_step='secant' or a smaller step.")
        residual = float(np.linalg.norm(x - x_new)) / alpha
        state["x"], state["residual"] = x_new, residual
        return Step(1, {"hypergradient_norm": residual, "inner_residual": inner},
                    counts={"oracle_calls": oracles.oracle_calls - before})

    outcome = drive(
        step_fn, converged=lambda r: r["hypergradient_norm"] <= tol and r["inner_residual"] <= tol,
        max_iter=max_iter, method="aid", time_limit=time_limit, callback=callback, progress=progress,
        current=lambda: (state["x"].copy(), state["y"].copy()),
        stopping_rule=f"projected hypergradient norm <= {tol:g} and lower gradient norm <= {tol:g}",
    )
    x, y = state["x"], state["y"]
    if not finite(x, y):
        x, y = problem.x0, problem.y0
    return finish(problem, "aid", x, y, outcome, oracles,
                  hypergradient_norm=outcome.residuals.get("hypergradient_norm"), info=info)
