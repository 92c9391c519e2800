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
POLISH_ACCEPT_GAP = 1e-4  # algorithm="auto": a polished relaxation plan within this relative duality gap is returned


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
    polish: bool = True,
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
        semi-dual the potentials are Newton's :math:`\\alpha` with the semi-dual's own plan and value); else
        (with ``polish``) the polished relaxation plan if its relative duality gap is at most 1e-4
        (``"newton+polish"``), else L-BFGS on the k-(semi-)dual from the same start as ``"lbfgs"``
        (``"newton+lbfgs"``), polished in turn, and the better of the plans (``"...+choice"``; see
        ``_auto_sparse``). ``info["phases"]`` reports each phase, ``history["phase"]`` numbers them;
        ``max_iter`` and ``time_limit`` cover all.
        L-BFGS on JAX and for the semi-dual of ``Quadratic``. Newton alone is not the
        default for a binding constraint: there it ended below L-BFGS's dual value on some small instances.
    tol
        Stop when the L1 marginal error :math:`\\|P\\mathbf 1 - a\\|_1 + \\|P^\\top\\mathbf 1 - b\\|_1` of the
        recovered plan is at most ``tol``. For ``k < n`` the (semi-)dual is nonsmooth where the k-th largest entry
        of a column ties, and a relaxation gap can keep the error of the plan read off the potentials above
        ``tol``: the run then ends ``STALLED``, unless ``polish`` finds a k-sparse plan within ``tol``.
    max_iter
        Maximum number of L-BFGS or Newton iterations.
    memory
        Number of L-BFGS correction pairs (L-BFGS only).
    max_restarts
        How many times L-BFGS is restarted (fresh memory, steepest ascent from the current point) when its
        strong-Wolfe line search finds no acceptable step; once they are used up such a failure ends the run
        ``STALLED`` (L-BFGS only).
    polish
        For ``k < n``: when the (semi-)dual run ends ``STALLED`` or ``MAX_ITER`` above ``tol`` (the relaxation gap
        described under ``tol``), or ``algorithm="auto"``'s quadratic relaxation is not k-sparse, look for a plan
        with at most k nonzeros per column that meets the marginals to ``tol``
        (:mod:`optkit.solvers.transport._sparse_polish`: quadratic OT restricted to the support of the
        potentials' scores, pruned column by column and re-solved). If one is found the run ends ``CONVERGED``
        with that plan; the potentials and ``dual_objective`` stay the dual method's, a lower bound on the optimum,
        so ``info["duality_gap"]`` bounds the plan's suboptimality; ``info["polish"]`` reports the rounds. Otherwise
        the dual's own plan is returned as before, with the polishing's message appended. Restricted solves run on
        NumPy or Numba (Numba for ``backend="jax"``); their Newton steps are not part of ``max_iter`` (at most 30
        rounds of 200; ``counts["polish_newton_steps"]``), ``time_limit`` covers them.
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
    if not isinstance(polish, (bool, np.bool_)):
        raise TypeError(f"polish must be a bool, got {polish!r}")
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
        if polish:
            best, outcome, algorithm = _maybe_polish(problem, cost, a, b, gamma, k, best, outcome, counts, True,
                                                     chosen, tol, max_iter, time_limit, algorithm)
        return _result(problem, best, outcome, n, True, chosen, formulation, counts, algorithm)
    if chosen == "jax":
        from optkit.solvers.transport._sparse_jax import solve_jax

        best: dict[str, Any] = {}
        outcome, evaluations = solve_jax(
            cost, a, b, gamma, k, x0, formulation=formulation, tol=tol, max_iter=max_iter, memory=memory,
            time_limit=time_limit, callback=callback, progress=progress, best=best,
            current=lambda: _solution(problem, best, n, dual))
        counts = {"iterations": outcome.nit, "oracle_calls": evaluations, "restarts": 0}
        if polish:
            best, outcome, algorithm = _maybe_polish(problem, cost, a, b, gamma, k, best, outcome, counts, dual,
                                                     chosen, tol, max_iter, time_limit, algorithm)
        return _result(problem, best, outcome, n, dual, chosen, formulation, counts, algorithm)
    if two_phase:
        return _auto_sparse(problem, cost, a, b, gamma, k, None if init is None else x0, chosen, tol, max_iter, memory,
                            max_restarts, time_limit, callback, progress, dual, polish)
    best, outcome, counts = _lbfgs_phase(problem, cost, a, b, gamma, k, x0, dual, chosen, tol, max_iter, memory,
                                         max_restarts, time_limit, callback, progress)
    if polish:
        best, outcome, algorithm = _maybe_polish(problem, cost, a, b, gamma, k, best, outcome, counts, dual, chosen,
                                                 tol, max_iter, time_limit, algorithm)
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
                 time_limit: float | None, callback: Any, progress: bool, dual: bool = True,
                 polish: bool = True) -> Result:
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
    Where the constraint binds (the relaxed plan has a column with more than k nonzeros) and ``polish`` is on,
    the polishing step (:mod:`optkit.solvers.transport._sparse_polish`) starts from the relaxation's potentials;
    a plan it finds meets ``tol`` with at most k nonzeros per column, and the k-(semi-)dual value at those
    potentials bounds its suboptimality. If that relative gap is at most ``POLISH_ACCEPT_GAP`` (1e-4) the run
    ends there (``"newton+polish"``; measured: 2.5e-6 on 2-D clouds with n = 1000, k = 2). Otherwise (a wider
    gap, a failed polish, or Newton did not converge) the L-BFGS method runs on the k-(semi-)dual from the
    caller's start, exactly as ``algorithm="lbfgs"`` would (starting it from Newton's potentials instead ended at
    a *lower* dual value on 4 of the 18 small test instances, by up to 1e-7), and is polished in turn if it ends
    above ``tol``; with two plans the run returns the one with the lower objective and the potentials with the
    higher dual value (``"...+choice"``). Iteration and time limits apply to the total (polishing counts its
    Newton steps separately, ``counts["polish_newton_steps"]``); the callback sees every Newton and L-BFGS
    iteration with the total count; the history is one table with a ``phase`` column (in the order of
    ``info["phases"]``: Newton, then the polish and L-BFGS phases as they ran).
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
    candidate = None
    head = first.history  # the history before the L-BFGS phase
    if polish and first.status is Status.CONVERGED and relaxed_nonzeros > k:
        # the constraint binds: polish from the relaxation's potentials (a k-sparse feasible plan is what is sought;
        # the k-dual value at them, D_k >= D_n, is the lower bound)
        relaxed_outcome = _Outcome(first.status, first.message, first.nit, _history([first.history]),
                                   time.perf_counter() - began)
        polished, after, name = _maybe_polish(
            problem, cost, a, b, gamma, k, best, relaxed_outcome, counts, dual, chosen, tol, max_iter, time_limit,
            "newton", start=relaxed["x"], reason=f"The quadratic relaxation's plan has up to {relaxed_nonzeros} > k "
            "nonzeros in a column.")
        found = "polish" in polished and polished["polish"]["success"]
        if "polish" in polished:
            phases.append(_polish_phase(polished["polish"]))
            head = after.history
        if found:
            candidate = (polished, after, name)
            objective = _objective(cost, gamma, polished)
            if objective - polished["value"] <= POLISH_ACCEPT_GAP * abs(objective):
                return _result(problem, polished, after, n, dual, chosen, formulation, counts, name, phases)
    stop_here = first.status in (Status.CALLBACK_STOP, Status.MAX_ITER, Status.TIME_LIMIT)
    elapsed = time.perf_counter() - began
    remaining = max_iter - first.nit
    time_left = None if time_limit is None else time_limit - elapsed
    if candidate is not None and (remaining <= 0 or (time_left is not None and time_left <= 0)):
        return _result(problem, *candidate[:2], n, dual, chosen, formulation, counts, candidate[2], phases)
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
                       _history([head, second.history], [first.nit], [elapsed]),
                       time.perf_counter() - began)
    algorithm = "newton+lbfgs"
    if polish:
        best, outcome, algorithm = _maybe_polish(problem, cost, a, b, gamma, k, best, outcome, counts, dual, chosen,
                                                 tol, max_iter, time_limit, algorithm)
        if "polish" in best:  # the L-BFGS phase's state has none of its own
            phases.append(_polish_phase(best["polish"]))
    if candidate is not None:
        best, outcome, algorithm = _choose(cost, gamma, tol, candidate, (best, outcome, algorithm), dual)
    return _result(problem, best, outcome, n, dual, chosen, formulation, counts, algorithm, phases)


def _polish_phase(report: dict[str, Any]) -> dict[str, Any]:
    """The ``info["phases"]`` entry of a polishing step."""
    return {"phase": "polish", "nit": 0, "status": "CONVERGED" if report["success"] else "FAILED",
            "wall_time": report["wall_time"], "rounds": report["rounds"], "newton_steps": report["newton_steps"]}


def _objective(cost: np.ndarray, gamma: float, state: dict[str, Any]) -> float:
    """The primal objective of the plan in ``state`` (the oracles' ``(rows, values)`` format)."""
    from optkit.solvers.transport._sparse_polish import plan_objective

    return plan_objective(cost, gamma, state["rows"], state["values"])


def _choose(cost: np.ndarray, gamma: float, tol: float, first: tuple, second: tuple, dual: bool) -> tuple:
    """``algorithm="auto"`` with a polished relaxation plan (``first``) whose gap was too wide to stop at, and the
    L-BFGS phase's end (``second``, polished or not): the plan with the lower objective among those meeting
    ``tol``, with the potentials of the higher (semi-)dual value (the better lower bound) and the second run's
    history and time."""
    (best_1, _, name_1), (best_2, outcome_2, name_2) = first, second
    plans = [(_objective(cost, gamma, state), index, state) for index, state in enumerate((best_1, best_2))
             if state["error"] <= tol]
    _, index, plan = min(plans, key=lambda item: item[:2])
    bound = max((best_1, best_2), key=lambda state: state["value"])
    chosen = {**plan, "x": bound["x"], "value": bound["value"]}
    gap = _objective(cost, gamma, chosen) - bound["value"]
    formulation = "dual" if dual else "semi-dual"
    source = "the polished quadratic relaxation" if index == 0 else "the L-BFGS phase"
    if index == 1 and "polish" in name_2:
        source += " after polishing"
    message = (f"sparse-ot: converged (L1 marginal error {plan['error']:.3e} <= {tol:g}) with the plan of {source}, "
               f"the lower objective of the two phases' plans (at most k nonzeros per column); the k-{formulation} "
               f"value at the returned potentials (the higher of the two phases') is within {gap:.3e} of it.")
    outcome = _Outcome(Status.CONVERGED, message, outcome_2.nit, outcome_2.history, outcome_2.wall_time)
    return chosen, outcome, (name_1 if index == 0 else name_2) + "+choice"


def _polish_start(problem: TransportProblem, cost: np.ndarray, best: dict[str, Any], dual: bool) -> np.ndarray:
    """``(alpha, beta)`` to polish from: the dual's potentials, or for the semi-dual its alpha with the column
    potentials of its plan (a column without support gets the level at which its largest score is zero)."""
    n = cost.shape[0]
    x = np.asarray(best["x"], dtype=np.float64)
    if dual or x.size > n:
        return x.copy()
    alpha = x[:n]
    beta = _semi_dual_beta(problem, dense_plan(best["rows"], best["values"], problem.shape), alpha)
    empty = ~np.isfinite(beta)
    if np.any(empty):
        beta[empty] = np.min(cost[:, empty] - alpha[:, None], axis=0)
    return np.concatenate([alpha, beta])


def _maybe_polish(problem: TransportProblem, cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int,
                  best: dict[str, Any], outcome: Any, counts: dict[str, Any], dual: bool, chosen: str, tol: float,
                  max_iter: int, time_limit: float | None, algorithm: str, start: np.ndarray | None = None,
                  reason: str | None = None) -> tuple[dict[str, Any], Any, str]:
    """The ``polish=True`` step (:mod:`optkit.solvers.transport._sparse_polish`) after a run that ended ``STALLED``
    or ``MAX_ITER`` above ``tol`` with ``k < n`` (or, given a ``reason`` for the message, after any run; from
    ``start`` if given, else from the run's potentials).

    Returns ``(best, outcome, algorithm)``: the polished plan with the run's potentials and dual value, and a
    ``CONVERGED`` outcome, when the step succeeds; else the run's own, with the step's message appended.
    ``counts`` gains the step's work."""
    from optkit.solvers.transport._sparse_polish import MAX_ROUNDS, ROUND_STEPS, plan_objective
    from optkit.solvers.transport._sparse_polish import polish as run_polish

    n = cost.shape[0]
    if k >= n or not (reason or (best["error"] > tol and outcome.status in (Status.STALLED, Status.MAX_ITER))):
        return best, outcome, algorithm
    left = None if time_limit is None else time_limit - outcome.wall_time
    if left is not None and left <= 0:
        return best, outcome, algorithm
    x = _polish_start(problem, cost, best, dual) if start is None else np.array(start, dtype=np.float64)
    out = run_polish(cost, a, b, gamma, k, x, backend="numba" if chosen == "jax" else chosen, tol=tol,
                     max_iter=MAX_ROUNDS * ROUND_STEPS, time_limit=left)
    for key, value in (("polish_rounds", out.rounds), ("polish_newton_steps", out.newton_steps),
                       ("polish_cg_iterations", out.cg_iterations)):
        counts[key] = counts.get(key, 0) + value
    report = {"success": out.success, "message": out.message, "rounds": out.rounds,
              "newton_steps": out.newton_steps, "wall_time": out.wall_time, "start_marginal_error": best["error"],
              "records": out.records}
    columns = {key: [float(record[key]) for record in out.records]
               for key in ("time", "marginal_error", "violating_columns")}
    records = History({**columns, "nit": np.zeros(len(out.records))}) if out.records else History()
    history = _history([outcome.history, records], [outcome.nit], [outcome.wall_time])
    wall_time = outcome.wall_time + out.wall_time
    name = "dual" if dual else "semi-dual"
    if reason is None:
        reason = (f"The {name} had stopped {outcome.status.name} at {best['error']:.3e}: for k < n its plan can "
                  "miss the marginals (a relaxation gap).")
    if not out.success:
        message = f"{outcome.message} Polishing found no k-sparse plan within tol: {out.message}."
        return {**best, "polish": report}, _Outcome(outcome.status, message, outcome.nit, history, wall_time), \
            algorithm
    gap = plan_objective(cost, gamma, out.rows, out.values) - best["value"]
    message = (f"sparse-ot: converged by polishing (L1 marginal error {out.error:.3e} <= {tol:g}, at most k = {k} "
               f"nonzeros per column; {out.message}). {reason} The plan's objective is within the duality gap "
               f"{gap:.3e} of the optimum (the {name} value at the returned potentials is a lower bound).")
    polished = {"x": x, "value": best["value"], "rows": out.rows, "values": out.values, "error": out.error,
                "polish": report}
    return polished, _Outcome(Status.CONVERGED, message, outcome.nit, history, wall_time), algorithm + "+polish"


class _Outcome:
    """What :func:`_result` reads from a :class:`~optkit.solvers.loop.LoopOutcome`, for a two-phase run."""

    def __init__(self, status: Status, message: str, nit: int, history: History, wall_time: float) -> None:
        self.status, self.message, self.nit, self.history, self.wall_time = status, message, nit, history, wall_time


def _history(histories: list[History], nit_offsets: tuple = (), time_offsets: tuple = ()) -> History:
    """One history from the phases' histories: ``nit`` and ``time`` continue across phases, ``phase`` = 1, 2, ...
    (a column missing in a phase is NaN there; a history with phases of its own keeps them, renumbered)."""
    keys: list[str] = []
    for history in histories:
        keys += [key for key in history if key not in keys and key != "phase"]
    columns: dict[str, list[np.ndarray]] = {key: [] for key in [*keys, "phase"]}
    phase = 0.0
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
        if "phase" in history:  # already a multi-phase history: its phases keep their numbers, shifted
            columns["phase"].append(np.asarray(history["phase"], dtype=float) + phase)
            phase += float(np.max(history["phase"], initial=1.0))
        else:
            phase += 1.0
            columns["phase"].append(np.full(size, phase))
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
            **({"polish": best["polish"]} if "polish" in best else {}),
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
    beta = x[n:].copy() if dual or x.size > n else _semi_dual_beta(problem, plan, alpha)
    return summary(problem, plan, alpha, beta, float(state["value"]))
