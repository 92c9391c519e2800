r"""Baselines for equality-constrained NLPs under the same :func:`optkit.solve`: scipy's SLSQP and trust-constr.

Both receive exact derivatives from the :class:`~optkit.problems.nlp.NonlinearProgram` (gradient, Jacobian, and for
trust-constr the Hessians). The stopping measure reported is the same as for ``"sketch-newton"``,
:math:`\|(\nabla_x\mathcal L(x,\lambda), c(x))\|_2`, with least-squares multipliers
:math:`\lambda = \arg\min_\lambda\|\nabla f(x) + G(x)^\top\lambda\|` computed by us (SLSQP's multipliers are
unreliable on square systems, and the two solvers use different sign conventions); ``CONVERGED`` means this
residual is at most ``tol``, whatever scipy reports.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.optimize as so
from scipy.sparse.linalg import LinearOperator

from optkit.problems.nlp import NonlinearProgram
from optkit.solvers.loop import IterationState, check_positive, check_positive_int
from optkit.solvers.nlp._linalg import to_dense
from optkit.solvers.registry import register
from optkit.solvers.result import History, Result, Status

__all__ = ["least_squares_multipliers", "slsqp", "trust_constr"]


def _example() -> NonlinearProgram:
    from optkit.solvers.nlp.sketch_newton import _example as hs7

    return hs7()


def least_squares_multipliers(problem: NonlinearProgram, x: np.ndarray) -> np.ndarray:
    r""":math:`\lambda = \arg\min_\lambda \|\nabla f(x) + G(x)^\top\lambda\|_2`."""
    G = to_dense(problem.jacobian(x))
    return np.linalg.lstsq(G.T, -problem.gradient(x), rcond=None)[0]


def _residuals(problem: NonlinearProgram, x: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    lam = least_squares_multipliers(problem, x)
    gx, cx = problem.kkt_residual(x, lam)
    res = {"kkt": float(np.sqrt(gx @ gx + cx @ cx)), "stationarity": float(np.linalg.norm(gx)),
           "feasibility": float(np.linalg.norm(cx))}
    return res, lam


def _run_scipy(problem: NonlinearProgram, method: str, scipy_method: str, *, tol: float, max_iter: int,
               options: dict[str, Any], record_history: bool, callback: Any, extra: dict[str, Any]) -> Result:
    prob = problem.counting()
    history = History()
    start = time.perf_counter()
    res0, _ = _residuals(prob, problem.x0.copy())
    history.append({"nit": 0, "time": 0.0, **res0})
    state = {"nit": 0, "stopped": False, "x": problem.x0.copy()}

    def on_iteration(intermediate_result: Any) -> None:
        x = np.asarray(intermediate_result.x, dtype=np.float64).copy()
        state["nit"] += 1
        state["x"] = x
        if record_history or callback is not None:
            res, lam = _residuals(prob, x)
            history.append({"nit": state["nit"], "time": time.perf_counter() - start, **res})
            if callback is not None:
                snapshot = (x.copy(), lam.copy())
                try:
                    stop = callback(IterationState(state["nit"], time.perf_counter() - start, res,
                                                   lambda: snapshot))
                except StopIteration:
                    stop = True
                if stop:
                    state["stopped"] = True
                    raise StopIteration

    constraint = {"type": "eq", "fun": prob.constraints, "jac": lambda x: to_dense(prob.jacobian(x))}
    if scipy_method == "trust-constr":
        hess_c = extra["constraint_hessian"]
        constraint = so.NonlinearConstraint(prob.constraints, 0.0, 0.0, jac=lambda x: to_dense(prob.jacobian(x)),
                                            hess=hess_c)
    out = so.minimize(prob.objective, problem.x0.copy(), jac=prob.gradient, method=scipy_method,
                      hess=extra.get("hess"), constraints=[constraint], options={**options, "maxiter": max_iter},
                      callback=on_iteration)
    x = np.asarray(out.x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        x = state["x"]
    residuals, lam = _residuals(prob, x)
    wall = time.perf_counter() - start
    nit = int(getattr(out, "nit", state["nit"]) or state["nit"])
    if history.n_records == 1 or history["nit"][-1] != nit:
        history.append({"nit": nit, "time": wall, **residuals})
    if not all(np.isfinite(v) for v in residuals.values()):
        status = Status.NUMERICAL_ERROR
    elif state["stopped"]:
        status = Status.CALLBACK_STOP
    elif residuals["kkt"] <= tol:
        status = Status.CONVERGED
    elif nit >= max_iter:
        status = Status.MAX_ITER
    else:
        status = Status.STALLED
    shown = f"kkt = {residuals['kkt']:.3e}"
    if status is Status.CONVERGED:
        message = f"{method} converged after {nit} iterations ({shown}): ||(grad_x L, c)|| <= {tol:g}."
    else:
        message = (f"{method} stopped with {status.name} after {nit} iterations ({shown}); scipy says: "
                   f"{out.message!s}. {status.advice}")
    counts = {"iterations": float(nit), **{k: float(v) for k, v in prob.counts.items()}}
    return Result(x=(x.copy(), lam), fun=float(prob.objective(x)), status=status, message=message, nit=nit,
                  counts=counts, residuals=residuals, history=history, wall_time=wall, method=method,
                  backend="numpy", info={"scipy_result": out})


@register("slsqp", NonlinearProgram, example=_example)
def slsqp(
    problem: NonlinearProgram,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    ftol: float | None = None,
    record_history: bool = True,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""scipy's SLSQP (Kraft 1988) with exact gradients and Jacobians.

    Parameters
    ----------
    tol : float
        ``CONVERGED`` when :math:`\|(\nabla_x\mathcal L, c)\| \le` ``tol`` at scipy's answer (least-squares
        multipliers).
    max_iter : int
    ftol : float, optional
        scipy's ``ftol`` (default ``tol**2``, since SLSQP stops on the change of :math:`f`).
    record_history : bool
        Compute the KKT residual at every iteration (costs a gradient and a Jacobian each; turn off to time).
    """
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    ftol = tol**2 if ftol is None else check_positive("ftol", ftol)
    return _run_scipy(problem, "slsqp", "SLSQP", tol=tol, max_iter=max_iter, options={"ftol": ftol},
                      record_history=record_history, callback=callback, extra={})


@register("trust-constr", NonlinearProgram, example=_example)
def trust_constr(
    problem: NonlinearProgram,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    record_history: bool = True,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""scipy's trust-constr (equality-constrained SQP with a trust region, Byrd--Omojokun) with exact Hessians.

    ``hess`` is :math:`\nabla^2 f` and the constraint Hessian :math:`\sum_i v_i\nabla^2 c_i` is obtained as
    :math:`\nabla^2_x\mathcal L(x, v) - \nabla^2 f(x)` from the problem's Lagrangian-Hessian oracle.
    Parameters as for :func:`slsqp`; scipy's ``gtol`` and ``xtol`` are set to ``tol`` and ``tol**2``.
    """
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    prob = problem

    def hess_f(x: np.ndarray) -> Any:
        return to_dense(prob.lagrangian_hessian(x, np.zeros(prob.m)))

    def hess_c(x: np.ndarray, v: np.ndarray) -> Any:
        return to_dense(prob.lagrangian_hessian(x, np.asarray(v, dtype=np.float64))) - hess_f(x)

    if isinstance(prob.lagrangian_hessian(prob.x0, prob.lam0), LinearOperator):
        hess_f_out: Any = so.BFGS()
        hess_c_out: Any = so.BFGS()
    else:
        hess_f_out, hess_c_out = hess_f, hess_c
    return _run_scipy(problem, "trust-constr", "trust-constr", tol=tol, max_iter=max_iter,
                      options={"gtol": tol, "xtol": tol**2}, record_history=record_history, callback=callback,
                      extra={"hess": hess_f_out, "constraint_hessian": hess_c_out})
