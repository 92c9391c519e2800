"""A feasible k-sparse plan from dual potentials: ``sparse-ot``'s polishing step (``polish=True``).

Why it is needed. For ``SparsityConstrained(k, gamma)`` with ``k < n`` the primal

.. math::

    \\min_{P \\in U(a,b),\\; \\|P_{:,j}\\|_0 \\le k} \\langle C, P\\rangle + \\tfrac\\gamma2\\|P\\|_F^2

is nonconvex, and its dual and semi-dual (Liu, Puigcerver & Blondel, ICLR 2023, §3) are the duals of its convex
envelope. Where the envelope's solution mixes several k-sparse columns (the dual maximiser sits where the k-th and
(k+1)-th scores of those columns tie), no plan read off the potentials is both k-sparse and feasible, and the
recovered plan misses the marginals (measured: an L1 error of ~1e-2 at n = 1000, k = 2, whatever the dual method;
``benchmarks/README.md``). The paper recovers the plan from the potentials and stops there.

What this step does (our construction, not the paper's). From potentials :math:`x = (\\alpha, \\beta)`:

1. Candidate support :math:`E`: the entries with a positive score :math:`\\alpha_i + \\beta_j - C_{ij} > 0` (the
   support of the quadratic plan at x, which contains every top-k support there), plus, for a row or column with
   positive mass and no such entry, its largest score.
2. Solve quadratic OT restricted to :math:`E` (the primal above without the sparsity constraint and with
   :math:`P_{ij} = 0` off E), a strictly convex QP, by the semismooth Newton method of
   :mod:`optkit.solvers.transport._sparse_newton` (its dual with the sums over E only; CG on the support), warm-started
   from the current potentials, to the caller's ``tol`` (at most ``ROUND_STEPS`` Newton steps). If it does not reach
   ``tol``, E admits no feasible plan (or the solve failed): go to 4.
3. Shrink E to the plan's support. If no column has more than k nonzeros, the plan is feasible, k-sparse and the
   best plan on its support: done. Otherwise drop the smallest entries of each such column, keeping only drops after
   which every connected component of the bipartite graph (rows, columns, E) still holds as much row mass as
   column mass (a necessary condition for a feasible plan on E: mass cannot leave a component). All excess entries
   are dropped at once; the drops that leave a component unbalanced are restored (this leaves every component
   balanced again: the pieces left out all are balanced), and those columns then try their other entries one at a
   time. Go to 2, or to 4 if no entry could be dropped.
4. Once per run (a second time, or with no feasible support yet, the step ends unsuccessful): take the last support
   on which the restricted problem met ``tol`` and replace it by the support of a vertex of the transportation
   polytope on it, a basic optimal solution of the linear program :math:`\\min \\langle C + \\gamma P, T\\rangle` (P
   that support's plan, so :math:`C + \\gamma P` is the objective's gradient there) by HiGHS' dual simplex
   (:func:`scipy.optimize.linprog`). A vertex's support is a forest, at most n + m - 1 entries; with k = 1 and equal
   uniform marginals the vertices are the permutations (Birkhoff-von Neumann), so every column has one entry. Go to
   2.
5. Enrich a k-sparse plan found by 3: in every column with fewer than k entries, add the outside entries with the
   largest positive scores under the restricted problem's potentials (negative reduced costs: entries the objective
   wants), as many as the column has room for, and solve the restricted problem on the larger support. No column
   exceeds k and the old support is a subset, so the new plan is feasible, k-sparse and no worse. Repeat while the
   objective falls by more than ``ENRICH_GAIN`` = 1e-12 relative and entries are added, at most ``ENRICH_ROUNDS`` =
   20 times, each solve within ``ENRICH_STEPS`` = 60 Newton steps (a slower one ends the step, keeping the last
   plan; measured: random 40 x 30 instances with k = 3 took 20 rounds of ~120 steps to gain 1e-5 in all).
6. If 2-4 end without a plan: build a support column by column (:func:`_greedy_support`: heaviest columns first,
   each from at most k rows in order of score, the k-th covering the rest), which carries a feasible k-sparse plan
   when the construction completes; solve the restricted problem on it and enrich it (5). Measured: it completes
   where pruning fails on random costs with random marginals (76 x 81, k = 3; 127 x 46, k = 6) and on the 1-D
   mixtures on a grid (n = 200, k = 5, 10: relative gaps 4% and 3%), seldom where k m is near n + m - 1.

The returned plan meets the marginals to ``tol`` with at most k nonzeros per column, so its objective is an upper
bound on the nonconvex optimum, and the (semi-)dual value at x a lower bound (weak duality): their difference, the
duality gap the result reports, bounds the plan's suboptimality. The step is a heuristic and can fail (with k = 1
and general marginals a feasible plan sends each column's whole mass to one row, an exact partition of the column
masses among the rows: NP-hard in general; and when k m < n + m - 1 no connected support is k-sparse, so a feasible
plan needs components whose masses balance exactly, which pruning seldom finds: a 30 x 20 uniform instance with k =
2 fails); it then says so, and the caller keeps the dual's own plan. Measured on 2-D point clouds with n = 1000, k =
2, gamma = 1e-2, from the quadratic relaxation's potentials: 2 rounds (41 Newton steps, 0.04 s), a relative gap of
2.5e-6 (``benchmarks/README.md``); on the 36 small test cases the k = 1 instances with gamma = 0.1 needed step 4.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from optkit.solvers.result import Status
from optkit.solvers.transport._sparse_newton import (
    NewtonOptions,
    _NumbaBackend,
    _NumpyBackend,
    _Support,
    _support_numba,
    solve_newton,
)

__all__ = ["PolishOutcome", "plan_objective", "polish"]

MAX_ROUNDS = 30
ENRICH_ROUNDS = 20  # step 5's rounds at most
ENRICH_STEPS = 60  # Newton steps per step-5 solve (measured: 7-31 on the 1-D quantile pairs; ~120 on random 40 x 30
#                    costs and marginals, where each round gained ~1e-6 relative): a slower solve ends step 5
ENRICH_GAIN = 1e-12  # step 5 stops when a round lowers the objective by less than this, relative (rounding level:
#                     small gains can precede larger ones, measured on the 1-D quantile pair with n = 60)
ROUND_STEPS = 200  # Newton steps per restricted solve (measured: 0-54 in the tests and benchmarks); on an infeasible
#                    support the restricted dual is unbounded and Newton would climb until max_iter


class PolishOutcome:
    """What :func:`polish` found: ``success``, the plan in the ``(rows, values)`` format of the oracles, its L1
    marginal ``error``, the restricted problem's potentials ``x``, work counts and one record per round."""

    def __init__(self) -> None:
        self.success = False
        self.message = ""
        self.rows: np.ndarray | None = None
        self.values: np.ndarray | None = None
        self.error = math.inf
        self.x: np.ndarray | None = None
        self.rounds = 0
        self.newton_steps = 0
        self.cg_iterations = 0
        self.records: list[dict[str, float]] = []
        self.wall_time = 0.0


class _Restricted:
    """Support scans and CG solves of the Newton method over a fixed candidate set E (column-major edge lists)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, n: int, m: int, backend: str) -> None:
        order = np.lexsort((rows, cols))  # by column, rows increasing: the order of a full scan
        self.rows, self.cols = rows[order].astype(np.int64), cols[order].astype(np.int64)
        self.cost = np.ascontiguousarray(cost[self.rows, self.cols], dtype=np.float64)
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(self.cols, minlength=m))]).astype(np.int64)
        self.n, self.m, self.backend = n, m, backend
        self.capacity = max(int(self.rows.size), 1)

    def support(self, alpha, beta, a, b, gamma, k) -> _Support:
        if self.backend == "numba":
            parts = _support_numba(alpha, beta, self.ptr, self.rows, self.cost, gamma, self.n, self.capacity)
            return _Support(*parts, alpha, beta, a, b, gamma)
        scores = alpha[self.rows] + beta[self.cols] - self.cost
        positive = scores > 0.0
        rows, cols = self.rows[positive], self.cols[positive]
        vals = scores[positive] / gamma
        col_count = np.bincount(cols, minlength=self.m).astype(np.float64)
        col_ptr = np.concatenate([[0], np.cumsum(col_count.astype(np.int64))])
        return _Support(col_ptr, rows, vals, np.bincount(rows, weights=vals, minlength=self.n),
                        np.bincount(rows, minlength=self.n).astype(np.float64),
                        np.bincount(cols, weights=vals, minlength=self.m), col_count, float(vals @ vals),
                        alpha, beta, a, b, gamma)

    def solve(self, state: _Support, rhs, gamma, shift, rtol, max_iter):
        solver = _NumbaBackend.solve if self.backend == "numba" else _NumpyBackend.solve
        return solver(state, rhs, gamma, shift, rtol, max_iter)


def _components(rows: np.ndarray, cols: np.ndarray, n: int, m: int) -> np.ndarray:
    """Component labels of the bipartite graph on n rows and m columns with edges (rows, cols)."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    graph = sparse.coo_matrix((np.ones(rows.size), (rows, n + cols)), shape=(n + m, n + m))
    return connected_components(graph, directed=False)[1]


def _unbalanced(rows: np.ndarray, cols: np.ndarray, signed_mass: np.ndarray, n: int, m: int,
                slack: float) -> np.ndarray:
    """Per node (rows, then columns): whether it lies in a component whose row and column masses differ by more
    than ``slack`` (``signed_mass`` = ``(a, -b)``)."""
    labels = _components(rows, cols, n, m)
    imbalance = np.bincount(labels, weights=signed_mass)
    return np.abs(imbalance[labels]) > slack


def _initial_support(x: np.ndarray, cost: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: the entries with a positive score at ``x``, plus the best-scoring entry of each row or column with
    positive mass and none of them (rows and columns, as index arrays)."""
    n = a.size
    scores = x[:n, None] + x[None, n:] - cost
    rows, cols = np.nonzero(scores > 0.0)
    extra_rows, extra_cols = [], []
    covered_rows = np.bincount(rows, minlength=n) > 0
    for i in np.nonzero(~covered_rows & (a > 0))[0]:
        extra_rows.append(i)
        extra_cols.append(int(np.argmax(scores[i])))
    covered_cols = np.bincount(cols, minlength=b.size) > 0
    for j in np.nonzero(~covered_cols & (b > 0))[0]:
        extra_rows.append(int(np.argmax(scores[:, j])))
        extra_cols.append(j)
    if extra_rows:
        edges = np.unique(np.concatenate([rows * b.size + cols, np.array(extra_rows) * b.size + extra_cols]))
        rows, cols = edges // b.size, edges % b.size
    return rows.astype(np.int64), cols.astype(np.int64)


def _prune(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int, signed_mass: np.ndarray, n: int, m: int,
           slack: float) -> tuple[np.ndarray, int]:
    """A keep-mask over the edges: each column's smallest entries beyond k dropped where that keeps every component
    balanced (see the module docstring, step 3). Returns ``(keep, dropped)``."""
    counts = np.bincount(cols, minlength=m)
    keep = np.ones(rows.size, dtype=bool)
    order = np.lexsort((vals, cols))  # by column, then value increasing
    starts = np.concatenate([[0], np.cumsum(counts)])
    violating = np.nonzero(counts > k)[0]
    for j in violating:  # the batch: every column's smallest excess entries
        keep[order[starts[j]:starts[j] + counts[j] - k]] = False
    bad = _unbalanced(rows[keep], cols[keep], signed_mass, n, m, slack)
    restore = ~keep & (bad[rows] | bad[n + cols])
    keep |= restore
    retry = np.unique(cols[restore])
    for j in retry:  # one entry at a time, smallest first, for the columns whose batch drops were undone
        excess = int(keep[cols == j].sum()) - k
        for edge in order[starts[j]:starts[j + 1]]:
            if excess <= 0:
                break
            if not keep[edge]:
                continue
            keep[edge] = False
            if np.any(_unbalanced(rows[keep], cols[keep], signed_mass, n, m, slack)):
                keep[edge] = True
            else:
                excess -= 1
    return keep, int((~keep).sum())


def _vertex_support(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, a: np.ndarray, b: np.ndarray, n: int,
                    m: int) -> np.ndarray | None:
    """The support (a mask over the edges) of a basic optimal solution of the transportation LP
    :math:`\\min \\langle W, T\\rangle` over plans on the edges, by HiGHS' dual simplex (a vertex), or ``None``."""
    from scipy import sparse
    from scipy.optimize import linprog

    edges = np.arange(rows.size)
    constraints = sparse.vstack([sparse.csr_matrix((np.ones(rows.size), (rows, edges)), shape=(n, rows.size)),
                                 sparse.csr_matrix((np.ones(rows.size), (cols, edges)), shape=(m, rows.size))])
    # The two marginals' totals agree only to rounding, and HiGHS' presolve declares such a system infeasible when
    # some masses are tiny (measured: 1-D mixtures with masses from 1e-14 to 1e-2, totals 3e-16 apart, a support on
    # which the restricted QP met 2e-13): scale b to a's total and solve without presolve.
    rhs = np.concatenate([a, b * (a.sum() / b.sum())]) if b.sum() > 0 else np.concatenate([a, b])
    solution = linprog(weights, A_eq=constraints, b_eq=rhs, bounds=(0, None), method="highs-ds",
                       options={"presolve": False})
    if solution.status != 0:
        return None
    return solution.x > 0.0


def _solve_on(rows: np.ndarray, cols: np.ndarray, x0: np.ndarray, out: PolishOutcome, cost: np.ndarray,
              a: np.ndarray, b: np.ndarray, gamma: float, *, backend: str, tol: float, max_iter: int, began: float,
              time_limit: float | None, options: type, steps: int = ROUND_STEPS) -> tuple[Any, dict[str, Any]] | None:
    """Step 2 on the support ``(rows, cols)`` from ``x0``: ``(outcome, best)`` of the Newton run (``best`` as
    :func:`~optkit.solvers.transport._sparse_newton.solve_newton` fills it), or ``None`` when the iteration or time
    budget is spent. At most ``steps`` Newton steps; ``out`` gains the work."""
    n, m = cost.shape
    left = None if time_limit is None else time_limit - (time.perf_counter() - began)
    if max_iter - out.newton_steps <= 0 or (left is not None and left <= 0):
        return None
    best: dict[str, Any] = {}
    outcome, counts = solve_newton(cost, a, b, gamma, n, x0, backend=backend, tol=tol,
                                   max_iter=min(max_iter - out.newton_steps, steps), time_limit=left,
                                   callback=None, progress=False, best=best, current=lambda: None, options=options,
                                   kernels=_Restricted(rows, cols, cost, n, m, backend))
    out.newton_steps += counts["newton_steps"]
    out.cg_iterations += counts["cg_iterations"]
    best["newton_steps"] = counts["newton_steps"]
    return outcome, best


def plan_objective(cost: np.ndarray, gamma: float, rows: np.ndarray, values: np.ndarray) -> float:
    """:math:`\\langle C, P\\rangle + \\tfrac\\gamma2\\|P\\|^2` of a plan in the oracles' padded ``(rows, values)``
    format (``-1`` = no entry)."""
    mask = rows >= 0
    columns = np.broadcast_to(np.arange(rows.shape[1]), rows.shape)[mask]
    return float(np.sum(cost[rows[mask], columns] * values[mask])) + 0.5 * gamma * float(np.sum(values[mask] ** 2))


def _additions(cost: np.ndarray, alpha: np.ndarray, beta: np.ndarray, rows: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Step 5's new entries: in each column with fewer than k entries (``rows`` padded, ``-1`` = none), the
    outside entries with the largest positive scores, as many as the column has room for (column blocks of about
    2e6 scores at a time)."""
    n, m = cost.shape
    present = rows >= 0
    room = k - present.sum(axis=0)
    new_rows, new_cols = [], []
    block = max(1, 2_000_000 // max(n, 1))
    for start in range(0, m, block):
        stop = min(start + block, m)
        cols = np.nonzero(room[start:stop] > 0)[0] + start
        if cols.size == 0:
            continue
        scores = alpha[:, None] + beta[None, cols] - cost[:, cols]
        for slot in range(rows.shape[0]):  # the column's own entries are not candidates
            own = present[slot, cols]
            scores[rows[slot, cols[own]], np.nonzero(own)[0]] = -np.inf
        width = min(int(room[cols].max()), n)
        top = np.argpartition(-scores, width - 1, axis=0)[:width]  # each column's width best, unordered
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=0), axis=0), axis=0)
        for position in range(top.shape[0]):
            candidate = top[position]
            value = scores[candidate, np.arange(cols.size)]
            take = (value > 0.0) & (position < room[cols])
            new_rows.append(candidate[take])
            new_cols.append(cols[take])
    if not new_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(new_rows).astype(np.int64), np.concatenate(new_cols).astype(np.int64)


def _enrich(cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int, out: PolishOutcome, *,
            backend: str, tol: float, max_iter: int, began: float, time_limit: float | None, options: type) -> int:
    """Step 5 of the module docstring on a successful ``out`` (updated in place); returns the number of solves."""
    n, m = cost.shape
    objective = plan_objective(cost, gamma, out.rows, out.values)
    solves = 0
    for _ in range(ENRICH_ROUNDS):
        x = out.x
        add_rows, add_cols = _additions(cost, x[:n], x[n:], out.rows, k)
        if add_rows.size == 0:
            break
        present = out.rows >= 0
        rows = np.concatenate([out.rows[present], add_rows])
        cols = np.concatenate([np.broadcast_to(np.arange(m), out.rows.shape)[present], add_cols])
        solved = _solve_on(rows, cols, x, out, cost, a, b, gamma, backend=backend, tol=tol, max_iter=max_iter,
                           began=began, time_limit=time_limit, options=options, steps=ENRICH_STEPS)
        if solved is None:
            break
        outcome, best = solved
        solves += 1
        improved = plan_objective(cost, gamma, best["rows"], best["values"])
        out.records.append({"round": out.rounds + solves, "time": time.perf_counter() - began,
                            "marginal_error": best["error"], "support": int(rows.size), "violating_columns": 0,
                            "newton_steps": best["newton_steps"], "added": int(add_rows.size)})
        if (outcome.status is not Status.CONVERGED or best["error"] > tol
                or int((best["rows"] >= 0).sum(axis=0).max(initial=0)) > k or not improved < objective):
            break  # keep the last plan (a superset support cannot be infeasible; this guards rounding)
        out.rows, out.values, out.error, out.x = best["rows"], best["values"], best["error"], best["x"]
        converged = objective - improved <= ENRICH_GAIN * abs(objective)
        objective = improved
        if converged:
            break
    return solves


def polish(cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int, x: np.ndarray, *, backend: str,
           tol: float, max_iter: int, time_limit: float | None = None, max_rounds: int = MAX_ROUNDS,
           options: type = NewtonOptions) -> PolishOutcome:
    """Steps 1-6 of the module docstring from potentials ``x = (alpha, beta)``; at most ``max_iter`` Newton steps in
    all and ``time_limit`` seconds."""
    began = time.perf_counter()
    n, m = cost.shape
    out = PolishOutcome()
    rows, cols = _initial_support(x, cost, a, b)
    signed_mass = np.concatenate([a, -b])
    slack = 0.1 * tol
    x0 = np.array(x, dtype=np.float64)
    feasible = None  # the support, values and potentials of the last restricted solve that met tol
    vertex_tried = False
    budget_spent = False
    for round_ in range(1, max_rounds + 1):
        solved = _solve_on(rows, cols, x0, out, cost, a, b, gamma, backend=backend, tol=tol, max_iter=max_iter,
                           began=began, time_limit=time_limit, options=options)
        if solved is None:
            out.message = "the iteration or time budget ran out"
            budget_spent = True
            break
        outcome, best = solved
        out.rounds = round_
        plan_rows, plan_values = best["rows"], best["values"]
        nonzero = plan_rows >= 0
        per_column = nonzero.sum(axis=0)
        violating = int((per_column > k).sum())
        out.records.append({"round": round_, "time": time.perf_counter() - began, "marginal_error": best["error"],
                            "support": int(rows.size), "violating_columns": violating,
                            "newton_steps": best["newton_steps"]})
        failure = None
        if best["error"] > tol or outcome.status is not Status.CONVERGED:
            failure = (f"the quadratic problem restricted to the round-{round_} support ended {outcome.status.name} "
                       f"at L1 marginal error {best['error']:.3e} > tol = {tol:g} (no feasible plan on it, or the "
                       "solve failed)")
        if failure is None and violating == 0:
            _succeed(out, best, f"after {round_} restricted solves", cost, a, b, gamma, k, backend=backend, tol=tol,
                     max_iter=max_iter, began=began, time_limit=time_limit, options=options)
            break
        if failure is None:
            columns = np.broadcast_to(np.arange(m), plan_rows.shape)
            rows, cols, vals = plan_rows[nonzero], columns[nonzero], plan_values[nonzero]
            feasible = (rows, cols, vals, best["x"])
            keep, dropped = _prune(rows, cols, vals, k, signed_mass, n, m, slack)
            if dropped:
                rows, cols = rows[keep], cols[keep]
                x0 = best["x"]
                continue
            failure = (f"{violating} columns keep more than k = {k} nonzeros: dropping any of their entries would "
                       "leave a component of the support with unequal row and column mass")
        if feasible is None or vertex_tried:
            out.message = failure
            break
        # Step 4: a vertex of the transportation polytope on the last feasible support
        vertex_tried = True
        rows, cols, vals, x0 = feasible
        chosen = _vertex_support(rows, cols, cost[rows, cols] + gamma * vals, a, b, n, m)
        if chosen is None:
            out.message = failure + "; the linear program on the last feasible support failed too"
            break
        rows, cols = rows[chosen], cols[chosen]
    else:
        out.message = f"{max_rounds} rounds did not remove every column with more than k = {k} nonzeros"
    if not out.success and not budget_spent:
        # Step 6: a support built column by column
        support = _greedy_support(cost, a, b, k, np.asarray(x[:n], dtype=np.float64), 1e-3 * tol / (n + m))
        solved = None if support is None else _solve_on(
            *support[:2], _fitted_potentials(*support, cost, gamma, n, m), out, cost, a, b, gamma, backend=backend,
            tol=tol, max_iter=max_iter, began=began, time_limit=time_limit, options=options)
        if solved is not None:
            outcome, best = solved
            out.records.append({"round": out.rounds + 1, "time": time.perf_counter() - began,
                                "marginal_error": best["error"], "support": int(support[0].size),
                                "violating_columns": 0, "newton_steps": best["newton_steps"]})
            out.rounds += 1
            if (outcome.status is Status.CONVERGED and best["error"] <= tol
                    and int((best["rows"] >= 0).sum(axis=0).max(initial=0)) <= k):
                _succeed(out, best, f"on a greedy support, after pruning had failed ({out.message})", cost, a, b,
                         gamma, k, backend=backend, tol=tol, max_iter=max_iter, began=began,
                         time_limit=time_limit, options=options)
        if not out.success:
            out.message += ("; the greedy construction found no support" if support is None else
                            "; the quadratic problem on the greedy support did not meet tol either")
    out.wall_time = time.perf_counter() - began
    return out


def _succeed(out: PolishOutcome, best: dict[str, Any], how: str, cost: np.ndarray, a: np.ndarray, b: np.ndarray,
             gamma: float, k: int, **solve: Any) -> None:
    """Record a k-sparse plan that meets tol in ``out``, enrich it (step 5) and say how it was found."""
    out.success = True
    out.rows, out.values, out.error, out.x = best["rows"], best["values"], best["error"], best["x"]
    added = _enrich(cost, a, b, gamma, k, out, **solve)
    out.message = (f"a plan with at most k = {k} nonzeros per column meeting the marginals to {out.error:.3e} {how}"
                   + (f", then {added} enriching solves" if added else ""))


def _greedy_support(cost: np.ndarray, a: np.ndarray, b: np.ndarray, k: int, alpha: np.ndarray, eps: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Step 6: columns in decreasing mass, each served by at most k rows, taking each row's remaining mass up to the
    column's need; the k-th row must cover what is left. Rows are tried in decreasing order of
    :math:`\\alpha_i - C_{ij}` (the score without the column's constant) and, if that construction gets stuck, in
    decreasing order of remaining mass (fewest splits). Masses below ``eps`` count as zero. Returns the plan built
    (rows, columns, values: feasible and k-sparse), or ``None`` when both get stuck."""
    for by_score in (True, False):
        support = _greedy_pass(cost, a, b, k, alpha, eps, by_score)
        if support is not None:
            return support
    return None


def _greedy_pass(cost: np.ndarray, a: np.ndarray, b: np.ndarray, k: int, alpha: np.ndarray, eps: float,
                 by_score: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One construction of :func:`_greedy_support`."""
    remaining = np.array(a, dtype=np.float64)
    rows_out: list[int] = []
    cols_out: list[int] = []
    values_out: list[float] = []
    for j in np.argsort(-b, kind="stable"):
        need = float(b[j])
        preference = alpha - cost[:, j] if by_score else None
        for taken in range(k):
            if need <= eps:
                break
            available = remaining > eps
            if taken == k - 1:
                available &= remaining >= need - eps
            if not available.any():
                return None
            i = int(np.argmax(np.where(available, remaining if preference is None else preference, -np.inf)))
            moved = min(float(remaining[i]), need)
            rows_out.append(i)
            cols_out.append(int(j))
            values_out.append(moved)
            remaining[i] -= moved
            need -= moved
        if need > eps:
            return None
    return (np.asarray(rows_out, dtype=np.int64), np.asarray(cols_out, dtype=np.int64),
            np.asarray(values_out, dtype=np.float64))


def _fitted_potentials(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, cost: np.ndarray, gamma: float,
                       n: int, m: int) -> np.ndarray:
    """Potentials whose plan on the support is ``values``: the least-squares solution of
    :math:`\\alpha_i + \\beta_j = C_{ij} + \\gamma P_{ij}` over the support (exact on a forest), a start at which the
    restricted Newton method has the greedy plan (a cold start from the dual's potentials can need more than
    ``ROUND_STEPS`` steps at small gamma)."""
    from scipy import sparse
    from scipy.sparse.linalg import lsqr

    edges = np.arange(rows.size)
    system = sparse.csr_matrix((np.ones(2 * rows.size), (np.concatenate([edges, edges]), np.concatenate(
        [rows, n + cols]))), shape=(rows.size, n + m))
    return lsqr(system, cost[rows, cols] + gamma * values, atol=1e-14, btol=1e-14, iter_lim=20 * (n + m))[0]
