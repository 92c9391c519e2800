"""Numba kernels for the dual and semi-dual oracles of quadratic and sparsity-constrained OT.

Same contract and mathematics as :mod:`optkit.kernels.numpy_sparse_ot` (see there), computed column by column in
parallel. Each column first keeps only the entries that can be nonzero (positive scores for the dual; scores above
``max - 1`` for the semi-dual, since the simplex threshold satisfies :math:`\\theta \\ge \\max_i x_i - 1`), then
selects the k largest of those with a partition (O(n + p) for p candidates) and sorts only the k kept ones for the
simplex projection (O(k log k)).
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["dual_oracle", "semi_dual_oracle"]


@nb.njit(cache=True)
def _keep_top(idx: np.ndarray, val: np.ndarray, count: int, k: int) -> int:
    """Move the k largest of ``val[:count]`` (with their ``idx``) to the front; returns how many are kept."""
    if count <= k:
        return count
    threshold = np.partition(val[:count].copy(), count - k)[count - k]
    out_idx = np.empty(k, idx.dtype)
    out_val = np.empty(k, val.dtype)
    kept = 0
    for p in range(count):  # strictly larger entries first (fewer than k of them), then ties up to k
        if val[p] > threshold:
            out_idx[kept], out_val[kept] = idx[p], val[p]
            kept += 1
    for p in range(count):
        if kept >= k:
            break
        if val[p] == threshold:
            out_idx[kept], out_val[kept] = idx[p], val[p]
            kept += 1
    idx[:kept] = out_idx[:kept]
    val[:kept] = out_val[:kept]
    return kept


def _dual_columns(alpha, beta, cost, gamma, k, rows, values, squares):
    n, m = cost.shape
    for j in nb.prange(m):
        idx = np.empty(n, np.int64)
        val = np.empty(n, cost.dtype)
        count = 0
        for i in range(n):
            s = alpha[i] + beta[j] - cost[i, j]
            if s > 0.0:
                idx[count] = i
                val[count] = s
                count += 1
        kept = _keep_top(idx, val, count, k)
        total = 0.0
        for p in range(k):
            if p < kept:
                t = val[p] / gamma
                rows[p, j] = idx[p]
                values[p, j] = t
                total += t * t
            else:
                rows[p, j] = -1
                values[p, j] = 0.0
        squares[j] = total


def _semi_dual_columns(alpha, cost, b, gamma, k, rows, values, max_omega):
    n, m = cost.shape
    for j in nb.prange(m):
        for p in range(k):
            rows[p, j] = -1
            values[p, j] = 0.0
        max_omega[j] = 0.0
        if b[j] <= 0.0:
            continue
        scale = gamma * b[j]
        top = -np.inf
        for i in range(n):
            x = (alpha[i] - cost[i, j]) / scale
            if x > top:
                top = x
        idx = np.empty(n, np.int64)
        val = np.empty(n, cost.dtype)
        count = 0
        for i in range(n):
            x = (alpha[i] - cost[i, j]) / scale
            if x > top - 1.0:
                idx[count] = i
                val[count] = x
                count += 1
        kept = _keep_top(idx, val, count, k)
        ordered = -np.sort(-val[:kept])
        cumulative = 0.0
        theta = 0.0
        for r in range(kept):
            cumulative += ordered[r]
            candidate = (cumulative - 1.0) / (r + 1)
            if ordered[r] - candidate > 0.0:
                theta = candidate
        linear = 0.0
        quadratic = 0.0
        for p in range(kept):
            u = val[p] - theta
            if u < 0.0:
                u = 0.0
            rows[p, j] = idx[p]
            values[p, j] = b[j] * u
            linear += scale * val[p] * u
            quadratic += u * u
        max_omega[j] = linear - 0.5 * scale * quadratic


# Parallel over columns only where the work pays for waking the thread pool (a few hundred microseconds).
PARALLEL_MIN_ENTRIES = 200_000
_dual_parallel = nb.njit(parallel=True, cache=True)(_dual_columns)
_dual_serial = nb.njit(cache=True)(_dual_columns)
_semi_dual_parallel = nb.njit(parallel=True, cache=True)(_semi_dual_columns)
_semi_dual_serial = nb.njit(cache=True)(_semi_dual_columns)


@nb.njit(cache=True)
def _scatter(rows, values, n):
    sums = np.zeros(n)
    k, m = rows.shape
    for j in range(m):
        for p in range(k):
            r = rows[p, j]
            if r >= 0:
                sums[r] += values[p, j]
    return sums


def dual_oracle(alpha, beta, cost, a, b, gamma, k):
    """See :func:`optkit.kernels.numpy_sparse_ot.dual_oracle`."""
    n, m = cost.shape
    rows = np.empty((k, m), np.int64)
    values = np.empty((k, m), cost.dtype)
    squares = np.empty(m)
    kernel = _dual_parallel if cost.size >= PARALLEL_MIN_ENTRIES else _dual_serial
    kernel(alpha, beta, cost, float(gamma), int(k), rows, values, squares)
    value = float(a @ alpha + b @ beta - 0.5 * gamma * squares.sum())
    return value, a - _scatter(rows, values, n), b - values.sum(axis=0), rows, values


def semi_dual_oracle(alpha, cost, a, b, gamma, k):
    """See :func:`optkit.kernels.numpy_sparse_ot.semi_dual_oracle`."""
    n, m = cost.shape
    rows = np.empty((k, m), np.int64)
    values = np.empty((k, m), cost.dtype)
    max_omega = np.empty(m)
    kernel = _semi_dual_parallel if cost.size >= PARALLEL_MIN_ENTRIES else _semi_dual_serial
    kernel(alpha, cost, b, float(gamma), int(k), rows, values, max_omega)
    value = float(a @ alpha - b @ max_omega)
    return value, a - _scatter(rows, values, n), rows, values
