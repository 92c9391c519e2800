"""Shared loop of the differentiation baselines AID and ITD: an outer projected (hyper)gradient step on x with a
warm-started inner gradient descent on y (unconstrained, strongly convex lower level)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._common import Oracles, SecantStep, finish, finite
from optkit.solvers.loop import Step, drive
from optkit.solvers.result import Result, Status


def lower_lipschitz(oracles: Oracles, x: np.ndarray, y: np.ndarray, iterations: int = 20) -> float:
    """Largest eigenvalue of the lower Hessian in y by power iteration on Hessian-vector products (times 1.05)."""
    v = np.random.default_rng(1).standard_normal(y.size)
    v /= np.linalg.norm(v)
    zero = np.zeros(x.size)
    estimate = 1.0
    for _ in range(iterations):
        w = oracles.lower_hvp(x, y, zero, v)[1]
        estimate = float(np.linalg.norm(w))
        if estimate == 0.0 or not np.isfinite(estimate):
            return 1.0
        v = w / estimate
    return 1.05 * estimate


def run_outer(
    problem: BilevelProblem,
    method: str,
    oracles: Oracles,
    hypergradient: Callable[[np.ndarray, dict[str, Any]], tuple[np.ndarray, float]],
    state: dict[str, Any],
    *,
    tol: float,
    max_iter: int,
    step: float | None,
    time_limit: float | None,
    callback: Any,
    progress: bool,
    info: dict[str, Any],
) -> Result:
    """``hypergradient(x, state) -> (estimate, inner_residual)`` updates ``state["y"]``; the loop steps x."""
    outer_step = SecantStep(step)

    def step_fn(budget: int) -> Step:
        x = state["x"]
        before = oracles.oracle_calls
        g, inner = hypergradient(x, state)
        alpha = outer_step(x, g)
        x_new = problem.x_set.project(x - alpha * g)
        if not finite(x_new, g, state["y"]):
            return Step(1, {"hypergradient_norm": math.nan, "inner_residual": math.nan},
                        status=Status.NUMERICAL_ERROR,
                        message=f"{method}: a non-finite iterate appeared; the last finite iterate is returned. "
                        "Try a smaller step.")
        residual = float(np.linalg.norm(x - x_new)) / alpha
        state["x"] = x_new
        state["residual"] = residual
        return Step(1, {"hypergradient_norm": residual, "inner_residual": inner},
                    counts={"oracle_calls": oracles.oracle_calls - before})

    outcome = drive(
        step_fn, converged=lambda r: r["hypergradient_norm"] <= tol and r["inner_residual"] <= tol,
        max_iter=max_iter, method=method, time_limit=time_limit, callback=callback, progress=progress,
        current=lambda: (state["x"].copy(), state["y"].copy()),
        stopping_rule=f"projected hypergradient norm <= {tol:g} and lower gradient norm <= {tol:g}",
    )
    x, y = state["x"], state["y"]
    if not finite(x, y):
        x, y = problem.x0, problem.y0
    return finish(problem, method, x, y, outcome, oracles,
                  hypergradient_norm=outcome.residuals.get("hypergradient_norm"), info=info)
