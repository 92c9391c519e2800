"""PDE-constrained problem (5-point Laplacian, Dirichlet; notes A.4): time per Newton iteration of sketch-newton's
sparse randomized Kaczmarz solve against a dense direct KKT solve and a sparse LU solve, for N = 3 .. 64.

The sketch runs with ``on_inner_cap="continue"`` (the reference code's behaviour: at most ``max_inner`` sparse
Kaczmarz steps per Newton iteration, never a direct solve), so the timing is that of the sketching solver itself.
The dense direct solve factorizes the (3N^2 x 3N^2) KKT matrix with LAPACK (one BLAS thread, like everything here).

Usage: ``python benchmarks/nlp_pde.py [--sizes 3,16,32,64] [--max-inner 1000000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg
from _common import machine, markdown_table, write_json

from optkit.problems.library.pde import pde_control
from optkit.solvers.nlp.sketch_newton import sketch_newton
from optkit.solvers.nlp.sketching import kkt_matrix

TOL = 1e-6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="3,16,32,64")
    parser.add_argument("--max-inner", type=int, default=10**6)
    parser.add_argument("--outer", type=int, default=3, help="Newton iterations timed per method")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    sketch_newton(pde_control(3), tol=TOL, seed=0, sketch="kaczmarz", max_iter=1)  # numba warm-up
    rows = []
    with threadpool_limits(1, user_api="blas"):
        for N in (int(s) for s in args.sizes.split(",")):
            problem = pde_control(N)
            row = {"N": N, "n": problem.n, "m": problem.m}
            for label, options in (("kaczmarz", {"sketch": "kaczmarz", "on_inner_cap": "continue",
                                                 "max_inner": args.max_inner}),
                                   ("sparse-lu", {"sketch": "exact"})):
                result = sketch_newton(problem, tol=TOL, seed=0, max_iter=args.outer, **options)
                per = result.wall_time / max(result.nit, 1)
                row[f"{label}_s_per_it"] = per
                row[f"{label}_nit"] = result.nit
                row[f"{label}_kkt"] = result.residuals["kkt"]
                if label == "kaczmarz":
                    row["kaczmarz_inner_per_it"] = result.counts["inner_iterations"] / max(result.nit, 1)
            x, lam = problem.x0, problem.lam0
            K = kkt_matrix(problem.lagrangian_hessian(x, lam), problem.jacobian(x)).toarray()
            rhs = -np.concatenate(problem.kkt_residual(x, lam))
            start = time.perf_counter()
            scipy.linalg.solve(K, rhs, assume_a="sym")
            row["dense_solve_s"] = time.perf_counter() - start
            row["kaczmarz_vs_dense"] = row["kaczmarz_s_per_it"] / row["dense_solve_s"]
            rows.append(row)
            del K
    columns = ["N", "n", "m", "kaczmarz_s_per_it", "kaczmarz_inner_per_it", "kaczmarz_nit", "kaczmarz_kkt",
               "sparse-lu_s_per_it", "sparse-lu_nit", "dense_solve_s", "kaczmarz_vs_dense"]
    print(markdown_table(rows, columns))
    path = write_json("nlp_pde", {"machine": machine(("numpy", "scipy", "numba")), "tol": TOL,
                                  "max_inner": args.max_inner, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
