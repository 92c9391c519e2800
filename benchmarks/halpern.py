"""Halpern-family and extragradient-family solvers on the paper's instances: defaults table and step-grid table.

Epochs to reach a residual target (1 epoch = n component evaluations; a difference F_i(u) - F_i(v) counts as two;
monitoring residuals are not counted, restart checks are). Table 1: every method at its defaults. Table 2: the
baselines (EG, EAG literal and restarted, VR-EG) at each step of the grid 1/8x .. 32x the papers' steps (EG/EAG
eta = 5/||A||_2 on the game, 0.5 / 0.3 on the quadratic; VR-EG gamma = 3 sqrt(p)/||A||_F on the game, 0.01 on the
quadratic); steps above a method's stability bound are refused by the solver and reported as such. Also: time per
epoch against one dense A @ x + A.T @ y pass. Writes benchmarks/results/halpern.json.

Then a ratio table: for each method, its epochs to target (defaults, and best over the grid for the baselines)
divided by those of vr-halpern-inexact at its defaults (> 1: VR-Halpern needs fewer epochs), and its ms/epoch
divided by one dense matrix pass.

Targets and budgets are per instance: the game to 1e-5 within --epochs (default 1000); the quadratic instance to
--quad-target (default 1e-2) within --quad-epochs (default 2000; the issue's horizon is 2e5, too long for a grid).

Usage: python benchmarks/halpern.py [--epochs 1000] [--target 1e-5] [--quad-epochs 2000] [--quad-target 1e-2]
       [--instances game,quadratic] [--no-grid] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import optkit
from optkit.problems.library.games import policeman_burglar, quadratic_lower_bound

DEFAULT_METHODS = ["vr-halpern", "vr-halpern-inexact", "eg", "eag", "vr-eg"]
GRID = [1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16, 32]


def first_epoch_below(result, target: float) -> float:
    below = np.flatnonzero(result.history["residual"] <= target)
    return float(result.history["epochs"][below[0]]) if below.size else float("inf")


def paper_steps(label: str, problem) -> dict[str, float]:
    if label == "game":
        A = problem.A
        p = 1.0 / problem.n_components
        return {"eg": 5 / np.linalg.norm(A, 2), "eag": 5 / np.linalg.norm(A, 2),
                "vr-eg": 3 * math.sqrt(p) / np.linalg.norm(A)}
    return {"eg": 0.5, "eag": 0.3, "vr-eg": 0.01}


def one(problem, method: str, target: float, epochs: float, **options) -> dict:
    start = time.perf_counter()
    try:
        result = optkit.solve(problem, method, tol=target, max_epochs=epochs, seed=0, **options)
    except ValueError as error:
        return {"method": method, "status": "refused", "note": str(error)[:80], **options}
    wall = time.perf_counter() - start
    return {"method": method, "status": result.status.name, "epochs_to_target": first_epoch_below(result, target),
            "final_residual": float(result.residuals["residual"]),
            "best_residual": float(np.min(result.history["residual"])),
            "epochs": float(result.counts["epochs"]), "seconds": wall, "backend": result.backend,
            "ms_per_epoch": 1e3 * wall / max(result.counts["epochs"], 1e-12), **options}


def matvec_ms(A: np.ndarray) -> float:
    x, y = np.ones(A.shape[1]) / A.shape[1], np.ones(A.shape[0]) / A.shape[0]
    reps = 200
    start = time.perf_counter()
    for _ in range(reps):
        A @ x
        A.T @ y
    return 1e3 * (time.perf_counter() - start) / reps


def ratio_table(out: dict, label: str) -> None:
    """Epochs-to-target and time-per-epoch ratios against vr-halpern-inexact at its defaults."""
    rows = [r for r in out["defaults"] + out.get("grid_best", []) if r["instance"] == label and "epochs" in r]
    ref = next(r for r in rows if r["method"] == "vr-halpern-inexact")
    dense = out["matvec_ms"][label]
    print(f"== {label}: ratios (epochs to target / vr-halpern-inexact's {ref['epochs_to_target']:.1f}; "
          f"ms per epoch / one dense pass {dense:.3f} ms)")
    for r in rows:
        ratio = r["epochs_to_target"] / ref["epochs_to_target"] if math.isfinite(ref["epochs_to_target"]) else math.nan
        entry = {"instance": label, "method": r["method"], "epochs_to_target": r["epochs_to_target"],
                 "epochs_ratio": ratio, "best_residual": r["best_residual"], "ms_per_epoch": r["ms_per_epoch"],
                 "time_ratio_to_dense_pass": r["ms_per_epoch"] / dense, "backend": r["backend"]}
        out["ratios"].append(entry)
        print(f"  {r['method']:32s} epochs {r['epochs_to_target']:>8.1f}  ratio {ratio:>6.2f}  best "
              f"{r['best_residual']:.2e}  {r['ms_per_epoch']:7.2f} ms/epoch = {entry['time_ratio_to_dense_pass']:6.1f}"
              f" dense passes ({r['backend']})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=1000)
    parser.add_argument("--target", type=float, default=1e-5)
    parser.add_argument("--quad-epochs", type=float, default=2000)
    parser.add_argument("--quad-target", type=float, default=1e-2)
    parser.add_argument("--instances", default="game,quadratic")
    parser.add_argument("--no-grid", action="store_true")
    parser.add_argument("--quick", action="store_true", help="n = 100 game, n = 40 quadratic")
    args = parser.parse_args()
    n = 100 if args.quick else 500
    makers = {"game": lambda: policeman_burglar(n), "quadratic": lambda: quadratic_lower_bound(40 if args.quick else 200)}
    settings = {"game": (args.target, args.epochs), "quadratic": (args.quad_target, args.quad_epochs)}
    out = {"settings": {k: {"target": t, "max_epochs": e} for k, (t, e) in settings.items()}, "n": n,
           "defaults": [], "grid": [], "ratios": [], "matvec_ms": {}}
    for label in args.instances.split(","):
        problem = makers[label]()
        target, epochs = settings[label]
        # Compile the numba kernels outside the timed runs.
        for method in ("vr-halpern-inexact", "vr-eg"):
            optkit.solve(problem, method, max_epochs=2, tol=1e-300, seed=0)
        print(f"\n== {label}: {problem} -- defaults (target {target:g}, budget {epochs:g} epochs)")
        for method in DEFAULT_METHODS:
            row = {"instance": label, **one(problem, method, target, epochs)}
            out["defaults"].append(row)
            print(f"  {method:20s} {row['status']:10s} epochs to target {row.get('epochs_to_target', math.inf):>9.1f}"
                  f"  best {row.get('best_residual', math.nan):.2e}  {row.get('ms_per_epoch', math.nan):.2f} ms/epoch"
                  f" ({row.get('backend', '')})")
        dense = problem.A if label == "game" else np.asarray(problem.structure["D"])
        out["matvec_ms"][label] = matvec_ms(dense)
        print(f"  one dense matrix pass (A @ x + A.T @ y, or M @ u): {out['matvec_ms'][label]:.3f} ms")
        if args.no_grid:
            continue
        print(f"== {label}: baselines on the step grid (multiples of the papers' steps)")
        for method, base in paper_steps(label, problem).items():
            variants = [("", {})] + ([(" literal", {"restart": None})] if method == "eag" else [])
            for suffix, extra in variants:
                best = None
                for factor in GRID:
                    row = {"instance": label, "factor": factor, **one(problem, method, target, epochs,
                                                                       step=base * factor, **extra)}
                    row["method"] = method + suffix
                    out["grid"].append(row)
                    if row["status"] != "refused" and (best is None or (row["epochs_to_target"], row["best_residual"])
                                                       < (best["epochs_to_target"], best["best_residual"])):
                        best = row
                if best is not None:
                    best = dict(best, method=method + suffix + " (best step)")
                    out["grid_best"] = out.get("grid_best", []) + [best]
                    print(f"  {method + suffix:20s} best factor {best['factor']:g}: epochs to target "
                          f"{best['epochs_to_target']:>9.1f}  best residual {best['best_residual']:.2e}")
        ratio_table(out, label)
    path = Path(__file__).parent / "results" / "halpern.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
