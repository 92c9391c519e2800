"""AdaSketch-Newton on the paper's 47 equality-constrained CUTEst problems (Hong, Na, Mahoney & Kolar, ICML 2023).

Instances: :func:`optkit.problems.library.cutest.paper_set` (sif2jax / S2MPJ / SIF, notes Part C), each with its
reference optimal value f*. Methods: ``sketch-newton`` with the Gaussian vector sketch and with randomized
Kaczmarz (the paper's GV and RK, defaults of the authors' code), and scipy's ``trust-constr`` and ``SLSQP`` with
exact derivatives. Tolerance: KKT residual 1e-6 (the paper uses 1e-4). A run counts as ``solved`` when the KKT
residual recomputed from the problem's oracles is at most 1e-6 and :math:`|f - f^*| \\le 10^{-5}\\max(1, |f^*|)`.
Seeds: 10 for the full grid (the paper's 10 runs); the deterministic baselines ignore them.

The quick slice (``optkit demo``) runs five small S2MPJ problems, which need no JAX compilation.
"""

from __future__ import annotations

from typing import Any

from optkit.experiments.runner import Instance, MethodSpec

NAME = "sketch-newton-cutest"
DESCRIPTION = "AdaSketch-Newton (Gaussian, Kaczmarz) vs trust-constr/SLSQP on the paper's 47 CUTEst problems."
METRICS = ("success", "nit", "wall_time", "kkt", "f_gap", "solved", "inner_iterations", "exact_fallbacks")
RESIDUAL = "kkt"
TOL = 1e-6
_QUICK = ("HS6", "HS7", "BT2", "HS28", "BT10")


def instances(quick: bool) -> list[Instance]:
    from optkit.problems.library.cutest import PAPER_PROBLEMS, load, paper_set

    if quick:
        f_star = dict(PAPER_PROBLEMS)
        return [Instance(name, load(name, source="s2mpj"), {"f_star": f_star[name], "source": "s2mpj"})
                for name in _QUICK]
    return [Instance(e.name, e.problem, {"f_star": e.f_star, "source": e.source}) for e in paper_set()]


def methods(quick: bool) -> list[MethodSpec]:
    specs = [MethodSpec("sketch-newton", {"tol": TOL, "sketch": "gaussian"}, label="sketch-newton (gaussian)"),
             MethodSpec("sketch-newton", {"tol": TOL, "sketch": "kaczmarz"}, label="sketch-newton (kaczmarz)"),
             MethodSpec("trust-constr", {"tol": TOL})]
    if not quick:
        specs.append(MethodSpec("slsqp", {"tol": TOL}))
    return specs


def seeds(quick: bool) -> list[int]:
    return [0] if quick else list(range(10))


def measure(instance: Instance, result: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """KKT residual recomputed from the problem's oracles, the gap to f*, and the paper's success test."""
    x, lam = result.x
    kkt = instance.problem.kkt_norm(x, lam)
    f_star = float(instance.params["f_star"])
    gap = abs(float(result.fun) - f_star) / max(1.0, abs(f_star))
    return {"kkt": kkt, "f_gap": gap, "solved": bool(kkt <= TOL and gap <= 1e-5),
            "inner_iterations": result.counts.get("inner_iterations", 0),
            "exact_fallbacks": result.counts.get("exact_fallbacks", 0)}


def demo() -> dict[str, Any]:
    """Five small S2MPJ problems, three methods, one seed (a few seconds)."""
    return {"quick": True}
