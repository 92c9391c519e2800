"""PDE-constrained problem: the stencil against an explicit loop, the solution against CVXPY, sparse at N = 64."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from scipy import sparse

import optkit
from optkit.problems.library.pde import laplacian_2d, pde_control, pde_target


def test_laplacian_matches_the_five_point_stencil(rng):
    N = 5
    h = 2.0 / (N + 1)
    W = rng.normal(size=(N, N))
    P = np.pad(W, 1)  # zero Dirichlet boundary
    stencil = (P[2:, 1:-1] + P[:-2, 1:-1] + P[1:-1, 2:] + P[1:-1, :-2] - 4 * W) / h**2
    np.testing.assert_allclose(laplacian_2d(N) @ W.ravel(), stencil.ravel(), rtol=1e-13)


def test_target_formula():
    N = 3
    t = pde_target(N).reshape(N, N)
    # i = 1, j = 3: sin(4 + 0.1/sqrt(15) * (1 - 2)) + cos(3 + 0.1/sqrt(15) * (3 - 2))
    assert t[0, 2] == pytest.approx(np.sin(4 - 0.1 / np.sqrt(15)) + np.cos(3 + 0.1 / np.sqrt(15)), rel=1e-15)


@pytest.mark.parametrize("sketch", ["kaczmarz", "gaussian", "exact"])
def test_paper_size_matches_cvxpy(sketch):
    problem = pde_control(3)
    assert (problem.n, problem.m) == (18, 9)
    result = optkit.solve(problem, "sketch-newton", tol=1e-6, seed=0, sketch=sketch)
    assert result.success, result.message
    x, lam = result.x
    assert problem.kkt_norm(x, lam) <= 1e-6
    w, z = cp.Variable(9), cp.Variable(9)
    L = laplacian_2d(3)
    reference = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(w - pde_target(3)) + 0.05 * cp.sum_squares(z)),
                           [L @ w + z == 0])
    reference.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert result.fun == pytest.approx(reference.value, rel=1e-7)
    # the QP is strongly convex, so the minimizer is unique; the KKT tolerance bounds the distance
    np.testing.assert_allclose(x, np.concatenate([w.value, z.value]), atol=1e-6)


def test_large_grid_is_sparse_and_solves():
    problem = pde_control(64)
    assert (problem.n, problem.m) == (8192, 4096)
    assert sparse.issparse(problem.jacobian(problem.x0)) and problem.jacobian(problem.x0).nnz < 6 * 4096
    result = optkit.solve(problem, "sketch-newton", tol=1e-6, seed=0, sketch="exact")
    assert result.success and result.nit == 1  # a QP: one exact Newton step
    x, lam = result.x
    assert problem.kkt_norm(x, lam) <= 1e-6


def test_bad_size():
    with pytest.raises(ValueError, match="N must be"):
        pde_control(0)
