"""``sparse-ot``'s polishing step (a feasible k-sparse plan where the relaxation has a gap).

References we did not write: an enumeration of every k-sparse support with CVXPY/Clarabel solving the QP on each
(the exact nonconvex optimum on a 4 x 3 instance), SciPy's ``linear_sum_assignment`` (the exact k = 1 optimum for
uniform square marginals: a permutation), and the dual value of our independent L-BFGS run (a lower bound on the
nonconvex optimum by weak duality).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import optkit
from optkit.problems.library.transport_instances import point_clouds
from optkit.problems.transport import SparsityConstrained, TransportProblem
from optkit.solvers.transport._sparse_polish import _prune, _unbalanced, polish
from optkit.solvers.transport.sparse import dense_plan, sparse_ot

TOL = 1e-6  # sparse_ot's default


def _feasible_k_sparse(result, problem: TransportProblem, k: int, tol: float = TOL) -> None:
    plan = result.x.plan
    assert result.success, result.message
    assert np.all(np.isfinite(plan)) and np.all(plan >= 0)
    assert (plan > 0).sum(axis=0).max() <= k
    error = np.abs(plan.sum(axis=1) - problem.a).sum() + np.abs(plan.sum(axis=0) - problem.b).sum()
    assert error <= tol
    # the reported objective and gap are those of the returned plan and potentials
    cost = np.asarray(problem.cost)
    gamma = problem.regularization.gamma
    assert result.fun == pytest.approx(float((cost * plan).sum() + 0.5 * gamma * (plan**2).sum()), abs=1e-14)
    assert result.info["duality_gap"] == pytest.approx(result.fun - result.x.dual_objective, abs=1e-14)


def _brute_force(problem: TransportProblem, k: int) -> float:
    """The nonconvex optimum: the QP on every support with exactly k rows per column (a plan on fewer rows lies on
    one of them), by CVXPY/Clarabel."""
    cp = pytest.importorskip("cvxpy")
    cost, a, b = (np.asarray(v) for v in (problem.cost, problem.a, problem.b))
    n, m = cost.shape
    gamma = problem.regularization.gamma
    plan = cp.Variable((n, m))
    mask = cp.Parameter((n, m), nonneg=True)
    qp = cp.Problem(cp.Minimize(cp.sum(cp.multiply(cost, plan)) + gamma / 2 * cp.sum_squares(plan)),
                    [cp.sum(plan, axis=1) == a, cp.sum(plan, axis=0) == b, plan >= 0, plan <= mask])
    best = np.inf
    for support in itertools.product(list(itertools.combinations(range(n), k)), repeat=m):
        pattern = np.zeros((n, m))
        for j, rows in enumerate(support):
            pattern[list(rows), j] = 1.0
        mask.value = pattern
        qp.solve(solver=cp.CLARABEL)
        if qp.status == "optimal":
            best = min(best, qp.value)
    return best


@pytest.mark.parametrize("seed", [1, 3, 5])
@pytest.mark.parametrize("formulation", ["dual", "semi-dual"])
def test_reaches_the_brute_force_optimum(seed: int, formulation: str) -> None:
    # 4 x 3 random costs, uniform marginals, k = 2, gamma = 0.5: the quadratic plan is dense, the constraint binds
    # and (seeds 1, 5) the relaxation has a gap, so the plan comes from polishing.
    rng = np.random.default_rng(seed)
    problem = TransportProblem(np.full(4, 0.25), np.full(3, 1 / 3), rng.random((4, 3)),
                               regularization=SparsityConstrained(2, 0.5))
    optimum = _brute_force(problem, 2)
    result = sparse_ot(problem, formulation=formulation)
    _feasible_k_sparse(result, problem, 2)
    # The plan meets the marginals to tol = 1e-6, so its objective may undercut the optimum by about tol times the
    # potentials' size (here < 1); Clarabel's QP values are accurate to ~1e-8.
    assert result.fun == pytest.approx(optimum, abs=2e-6)
    assert result.x.dual_objective <= optimum + 2e-6  # weak duality
    if seed in (1, 5):
        assert "polish" in result.info["algorithm"] and result.info["polish"]["success"]


@pytest.mark.parametrize("name,n,gamma", [("clouds60-g0.1", 60, 0.1), ("clouds60-g0.01", 60, 0.01)])
def test_k_one_is_a_permutation_between_the_bounds(name: str, n: int, gamma: float) -> None:
    # k = 1 with uniform n x n marginals: a feasible plan is a permutation / n, the optimum is the assignment
    # optimum / n + gamma / (2 n). At gamma = 0.1 the pruned supports become infeasible and the LP-vertex step runs.
    from scipy.optimize import linear_sum_assignment

    problem = point_clouds(n, seed=0, regularization=SparsityConstrained(1, gamma))
    cost = np.asarray(problem.cost)
    rows, cols = linear_sum_assignment(cost)
    optimum = cost[rows, cols].sum() / n + gamma / (2 * n)
    reference = sparse_ot(problem, algorithm="lbfgs")  # an independent lower bound
    for formulation in ("dual", "semi-dual"):
        result = sparse_ot(problem, formulation=formulation)
        _feasible_k_sparse(result, problem, 1)
        assert np.allclose(np.sort(result.x.plan.max(axis=0)), 1 / n) and np.all((result.x.plan > 0).sum(1) == 1)
        # a plan that misses the marginals by e (L1) can undercut the optimum by about e * max(C + gamma P)
        slack = sum(result.x.marginal_error) * (cost.max() + gamma) + 1e-12
        assert reference.x.dual_objective - 1e-12 <= optimum <= result.fun + slack
        assert result.x.dual_objective <= optimum + 1e-12
    # measured: the semi-dual's L-BFGS phase reaches the assignment optimum itself
    assert sparse_ot(problem, formulation="semi-dual").fun == pytest.approx(optimum, rel=1e-9)


def test_binding_clouds_polished_at_the_relaxation() -> None:
    # the instance family (2-D clouds, gamma = 1e-2, k = 2) at n = 300: the quadratic relaxation's plan has
    # columns with more than 2 nonzeros and L-BFGS stalls above tol; polishing its potentials gives a feasible
    # 2-sparse plan whose relative gap is within POLISH_ACCEPT_GAP, so the run ends there.
    problem = point_clouds(300, seed=0, regularization=SparsityConstrained(2, 1e-2))
    result = sparse_ot(problem)
    _feasible_k_sparse(result, problem, 2)
    assert result.info["algorithm"] == "newton+polish"
    assert [phase["phase"] for phase in result.info["phases"]] == ["newton (quadratic relaxation)", "polish"]
    assert 0 <= result.info["duality_gap"] <= 1e-4 * result.fun
    assert result.counts["polish_rounds"] == result.info["polish"]["rounds"] >= 2
    history = result.history
    assert set(np.unique(history["phase"])) == {1.0, 2.0} and np.all(np.diff(history["time"]) >= 0)
    # the relaxation's plan was not 2-sparse; without polishing the same default ends above tol
    unpolished = sparse_ot(problem, polish=False, max_iter=500)
    assert not unpolished.success and "polish" not in unpolished.info
    assert unpolished.residuals["marginal_error"] > TOL


def test_numpy_and_numba_restricted_solves_agree() -> None:
    problem = point_clouds(50, seed=2, regularization=SparsityConstrained(2, 0.05))
    cost, a, b = (np.asarray(v) for v in (problem.cost, problem.a, problem.b))
    relaxed = sparse_ot(problem.with_regularization(optkit.problems.transport.Quadratic(0.05)), tol=1e-10)
    x = np.concatenate(relaxed.x.potentials)
    plans = []
    for backend in ("numpy", "numba"):
        out = polish(cost, a, b, 0.05, 2, x, backend=backend, tol=1e-9, max_iter=10_000)
        assert out.success, out.message
        plans.append(dense_plan(out.rows, out.values, cost.shape))
    assert (plans[0] > 0).sum(axis=0).max() <= 2
    np.testing.assert_allclose(plans[0], plans[1], atol=1e-12)


def test_pruning_keeps_every_component_balanced() -> None:
    # Masses 1/3 on rows 0, 1, 2 and columns 0, 1, 2. Column 0 holds rows 0, 1, 2 (values 0.01, 0.2, 0.03),
    # column 1 row 1, column 2 row 2; k = 2. Dropping column 0's smallest entry, row 0's, would leave row 0 without
    # an entry (a component with row mass and no column mass): the drop is undone and row 2's entry, the next
    # smallest, goes instead (components {r0, r1, c0, c1} and {r2, c2}, both balanced).
    third = 1 / 3
    rows = np.array([0, 1, 2, 1, 2])
    cols = np.array([0, 0, 0, 1, 2])
    vals = np.array([0.01, 0.2, 0.03, 0.1, 0.3])
    signed = np.concatenate([np.full(3, third), -np.full(3, third)])
    keep, dropped = _prune(rows, cols, vals, 2, signed, 3, 3, 1e-12)
    assert dropped == 1 and keep.tolist() == [True, True, False, True, True]
    assert not np.any(_unbalanced(rows[keep], cols[keep], signed, 3, 3, 1e-12))


def test_failure_is_reported_not_hidden() -> None:
    # k = 1 with masses that cannot be partitioned: rows 0.5, 0.5 and columns 0.4, 0.3, 0.3 (no subset of the
    # columns sums to 0.5), so no 1-sparse plan meets the marginals; the run must not claim success.
    problem = TransportProblem(np.array([0.5, 0.5]), np.array([0.4, 0.3, 0.3]),
                               np.array([[0.0, 1.0, 0.2], [1.0, 0.0, 0.3]]),
                               regularization=SparsityConstrained(1, 0.1))
    for formulation in ("dual", "semi-dual"):
        result = sparse_ot(problem, formulation=formulation, max_iter=300)
        assert not result.success
        assert "polish" in result.message.lower() and not result.info["polish"]["success"]
        assert np.all(np.isfinite(result.x.plan)) and (result.x.plan > 0).sum(axis=0).max() <= 1


def test_polish_must_be_a_bool() -> None:
    problem = point_clouds(10, seed=0, regularization=SparsityConstrained(2, 0.1))
    with pytest.raises(TypeError, match="polish"):
        sparse_ot(problem, polish="yes")


def test_zero_mass_points() -> None:
    # 30 x 30 clouds with a zero-mass row and column, k = 2 binding at gamma = 0.1: the polished plan leaves them
    # empty. (Rectangular shapes are covered by the 4 x 3 brute-force test. A 30 x 20 uniform instance with k = 2
    # is one the heuristic does not solve: a feasible plan needs 10 components of 3 rows and 2 columns, each a
    # path, since 2 entries per column give 40 < n + m - 1 = 49 entries, too few for a connected support.)
    problem = point_clouds(30, 30, seed=1, regularization=SparsityConstrained(2, 0.1))
    a, b = np.asarray(problem.a).copy(), np.asarray(problem.b).copy()
    a[3], b[5] = 0.0, 0.0
    problem = TransportProblem(a / a.sum(), b / b.sum(), problem.cost, regularization=problem.regularization)
    for formulation in ("dual", "semi-dual"):
        result = sparse_ot(problem, formulation=formulation)
        _feasible_k_sparse(result, problem, 2)
        assert not result.x.plan[3].any() and not result.x.plan[:, 5].any()


def test_jax_backend_runs_are_polished_too() -> None:
    pytest.importorskip("jax")
    problem = point_clouds(24, seed=0, regularization=SparsityConstrained(1, 0.1))
    result = sparse_ot(problem, formulation="semi-dual", backend="jax", algorithm="lbfgs", max_iter=200)
    unpolished = sparse_ot(problem, formulation="semi-dual", backend="jax", algorithm="lbfgs", max_iter=200,
                           polish=False)
    if not unpolished.success:  # the relaxation gap: polishing (Numba restricted solves) must give a k-sparse plan
        assert result.info["algorithm"] == "lbfgs+polish"
    _feasible_k_sparse(result, problem, 1)
    assert result.backend == "jax"


def test_enrichment_keeps_the_plan_k_sparse_and_lowers_the_objective(monkeypatch) -> None:
    # 1-D mixtures at 60 quantiles, k = 2: pruning leaves a near-permutation; enriching the columns with room for
    # a second entry (7 restricted solves) lowers the objective (measured: 0.031410 -> 0.031281)
    from optkit.problems.library.transport_instances import gaussian_mixtures_1d
    from optkit.problems.transport import Quadratic
    from optkit.solvers.transport import _sparse_polish

    problem = gaussian_mixtures_1d(60, points="quantiles", regularization=SparsityConstrained(2, 0.1))
    cost, a, b = (np.asarray(v) for v in (problem.cost, problem.a, problem.b))
    x = np.concatenate(sparse_ot(problem.with_regularization(Quadratic(0.1)), tol=1e-10).x.potentials)
    objectives = []
    for rounds in (_sparse_polish.ENRICH_ROUNDS, 0):
        monkeypatch.setattr(_sparse_polish, "ENRICH_ROUNDS", rounds)
        out = polish(cost, a, b, 0.1, 2, x, backend="numpy", tol=1e-9, max_iter=10_000)
        assert out.success, out.message
        plan = dense_plan(out.rows, out.values, cost.shape)
        assert (plan > 0).sum(axis=0).max() <= 2
        assert np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum() <= 1e-9
        objectives.append(float((cost * plan).sum() + 0.05 * (plan**2).sum()))
    assert objectives[0] < objectives[1] - 1e-5


def test_greedy_support_when_pruning_fails() -> None:
    # Random costs and random marginals (40 x 30, k = 3): pruning the relaxation's support leaves columns above k
    # (every further drop unbalances a component), and the column-by-column construction (step 6) gives the plan.
    from optkit.solvers.transport._sparse_polish import _greedy_support

    rng = np.random.default_rng(2)
    cost = rng.random((40, 30))
    a, b = rng.random(40) + 0.05, rng.random(30) + 0.05
    a, b = a / a.sum(), b / b.sum()
    problem = TransportProblem(a, b, cost, regularization=SparsityConstrained(3, 0.05))
    result = sparse_ot(problem, max_iter=1000)
    _feasible_k_sparse(result, problem, 3)
    assert "greedy support" in result.info["polish"]["message"]
    # the construction itself, with the quadratic relaxation's alpha as polishing uses it: a feasible plan with at
    # most k entries per column (None when it gets stuck, as with alpha = 0 on this instance)
    from optkit.problems.transport import Quadratic

    alpha = sparse_ot(problem.with_regularization(Quadratic(0.05)), tol=1e-9).x.potentials[0]
    assert _greedy_support(cost, a, b, 3, np.zeros(40), 1e-15) is None
    rows, cols, values = _greedy_support(cost, a, b, 3, alpha, 1e-15)
    plan = np.zeros((40, 30))
    np.add.at(plan, (rows, cols), values)
    assert np.all(values > 0) and (plan > 0).sum(axis=0).max() <= 3
    np.testing.assert_allclose(plan.sum(axis=1), a, atol=1e-15)
    np.testing.assert_allclose(plan.sum(axis=0), b, atol=1e-15)
    assert _greedy_support(cost, a, b, 1, alpha, 1e-15) is None  # k = 1: no exact partition of the masses


@pytest.mark.parametrize("seed", [0, 1])
def test_random_marginals_never_give_a_false_success(seed: int) -> None:
    # Random costs and random marginals, k = 1 (no exact partition of the masses: must not succeed) and k = 4
    # (k m well above n + m - 1: a plan is found). Whatever the outcome: finite, at most k nonzeros per column, and
    # a success only with a plan that meets tol.
    rng = np.random.default_rng(seed)
    cost = rng.random((30, 25))
    a, b = rng.random(30) + 0.05, rng.random(25) + 0.05
    for k in (1, 4):
        problem = TransportProblem(a / a.sum(), b / b.sum(), cost, regularization=SparsityConstrained(k, 0.05))
        for formulation in ("dual", "semi-dual"):
            result = sparse_ot(problem, formulation=formulation, max_iter=500)
            plan = result.x.plan
            assert np.all(np.isfinite(plan)) and (plan > 0).sum(axis=0).max() <= k
            if k == 1:
                assert not result.success
            else:
                _feasible_k_sparse(result, problem, k)
