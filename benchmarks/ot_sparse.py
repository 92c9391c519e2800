"""Sparsity-constrained OT: optkit ``"sparse-ot"`` (L-BFGS, semismooth Newton) against POT's ``smooth_ot_dual``.

Instance (the issue's): two 2-D point clouds of n = 1000 points (:func:`optkit.problems.library.
transport_instances.point_clouds`, seed 0), squared Euclidean cost divided by its maximum, uniform weights,
``SparsityConstrained(k, gamma=1e-2)`` with k in {2, 10} (at most k nonzeros per column of the plan).

Methods: optkit ``"sparse-ot"`` with ``formulation="dual"`` and ``"semi-dual"`` (``algorithm="lbfgs"``: Numba oracles, optkit's own L-BFGS
with a strong-Wolfe line search in the caller's thread) and the semi-dual on ``backend="jax"`` (the whole L-BFGS
loop compiled with ``lax.while_loop``, compiled before timing, JAX on the CPU), and ``algorithm="newton"``
(semismooth Newton-CG on the dual with a continuation in gamma, Numba kernels compiled before timing), and the
default ``algorithm="auto"`` (Newton on the quadratic relaxation; its plan if that has at most k nonzeros per
column, else the polished plan: see ``optkit/solvers/transport/_sparse_polish.py``), on both formulations;
every optkit row polishes a run that ends above tol (``polish=True``, the default) except the one marked
"no polish", which shows the relaxation gap,
stopping at an L1 marginal error of 1e-6 or when the method stalls; POT's
``ot.smooth.smooth_ot_dual(a, b, C, gamma, reg_type="sparsity_constrained", max_nz=k)`` with its defaults
(L-BFGS-B, ``stopThr=1e-9`` on the gradient, ``numItermax=500``). Each row reports the L1 marginal error and the
largest number of nonzeros per column of the returned plan, the dual objective (POT's in optkit's sign
convention) and the primal objective of the returned plan (their difference bounds the plan's suboptimality when
it meets the marginals), CPU seconds on one thread, and POT's CPU seconds over the row's.

Usage: python benchmarks/ot_sparse.py [--quick]
Writes benchmarks/results/ot_sparse.json and prints the table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

for _var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import describe, machine, markdown_table, timed, write_json

from optkit.problems import SparsityConstrained, TransportProblem
from optkit.problems.library.transport_instances import point_clouds
from optkit.solvers.transport.sparse import sparse_ot

GAMMA = 1e-2
TOL = 1e-6


def _l1(plan: np.ndarray, problem: TransportProblem) -> float:
    return float(np.abs(plan.sum(1) - problem.a).sum() + np.abs(plan.sum(0) - problem.b).sum())


def _optkit(problem: TransportProblem, formulation: str, backend: str = "auto", algorithm: str = "lbfgs",
            polish: bool = True) -> dict[str, Any]:
    result = sparse_ot(problem, formulation=formulation, tol=TOL, max_iter=5000, backend=backend,
                       algorithm=algorithm, polish=polish)
    plan = result.x.plan
    return {"iterations": result.nit, "l1": _l1(plan, problem), "max_nnz": int((plan > 0).sum(0).max()),
            "dual": float(result.x.dual_objective), "primal": float(result.fun), "status": result.status.name,
            "algorithm": result.info["algorithm"]}


def _pot(problem: TransportProblem, k: int) -> dict[str, Any]:
    import ot

    a, b, cost = (np.asarray(v) for v in (problem.a, problem.b, problem.cost))
    plan, log = ot.smooth.smooth_ot_dual(a, b, cost, GAMMA, reg_type="sparsity_constrained", max_nz=k, log=True)
    # POT minimises the negated dual with its regulariser gamma * ||.||^2 / 2, our convention too.
    dual = float(a @ log["alpha"] + b @ log["beta"]) - float(np.sum(_conjugate(log["alpha"], log["beta"], cost, k)))
    primal = float(np.sum(cost * plan) + 0.5 * GAMMA * np.sum(plan**2))
    return {"iterations": -1, "l1": _l1(plan, problem), "max_nnz": int((plan > 0).sum(0).max()), "dual": dual,
            "primal": primal, "status": "-", "algorithm": "L-BFGS-B"}


def _conjugate(alpha: np.ndarray, beta: np.ndarray, cost: np.ndarray, k: int) -> np.ndarray:
    """Per column, max over k-sparse nonnegative x of <x, s> - gamma/2 ||x||^2 with s = alpha + beta_j - C_j."""
    scores = alpha[:, None] + beta[None, :] - cost
    top = -np.sort(-np.maximum(scores, 0.0), axis=0)[:k]
    return (top**2).sum(axis=0) / (2 * GAMMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 300")
    args = parser.parse_args()
    n = 300 if args.quick else 1000
    sparse_ot(point_clouds(20, seed=1, regularization=SparsityConstrained(2, GAMMA)))  # compile the kernels
    sparse_ot(point_clouds(20, seed=1, regularization=SparsityConstrained(2, GAMMA)), algorithm="newton")
    for k in (2, 10):  # JAX compiles per shape and k: once before timing
        sparse_ot(point_clouds(n, seed=0, regularization=SparsityConstrained(k, GAMMA)), formulation="semi-dual",
                  backend="jax", max_iter=1)
        # and the Numba kernels that only large problems call (the parallel semi-dual oracle of Newton's start)
        sparse_ot(point_clouds(n, seed=0, regularization=SparsityConstrained(k, GAMMA)), algorithm="newton",
                  max_iter=1)
    rows: list[dict[str, Any]] = []
    for k in (2, 10):
        problem = point_clouds(n, seed=0, regularization=SparsityConstrained(k, GAMMA))
        runs = [("optkit sparse-ot dual (lbfgs)", lambda p=problem: _optkit(p, "dual")),
                ("optkit sparse-ot dual (lbfgs, no polish)", lambda p=problem: _optkit(p, "dual", polish=False)),
                ("optkit sparse-ot dual (newton)", lambda p=problem: _optkit(p, "dual", algorithm="newton")),
                ("optkit sparse-ot dual (auto)", lambda p=problem: _optkit(p, "dual", algorithm="auto")),
                ("optkit sparse-ot semi-dual (auto)", lambda p=problem: _optkit(p, "semi-dual", algorithm="auto")),
                ("optkit sparse-ot semi-dual (lbfgs)", lambda p=problem: _optkit(p, "semi-dual")),
                ("optkit sparse-ot semi-dual (jax)", lambda p=problem: _optkit(p, "semi-dual", "jax")),
                ("POT smooth_ot_dual", lambda p=problem, k=k: _pot(p, k))]
        base = None
        first = len(rows)
        for label, run in runs:
            wall, cpu, out = timed(run, repeat=3, budget=5.0)  # short runs: the least disturbed of three
            base = cpu if base is None else base
            rows.append({"instance": f"clouds n={n} k={k}", "method": label, "iterations": out["iterations"],
                         "wall s": wall, "cpu s": cpu, "L1 error": out["l1"], "max nnz/col": out["max_nnz"],
                         "dual objective": out["dual"], "primal objective": out["primal"],
                         "rel. gap": (out["primal"] - out["dual"]) / abs(out["primal"]),
                         "status": out["status"], "algorithm": out["algorithm"], "cpu / optkit dual": cpu / base})
            print(f"k={k} {label:34s} cpu {cpu:7.2f}s L1 {out['l1']:.2e} nnz {out['max_nnz']} {out['status']}",
                  flush=True)
        for row in rows[first:]:
            row["POT cpu / cpu"] = rows[-1]["cpu s"] / row["cpu s"]
    info = machine(("numpy", "scipy", "numba", "pot"))
    columns = ["instance", "method", "iterations", "wall s", "cpu s", "L1 error", "max nnz/col", "dual objective",
               "primal objective", "rel. gap", "status", "algorithm", "cpu / optkit dual", "POT cpu / cpu"]
    table = markdown_table(rows, columns)
    print()
    print(f"Machine: {describe(info)}; one thread; gamma = {GAMMA:g}, tol = {TOL:g}")
    print(table)
    path = write_json("ot_sparse", {"machine": info, "gamma": GAMMA, "tol": TOL, "n": n, "rows": rows,
                                    "table": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
