"""AdaSketch-Newton on constrained logistic regression (Hong, Na, Mahoney & Kolar, ICML 2023, Section 5).

Instances: :func:`optkit.problems.library.logreg.constrained_logistic_regression` on the paper's seven LIBSVM
data sets (10 Gaussian linear equalities and :math:`\\|w\\|^2 = 1`; :math:`A, b` drawn with seed 0). Methods:
``sketch-newton`` with the Gaussian vector sketch and randomized Kaczmarz at the paper's LR settings
(reduced-Hessian threshold 1e-2, at most 1e6 sketch steps per Newton step), the same method with an exact KKT
solve, and the paper's baselines ``l1-sqp`` and ``augmented-lagrangian``. KKT tolerance 1e-6 (the paper: 1e-4).
The quick slice runs the two smallest data sets (sonar_scale, ionosphere_scale).
"""

from __future__ import annotations

from typing import Any

from optkit.experiments.runner import Instance, MethodSpec

NAME = "sketch-newton-logreg"
DESCRIPTION = "AdaSketch-Newton vs l1-SQP / AL on constrained logistic regression (the paper's 7 LIBSVM sets)."
METRICS = ("success", "nit", "wall_time", "kkt", "inner_iterations", "exact_fallbacks", "gmres_iterations")
RESIDUAL = "kkt"
TOL = 1e-6


def instances(quick: bool) -> list[Instance]:
    from optkit.problems.library.logreg import (
        PAPER_DATASETS,
        constrained_logistic_regression,
    )

    names = ("sonar_scale", "ionosphere_scale") if quick else PAPER_DATASETS
    out = []
    for name in names:
        problem = constrained_logistic_regression(name, seed=0)
        out.append(Instance(name, problem, {"n": problem.n, "m": problem.m}))
    return out


def methods(quick: bool) -> list[MethodSpec]:
    paper = {"tol": TOL, "hessian_tol": 1e-2, "max_inner": 10**6}
    specs = [MethodSpec("sketch-newton", {**paper, "sketch": "kaczmarz"}, label="sketch-newton (kaczmarz)"),
             MethodSpec("sketch-newton", {**paper, "sketch": "exact"}, label="sketch-newton (exact)")]
    if not quick:
        specs += [MethodSpec("sketch-newton", {**paper, "sketch": "gaussian"}, label="sketch-newton (gaussian)"),
                  MethodSpec("l1-sqp", {"tol": TOL, "hessian_tol": 1e-2}),
                  MethodSpec("augmented-lagrangian", {"tol": TOL})]
    return specs


def measure(instance: Instance, result: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """KKT residual recomputed from the problem's oracles."""
    x, lam = result.x
    return {"kkt": instance.problem.kkt_norm(x, lam),
            "inner_iterations": result.counts.get("inner_iterations", 0),
            "exact_fallbacks": result.counts.get("exact_fallbacks", 0),
            "gmres_iterations": result.counts.get("gmres_iterations", 0)}
