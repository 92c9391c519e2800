r"""The value-function penalty engine shared by ``"penalty"`` (Kwon, Kwon, Wright & Nowak, ICLR 2024) and
``"f2sa"`` (Kwon, Kwon, Wright & Nowak, ICML 2023).

Both minimise the penalised hyper-objective (Kwon et al. 2024, eq. (3); F2SA with :math:`\lambda = 1/\sigma`)

.. math::

    \psi_\sigma(x) = \frac{l(x, \sigma) - l(x, 0)}{\sigma}, \qquad
    l(x, \sigma) = \min_{y \in K(x)} \sigma F(x, y) + f(x, y),

with two lower-level copies: :math:`y \approx \arg\min_{K(x)} \sigma F + f` and :math:`z \approx \arg\min_{K(x)}
f`, and the x-direction (Danskin, plus the multipliers :math:`\nu` of the affine coupled constraints
:math:`A_x x + A_y y \le b` when present)

.. math::

    G_x = \nabla_x F(x, y) + \frac{\nabla_x f(x, y) - \nabla_x f(x, z) + A_x^\top(\nu_y - \nu_z)}{\sigma}.

Stopping rule (deterministic runs): :math:`\sigma` has reached its final value, the gradient mapping of the x-step
:math:`\|x - P_X(x - \alpha G_x)\|/\alpha \le` ``tol`` (reported as ``hypergradient_norm``), and the inner
gradient mappings divided by :math:`\sigma` are at most ``tol`` (``inner_residual``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._common import (
    InnerState,
    LowerFeasibleSet,
    Oracles,
    Sampler,
    finish,
    finite,
    inner_solve,
    outer_step_rule,
    probe_lipschitz,
    seed_info,
)
from optkit.solvers.loop import Step, check_positive_int, drive
from optkit.solvers.result import Result, Status


def affine_coupling_only(problem: BilevelProblem, method: str) -> str | None:
    cons = problem.lower_constraints
    if cons is not None and not cons.is_affine:
        return (f"method {method!r} handles coupled lower constraints only when they are affine (A_x, A_y, b); "
                "use 'lv-hba' with an upper_set projection for nonlinear ones")
    return None


def _curvature(level: Any, x: np.ndarray, y: np.ndarray, sampler: Sampler, n_batches: int = 5) -> tuple[float, int]:
    """Curvature in y for the inner steps: of the full objective, or, for minibatch runs, the largest over
    ``n_batches`` fixed random minibatches. A minibatch gradient is the gradient of the minibatch objective, whose
    curvature can far exceed the full one (rank-one samples: up to the trace of the mean Hessian), so steps
    ``1/L_full`` diverge with small batches; ``1/max_B L_B`` is stable for every batch drawn like these.
    Returns ``(L, gradient evaluations spent)``."""
    if sampler.batch is None:
        return probe_lipschitz(lambda v: level.grad(x, v)[1], y), 9
    estimates = []
    for _ in range(n_batches):
        idx = sampler()
        estimates.append(probe_lipschitz(lambda v, idx=idx: level.batch_grad(x, v, idx)[1], y))
    return max(estimates), 9 * n_batches


def run_value_penalty(
    problem: BilevelProblem,
    method: str,
    *,
    sigma_of: Callable[[int], float],
    sigma_final: float,
    tol: float,
    max_iter: int,
    step: float | None,
    step_decay: float,
    inner_steps: int | None,
    inner_max: int,
    inner_rtol: float,
    batch_size: int | None,
    time_limit: float | None,
    callback: Any,
    progress: bool,
    seed: Any,
    extra_info: dict[str, Any],
    outer_rule: str = "secant",
    shared_inner: bool = False,
    backend: str = "numpy",
    check_every: int = 1,
) -> Result:
    r"""Run the penalty iteration. ``inner_steps=None``: adaptive accelerated inner solves (double loop);
    an int: that many plain projected-gradient steps per outer step with Lipschitz steps (F2SA / single loop).

    ``shared_inner`` (deterministic, uncoupled, fixed inner steps): both copies take the same step
    :math:`1/(L_f + \sigma L_F)` and the x-direction reuses the gradients of the last inner step (a Jacobi update of
    :math:`(x, y, z)`: 3 oracle calls per inner step, none extra for x). With a common step the difference
    :math:`(y - z)/\sigma` follows a gradient iteration on the linear system of implicit differentiation, so the
    inner errors are not amplified by :math:`1/\sigma` (exactly so for a quadratic lower level).
    ``outer_rule``: ``"secant"`` or ``"bb"`` (see :func:`~optkit.solvers.bilevel._common.outer_step_rule`).

    ``backend="jax"`` (deterministic fixed inner steps on a problem that
    :func:`~optkit.solvers.bilevel._jax_common.jax_support` accepts; the caller checks): each outer iteration's inner
    steps and the gradients at the returned pair are one compiled call
    (:class:`~optkit.solvers.bilevel._value_penalty_jax.FixedInnerKernel`), the rest of the iteration is shared.

    ``check_every`` > 1: each call of the driver's step advances up to that many outer iterations (fewer when the
    stopping test holds, a value is non-finite or the iteration budget ends): the history has one row per such
    segment and the callback, the time limit and the progress bar act once per segment. With ``backend="jax"`` the
    whole segment is one compiled call (:class:`~optkit.solvers.bilevel._value_penalty_jax.Segment`: schedule,
    inner steps, outer step rule, stopping test); with NumPy it is the same Python iteration in a loop. The
    iterates and the iteration at which the stopping test holds do not depend on ``check_every``."""
    if backend == "jax" and (inner_steps is None or batch_size is not None):
        raise ValueError(f"{method} with backend='jax' runs deterministic fixed inner steps only (inner_steps set, "
                         "batch_size=None): use backend='numpy'")
    check_every = check_positive_int("check_every", check_every)
    oracles = Oracles(problem)
    feasible = LowerFeasibleSet(problem)
    rng, info = seed_info(seed)
    stochastic = batch_size is not None and problem.is_stochastic
    if not stochastic:
        info = {}
    upper_sampler = Sampler(problem.upper.n_samples, batch_size if stochastic else None, rng)
    lower_sampler = Sampler(problem.lower.n_samples, batch_size if stochastic else None, rng)
    x = problem.x_set.project(problem.x0)
    y0 = feasible.project(x, problem.y0)
    y_state, z_state = InnerState(y0), InnerState(y0.copy())
    outer_step = outer_step_rule(outer_rule, step)
    fixed_inner = inner_steps is not None
    shared = shared_inner and fixed_inner and not stochastic and not feasible.coupled
    lipschitz_f = lipschitz_F = 1.0
    kernel = None
    if backend == "jax":
        from optkit.solvers.bilevel._value_penalty_jax import fixed_inner_kernel

        kernel = fixed_inner_kernel(problem, inner_steps, shared)
        lipschitz_f, lipschitz_F, probes = kernel.curvature(x, y0)
        oracles.counts["lower_grad"] += probes
        oracles.counts["upper_grad"] += probes
        pair = {"yz": kernel.start(y0)} if check_every == 1 else {}
    elif fixed_inner:
        lipschitz_f, probes_f = _curvature(problem.lower, x, y0, lower_sampler)
        lipschitz_F, probes_F = _curvature(problem.upper, x, y0, upper_sampler)
        oracles.counts["lower_grad"] += probes_f
        oracles.counts["upper_grad"] += probes_F
    state: dict[str, Any] = {"x": x, "k": 0, "residual": 1.0, "hypergradient": math.inf, "sigma": sigma_of(0)}

    def objective_y(xk: np.ndarray, sigma: float) -> tuple[Callable[..., float], Callable[..., np.ndarray]]:
        def value(v: np.ndarray) -> float:
            return sigma * oracles.upper_value(xk, v) + oracles.lower_value(xk, v)

        def grad(v: np.ndarray) -> np.ndarray:
            return sigma * oracles.upper_grad(xk, v, upper_sampler())[1] + oracles.lower_grad(xk, v, lower_sampler())[1]

        return value, grad

    def objective_z(xk: np.ndarray) -> tuple[Callable[..., float], Callable[..., np.ndarray]]:
        return (lambda v: oracles.lower_value(xk, v)), (lambda v: oracles.lower_grad(xk, v, lower_sampler())[1])

    def one_jax(k: int) -> tuple[dict[str, float], Status | None]:
        xk, sigma = state["x"], sigma_of(k)
        state["sigma"] = sigma
        if shared:
            beta_y = beta_z = 1.0 / (lipschitz_f + sigma * lipschitz_F)
        else:
            beta_y, beta_z = 1.0 / (sigma * lipschitz_F + lipschitz_f), 1.0 / lipschitz_f
        yz, direction, r_y, r_z, ok, n_upper, n_lower = kernel(xk, pair["yz"], sigma, beta_y, beta_z)
        counts = oracles.counts
        counts["upper_grad"] += n_upper
        counts["lower_grad"] += n_lower
        if not ok:
            return {"hypergradient_norm": math.nan, "inner_residual": math.nan}, Status.NUMERICAL_ERROR
        pair["yz"] = yz
        y_state.residual, z_state.residual = r_y, r_z
        return x_step(k, xk, sigma, direction)

    def x_step(k: int, xk: np.ndarray, sigma: float, direction: np.ndarray,
               *arrays: np.ndarray) -> tuple[dict[str, float], Status | None]:
        alpha = outer_step(xk, direction)
        if step is not None and step_decay > 0:
            alpha = step / (k + 1) ** step_decay
        x_new = problem.x_set.project(xk - alpha * direction)
        if not finite(x_new, direction, *arrays):
            return {"hypergradient_norm": math.nan, "inner_residual": math.nan}, Status.NUMERICAL_ERROR
        residual = float(np.linalg.norm(xk - x_new)) / alpha
        state["x"], state["residual"] = x_new, residual
        inner = max(y_state.residual, z_state.residual) / sigma
        return {"hypergradient_norm": residual, "inner_residual": inner, "sigma": sigma}, None

    def one(k: int) -> tuple[dict[str, float], Status | None]:
        xk, sigma = state["x"], sigma_of(k)
        state["sigma"] = sigma
        project = (lambda v: feasible.project(xk, v))
        vy, gy = objective_y(xk, sigma)
        vz, gz = objective_z(xk)
        if shared:
            beta = 1.0 / (lipschitz_f + sigma * lipschitz_F)
            for _ in range(inner_steps):
                y, z = y_state.y, z_state.y
                Fx, Fy = oracles.upper_grad(xk, y)
                fx_y, fy_y = oracles.lower_grad(xk, y)
                fx_z, fy_z = oracles.lower_grad(xk, z)
                y_new = project(y - beta * (sigma * Fy + fy_y))
                z_new = project(z - beta * fy_z)
                y_state.residual = float(np.linalg.norm(y_new - y)) / beta
                z_state.residual = float(np.linalg.norm(z_new - z)) / beta
                y_state.y, z_state.y = y_new, z_new
        elif fixed_inner:
            beta_z = 1.0 / lipschitz_f
            beta_y = 1.0 / (sigma * lipschitz_F + lipschitz_f)
            for _ in range(inner_steps):
                g = gz(z_state.y)
                z_new = project(z_state.y - beta_z * g)
                z_state.residual = float(np.linalg.norm(z_new - z_state.y)) / beta_z
                z_state.y = z_new
                g = gy(y_state.y)
                y_new = project(y_state.y - beta_y * g)
                y_state.residual = float(np.linalg.norm(y_new - y_state.y)) / beta_y
                y_state.y = y_new
        else:
            inner_tol = max(1e-14, inner_rtol * sigma * min(1.0, state["residual"]))
            project_z = project
            inner_solve(z_state, vz, gz, project_z, tol=inner_tol, max_steps=inner_max)
            inner_solve(y_state, vy, gy, project, tol=inner_tol, max_steps=inner_max)
        if not shared:
            y, z = y_state.y, z_state.y
            idx_u, idx_l = upper_sampler(), lower_sampler()
            Fx, Fy = oracles.upper_grad(xk, y, idx_u)
            fx_y, fy_y = oracles.lower_grad(xk, y, idx_l)
            fx_z, fy_z = oracles.lower_grad(xk, z, idx_l)
        direction = Fx + (fx_y - fx_z) / sigma
        if feasible.coupled:
            nu_y, mu_y = feasible.multipliers(xk, y, sigma * Fy + fy_y)
            nu_z, mu_z = feasible.multipliers(xk, z, fy_z)
            direction = direction + feasible.x_gradient(nu_y - nu_z, mu_y - mu_z) / sigma
        return x_step(k, xk, sigma, direction, y, z)

    iterate = one if kernel is None else one_jax
    failure = (f"{method}: a non-finite iterate appeared; the last finite iterate is returned. "
               "Try a smaller step or a larger final sigma.")
    sigma_stop = sigma_final * (1 + 1e-12)

    def step_fn(budget: int) -> Step:
        before = oracles.oracle_calls
        taken = 0
        for _ in range(min(budget, check_every)):
            residuals, status = iterate(state["k"])
            state["k"] += 1
            taken += 1
            if status is not None:
                return Step(taken, residuals, counts={"oracle_calls": oracles.oracle_calls - before}, status=status,
                            message=failure)
            if not all(math.isfinite(v) for v in residuals.values()) or converged(residuals):
                break
        return Step(taken, residuals, counts={"oracle_calls": oracles.oracle_calls - before})

    segment = None
    if kernel is not None and check_every > 1:
        from optkit.solvers.bilevel._value_penalty_jax import FAILED

        segment = kernel.segment(check_every, "secant" if step is not None else outer_rule, step is not None)
        pair["state"] = segment.start(x, y0)
        sigma_table = np.empty(check_every)
        alpha_table = np.full(check_every, math.nan)

        def step_segment(budget: int) -> Step:
            k0 = state["k"]
            for j in range(check_every):
                sigma_table[j] = sigma_of(k0 + j)
            if step is not None:
                for j in range(check_every):
                    alpha_table[j] = step / (k0 + j + 1) ** step_decay if step_decay > 0 else step
            new, taken, code, hyper, inner, sigma, n_upper, n_lower = segment(
                pair["state"], sigma_table, alpha_table, lipschitz_f, lipschitz_F, tol, sigma_stop,
                min(budget, check_every))
            counts = oracles.counts
            counts["upper_grad"] += n_upper
            counts["lower_grad"] += n_lower
            pair["state"] = new
            state["k"] += taken
            done = {"oracle_calls": n_upper + n_lower}
            if code == FAILED:
                return Step(taken, {"hypergradient_norm": math.nan, "inner_residual": math.nan}, counts=done,
                            status=Status.NUMERICAL_ERROR, message=failure)
            state["sigma"], state["residual"] = sigma, hyper
            return Step(taken, {"hypergradient_norm": hyper, "inner_residual": inner, "sigma": sigma}, counts=done)

    def converged(r: dict[str, float]) -> bool:
        at_final = r.get("sigma", math.inf) <= sigma_stop
        return at_final and r["hypergradient_norm"] <= tol and r["inner_residual"] <= tol

    def current() -> tuple[np.ndarray, np.ndarray]:
        if segment is not None:
            x_now, y_now, _ = segment.split(pair["state"])
            return x_now, y_now
        if kernel is not None:
            return state["x"].copy(), kernel.copies(pair["yz"])[0]
        return state["x"].copy(), y_state.y.copy()

    outcome = drive(
        step_fn if segment is None else step_segment, converged=converged, max_iter=max_iter, method=method, time_limit=time_limit, callback=callback,
        progress=progress, current=current,
        stopping_rule=f"sigma = {sigma_final:g}, x gradient mapping <= {tol:g} and inner residual / sigma <= {tol:g}",
    )
    if segment is not None:
        state["x"], y_state.y, z_state.y = segment.split(pair["state"])
    elif kernel is not None:
        y_state.y, z_state.y = kernel.copies(pair["yz"])
    x_final, y_final = state["x"], y_state.y
    if not finite(x_final, y_final):
        x_final, y_final = problem.x0, problem.y0
    elif feasible.coupled:
        y_final = feasible.project(x_final, y_final)  # the last x-step moved K(x); y follows it
    info.update(extra_info)
    info["sigma"] = state["sigma"]
    info["z"] = z_state.y.copy()
    return finish(problem, method, x_final, y_final, outcome, oracles,
                  hypergradient_norm=outcome.residuals.get("hypergradient_norm"), info=info, backend=backend)
