"""The Halpern and extragradient families: equilibria against scipy linprog (HiGHS), unbiased estimators, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

import optkit
from optkit.problems.library.games import policeman_burglar
from optkit.problems.monotone import BilinearGame
from optkit.solvers.monotone._common import example_quadratic
from optkit.solvers.monotone.halpern import PageEstimator


def lp_equilibrium(A: np.ndarray) -> float:
    m, n = A.shape
    res = linprog(np.r_[np.zeros(n), 1.0], A_ub=np.c_[A, -np.ones(m)], b_ub=np.zeros(m),
                  A_eq=np.r_[np.ones(n), 0.0][None], b_eq=[1.0], bounds=[(0, None)] * n + [(None, None)],
                  method="highs")
    return float(res.fun)


@pytest.mark.parametrize("method", ["eg", "eag", "vr-eg"])
def test_game_value_and_gap_match_linprog(method: str) -> None:
    # Residual <= 1e-8 bounds the distance to the equilibrium set times the game's sharpness constant; on this
    # 12 x 12 game that keeps value and gap far inside 1e-6.
    game = policeman_burglar(12)
    result = optkit.solve(game, method, tol=1e-8, seed=0, max_epochs=2e5)
    assert result.success, result.message
    x, y = result.x
    value = lp_equilibrium(game.A)
    assert abs(game.game_value(x, y) - value) < 1e-6
    assert 0.0 <= game.duality_gap(x, y) < 1e-6
    assert abs(result.fun - value) < 1e-6


@pytest.mark.slow
def test_paper_game_value_and_gap() -> None:
    game = policeman_burglar()
    result = optkit.solve(game, "eg", step=0.1, tol=1e-8, max_epochs=2e4)
    assert result.success, result.message
    x, y = result.x
    assert abs(game.game_value(x, y) - 2.298551318670) < 1e-6
    assert game.duality_gap(x, y) < 1e-6


@pytest.mark.parametrize("method", ["halpern", "vr-halpern", "vr-halpern-inexact", "eg", "eag", "vr-eg"])
def test_cocoercive_sum_solution_matches_linear_solve(method: str) -> None:
    problem = example_quadratic()
    u = np.zeros(problem.dim)
    # F(u) = Hbar u - cbar: the solution solves the mean linear system.
    rows = problem.components(u, np.arange(problem.n_components))
    cbar = -rows.mean(axis=0)
    Hbar = np.stack([problem.operator(e) + cbar for e in np.eye(problem.dim)], axis=1)
    result = optkit.solve(problem, method, tol=1e-10, seed=1)
    assert result.success
    np.testing.assert_allclose(result.x, np.linalg.solve(Hbar, cbar), atol=1e-8)
    assert result.counts["epochs"] == result.counts["components"] / problem.n_components
    assert result.history["epochs"][-1] == pytest.approx(result.counts["epochs"])


def test_page_estimator_is_unbiased() -> None:
    # With an exact previous estimate, E[F~_k] = F(u_k); the sample mean over many minibatch draws must agree
    # with F(u_k) within a few standard errors.
    game = policeman_burglar(30)
    rng = np.random.default_rng(7)
    u_prev, u = rng.random(game.dim), rng.random(game.dim)
    draws = []
    estimator = PageEstimator(game, batch=5, rng=np.random.default_rng(11))
    for _ in range(4000):
        estimator.full(u_prev)
        estimator.update(u, u_prev, p=0.0)
        draws.append(estimator.value)
    draws = np.array(draws)
    stderr = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - game.operator(u)) <= 5 * stderr + 1e-12)


def test_single_sample_correction_is_unbiased() -> None:
    # The VR-EG / VR-FoRB correction F_xi(a) - F_xi(b), xi uniform, has mean F(a) - F(b).
    game = BilinearGame(np.random.default_rng(2).normal(size=(9, 9)))
    rng = np.random.default_rng(3)
    a, b = rng.random(game.dim), rng.random(game.dim)
    picks = rng.integers(0, game.n_components, size=20000)
    diffs = game.components(a, picks) - game.components(b, picks)
    stderr = diffs.std(axis=0) / np.sqrt(len(picks))
    assert np.all(np.abs(diffs.mean(axis=0) - (game.operator(a) - game.operator(b))) <= 5 * stderr + 1e-12)


def test_seeded_runs_repeat() -> None:
    problem = policeman_burglar(12)
    first = optkit.solve(problem, "vr-halpern-inexact", seed=5, max_epochs=20)
    second = optkit.solve(problem, "vr-halpern-inexact", seed=np.random.default_rng(5), max_epochs=20)
    np.testing.assert_array_equal(first.x[0], second.x[0])


@pytest.mark.parametrize("method,option", [("eg", "step"), ("eag", "step"), ("halpern", "step"),
                                           ("vr-halpern", "step"), ("vr-eg", "step"),
                                           ("vr-halpern-inexact", "inner_step")])
def test_step_above_stability_bound_is_refused(method: str, option: str) -> None:
    problem = example_quadratic()
    with pytest.raises(ValueError, match="stability bound"):
        optkit.solve(problem, method, **{option: 1e3 / problem.lipschitz})


def test_forward_backward_halpern_refuses_or_routes_non_cocoercive() -> None:
    game = policeman_burglar(12)
    with pytest.raises(ValueError, match="cocoercive"):
        optkit.solve(game, "halpern")
    with pytest.raises(ValueError, match="not declared cocoercive"):
        optkit.solve(game, "vr-halpern", step=0.1)
    result = optkit.solve(game, "vr-halpern", tol=1e-8, seed=0)
    assert result.success and "Algorithm 2" in result.info["algorithm"]
    value = lp_equilibrium(game.A)
    assert abs(game.game_value(*result.x) - value) < 1e-6


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_inexact_backends_agree_with_linprog(backend: str) -> None:
    game = policeman_burglar(12)
    result = optkit.solve(game, "vr-halpern-inexact", tol=1e-9, seed=3, backend=backend)
    assert result.success and result.backend == backend
    x, y = result.x
    assert abs(game.game_value(x, y) - lp_equilibrium(game.A)) < 1e-6
    assert 0.0 <= game.duality_gap(x, y) < 1e-6


def test_literal_algorithm_two_runs() -> None:
    game = policeman_burglar(12, splitting="plain", sampling="uniform")
    n = game.n_components
    p = 1.0 / n
    result = optkit.solve(game, "vr-halpern-inexact", inner_tol=None, warm_start=False, restart=None,
                          inner_step=5 * np.sqrt(p * (1 - p)) / (np.sqrt(n) + 1), max_epochs=200, tol=1e-12, seed=0)
    assert result.status is optkit.Status.MAX_ITER
    assert result.residuals["residual"] < 0.5 * game.residual(game.x0)


def test_other_bad_options() -> None:
    game = policeman_burglar(12)
    with pytest.raises(ValueError, match="batch_size"):
        optkit.solve(example_quadratic(), "vr-halpern", batch_size=100)
    with pytest.raises(ValueError, match="restart"):
        optkit.solve(example_quadratic(), "halpern", restart=2.0)
    with pytest.raises(ValueError, match="anchor"):
        optkit.solve(example_quadratic(), "halpern", anchor="middle")
    with pytest.raises(ValueError, match="init"):
        optkit.solve(game, "eg", init=np.zeros(3))
    with pytest.raises(ValueError, match="max_epochs"):
        optkit.solve(game, "eg", max_epochs=0)


def test_epoch_budget_reports_max_iter() -> None:
    result = optkit.solve(policeman_burglar(12), "vr-eg", max_epochs=3, tol=1e-14)
    assert result.status is optkit.Status.MAX_ITER and "max_epochs" in result.message
    assert 3 <= result.counts["epochs"] < 3 + 12 / 12 + 1


def test_importance_sampled_centered_correction_is_unbiased() -> None:
    # Centered splitting + importance sampling: E_q[(F_xi(a) - F_xi(b)) / (n q_xi)] = F(a) - F(b) for a, b on the
    # simplices (the centering cancels only there), checked within a few standard errors.
    game = policeman_burglar(15)
    rng = np.random.default_rng(5)
    a, b = game.resolvent(rng.random(game.dim), 1.0), game.resolvent(rng.random(game.dim), 1.0)
    q = game.sampling
    picks = rng.choice(game.n_components, size=20000, p=q)
    diffs = (game.components(a, picks) - game.components(b, picks)) / (game.n_components * q[picks, None])
    stderr = diffs.std(axis=0) / np.sqrt(len(picks))
    assert np.all(np.abs(diffs.mean(axis=0) - (game.operator(a) - game.operator(b))) <= 5 * stderr + 1e-12)
    # and the splitting is exact everywhere: the mean of all components is F
    u = rng.random(game.dim)
    np.testing.assert_allclose(game.components(u, np.arange(game.n_components)).mean(axis=0), game.operator(u),
                               atol=1e-12)


def test_adaptive_eg_backtracks_and_matches_linprog() -> None:
    # Khobotov's rule: start far above 1/L_F on a game whose constant is known; the test must cut the step.
    game = policeman_burglar(12)
    result = optkit.solve(game, "eg", tol=1e-9, max_epochs=2e4)
    assert result.success, result.message
    assert result.info["step"] <= result.info["initial_step"]
    reference = lp_equilibrium(game.A)
    x, y = result.x
    assert game.game_value(x, y) == pytest.approx(reference, abs=1e-6)
    fixed = optkit.solve(game, "eg", adaptive=False, max_epochs=4)
    assert fixed.info["step"] == pytest.approx(0.5 / game.lipschitz)
    with pytest.raises(ValueError, match="theta"):
        optkit.solve(game, "eg", theta=1.5)


def test_inexact_adaptive_option_checks() -> None:
    game = policeman_burglar(12)
    with pytest.raises(ValueError, match="adaptive"):
        optkit.solve(game, "vr-halpern-inexact", adaptive=True, eta=0.1, backend="numpy")
