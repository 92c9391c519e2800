"""``penalty`` with ``backend="jax"``: the default deterministic loop with compiled inner solves.

References: the NumPy backend on the same instances (the same algorithm: same steps, stopping tests, counts), the
closed forms of T2 and benchopt's quadratic (``x_star`` by a linear solve, ``hypergradient`` exact), and SciPy's
L-BFGS-B on the exact hyper-objective for a box-constrained X. Tolerances: the two backends differ by rounding
only (different summation orders in XLA, Numba and BLAS), amplified by the outer BB steps over ~50-100 iterations,
so iterates agree to 1e-8 (observed ~1e-10); against the closed forms the bound is the penalty bias O(sigma) =
O(1e-5) plus the stopping rule (gradient mapping <= 1e-6 over a hyper-Hessian with smallest eigenvalue ~1e-2):
1e-4, as in ``test_penalty_default.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

import optkit
from optkit.problems.bilevel import BilevelProblem
from optkit.problems.library import bilevel_toys as toys
from optkit.problems.sets import Box
from optkit.solvers.bilevel import _penalty_jax
from optkit.solvers.bilevel import penalty as penalty_module
from optkit.solvers.bilevel._common import LowerFeasibleSet, Oracles

_SMALL = {"t2": lambda jax: toys.t2(jax=jax),
          "benchopt": lambda jax: toys.benchopt_quadratic(20, 20, 128, seed=1, jax=jax)}
_BUILT: dict = {}


def _toy(name: str, jax: bool) -> toys.BilevelToy:
    # one instance per (toy, backend) for the whole module: the compiled programs are built once per problem
    if (name, jax) not in _BUILT:
        _BUILT[name, jax] = _SMALL[name](jax)
    return _BUILT[name, jax]


def _calls(result: optkit.Result) -> int:
    return int(result.counts["upper_grad"] + result.counts["lower_grad"])


@pytest.mark.parametrize("name", sorted(_SMALL))
def test_jax_backend_matches_numpy_backend_and_closed_form(name: str) -> None:
    reference = _toy(name, False)
    toy = _toy(name, True)
    expected = optkit.solve(reference.problem, "penalty")
    result = optkit.solve(toy.problem, "penalty", backend="jax")
    assert result.status is optkit.Status.CONVERGED and result.backend == "jax"
    if name == "t2":
        # same algorithm: same iterations, oracle calls, function values, phases
        assert result.nit == expected.nit
        assert _calls(result) == _calls(expected)
        for key in ("upper_value", "lower_value"):
            assert result.counts[key] == expected.counts[key]
        for key in ("backtracks", "rollbacks", "final_mode"):
            assert result.info[key] == expected.info[key]
        atol = 1e-8
    else:
        # ~175 outer steps on a hyper-objective with condition number ~1e4: rounding differences (XLA's
        # summation order against Numba's and BLAS's) change late BB steps, so the runs end one or two
        # iterations apart (174 vs 175 here; 663 calls both on the benchmark's size)
        assert abs(result.nit - expected.nit) <= 0.02 * expected.nit
        assert abs(_calls(result) - _calls(expected)) <= 0.02 * _calls(expected)
        atol = 1e-5  # both within the stopping rule of x*
    np.testing.assert_allclose(result.x[0], expected.x[0], atol=atol)
    np.testing.assert_allclose(result.x[1], expected.x[1], atol=atol)
    np.testing.assert_allclose(result.info["z"], expected.info["z"], atol=atol)
    assert np.linalg.norm(result.x[0] - toy.x_star) <= 1e-4
    assert np.linalg.norm(toy.hypergradient(result.x[0])) <= 1e-4


def test_line_search_phase_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    # _WATCHDOG = 0: the non-monotone line search from the start (backtracking, refinement, value calls)
    monkeypatch.setattr(penalty_module, "_WATCHDOG", 0)
    expected = optkit.solve(_toy("t2", False).problem, "penalty")
    toy = _toy("t2", True)
    result = optkit.solve(toy.problem, "penalty", backend="jax")
    assert result.info["final_mode"] == "line search" and result.status is optkit.Status.CONVERGED
    assert result.nit == expected.nit and _calls(result) == _calls(expected)
    assert result.counts["upper_value"] == expected.counts["upper_value"]
    np.testing.assert_allclose(result.x[0], expected.x[0], atol=1e-8)
    assert np.linalg.norm(result.x[0] - toy.x_star) <= 1e-4


def test_box_constrained_x_against_scipy() -> None:
    from scipy.optimize import minimize

    toy = toys.t2(jax=True)
    base = toy.problem
    n, m = base.dims
    lower, upper = np.full(n, -0.5), np.full(n, 0.5)
    problem = BilevelProblem(base.upper.spec, base.lower.spec, x_set=Box(lower, upper), x0=np.zeros(n),
                             y0=np.zeros(m))
    assert np.any(np.abs(toy.x_star) > 0.5)  # the box is active at the solution

    def phi(x: np.ndarray) -> tuple[float, np.ndarray]:
        return float(base.upper.value(x, toy.y_of_x(x))), toy.hypergradient(x)

    reference = minimize(phi, np.zeros(n), jac=True, method="L-BFGS-B", bounds=list(zip(lower, upper)),
                         options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
    expected = optkit.solve(problem, "penalty", backend="numpy")
    result = optkit.solve(problem, "penalty", backend="jax")
    assert result.status is optkit.Status.CONVERGED
    assert _calls(result) == _calls(expected)
    np.testing.assert_allclose(result.x[0], expected.x[0], atol=1e-8)
    assert np.linalg.norm(result.x[0] - reference.x) <= 1e-4


def test_copies_step_by_step_and_gradient_reuse() -> None:
    # one _Copies (NumPy/Numba) and one JaxCopies driven through the same solves: same state, same counts; a solve
    # re-entered at the same x from the returned points reuses the gradients (no new calls)
    reference, toy = _toy("t2", False), _toy("t2", True)
    x = np.linspace(-1.0, 1.0, 10)
    y0 = np.zeros(10)
    oracles_np, oracles_jax = Oracles(reference.problem), Oracles(toy.problem)
    copies_np = penalty_module._Copies.start(oracles_np, LowerFeasibleSet(reference.problem), x, y0)
    copies_jax = _penalty_jax.start_copies(oracles_jax, LowerFeasibleSet(toy.problem), x, y0)
    assert copies_jax.lipschitz_f == pytest.approx(copies_np.lipschitz_f, rel=1e-10)
    assert copies_jax.lipschitz_F == pytest.approx(copies_np.lipschitz_F, rel=1e-10)
    for target, max_steps, min_steps in ((0.0, 2, 2), (1e-3, 500, 0), (1e-3, 500, 0), (1e-7, 500, 0)):
        grads_np = copies_np.solve(x, 1e-5, target, max_steps, min_steps, values=True)
        grads_jax = copies_jax.solve(x, 1e-5, target, max_steps, min_steps, values=True)
        assert oracles_jax.counts["upper_grad"] == oracles_np.counts["upper_grad"]
        assert oracles_jax.counts["lower_grad"] == oracles_np.counts["lower_grad"]
        for key in ("Fx", "fx_y", "fx_z"):
            np.testing.assert_allclose(grads_jax[key], grads_np[key], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(copies_jax.y, copies_np.y, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(copies_jax.z, copies_np.z, rtol=1e-9, atol=1e-12)
        assert copies_jax.r_z == pytest.approx(copies_np.r_z, rel=1e-6)
        # r_d = ||beta (g_y - g_z)|| / (beta sigma): rounding of the gradients (~1e-16 |g|) divided by sigma = 1e-5
        assert copies_jax.r_d == pytest.approx(copies_np.r_d, rel=1e-6, abs=1e-9)
        np.testing.assert_allclose(copies_jax.values(x), copies_np.values(x), rtol=1e-12)
        assert oracles_jax.counts["upper_value"] == oracles_np.counts["upper_value"]
    # the repeated (1e-3) solve was already met at its start: the cached gradients, no new calls
    before = oracles_jax.counts["upper_grad"]
    copies_jax.solve(x, 1e-5, 1.0, 500)
    assert oracles_jax.counts["upper_grad"] == before
    saved = copies_jax.save()
    copies_jax.solve(x + 0.1, 1e-5, 0.0, 3, 3)
    copies_jax.restore(saved)
    np.testing.assert_allclose(copies_jax.y, copies_np.y, rtol=1e-9, atol=1e-12)


def test_segment_runs_the_checkpoint_solve_like_a_separate_call() -> None:
    # a segment that ends at the checkpoint computes the checkpoint's solve in the same call; the next solve with
    # those arguments returns it (no program call) with the state, gradients, values and counts of a real call
    toy = _toy("t2", True)
    x0 = np.linspace(-1.0, 1.0, 10)
    runs = []
    for checkpoint_at in (3, 99):
        oracles = Oracles(toy.problem)
        copies = _penalty_jax.start_copies(oracles, LowerFeasibleSet(toy.problem), x0, np.zeros(10))
        grads = copies.solve(x0, 1e-5, 0.0, 2, 2)
        g = grads["Fx"] + (grads["fx_y"] - grads["fx_z"]) / 1e-5
        steps, bad, x, _, _, _, _, smallest = copies.fast_segment(x0, g, 1e-5, 1e-3, np.inf, 3, 2, 1e-6, True,
                                                                  checkpoint_at, 3.0, 500)
        assert steps == 3 and not bad
        if checkpoint_at == 3:
            def no_call(*args: object) -> None:
                raise AssertionError("the checkpoint's solve was computed by the segment")

            copies._solve = no_call
        target = max(1e-14, 3.0 * smallest)
        grads = copies.solve(x, 1e-5, target, 500, 0, values=True)
        runs.append((grads, copies.values(x), copies.y.copy(), copies.z.copy(), copies.r_z, copies.r_d,
                     dict(oracles.counts)))
    (grads_a, values_a, y_a, z_a, rz_a, rd_a, counts_a), (grads_b, values_b, y_b, z_b, rz_b, rd_b, counts_b) = runs
    assert counts_a == counts_b
    for key in ("Fx", "fx_y", "fx_z"):
        np.testing.assert_allclose(grads_a[key], grads_b[key], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(values_a, values_b, rtol=1e-12)
    np.testing.assert_allclose(y_a, y_b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(z_a, z_b, rtol=1e-12, atol=1e-14)
    assert rz_a == pytest.approx(rz_b, rel=1e-9) and rd_a == pytest.approx(rd_b, rel=1e-6, abs=1e-9)


def test_auto_backend_and_refusals() -> None:
    toy = toys.t2(jax=True)
    assert optkit.solve(toy.problem, "penalty", max_iter=2).backend == "jax"
    assert optkit.solve(toy.problem, "penalty", max_iter=2, outer_step="secant").backend == "numpy"
    assert optkit.solve(toys.t2().problem, "penalty", max_iter=2).backend == "numpy"
    for options in ({"batch_size": 8}, {"inner_steps": 2}, {"step": 0.1}, {"outer_step": "secant"},
                    {"outer_step": "bb"}):
        with pytest.raises(ValueError, match="backend='jax' runs the default deterministic loop only"):
            optkit.solve(toy.problem, "penalty", backend="jax", **options)
    with pytest.raises(ValueError, match="JAX-traceable"):
        optkit.solve(toys.t2().problem, "penalty", backend="jax")
    with pytest.raises(ValueError, match="backend"):
        optkit.solve(toy.problem, "penalty", backend="numba")


@pytest.fixture(scope="module")
def t2_pair() -> tuple:
    # one JAX problem for the tests below: its compiled programs are built once
    return _toy("t2", False), _toy("t2", True)


def _same_run(result: optkit.Result, expected: optkit.Result, atol: float = 1e-8) -> None:
    assert result.status is expected.status and result.nit == expected.nit
    assert {k: int(v) for k, v in result.counts.items()} == {k: int(v) for k, v in expected.counts.items()}
    for key in ("backtracks", "rollbacks", "final_mode"):
        assert result.info[key] == expected.info[key]
    np.testing.assert_allclose(result.x[0], expected.x[0], atol=atol)


def test_callback_fires_once_per_segment(t2_pair: tuple) -> None:
    # the watchdog phase runs as compiled segments up to each checkpoint (every 10 steps): one history row and one
    # callback per segment; the iterate the callback sees is the NumPy backend's after as many iterations
    reference, toy = t2_pair
    seen = []

    def stop(state: object) -> bool:
        x, y = state.x  # type: ignore[attr-defined]
        seen.append((state.nit, type(x), type(y)))  # type: ignore[attr-defined]
        return len(seen) == 3

    result = optkit.solve(toy.problem, "penalty", backend="jax", callback=stop)
    assert result.status is optkit.Status.CALLBACK_STOP
    assert [nit for nit, _, _ in seen] == [10, 20, 30] and result.nit == 30
    assert list(result.history["nit"]) == [10, 20, 30]
    assert all(a is np.ndarray and b is np.ndarray for _, a, b in seen)
    expected = optkit.solve(reference.problem, "penalty", max_iter=30)
    np.testing.assert_allclose(result.x[0], expected.x[0], atol=1e-8)
    assert int(result.counts["upper_grad"]) == int(expected.counts["upper_grad"])
    assert len(expected.history["nit"]) == 30  # NumPy: one row per iteration


@pytest.mark.parametrize("max_iter", [1, 4, 10, 13, 27])
def test_segments_stop_at_the_iteration_budget(t2_pair: tuple, max_iter: int) -> None:
    # a segment never runs past the budget drive passes: same iterations, counts and iterate as NumPy
    reference, toy = t2_pair
    expected = optkit.solve(reference.problem, "penalty", max_iter=max_iter)
    result = optkit.solve(toy.problem, "penalty", backend="jax", max_iter=max_iter)
    assert result.status is optkit.Status.MAX_ITER
    _same_run(result, expected)


def test_segments_stop_where_sigma_changes(t2_pair: tuple) -> None:
    # geometric sigma from 1e-3 to 1e-5: a segment ends before the first step with another sigma (the outer loop
    # re-evaluates the point and restarts the checkpoint memory there)
    reference, toy = t2_pair
    expected = optkit.solve(reference.problem, "penalty", sigma0=1e-3, sigma_decay=0.5)
    result = optkit.solve(toy.problem, "penalty", backend="jax", sigma0=1e-3, sigma_decay=0.5)
    assert result.status is optkit.Status.CONVERGED
    _same_run(result, expected)


def test_failed_checkpoint_rolls_back_like_numpy(t2_pair: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    # a sufficient-decrease constant of 0.9 makes the first watchdog checkpoint fail on T2: the run returns to the
    # previous checkpoint and continues with the line search, in both backends
    monkeypatch.setattr(penalty_module, "_NM_GAMMA", 0.9)
    reference, toy = t2_pair
    expected = optkit.solve(reference.problem, "penalty")
    result = optkit.solve(toy.problem, "penalty", backend="jax")
    assert expected.info["rollbacks"] == 1 and expected.status is optkit.Status.CONVERGED
    _same_run(result, expected)


def test_non_finite_copies_end_with_numerical_error_like_numpy() -> None:
    import jax.numpy as jnp

    def upper(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
        return jnp.sum((x - 1.0) ** 2) + jnp.sum(y**2)

    def lower(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:  # unbounded below in y: the copies overflow
        return -jnp.sum(jnp.exp(y)) + jnp.sum(x * y)

    problem = BilevelProblem(upper, lower, x0=np.zeros(2), y0=np.zeros(2))
    expected = optkit.solve(problem, "penalty", backend="numpy", max_iter=50)
    result = optkit.solve(problem, "penalty", backend="jax", max_iter=50)
    assert result.status is expected.status is optkit.Status.NUMERICAL_ERROR
    assert _calls(result) == _calls(expected)
    assert np.all(np.isfinite(result.x[0])) and np.all(np.isfinite(result.x[1]))
