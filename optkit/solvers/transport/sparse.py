"""Quadratically regularized and sparsity-constrained OT by L-BFGS on the dual or semi-dual, or by semismooth Newton
on the dual: ``"sparse-ot"``.

Primal (Liu, Puigcerver & Blondel, ICLR 2023, §3; ``k = n`` gives quadratic OT, Blondel, Seguy & Rolet 2018):

.. math::

    \\min_{P \\in U(a,b),\\; \\|P_{:,j}\\|_0 \\le k} \\;\\sum_j \\langle P_{:,j}, C_{:,j}\\rangle
        + \\tfrac{\\gamma}{2}\\|P_{:,j}\\|^2 .

Dual and semi-dual (the same paper, §3 "dual and semi-dual formulations"; oracles in
:mod:`optkit.kernels.numpy_sparse_ot`):

.. math::

    D(\\alpha,\\beta) = \\langle\\alpha,a\\rangle + \\langle\\beta,b\\rangle - \\sum_j \\delta_k(\\alpha + \\beta_j - c_j),
    \\qquad S(\\alpha) = \\langle\\alpha,a\\rangle - \\sum_j b_j \\max\\nolimits_{\\Omega_j}(\\alpha - c_j),

both concave; for ``k < n`` the primal is nonconvex and :math:`D^\\star \\le S^\\star \\le` primal. The plan is
recovered as :math:`P_{:,j} = \\tfrac1\\gamma \\text{top-}k([\\alpha + \\beta_j - c_j]_+)` (dual) or
:math:`P_{:,j} = b_j P_{\\Delta_k}((\\alpha - c_j)/(\\gamma b_j))` (semi-dual), and the dual gradient is the
marginal residual, so the stopping rule, the L1 marginal error of the recovered plan, is the gradient's L1 norm.

``algorithm="newton"`` (the default for ``Quadratic`` with the dual) is the semismooth Newton-CG method of Lorenz,
Manns & Meyer (Appl. Math. Optim. 2021) on D, with a continuation in :math:`\\gamma`
(:mod:`optkit.solvers.transport._sparse_newton`, which states the generalized Hessian, also for ``k < n``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from optkit.problems.transport import Quadratic, SparsityConstrained, TransportProblem
from optkit.solvers.loop import Step, check_positive, check_positive_int, drive
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import History, Result, Status
from optkit.solvers.transport._lbfgs import Lbfgs
from optkit.solvers.transport._solution import TransportSolution

__all__ = ["sparse_ot", "sparsity_k"]

FORMULATIONS = ("dual", "semi-dual")
ALGORITHMS = ("auto", "lbfgs", "newton")
SMALL_PROBLEM_ENTRIES = 4096  # backend="auto" uses the NumPy oracles up to this many cost entries


def sparsity_k(problem: TransportProblem) -> tuple[int, float]:
    """``(k, gamma)`` of a Quadratic (``k = n``) or SparsityConstrained problem."""
    reg = problem.regularization
    if isinstance(reg, SparsityConstrained):
        return reg.k, reg.gamma
    if isinstance(reg, Quadratic):
        return problem.shape[0], reg.gamma
    raise ValueError(
        f"method 'sparse-ot' needs a Quadratic(gamma) or SparsityConstrained(k, gamma) regularization, got {reg!r}"
    )


def _smooth_only(problem: TransportProblem) -> str | None:
    try:
        sparsity_k(problem)
    except ValueError as exc:
        return str(exc)
    return None


def _example() -> TransportProblem:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 2)), rng.normal(size=(9, 2)) + 0.5
    return TransportProblem.from_points(x, y, normalize="max", regularization=SparsityConstrained(4, 0.1))


def _oracles(backend: str) -> Any:
    if backend == "numba":
        from optkit.kernels import numba_sparse_ot as kernels
    else:
        from optkit.kernels import numpy_sparse_ot as kernels
    return kernels


def dense_plan(rows: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The dense (n, m) plan from the column-sparse ``(rows, values)`` format of the oracles."""
    plan = np.zeros(shape)
    columns = np.broadcast_to(np.arange(shape[1])[None, :], rows.shape)
    mask = rows >= 0
    np.add.at(plan, (rows[mask], columns[mask]), values[mask])
    return plan


def summary(problem: TransportProblem, plan: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
            dual_value: float) -> TransportSolution:
    """Cost, primal objective :math:`\\langle C,P\\rangle + \\tfrac\\gamma2\\|P\\|^2`, dual value, marginal errors."""
    _, gamma = sparsity_k(problem)
    cost = problem.cost
    transport_cost = float(np.sum(cost * plan))
    objective = transport_cost + 0.5 * gamma * float(np.sum(plan * plan))
    row_err = float(np.abs(plan.sum(axis=1) - problem.a).sum())
    col_err = float(np.abs(plan.sum(axis=0) - problem.b).sum())
    return TransportSolution(plan, (alpha, beta), transport_cost, objective, dual_value, (row_err, col_err))


def _semi_dual_beta(problem: TransportProblem, plan: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Column potentials of a semi-dual solution: on the support :math:`\\gamma P_{ij} = \\alpha_i + \\beta_j - C_{ij}`."""
    _, gamma = sparsity_k(problem)
    support = plan > 0
    implied = np.where(support, gamma * plan + problem.cost - alpha[:, None], 0.0)
    counts = support.sum(axis=0)
    beta = np.full(plan.shape[1], -np.inf)
    nonempty = counts > 0
    beta[nonempty] = implied[:, nonempty].sum(axis=0) / counts[nonempty]
    return beta


@register("sparse-ot", TransportProblem, backends=("numpy", "numba", "jax"), default=True, accepts=_smooth_only,
          example=_example)
def sparse_ot(
    problem: TransportProblem,
    *,
    formulation: str = "dual",
    algorithm: str = "auto",
    tol: float = 1e-6,
    max_iter: int = 10_000,
    memory: int = 20,
    max_restarts: int = 5,
    time_limit: float | None = None,
    init: Any = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    """Sparsity-constrained or quadratic OT by L-BFGS on the dual or the semi-dual.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.TransportProblem` with ``Quadratic(gamma)`` or ``SparsityConstrained(k, gamma)``
        regularization (``k`` = the maximum number of nonzeros per column of the plan).
    formulation
        ``"dual"`` (variables :math:`(\\alpha,\\beta)`, both marginals enforced by the gradient) or
        ``"semi-dual"`` (variable :math:`\\alpha`; the column marginals hold exactly, a tighter relaxation when
        ``k < n``).
    algorithm
        ``"lbfgs"`` (L-BFGS on the chosen formulation), ``"newton"`` (semismooth Newton-CG on the dual with a
        continuation in :math:`\\gamma`, :mod:`optkit.solvers.transport._sparse_newton`; ``formulation="dual"``,
        NumPy and Numba backends) or ``"auto"``: with ``formulation="dual"`` on NumPy/Numba, Newton for ``Quadratic``
        (and ``k = n``); for ``SparsityConstrained`` with ``k < n`` (either formulation, NumPy/Numba), Newton on the
        quadratic relaxation first, whose plan is returned if it has at most k nonzeros per column and meets ``tol``
        (it then solves the k-sparse problem, with no duality gap; ``info["algorithm"] == "newton"``; for the
        semi-dual the potentials are Newton's :math:`\\alpha` with the semi-dual's own plan and value), else
        L-BFGS on the k-(semi-)dual from the same start as ``"lbfgs"`` (``"newton+lbfgs"``; ``info["phases"]``
        reports each phase, ``history["phase"]`` is 1 or 2; ``max_iter`` and ``time_limit`` cover both).
        L-BFGS on JAX and for the semi-dual of ``Quadratic``. Newton alone is not the
        default for a binding constraint: there it ended below L-BFGS's dual value on some small instances.
    tol
        Stop when the L1 marginal error :math:`\\|P\\mathbf 1 - a\\|_1 + \\|P^\\top\\mathbf 1 - b\\|_1` of the
        recovered plan is at most ``tol``. For ``k < n`` the (semi-)dual is nonsmooth where the k-th largest entry
        of a column ties, and a relaxation gap can keep the error above ``tol``: the run then ends ``STALLED``.
    max_iter
        Maximum number of L-BFGS or Newton iterations.
    memory
        Number of L-BFGS correction pairs (L-BFGS only).
    max_restarts
        How many times L-BFGS is restarted (fresh memory, steepest ascent from the current point) when its
        strong-Wolfe line search finds no acceptable step; once they are used up such a failure ends the run
        ``STALLED`` (L-BFGS only).
    time_limit
        Seconds after which the run stops with ``TIME_LIMIT``.
    init
        Starting potentials: ``(alpha, beta)`` for the dual, ``alpha`` (or ``(alpha, beta)``, whose ``beta`` is
        ignored) for the semi-dual; zeros by default. Newton from the default start (:math:`\\alpha = 0`, :math:`\\beta`
        its exact maximiser) first solves quadratic OT at :math:`\\gamma 4^S, \\dots, \\gamma 4, \\gamma` with
        :math:`S \\ge 5` and :math:`\\gamma 4^S \\ge \\max C - \\min C` (then, for
        ``k < n``, the sparsity-constrained dual at :math:`\\gamma`); from a given ``init`` it runs at
        :math:`\\gamma` only.
    backend
        ``"auto"`` (Numba; NumPy for at most ``SMALL_PROBLEM_ENTRIES`` = 4096 cost entries), ``"numpy"`` or
        ``"numba"``: where the oracles run; the L-BFGS loop
        (:mod:`optkit.solvers.transport._lbfgs`: two-loop recursion, strong-Wolfe line search) runs in the
        caller's thread; the Newton loop likewise, with NumPy or Numba support scans and CG matvecs.
    callback, progress, seed
        See :func:`optkit.solve` (deterministic; ``seed`` is ignored).

    Returns
    -------
    Result
        ``x`` is a :class:`~optkit.solvers.transport.TransportSolution` whose ``objective`` is the primal objective
        of the recovered plan and ``dual_objective`` the (semi-)dual value; ``fun`` is the primal objective;
        ``info`` holds the duality gap, the marginal errors and the largest number of nonzeros in a column.

    Examples
    --------
    >>> import numpy as np, optkit
    >>> from optkit.problems.transport import TransportProblem, SparsityConstrained
    >>> rng = np.random.default_rng(0)
    >>> problem = TransportProblem.from_points(rng.normal(size=(30, 2)), rng.normal(size=(20, 2)),
    ...                                        normalize="max", regularization=SparsityConstrained(2, 0.05))
    >>> result = optkit.solve(problem, "sparse-ot", tol=1e-6)
    >>> int((result.x.plan > 0).sum(axis=0).max()) <= 2
    True
    >>> from optkit.problems.transport import Quadratic
    >>> quadratic = optkit.solve(problem.with_regularization(Quadratic(0.05)), "sparse-ot", tol=1e-9)
    >>> quadratic.info["algorithm"], quadratic.success
    ('newton', True)
    """
    k, gamma = sparsity_k(problem)
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "newton" and formulation != "dual":
        raise ValueError("algorithm='newton' solves the dual: use formulation='dual' (or algorithm='lbfgs')")
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    memory = check_positive_int("memory", memory)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, (int, np.integer)) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    chosen = resolve_backend(backend, sparse_ot.solver_info, problem.a, problem.b, problem.cost)
    if backend == "auto" and chosen == "numba" and np.size(problem.cost) <= SMALL_PROBLEM_ENTRIES:
        # Below this size one NumPy oracle call costs tens of microseconds, less than a process's first Numba
        # dispatch (about 0.5 s of runtime initialisation) can ever repay.
        chosen = "numpy"
    if problem.is_jax and chosen != "jax":
        raise ValueError(f"backend {chosen!r} needs NumPy arrays; this problem holds JAX arrays (use backend='jax')")
    cost = np.ascontiguousarray(problem.cost, dtype=np.float64)
    a = np.asarray(problem.a, dtype=np.float64)
    b = np.asarray(problem.b, dtype=np.float64)
    n, m = cost.shape
    dual = formulation == "dual"
    x0 = _initial(init, n, m, dual)
    two_phase = False
    if algorithm == "auto":
        two_phase = chosen != "jax" and k < n
        algorithm = "newton" if (dual and chosen != "jax" and k == n) else "lbfgs"
    if algorithm == "newton":
        if chosen == "jax":
            raise ValueError("algorithm='newton' runs on the 'numpy' and 'numba' backends; use algorithm='lbfgs' "
                             "for backend='jax'")
        from optkit.solvers.transport._sparse_newton import solve_newton

        best = {}
        start = None if init is None else x0
        outcome, counts = solve_newton(
            cost, a, b, gamma, k, start, backend=chosen, tol=tol, max_iter=max_iter, time_limit=time_limit,
            callback=callback, progress=progress, best=best, current=lambda: _solution(problem, best, n, True))
        return _result(problem, best, outcome, n, True, chosen, formulation, counts, algorithm)
    if chosen == "jax":
        from optkit.solvers.transport._sparse_jax import solve_jax

        best: dict[str, Any] = {}
        outcome, evaluations = solve_jax(
            cost, a, b, gamma, k, x0, formulation=formulation, tol=tol, max_iter=max_iter, memory=memory,
            time_limit=time_limit, callback=callback, progress=progress, best=best,
            current=lambda: _solution(problem, best, n, dual))
        return _result(problem, best, outcome, n, dual, chosen, formulation,
                       {"iterations": outcome.nit, "oracle_calls": evaluations, "restarts": 0}, algorithm)
    if two_phase:
        return _auto_sparse(problem, cost, a, b, gamma, k, None if init is None else x0, chosen, tol, max_iter, memory,
                            max_restarts, time_limit, callback, progress, dual)
    best, outcome, counts = _lbfgs_phase(problem, cost, a, b, gamma, k, x0, dual, chosen, tol, max_iter, memory,
                                         max_restarts, time_limit, callback, progress)
    return _result(problem, best, outcome, n, dual, chosen, formulation, counts, algorithm)


def _lbfgs_phase(problem: TransportProblem, cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int,
                 x0: np.ndarray, dual: bool, chosen: str, tol: float, max_iter: int, memory: int, max_restarts: int,
                 time_limit: float | None, callback: Any, progress: bool) -> tuple[dict[str, Any], Any, dict]:
    """L-BFGS on the dual or semi-dual (NumPy/Numba oracles) under :func:`~optkit.solvers.loop.drive`; returns
    ``(best, outcome, counts)``."""
    n = cost.shape[0]
    kernels = _oracles(chosen)

    cache: dict[str, Any] = {}

    def evaluate(x: np.ndarray) -> dict[str, Any]:
        if "x" in cache and np.array_equal(cache["x"], x):
            return cache
        if dual:
            value, grad_alpha, grad_beta, rows, values = kernels.dual_oracle(x[:n], x[n:], cost, a, b, gamma, k)
            grad = np.concatenate([grad_alpha, grad_beta])
            col_err = float(np.abs(grad_beta).sum())
        else:
            value, grad, rows, values = kernels.semi_dual_oracle(x, cost, a, b, gamma, k)
            col_err = float(np.abs(values.sum(axis=0) - b).sum())
        row_err = float(np.abs(grad[:n]).sum())
        cache.clear()
        cache.update(x=x.copy(), value=value, grad=grad, rows=rows, values=values, error=row_err + col_err)
        return cache

    def negated(x: np.ndarray) -> tuple[float, np.ndarray]:
        state = evaluate(x)
        if not np.isfinite(state["value"]):
            return np.inf, np.zeros_like(x)
        return -state["value"], -state["grad"]

    lbfgs = Lbfgs(negated, x0, memory=memory)
    best = {"x": x0, **{key: val for key, val in evaluate(x0).items() if key != "x"}}
    runs = {"restarts": 0, "evaluations": lbfgs.evaluations}

    def step(budget: int) -> Step:
        moved = lbfgs.iterate()
        if not moved and runs["restarts"] < max_restarts:
            # The line search failed along the quasi-Newton direction (a kink of the nonsmooth k < n dual, or
            # stale curvature pairs): retry once from steepest ascent with a fresh memory.
            runs["restarts"] += 1
            lbfgs.reset()
            moved = lbfgs.iterate()
        used = lbfgs.evaluations - runs["evaluations"]
        runs["evaluations"] = lbfgs.evaluations
        state = evaluate(lbfgs.x)
        residuals = {"marginal_error": state["error"]}
        counts = {"oracle_calls": used}
        if not (np.isfinite(state["value"]) and np.all(np.isfinite(lbfgs.x))):
            return Step(1, residuals, counts, status=Status.NUMERICAL_ERROR,
                        message="sparse-ot: a non-finite dual value appeared; the last finite potentials are returned. "
                        "Increase gamma or rescale the cost.")
        best.update(x=lbfgs.x.copy(), **{key: val for key, val in state.items() if key != "x"})
        if not moved:
            return Step(1, residuals, counts, status=Status.STALLED,
                        message=f"sparse-ot: the L-BFGS line search found no ascent step (after {runs['restarts']} "
                        f"restarts) with L1 marginal error {state['error']:.3e} > tol = {tol:g}. "
                        + Status.STALLED.advice
                        + (" For k < n the (semi-)dual is nonsmooth and the relaxation may have a gap." if k < n else ""))
        return Step(1, residuals, counts)

    def current() -> TransportSolution:
        return _solution(problem, best, n, dual)

    outcome = drive(
        step,
        converged=lambda r: r["marginal_error"] <= tol,
        max_iter=max_iter,
        method="sparse-ot",
        time_limit=time_limit,
        callback=callback,
        progress=progress,
        current=current,
        initial={"marginal_error": best["error"]},
        stopping_rule=f"L1 marginal error <= {tol:g}",
    )
    counts = {"iterations": outcome.nit, "oracle_calls": lbfgs.evaluations, "restarts": runs["restarts"]}
    return best, outcome, counts


def _auto_sparse(problem: TransportProblem, cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int,
                 start: np.ndarray | None, chosen: str, tol: float, max_iter: int, memory: int, max_restarts: int,
                 time_limit: float | None, callback: Any, progress: bool, dual: bool = True) -> Result:
    """``algorithm="auto"`` for ``SparsityConstrained(k, gamma)``, ``k < n``: two phases, one Result.

    Phase 1 solves the quadratic relaxation (``k = n``) by semismooth Newton to ``tol``. If it converges and its
    plan has at most k nonzeros per column, that plan solves the sparsity-constrained problem and its potentials
    maximise the k-dual :math:`D_k`:

    - the quadratic primal minimises the same objective over a larger set (no sparsity constraint), so a
      minimiser :math:`P^\\star` that happens to be k-sparse also minimises over the smaller set;
    - dually, :math:`D_k \\ge D_n` pointwise (the top-k sum of the nonnegative terms
      :math:`[s_{ij}]_+^2/2\\gamma` is at most the full sum), with equality at any point where every column has at
      most k positive scores, and :math:`D_k \\le` the k-sparse primal optimum (weak duality; Liu, Puigcerver &
      Blondel 2023, §3). At the quadratic maximiser :math:`x^\\star` this gives
      :math:`\\text{primal}_k^\\star \\ge \\max D_k \\ge D_k(x^\\star) = D_n(x^\\star) = \\text{primal}_n^\\star =
      \\text{primal}_k^\\star`, so :math:`x^\\star` maximises :math:`D_k` with no duality gap.

    At Newton's approximate maximiser the k-dual has the same plan and gradient (so the same marginal error
    <= ``tol``) and the same value. The same holds for the semi-dual (``dual=False``) at Newton's :math:`\\alpha`:
    the k-sparse column problem :math:`\\max_{p \\in b_j\\Delta,\\ \\|p\\|_0 \\le k} \\langle\\alpha - c_j, p\\rangle
    - \\tfrac\\gamma2\\|p\\|^2` has the quadratic plan's column as its solution when that column is k-sparse (it
    solves the problem over the whole simplex), so the semi-dual equals the quadratic semi-dual there, whose maximum
    is the quadratic optimum; the semi-dual is at most the k-sparse primal optimum (weak duality), so it is maximal
    too. Its plan has exact column sums; the run returns it only if its measured marginal error is <= ``tol``.
    Otherwise (the constraint binds, or Newton did not converge) phase 2 runs the
    L-BFGS method on the k-dual from the caller's start, exactly as ``algorithm="lbfgs"`` would: starting it from
    Newton's potentials instead ended at a *lower* dual value on 4 of the 18 small test instances (by up to
    1e-7), so it is not done. Iteration and time limits apply to the total; the callback sees every iteration
    with the total count; the history is one table with a ``phase`` column (1 Newton, 2 L-BFGS).
    """
    from optkit.solvers.loop import IterationState
    from optkit.solvers.transport._sparse_newton import solve_newton

    n, m = cost.shape
    began = time.perf_counter()
    kernels = _oracles(chosen)

    formulation = "dual" if dual else "semi-dual"

    def on_target(x: np.ndarray) -> dict[str, Any]:
        """The k-dual's (k-semi-dual's, at ``x[:n]``) value, plan and marginal error at ``x``."""
        if dual:
            value, grad_alpha, grad_beta, rows, values = kernels.dual_oracle(x[:n], x[n:], cost, a, b, gamma, k)
            return {"x": x.copy(), "value": value, "rows": rows, "values": values,
                    "error": float(np.abs(grad_alpha).sum() + np.abs(grad_beta).sum())}
        value, grad, rows, values = kernels.semi_dual_oracle(x[:n].copy(), cost, a, b, gamma, k)
        return {"x": x[:n].copy(), "value": value, "rows": rows, "values": values,
                "error": float(np.abs(grad).sum() + np.abs(values.sum(axis=0) - b).sum())}

    relaxed: dict[str, Any] = {}
    first, newton_counts = solve_newton(
        cost, a, b, gamma, n, start if dual else None, backend=chosen, tol=tol, max_iter=max_iter,
        time_limit=time_limit, callback=callback, progress=progress, best=relaxed,
        current=lambda: _solution(problem, on_target(relaxed["x"]), n, dual))
    phases = [{"phase": "newton (quadratic relaxation)", "nit": first.nit, "status": first.status.name,
               "wall_time": first.wall_time, **{key: newton_counts[key] for key in
                                                ("newton_steps", "cg_iterations", "oracle_calls")}}]
    relaxed_nonzeros = int((relaxed["rows"] >= 0).sum(axis=0).max()) if relaxed["rows"].size else 0
    best = on_target(relaxed["x"])
    counts = {"iterations": first.nit, "oracle_calls": newton_counts["oracle_calls"] + 1,
              "newton_steps": newton_counts["newton_steps"], "cg_iterations": newton_counts["cg_iterations"],
              "restarts": 0}
    inactive = first.status is Status.CONVERGED and relaxed_nonzeros <= k and best["error"] <= tol
    stop_here = first.status in (Status.CALLBACK_STOP, Status.MAX_ITER, Status.TIME_LIMIT)
    elapsed = time.perf_counter() - began
    remaining = max_iter - first.nit
    time_left = None if time_limit is None else time_limit - elapsed
    if inactive or stop_here or remaining <= 0 or (time_left is not None and time_left <= 0):
        if inactive:
            status, message, algorithm = Status.CONVERGED, (
                f"sparse-ot: converged (L1 marginal error {best['error']:.3e} <= {tol:g}); the quadratic relaxation's "
                f"plan has at most {relaxed_nonzeros} <= k = {k} nonzeros per column, so it solves the "
                "sparsity-constrained problem"), "newton"
        elif stop_here:
            status, message, algorithm = first.status, first.message, "newton+lbfgs"
        elif remaining <= 0:
            status, algorithm = Status.MAX_ITER, "newton+lbfgs"
            message = f"sparse-ot: {max_iter} iterations used by the quadratic phase. " + Status.MAX_ITER.advice
        else:
            status, algorithm = Status.TIME_LIMIT, "newton+lbfgs"
            message = f"sparse-ot: time limit {time_limit:g} s reached in the quadratic phase."
        outcome = _Outcome(status, message, first.nit, _history([first.history]), time.perf_counter() - began)
        return _result(problem, best, outcome, n, dual, chosen, formulation, counts, algorithm, phases)

    if callback is not None and first.nit > 0:
        # The driver does not call back on the step that ends a run; here that step is not the last one.
        state = IterationState(first.nit, elapsed, dict(first.residuals), lambda: _solution(problem, best, n, dual))
        try:
            stop = callback(state)
        except StopIteration:
            stop = True
        if stop:
            outcome = _Outcome(Status.CALLBACK_STOP, f"sparse-ot: stopped by the callback after {first.nit} "
                               "iterations (end of the quadratic phase).", first.nit, _history([first.history]),
                               time.perf_counter() - began)
            return _result(problem, best, outcome, n, dual, chosen, formulation, counts, "newton+lbfgs", phases)

    def shifted(state: IterationState) -> Any:
        return callback(IterationState(state.nit + first.nit, state.elapsed + elapsed, state.residuals,
                                       state._current))

    x0 = np.zeros(n + m if dual else n) if start is None else start
    best, second, lbfgs_counts = _lbfgs_phase(
        problem, cost, a, b, gamma, k, x0, dual, chosen, tol, remaining, memory, max_restarts, time_left,
        None if callback is None else shifted, progress)
    phases.append({"phase": f"lbfgs (k-{formulation})", "nit": second.nit, "status": second.status.name,
                   "wall_time": second.wall_time, "oracle_calls": lbfgs_counts["oracle_calls"],
                   "restarts": lbfgs_counts["restarts"]})
    counts["iterations"] += second.nit
    counts["oracle_calls"] += lbfgs_counts["oracle_calls"]
    counts["restarts"] = lbfgs_counts["restarts"]
    status, message = second.status, second.message
    if status is Status.MAX_ITER:
        message = f"sparse-ot: maximum number of iterations ({max_iter}, both phases) reached. " + \
            Status.MAX_ITER.advice
    outcome = _Outcome(status, message, first.nit + second.nit,
                       _history([first.history, second.history], [first.nit], [elapsed]),
                       time.perf_counter() - began)
    return _result(problem, best, outcome, n, dual, chosen, formulation, counts, "newton+lbfgs", phases)


class _Outcome:
    """What :func:`_result` reads from a :class:`~optkit.solvers.loop.LoopOutcome`, for a two-phase run."""

    def __init__(self, status: Status, message: str, nit: int, history: History, wall_time: float) -> None:
        self.status, self.message, self.nit, self.history, self.wall_time = status, message, nit, history, wall_time


def _history(histories: list[History], nit_offsets: tuple = (), time_offsets: tuple = ()) -> History:
    """One history from the phases' histories: ``nit`` and ``time`` continue across phases, ``phase`` = 1, 2, ...
    (a column missing in a phase is NaN there)."""
    keys: list[str] = []
    for history in histories:
        keys += [key for key in history if key not in keys]
    columns: dict[str, list[np.ndarray]] = {key: [] for key in [*keys, "phase"]}
    for index, history in enumerate(histories):
        size = history.n_records
        nit_offset = nit_offsets[index - 1] if index else 0
        time_offset = time_offsets[index - 1] if index else 0.0
        for key in keys:
            column = np.asarray(history[key], dtype=float) if key in history else np.full(size, np.nan)
            if key == "nit":
                column = column + nit_offset
            elif key == "time":
                column = column + time_offset
            columns[key].append(column)
        columns["phase"].append(np.full(size, float(index + 1)))
    return History({key: np.concatenate(parts) if parts else np.zeros(0) for key, parts in columns.items()})


def _result(problem: TransportProblem, best: dict[str, Any], outcome: Any, n: int, dual: bool, backend: str,
            formulation: str, counts: dict[str, float], algorithm: str, phases: list | None = None) -> Result:
    k, gamma = sparsity_k(problem)
    solution = _solution(problem, best, n, dual)
    plan = solution.plan
    return Result(
        x=solution,
        fun=solution.objective,
        status=outcome.status,
        message=outcome.message,
        nit=outcome.nit,
        counts=counts,
        residuals={"marginal_error": best["error"]},
        history=outcome.history,
        wall_time=outcome.wall_time,
        method="sparse-ot",
        backend=backend,
        info={
            "formulation": formulation,
            "algorithm": algorithm,
            "k": k,
            "gamma": gamma,
            "dual_objective": solution.dual_objective,
            "duality_gap": solution.objective - solution.dual_objective,
            "marginal_errors": solution.marginal_error,
            "max_nonzeros_per_column": int((plan > 0).sum(axis=0).max()),
            **({} if phases is None else {"phases": phases}),
        },
    )


def _initial(init: Any, n: int, m: int, dual: bool) -> np.ndarray:
    if init is None:
        return np.zeros(n + m if dual else n)
    if isinstance(init, (tuple, list)) and len(init) == 2:
        alpha, beta = (np.asarray(v, dtype=np.float64) for v in init)
    elif dual:
        raise TypeError("init must be a pair (alpha, beta) for formulation='dual'")
    else:
        alpha, beta = np.asarray(init, dtype=np.float64), np.zeros(m)
    if alpha.shape != (n,) or (dual and beta.shape != (m,)):
        raise ValueError(f"init potentials must have shapes ({n},) and ({m},), got {alpha.shape} and {beta.shape}")
    if not (np.all(np.isfinite(alpha)) and (not dual or np.all(np.isfinite(beta)))):
        raise ValueError("init potentials must be finite")
    return np.concatenate([alpha, beta]) if dual else alpha.copy()


def _solution(problem: TransportProblem, state: dict[str, Any], n: int, dual: bool) -> TransportSolution:
    plan = dense_plan(state["rows"], state["values"], problem.shape)
    x = state["x"]
    alpha = x[:n].copy()
    beta = x[n:].copy() if dual else _semi_dual_beta(problem, plan, alpha)
    return summary(problem, plan, alpha, beta, float(state["value"]))
