r"""Sets of the stacked bilevel variable :math:`u = (x, y)` with projections, for the coupled feasible set
:math:`C = \{(x, y) \in X \times Y : g(x, y) \le 0\}` that LV-HBA and V-PBGD project onto.

* :class:`HalfSpacesBox`: :math:`\{u : \ell \le u \le h,\ a_r^\top u \le b_r\}` where the rows :math:`a_r` have
  pairwise disjoint supports, i.e. a Cartesian product of (half-space :math:`\cap` box) blocks and a box. The
  projection is exact and closed form: per block a one-dimensional piecewise-linear root search over the sorted
  breakpoints (no iterative solver). This covers the coupled SVM set :math:`0 \le \xi_i \le c_i`.
* :class:`CvxpySet`: any convex set described by CVXPY constraints; the projection solves the QP
  :math:`\min_u \|u - p\|^2` with :math:`p` a CVXPY parameter (the problem is compiled once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from optkit.problems.sets import ConvexSet

__all__ = ["HalfSpacesBox", "CvxpySet"]


class HalfSpacesBox(ConvexSet):
    r"""The set :math:`\{u \in \mathbb{R}^n : \ell \le u \le h,\ A u \le b\}` with rows of :math:`A` supported on
    pairwise disjoint coordinate blocks (a product of half-space-and-box blocks and a box).

    For a row :math:`a` on block :math:`S` the projection of :math:`v_S` is (KKT)

    .. math::

        u_S = \operatorname{clip}(v_S - \tau a,\ \ell_S, h_S), \qquad
        \tau = 0 \text{ if } a^\top\operatorname{clip}(v_S) \le b, \text{ else the root of }
        \varphi(\tau) = a^\top \operatorname{clip}(v_S - \tau a) = b,

    :math:`\varphi` being nonincreasing and piecewise linear with breakpoints :math:`(v_j - \ell_j)/a_j`,
    :math:`(v_j - h_j)/a_j`; the root is found exactly by evaluating :math:`\varphi` at the sorted breakpoints and
    interpolating linearly on the bracketing piece. Vectorised over rows.

    Parameters
    ----------
    A : array_like, shape (r, n)
        Rows with disjoint supports (checked).
    b : array_like, shape (r,)
    lower, upper : float or array_like of shape (n,)
        Box bounds (may be infinite).

    Raises
    ------
    ValueError
        Overlapping row supports, or an empty set (some block has no point of the box with :math:`a^\top u \le b`).

    Examples
    --------
    >>> import numpy as np
    >>> s = HalfSpacesBox([[-1.0, 1.0]], [0.0], lower=[-np.inf, 0.0], upper=np.inf)  # 0 <= xi <= c
    >>> s.project(np.array([0.0, 1.0]))
    array([0.5, 0.5])
    """

    __slots__ = ("_A", "_b", "_lower", "_upper", "_index", "_coef", "_mask")

    batched = False

    def __init__(self, A: Any, b: Any, *, lower: Any = -np.inf, upper: Any = np.inf) -> None:
        A = np.array(A, dtype=np.float64)
        b = np.array(b, dtype=np.float64).reshape(-1)
        if A.ndim != 2 or A.shape[0] != b.size:
            raise ValueError(f"A must be 2-D with one row per entry of b, got shapes {A.shape} and {b.shape}")
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
            raise ValueError("A and b must be finite")
        n = A.shape[1]
        super().__init__(n)
        lower = np.broadcast_to(np.array(lower, dtype=np.float64), (n,)).copy()
        upper = np.broadcast_to(np.array(upper, dtype=np.float64), (n,)).copy()
        if np.any(lower > upper):
            raise ValueError("lower must not exceed upper")
        support = A != 0
        if np.any(support.sum(axis=0) > 1):
            j = int(np.flatnonzero(support.sum(axis=0) > 1)[0])
            raise ValueError(f"rows of A must have disjoint supports; coordinate {j} appears in several rows")
        width = max(1, int(support.sum(axis=1).max(initial=1)))
        r = A.shape[0]
        index = np.zeros((r, width), dtype=np.intp)
        coef = np.zeros((r, width))
        mask = np.zeros((r, width), dtype=bool)
        for i in range(r):
            cols = np.flatnonzero(support[i])
            index[i, : cols.size], coef[i, : cols.size], mask[i, : cols.size] = cols, A[i, cols], True
        # emptiness: the smallest a^T u over the box must be <= b
        low_part = np.where(coef > 0, lower[index], upper[index])
        smallest = np.where(mask, coef * np.where(mask, low_part, 0.0), 0.0).sum(axis=1)
        bad = np.flatnonzero(smallest > b + 1e-12 * np.maximum(1.0, np.abs(b)))
        if bad.size:
            raise ValueError(f"the set is empty: row {int(bad[0])} of A u <= b cannot hold inside the box")
        for name, value in (("_A", A), ("_b", b), ("_lower", lower), ("_upper", upper), ("_index", index),
                            ("_coef", coef), ("_mask", mask)):
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            self._set(name, value)

    @property
    def A(self) -> np.ndarray:
        return self._A

    @property
    def b(self) -> np.ndarray:
        return self._b

    def _project(self, v: np.ndarray) -> np.ndarray:
        lo, hi = self._lower, self._upper
        u = np.clip(v, lo, hi)
        if self._b.size == 0:
            return u
        idx, a, mask = self._index, self._coef, self._mask
        vb, lb, hb = v[idx], lo[idx], hi[idx]
        phi0 = np.where(mask, a * np.clip(vb, lb, hb), 0.0).sum(axis=1)
        rows = np.flatnonzero(phi0 > self._b)
        if rows.size == 0:
            return u
        vb, lb, hb, a, mask, b = vb[rows], lb[rows], hb[rows], a[rows], mask[rows], self._b[rows]
        safe = np.where(mask & (a != 0), a, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            t1, t2 = (vb - lb) / safe, (vb - hb) / safe
        breaks = np.concatenate([t1, t2, np.zeros((rows.size, 1))], axis=1)
        valid = np.concatenate([mask, mask, np.ones((rows.size, 1), dtype=bool)], axis=1)
        breaks = np.where(valid & np.isfinite(breaks) & (breaks >= 0), breaks, np.inf)
        breaks = np.sort(breaks, axis=1)

        def phi(tau: np.ndarray) -> np.ndarray:  # tau: (rows, k) -> (rows, k)
            moved = np.clip(vb[:, None, :] - tau[:, :, None] * a[:, None, :], lb[:, None, :], hb[:, None, :])
            return np.where(mask[:, None, :], a[:, None, :] * moved, 0.0).sum(axis=2)

        finite_breaks = np.where(np.isfinite(breaks), breaks, 0.0)
        values = np.where(np.isfinite(breaks), phi(finite_breaks), -np.inf)
        # first breakpoint where phi <= b (phi is nonincreasing); if none, extrapolate past the last one
        below = values <= b[:, None]
        has = below.any(axis=1)
        k = np.where(has, np.argmax(below, axis=1), 0)
        rr = np.arange(rows.size)
        last = np.isfinite(breaks).sum(axis=1) - 1
        lo_k = np.where(has, np.maximum(k - 1, 0), last)
        t_lo = finite_breaks[rr, lo_k]
        p_lo = values[rr, lo_k]
        # slope of phi just right of t_lo (exact on the piece): -sum a_j^2 over coordinates still free there
        hi_k = np.minimum(lo_k + 1, breaks.shape[1] - 1)
        t_next = breaks[rr, hi_k]
        t_mid = np.where(np.isfinite(t_next) & (t_next > t_lo), 0.5 * (t_lo + t_next), t_lo + 1.0)
        moved = vb - t_mid[:, None] * a  # strictly inside the piece: which coordinates move with tau
        free = mask & (moved > lb) & (moved < hb)
        slope = np.where(free, a * a, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = np.where(slope > 0, t_lo + (p_lo - b) / slope, t_lo)
        tau = np.where(has & (k == 0), 0.0, tau)
        block = np.clip(vb - tau[:, None] * a, lb, hb)
        target = idx[rows]
        u[target[mask]] = block[mask]
        return u

    def __repr__(self) -> str:
        return f"HalfSpacesBox(rows={self._b.size}, dim={self._dim})"


class CvxpySet(ConvexSet):
    r"""A convex set given by CVXPY constraints, projected by solving :math:`\min_u \|u - p\|_2^2` s.t. the
    constraints (Clarabel by default; the problem is built once with :math:`p` a parameter).

    Parameters
    ----------
    dim : int
    constraints : callable
        ``constraints(u) -> list`` of CVXPY constraints on the variable ``u`` (shape ``(dim,)``).
    solver : str, optional
        A CVXPY solver name (default ``"CLARABEL"``).
    **solver_options
        Passed to ``Problem.solve`` (for example Clarabel's ``tol_gap_abs``, ``tol_feas``).

    Examples
    --------
    >>> import numpy as np
    >>> disc = CvxpySet(2, lambda u: [u[0] ** 2 + u[1] ** 2 <= 1])
    >>> np.round(disc.project(np.array([2.0, 0.0])), 6)
    array([1., 0.])
    """

    __slots__ = ("_problem", "_variable", "_parameter", "_solver", "_options")

    batched = False

    def __init__(self, dim: int, constraints: Callable[[Any], list], *, solver: str = "CLARABEL",
                 **solver_options: Any) -> None:
        import cvxpy as cp

        super().__init__(dim)
        if not callable(constraints):
            raise TypeError(f"constraints must be callable u -> list of CVXPY constraints, got {type(constraints)}")
        u = cp.Variable(self.dim)
        p = cp.Parameter(self.dim)
        built = constraints(u)
        if not isinstance(built, (list, tuple)):
            raise TypeError("constraints(u) must return a list of CVXPY constraints")
        problem = cp.Problem(cp.Minimize(cp.sum_squares(u - p)), list(built))
        if not problem.is_dcp(dpp=True):
            raise ValueError("the constraints must be convex (DCP) for the projection to be a convex QP")
        self._set("_problem", problem)
        self._set("_variable", u)
        self._set("_parameter", p)
        self._set("_solver", solver)
        self._set("_options", dict(solver_options))

    def _project(self, v: np.ndarray) -> np.ndarray:
        self._parameter.value = np.asarray(v, dtype=np.float64)
        self._problem.solve(solver=self._solver, **self._options)
        if self._variable.value is None:
            raise ValueError(f"the CVXPY projection failed (status {self._problem.status}); is the set empty?")
        return np.array(self._variable.value, dtype=np.float64)
