"""Entropic OT: Sinkhorn on every available backend against the exact cost from ``ot.emd2``.

Instances: 2-D point clouds (``x ~ N(0, I)``, ``y ~ N((1, 0.5), diag(0.5, 1.5)^2)``, uniform weights, squared
Euclidean cost divided by its maximum, so :math:`\\varepsilon` is relative to the largest cost) for several ``n``
and :math:`\\varepsilon`, and two digit images on their pixel grid
(:func:`optkit.problems.library.digits.digit_pair`: MNIST ``t10k`` when it is in the data home, scikit-learn's
8 x 8 digits otherwise; the quick slice always uses the 8 x 8 digits so that it runs in seconds).

Methods: ``sinkhorn`` on each backend it registers (:attr:`optkit.solvers.registry.SolverInfo.backends`);
compiled backends are warmed up on the instance first, so their time excludes compilation. The exact
reference column is ``ot.emd2`` (network simplex); ``cost_gap`` is the relative gap
:math:`(\\langle C, P_\\varepsilon\\rangle - \\mathrm{OT}(a, b)) / \\mathrm{OT}(a, b)`, which shrinks like
:math:`O(\\varepsilon\\log(1/\\varepsilon))` (Peyré & Cuturi 2019, Prop. 4.1 and its rates).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optkit._arrays import as_generator
from optkit.experiments.runner import Instance, MethodSpec
from optkit.problems import Entropic, TransportProblem

NAME = "entropic-ot"
DESCRIPTION = "Entropic OT on point clouds and digit images: Sinkhorn per backend vs the exact ot.emd2 cost."
METRICS = ("nit", "wall_time", "marginal_error", "cost", "cost_gap")
RESIDUAL = "marginal_error"
REFERENCE_LABEL = "ot.emd2 (exact)"


def _clouds(n: int, epsilon: float) -> Instance:
    rng = as_generator(n)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(n, 2)) * np.array([0.5, 1.5]) + np.array([1.0, 0.5])
    problem = TransportProblem.from_points(x, y, normalize="max", regularization=Entropic(epsilon))
    return Instance(f"clouds-n{n}-eps{epsilon:g}", problem, {"kind": "clouds", "n": n, "epsilon": epsilon})


def _digits(i: int, j: int, epsilon: float, source: str) -> Instance:
    from optkit.problems.library.digits import digit_images, digit_pair

    _, labels, used = digit_images(source)
    a, b, cost = digit_pair(i, j, source=used)
    problem = TransportProblem(a, b, cost / cost.max(), Entropic(epsilon))
    name = f"digits-{used}-{int(labels[i])}v{int(labels[j])}-eps{epsilon:g}"
    return Instance(name, problem, {"kind": "digits", "source": used, "n": a.size, "epsilon": epsilon,
                                    "images": [i, j]})


def instances(quick: bool) -> list[Instance]:
    """Point clouds for each (n, epsilon), then one digit pair for each epsilon."""
    sizes, epsilons = ((100, 200), (0.03, 0.01)) if quick else ((200, 500, 1000, 2000), (0.03, 0.01, 0.003))
    grid = [_clouds(n, eps) for n in sizes for eps in epsilons]
    digit_epsilons = (0.01, 0.003) if quick else (0.01, 0.003, 0.001)
    grid += [_digits(0, 1, eps, "sklearn" if quick else "auto") for eps in digit_epsilons]
    return grid


def methods(quick: bool) -> list[MethodSpec]:
    """Sinkhorn on every registered backend (quick: NumPy and the backend ``"auto"`` picks)."""
    from optkit.solvers.registry import get, resolve_backend

    info = get("sinkhorn")
    backends = list(info.backends)
    if quick:
        backends = list(dict.fromkeys(b for b in ("numpy", resolve_backend("auto", info)) if b in info.backends))
    tol = 1e-6 if quick else 1e-8
    options = {"max_iter": 100_000, "time_limit": 30.0 if quick else 300.0}
    specs = []
    for b in backends:
        label, tol_b = f"sinkhorn ({b})", tol
        if b == "jax" and not _jax_x64():
            # In float32 the L1 marginal error of a plan with ~1e6 entries cannot go much below 1e-5.
            label, tol_b = "sinkhorn (jax, float32)", max(tol, 1e-4)
        specs.append(MethodSpec("sinkhorn", {**options, "tol": tol_b}, label=label, backend=b, warmup=b != "numpy"))
    return specs


def _jax_x64() -> bool:
    import jax

    return bool(jax.config.read("jax_enable_x64"))


def reference(instance: Instance) -> dict[str, Any]:
    """The exact OT cost by POT's network simplex (``ot.emd2``)."""
    import time

    import ot

    problem = instance.problem
    start = time.perf_counter()
    cost = ot.emd2(np.asarray(problem.a), np.asarray(problem.b), np.asarray(problem.cost), numItermax=10_000_000)
    return {"cost": float(cost), "wall_time": time.perf_counter() - start}


def measure(instance: Instance, result: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """Transport cost of the Sinkhorn plan, its relative gap to the exact cost, and the duality gap."""
    cost = float(result.x.cost)
    exact = reference.get("cost")
    gap = None if exact is None or exact == 0 else (cost - exact) / abs(exact)
    return {"cost": cost, "cost_gap": gap, "duality_gap": result.info.get("duality_gap")}


def demo() -> dict[str, Any]:
    """The demo runs the quick slice."""
    return {"quick": True}
