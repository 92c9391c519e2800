"""The JAX path of :func:`optkit.solvers.transport.sinkhorn` (imported only when it runs; JAX is imported here).

Two ways to run:

* **one compiled loop** (default): the whole solve is a ``lax.while_loop`` inside ``jax.jit``; it works under the
  caller's ``jax.jit``, ``jax.vmap`` and ``jax.grad``. Structural options (``max_iter``, ``check_every``,
  ``implicit_diff``) are static; ``epsilon``, ``tol``, the marginals and the cost are traced.
* **chunks through** :func:`~optkit.solvers.loop.drive` when ``callback``, ``progress`` or ``time_limit`` is given
  (not under a JAX transformation): each chunk of ``check_every`` updates is one compiled call.

Under a JAX transformation (``jit``, ``vmap``, ``grad``) the :class:`~optkit.solvers.result.Result` holds arrays:
``status`` is an ``int32`` array of :class:`~optkit.solvers.result.Status` codes (0 ``CONVERGED``, 1 ``MAX_ITER``,
6 ``NUMERICAL_ERROR``), ``nit`` an ``int32`` array, ``residuals`` and ``counts`` arrays, the history has one row
per error check (NaN where no check ran; its ``time`` column is NaN) and ``message`` is generic. Outside
transformations they are the usual Python objects. The potentials are returned in the balanced gauge
:math:`\\langle a, f\\rangle = \\langle b, g\\rangle` (see :func:`optkit.kernels.jax_sinkhorn.balanced_gauge`).

Importing this module registers :class:`Result`, :class:`History` and :class:`TransportSolution` as JAX pytrees.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optkit._arrays import is_tracer
from optkit.kernels import jax_sinkhorn as kernel
from optkit.problems.transport import TransportProblem
from optkit.solvers.loop import Step, drive
from optkit.solvers.result import History, Result, Status
from optkit.solvers.transport._solution import TransportSolution

__all__ = ["solve_jax"]


# ----------------------------------------------------------------------------------------------------- pytrees
def _flatten_result(r: Result) -> tuple:
    children = (r.x, r.fun, r.status, r.nit, dict(r.counts), dict(r.residuals), r.history, dict(r.info))
    return children, (r.message, r.wall_time, r.method, r.backend)


def _unflatten_result(aux: tuple, children: tuple) -> Result:
    x, fun, status, nit, counts, residuals, history, info = children
    message, wall_time, method, backend = aux
    return Result(x=x, fun=fun, status=status, message=message, nit=nit, counts=counts, residuals=residuals,
                  history=history, wall_time=wall_time, method=method, backend=backend, info=info)


def _flatten_history(h: History) -> tuple:
    keys = tuple(h)
    return tuple(h[k] for k in keys), keys


def _unflatten_history(keys: tuple, columns: tuple) -> History:
    # Tracers cannot go through np.asarray: keep the columns as they are.
    return History.from_columns(dict(zip(keys, columns)), convert=False)


def _flatten_solution(s: TransportSolution) -> tuple:
    return (s.plan, s.potentials, s.cost, s.objective, s.dual_objective, s.marginal_error), None


def _unflatten_solution(_: Any, children: tuple) -> TransportSolution:
    return TransportSolution(*children)


def _register_pytrees() -> None:
    for cls, flatten, unflatten in (
        (Result, _flatten_result, _unflatten_result),
        (History, _flatten_history, _unflatten_history),
        (TransportSolution, _flatten_solution, _unflatten_solution),
    ):
        try:
            jax.tree_util.register_pytree_node(cls, flatten, unflatten)
        except ValueError:  # already registered (module reloaded)
            pass


_register_pytrees()


# ------------------------------------------------------------------------------------------------ the solve
@partial(jax.jit, static_argnames=("max_iter", "check_every", "implicit_diff"))
def _solve_arrays(cost: Any, a: Any, b: Any, epsilon: Any, tol: Any, f0: Any, g0: Any, *, max_iter: int,
                  check_every: int, implicit_diff: bool) -> dict[str, Any]:
    f, g, err, nit, finite, errors = kernel.sinkhorn_potentials(
        cost, a, b, epsilon, tol, f0, g0, max_iter=max_iter, check_every=check_every, implicit_diff=implicit_diff
    )
    f, g = kernel.balanced_gauge(f, g, a, b)
    summary = kernel.entropic_summary(cost, a, b, f, g, epsilon)
    status = jnp.where(err <= tol, int(Status.CONVERGED),
                       jnp.where(finite, int(Status.MAX_ITER), int(Status.NUMERICAL_ERROR))).astype(jnp.int32)
    status = jnp.where(jnp.isfinite(summary["objective"]), status, int(Status.NUMERICAL_ERROR)).astype(jnp.int32)
    return dict(summary, f=f, g=g, nit=nit, status=status, errors=errors)


@jax.jit
def _summary_jit(cost: Any, a: Any, b: Any, f: Any, g: Any, epsilon: Any) -> dict[str, Any]:
    f, g = kernel.balanced_gauge(f, g, a, b)
    return dict(kernel.entropic_summary(cost, a, b, f, g, epsilon), f=f, g=g)


def _arrays(problem: TransportProblem, init: Any) -> tuple:
    cost = jnp.asarray(problem.cost)
    if not jnp.issubdtype(cost.dtype, jnp.floating):
        cost = cost.astype(jnp.result_type(float))
    dtype = cost.dtype
    a = jnp.asarray(problem.a, dtype)
    b = jnp.asarray(problem.b, dtype)
    epsilon = jnp.asarray(problem.epsilon, dtype)
    n, m = cost.shape
    if init is None:
        f0, g0 = jnp.zeros(n, dtype), jnp.zeros(m, dtype)
    else:
        try:
            f0, g0 = init
        except (TypeError, ValueError):
            raise TypeError("init must be a pair of potentials (f, g)") from None
        f0, g0 = jnp.asarray(f0, dtype), jnp.asarray(g0, dtype)
        if f0.shape != (n,) or g0.shape != (m,):
            raise ValueError(f"init potentials must have shapes ({n},) and ({m},), got {f0.shape} and {g0.shape}")
    return cost, a, b, epsilon, f0, g0


def _solution(out: dict[str, Any]) -> TransportSolution:
    return TransportSolution(out["plan"], (out["f"], out["g"]), out["cost"], out["objective"], out["dual_objective"],
                             (out["row_error"], out["col_error"]))


def solve_jax(
    problem: TransportProblem,
    *,
    tol: Any,
    max_iter: int,
    check_every: int,
    time_limit: float | None,
    init: Any,
    implicit_diff: bool,
    callback: Any,
    progress: bool,
) -> Result:
    """Log-domain Sinkhorn on JAX arrays; see the module docstring for what the result holds."""
    cost, a, b, epsilon, f0, g0 = _arrays(problem, init)
    tol = jnp.asarray(tol, cost.dtype)
    traced = any(is_tracer(v) for v in (cost, a, b, epsilon, tol, f0, g0))
    if callback is not None or progress or time_limit is not None:
        if traced:
            raise ValueError(
                "sinkhorn: callback, progress and time_limit run a Python loop over concrete values and cannot be "
                "used under jax.jit, jax.vmap or jax.grad; drop them to get the compiled, differentiable loop"
            )
        return _solve_chunked(cost, a, b, epsilon, tol, f0, g0, max_iter=max_iter, check_every=check_every,
                              time_limit=time_limit, callback=callback, progress=progress)
    start = time.perf_counter()
    out = _solve_arrays(cost, a, b, epsilon, tol, f0, g0, max_iter=max_iter, check_every=check_every,
                        implicit_diff=implicit_diff)
    solution = _solution(out)
    errors = out["errors"]
    n_checks = errors.shape[-1]
    marginal_error = out["row_error"] + out["col_error"]
    counts = {"updates": out["nit"], "kernel_calls": 1}
    info = {"epsilon": epsilon, "dual_objective": out["dual_objective"],
            "duality_gap": out["objective"] - out["dual_objective"]}
    if traced:
        checks = jnp.minimum(jnp.arange(n_checks) * check_every, max_iter)
        history = _unflatten_history(("nit", "time", "marginal_error"),
                                     (checks, jnp.full(n_checks, jnp.nan, cost.dtype), errors))
        message = ("sinkhorn (jax) ran under a JAX transformation: `status` holds a Status code (0 CONVERGED, "
                   "1 MAX_ITER, 6 NUMERICAL_ERROR) and `nit` the number of updates, as arrays.")
        return Result(x=solution, fun=out["objective"], status=out["status"], message=message, nit=out["nit"],
                      counts=counts, residuals={"marginal_error": marginal_error}, history=history, wall_time=0.0,
                      method="sinkhorn", backend="jax", info=info)
    jax.block_until_ready(out)
    wall = time.perf_counter() - start
    nit = int(out["nit"])
    status = Status(int(out["status"]))
    recorded = np.asarray(errors)
    recorded = recorded[: int(np.sum(~np.isnan(recorded)))]
    checks = np.minimum(np.arange(recorded.size) * check_every, max_iter)
    if recorded.size:
        checks[-1] = nit
    times = np.full(recorded.size, np.nan)
    if times.size:
        times[-1] = wall
    history = History({"nit": checks, "time": times, "marginal_error": recorded})
    err = float(marginal_error)
    message = _message(status, nit, err, float(tol), float(epsilon))
    return Result(x=solution, fun=float(out["objective"]), status=status, message=message, nit=nit,
                  counts={"updates": nit, "kernel_calls": 1}, residuals={"marginal_error": err}, history=history,
                  wall_time=wall, method="sinkhorn", backend="jax",
                  info={k: float(v) for k, v in info.items()})


def _message(status: Status, nit: int, err: float, tol: float, epsilon: float) -> str:
    where = f"after {nit} iterations (marginal_error = {err:.3e})"
    if status is Status.CONVERGED:
        return f"sinkhorn converged {where}: L1 marginal error <= {tol:g}."
    return (f"sinkhorn stopped with {status.name} {where} at epsilon = {epsilon:g}. {status.advice} "
            f"Stopping rule: L1 marginal error <= {tol:g}.")


def _solve_chunked(cost: Any, a: Any, b: Any, epsilon: Any, tol: Any, f0: Any, g0: Any, *, max_iter: int,
                   check_every: int, time_limit: float | None, callback: Any, progress: bool) -> Result:
    """The Python-driven path: chunks of ``check_every`` compiled updates between callback/limit checks."""
    state = {"f": f0, "g": g0}
    tol_value = float(tol)

    def step(budget: int) -> Step:
        f, g, err, done = kernel.sinkhorn_log_chunk(cost, a, b, state["f"], state["g"], epsilon,
                                                    jnp.int32(min(budget, check_every)), tol)
        err, done = float(err), int(done)
        if not (np.isfinite(err) and not bool(jnp.any(jnp.isnan(f))) and not bool(jnp.any(jnp.isnan(g)))):
            return Step(max(done, 1), {"marginal_error": float("nan")}, status=Status.NUMERICAL_ERROR,
                        message=f"sinkhorn: a non-finite value appeared at epsilon = {float(epsilon):g}; the last "
                        "finite potentials are returned. Increase epsilon or use float64.")
        state["f"], state["g"] = f, g
        if done == 0 and not err <= tol_value:
            return Step(0, {"marginal_error": err}, status=Status.STALLED,
                        message="sinkhorn: the kernel made no update; " + Status.STALLED.advice)
        return Step(done, {"marginal_error": err})

    def current() -> TransportSolution:
        return _solution(_summary_jit(cost, a, b, state["f"], state["g"], epsilon))

    outcome = drive(step, converged=lambda r: r["marginal_error"] <= tol_value, max_iter=max_iter,
                    method="sinkhorn", time_limit=time_limit, callback=callback, progress=progress, current=current,
                    stopping_rule=f"L1 marginal error <= {tol_value:g}")
    solution = current()
    status, message = outcome.status, outcome.message
    if not np.isfinite(float(solution.objective)):
        status = Status.NUMERICAL_ERROR
        message = "sinkhorn: the plan's objective is not finite; " + Status.NUMERICAL_ERROR.advice
    dual = float(solution.dual_objective)
    return Result(x=solution, fun=float(solution.objective), status=status, message=message, nit=outcome.nit,
                  counts={"updates": outcome.nit, "kernel_calls": outcome.history.n_records},
                  residuals={"marginal_error": float(solution.marginal_error[0] + solution.marginal_error[1])},
                  history=outcome.history, wall_time=outcome.wall_time, method="sinkhorn", backend="jax",
                  info={"epsilon": float(epsilon), "dual_objective": dual,
                        "duality_gap": float(solution.objective) - dual})
