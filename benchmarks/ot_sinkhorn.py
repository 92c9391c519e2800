"""Entropic OT by Sinkhorn: optkit (numba, jax) against POT (log-domain and kernel-domain) and OTT-JAX.

Instances: two clouds of n uniform points in the unit square (seeded), squared Euclidean cost divided by its
maximum, uniform weights, epsilon in {1e-2, 1e-3} (and 1e-4 at the smallest n, where exp(-C/eps) underflows).

One stopping accuracy for everyone: an L1 marginal error ||P1 - a||_1 + ||P^T 1 - b||_1 <= 1e-6, verified from
each solver's returned plan (column "L1 error"). optkit stops on exactly that. POT stops on the L2 norm of the
column-marginal error only (its rows are exact after its last update), so POT runs with
stopThr = 1e-6 / sqrt(n) (L1 <= sqrt(n) L2: the same or a stricter accuracy). OTT-JAX stops on the L1 error of
one marginal (threshold 1e-6; the other is exact).

Slow solvers are capped by a time budget (``--budget`` seconds): they run a fixed number of iterations, and their
time is extrapolated as (measured seconds per iteration) x (iterations the full solve needs). The iteration count
used is the one of the same iteration on the same instance: POT's log-domain and kernel-domain Sinkhorn make
identical updates (v then u), so POT-log is extrapolated with POT-kernel's count; optkit-jax makes the same updates
as optkit-numba; OTT (which orders its updates like optkit) with optkit-numba's. Where POT-kernel fails, POT-log
uses optkit-numba's count. Such rows say "extrapolated" and their L1 error is the one after the capped run.

Time: with ``--threads 1`` (the default) every library runs on one thread (Numba, OpenBLAS, XLA) and the table
compares CPU seconds of the process (``time.process_time``), which stay meaningful on a shared, oversubscribed
machine where wall-clock times of the same run vary several-fold; with ``--threads N > 1`` it compares best-of wall
seconds. Both are in the JSON.

Usage: python benchmarks/ot_sinkhorn.py [--quick] [--threads 1] [--budget 20] [--no-jax]
Writes benchmarks/results/ot_sinkhorn.json and prints a ratio table (time / optkit-numba time).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any


def _threads_from_argv() -> int:
    for k, arg in enumerate(sys.argv):
        if arg == "--threads" and k + 1 < len(sys.argv):
            return int(sys.argv[k + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 1


# Thread counts must be fixed before numpy, numba and jax are imported.
THREADS = _threads_from_argv()
for _var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)
if THREADS == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                               "intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_ENABLE_X64", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import ot
from _common import describe, machine, markdown_table, timed, write_json

import optkit
from optkit import Entropic, TransportProblem

TOL = 1e-6


def instance(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 2)), rng.random((n, 2))
    problem = TransportProblem.from_points(x, y, normalize="max")
    return problem.a, problem.b, problem.cost


def l1_error(plan: Any, a: np.ndarray, b: np.ndarray) -> float:
    plan = np.asarray(plan, dtype=np.float64)
    if not np.all(np.isfinite(plan)):
        return float("nan")
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum())


def row(solver: str, n: int, epsilon: float, wall: float, cpu: float, iterations: float, error: float, status: str,
        scale: float = 1.0, **extra: Any) -> dict[str, Any]:
    """One table row; ``scale`` extrapolates a capped run (needed / measured iterations)."""
    seconds = (cpu if THREADS == 1 else wall) * scale
    return {"solver": solver, "n": n, "epsilon": epsilon, "seconds": seconds, "wall_seconds": wall * scale,
            "cpu_seconds": cpu * scale, "iterations": iterations, "l1_error": error, "status": status, **extra}


def run_numba(a, b, cost, epsilon, max_iter) -> dict[str, Any]:
    problem = TransportProblem(a, b, cost, Entropic(epsilon))
    wall, cpu, result = timed(lambda: optkit.solve(problem, "sinkhorn", backend="numba", tol=TOL,
                                                   max_iter=max_iter), repeat=3, budget=10.0)
    status = "converged" if result.success else f"failed: {result.status.name}"
    return row("optkit-numba", len(a), epsilon, wall, cpu, result.nit, result.residuals["marginal_error"], status)


def run_pot_kernel(a, b, cost, epsilon, max_iter) -> dict[str, Any]:
    thr = TOL / math.sqrt(len(b))

    def solve():
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            plan, log = ot.sinkhorn(a, b, cost, epsilon, method="sinkhorn", stopThr=thr, numItermax=max_iter,
                                    log=True)
        return plan, log, [str(w.message) for w in caught]

    wall, cpu, (plan, log, caught) = timed(solve, repeat=3, budget=10.0)
    error = l1_error(plan, a, b)
    status = "converged" if error <= TOL else "failed: " + ("; ".join(caught)[:60] or f"L1 error {error:.1e}")
    return row("pot-sinkhorn", len(a), epsilon, wall, cpu, int(log["niter"]), error, status, warnings=caught)


def run_pot_log(a, b, cost, epsilon, needed: int, budget: float) -> dict[str, Any]:
    thr = TOL / math.sqrt(len(b))

    def solve(iterations: int, stop: float):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return ot.sinkhorn(a, b, cost, epsilon, method="sinkhorn_log", stopThr=stop, numItermax=iterations,
                               log=True)

    probe, _, _ = timed(lambda: solve(11, 0.0), repeat=1)
    per_iteration = probe / 11
    if per_iteration * needed * 1.2 <= budget:
        wall, cpu, (plan, log) = timed(lambda: solve(10 * needed, thr), repeat=1)
        error = l1_error(plan, a, b)
        return row("pot-sinkhorn-log", len(a), epsilon, wall, cpu, len(log["err"]) * 10, error,
                   "converged" if error <= TOL else f"failed: L1 error {error:.1e}")
    capped = max(11, int(budget / per_iteration))
    wall, cpu, (plan, _) = timed(lambda: solve(capped, 0.0), repeat=1)
    return row("pot-sinkhorn-log", len(a), epsilon, wall, cpu, needed, l1_error(plan, a, b),
               f"extrapolated ({capped} its measured)", scale=needed / capped, measured_iterations=capped)


def run_optkit_jax(a, b, cost, epsilon, needed: int, budget: float) -> dict[str, Any]:
    import jax.numpy as jnp

    problem = TransportProblem(jnp.asarray(a), jnp.asarray(b), jnp.asarray(cost), Entropic(epsilon))

    def solve(max_iter: int, tol: float):
        result = optkit.solve(problem, "sinkhorn", backend="jax", tol=tol, max_iter=max_iter)
        return result

    probe_iterations = 20
    solve(probe_iterations, 1e-300)  # compile
    probe, _, _ = timed(lambda: solve(probe_iterations, 1e-300), repeat=1)
    per_iteration = probe / probe_iterations
    if per_iteration * needed * 1.2 <= budget:
        max_iter = 2 * needed + 100
        solve(max_iter, TOL)  # compile this max_iter
        wall, cpu, result = timed(lambda: solve(max_iter, TOL), repeat=1)
        return row("optkit-jax", len(a), epsilon, wall, cpu, result.nit, result.residuals["marginal_error"],
                   "converged" if result.success else f"failed: {result.status.name}")
    capped = max(probe_iterations, int(budget / per_iteration) // 10 * 10)
    solve(capped, 1e-300)
    wall, cpu, result = timed(lambda: solve(capped, 1e-300), repeat=1)
    return row("optkit-jax", len(a), epsilon, wall, cpu, needed, result.residuals["marginal_error"],
               f"extrapolated ({capped} its measured)", scale=needed / capped, measured_iterations=capped)


def run_ott(a, b, cost, epsilon, needed: int, budget: float) -> dict[str, Any] | None:
    try:
        import jax
        import jax.numpy as jnp
        from ott.geometry import geometry
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import sinkhorn
    except ImportError:
        return None
    a_j, b_j, cost_j = jnp.asarray(a), jnp.asarray(b), jnp.asarray(cost)

    def make(max_iterations: int, threshold: float):
        solver = sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations, lse_mode=True)

        @jax.jit
        def run(cost):
            out = solver(linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost, epsilon=epsilon), a_j, b_j))
            return out.matrix, out.n_iters, out.converged
        return run

    probe_iterations = 20
    probe_run = make(probe_iterations, 1e-300)
    jax.block_until_ready(probe_run(cost_j))
    probe, _, _ = timed(lambda: jax.block_until_ready(probe_run(cost_j)), repeat=1)
    per_iteration = probe / probe_iterations
    if per_iteration * needed * 1.2 <= budget:
        full = make(2 * needed + 100, TOL)
        jax.block_until_ready(full(cost_j))
        wall, cpu, (plan, iterations, converged) = timed(lambda: jax.block_until_ready(full(cost_j)), repeat=1)
        error = l1_error(plan, a, b)
        return row("ott-jax", len(a), epsilon, wall, cpu, int(iterations), error,
                   "converged" if bool(converged) and error <= 1.01 * TOL else f"failed: L1 error {error:.1e}")
    capped = max(probe_iterations, int(budget / per_iteration) // 10 * 10)
    capped_run = make(capped, 1e-300)
    jax.block_until_ready(capped_run(cost_j))
    wall, cpu, (plan, _, _) = timed(lambda: jax.block_until_ready(capped_run(cost_j)), repeat=1)
    return row("ott-jax", len(a), epsilon, wall, cpu, needed, l1_error(plan, a, b),
               f"extrapolated ({capped} its measured)", scale=needed / capped, measured_iterations=capped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1000 only")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per capped (extrapolated) solver run")
    parser.add_argument("--no-jax", action="store_true", help="skip optkit-jax and OTT-JAX")
    parser.add_argument("--max-iter", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1, help="threads for every library (read before imports)")
    args = parser.parse_args()
    sizes = [1000] if args.quick else [1000, 2000, 4000]
    grid = [(n, eps) for n in sizes for eps in (1e-2, 1e-3)] + [(sizes[0], 1e-4)]

    # Compile (or load from cache) the numba kernel before timing anything.
    warm = instance(50)
    optkit.solve(TransportProblem(*warm, Entropic(0.1)), "sinkhorn", backend="numba")
    info = machine()
    rows: list[dict[str, Any]] = []
    for n, epsilon in grid:
        a, b, cost = instance(n)
        numba_row = run_numba(a, b, cost, epsilon, args.max_iter)
        group = [numba_row, run_pot_kernel(a, b, cost, epsilon, args.max_iter)]
        pot_ok = group[1]["status"] == "converged"
        needed_pot = group[1]["iterations"] if pot_ok else numba_row["iterations"]
        group.append(run_pot_log(a, b, cost, epsilon, needed_pot, args.budget))
        if not pot_ok:
            group[-1]["status"] += "; iterations from optkit-numba"
        if not args.no_jax:
            group.append(run_optkit_jax(a, b, cost, epsilon, numba_row["iterations"], args.budget))
            ott_row = run_ott(a, b, cost, epsilon, numba_row["iterations"], args.budget)
            if ott_row is not None:
                group.append(ott_row)
        for r in group:
            r["ratio_to_numba"] = r["seconds"] / numba_row["seconds"]
            print(f"n={n:5d} eps={epsilon:g} {r['solver']:18s} {r['seconds']:9.3f} s  x{r['ratio_to_numba']:7.2f}  "
                  f"its {r['iterations']:>8}  L1 {r['l1_error']:.1e}  {r['status']}", flush=True)
        rows.extend(group)
    columns = ["n", "epsilon", "solver", "seconds", "ratio_to_numba", "iterations", "l1_error", "status"]
    print()
    print(describe(info))
    print(markdown_table(rows, columns))
    metric = "CPU seconds (one thread)" if THREADS == 1 else f"best wall seconds ({THREADS} threads)"
    print(f"time column: {metric}")
    path = write_json("ot_sinkhorn", {"machine": info, "threads": THREADS, "time_metric": metric, "tol_l1": TOL,
                                      "budget_seconds": args.budget, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
