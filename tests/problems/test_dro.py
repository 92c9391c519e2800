"""Chi-square DRO logistic regression: the projection and the saddle point against CVXPY (Clarabel)."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import optkit
from optkit.problems.library.dro import (
    DROLogistic,
    dro_logistic,
    project_chi_square_ball,
)


@pytest.mark.parametrize("radius", [0.02, 0.1, 10.0])
def test_projection_matches_cvxpy(radius: float) -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=25) * 0.2
    p = cp.Variable(25)
    cp.Problem(cp.Minimize(cp.sum_squares(p - v)),
               [p >= 0, cp.sum(p) == 1, cp.norm(p - 1 / 25) <= radius]).solve(solver="CLARABEL")
    got = project_chi_square_ball(v, radius)
    # Clarabel's default tolerances (1e-8 on the objective) give the projection to ~1e-6.
    np.testing.assert_allclose(got, p.value, atol=1e-5)
    assert abs(got.sum() - 1) < 1e-12 and got.min() >= 0 and np.linalg.norm(got - 1 / 25) <= radius * (1 + 1e-12)


def _cvxpy_solution(problem: DROLogistic, **solver: object) -> tuple[np.ndarray, float]:
    # min_x max_{p in P} p^T l(x) + lam/2 |x|^2, the inner max dualised: sup_{p in P} p^T t =
    # min_{theta, w >= 0} mean(t) + mean(w) + r |t - theta 1 + w| (Slater holds at p = 1/N), and t >= l(x) is
    # exact because the sup is nondecreasing in t (p >= 0).
    A, b, N = problem.features, problem.labels, problem.n_components
    x, t, theta, w = cp.Variable(A.shape[1]), cp.Variable(N), cp.Variable(), cp.Variable(N, nonneg=True)
    objective = (cp.sum(t) / N + cp.sum(w) / N + problem.radius * cp.norm(t - theta + w)
                 + 0.5 * problem.regularization * cp.sum_squares(x))
    program = cp.Problem(cp.Minimize(objective), [t >= cp.logistic(-cp.multiply(b, A @ x))])
    value = program.solve(**(solver or {"solver": "CLARABEL"}))
    assert program.status == "optimal", program.status
    return x.value, float(value)


@pytest.mark.slow
def test_saddle_point_matches_cvxpy() -> None:
    problem = dro_logistic("a9a", samples=20, rho=0.5, regularization=1.0)
    x_ref, value_ref = _cvxpy_solution(problem)
    result = optkit.solve(problem, "eg", tol=1e-6, max_epochs=5000)
    assert result.success, result.message
    x, p = result.x
    # The x-block is 1-strongly monotone (lam = 1): |x - x*| <= (1 + L_F) * residual / lam <= 2e-5 at tol 1e-6.
    np.testing.assert_allclose(x, x_ref, atol=1e-4)
    assert result.fun == pytest.approx(value_ref, abs=1e-6)
    assert np.linalg.norm(p - 1 / 20) <= problem.radius * (1 + 1e-9)


def test_adaptive_eg_matches_cvxpy_on_a9a_subsample() -> None:
    # Backtracking EG needs no Lipschitz constant: the analytic bound L_F ~ 16 here would force steps ~ 0.03.
    problem = dro_logistic("a9a", samples=20, rho=0.5, regularization=1.0)
    x_ref, value_ref = _cvxpy_solution(problem)
    result = optkit.solve(problem, "eg", tol=1e-6, max_epochs=3000)
    assert result.success, result.message
    assert result.info["step"] > 2.0 / problem.lipschitz
    x, p = result.x
    # |x - x*| <= (1 + L_F) * residual / lam <= 2e-5 at tol 1e-6 (lam = 1); Clarabel's x is good to ~1e-5.
    np.testing.assert_allclose(x, x_ref, atol=1e-4)
    assert result.fun == pytest.approx(value_ref, abs=1e-6)


def test_adaptive_vr_halpern_inexact_matches_cvxpy() -> None:
    rng = np.random.default_rng(0)
    problem = DROLogistic(rng.normal(size=(12, 4)), np.sign(rng.normal(size=12)), rho=0.5, regularization=0.5)
    # Clarabel reports "optimal_inaccurate" on this instance; SCS at eps 1e-10 reaches "optimal".
    x_ref, value_ref = _cvxpy_solution(problem, solver="SCS", eps=1e-10, max_iters=200_000)
    result = optkit.solve(problem, "vr-halpern-inexact", tol=1e-7, max_epochs=20000, seed=0)
    assert result.success, result.message
    assert result.info["lipschitz_estimate"] < problem.lipschitz_components
    x, p = result.x
    # |x - x*| <= (1 + L_F) * residual / lam <= 2e-6 at tol 1e-7 (lam = 0.5, L_F <= 6.8).
    np.testing.assert_allclose(x, x_ref, atol=1e-4)
    assert result.fun == pytest.approx(value_ref, abs=1e-6)
    assert np.linalg.norm(p - 1 / 12) <= problem.radius * (1 + 1e-9)


def test_operator_is_the_mean_of_components_and_bad_input() -> None:
    rng = np.random.default_rng(1)
    problem = DROLogistic(rng.normal(size=(7, 3)), np.sign(rng.normal(size=7)), rho=0.3, regularization=0.1)
    u = np.concatenate([rng.normal(size=3), project_chi_square_ball(rng.random(7), problem.radius)])
    np.testing.assert_allclose(problem.components(u, np.arange(7)).mean(axis=0), problem.operator(u), atol=1e-12)
    with pytest.raises(ValueError, match="labels"):
        DROLogistic(np.ones((3, 2)), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="rho"):
        DROLogistic(np.ones((3, 2)), np.ones(3), rho=-1.0)


def test_lipschitz_constants_bound_worst_case_difference_quotients() -> None:
    # Adversarial pairs (x far out so that sigma(-z) ~ 1, dx along the top right singular vector of A, p moved
    # inside P) reach 96% of the mean-square bound and 83% of L_F (measured); none may exceed the bounds.
    problem = dro_logistic("a9a", samples=20, rho=0.5, regularization=1.0)
    A, N, d = problem.features, problem.n_components, problem.features.shape[1]
    rng = np.random.default_rng(0)
    top = np.linalg.svd(A)[2][0]
    worst = np.zeros(3)
    for t in range(200):
        scale = 10 ** rng.uniform(-2, 1)
        x = rng.normal(size=d) * scale if t % 2 else -0.1 * scale * (problem.labels @ A)
        dx = top * rng.normal() * 10 ** rng.uniform(-4, 0) if t % 3 else rng.normal(size=d) * 1e-3
        p = project_chi_square_ball(rng.random(N) * rng.uniform(0, 2), problem.radius)
        q = project_chi_square_ball(p + rng.normal(size=N) * 10 ** rng.uniform(-4, -1), problem.radius)
        u, v = np.r_[x, p], np.r_[x + dx, q]
        gap = np.linalg.norm(u - v)
        D = problem.components(u, np.arange(N)) - problem.components(v, np.arange(N))
        worst = np.maximum(worst, [np.linalg.norm(problem.operator(u) - problem.operator(v)) / gap,
                                   np.sqrt(np.mean(np.sum(D**2, axis=1))) / gap,
                                   np.max(np.linalg.norm(D, axis=1) / problem.component_constants) / gap])
    assert worst[0] <= problem.lipschitz and worst[1] <= problem.lipschitz_components and worst[2] <= 1.0
    assert worst[1] >= 0.9 * problem.lipschitz_components  # the bound is nearly attained: it is not loose
