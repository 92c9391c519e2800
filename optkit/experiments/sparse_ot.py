"""Sparsity-constrained OT (Liu, Puigcerver & Blondel, ICLR 2023): plans, sparsity and objective vs k.

Instances: two 1-D Gaussian mixtures, squared cost
(:func:`optkit.problems.library.transport_instances.gaussian_mixtures_1d`, the kind of pair of the paper's
Figure 1), as densities on a grid of [0, 1] (``grid``) and as n quantiles with uniform weights (``quantiles``), with
``SparsityConstrained(k, gamma)`` for several k and ``Quadratic(gamma)`` (the k = n limit).

Method: ``"sparse-ot"`` on the semi-dual and on the dual (the default ``algorithm="auto"``: Newton on the
quadratic relaxation, then polishing and L-BFGS where the constraint binds; stopped at an L1 marginal error of 1e-6,
when it stalls or at ``max_iter``). On the quantiles every run converges: a plan with at most k nonzeros per
column within 1e-6 of the marginals (measured at n = 200, gamma = 0.1: k = 5, 10 and k = 1 on the semi-dual at
the polished relaxation in 0.02-0.03 s; the others after the L-BFGS phase in 2.4-3.1 s, k = 2 with a relative
duality gap of 8e-4; k = 1 reaches the sorted matching, the exact optimum, whose objective is the exact OT cost
plus gamma / (2 n)). :func:`save_figure` draws the plans (``plots/figure.png``). On the grid the masses span 1e-14
to 1e-2: k = 5 and 10 converge through polishing's column-by-column construction, with relative duality gaps of 4%
and 3% (its plans are far from optimal); for k = 1, 2 no k-sparse plan within 1e-6 was found (with k = 1 a
feasible plan would need every row's mass to be an exact sum of whole column masses), and those runs end
``MAX_ITER`` with the polishing step's reason in their message.

Metrics: iterations, time, marginal error, the largest number of nonzeros in a column of the plan (at most k), the
plan's density, the primal objective and its relative gap to the exact OT cost (``ot.emd2``, the reference row).
The objective includes :math:`\\tfrac\\gamma2\\|P\\|^2`, which grows as the plan gets sparser (for uniform weights
and k = 1 it is gamma / (2 n)), so on the quantiles the gap grows as k decreases (0.2% at k = 10, 0.8% at k = 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    """The quantile pair and the grid pair, for k in {1, 2, 5, 10} and the quadratic limit (quick: the quantile pair
    at n = 40 with k in {2, 5} and the quadratic limit)."""
    from optkit.problems.library.transport_instances import gaussian_mixtures_1d

    n = 40 if quick else 200
    ks = (2, 5) if quick else (1, 2, 5, 10)
    out = []
    for points in ("quantiles",) if quick else ("quantiles", "grid"):
        base = gaussian_mixtures_1d(n, points=points)
        name = f"mixtures-{points}-n{n}"
        out += [Instance(f"{name}-k{k}", base.with_regularization(SparsityConstrained(k, GAMMA)),
                         {"n": n, "k": k, "gamma": GAMMA, "points": points}) for k in ks]
        out.append(Instance(f"{name}-quadratic", base.with_regularization(Quadratic(GAMMA)),
                            {"n": n, "k": n, "gamma": GAMMA, "points": points}))
    return out


def methods(quick: bool) -> list[MethodSpec]:
    """``sparse-ot`` on the semi-dual and the dual."""
    # Quick: a 2-second limit per run.
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
    """Sparsity of the plan, the relative gap of its objective to the exact OT cost, and the plan's nonzeros
    (``plan``: shape, rows, columns, values; for :func:`figure`)."""
    plan = np.asarray(result.x.plan)
    nonzero = plan > 0
    exact = reference.get("fun")
    gap = None if not exact else (float(result.fun) - exact) / abs(exact)
    rows, cols = np.nonzero(nonzero)
    return {"max_nonzeros": int(nonzero.sum(axis=0).max()), "density": float(nonzero.mean()),
            "objective_gap": gap, "duality_gap": result.info.get("duality_gap"),
            "plan": {"shape": list(plan.shape), "rows": rows.tolist(), "cols": cols.tolist(),
                     "values": [float(f"{v:.8g}") for v in plan[rows, cols]]}}


def figure(records: Sequence[Mapping[str, Any]]) -> Any:
    """The plans, one panel per instance (a row per point set, a column per k, the quadratic limit last), of the
    first method that reports one (the semi-dual): mass times n on a linear grey scale, source along the vertical
    axis, target along the horizontal, with the marginal error and the largest number of nonzeros per column. The
    quantile pairs' plans follow the diagonal (both point sets are sorted), so their panels show the middle quarter
    of the rows and columns, where the sparsity pattern can be seen."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels: dict[tuple[str, int], Mapping[str, Any]] = {}
    for record in records:
        params = record.get("params") or {}
        plan = (record.get("metrics") or {}).get("plan")
        key = (str(params.get("points", "")), int(params.get("k", 0)))
        if plan is not None and key not in panels:
            panels[key] = record
    if not panels:
        return None
    point_sets = sorted({key[0] for key in panels}, reverse=True)  # quantiles first
    ks = sorted({key[1] for key in panels})
    fig = Figure(figsize=(2.6 * len(ks), 2.8 * len(point_sets)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(point_sets), len(ks), squeeze=False)
    for r, points in enumerate(point_sets):
        for c, k in enumerate(ks):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            record = panels.get((points, k))
            if record is None:
                ax.set_axis_off()
                continue
            plan = record["metrics"]["plan"]
            dense = np.zeros(plan["shape"])
            dense[plan["rows"], plan["cols"]] = plan["values"]
            n = dense.shape[0]
            label = "quadratic" if k >= n else f"k = {k}"
            if points == "quantiles":
                window = slice(3 * n // 8, 5 * n // 8)
                dense = dense[window, window]
                label += f" (points {window.start}-{window.stop - 1})"
            ax.imshow(dense * n, cmap="Greys", origin="lower", interpolation="nearest")
            error = (record.get("residuals") or {}).get("marginal_error")
            ax.set_title(f"{points}, {label}", fontsize="small")
            ax.set_xlabel(f"error {error:.1e}, max nnz/col {record['metrics']['max_nonzeros']}"
                          if error is not None else "", fontsize="x-small")
    return fig


def save_figure(records: Sequence[Mapping[str, Any]], path: Any) -> Any:
    """Write :func:`figure` to ``path`` (PNG) and return the path (``None`` when no plan was recorded)."""
    from optkit.plotting import save_png

    return save_png(figure(records), path)


def demo() -> dict[str, Any]:
    """The demo runs the quick slice."""
    return {"quick": True}
