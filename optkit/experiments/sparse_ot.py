"""Sparsity-constrained OT (Liu, Puigcerver & Blondel, ICLR 2023): plans, sparsity and objective vs k.

Instance: two 1-D Gaussian mixtures on a grid of [0, 1], squared cost
(:func:`optkit.problems.library.transport_instances.gaussian_mixtures_1d`, the kind of pair of the paper's
Figure 1), with ``SparsityConstrained(k, gamma)`` for several k and ``Quadratic(gamma)`` (the k = n limit).

Method: ``"sparse-ot"`` on the semi-dual and on the dual (the default ``algorithm="auto"``: Newton on the
quadratic relaxation, then polishing and L-BFGS where the constraint binds; stopped at an L1 marginal error of 1e-6,
when it stalls or at ``max_iter``). These masses span 1e-14 to 1e-2, and for k < n no k-sparse plan within 1e-6
was found (with k = 1 a feasible plan would need every row's mass to be an exact sum of whole column masses);
the runs end ``MAX_ITER`` with the polishing step's reason in their message. Metrics: iterations, time, marginal error, the largest number of nonzeros in a column of the plan
(at most k), the plan's density, the primal objective and its relative gap to the exact OT cost (``ot.emd2``,
the reference row): the gap shrinks as k decreases towards 1 only through the quadratic term, since the
constraint forces the plan towards a k-sparse, near-deterministic map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optkit.experiments.runner import Instance, MethodSpec
from optkit.problems import Quadratic, SparsityConstrained

NAME = "sparse-ot"
DESCRIPTION = "Sparsity-constrained OT on 1-D Gaussian mixtures: plans, sparsity, objective and iterations vs k."
METRICS = ("nit", "wall_time", "marginal_error", "max_nonzeros", "density", "fun", "objective_gap")
RESIDUAL = "marginal_error"
REFERENCE_LABEL = "ot.emd2 (exact)"
GAMMA = 0.1


def instances(quick: bool) -> list[Instance]:
    """One grid pair, for k in {1, 2, 5, 10} (quick: {2, 5}) and the quadratic limit."""
    from optkit.problems.library.transport_instances import gaussian_mixtures_1d

    n = 40 if quick else 200
    base = gaussian_mixtures_1d(n)
    ks = (2, 5) if quick else (1, 2, 5, 10)
    out = [Instance(f"mixtures-n{n}-k{k}", base.with_regularization(SparsityConstrained(k, GAMMA)),
                    {"n": n, "k": k, "gamma": GAMMA}) for k in ks]
    out.append(Instance(f"mixtures-n{n}-quadratic", base.with_regularization(Quadratic(GAMMA)),
                        {"n": n, "k": n, "gamma": GAMMA}))
    return out


def methods(quick: bool) -> list[MethodSpec]:
    """``sparse-ot`` on the semi-dual and the dual."""
    # Quick: a 2-second limit per run; L-BFGS does not reach 1e-6 for k < n there (see the method page).
    options = {"tol": 1e-6, "max_iter": 5_000, "time_limit": 2.0 if quick else 300.0}
    return [MethodSpec("sparse-ot", {**options, "formulation": f}, label=f"sparse-ot ({f})", warmup=True)
            for f in ("semi-dual", "dual")]


def reference(instance: Instance) -> dict[str, Any]:
    """The exact OT cost (``ot.emd2``)."""
    import time

    import ot

    problem = instance.problem
    start = time.perf_counter()
    cost = ot.emd2(np.asarray(problem.a), np.asarray(problem.b), np.asarray(problem.cost))
    return {"fun": float(cost), "wall_time": time.perf_counter() - start}


def measure(instance: Instance, result: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """Sparsity of the plan and the relative gap of its objective to the exact OT cost."""
    plan = np.asarray(result.x.plan)
    nonzero = plan > 0
    exact = reference.get("fun")
    gap = None if not exact else (float(result.fun) - exact) / abs(exact)
    return {"max_nonzeros": int(nonzero.sum(axis=0).max()), "density": float(nonzero.mean()),
            "objective_gap": gap, "duality_gap": result.info.get("duality_gap")}


def demo() -> dict[str, Any]:
    """The demo runs the quick slice."""
    return {"quick": True}
