r"""Projection onto the coupled feasible set of a bilevel problem,

.. math::

    C = \{(x, y) : x \in X,\ y \in Y,\ A_x x + A_y y \le b,\ E_x x + E_y y = e\} \cap C_{upper},

used by LV-HBA (its :math:`\mathrm{Proj}_C`, Yao et al. 2024, eq. (9)) and V-PBGD (the joint projection onto
:math:`\{x \in X, y \in U(x)\}`, Shen & Chen 2023, eq. (10)).

``how="auto"`` picks a closed form when one applies and says which in the result's ``info["projection"]``:

* no coupled constraints and no upper set: the box/set projections of :math:`X \times Y`;
* equalities only, :math:`X, Y` whole spaces: the affine projection (one precomputed SVD);
* inequalities only with rows of :math:`[A_x, A_y]` on disjoint coordinate blocks and :math:`X, Y` boxes:
  :class:`~optkit.problems.bilevel_sets.HalfSpacesBox` (exact, closed form);
* upper set only, :math:`X, Y` whole spaces: the upper set's own projection;

otherwise Dykstra's alternating projections over the pieces (``"dykstra"``), or, with more than 20 coupled rows
and box sets, the CVXPY QP (Dykstra's cycles over hundreds of overlapping half-spaces take minutes). ``how="cvxpy"`` always solves the
projection QP with CVXPY (the reference the closed forms are tested against, and the only route for an upper set
given as a :class:`~optkit.problems.bilevel_sets.CvxpySet`); ``how`` may also be a callable ``project(u) -> u``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.problems.bilevel_sets import CvxpySet, HalfSpacesBox
from optkit.problems.sets import Affine, Box, Product, Reals
from optkit.solvers.bilevel._common import _dykstra

Projection = Callable[[np.ndarray], np.ndarray]
#: above this many coupled constraint rows without a closed form, ``"auto"`` solves the projection QP by CVXPY
_DYKSTRA_MAX_ROWS = 20


def _stacked(problem: BilevelProblem) -> tuple[Any, Any]:
    cons = problem.lower_constraints
    if cons is None:
        return None, None
    ineq, eq = cons.affine("inequality"), cons.affine("equality")
    ineq = None if ineq is None else (np.hstack([ineq[0], ineq[1]]), ineq[2])
    eq = None if eq is None else (np.hstack([eq[0], eq[1]]), eq[2])
    return ineq, eq


def coupled_projection(problem: BilevelProblem, how: Any = "auto") -> tuple[Projection, str]:
    """``(project, description)`` for the coupled set :math:`C` of ``problem`` (see the module docstring)."""
    n, m = problem.dims
    if callable(how) and not isinstance(how, str):
        return (lambda u: np.asarray(how(np.array(u, dtype=float)), dtype=float)), "user callable"
    if how not in ("auto", "dykstra", "cvxpy"):
        raise ValueError(f"projection must be 'auto', 'dykstra', 'cvxpy' or a callable, got {how!r}")
    cons = problem.lower_constraints
    if cons is not None and not cons.is_affine:
        raise ValueError(
            "the coupled lower constraints are nonlinear: pass projection=<callable onto C = {(x, y): g(x, y) <= 0}>, "
            "for example optkit.problems.bilevel_sets.CvxpySet(n + m, constraints).project"
        )
    ineq, eq = _stacked(problem)
    x_set, y_set, upper = problem.x_set, problem.y_set, problem.upper_set
    boxes = isinstance(x_set, Box) and isinstance(y_set, Box)
    free = type(x_set) is Reals and type(y_set) is Reals
    if how == "cvxpy":
        return _cvxpy(problem, ineq, eq), "cvxpy"
    base = Product(x_set, y_set)
    if how == "auto":
        if ineq is None and eq is None and upper is None:
            if free:
                return (lambda u: np.array(u, dtype=float)), "none (X x Y is the whole space)"
            return base.project, "closed form (X x Y)"
        if ineq is None and eq is not None and upper is None and free:
            return Affine(*eq).project, "closed form (affine)"
        if eq is None and ineq is not None and upper is None and boxes:
            try:
                lower = np.concatenate([x_set.lower, y_set.lower])
                upper_b = np.concatenate([x_set.upper, y_set.upper])
                return HalfSpacesBox(*ineq, lower=lower, upper=upper_b).project, "closed form (half-spaces x box)"
            except ValueError:
                pass  # overlapping supports: fall through to Dykstra
        if ineq is None and eq is None and free and upper is not None:
            return problem.project_upper, "upper set"
        n_rows = (0 if ineq is None else ineq[1].size) + (0 if eq is None else eq[1].size)
        if n_rows > _DYKSTRA_MAX_ROWS and boxes and (upper is None or isinstance(upper, (Box, Affine))):
            # Dykstra cycles over one piece per row: with hundreds of overlapping half-spaces (the SVM margin
            # rows) it needs minutes per projection; one QP takes ~10 ms
            return _cvxpy(problem, ineq, eq), f"cvxpy ({n_rows} coupled rows: too many for Dykstra)"
    pieces: list[Projection] = []
    if not free:
        pieces.append(base.project)
    if eq is not None:
        pieces.append(Affine(*eq).project)
    if ineq is not None:
        for row, bound in zip(*ineq, strict=True):
            norm2 = float(row @ row)
            if norm2 > 0:
                pieces.append(lambda v, row=row, bound=bound, norm2=norm2: v - max(0.0, (row @ v - bound) / norm2) * row)
    if upper is not None:
        pieces.append(problem.project_upper)
    if len(pieces) == 1:
        return pieces[0], "single set"
    return (lambda u: _dykstra(pieces, np.asarray(u, dtype=float))), "dykstra"


def _cvxpy(problem: BilevelProblem, ineq: Any, eq: Any) -> Projection:
    n, m = problem.dims
    x_set, y_set, upper = problem.x_set, problem.y_set, problem.upper_set
    for name, piece in (("x_set", x_set), ("y_set", y_set)):
        if not isinstance(piece, Box):
            raise ValueError(f"projection='cvxpy' supports box {name}s only, got {piece!r}")
    if upper is not None and not isinstance(upper, (Box, Affine, CvxpySet)):
        raise ValueError("projection='cvxpy' needs upper_set to be a Box, an Affine or a CvxpySet")
    lower_b = np.concatenate([x_set.lower, y_set.lower])
    upper_b = np.concatenate([x_set.upper, y_set.upper])

    def constraints(u: Any) -> list:
        out = []
        lo, hi = np.isfinite(lower_b), np.isfinite(upper_b)
        if lo.any():
            out.append(u[np.flatnonzero(lo)] >= lower_b[lo])
        if hi.any():
            out.append(u[np.flatnonzero(hi)] <= upper_b[hi])
        if ineq is not None:
            out.append(ineq[0] @ u <= ineq[1])
        if eq is not None:
            out.append(eq[0] @ u == eq[1])
        if isinstance(upper, Affine):
            out.append(upper.A @ u == upper.b)
        elif isinstance(upper, Box):
            for bound, sign in ((upper.lower, 1.0), (upper.upper, -1.0)):
                keep = np.isfinite(bound)
                if keep.any():
                    out.append(sign * u[np.flatnonzero(keep)] >= sign * bound[keep])
        elif isinstance(upper, CvxpySet):
            raise ValueError("combine the CvxpySet upper_set with the lower constraints yourself and pass "
                             "projection=that_set.project")
        return out

    return CvxpySet(n + m, constraints).project

