"""Exact (unregularized) optimal transport by the network simplex, registered as ``"emd"``.

Solves the linear program (Peyré & Cuturi, *Computational Optimal Transport*, eq. 2.11 and its dual eq. 2.20)

.. math::

    \\min_{P \\ge 0,\\; P\\mathbf 1 = a,\\; P^\\top\\mathbf 1 = b} \\langle C, P\\rangle
    \\;=\\; \\max_{f_i + g_j \\le C_{ij}} \\langle f, a\\rangle + \\langle g, b\\rangle

with POT's network simplex (``ot.emd``, Bonneel et al. 2011). It is the exact reference for every OT problem:
``optkit.solve(problem.with_regularization(None))``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from optkit.problems.transport import TransportProblem
from optkit.solvers.loop import Step, check_positive_int, drive
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result, Status
from optkit.solvers.transport._solution import TransportSolution

__all__ = ["emd"]

# Result codes of POT's network simplex (ot/lp/EMD.h).
_INFEASIBLE, _OPTIMAL, _UNBOUNDED, _MAX_ITER_REACHED = 0, 1, 2, 3


def _exact_only(problem: TransportProblem) -> str | None:
    if problem.regularization is not None:
        return (
            f"method 'emd' solves exact OT (regularization=None), got {problem.regularization!r}; "
            "use problem.with_regularization(None) for the exact reference"
        )
    return None


def _example() -> TransportProblem:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 2)), rng.normal(size=(9, 2)) + 0.5
    return TransportProblem.from_points(x, y, normalize="max")


def exact_summary(
    cost: np.ndarray, a: np.ndarray, b: np.ndarray, plan: np.ndarray, f: np.ndarray, g: np.ndarray
) -> TransportSolution:
    """Cost, dual objective :math:`\\langle f,a\\rangle + \\langle g,b\\rangle` and L1 marginal errors of a plan."""
    transport_cost = float(np.sum(cost * plan, dtype=np.float64))
    dual = float(np.dot(a, f) + np.dot(b, g))
    row_err = float(np.abs(plan.sum(axis=1) - a).sum())
    col_err = float(np.abs(plan.sum(axis=0) - b).sum())
    return TransportSolution(plan, (f, g), transport_cost, transport_cost, dual, (row_err, col_err))


@register(
    "emd", TransportProblem, backends=("numpy",), default=True, iterative=False, accepts=_exact_only,
    example=_example,
)
def emd(
    problem: TransportProblem,
    *,
    max_iter: int = 100_000,
    num_threads: int = 1,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    """Exact optimal transport with POT's network simplex (``ot.emd``).

    The plan is a vertex of the transport polytope (at most :math:`n + m - 1` nonzeros); the potentials are the
    simplex multipliers (POT's ``log["u"], log["v"]``, centred so that :math:`\\langle f, a\\rangle =
    \\langle g, b\\rangle`), optimal for the dual LP (Peyré & Cuturi eq. 2.20): at optimality
    :math:`f_i + g_j \\le C_{ij}` with equality on the support of the plan, and the dual objective equals the cost.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.TransportProblem` with ``regularization=None``.
    max_iter
        Maximum number of network-simplex pivots (POT's ``numItermax``); reaching it gives ``MAX_ITER`` with the
        (feasible, suboptimal) plan at that point.
    num_threads
        Threads for POT's solver (``numThreads``).
    backend
        ``"auto"`` or ``"numpy"`` (the solver is POT's C++ code; JAX inputs are copied to the host).
    callback, progress, seed
        See :func:`optkit.solve`. The solve is one call to the network simplex, so ``nit`` is 1 and a callback
        is only consulted when that call did not reach optimality; ``seed`` is ignored.

    Returns
    -------
    Result
        ``x`` is a :class:`~optkit.solvers.transport.TransportSolution` with ``objective = cost`` and
        ``dual_objective`` the dual LP value; ``residuals`` hold the L1 marginal error and the duality gap.

    Examples
    --------
    >>> import numpy as np, optkit
    >>> from optkit.problems import TransportProblem
    >>> problem = TransportProblem(None, None, np.array([[0.0, 1.0], [1.0, 0.0]]))
    >>> result = optkit.solve(problem)
    >>> result.method, float(result.fun)
    ('emd', 0.0)
    """
    import ot

    reason = _exact_only(problem)
    if reason is not None:
        raise ValueError(reason)
    max_iter = check_positive_int("max_iter", max_iter)
    num_threads = check_positive_int("num_threads", num_threads)
    chosen = resolve_backend(backend, emd.solver_info, problem.a, problem.b, problem.cost)
    cost = np.asarray(problem.cost, dtype=np.float64)
    a = np.asarray(problem.a, dtype=np.float64)
    b = np.asarray(problem.b, dtype=np.float64)
    # POT checks that the masses agree to 1e-6 relative; ours agree to sqrt(machine epsilon): rescale b exactly.
    b = b * (a.sum() / b.sum())
    n, m = cost.shape
    state: dict[str, Any] = {"plan": np.zeros((n, m)), "f": np.zeros(n), "g": np.zeros(m)}

    def step(budget: int) -> Step:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            plan, log = ot.emd(a, b, cost, numItermax=max_iter, log=True, numThreads=num_threads)
        plan = np.asarray(plan, dtype=np.float64)
        f, g = np.asarray(log["u"], dtype=np.float64), np.asarray(log["v"], dtype=np.float64)
        summary = exact_summary(cost, a, b, plan, f, g)
        residuals = {"marginal_error": sum(summary.marginal_error), "duality_gap": summary.cost - summary.dual_objective}
        code = int(log["result_code"])
        if not (np.isfinite(plan).all() and np.isfinite(f).all() and np.isfinite(g).all()):
            return Step(1, residuals, status=Status.NUMERICAL_ERROR,
                        message="emd: the network simplex returned non-finite values. " + Status.NUMERICAL_ERROR.advice)
        state.update(plan=plan, f=f, g=g)
        if code == _MAX_ITER_REACHED:
            return Step(1, residuals, status=Status.MAX_ITER,
                        message=f"emd: the network simplex reached max_iter = {max_iter} pivots before optimality; "
                        "the plan is feasible but not optimal. Increase `max_iter`.")
        if code == _INFEASIBLE:
            return Step(1, residuals, status=Status.INFEASIBLE, message="emd: POT reports the problem infeasible.")
        if code == _UNBOUNDED:
            return Step(1, residuals, status=Status.NUMERICAL_ERROR, message="emd: POT reports the LP unbounded.")
        state["optimal"] = True
        return Step(1, residuals)

    outcome = drive(
        step,
        converged=lambda r: bool(state.get("optimal", False)),
        max_iter=1,
        method="emd",
        callback=callback,
        progress=progress,
        current=lambda: exact_summary(cost, a, b, state["plan"], state["f"], state["g"]),
        stopping_rule="network simplex optimal",
    )
    solution = exact_summary(cost, a, b, state["plan"], state["f"], state["g"])
    return Result(
        x=solution,
        fun=solution.objective,
        status=outcome.status,
        message=outcome.message,
        nit=outcome.nit,
        counts={"network_simplex_calls": outcome.nit},
        residuals=outcome.residuals,
        history=outcome.history,
        wall_time=outcome.wall_time,
        method="emd",
        backend=chosen,
        info={"dual_objective": solution.dual_objective, "duality_gap": solution.cost - solution.dual_objective},
    )
