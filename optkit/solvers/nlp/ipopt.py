r"""IPOPT (Wächter & Biegler, Math. Program. 106, 2006) through ``cyipopt``, an optional extra.

The equality-constrained program :math:`\min f(x)\ \text{s.t.}\ c(x) = 0` is handed to IPOPT with
:math:`c_L = c_U = 0`, no variable bounds, and exact derivatives: :math:`\nabla f`, the Jacobian :math:`G(x)` (dense
structure) and the Hessian of IPOPT's Lagrangian

.. math:: \sigma\nabla^2 f(x) + \sum_i \lambda_i\nabla^2 c_i(x)

(IPOPT's ``obj_factor`` :math:`\sigma`; IPOPT's Lagrangian is :math:`\sigma f + \lambda^\top c`, the same sign
convention as ours, :math:`\mathcal L = f + \lambda^\top c`). We evaluate it from the problem's Lagrangian-Hessian
oracle as :math:`\sigma\,\nabla^2_x\mathcal L(x, \lambda/\sigma)` when :math:`\sigma > 0`, and as
:math:`\nabla^2_x\mathcal L(x,\lambda) - \nabla^2_x\mathcal L(x, 0)` when :math:`\sigma = 0` (restoration phase).
Matrix-free problems (Hessian-vector products only) use IPOPT's limited-memory quasi-Newton Hessian.

The reported residual is the one of every optkit NLP solver, :math:`\|(\nabla_x\mathcal L(x,\lambda), c(x))\|_2`
with least-squares multipliers; ``CONVERGED`` means it is at most ``tol`` at IPOPT's answer, whatever IPOPT says.
IPOPT's own tolerances (``tol``, ``dual_inf_tol``, ``constr_viol_tol``, max-norms) are set to
``tol / sqrt(n + m)`` so that its success implies ours.

``cyipopt`` is imported only when the solver runs; without it the method stays registered but refuses every
problem with an installation hint.
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

import numpy as np
from scipy.sparse.linalg import LinearOperator

from optkit.problems.nlp import NonlinearProgram
from optkit.solvers.loop import IterationState, check_positive, check_positive_int
from optkit.solvers.nlp._linalg import to_dense
from optkit.solvers.nlp.baselines import _residuals
from optkit.solvers.registry import register
from optkit.solvers.result import History, Result, Status

__all__ = ["ipopt"]

#: What to do when cyipopt is missing.
INSTALL_HINT = "cyipopt is not installed: pip install optkit[ipopt]"

#: IPOPT's ApplicationReturnStatus codes (IpReturnCodes_inc.h) to our Status; CONVERGED is decided by our residual.
_IPOPT_STATUS = {
    -1: Status.MAX_ITER,            # Maximum_Iterations_Exceeded
    2: Status.INFEASIBLE,           # Infeasible_Problem_Detected
    4: Status.DIVERGED,             # Diverging_Iterates
    -4: Status.TIME_LIMIT,          # Maximum_CpuTime_Exceeded
    -5: Status.TIME_LIMIT,          # Maximum_WallTime_Exceeded (IPOPT >= 3.14)
    -13: Status.NUMERICAL_ERROR,    # Invalid_Number_Detected
}


def _cyipopt_available() -> bool:
    try:
        return importlib.util.find_spec("cyipopt") is not None
    except (ImportError, ValueError):  # a broken install, or sys.modules["cyipopt"] = None
        return False


def _accepts(problem: Any) -> str | None:
    return None if _cyipopt_available() else INSTALL_HINT


def _example() -> NonlinearProgram:
    from optkit.solvers.nlp.sketch_newton import _example as hs7

    return hs7()


class _Callbacks:
    """The object cyipopt calls: oracles of a counting copy of the problem, plus the per-iteration hook."""

    def __init__(self, problem: NonlinearProgram, *, quasi_newton: bool, on_iteration: Any) -> None:
        self.problem = problem
        n, m = problem.n, problem.m
        self._jac_rows, self._jac_cols = np.unravel_index(np.arange(m * n), (m, n))
        self._hess_rows, self._hess_cols = np.tril_indices(n)
        self.quasi_newton = quasi_newton
        self.on_iteration = on_iteration
        self.last_x = problem.x0.copy()

    def objective(self, x: np.ndarray) -> float:
        return self.problem.objective(x)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        self.last_x = np.array(x, dtype=np.float64)
        return self.problem.gradient(x)

    def constraints(self, x: np.ndarray) -> np.ndarray:
        return self.problem.constraints(x)

    def jacobianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self._jac_rows, self._jac_cols

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        return to_dense(self.problem.jacobian(x)).reshape(-1)

    def hessianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self._hess_rows, self._hess_cols

    def hessian(self, x: np.ndarray, lagrange: np.ndarray, obj_factor: float) -> np.ndarray:
        lam = np.asarray(lagrange, dtype=np.float64)
        if obj_factor != 0.0:
            H = obj_factor * to_dense(self.problem.lagrangian_hessian(x, lam / obj_factor))
        else:
            H = (to_dense(self.problem.lagrangian_hessian(x, lam))
                 - to_dense(self.problem.lagrangian_hessian(x, np.zeros_like(lam))))
        return H[self._hess_rows, self._hess_cols]

    def intermediate(self, alg_mod: int, iter_count: int, *args: Any) -> bool:
        return self.on_iteration(int(iter_count), self)


@register("ipopt", NonlinearProgram, accepts=_accepts, example=_example)
def ipopt(
    problem: NonlinearProgram,
    *,
    tol: float = 1e-6,
    max_iter: int = 3000,
    time_limit: float | None = None,
    record_history: bool = True,
    ipopt_options: dict[str, Any] | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""IPOPT's primal-dual interior-point method with a filter line search, with exact derivatives.

    Parameters
    ----------
    tol : float
        ``CONVERGED`` when :math:`\|(\nabla_x\mathcal L, c)\|_2 \le` ``tol`` at IPOPT's answer (least-squares
        multipliers). IPOPT receives ``tol / sqrt(n + m)`` for its ``tol``, ``dual_inf_tol`` and
        ``constr_viol_tol``.
    max_iter : int
        IPOPT's ``max_iter``.
    time_limit : float, optional
        Seconds; checked at every IPOPT iteration (the run stops with ``TIME_LIMIT``).
    record_history : bool
        Compute our KKT residual at every iteration (a gradient and a Jacobian each; turn off to time).
    ipopt_options : dict, optional
        Further IPOPT options passed as given (e.g. ``{"mu_strategy": "adaptive"}``); ``print_level`` is 0 and the
        banner is suppressed unless overridden here.
    """
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    if ipopt_options is not None and not isinstance(ipopt_options, dict):
        raise TypeError(f"ipopt_options must be a dict, got {type(ipopt_options).__name__}")
    try:
        import cyipopt
    except ImportError:
        raise ValueError(INSTALL_HINT) from None

    prob = problem.counting()
    n, m = problem.n, problem.m
    quasi_newton = isinstance(problem.lagrangian_hessian(problem.x0, problem.lam0), LinearOperator)
    history = History()
    start = time.perf_counter()
    state: dict[str, Any] = {"nit": 0, "stop": None, "x": problem.x0.copy()}
    handle: dict[str, Any] = {}

    def current_x(cb: _Callbacks) -> np.ndarray:
        nlp = handle.get("nlp")
        try:
            iterate = nlp.get_current_iterate() if nlp is not None else None
        except (RuntimeError, AttributeError, NotImplementedError):  # IPOPT < 3.14 has no GetCurrentIterate
            iterate = None
        if iterate is not None and iterate.get("x") is not None:
            return np.array(iterate["x"], dtype=np.float64)
        return cb.last_x.copy()  # the last gradient evaluation: IPOPT needs it at the iterate to report inf_du

    def on_iteration(iter_count: int, cb: _Callbacks) -> bool:
        x = current_x(cb)
        if not np.all(np.isfinite(x)):
            return True
        state["x"], state["nit"] = x, iter_count
        elapsed = time.perf_counter() - start
        if record_history or callback is not None:
            res, lam = _residuals(prob, x)
            history.append({"nit": iter_count, "time": elapsed, **res})
            if callback is not None and iter_count >= 1:
                snapshot = (x.copy(), lam.copy())
                try:
                    stop = callback(IterationState(iter_count, elapsed, res, lambda: snapshot))
                except StopIteration:
                    stop = True
                if stop:
                    state["stop"] = Status.CALLBACK_STOP
                    return False
        if time_limit is not None and elapsed >= time_limit:
            state["stop"] = Status.TIME_LIMIT
            return False
        return True

    callbacks = _Callbacks(prob, quasi_newton=quasi_newton, on_iteration=on_iteration)
    nlp = cyipopt.Problem(n=n, m=m, problem_obj=callbacks, lb=np.full(n, -np.inf), ub=np.full(n, np.inf),
                          cl=np.zeros(m), cu=np.zeros(m))
    handle["nlp"] = nlp
    inner_tol = tol / math.sqrt(n + m)
    options: dict[str, Any] = {"print_level": 0, "sb": "yes", "tol": inner_tol, "dual_inf_tol": inner_tol,
                               "constr_viol_tol": inner_tol, "max_iter": max_iter}
    if quasi_newton:
        options["hessian_approximation"] = "limited-memory"
    options.update(ipopt_options or {})
    for key, value in options.items():
        nlp.add_option(key, value)
    x_out, info = nlp.solve(problem.x0.copy())

    x = np.asarray(x_out, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        x = state["x"]
    residuals, lam = _residuals(prob, x)
    wall = time.perf_counter() - start
    nit = int(state["nit"])
    if not record_history or history.n_records == 0 or history["nit"][-1] != nit:
        history.append({"nit": nit, "time": wall, **residuals})
    code = int(info["status"])
    if not all(np.isfinite(v) for v in residuals.values()):
        status = Status.NUMERICAL_ERROR
    elif state["stop"] is not None:
        status = state["stop"]
    elif residuals["kkt"] <= tol:
        status = Status.CONVERGED
    else:
        status = _IPOPT_STATUS.get(code, Status.STALLED)
    ipopt_says = info["status_msg"]
    if isinstance(ipopt_says, bytes):
        ipopt_says = ipopt_says.decode(errors="replace")
    shown = f"kkt = {residuals['kkt']:.3e}"
    if status is Status.CONVERGED:
        message = f"ipopt converged after {nit} iterations ({shown}): ||(grad_x L, c)|| <= {tol:g}."
    else:
        message = (f"ipopt stopped with {status.name} after {nit} iterations ({shown}); IPOPT status {code}: "
                   f"{ipopt_says!s} {status.advice}")
    counts = {"iterations": float(nit), **{k: float(v) for k, v in prob.counts.items()}}
    return Result(x=(x.copy(), lam), fun=float(prob.objective(x)), status=status, message=message, nit=nit,
                  counts=counts, residuals=residuals, history=history, wall_time=wall, method="ipopt",
                  backend="numpy",
                  info={"ipopt_status": code, "ipopt_message": ipopt_says,
                        "ipopt_multipliers": np.asarray(info["mult_g"], dtype=np.float64).copy()})
