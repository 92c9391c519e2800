"""AdaSketch-Newton on the PDE-constrained problem (Hong, Na, Mahoney & Kolar, ICML 2023, Section 5).

Instances: :func:`optkit.problems.library.pde.pde_control` (5-point Laplacian, zero Dirichlet boundary, the
paper's target) at N = 3 (the paper's size) and larger sparse grids. Methods: ``sketch-newton`` with sparse
randomized Kaczmarz and with the Gaussian sketch (the paper's 1e6 inner cap), with an exact sparse solve, and the
baselines ``l1-sqp`` and ``augmented-lagrangian``. KKT tolerance 1e-6. The quick slice is N = 3.
"""

from __future__ import annotations

from typing import Any

from optkit.experiments.runner import Instance, MethodSpec

NAME = "sketch-newton-pde"
DESCRIPTION = "AdaSketch-Newton vs l1-SQP / AL on the 5-point-Laplacian control problem (N = 3 .. 32)."
METRICS = ("success", "nit", "wall_time", "kkt", "inner_iterations", "exact_fallbacks", "gmres_iterations")
RESIDUAL = "kkt"
TOL = 1e-6


def instances(quick: bool) -> list[Instance]:
    from optkit.problems.library.pde import pde_control

    return [Instance(f"pde-N{N}", pde_control(N), {"N": N}) for N in ((3,) if quick else (3, 8, 16, 32))]


def methods(quick: bool) -> list[MethodSpec]:
    inner = {"tol": TOL, "max_inner": 10**6}
    specs = [MethodSpec("sketch-newton", {**inner, "sketch": "kaczmarz"}, label="sketch-newton (kaczmarz)"),
             MethodSpec("sketch-newton", {**inner, "sketch": "gaussian"}, label="sketch-newton (gaussian)"),
             MethodSpec("sketch-newton", {"tol": TOL, "sketch": "exact"}, label="sketch-newton (exact)")]
    if not quick:
        specs += [MethodSpec("l1-sqp", {"tol": TOL}), MethodSpec("augmented-lagrangian", {"tol": TOL})]
    return specs


def measure(instance: Instance, result: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """KKT residual recomputed from the problem's oracles."""
    x, lam = result.x
    return {"kkt": instance.problem.kkt_norm(x, lam),
            "inner_iterations": result.counts.get("inner_iterations", 0),
            "exact_fallbacks": result.counts.get("exact_fallbacks", 0),
            "gmres_iterations": result.counts.get("gmres_iterations", 0)}
