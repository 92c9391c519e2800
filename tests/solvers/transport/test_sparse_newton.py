"""Semismooth Newton for quadratic / sparsity-constrained OT (``sparse-ot``, ``algorithm="newton"``).

References we did not write: POT's ``ot.smooth.dual_obj_grad`` (dual value and gradient), CVXPY/Clarabel (the QP),
finite differences of the gradient (the generalized Hessian); and our own L-BFGS path, an independent method.
"""

from __future__ import annotations

import numpy as np
import pytest

import optkit
from optkit.problems.transport import Quadratic, SparsityConstrained, TransportProblem
from optkit.solvers.transport import _sparse_newton as newton
from optkit.solvers.transport.sparse import sparse_ot

ot = pytest.importorskip("ot")


def _problem(n: int, m: int, reg, seed: int = 0) -> TransportProblem:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 1.0
    return TransportProblem.from_points(x, y, normalize="max", regularization=reg)


def _random(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cost = rng.random((n, m))
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return cost, a / a.sum(), b / b.sum()


def _pattern(state, n: int, m: int) -> np.ndarray:
    """The 0/1 support matrix of a compressed-column support (entry order within a column may differ)."""
    pattern = np.zeros((n, m), dtype=int)
    np.add.at(pattern, (state.rows, np.repeat(np.arange(m), np.diff(state.col_ptr))), 1)
    return pattern


def _backends():
    return [newton._NumpyBackend, newton._NumbaBackend]


@pytest.mark.parametrize("backend", _backends(), ids=["numpy", "numba"])
@pytest.mark.parametrize("k", [2, 5, 20])
def test_support_value_and_gradient_match_pot(backend, k: int) -> None:
    cost, a, b = _random(20, 15, seed=k)
    rng = np.random.default_rng(3)
    alpha, beta = 0.4 + 0.3 * rng.normal(size=20), 0.3 * rng.normal(size=15)
    gamma = 0.2
    state = backend(cost).support(alpha, beta, a, b, gamma, k)
    regul = ot.smooth.SparsityConstrained(max_nz=k, gamma=gamma) if k < 20 else ot.smooth.SquaredL2(gamma)
    value, grad_alpha, grad_beta = ot.smooth.dual_obj_grad(alpha, beta, a, b, cost, regul)
    assert state.value == pytest.approx(value, abs=1e-13)
    np.testing.assert_allclose(state.grad, np.concatenate([grad_alpha, grad_beta]), atol=1e-13)
    assert state.error == pytest.approx(np.abs(grad_alpha).sum() + np.abs(grad_beta).sum(), abs=1e-13)
    # The plan's support in compressed-column form: at most k entries per column, all positive.
    assert np.diff(state.col_ptr).max() <= k and np.all(state.vals > 0)


@pytest.mark.parametrize("backend", _backends(), ids=["numpy", "numba"])
@pytest.mark.parametrize("k", [3, 20])
def test_generalized_hessian_matches_finite_differences(backend, k: int) -> None:
    # The gradient is piecewise linear: away from a kink (no score crossing 0 or a top-k tie within the step),
    # grad(x + h v) - grad(x) = -h H v exactly up to rounding, for the H of eq. (newton-hessian).
    cost, a, b = _random(20, 15, seed=11)
    rng = np.random.default_rng(5)
    alpha, beta = 0.4 + 0.3 * rng.normal(size=20), 0.3 * rng.normal(size=15)
    gamma, h = 0.2, 1e-7
    kernels = backend(cost)
    state = kernels.support(alpha, beta, a, b, gamma, k)
    scores = alpha[:, None] + beta[None, :] - cost
    assert np.abs(scores).min() > 1e-5  # no kink within h * |v| of this point
    v = rng.normal(size=35)
    moved = kernels.support(alpha + h * v[:20], beta + h * v[20:], a, b, gamma, k)
    difference = -(moved.grad - state.grad) / h
    # H v by the CG solver's own operator: one CG step on (H + shift) with a huge shift returns v'/shift, so use
    # the dense matrix of eq. (newton-hessian) built from the support instead.
    pattern = np.zeros((20, 15))
    columns = np.repeat(np.arange(15), np.diff(state.col_ptr))
    pattern[state.rows, columns] = 1.0
    hessian = np.block([[np.diag(pattern.sum(1)), pattern], [pattern.T, np.diag(pattern.sum(0))]]) / gamma
    np.testing.assert_allclose(difference, hessian @ v, atol=1e-6)
    # The CG solve of (H + shift I) d = g agrees with a dense solve of the same shifted system.
    shift = 0.1
    direction, _ = kernels.solve(state, state.grad, gamma, shift, 1e-13, 1000)
    np.testing.assert_allclose(direction, np.linalg.solve(hessian + shift * np.eye(35), state.grad), rtol=1e-8,
                               atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_newton_matches_cvxpy_qp(backend: str) -> None:
    cp = pytest.importorskip("cvxpy")
    gamma = 0.05
    problem = _problem(12, 9, Quadratic(gamma), seed=2)
    cost, a, b = (np.array(v) for v in (problem.cost, problem.a, problem.b))
    plan = cp.Variable(cost.shape, nonneg=True)
    qp = cp.Problem(cp.Minimize(cp.sum(cp.multiply(cost, plan)) + gamma / 2 * cp.sum_squares(plan)),
                    [cp.sum(plan, axis=1) == a, cp.sum(plan, axis=0) == b])
    qp.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    result = sparse_ot(problem, algorithm="newton", backend=backend, tol=1e-10)
    assert result.success, result.message
    assert result.info["algorithm"] == "newton" and result.backend == backend
    assert sum(result.x.marginal_error) <= 1e-10
    # Strong convexity (modulus gamma) of the QP: the plan of potentials whose gradient (marginal error) is e is
    # within ~e / gamma = 2e-9 of the optimum; Clarabel's own accuracy (~1e-9 in the plan here) dominates.
    np.testing.assert_allclose(result.x.plan, plan.value, atol=1e-7)
    assert result.fun == pytest.approx(qp.value, rel=1e-8)
    assert result.x.dual_objective == pytest.approx(qp.value, rel=1e-8)


def test_newton_is_the_default_for_quadratic_and_agrees_with_lbfgs() -> None:
    problem = _problem(60, 45, Quadratic(0.01), seed=4)
    ours = sparse_ot(problem, tol=1e-9)
    assert ours.info["algorithm"] == "newton" and ours.success, ours.message
    ref = sparse_ot(problem, algorithm="lbfgs", tol=1e-9)
    assert ref.info["algorithm"] == "lbfgs" and ref.success, ref.message
    # Both plans are within 1e-9 of feasibility for the same strongly convex QP (modulus 0.01): their distance is
    # ~ sqrt(2 * gap / gamma) with a gap of order tol * |potentials|, i.e. ~1e-4 at worst; observed far below.
    np.testing.assert_allclose(ours.x.plan, ref.x.plan, atol=1e-5)
    assert ours.x.dual_objective == pytest.approx(ref.x.dual_objective, abs=1e-10)
    assert ours.fun == pytest.approx(ref.fun, abs=1e-8)
    # The SparsityConstrained default: Newton on the quadratic relaxation, then polishing and L-BFGS where the
    # constraint binds.
    assert sparse_ot(_problem(8, 6, SparsityConstrained(2, 0.1))).info["algorithm"].startswith("newton")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_inactive_sparsity_constraint_gives_the_quadratic_solution(backend: str) -> None:
    # At gamma = 0.01 the quadratic plan has at most 4 nonzeros per column; with k = 8 the constraint is inactive,
    # the quadratic optimum is a stationary point of the (concave) k-dual, and Newton's last stage starts there.
    quadratic = sparse_ot(_problem(50, 40, Quadratic(0.01), seed=6), backend=backend, tol=1e-9)
    assert quadratic.info["max_nonzeros_per_column"] <= 8
    sparse = sparse_ot(_problem(50, 40, SparsityConstrained(8, 0.01), seed=6), algorithm="newton",
                       backend=backend, tol=1e-9)
    assert sparse.success, sparse.message
    assert sparse.info["max_nonzeros_per_column"] <= 8
    np.testing.assert_allclose(sparse.x.plan, quadratic.x.plan, atol=1e-6)
    assert sparse.fun == pytest.approx(quadratic.fun, abs=1e-9)


def test_numpy_and_numba_newton_agree() -> None:
    problem = _problem(40, 35, Quadratic(0.02), seed=7)
    r_np = sparse_ot(problem, backend="numpy", tol=1e-10)
    r_nb = sparse_ot(problem, backend="numba", tol=1e-10)
    assert r_np.success and r_nb.success
    np.testing.assert_allclose(r_np.x.plan, r_nb.x.plan, atol=1e-8)
    assert r_np.x.dual_objective == pytest.approx(r_nb.x.dual_objective, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2])
def test_binding_sparsity_constraint(k: int) -> None:
    # Where the constraint binds the dual is nonsmooth; Newton must still respect k, return finite values, and
    # reach a dual value at least POT's converged one (it maximises the same concave function).
    problem = _problem(40, 40, SparsityConstrained(k, 0.02), seed=5)
    a, b, cost = (np.array(v) for v in (problem.a, problem.b, problem.cost))
    _, log = ot.smooth.smooth_ot_dual(a, b, cost, 0.02, reg_type="sparsity_constrained", max_nz=k, log=True,
                                      numItermax=2000, stopThr=1e-12)
    regul = ot.smooth.SparsityConstrained(max_nz=k, gamma=0.02)
    pot_dual = ot.smooth.dual_obj_grad(np.array(log["alpha"]), np.array(log["beta"]), a, b, cost, regul)[0]
    result = sparse_ot(problem, algorithm="newton", tol=1e-9, max_iter=300)
    assert result.status in (optkit.Status.CONVERGED, optkit.Status.STALLED, optkit.Status.MAX_ITER)
    assert (result.x.plan > 0).sum(axis=0).max() <= k
    assert np.all(np.isfinite(result.x.plan)) and np.isfinite(result.fun)
    assert result.x.dual_objective >= pot_dual - 1e-12


def test_init_skips_the_continuation_and_warm_start_converges_at_once() -> None:
    problem = _problem(30, 25, Quadratic(0.02), seed=8)
    first = sparse_ot(problem, tol=1e-10)
    again = sparse_ot(problem, tol=1e-10, init=first.x.potentials)
    assert again.success and again.nit == 0
    cold = sparse_ot(problem, tol=1e-10, init=(np.zeros(30), np.zeros(25)))
    assert cold.success, cold.message
    np.testing.assert_allclose(cold.x.plan, first.x.plan, atol=1e-8)


def test_schedule() -> None:
    stages = newton.schedule(0.01, 3, 10, 1e-6, 1.0, True)
    assert [s[1] for s in stages] == [10] * 6 + [3]
    assert stages[0][0] == pytest.approx(0.01 * 4.0**5) and stages[-1] == (0.01, 3, 1e-6)
    assert newton.schedule(0.01, 10, 10, 1e-6, 1.0, False) == [(0.01, 10, 1e-6)]


def test_callback_limits_and_history() -> None:
    problem = _problem(30, 20, Quadratic(0.02), seed=9)
    seen = []
    stopped = sparse_ot(problem, callback=lambda state: seen.append(state.x) or len(seen) >= 2)
    assert stopped.status is optkit.Status.CALLBACK_STOP and len(seen) == 2 and seen[-1].plan.shape == (30, 20)
    limited = sparse_ot(problem, max_iter=1, tol=1e-300)
    assert limited.status is optkit.Status.MAX_ITER and limited.nit == 1
    assert np.all(np.isfinite(limited.x.plan))
    # A run stopped during the continuation returns its current potentials evaluated on the target problem.
    alpha, beta = limited.x.potentials
    plan = np.maximum(alpha[:, None] + beta[None, :] - np.asarray(problem.cost), 0.0) / 0.02
    np.testing.assert_allclose(limited.x.plan, plan, atol=1e-15)
    assert limited.residuals["marginal_error"] == pytest.approx(sum(limited.x.marginal_error), rel=1e-12)
    full = sparse_ot(problem, tol=1e-9)
    assert full.history["marginal_error"][-1] <= 1e-9
    assert full.counts["cg_iterations"] > 0 and full.counts["newton_steps"] == full.nit


def test_zero_mass_column_and_point_masses() -> None:
    cost, a, b = _random(6, 5, seed=1)
    b = np.array([0.0, 0.25, 0.25, 0.25, 0.25])
    problem = TransportProblem(a, b, cost, Quadratic(0.05))
    result = sparse_ot(problem, algorithm="newton", tol=1e-10)
    assert result.success, result.message
    assert np.all(result.x.plan[:, 0] == 0.0) and np.all(np.isfinite(result.x.plan))
    single = TransportProblem(np.array([1.0]), np.array([1.0]), np.array([[0.3]]), Quadratic(0.05))
    result = sparse_ot(single, algorithm="newton", tol=1e-12)
    assert result.success and result.x.plan[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_bad_options() -> None:
    problem = _problem(6, 6, Quadratic(0.1))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        sparse_ot(problem, algorithm="simplex")
    with pytest.raises(ValueError, match="formulation='dual'"):
        sparse_ot(problem, algorithm="newton", formulation="semi-dual")
    with pytest.raises(ValueError, match="numpy' and 'numba"):
        sparse_ot(problem, algorithm="newton", backend="jax")
    with pytest.raises(TypeError, match="pair"):
        sparse_ot(problem, algorithm="newton", init=np.zeros(6))
    with pytest.raises(ValueError, match="init potentials must be finite"):
        sparse_ot(problem, algorithm="newton", init=(np.full(6, np.nan), np.zeros(6)))
    with pytest.raises(TypeError, match="unknown|valid|unexpected"):
        optkit.solve(problem, "sparse-ot", algorithm="newton", shift=2.0)


def test_screened_numba_scan_is_exact() -> None:
    # The Numba backend scans only the entries within `margin` of being positive at a reference point; from any
    # point closer than the margin (sup norms of the potential changes) every other score stays negative, so the
    # support, value and gradient must equal the full NumPy scan's, and a point farther away must trigger a rescan.
    cost, a, b = _random(30, 25, seed=2)
    rng = np.random.default_rng(7)
    alpha, beta = 0.5 + 0.1 * rng.normal(size=30), 0.1 * rng.normal(size=25)
    full = newton._NumpyBackend(cost)
    for k in (3, 30):
        screened = newton._NumbaBackend(cost)
        assert screened.margin == pytest.approx(1e-3 * (cost.max() - cost.min()))
        for scale, screens in ((0.0, 1), (0.2, 1), (0.45, 1), (5.0, 2)):
            step = scale * screened.margin  # sup-norm change: step (alpha) + step / 2 (beta)
            moved_alpha, moved_beta = alpha + step * np.sign(rng.normal(size=30)), beta - step * np.ones(25) / 2
            ours = screened.support(moved_alpha, moved_beta, a, b, 0.1, k)
            ref = full.support(moved_alpha, moved_beta, a, b, 0.1, k)
            # Same entries, summed in the same order up to the row sums' accumulation: rounding-level agreement.
            assert ours.value == pytest.approx(ref.value, rel=1e-14)
            np.testing.assert_allclose(ours.grad, ref.grad, rtol=1e-13, atol=1e-15)
            np.testing.assert_array_equal(_pattern(ours, 30, 25), _pattern(ref, 30, 25))
            assert screened.screens == screens


def test_extreme_gamma() -> None:
    # Huge gamma: the plan is dense and D an exact quadratic. The potentials must not drift along (1, -1): a
    # drift to ~4e7, with scores ~1e5, once held the error at 6e-10 through cancellation in the dual value.
    for backend in ("numpy", "numba"):
        problem = _problem(40, 30, Quadratic(1e8), seed=3)
        large = sparse_ot(problem, backend=backend, tol=1e-13)
        assert large.success, large.message
        alpha, beta = large.x.potentials
        scores = alpha[:, None] + beta[None, :] - np.asarray(problem.cost)
        assert max(abs(alpha).max(), abs(beta).max()) <= 2 * scores.max()
    # Tiny gamma (1e-6 of the cost range): the continuation starts at the cost range (10 stages of 4x) and the
    # method gets close to the LP; whatever the status, nothing is NaN and the value is the best seen.
    assert len(newton.schedule(1e-6, 40, 40, 1e-9, 1.0, True, spread=1.0)) == 11
    tiny = sparse_ot(_problem(40, 30, Quadratic(1e-6), seed=3), backend="numba", tol=1e-9)
    assert np.all(np.isfinite(tiny.x.plan)) and np.isfinite(tiny.fun)
    assert sum(tiny.x.marginal_error) < 1e-6
    emd = ot.emd2(np.full(40, 1 / 40), np.full(30, 1 / 30), np.asarray(_problem(40, 30, None, seed=3).cost))
    # The regularized optimum lies between the LP value and the LP value plus gamma/2 |P_lp|_F^2 <= gamma/2 *
    # max(P) * sum(P) <= 1e-6 / 60; our dual value is within ~ error * |potentials| of it.
    assert tiny.x.dual_objective == pytest.approx(emd, abs=1e-7)
    assert tiny.fun >= emd - 1e-9


# The 18 small instances of the algorithm="auto" check (the 15 first used to compare Newton with L-BFGS, plus
# random costs at the other gamma): clouds n = 60, 200 with k = 1, 2, 3; random costs n = 100 with k = 1, 2, 5;
# gamma = 0.01, 0.1.
def _auto_instances():
    from optkit.problems.library.transport_instances import (
        point_clouds,
        random_assignment,
    )

    cases = [(f"clouds{n}-k{k}-g{g}", lambda n=n, k=k, g=g: point_clouds(n, seed=0,
                                                                         regularization=SparsityConstrained(k, g)))
             for n in (60, 200) for k in (1, 2, 3) for g in (0.01, 0.1)]
    cases += [(f"random100-k{k}-g{g}", lambda k=k, g=g: random_assignment(100, seed=0,
                                                                           regularization=SparsityConstrained(k, g)))
              for k in (1, 2, 5) for g in (0.01, 0.1)]
    return cases


_FAST = {"clouds60-k3-g0.01", "clouds60-k2-g0.1", "random100-k5-g0.1", "random100-k1-g0.1"}


@pytest.mark.parametrize("formulation", ["dual", "semi-dual"])
@pytest.mark.parametrize("name,make", [pytest.param(name, make, id=name, marks=() if name in _FAST
                                                    else pytest.mark.slow) for name, make in _auto_instances()])
def test_auto_returns_a_feasible_k_sparse_plan(name: str, make, formulation: str) -> None:
    # algorithm="auto" (Newton on the quadratic relaxation; polishing and L-BFGS where the constraint binds) must
    # return a plan with at most k nonzeros per column meeting tol = 1e-6 on all 18 instances. Its objective is
    # bounded below by the dual value of L-BFGS alone, an independent method on the same concave k-(semi-)dual
    # (weak duality), up to what a plan missing the marginals by e can undercut: e * max(C + gamma P).
    # Without polishing, L-BFGS alone does not converge on 16 of these 36 cases (the relaxation gap).
    problem = make()
    k, gamma = problem.regularization.k, problem.regularization.gamma
    reference = sparse_ot(problem, algorithm="lbfgs", formulation=formulation)
    auto = sparse_ot(problem, formulation=formulation)
    plan = auto.x.plan
    assert auto.success, auto.message
    assert auto.info["max_nonzeros_per_column"] <= k and np.all(np.isfinite(plan)) and np.all(plan >= 0)
    error = np.abs(plan.sum(axis=1) - problem.a).sum() + np.abs(plan.sum(axis=0) - problem.b).sum()
    assert error <= 1e-6
    slack = error * (float(np.max(problem.cost)) + gamma * plan.max()) + 1e-12
    assert auto.fun >= reference.x.dual_objective - slack
    assert auto.info["duality_gap"] >= -slack
    if auto.info["algorithm"] == "newton":  # the relaxed plan is k-sparse: no duality gap (see sparse._auto_sparse)
        scale = max(np.abs(np.concatenate(auto.x.potentials)).max(), 1.0)
        assert auto.info["duality_gap"] == pytest.approx(0.0, abs=1e-6 * scale)
    elif auto.info["algorithm"] == "newton+polish":  # accepted at the relaxation: within POLISH_ACCEPT_GAP
        assert auto.info["duality_gap"] <= 1e-4 * abs(auto.fun)
    else:  # the L-BFGS phase ran: its dual value is the lower bound when it is the higher one
        assert auto.x.dual_objective >= reference.x.dual_objective - 1e-12
        names = [p["phase"] for p in auto.info["phases"]]
        assert names[0] == "newton (quadratic relaxation)" and f"lbfgs (k-{formulation})" in names


def test_auto_two_phases_history_callback_and_limits() -> None:
    from optkit.problems.library.transport_instances import point_clouds

    problem = point_clouds(60, seed=0, regularization=SparsityConstrained(2, 0.1))  # the constraint binds
    seen = []
    # without polishing: Newton, then L-BFGS (with it, see test_auto_polish_phases_history_and_callback)
    result = sparse_ot(problem, callback=lambda state: seen.append(state.nit), polish=False)
    phases = result.info["phases"]
    assert result.info["algorithm"] == "newton+lbfgs" and len(phases) == 2
    assert result.nit == phases[0]["nit"] + phases[1]["nit"] == result.counts["iterations"]
    # every iteration but the run's last is seen (the driver does not call back on the step that ends the run)
    assert seen == list(range(1, result.nit))
    history = result.history
    assert history["nit"][-1] == result.nit and np.all(np.diff(history["time"]) >= 0)
    assert set(np.unique(history["phase"])) == {1.0, 2.0}
    # limits apply to the total
    for cap in (1, phases[0]["nit"], phases[0]["nit"] + 3):
        limited = sparse_ot(problem, max_iter=cap, tol=1e-300)  # polishing cannot meet tol = 1e-300 either
        assert limited.status is optkit.Status.MAX_ITER and limited.nit == cap
        assert limited.info["max_nonzeros_per_column"] <= 2
    stopped = sparse_ot(problem, callback=lambda state: state.nit >= phases[0]["nit"] + 2, polish=False)
    assert stopped.status is optkit.Status.CALLBACK_STOP and stopped.nit == phases[0]["nit"] + 2
    assert sparse_ot(problem, time_limit=1e-9).status is optkit.Status.TIME_LIMIT


def test_auto_polish_phases_history_and_callback() -> None:
    from optkit.problems.library.transport_instances import point_clouds

    # The relaxation's polished plan has a relative gap of 2.9e-4 > POLISH_ACCEPT_GAP here, so L-BFGS runs, is
    # polished in turn, and the lower-objective plan is returned with the higher dual value.
    problem = point_clouds(60, seed=0, regularization=SparsityConstrained(2, 0.1))
    seen = []
    result = sparse_ot(problem, callback=lambda state: seen.append(state.nit))
    phases = result.info["phases"]
    assert result.success and result.info["algorithm"] == "newton+lbfgs+polish+choice"
    assert [p["phase"] for p in phases] == ["newton (quadratic relaxation)", "polish", "lbfgs (k-dual)", "polish"]
    assert result.nit == phases[0]["nit"] + phases[2]["nit"] == result.counts["iterations"]
    assert result.counts["polish_rounds"] == phases[1]["rounds"] + phases[3]["rounds"]
    assert seen == list(range(1, result.nit))  # polishing calls no callback; every other iteration but the last
    history = result.history
    assert set(np.unique(history["phase"])) == {1.0, 2.0, 3.0, 4.0} and np.all(np.diff(history["time"]) >= 0)
    assert np.all(np.diff(history["nit"]) >= 0) and history["nit"][-1] == result.nit
    reference = sparse_ot(problem, algorithm="lbfgs", polish=False)
    assert result.x.dual_objective == pytest.approx(reference.x.dual_objective, abs=1e-12)
    assert result.fun <= sparse_ot(problem, polish=True, max_iter=phases[0]["nit"]).fun  # the better plan
