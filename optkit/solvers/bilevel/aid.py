r"""``"aid"``: approximate implicit differentiation (Pedregosa 2016, HOAG; Ghadimi & Wang 2018), for unconstrained
lower levels strongly convex in :math:`y`.

With :math:`y^*(x) = \arg\min_y f(x, y)`, the implicit function theorem gives

.. math::

    \nabla\varphi(x) = \nabla_x F(x, y^*) - \nabla^2_{xy} f(x, y^*)\, v, \qquad
    \nabla^2_{yy} f(x, y^*)\, v = \nabla_y F(x, y^*)

(notes ``algorithms/bilevel.md`` §1.2 with :math:`\sigma \to 0`). Each outer iteration warm-starts gradient descent
on :math:`y` (step :math:`1/\ell`, :math:`\ell` from power iteration on Hessian-vector products) and conjugate
gradient on :math:`v` (warm-started), then takes a projected step on x (by default a Barzilai–Borwein step with a
non-monotone line search on the upper objective). Both inner solves
stop at ``inner_rtol`` times the current outer residual (or after the fixed ``inner_steps``/``cg_steps``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.problems.sets import Reals
from optkit.solvers.bilevel._common import (
    Oracles, SecantStep, finish, finite, outer_step_rule, strongly_convex_unconstrained,
)
from optkit.solvers.bilevel._implicit import lower_lipschitz, run_outer
from optkit.solvers.loop import Step, check_positive, check_positive_int, drive
from optkit.solvers.bilevel._jax_common import auto_backend, jax_support
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
    hvp = oracles.lower_hvp
    cross, hv = hvp(x, y, zero, v)
    r = rhs - hv
    p = r
    rr = float(r @ r)
    tol_sq = tol * tol if math.isfinite(tol) else math.inf
    for _ in range(max_steps):
        if rr <= tol_sq:
            break
        hx, hp = hvp(x, y, zero, p)
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
    return v, cross, math.sqrt(rr)


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


@register("aid", BilevelProblem, backends=("numpy", "jax"), accepts=_accepts, example=_example)
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
    outer_step: str = "nonmonotone_bb",
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
        Fixed outer step; ``None``: chosen by ``outer_step``.
    inner_steps, cg_steps
        Fixed numbers of inner gradient steps and CG steps per outer step; ``None`` (default): adaptive, to
        ``inner_rtol`` times the current outer residual (at most ``inner_max``).
    inner_rtol, inner_max
        See above.
    outer_step
        ``"nonmonotone_bb"`` (default: Barzilai–Borwein step safeguarded by a non-monotone Armijo test on the upper
        objective, see :func:`_run_nonmonotone_bb`), ``"secant"`` (:math:`1/L_k`, monotone secant estimate) or
        ``"bb"`` (plain Barzilai–Borwein long step, no line search, only for strongly convex hyper-objectives).
        Ignored when ``step`` is given (fixed step).
    linear_solver
        ``"cg"`` (default): conjugate gradient on :math:`\nabla^2_{yy} f\, v = \nabla_y F`, warm-started;
        ``"gd"``: ``cg_steps`` warm-started gradient (Richardson) steps :math:`v \leftarrow v + (\nabla_y F -
        \nabla^2_{yy} f\, v)/\ell`, one Hessian-vector product each, the hypergradient using the cross term of the
        last product (the lagged-:math:`v` estimate of single-loop AID); needs ``cg_steps``.
    backend
        ``"numpy"`` (the reference) or ``"jax"`` (``"auto"`` picks JAX when the levels are JAX-traceable and the
        JAX backend takes the problem, NumPy otherwise): the same algorithm, each hypergradient
        evaluation (the inner gradient loop, the upper gradient and value, the CG or Richardson loop) one call of a
        compiled ``jax.jit`` program built from autodiff of the levels (Hessian-vector products forward over
        reverse), with the same stopping tests, warm starts and oracle counts
        (:mod:`optkit.solvers.bilevel._aid_jax`); the outer loop is this module's Python. Every option is
        supported. Needs JAX-traceable levels, X = R^n or a Box (see
        :func:`~optkit.solvers.bilevel._jax_common.jax_support`); refused with the reason otherwise. Iterates
        equal the NumPy backend's up to rounding (summation order in matrix-vector products). On the CPU each
        call pays JAX's asynchronous dispatch (a worker-thread handoff, ~0.05-0.08 ms); for small problems set
        ``jax.config.update("jax_cpu_enable_async_dispatch", False)`` before JAX's first computation.
    time_limit, callback, progress, seed
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
    chosen = auto_backend(backend, resolve_backend(backend, aid.solver_info), problem, "aid")
    if chosen == "jax":
        reason = jax_support(problem, "aid")
        if reason is not None:
            raise ValueError(reason)
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
    if outer_step not in ("nonmonotone_bb", "secant", "bb"):
        raise ValueError(f"outer_step must be 'nonmonotone_bb', 'secant' or 'bb', got {outer_step!r}")
    # a fixed step overrides outer_step (the fixed-step branch of SecantStep)
    rule = (outer_step_rule("secant" if step is not None else outer_step, step)
            if (outer_step != "nonmonotone_bb" or step is not None) else None)
    oracles = Oracles(problem)
    x0 = problem.x_set.project(problem.x0)
    state: dict[str, Any] = {"x": x0, "y": np.array(problem.y0), "v": np.zeros(problem.dims[1]), "residual": 1.0}
    counts, lower_grad_y = oracles.counts, problem.lower.grad_y
    if chosen == "jax":
        from optkit.solvers.bilevel import _aid_jax

        lipschitz = _aid_jax.lower_lipschitz(problem, oracles, x0, problem.y0)
    else:
        lipschitz = lower_lipschitz(oracles, x0, problem.y0)

    def grad_y(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # default loop: only grad_y f is used by the inner steps; a y-block-only gradient when the problem gives
        # one (FiniteSum(grad_y=...)), counted as one lower gradient as the full one it replaces
        counts["lower_grad"] += 1
        return lower_grad_y(x, y)

    def hypergradient(x: np.ndarray, st: dict[str, Any]) -> tuple[np.ndarray, float]:
        target = max(1e-14, inner_rtol * min(1.0, st["residual"]))
        target_sq = target * target
        y = st["y"]
        lower_grad = grad_y if rule is None else (lambda x, y: oracles.lower_grad(x, y)[1])
        g = lower_grad(x, y)
        for _ in range(inner_steps if inner_steps is not None else inner_max):
            if inner_steps is None and float(g @ g) <= target_sq:
                break
            y = y - g / lipschitz
            g = lower_grad(x, y)
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
        st["lower_grad"] = g
        st["hypergradient"] = estimate = Fx - cross
        return estimate, math.sqrt(float(g @ g))

    value = None
    if chosen == "jax":
        hypergradient = _aid_jax.hypergradient_oracle(
            problem, oracles, lipschitz, inner_rtol=inner_rtol, inner_steps=inner_steps, cg_steps=cg_steps,
            inner_max=inner_max, linear_solver=linear_solver)

        def value(x: np.ndarray) -> float:
            # computed by the same compiled call as the hypergradient at x (state["value"]), counted here
            counts["upper_value"] += 1
            return state["value"]

    info = {"lower_lipschitz": lipschitz, "outer_step": outer_step if step is None else "fixed",
            "linear_solver": linear_solver}
    if rule is None:
        return _run_nonmonotone_bb(problem, oracles, hypergradient, state, tol=tol, max_iter=max_iter,
                                   time_limit=time_limit, callback=callback, progress=progress, info=info,
                                   value=value, backend=chosen)
    if isinstance(rule, SecantStep):
        result = run_outer(problem, "aid", oracles, hypergradient, state, tol=tol, max_iter=max_iter, step=step,
                           time_limit=time_limit, callback=callback, progress=progress, info=info)
        return result if chosen == "numpy" else replace(result, backend=chosen)
    return _run_with_rule(problem, oracles, hypergradient, state, rule, tol=tol, max_iter=max_iter,
                          time_limit=time_limit, callback=callback, progress=progress, info=info, backend=chosen)


def _run_with_rule(problem: BilevelProblem, oracles: Oracles, hypergradient: Any, state: dict[str, Any], rule: Any,
                   *, tol: float, max_iter: int, time_limit: float | None, callback: Any, progress: bool,
                   info: dict[str, Any], backend: str = "numpy") -> Result:
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
                  hypergradient_norm=outcome.residuals.get("hypergradient_norm"), info=info, backend=backend)


def _projection(problem: BilevelProblem) -> Any:
    """The projection onto X, or (X = R^n) the identity: every argument it gets is a new array (``x - alpha g``)."""
    if type(problem.x_set) is Reals:
        return _identity
    return problem.x_set.project


def _identity(v: np.ndarray) -> np.ndarray:
    return v


# nonmonotone line search constants: memory M, sufficient-decrease gamma, backtracking limit, BB clipping interval
_NM_MEMORY = 10
_NM_GAMMA = 1e-4
_NM_MAX_BACKTRACKS = 30
_BB_MIN, _BB_MAX = 1e-10, 1e10


def _run_nonmonotone_bb(problem: BilevelProblem, oracles: Oracles, hypergradient: Any, state: dict[str, Any], *,
                        tol: float, max_iter: int, time_limit: float | None, callback: Any, progress: bool,
                        info: dict[str, Any], value: Any = None, backend: str = "numpy") -> Result:
    r"""Outer loop with a safeguarded Barzilai–Borwein step (Raydan 1997, Algorithm 2.1, projected as in Birgin,
    Martínez & Raydan 2000, SPG2).

    From the accepted :math:`x_k` with hypergradient estimate :math:`g_k` and upper value
    :math:`h_k = F(x_k, y_k)` (the hyper-objective :math:`h(x) = F(x, y^*(x))` at the current inner iterate), the
    trial point is :math:`x^+ = P_X(x_k - \alpha g_k)` with :math:`\alpha` the BB1 step
    :math:`\|s\|^2/\langle s, d\rangle` (:math:`s = x_k - x_{k-1}`, :math:`d = g_k - g_{k-1}`, clipped to
    :math:`[10^{-10}, 10^{10}]`, the previous step kept when :math:`\langle s, d\rangle \le 0`). The inner solves are
    warm-started at :math:`x^+`, giving :math:`y^+, g^+` and :math:`h^+ = F(x^+, y^+)`, and :math:`x^+` is accepted
    when the non-monotone Armijo condition of Grippo, Lampariello & Lucidi (1986, eq. (6))

    .. math::

        h^+ \le \max_{0 \le j < \min(k+1, M)} h_{k-j} + \gamma\, \langle g_k, x^+ - x_k\rangle + \epsilon_k

    holds (:math:`M = 10`, :math:`\gamma = 10^{-4}`, :math:`\epsilon_k = 10^{-12}(1 + |h_{max}|)` absorbs rounding).
    The value is the first-order corrected estimate :math:`h^+ = F(x^+, y^+) - \langle v^+, \nabla_y f(x^+, y^+)
    \rangle` (as :math:`y^* - y \approx -H^{-1}\nabla_y f` and :math:`v \approx H^{-1}\nabla_y F`, its error is
    second order in the inner errors). Otherwise :math:`\alpha` is halved (:math:`y, v` kept as the next warm
    start) and the trial is repeated (after 30 halvings the trial is taken anyway). Each trial costs one inner
    solve plus one upper function value; all of it is counted. The reported residual is the projected gradient
    mapping at the accepted point,
    :math:`\|x^+ - P_X(x^+ - \alpha^+ g^+)\| / \alpha^+`, with :math:`\alpha^+` the next BB step.
    """
    project = _projection(problem)
    backtracks = {"total": 0}

    def numpy_value(x: np.ndarray) -> float:
        # F(x, y) - <v, grad_y f(x, y)>: first-order correction of F(x, y) towards h(x) = F(x, y*(x)), since
        # y* - y ~ -H^{-1} grad_y f and v ~ H^{-1} grad_y F (error second order in the inner errors)
        return float(oracles.upper_value(x, state["y"]) - state["v"] @ state["lower_grad"])

    if value is None:
        value = numpy_value

    def bb_clip(a: float) -> float:
        return min(max(float(a), _BB_MIN), _BB_MAX)

    def step_fn(budget: int) -> Step:
        before = oracles.oracle_calls
        if "g" not in state:  # initial hypergradient and value at x0
            g0, inner0 = hypergradient(state["x"], state)
            state["g"], state["inner"] = g0, inner0
            state["h"] = [value(state["x"])]
            norm = float(np.linalg.norm(g0))
            state["alpha"] = bb_clip(0.05 * max(1.0, float(np.linalg.norm(state["x"]))) / norm if norm > 0 else 1.0)
        x, g = state["x"], state["g"]
        # the inner solves rebind state["y"], state["v"] to new arrays (never write into them): references suffice
        y_saved, v_saved = state["y"], state["v"]
        reference = max(state["h"][-_NM_MEMORY:])
        alpha = state["alpha"]
        for attempt in range(_NM_MAX_BACKTRACKS + 1):
            x_new = project(x - alpha * g)
            g_new, inner = hypergradient(x_new, state)
            h_new = value(x_new)
            is_finite = math.isfinite(h_new) and finite(x_new, g_new, state["y"])
            if not is_finite:
                ok = False
            else:
                slack = 1e-12 * (1.0 + abs(reference))
                ok = h_new <= reference + _NM_GAMMA * float(g @ (x_new - x)) + slack
            if ok or attempt == _NM_MAX_BACKTRACKS:
                break
            # y, v keep the trial's inner progress as the next warm start (more accurate than restoring them)
            alpha *= 0.5
            backtracks["total"] += 1
        if not is_finite:
            state["y"], state["v"] = y_saved, v_saved
            return Step(1, {"hypergradient_norm": math.nan, "inner_residual": math.nan},
                        status=Status.NUMERICAL_ERROR,
                        message="aid: a non-finite iterate appeared; the last finite iterate is returned. "
                        "Try outer_step='secant' or a smaller step.")
        s, d = x_new - x, g_new - g
        sd = float(s @ d)
        next_alpha = bb_clip(float(s @ s) / sd) if sd > 0 and math.isfinite(sd) else bb_clip(alpha)
        step = x_new - project(x_new - next_alpha * g_new)
        residual = math.sqrt(float(step @ step)) / next_alpha
        state["x"], state["g"], state["alpha"], state["residual"] = x_new, g_new, next_alpha, residual
        state["h"] = (state["h"] + [h_new])[-_NM_MEMORY:]
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
    info = dict(info, backtracks=backtracks["total"])
    return finish(problem, "aid", x, y, outcome, oracles,
                  hypergradient_norm=outcome.residuals.get("hypergradient_norm"), info=info, backend=backend)
