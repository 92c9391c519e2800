"""Bilevel solvers on problems with known solutions (closed forms, a linear solve, published optima).

Tolerances: T1/T2 ask ||x - x*|| <= 1e-4 (issue 5). The penalty methods' bias is O(sigma) (Kwon et al. 2024,
|psi_sigma - psi| = O(sigma/mu)): on T1 x_sigma = (1 + sigma)/(2 + sigma), an error of sigma/4, so the default
sigma = 1e-5 (F2SA: 1/lambda_max = 1e-4, error 2.5e-5) leaves room below 1e-4 with tol = 1e-6 on the gradient
mapping. On T3 psi_sigma is minimised exactly at x* for every sigma (a direct computation), so sigma = 1e-3 is used.
"""

from __future__ import annotations

import numpy as np
import pytest

import optkit
from optkit.problems.library import bilevel_toys as toys
from optkit.solvers.bilevel._common import lower_minimum
from optkit.solvers.bilevel.aid import aid_hypergradient

PENALTY_LIKE = ["penalty", "f2sa"]


@pytest.mark.parametrize("method", ["penalty", "f2sa", "aid", "itd"])
def test_t1(method: str) -> None:
    toy = toys.t1()
    result = optkit.solve(toy.problem, method)
    assert result.success, result.message
    x, y = result.x
    assert np.linalg.norm(x - toy.x_star) <= 1e-4
    assert result.info["lower_gap"] <= 1e-8
    assert result.fun == pytest.approx(0.25, abs=1e-4)


@pytest.mark.parametrize("method", ["penalty", "aid", "itd"])
def test_t2(method: str) -> None:
    toy = toys.t2()
    result = optkit.solve(toy.problem, method)
    assert result.success, result.message
    assert np.linalg.norm(result.x[0] - toy.x_star) <= 1e-4
    assert result.info["lower_gap"] <= 1e-8


@pytest.mark.slow
def test_t2_f2sa() -> None:
    toy = toys.t2()
    result = optkit.solve(toy.problem, "f2sa", lambda_max=1e5)
    assert result.success, result.message
    assert np.linalg.norm(result.x[0] - toy.x_star) <= 1e-4


def test_t3_penalty_reaches_optimistic_optimum() -> None:
    toy = toys.t3()
    result = optkit.solve(toy.problem, "penalty", sigma=1e-3)
    assert result.success, result.message
    x, y = result.x
    np.testing.assert_allclose(x, 1.0, atol=1e-4)
    np.testing.assert_allclose(y, 1.0, atol=1e-4)
    assert result.fun <= 1e-8


@pytest.mark.parametrize("method", PENALTY_LIKE)
def test_t4_coupled_equality(method: str) -> None:
    toy = toys.t4(10)
    result = optkit.solve(toy.problem, method)
    assert result.success, result.message
    x, y = result.x
    np.testing.assert_allclose(x, -0.3, atol=1e-4)
    assert result.fun == pytest.approx(0.05 * 10, abs=1e-3)
    assert result.info["constraint_violation"] <= 1e-8
    assert abs(result.info["lower_gap"]) <= 1e-6


@pytest.mark.slow
def test_t4_official_size() -> None:
    toy = toys.t4(100)
    result = optkit.solve(toy.problem, "penalty")
    assert result.success
    np.testing.assert_allclose(result.x[0], -0.3, atol=1e-4)
    assert result.fun == pytest.approx(5.0, abs=1e-3)


@pytest.mark.parametrize("method", ["aid", "itd"])
@pytest.mark.parametrize("factory", [toys.t3, lambda: toys.t4(5)])
def test_differentiation_baselines_refuse_non_singleton_or_coupled(method: str, factory) -> None:
    problem = factory().problem
    with pytest.raises(ValueError, match="strongly convex|unconstrained lower level"):
        optkit.solve(problem, method)
    assert method not in optkit.available(problem)


@pytest.mark.parametrize("method", ["penalty"])
@pytest.mark.parametrize("toy", [toys.t6(), toys.t7(1), toys.t7(2)], ids=["T6", "T7-1", "T7-2"])
def test_global_basin(method: str, toy) -> None:
    result = optkit.solve(toy.problem, method)
    assert result.success, result.message
    x_star, phi_star = toy.local_minima[0]
    assert abs(result.x[0][0] - x_star) <= 1e-3
    assert result.fun == pytest.approx(phi_star, abs=1e-3)
    np.testing.assert_allclose(result.x[1], toy.y_of_x(result.x[0]), atol=1e-3)


@pytest.mark.parametrize("toy", [toys.t7(1)], ids=["T7-1"])
def test_global_basin_f2sa(toy) -> None:
    result = optkit.solve(toy.problem, "f2sa")
    assert result.success, result.message
    assert abs(result.x[0][0] - toy.local_minima[0][0]) <= 1e-3


def test_aid_hypergradient_matches_finite_differences_on_t2() -> None:
    toy = toys.t2(5, 5, 32)
    problem = toy.problem
    x = np.random.default_rng(3).normal(size=problem.dims[0])

    def phi(xv: np.ndarray) -> float:  # lower level solved by scipy's L-BFGS-B, not by our code
        _, y = lower_minimum(problem, xv, problem.y0)
        return problem.upper.value(xv, y)

    # phi is quadratic on T2, so central differences have no truncation error: a large h keeps the scipy
    # lower-solve error (gradient tolerance 1e-11) from being amplified by 1/h.
    h = 1e-2
    fd = np.array([(phi(x + h * e) - phi(x - h * e)) / (2 * h) for e in np.eye(x.size)])
    g = aid_hypergradient(problem, x)
    np.testing.assert_allclose(g, fd, atol=1e-6)
    np.testing.assert_allclose(g, toy.hypergradient(x), atol=1e-10)


def test_lower_gap_is_computed_not_assumed() -> None:
    toy = toys.t1()
    result = optkit.solve(toy.problem, "penalty", max_iter=2, tol=1e-300)
    x, y = result.x
    expected = 0.5 * (y[0] - x[0]) ** 2  # min_y f(x, .) = 0 at y = x
    assert result.info["lower_gap"] == pytest.approx(expected, rel=1e-6, abs=1e-14)


def test_stochastic_without_seed_says_so() -> None:
    toy = toys.t2(4, 4, 32)
    result = optkit.solve(toy.problem, "penalty", batch_size=8, step=0.01, step_decay=0.5, max_iter=50)
    assert "default seed" in result.info["seed_note"]
    again = optkit.solve(toy.problem, "penalty", batch_size=8, step=0.01, step_decay=0.5, max_iter=50)
    np.testing.assert_array_equal(result.x[0], again.x[0])
    seeded = optkit.solve(toy.problem, "penalty", batch_size=8, step=0.01, step_decay=0.5, max_iter=50, seed=5)
    assert "seed_note" not in seeded.info and seeded.info["seed"] == 5


@pytest.mark.parametrize("method", ["penalty", "f2sa", "aid", "itd"])
def test_bad_options(method: str) -> None:
    problem = toys.t1().problem
    with pytest.raises(ValueError, match="tol"):
        optkit.solve(problem, method, tol=-1.0)
    with pytest.raises(TypeError, match="max_iter"):
        optkit.solve(problem, method, max_iter=1.5)


def test_stochastic_single_loop_steps_follow_minibatch_curvature() -> None:
    # rank-one samples: a batch of 2 has curvature up to ~trace of the mean Hessian, far above its top eigenvalue;
    # inner steps from the full-batch curvature blew up here, steps from minibatch curvature stay finite
    toy = toys.t2(10, 10, 64)
    result = optkit.solve(toy.problem, "penalty", batch_size=2, step=0.01, max_iter=1500, sigma=0.1, seed=0)
    assert result.status is not optkit.Status.NUMERICAL_ERROR, result.message
    assert np.all(np.isfinite(result.x[0])) and np.linalg.norm(result.x[0] - toy.x_star) < 10.0


@pytest.mark.parametrize("method, options", [
    ("aid", {"outer_step": "bb", "inner_steps": 2, "cg_steps": 2}),
    ("aid", {"outer_step": "bb", "inner_steps": 2, "cg_steps": 2, "linear_solver": "gd"}),
    ("penalty", {"outer_step": "bb", "inner_steps": 2, "sigma": 1e-6, "sigma0": 1e-6}),
])
def test_bb_outer_step_on_t2(method: str, options: dict) -> None:
    # T2's x* comes from a linear solve; tol 1e-8 on the gradient mapping, strongly convex: ||x - x*|| <= 1e-4
    toy = toys.t2()
    result = optkit.solve(toy.problem, method, tol=1e-8, max_iter=20_000, **options)
    assert np.linalg.norm(result.x[0] - toy.x_star) <= 1e-4


def test_bb_options_rejected() -> None:
    with pytest.raises(ValueError, match="outer_step"):
        optkit.solve(toys.t1().problem, "aid", outer_step="newton")
    with pytest.raises(ValueError, match="cg_steps"):
        optkit.solve(toys.t1().problem, "aid", linear_solver="gd")


def test_aid_default_nonmonotone_bb_matches_closed_form_on_t2() -> None:
    # the default safeguarded BB step must reach T2's closed-form x* (linear solves) at least as well as the secant
    # step; tol 1e-6 on the hypergradient with hyper-Hessian smallest eigenvalue ~0.01 bounds ||x - x*|| by ~1e-4
    toy = toys.t2()
    default = optkit.solve(toy.problem, "aid")
    secant = optkit.solve(toy.problem, "aid", outer_step="secant")
    assert default.status is optkit.Status.CONVERGED
    assert default.info["outer_step"] == "nonmonotone_bb"
    assert np.linalg.norm(default.x[0] - toy.x_star) <= 1e-4
    assert default.nit <= secant.nit


def test_aid_nonmonotone_bb_backtracks_from_a_huge_first_step() -> None:
    # T1 (closed form x* = 0.5) from far away: the first probe moves 5% of ||x0||, the line search must keep it safe
    toy = toys.t1(x0=1e3)
    result = optkit.solve(toy.problem, "aid")
    assert result.status is optkit.Status.CONVERGED
    assert abs(result.x[0][0] - 0.5) <= 1e-5
