"""Exact OT (``"emd"``) against scipy's Hungarian algorithm and POT's network simplex."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment, linprog

import optkit
from optkit.problems import Entropic, TransportProblem
from optkit.solvers.transport.exact import emd


@pytest.mark.parametrize("n", [5, 40, 120])
def test_permutation_problem_matches_linear_sum_assignment(rng: np.random.Generator, n: int) -> None:
    cost = rng.random((n, n))
    result = optkit.solve(TransportProblem(None, None, cost))
    assert result.method == "emd" and result.success, result.message
    rows, cols = linear_sum_assignment(cost)
    # Uniform weights 1/n: the optimal plan is a permutation matrix / n (a vertex of the Birkhoff polytope).
    assert result.fun == pytest.approx(cost[rows, cols].sum() / n, rel=1e-12)
    plan = result.x.plan
    assert np.count_nonzero(plan > 1e-12) == n
    # Generic random costs have a unique optimal assignment.
    np.testing.assert_array_equal(np.argmax(plan, axis=1)[rows], cols)
    assert result.residuals["marginal_error"] <= 1e-12


def test_potentials_are_dual_optimal(rng: np.random.Generator) -> None:
    cost = rng.random((15, 11))
    a, b = rng.random(15), rng.random(11)
    a, b = a / a.sum(), b / b.sum()
    result = emd(TransportProblem(a, b, cost))
    f, g = result.x.potentials
    # Dual feasibility f_i + g_j <= C_ij, complementary slackness on the support, zero gap.
    assert np.all(f[:, None] + g[None, :] <= cost + 1e-12)
    support = result.x.plan > 1e-14
    np.testing.assert_allclose((f[:, None] + g[None, :])[support], cost[support], atol=1e-12)
    assert result.x.dual_objective == pytest.approx(result.x.cost, abs=1e-13)
    # Same value as the LP solved by HiGHS.
    n, m = cost.shape
    a_eq = np.vstack([np.kron(np.eye(n), np.ones(m)), np.kron(np.ones(n), np.eye(m))])
    lp = linprog(cost.ravel(), A_eq=a_eq, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    assert result.fun == pytest.approx(lp.fun, rel=1e-9)


def test_max_iter_reports_max_iter(rng: np.random.Generator) -> None:
    result = emd(TransportProblem(None, None, rng.random((30, 30))), max_iter=1)
    assert result.status is optkit.Status.MAX_ITER and "max_iter" in result.message
    assert np.isfinite(result.fun)


def test_refuses_regularized_problem() -> None:
    problem = TransportProblem(None, None, np.eye(3), Entropic(0.1))
    with pytest.raises(ValueError, match="with_regularization"):
        emd(problem)
    assert optkit.solve(problem.with_regularization(None)).method == "emd"


@pytest.mark.parametrize("option, value, error", [("max_iter", 0, ValueError), ("num_threads", 1.5, TypeError)])
def test_bad_options(option: str, value: object, error: type) -> None:
    with pytest.raises(error, match=option):
        emd(TransportProblem(None, None, np.eye(3)), **{option: value})
