"""Sinkhorn-Newton-Sparse against Sinkhorn and RegOT's safe sparse Newton, to the same L1 marginal error.

Instances (Tang et al., ICLR 2024, Table 1; epsilon = 1/1200, i.e. the paper's eta = 1200):

- random assignment, n = 500, C ~ U[0, 1], uniform marginals (seed 0);
- MNIST pairs (t10k images 0-1, 2-3, 4-5; scikit-learn's 8x8 digits when MNIST is not in the data home) as
  densities on the pixel grid scaled to [0, 1]^2, squared-L2 ("L2") and L1 ground costs. Both problems are
  restricted to the pixels of positive mass (``support_only=True``): the same OT problem, and the only form RegOT
  accepts (it needs positive weights).

Methods: optkit ``"sns"`` (defaults, Numba kernels), optkit ``"sinkhorn"`` (Numba backend) and RegOT's
``sinkhorn_ssns`` (C++/Eigen, Tang & Qiu, NeurIPS 2024), each to an L1 marginal error
||P1 - a||_1 + ||P^T 1 - b||_1 <= 1e-9 verified on the returned plan. optkit stops on exactly that; RegOT stops on
the Euclidean norm of its (n + m - 1)-dimensional gradient, so it runs with tol = 1e-9 / sqrt(n + m)
(L1 <= sqrt(n + m) L2: the same or a stricter accuracy).

Time: everything runs on one thread (Numba, OpenBLAS, RegOT's Eigen); the table gives the best wall time of a few
runs and the CPU seconds of that run (on an oversubscribed shared machine the CPU seconds are the steadier
measure), and the ratio of each method's CPU time to SNS's.

Usage: python benchmarks/ot_newton.py [--quick]
Writes benchmarks/results/ot_newton.json and prints the table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

for _var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if "OPTKIT_DATA" not in os.environ and (Path(__file__).resolve().parents[2] / "shared" / "data").is_dir():
    os.environ["OPTKIT_DATA"] = str(Path(__file__).resolve().parents[2] / "shared" / "data")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import describe, machine, markdown_table, timed, write_json

from optkit.problems import Entropic, TransportProblem
from optkit.problems.library.digits import digit_images
from optkit.problems.library.transport_instances import mnist_pair, random_assignment
from optkit.solvers.transport.sinkhorn import sinkhorn
from optkit.solvers.transport.sns import sns

TOL = 1e-9
EPSILON = 1 / 1200


def _l1(plan: np.ndarray, problem: TransportProblem) -> float:
    return float(np.abs(plan.sum(1) - problem.a).sum() + np.abs(plan.sum(0) - problem.b).sum())


def _optkit(method: Any, problem: TransportProblem, **options: Any) -> dict[str, Any]:
    result = method(problem, tol=TOL, **options)
    return {"iterations": result.nit, "l1_error": _l1(result.x.plan, problem), "status": result.status.name,
            "detail": dict(result.counts)}


def _regot(problem: TransportProblem) -> dict[str, Any]:
    import regot

    n, m = problem.shape
    result = regot.sinkhorn_ssns(np.asfortranarray(problem.cost), np.asarray(problem.a), np.asarray(problem.b),
                                 EPSILON, tol=TOL / math.sqrt(n + m), max_iter=1000)
    return {"iterations": int(result.niter), "l1_error": _l1(result.plan, problem), "status": "-", "detail": {}}


def _instances(quick: bool) -> list[tuple[str, TransportProblem]]:
    regularization = Entropic(EPSILON)
    out = [("random assignment n=500", random_assignment(200 if quick else 500, regularization=regularization))]
    _, _, source = digit_images("auto")
    pairs = [(0, 1)] if quick else [(0, 1), (2, 3), (4, 5)]
    for cost, label in (("sqeuclidean", "L2"), ("cityblock", "L1")):
        for i, j in pairs:
            problem = mnist_pair(i, j, cost=cost, source="auto", support_only=True, regularization=regularization)
            out.append((f"{source} {i}-{j} {label} ({problem.shape[0]}x{problem.shape[1]})", problem))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 200 and one MNIST pair per cost")
    args = parser.parse_args()
    try:
        import regot  # noqa: F401

        have_regot = True
    except ImportError:
        have_regot = False
    warm = random_assignment(30, regularization=Entropic(EPSILON))
    sns(warm), sinkhorn(warm, backend="numba", max_iter=10)  # compile the Numba kernels outside the timings
    rows: list[dict[str, Any]] = []
    for name, problem in _instances(args.quick):
        methods = [("optkit sns", lambda p=problem: _optkit(sns, p), 5),
                   ("optkit sinkhorn (numba)", lambda p=problem: _optkit(sinkhorn, p, backend="numba",
                                                                          max_iter=1_000_000), 1)]
        if have_regot:
            methods.append(("regot sinkhorn_ssns", lambda p=problem: _regot(p), 3))
        base = None
        for label, run, repeat in methods:
            wall, cpu, out = timed(run, repeat=repeat, budget=10.0)
            if base is None:
                base = cpu
            rows.append({"instance": name, "method": label, "wall s": wall, "cpu s": cpu, "iterations":
                         out["iterations"], "L1 error": out["l1_error"], "status": out["status"],
                         "cpu / sns": cpu / base, "detail": out["detail"]})
            print(f"{name:32s} {label:26s} wall {wall:8.3f}s cpu {cpu:8.3f}s it {out['iterations']:7d} "
                  f"L1 {out['l1_error']:.1e}", flush=True)
    info = machine(("numpy", "scipy", "numba", "regot"))
    columns = ["instance", "method", "iterations", "wall s", "cpu s", "L1 error", "cpu / sns"]
    table = markdown_table(rows, columns)
    print()
    print(f"Machine: {describe(info)}; one thread; L1 marginal error target {TOL:g}, epsilon = 1/1200")
    print(table)
    path = write_json("ot_newton", {"machine": info, "tol": TOL, "epsilon": EPSILON, "quick": args.quick,
                                    "rows": rows, "table": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
