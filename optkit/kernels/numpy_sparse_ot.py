"""Dual and semi-dual oracles of quadratically regularized and sparsity-constrained OT, in NumPy.

The readable reference the Numba kernels (:mod:`optkit.kernels.numba_sparse_ot`) are tested against. Both oracles
return the plan in a column-sparse format: ``rows`` (k, m) holds the row index of each kept entry of each column
(``-1`` where a column has fewer than k entries) and ``values`` (k, m) its value, so a plan with at most k nonzeros
per column is never stored densely inside the solver loop.

Notation (Liu, Puigcerver & Blondel, ICLR 2023, §3): columns :math:`j` of the plan are the targets, ``k`` bounds the
nonzeros of each column, :math:`\\gamma > 0` weighs :math:`\\tfrac{\\gamma}{2}\\|P\\|_F^2`; ``k = n`` is quadratic OT.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dual_oracle", "semi_dual_oracle", "project_simplex_columns", "scatter_rows"]


def scatter_rows(rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Row sums :math:`P\\mathbf 1` of a column-sparse plan."""
    mask = rows >= 0
    return np.bincount(rows[mask], weights=values[mask], minlength=n)


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Row indices (k, m) of the k largest entries of each column: O(n) per column by ``argpartition``."""
    n = scores.shape[0]
    if k >= n:
        return np.broadcast_to(np.arange(n)[:, None], scores.shape).copy()
    return np.argpartition(scores, n - k, axis=0)[n - k:]


def dual_oracle(
    alpha: np.ndarray, beta: np.ndarray, cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Value and gradient of the (concave) dual and the plan it defines.

    .. math::

        D(\\alpha, \\beta) = \\langle \\alpha, a\\rangle + \\langle \\beta, b\\rangle
            - \\sum_j \\delta_k(\\alpha + \\beta_j\\mathbf 1 - c_j),\\qquad
        \\delta_k(s) = \\max_{t \\ge 0,\\, \\|t\\|_0 \\le k} \\langle s, t\\rangle - \\tfrac{\\gamma}{2}\\|t\\|^2
            = \\tfrac{1}{2\\gamma}\\sum_{i \\in \\text{top-}k(s)} [s_i]_+^2,

    maximised by :math:`t_j = \\tfrac{1}{\\gamma}\\,\\text{top-}k([s]_+)` (the plan's column ``j``), so
    :math:`\\nabla_\\alpha D = a - P\\mathbf 1` and :math:`\\nabla_\\beta D = b - P^\\top\\mathbf 1`.

    Returns ``(value, grad_alpha, grad_beta, rows, values)``.
    """
    n, m = cost.shape
    scores = alpha[:, None] + beta[None, :] - cost
    rows = _top_k_rows(scores, k)
    kept = np.maximum(np.take_along_axis(scores, rows, axis=0), 0.0) / gamma
    value = float(a @ alpha + b @ beta - 0.5 * gamma * np.sum(kept * kept))
    grad_alpha = a - scatter_rows(rows, kept, n)
    grad_beta = b - kept.sum(axis=0)
    return value, grad_alpha, grad_beta, rows, kept


def project_simplex_columns(values: np.ndarray) -> np.ndarray:
    """Euclidean projection of each column of ``values`` (k, m) onto the probability simplex.

    Sort-based threshold (Held, Wolfe & Crowder 1974; Duchi et al. 2008, Fig. 1):
    :math:`u = [v - \\theta]_+` with :math:`\\theta = (\\sum_{i \\le \\rho} v_{(i)} - 1)/\\rho` and :math:`\\rho` the
    largest index with :math:`v_{(\\rho)} > (\\sum_{i \\le \\rho} v_{(i)} - 1)/\\rho`.
    """
    k = values.shape[0]
    ordered = -np.sort(-values, axis=0)
    cumulative = np.cumsum(ordered, axis=0) - 1.0
    index = np.arange(1, k + 1)[:, None]
    support = ordered - cumulative / index > 0
    rho = k - np.argmax(support[::-1], axis=0)  # the last index where the condition holds
    theta = cumulative[rho - 1, np.arange(values.shape[1])] / rho
    return np.maximum(values - theta[None, :], 0.0)


def semi_dual_oracle(
    alpha: np.ndarray, cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Value and gradient of the (concave) semi-dual and the plan it defines.

    .. math::

        S(\\alpha) = \\langle \\alpha, a\\rangle - \\sum_j b_j\\, \\max\\nolimits_{\\Omega_j}(\\alpha - c_j),\\qquad
        \\max\\nolimits_{\\Omega_j}(s) = \\max_{u \\in \\Delta^n,\\, \\|u\\|_0 \\le k}
            \\langle s, u\\rangle - \\tfrac{\\gamma b_j}{2}\\|u\\|^2,

    maximised by the k-sparse simplex projection :math:`u_j = P_{\\Delta \\cap \\{\\|u\\|_0 \\le k\\}}(s / (\\gamma b_j))`
    (Kyrillidis et al., ICML 2013: keep the k largest entries and project them onto the simplex). The plan's
    column is :math:`b_j u_j` (its column marginal is exact) and :math:`\\nabla S = a - P\\mathbf 1`. Columns with
    :math:`b_j = 0` are empty.

    Returns ``(value, grad_alpha, rows, values)``.
    """
    n, m = cost.shape
    active = b > 0
    safe_b = np.where(active, b, 1.0)
    scaled = (alpha[:, None] - cost) / (gamma * safe_b[None, :])
    rows = _top_k_rows(scaled, k)
    u = project_simplex_columns(np.take_along_axis(scaled, rows, axis=0))
    kept_scores = np.take_along_axis(alpha[:, None] - cost, rows, axis=0)
    max_omega = np.sum(kept_scores * u, axis=0) - 0.5 * gamma * safe_b * np.sum(u * u, axis=0)
    values = u * np.where(active, b, 0.0)[None, :]
    value = float(a @ alpha - np.sum(np.where(active, b * max_omega, 0.0)))
    grad_alpha = a - scatter_rows(rows, values, n)
    return value, grad_alpha, rows, values
