"""Halpern-family and extragradient-family solvers on the paper's instances, at default options.

Epochs to reach a residual target (1 epoch = n component evaluations; a difference F_i(u) - F_i(v) counts as two;
monitoring residuals are not counted, restart checks are). Prints a table and writes
benchmarks/results/halpern.json. Usage: python benchmarks/halpern.py [--epochs 2000] [--target 1e-5] [--quick]

Not yet done (see issue 6): the step-size grid (1/8x .. 32x the papers' steps), numba kernels and the
time-per-epoch comparison with a dense A @ x + A.T @ y pass.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import optkit
from optkit.problems.library.games import policeman_burglar, quadratic_lower_bound

METHODS = ["eg", "eag", "vr-eg", "halpern", "vr-halpern", "vr-halpern-inexact"]


def first_epoch_below(result, target: float) -> float:
    below = np.flatnonzero(result.history["residual"] <= target)
    return float(result.history["epochs"][below[0]]) if below.size else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=2000)
    parser.add_argument("--target", type=float, default=1e-5)
    parser.add_argument("--quick", action="store_true", help="n = 100 instances")
    args = parser.parse_args()
    n = 100 if args.quick else 500
    instances = {"matrix game (rows)": policeman_burglar(n), "quadratic lower bound": quadratic_lower_bound(
        40 if args.quick else 200)}
    rows = []
    for label, problem in instances.items():
        for method in METHODS:
            start = time.perf_counter()
            result = optkit.solve(problem, method, tol=args.target, max_epochs=args.epochs, seed=0)
            wall = time.perf_counter() - start
            rows.append({"instance": label, "method": method, "status": result.status.name,
                         "epochs_to_target": first_epoch_below(result, args.target),
                         "final_residual": float(result.residuals["residual"]),
                         "epochs": float(result.counts["epochs"]), "seconds": wall,
                         "seconds_per_epoch": wall / max(result.counts["epochs"], 1e-12)})
            r = rows[-1]
            print(f"{label:24s} {method:20s} {r['status']:10s} epochs to {args.target:g}: "
                  f"{r['epochs_to_target']:>9.1f}  final {r['final_residual']:.2e}  {r['seconds_per_epoch']*1e3:.2f} ms/epoch")
    out = Path(__file__).parent / "results" / "halpern.json"
    out.write_text(json.dumps({"target": args.target, "max_epochs": args.epochs, "n": n, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
