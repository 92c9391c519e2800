"""The solution object every OT solver returns as ``Result.x``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TransportSolution", "entropic_summary"]


@dataclass(frozen=True)
class TransportSolution:
    """An OT solution.

    Attributes
    ----------
    plan
        The transport plan :math:`P` (n, m), dense.
    potentials
        The dual potentials ``(f, g)``. For entropic OT, :math:`P_{ij} = \\exp((f_i + g_j - C_{ij})/\\varepsilon)`;
        a point with zero mass has potential ``-inf`` (its row or column of the plan is zero).
    cost
        The transport cost :math:`\\langle C, P\\rangle` (what POT's ``ot.sinkhorn2`` reports).
    objective
        The objective the solver optimised, at ``plan`` (for entropic OT
        :math:`\\langle C, P\\rangle + \\varepsilon\\sum_{ij} P_{ij}(\\log P_{ij} - 1)`).
    dual_objective
        The dual objective at ``potentials``; ``objective - dual_objective`` is the duality gap (zero at the
        optimum, up to the marginal error).
    marginal_error
        ``(||P 1 - a||_1, ||P^T 1 - b||_1)``.
    """

    plan: Any
    potentials: tuple[Any, Any]
    cost: Any
    objective: Any
    dual_objective: Any
    marginal_error: tuple[Any, Any]


def _masked_dot(weights: np.ndarray, potential: np.ndarray) -> float:
    """<w, f> with 0 * (-inf) = 0 for zero-mass points."""
    mask = weights > 0
    return float(np.dot(weights[mask], potential[mask]))


def entropic_summary(
    cost: np.ndarray, a: np.ndarray, b: np.ndarray, f: np.ndarray, g: np.ndarray, epsilon: float
) -> TransportSolution:
    """Plan, cost, primal and dual entropic objectives and marginal errors from potentials (NumPy, float64 sums)."""
    plan = np.exp((f[:, None] + g[None, :] - cost) / epsilon)
    row_err = float(np.abs(plan.sum(axis=1) - a).sum())
    col_err = float(np.abs(plan.sum(axis=0) - b).sum())
    transport_cost = float(np.sum(cost * plan, dtype=np.float64))
    positive = plan > 0
    logs = np.zeros_like(plan)
    logs[positive] = np.log(plan[positive])
    objective = transport_cost + epsilon * float(np.sum(plan * (logs - 1.0), dtype=np.float64))
    total = float(np.sum(plan, dtype=np.float64))
    dual = _masked_dot(a, f) + _masked_dot(b, g) - epsilon * total
    return TransportSolution(plan, (f, g), transport_cost, objective, dual, (row_err, col_err))
