r"""``"v-pbgd"``: the value-function penalty-based bilevel gradient descent of Shen & Chen, "On Penalty-based Bilevel
Gradient Descent Method" (ICML 2023; Math. Programming 2025, arXiv 2302.05185).

For :math:`\min_{x \in X,\ y \in U(x)} F(x, y)` s.t. :math:`y \in \arg\min_{U(x)} f(x, \cdot)` (here :math:`U(x) =
\{y \in Y : g(x, y) \le 0, h(x, y) = 0\}`, affine :math:`g, h`), V-PBGD minimises the penalised objective
(the paper's eq. (8) with the value-function penalty :math:`p = f - v`)

.. math::

    F(x, y) + \gamma\,(f(x, y) - v(x)), \qquad v(x) = \min_{y \in U(x)} f(x, y),

by projected gradient steps on :math:`(x, y)` jointly (Algorithm 1):

.. math::

    \hat y_k &\approx \arg\min_{U(x_k)} f(x_k, \cdot) \quad\text{(T warm-started projected gradient steps)},\\
    (x_{k+1}, y_{k+1}) &= \mathrm{Proj}_{C}\big((x_k, y_k) - \alpha_k[\nabla F(x_k, y_k)
        + \gamma_k(\nabla f(x_k, y_k) - (\nabla v(x_k), 0))]\big),

with :math:`\nabla v(x) = \nabla_x f(x, \hat y) + A_x^\top\nu + E_x^\top\mu` (Danskin, plus the multipliers of the
coupled constraints at :math:`\hat y`), :math:`C = \{x \in X, y \in U(x)\}`, the step :math:`\alpha_k = 1/(\ell_F +
\gamma_k\ell_f)` (the paper's :math:`\alpha = \alpha_0/\gamma`) and the linear ramp :math:`\gamma_k = \gamma_0 +
(\gamma - \gamma_0)\min(1, k/K_{ramp})` of the authors' hyper-cleaning code. Solutions of the penalised problem with
:math:`\gamma \sim \epsilon^{-1/2}` are :math:`\epsilon`-solutions of the bilevel problem under a lower-level PL /
error-bound condition (Theorems 2–3); the bias is :math:`O(1/\gamma)`.

Stopping rule: :math:`\gamma_k = \gamma`, the gradient mapping of the penalised objective on :math:`C` is at most
``tol`` and the inner gradient mapping (of :math:`f(x_k, \cdot)` on :math:`U(x_k)`) is at most ``tol``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._common import LowerFeasibleSet, Oracles, finish, probe_lipschitz, schedule
from optkit.solvers.bilevel._projection import coupled_projection
from optkit.solvers.loop import Step, check_positive, check_positive_int, drive
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result, Status

__all__ = ["v_pbgd"]


def _accepts(problem: BilevelProblem) -> str | None:
    cons = problem.lower_constraints
    if cons is not None and not cons.is_affine:
        return ("method 'v-pbgd' handles coupled lower constraints only when they are affine (A_x, A_y, b); use "
                "'lv-hba' with a projection callable for nonlinear ones")
    return None


def _example() -> BilevelProblem:
    from optkit.problems.library.bilevel_toys import t1

    return t1().problem


@register("v-pbgd", BilevelProblem, backends=("numpy",), accepts=_accepts, example=_example)
def v_pbgd(
    problem: BilevelProblem,
    *,
    gamma: float = 10.0,
    gamma0: float = 1.0,
    ramp: int = 100,
    step: float | None = None,
    inner_steps: int = 5,
    inner_step: float | None = None,
    projection: Any = "auto",
    tol: float = 1e-6,
    max_iter: int = 100_000,
    time_limit: float | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""V-PBGD (Shen & Chen, ICML 2023), Algorithm 1 with the value-function penalty and a linear gamma ramp.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.BilevelProblem` (affine coupled lower constraints allowed).
    gamma, gamma0, ramp
        Final penalty :math:`\gamma` (bias :math:`O(1/\gamma)`; 10 as in the authors' toy script), its start
        and the ramp length in iterations.
    step
        Fixed :math:`(x, y)` step; ``None``: :math:`1/(\ell_F + \gamma_k\ell_f)` from Hessian-free probes.
    inner_steps, inner_step
        Projected gradient steps on :math:`\hat y` per iteration (warm-started) and their step (``None``:
        :math:`1/\ell_{f,y}`).
    projection
        Projection onto :math:`C`: ``"auto"``, ``"dykstra"``, ``"cvxpy"`` or a callable (see ``"lv-hba"``).
    tol
        See the stopping rule in the module docstring.
    max_iter, time_limit, backend, callback, progress, seed
        See :func:`optkit.solve` (deterministic: ``seed`` is ignored).

    Returns
    -------
    Result
        ``x = (x, y)``; ``info`` has ``y_hat`` (the lower minimiser estimate), ``gamma``, ``projection`` and the
        common bilevel fields.

    Examples
    --------
    >>> import optkit
    >>> from optkit.problems.library.bilevel_toys import t1
    >>> result = optkit.solve(t1().problem, "v-pbgd", gamma=100.0)
    >>> bool(abs(result.x[0][0] - 101 / 201) < 1e-5)  # the penalised minimiser (1 + gamma) / (1 + 2 gamma)
    True
    """
    resolve_backend(backend, ("numpy",))
    reason = _accepts(problem)
    if reason is not None:
        raise ValueError(reason)
    gamma = check_positive("gamma", gamma)
    gamma0 = min(check_positive("gamma0", gamma0, allow_zero=True), gamma)
    ramp = check_positive_int("ramp", ramp)
    if step is not None:
        step = check_positive("step", step)
    inner_steps = check_positive_int("inner_steps", inner_steps)
    if inner_step is not None:
        inner_step = check_positive("inner_step", inner_step)
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    project_c, projection_kind = coupled_projection(problem, projection)
    feasible = LowerFeasibleSet(problem)
    n, m = problem.dims
    oracles = Oracles(problem)
    u0 = project_c(np.concatenate([problem.x0, problem.y0]))
    x, y = u0[:n], u0[n:]
    low_y = probe_lipschitz(lambda v: problem.lower.grad(x, v)[1], y)
    low_all = probe_lipschitz(lambda u: np.concatenate(problem.lower.grad(u[:n], u[n:])), u0)
    up_all = probe_lipschitz(lambda u: np.concatenate(problem.upper.grad(u[:n], u[n:])), u0)
    oracles.counts["lower_grad"] += 18
    oracles.counts["upper_grad"] += 9
    beta = inner_step if inner_step is not None else 1.0 / low_y
    state: dict[str, Any] = {"x": x, "y": y, "y_hat": feasible.project(x, y.copy()), "k": 0, "gamma": gamma0}
    chunk = 50

    def one() -> Step:
        k = state["k"]
        gk = schedule(gamma0, gamma, k, kind="linear", rate=ramp)
        xk, yk, yh = state["x"], state["y"], state["y_hat"]
        inner_res = 0.0
        for _ in range(inner_steps):
            gy = oracles.lower_grad(xk, yh)[1]
            new = feasible.project(xk, yh - beta * gy)
            d = new - yh
            inner_res = math.sqrt(d @ d) / beta
            yh = new
        gx_hat, gy_hat = oracles.lower_grad(xk, yh)
        grad_v = gx_hat
        if feasible.coupled:
            nu, mu = feasible.multipliers(xk, yh, gy_hat)
            grad_v = grad_v + feasible.x_gradient(nu, mu)
        Fx, Fy = oracles.upper_grad(xk, yk)
        fx, fy = oracles.lower_grad(xk, yk)
        alpha = step if step is not None else 1.0 / (up_all + gk * low_all)
        u = np.concatenate([xk, yk])
        u_new = project_c(u - alpha * np.concatenate([Fx + gk * (fx - grad_v), Fy + gk * fy]))
        oracles.counts["projections"] += 1
        total = float(u_new.sum()) + float(yh.sum())
        if not math.isfinite(total) or abs(total) > 1e150:
            return Step(1, {"stationarity": math.nan, "inner_residual": math.nan}, status=Status.NUMERICAL_ERROR,
                        message="v-pbgd: a non-finite iterate appeared; the last finite iterate is returned. Try a "
                        "smaller step.")
        du = u - u_new
        stationarity = math.sqrt(du @ du) / alpha
        state.update(x=u_new[:n], y=u_new[n:], y_hat=yh, k=k + 1, gamma=gk)
        return Step(1, {"stationarity": stationarity, "inner_residual": inner_res, "gamma": gk})

    def converged(res: dict[str, float]) -> bool:
        return res["gamma"] >= gamma * (1 - 1e-12) and res["stationarity"] <= tol and res["inner_residual"] <= tol

    def step_fn(budget: int) -> Step:
        done, before = 0, oracles.oracle_calls
        while True:
            report = one()
            done += 1
            if report.status is not None or done >= min(budget, chunk) or converged(report.residuals):
                return Step(done, report.residuals, counts={"oracle_calls": oracles.oracle_calls - before},
                            status=report.status, message=report.message)

    outcome = drive(
        step_fn, converged=converged, max_iter=max_iter, method="v-pbgd", time_limit=time_limit, callback=callback,
        progress=progress, current=lambda: (state["x"].copy(), state["y"].copy()),
        stopping_rule=f"gamma = {gamma:g}, gradient mapping <= {tol:g} and inner gradient mapping <= {tol:g}",
    )
    info = {"y_hat": state["y_hat"].copy(), "gamma": state["gamma"], "projection": projection_kind}
    return finish(problem, "v-pbgd", state["x"], state["y"], outcome, oracles,
                  hypergradient_norm=outcome.residuals.get("stationarity"), info=info)
