"""MonotoneInclusion, MinMaxProblem, BilinearGame and the library games: oracles, validation, published values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from optkit.problems.functions import Function
from optkit.problems.library.games import (
    ROW_WEIGHTED_VALUE, policeman_burglar, policeman_burglar_official, quadratic_lower_bound,
)
from optkit.problems.monotone import BilinearGame, MinMaxProblem, MonotoneInclusion
from optkit.problems.sets import NonNegative, Reals


def linprog_value(A: np.ndarray) -> float:
    """min_x max_y y^T A x over simplices, by HiGHS: min t s.t. A x <= t 1, x in the simplex."""
    m, n = A.shape
    res = linprog(np.r_[np.zeros(n), 1.0], A_ub=np.c_[A, -np.ones(m)], b_ub=np.zeros(m),
                  A_eq=np.r_[np.ones(n), 0.0][None], b_eq=[1.0], bounds=[(0, None)] * n + [(None, None)],
                  method="highs")
    assert res.status == 0
    return float(res.fun)


def test_components_average_to_the_operator(rng) -> None:
    for problem in (policeman_burglar(30), BilinearGame(rng.normal(size=(7, 4))), quadratic_lower_bound(20)):
        u = rng.random(problem.dim)
        rows = problem.components(u, np.arange(problem.n_components))
        np.testing.assert_allclose(rows.mean(axis=0), problem.operator(u), atol=1e-12)


def test_bilinear_operator_is_the_saddle_gradient(rng) -> None:
    A = rng.normal(size=(5, 3))
    game = BilinearGame(A)
    x, y = rng.random(3), rng.random(5)
    np.testing.assert_allclose(game.operator(np.r_[x, y]), np.r_[A.T @ y, -A @ x])


def test_quadratic_operator_matches_finite_differences_of_f(rng) -> None:
    n = 6
    problem = quadratic_lower_bound(n)
    A = np.zeros((n, n))
    A[np.arange(n), np.arange(n)[::-1]] = 0.25
    A[np.arange(n - 1), np.arange(n)[::-1][1:]] = -0.25
    H, b, h = 2 * A.T @ A, np.full(n, 0.25), np.eye(n)[-1] * 0.25

    def f(z):
        x, y = z[:n], z[n:]
        return 0.5 * x @ H @ x - h @ x - (A @ x - b) @ y

    z = rng.normal(size=2 * n)
    grad = np.array([(f(z + 1e-6 * e) - f(z - 1e-6 * e)) / 2e-6 for e in np.eye(2 * n)])
    np.testing.assert_allclose(problem.operator(z), np.r_[grad[:n], -grad[n:]], atol=1e-7)


def test_minmax_problem_from_functions() -> None:
    f = Function(lambda z: 0.5 * z[0] ** 2 + z[0] * z[1] - 0.5 * z[1] ** 2,
                 grad=lambda z: np.array([z[0] + z[1], z[0] - z[1]]))
    problem = MinMaxProblem([f, f], Reals(1), NonNegative(1))
    np.testing.assert_allclose(problem.operator(np.array([1.0, 2.0])), [3.0, 1.0])
    x, y = problem.split(np.array([1.0, 2.0]))
    assert x.tolist() == [1.0] and y.tolist() == [2.0]


def test_game_lipschitz_is_the_tangent_space_norm() -> None:
    game = policeman_burglar(40)
    P = np.eye(40) - np.full((40, 40), 1 / 40)  # projector onto {1^T v = 0}
    assert game.lipschitz == pytest.approx(np.linalg.norm(P @ game.A @ P, 2), rel=1e-12)
    assert game.lipschitz < np.linalg.norm(game.A, 2)


def test_skew_symmetric_game_has_value_zero() -> None:
    A = np.array([[0.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]])  # rock-paper-scissors
    assert abs(linprog_value(A)) < 1e-12
    game = BilinearGame(A)
    assert game.duality_gap(np.ones(3) / 3, np.ones(3) / 3) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.slow
def test_paper_games_values() -> None:
    assert abs(linprog_value(policeman_burglar().A) - ROW_WEIGHTED_VALUE) < 1e-9
    assert abs(linprog_value(policeman_burglar_official().A) - 0.0018914828) < 1e-9
    assert 4.5 < policeman_burglar().lipschitz < 4.7  # the tangent-space norm quoted in the notes (about 4.6)


def test_empty_component_set_is_refused() -> None:
    with pytest.raises(ValueError, match="empty component set"):
        MonotoneInclusion(lambda u, idx: np.zeros((len(idx), 2)), 0, 2)
    problem = MonotoneInclusion(lambda u, idx: np.zeros((len(idx), 2)), 3, 2)
    with pytest.raises(ValueError, match="empty component set"):
        problem.components(np.zeros(2), [])
    with pytest.raises(ValueError, match="empty"):
        MinMaxProblem([], Reals(1), Reals(1))


def test_wrong_oracle_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="expected \\(2, 3\\)"):
        MonotoneInclusion(lambda u, idx: np.zeros((len(idx), 2)), 4, 3)
    with pytest.raises(ValueError, match="expected \\(2, 3\\)"):
        MonotoneInclusion(lambda u, idx: np.zeros(3), 4, 3)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="components must be callable"):
        MonotoneInclusion(np.zeros(3), 1, 3)
    with pytest.raises(ValueError, match="G has dimension"):
        MonotoneInclusion(lambda u, idx: np.zeros((len(idx), 3)), 1, 3, G=NonNegative(2))
    with pytest.raises(ValueError, match="A must be finite"):
        BilinearGame([[1.0, np.nan]])
    with pytest.raises(ValueError, match="X has dimension"):
        BilinearGame(np.ones((2, 3)), X=NonNegative(2))
    with pytest.raises(ValueError, match="lipschitz"):
        MonotoneInclusion(lambda u, idx: np.zeros((len(idx), 3)), 1, 3, lipschitz=-1.0)
    with pytest.raises(ValueError, match="weights"):
        policeman_burglar(10, weights="diagonal")
