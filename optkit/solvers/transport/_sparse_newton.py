"""Semismooth Newton-CG on the dual of quadratic and sparsity-constrained OT (``sparse-ot``, ``algorithm="newton"``).

Dual (our convention: primal :math:`\\langle C,P\\rangle + \\tfrac\\gamma2\\|P\\|_F^2`, :class:`~optkit.problems.
transport.Quadratic`; Lorenz, Manns & Meyer, *Quadratically regularized optimal transport*, Appl. Math. Optim. 83,
2021, arXiv:1903.01112: their dual problem for discrete measures, in which the regulariser
:math:`\\tfrac\\gamma2\\|\\pi\\|^2` gives the conjugate :math:`\\tfrac1{2\\gamma}[\\,\\cdot\\,]_+^2`; they solve it by
Gauss-Seidel and by a semismooth (quasi-)Newton method built on the generalized derivative of :math:`[\\cdot]_+`). The equation labels
here are ours: the paper's own numbering could not be checked while writing this module.

.. math::
    :label: newton-dual

    D(\\alpha,\\beta) = \\langle\\alpha,a\\rangle + \\langle\\beta,b\\rangle
        - \\frac{1}{2\\gamma}\\sum_j \\sum_{i \\in K_j} [\\alpha_i + \\beta_j - C_{ij}]_+^2,

where :math:`K_j` is all rows for :class:`Quadratic` and, for ``SparsityConstrained(k, gamma)``, the k rows with the
largest scores :math:`s_{ij} = \\alpha_i + \\beta_j - C_{ij}` of column j (Liu, Puigcerver & Blondel, ICLR 2023, §3:
:math:`\\delta_k(s) = \\tfrac{1}{2\\gamma}\\sum_{\\text{top-}k}[s_i]_+^2`). Its gradient is the marginal residual of
the plan :math:`P_{ij} = [s_{ij}]_+/\\gamma` (:math:`i \\in K_j`, zero elsewhere):

.. math::
    :label: newton-grad

    \\nabla_\\alpha D = a - P\\mathbf 1,\\qquad \\nabla_\\beta D = b - P^\\top\\mathbf 1 .

The gradient is piecewise linear and Lipschitz; a generalized (Clarke / Newton) Hessian of :math:`-D` is, with
:math:`S_{ij} = 1` where :math:`i \\in K_j` and :math:`s_{ij} > 0` (the support of P) and 0 elsewhere,

.. math::
    :label: newton-hessian

    H = \\frac{1}{\\gamma}\\begin{pmatrix} \\operatorname{diag}(S\\mathbf 1) & S \\\\ S^\\top &
        \\operatorname{diag}(S^\\top\\mathbf 1)\\end{pmatrix} \\succeq 0 ,

the Laplacian-like matrix of Lorenz, Manns & Meyer's semismooth Newton method (their generalized derivative of
:math:`(\\cdot)_+` is the 0/1 indicator of the positive set). For ``k < n`` the same formula holds with S restricted to
each column's kept top-k positive entries: on the open set where the k-th and (k+1)-th scores of every column differ,
:math:`K_j` is locally constant, :math:`\\delta_k` is the quadratic :math:`\\tfrac1{2\\gamma}\\sum_{i\\in K_j}[s_i]_+^2`
and its Hessian in :math:`(\\alpha, \\beta_j)` is :math:`\\tfrac1\\gamma` times the indicator pattern of the kept
positive entries; at a tie the kept set is one of the limiting patterns, i.e. an element of the B-subdifferential.
(For ``k < n`` the dual is nonsmooth there in the ordinary sense too: the gradient jumps, so local superlinear
convergence is only expected away from ties.)

H is singular: :math:`(\\mathbf 1_I, -\\mathbf 1_J)` is in its kernel for every connected component (I, J) of the
bipartite support graph of S, and rows or columns without support give zero rows. Each step solves the shifted
system

.. math::
    :label: newton-system

    (H + \\delta_k I)\\, d = \\nabla D(\\alpha,\\beta),\\qquad \\delta_k = \\mu\\,\\|\\nabla D\\|_1/\\gamma,

by conjugate gradients with the Jacobi preconditioner :math:`\\operatorname{diag}(H) + \\delta_k I` to the relative
residual :math:`\\eta_k = \\min(\\eta_{\\max}, \\|\\nabla D\\|_1^{1/2})` (an inexact Newton forcing term, Dembo,
Eisenstat & Steihaug 1982), so that :math:`\\delta_k \\to 0` and :math:`\\eta_k \\to 0` as the marginal error does, and
then backtracks on :math:`t \\in \\{1, 1/2, 1/4, \\dots\\}` until the Armijo condition

.. math::
    :label: newton-armijo

    D(x + t d) \\ge D(x) + \\sigma\\, t\\, \\nabla D(x)^\\top d

holds (:math:`\\sigma = 10^{-4}`); where the predicted increase :math:`t\\nabla D^\\top d` is below the rounding
level of D (64 eps times the size of the terms that cancel in it), a step that does not lower D by more than
rounding and lowers the L1 marginal error is accepted instead. The global null direction
:math:`(\\mathbf 1_n, -\\mathbf 1_m)` changes neither the plan nor D (equal masses): it is projected out of the
gradient and the direction, :math:`\\delta_k` is kept above :math:`10^{-10}\\max\\operatorname{diag}(H)`, and the
potentials are rebalanced to equal means at the start and between stages, so that they stay as small as the scores
and the scores keep their accuracy (an unbalanced drift to :math:`10^7` with scores of :math:`10^5` once held the
marginal error at :math:`10^{-9}` through cancellation). The starting point is
:math:`\\alpha = 0` (or ``init``) with :math:`\\beta` maximising D exactly for that :math:`\\alpha` (column-wise
water filling: the semi-dual's column threshold), so every column starts with nonempty support.

Continuation. From that cold start the semismooth model is poor: most rows have no support, so H has zero rows
there and the step either barely moves them (large shift) or overshoots (small shift); measured on 2-D clouds with
n = 1000 and :math:`\\gamma = 10^{-2}`, 200 steps left the marginal error near 1. The solver therefore first
solves quadratic OT at :math:`\\gamma_s = \\gamma\\,4^s`, :math:`s = S, \\dots, 1` (:math:`S \\ge 5` and large enough
that :math:`\\gamma 4^S \\ge \\max C - \\min C`, at most 30), each to an L1 marginal error of
:math:`10^{-3}` times the total mass (at most 100 steps; a stalled stage also ends), warm-starting each from the
last, then at :math:`\\gamma` itself: to ``tol`` for quadratic OT; for ``k < n`` to :math:`10^{-3}` and then the
sparsity-constrained dual to ``tol`` (:func:`schedule`). A starting point given by the caller skips the
continuation. In every stage the shift parameter :math:`\\mu` follows the ratio :math:`\\rho` of the actual to the
model increase :math:`\\tfrac12(\\nabla D^\\top d + \\delta_k\\|d\\|^2)` (:math:`\\mu \\leftarrow 4\\mu` if
:math:`\\rho < 1/4`, :math:`\\mu/2` if :math:`\\rho > 3/4`, as in Levenberg-Marquardt methods and the safe sparse
Newton method of Tang & Qiu, NeurIPS 2024). The last stage ends ``STALLED`` after 50 steps with neither a lower
marginal error nor a dual value higher by more than :math:`10^{-9}` relative.

Kernels: NumPy (dense scores, ``scipy.sparse`` matvecs) and Numba (support in compressed-column form from a screened
candidate set, rebuilt by a pass over the transposed cost only when the potentials have moved by the screening
margin; the CG matvec touches only the support, O(n + m + nnz)).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numba as nb
import numpy as np

from optkit.kernels.numba_sparse_ot import _keep_top
from optkit.solvers.loop import Step, drive
from optkit.solvers.result import Status

__all__ = ["NewtonOptions", "schedule", "solve_newton"]


logger = logging.getLogger("optkit")


class NewtonOptions:
    """Tuning constants of the Newton method (not user options; named here so that tests can refer to them)."""

    shift = 1.0             # initial mu in delta_k = mu * ||grad||_1 / gamma, eq. (newton-system)
    shift_min = 1e-6
    shift_max = 1e6
    shift_floor = 1e-10         # delta_k >= shift_floor * max(diag H): rounding in g is not amplified beyond ~1e10
    ratio_low = 0.25            # shift x4 below this ratio of actual to predicted increase, /2 above ratio_high
    ratio_high = 0.75
    forcing_max = 0.1       # eta_max
    cg_max_iter = 1000
    armijo = 1e-4           # sigma, eq. (newton-armijo)
    max_backtracks = 40
    continuation_factor = 4.0   # gamma_s = gamma * factor**s, s = stages, ..., 1
    continuation_stages = 5     # at least; more while gamma * factor**stages < max(C) - min(C)
    continuation_max_stages = 30
    stage_tol = 1e-3            # L1 marginal error (relative to the total mass) that ends an intermediate stage
    stage_max_steps = 100
    screen_margin = 1e-3        # Numba: candidate margin, relative to max(C) - min(C)
    screen_max_fraction = 0.1   # halve the margin after a screen that keeps more than this fraction of entries
    patience = 50               # final stage: STALLED after this many steps without a new lowest marginal error


# --------------------------------------------------------------------------------------------------- Numba kernels


@nb.njit(cache=True)
def _screen_numba(alpha, beta, cost_t, margin, capacity):
    """Candidates of the support: the entries with score :math:`s_{ij} > -\\text{margin}`, by column.

    From any point within sup-norm distance :math:`\\|\\Delta\\alpha\\|_\\infty + \\|\\Delta\\beta\\|_\\infty <` margin
    of this one, every other score stays negative, so a support scan over the candidates is exact.
    """
    m, n = cost_t.shape
    cand_ptr = np.empty(m + 1, np.int64)
    cand_rows = np.empty(capacity, np.int64)
    cand_cost = np.empty(capacity)
    ptr = 0
    cand_ptr[0] = 0
    for j in range(m):
        threshold = beta[j] + margin
        costs = cost_t[j]
        if ptr + n > cand_rows.shape[0]:
            grown = max(2 * cand_rows.shape[0], ptr + n)
            new_rows = np.empty(grown, np.int64)
            new_cost = np.empty(grown)
            new_rows[:ptr] = cand_rows[:ptr]
            new_cost[:ptr] = cand_cost[:ptr]
            cand_rows, cand_cost = new_rows, new_cost
        for i in range(n):
            if alpha[i] + threshold > costs[i]:
                cand_rows[ptr] = i
                cand_cost[ptr] = costs[i]
                ptr += 1
        cand_ptr[j + 1] = ptr
    return cand_ptr, cand_rows[:ptr], cand_cost[:ptr]


@nb.njit(cache=True)
def _support_numba(alpha, beta, cand_ptr, cand_rows, cand_cost, gamma, k, capacity):
    """Support of the plan in compressed-column form, the plan's values and :math:`\\sum P_{ij}^2`, scanning the
    candidates of :func:`_screen_numba` (rows in increasing order per column, as a full scan would visit them)."""
    n = alpha.shape[0]
    m = beta.shape[0]
    col_ptr = np.empty(m + 1, np.int64)
    rows = np.empty(capacity, np.int64)
    vals = np.empty(capacity)
    row_sum = np.zeros(n)
    row_count = np.zeros(n)
    col_sum = np.empty(m)
    col_count = np.empty(m)
    idx = np.empty(n, np.int64)
    val = np.empty(n)
    ptr = 0
    squares = 0.0
    col_ptr[0] = 0
    for j in range(m):
        bj = beta[j]
        count = 0
        for p in range(cand_ptr[j], cand_ptr[j + 1]):
            i = cand_rows[p]
            s = alpha[i] + bj - cand_cost[p]
            if s > 0.0:
                idx[count] = i
                val[count] = s
                count += 1
        if count > k:
            count = _keep_top(idx, val, count, k)
        if ptr + count > rows.shape[0]:
            grown = max(2 * rows.shape[0], ptr + count)
            new_rows = np.empty(grown, np.int64)
            new_vals = np.empty(grown)
            new_rows[:ptr] = rows[:ptr]
            new_vals[:ptr] = vals[:ptr]
            rows, vals = new_rows, new_vals
        total = 0.0
        for p in range(count):
            i = idx[p]
            t = val[p] / gamma
            rows[ptr] = i
            vals[ptr] = t
            row_sum[i] += t
            row_count[i] += 1.0
            total += t
            squares += t * t
            ptr += 1
        col_sum[j] = total
        col_count[j] = count
        col_ptr[j + 1] = ptr
    return col_ptr, rows[:ptr], vals[:ptr], row_sum, row_count, col_sum, col_count, squares


@nb.njit(cache=True)
def _matvec_numba(col_ptr, rows, diagonal, inv_gamma, v, out):
    """``out = (H + shift I) v`` with ``diagonal = diag(H) + shift`` (eq. newton-hessian), O(n + m + nnz)."""
    n = diagonal.shape[0] - (col_ptr.shape[0] - 1)
    m = col_ptr.shape[0] - 1
    for i in range(n):
        out[i] = diagonal[i] * v[i]
    for j in range(m):
        vb = v[n + j]
        acc = diagonal[n + j] * vb
        for p in range(col_ptr[j], col_ptr[j + 1]):
            i = rows[p]
            out[i] += inv_gamma * vb
            acc += inv_gamma * v[i]
        out[n + j] = acc


@nb.njit(cache=True)
def _pcg_numba(col_ptr, rows, diagonal, inv_gamma, rhs, rtol, max_iter):
    """Jacobi-preconditioned CG for ``(H + shift I) x = rhs`` (Saad, *Iterative Methods*, Alg. 9.1), loops fused."""
    size = rhs.shape[0]
    inverse = 1.0 / diagonal
    x = np.zeros(size)
    r = rhs.copy()
    z = r * inverse
    p = z.copy()
    q = np.empty(size)
    rz = 0.0
    rr = 0.0
    for i in range(size):
        rz += r[i] * z[i]
        rr += r[i] * r[i]
    target = rtol * rtol * rr
    it = 0
    while it < max_iter and rr > target:
        _matvec_numba(col_ptr, rows, diagonal, inv_gamma, p, q)
        pq = 0.0
        for i in range(size):
            pq += p[i] * q[i]
        if not pq > 0.0:
            break
        step = rz / pq
        rz_new = 0.0
        rr = 0.0
        for i in range(size):
            x[i] += step * p[i]
            ri = r[i] - step * q[i]
            r[i] = ri
            zi = ri * inverse[i]
            z[i] = zi
            rz_new += ri * zi
            rr += ri * ri
        ratio = rz_new / rz
        for i in range(size):
            p[i] = z[i] + ratio * p[i]
        rz = rz_new
        it += 1
    return x, it


# --------------------------------------------------------------------------------------------------- backends


class _Support:
    """The plan at one dual point in compressed-column form, with the dual value and gradient."""

    __slots__ = ("col_count", "col_ptr", "error", "grad", "magnitude", "row_count", "rows", "vals", "value")

    def __init__(self, col_ptr, rows, vals, row_sum, row_count, col_sum, col_count, squares, alpha, beta, a, b,
                 gamma):
        self.col_ptr, self.rows, self.vals = col_ptr, rows, vals
        self.row_count, self.col_count = row_count, col_count
        # eq. (newton-dual): (1 / 2 gamma) sum s^2 = (gamma / 2) sum P^2
        self.value = float(a @ alpha + b @ beta - 0.5 * gamma * squares)
        # the size of the terms that cancel in the value: its rounding error is ~eps times this
        self.magnitude = float(np.abs(a) @ np.abs(alpha) + np.abs(b) @ np.abs(beta) + 0.5 * gamma * squares)
        self.grad = np.concatenate([a - row_sum, b - col_sum])  # eq. (newton-grad)
        self.error = float(np.abs(self.grad).sum())

    def padded(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``(rows, values)`` (width, m) format of :mod:`optkit.kernels.numpy_sparse_ot` (``-1`` = no entry)."""
        counts = np.diff(self.col_ptr)
        width = max(int(counts.max()) if m else 0, 1)
        rows = np.full((width, m), -1, np.int64)
        values = np.zeros((width, m))
        columns = np.repeat(np.arange(m), counts)
        slots = np.arange(self.rows.size) - np.repeat(self.col_ptr[:-1], counts)
        rows[slots, columns] = self.rows
        values[slots, columns] = self.vals
        return rows, values


class _NumbaBackend:
    """Support scans over a screened candidate set (exact; see :func:`_screen_numba`), CG on the support.

    The candidates are the entries within ``margin`` of being positive at a reference point; a full pass over the
    cost rebuilds them whenever an evaluation point is ``margin`` or farther (in
    :math:`\\|\\Delta\\alpha\\|_\\infty + \\|\\Delta\\beta\\|_\\infty`) from the reference. Near the solution the steps are
    small, so most scans touch ~1% of the entries instead of all n m.
    """

    def __init__(self, cost: np.ndarray, options: type = NewtonOptions) -> None:
        self.cost_t = np.ascontiguousarray(cost.T)
        self.capacity = 4 * (cost.shape[0] + cost.shape[1])
        spread = float(cost.max() - cost.min()) if cost.size else 0.0
        self.margin = options.screen_margin * spread if spread > 0 else 1.0
        self.max_candidates = options.screen_max_fraction * cost.size
        self.reference = None
        self.candidates = None
        self.screens = 0

    def support(self, alpha, beta, a, b, gamma, k) -> _Support:
        if self.reference is None or (np.abs(alpha - self.reference[0]).max(initial=0.0)
                                      + np.abs(beta - self.reference[1]).max(initial=0.0)) >= self.margin:
            self.candidates = _screen_numba(alpha, beta, self.cost_t, self.margin,
                                            max(self.capacity, 4 * self.cost_t.shape[0]))
            self.reference = (alpha.copy(), beta.copy())
            self.screens += 1
            if self.candidates[1].size > self.max_candidates:
                self.margin *= 0.5  # too many candidates to pay off: screen tighter next time
        parts = _support_numba(alpha, beta, *self.candidates, gamma, k, self.capacity)
        self.capacity = max(self.capacity, 2 * parts[1].size)
        return _Support(*parts, alpha, beta, a, b, gamma)

    @staticmethod
    def solve(state: _Support, rhs, gamma, shift, rtol, max_iter):
        diagonal = np.concatenate([state.row_count, state.col_count]) / gamma + shift
        return _pcg_numba(state.col_ptr, state.rows, diagonal, 1.0 / gamma, rhs, rtol, max_iter)


class _NumpyBackend:
    def __init__(self, cost: np.ndarray) -> None:
        self.cost = cost

    def support(self, alpha, beta, a, b, gamma, k) -> _Support:
        n, m = self.cost.shape
        scores = alpha[:, None] + beta[None, :] - self.cost
        if k < n:  # keep each column's top-k scores (argpartition, O(n) per column)
            kept = np.argpartition(scores, n - k, axis=0)[n - k:]
            masked = np.full_like(scores, -1.0)
            np.put_along_axis(masked, kept, np.take_along_axis(scores, kept, axis=0), axis=0)
            scores = masked
        positive_t = scores.T > 0.0
        columns, rows = np.nonzero(positive_t)  # column-major order
        vals = scores.T[positive_t] / gamma
        col_count = np.bincount(columns, minlength=m).astype(np.float64)
        col_ptr = np.concatenate([[0], np.cumsum(col_count.astype(np.int64))])
        row_sum = np.bincount(rows, weights=vals, minlength=n)
        row_count = np.bincount(rows, minlength=n).astype(np.float64)
        col_sum = np.bincount(columns, weights=vals, minlength=m)
        return _Support(col_ptr, rows.astype(np.int64), vals, row_sum, row_count, col_sum, col_count,
                        float(vals @ vals), alpha, beta, a, b, gamma)

    @staticmethod
    def solve(state: _Support, rhs, gamma, shift, rtol, max_iter):
        from scipy import sparse

        n, m = state.row_count.size, state.col_count.size
        pattern = sparse.csc_matrix((np.ones(state.rows.size), state.rows, state.col_ptr), shape=(n, m))
        pattern_t = pattern.T.tocsr()
        inv_gamma = 1.0 / gamma
        diagonal = np.concatenate([state.row_count, state.col_count]) * inv_gamma + shift

        def matvec(v):  # eq. (newton-hessian) plus the shift
            return diagonal * v + inv_gamma * np.concatenate([pattern @ v[n:], pattern_t @ v[:n]])

        return _pcg(matvec, diagonal, rhs, rtol, max_iter)


def _pcg(matvec: Callable[[np.ndarray], np.ndarray], diagonal: np.ndarray, rhs: np.ndarray, rtol: float,
         max_iter: int) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned CG, the NumPy twin of :func:`_pcg_numba`."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    z = r / diagonal
    p = z.copy()
    rz = float(r @ z)
    target = rtol * float(np.linalg.norm(rhs))
    it = 0
    while it < max_iter and float(np.linalg.norm(r)) > target:
        q = matvec(p)
        pq = float(p @ q)
        if not pq > 0.0:
            break
        step = rz / pq
        x += step * p
        r -= step * q
        z = r / diagonal
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
    return x, it


def _column_fill(alpha: np.ndarray, cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int,
                 backend: str) -> np.ndarray:
    """:math:`\\beta = \\arg\\max_\\beta D(\\alpha, \\beta)`: per column, the water level with
    :math:`\\sum_{i \\in K_j}[\\alpha_i + \\beta_j - C_{ij}]_+ = \\gamma b_j`.

    This is the semi-dual's inner maximisation: the semi-dual oracle's plan column :math:`b_j u_j` has
    :math:`\\gamma P_{ij} = \\alpha_i + \\beta_j - C_{ij}` on its support, which gives :math:`\\beta_j`.
    Columns with :math:`b_j = 0` get the level at which their largest score is zero.
    """
    if backend == "numba":
        from optkit.kernels import numba_sparse_ot as kernels
    else:
        from optkit.kernels import numpy_sparse_ot as kernels
    _, _, rows, values = kernels.semi_dual_oracle(alpha, cost, a, b, gamma, k)
    m = cost.shape[1]
    best = np.argmax(np.where(rows >= 0, values, -np.inf), axis=0)
    columns = np.arange(m)
    top_rows = rows[best, columns]
    beta = np.empty(m)
    filled = (top_rows >= 0) & (b > 0)
    beta[filled] = (gamma * values[best, columns] + cost[top_rows, columns] - alpha[top_rows])[filled]
    empty = ~filled
    if np.any(empty):
        beta[empty] = np.min(cost[:, empty] - alpha[:, None], axis=0)
    return beta


# --------------------------------------------------------------------------------------------------- the solver


def _deflate(vector: np.ndarray, n: int) -> np.ndarray:
    """Remove the component along :math:`(\\mathbf 1_n, -\\mathbf 1_m)`."""
    coefficient = (vector[:n].sum() - vector[n:].sum()) / vector.size
    out = vector.copy()
    out[:n] -= coefficient
    out[n:] += coefficient
    return out


def _balance(x: np.ndarray, n: int) -> np.ndarray:
    """:math:`(\\alpha + c, \\beta - c)` with equal means: the same plan and value (equal masses), and potentials no
    larger than the scores need, so that the scores :math:`\\alpha_i + \\beta_j - C_{ij}` keep their accuracy."""
    centre = 0.5 * (float(np.mean(x[n:])) - float(np.mean(x[:n])))
    out = x.copy()
    out[:n] += centre
    out[n:] -= centre
    return out


def schedule(gamma: float, k: int, n: int, tol: float, mass: float, continuation: bool, spread: float = 0.0,
             options: type = NewtonOptions) -> list[tuple[float, int, float]]:
    """The stages ``(gamma_s, k_s, tol_s)``: quadratic OT at :math:`\\gamma\\,f^{S}, \\dots, \\gamma f, \\gamma`, then
    (for ``k < n``) the sparsity-constrained dual at :math:`\\gamma` to ``tol``.

    :math:`S` is ``continuation_stages`` or more: enough for :math:`\\gamma f^S` to reach ``spread``
    (:math:`\\max C - \\min C`), the scale at which the cold start is easy for Newton.
    """
    stages = []
    stage_tol = max(tol, options.stage_tol * mass)
    if continuation:
        count = options.continuation_stages
        if spread > gamma * options.continuation_factor ** count:
            count = min(math.ceil(math.log(spread / gamma) / math.log(options.continuation_factor)),
                        options.continuation_max_stages)
        stages += [(gamma * options.continuation_factor ** s, n, stage_tol) for s in range(count, 0, -1)]
    if k < n:
        stages.append((gamma, n, stage_tol))
    stages.append((gamma, k, tol))
    return stages


def solve_newton(cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int, x0: np.ndarray | None, *,
                 backend: str, tol: float, max_iter: int, time_limit: float | None, callback: Any, progress: bool,
                 best: dict[str, Any], current: Callable[[], Any], options: type = NewtonOptions,
                 kernels: Any = None):
    """Run the semismooth Newton method under :func:`optkit.solvers.loop.drive`.

    ``x0`` is ``None`` (start from :math:`\\alpha = 0` and continue in :math:`\\gamma`), ``alpha`` (size n) or
    ``(alpha, beta)`` concatenated (size n + m; no continuation from a given point). ``best`` (updated in place)
    holds the iterate ``x = (alpha, beta)``, the dual ``value``, the plan in the ``(rows, values)`` format of
    :mod:`optkit.kernels.numpy_sparse_ot` and the L1 marginal ``error``; ``current()`` builds the callback's iterate
    from it. ``kernels`` replaces the support scans and CG solves of ``backend`` (the restricted problems of
    :mod:`optkit.solvers.transport._sparse_polish` pass theirs). Returns ``(outcome, counts)``.
    """
    n, m = cost.shape
    if kernels is None:
        kernels = _NumbaBackend(cost, options) if backend == "numba" else _NumpyBackend(cost)
    spread = float(cost.max() - cost.min()) if cost.size else 0.0
    stages = schedule(gamma, k, n, tol, float(a.sum()), x0 is None, spread if math.isfinite(spread) else 0.0,
                      options)
    stage_gamma, stage_k, _ = stages[0]
    alpha = np.zeros(n) if x0 is None else np.array(x0[:n], dtype=np.float64)
    if x0 is None or x0.size == n:
        beta = _column_fill(alpha, cost, a, b, stage_gamma, stage_k, backend)
    else:
        beta = np.array(x0[n:], dtype=np.float64)
    if x0 is None:
        balanced = _balance(np.concatenate([alpha, beta]), n)
        alpha, beta = balanced[:n], balanced[n:]
    state = kernels.support(alpha, beta, a, b, stage_gamma, stage_k)
    if not math.isfinite(state.value):
        raise ValueError("sparse-ot (newton): the dual value at the starting point is not finite; check init and "
                         "the cost")
    holder = {"x": np.concatenate([alpha, beta]), "state": state, "mu": options.shift, "stage": 0,
              "stage_steps": 0}
    counts = {"newton_steps": 0, "oracle_calls": 1, "cg_iterations": 0, "backtracks": 0}

    def publish() -> None:
        if holder["stage"] == len(stages) - 1:
            support = holder["state"]
            rows, values = support.padded(m)
            best.update(x=holder["x"], value=support.value, rows=rows, values=values, error=support.error)

    def advance(used: dict[str, int]) -> None:
        """Move to the next stage while the current one is done (its tolerance met, stalled or out of steps)."""
        while holder["stage"] < len(stages) - 1:
            _, _, stage_tol = stages[holder["stage"]]
            if holder["state"].error > stage_tol and holder["stage_steps"] < options.stage_max_steps \
                    and not holder.get("stalled"):
                return
            holder["stage"] += 1
            holder["stage_steps"] = 0
            holder["stalled"] = False
            stage_gamma, stage_k, _ = stages[holder["stage"]]
            x = _balance(holder["x"], n)
            holder["x"] = x
            holder["state"] = kernels.support(x[:n], x[n:], a, b, stage_gamma, stage_k)
            used["oracle_calls"] += 1

    def residuals() -> dict[str, float]:
        return {"marginal_error": holder["state"].error, "stage_gamma": stages[holder["stage"]][0]}

    def sync_target() -> None:
        """During the continuation, evaluate the current potentials on the target problem (for a callback's
        iterate and for a run that stops before the last stage)."""
        if holder["stage"] < len(stages) - 1 and holder.get("synced") is not holder["x"]:
            x = holder["x"]
            target = kernels.support(x[:n], x[n:], a, b, gamma, k)
            counts["oracle_calls"] += 1
            rows, values = target.padded(m)
            best.update(x=x, value=target.value, rows=rows, values=values, error=target.error)
            holder["synced"] = x

    advance(counts)
    publish()
    sync_target()

    def step(budget: int) -> Step:
        stage_gamma, stage_k, _ = stages[holder["stage"]]
        final = holder["stage"] == len(stages) - 1
        x, state = holder["x"], holder["state"]
        # (1_n, -1_m) is in the kernel of H and leaves D unchanged (equal masses); the gradient is orthogonal to it
        # up to rounding, which a tiny shift would amplify into a drift of both potentials: project it out.
        gradient = _deflate(state.grad, n)
        scale = float(max(state.row_count.max(initial=0.0), state.col_count.max(initial=0.0))) / stage_gamma
        shift = max(holder["mu"] * state.error / stage_gamma, options.shift_floor * scale)
        rtol = min(options.forcing_max, math.sqrt(state.error))
        direction, cg_iterations = kernels.solve(state, gradient, stage_gamma, shift, rtol, options.cg_max_iter)
        direction = _deflate(direction, n)
        gradient = state.grad
        slope = float(gradient @ direction)
        used = {"oracle_calls": 0, "cg_iterations": int(cg_iterations), "backtracks": 0, "newton_steps": 1}
        if not (slope > 0.0 and np.all(np.isfinite(direction))):  # fall back to the preconditioned gradient
            direction = gradient / (np.concatenate([state.row_count, state.col_count]) / stage_gamma + shift)
            slope = float(gradient @ direction)
        # model increase of m(d) = g.d - d'Hd/2 with (H + shift I) d ~= g: d'Hd ~= g.d - shift |d|^2
        predicted = 0.5 * (slope + shift * float(direction @ direction))
        t = 1.0
        rounding = 64 * np.finfo(float).eps * (state.magnitude + 1.0)
        accepted = None
        for _ in range(options.max_backtracks):
            trial_x = x + t * direction
            trial = kernels.support(trial_x[:n], trial_x[n:], a, b, stage_gamma, stage_k)
            used["oracle_calls"] += 1
            if t == 1.0:  # Levenberg-Marquardt-type update of the shift from the model's accuracy
                ratio = (trial.value - state.value) / predicted if math.isfinite(trial.value) else -np.inf
                if ratio < options.ratio_low:
                    holder["mu"] = min(4.0 * holder["mu"], options.shift_max)
                elif ratio > options.ratio_high:
                    holder["mu"] = max(0.5 * holder["mu"], options.shift_min)
            if math.isfinite(trial.value):
                if t * slope > rounding:
                    if trial.value >= state.value + options.armijo * t * slope:
                        accepted = (trial_x, trial)
                        break
                elif trial.value >= state.value - rounding and trial.error < state.error:
                    accepted = (trial_x, trial)  # values cannot resolve the increase: the marginal error decides
                    break
            used["backtracks"] += 1
            t *= 0.5
        holder["stage_steps"] += 1
        if accepted is None:
            if not final:
                holder["stalled"] = True
                advance(used)
                publish()
                return Step(1, residuals(), used)
            return Step(1, residuals(), used, status=Status.STALLED,
                        message=f"sparse-ot (newton): the Armijo line search found no ascent step along the Newton "
                        f"direction with L1 marginal error {state.error:.3e} > tol = {tol:g}. " + Status.STALLED.advice
                        + (" For k < n the dual is nonsmooth where column scores tie, and the relaxation may have a "
                           "gap." if k < n else ""))
        trial_x, trial = accepted
        if not np.all(np.isfinite(trial_x)) or not np.all(np.isfinite(trial.grad)):
            return Step(1, residuals(), used, status=Status.NUMERICAL_ERROR,
                        message="sparse-ot (newton): a non-finite iterate appeared; the last finite potentials are "
                        "returned. Increase gamma or rescale the cost.")
        holder["x"], holder["state"] = trial_x, trial
        if final:  # progress: a lower marginal error, or a dual value higher by more than rounding-level noise
            if trial.error < holder.get("lowest", np.inf) or trial.value > holder.get("anchor", -np.inf) + 1e-9 * (
                    abs(trial.value) + 1.0):
                holder["lowest"] = min(trial.error, holder.get("lowest", np.inf))
                holder["anchor"], holder["since"] = trial.value, 0
            else:
                holder["since"] = holder.get("since", 0) + 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("sparse-ot newton: gamma=%.3g k=%d t=%.3g D=%.12g error=%.3e mu=%.3g cg=%d nnz=%d",
                         stage_gamma, stage_k, t, trial.value, trial.error, holder["mu"], cg_iterations,
                         trial.rows.size)
        advance(used)
        publish()
        if final and holder["since"] >= options.patience and trial.error > tol:
            return Step(1, residuals(), used, status=Status.STALLED,
                        message=f"sparse-ot (newton): neither a lower marginal error nor a higher dual value (by 1e-9 "
                        f"relative) in {options.patience} Newton steps (lowest error {holder['lowest']:.3e} > "
                        f"tol = {tol:g}). "
                        + Status.STALLED.advice
                        + (" For k < n the dual is nonsmooth where column scores tie: at its maximiser the plan read "
                           "off the potentials can miss the marginals (a relaxation gap)." if k < n else ""))
        return Step(1, residuals(), used)

    outcome = drive(
        step,
        converged=lambda r: holder["stage"] == len(stages) - 1 and r["marginal_error"] <= tol,
        max_iter=max_iter,
        method="sparse-ot",
        time_limit=time_limit,
        callback=callback,
        progress=progress,
        current=lambda: (sync_target(), current())[1],
        initial=residuals(),
        stopping_rule=f"L1 marginal error <= {tol:g}",
    )
    sync_target()
    for key, value in outcome.counts.items():
        counts[key] = counts.get(key, 0) + value
    counts["iterations"] = outcome.nit
    if hasattr(kernels, "screens"):
        counts["screens"] = kernels.screens
    return outcome, counts
