"""``f2sa`` with ``backend="jax"``: the same iteration as the NumPy backend, ``check_every`` outer iterations
(default 10) per compiled call (``check_every=1``: the per-iteration kernel with the host's outer loop).

References: the NumPy backend on the same instances (``t2(jax=False)`` and ``benchopt_quadratic(jax=False)`` are
the instances of the ``jax=True`` variants, checked in ``test_jax_common.py``), and the closed forms ``x_star`` and
``hypergradient`` of the quadratic toys.

Tolerances. Both backends take the same steps from the same start with the same step sizes (the curvature probes
are the same power iteration), so they stop at the same iteration with the same counts and their iterates differ
by rounding only, amplified along the run by at most the contraction's condition: observed <= 2e-11 on t2 over
5 000 outer steps, asserted to 1e-8. Inside a segment the outer step rule runs in the compiled loop (norms by
``sqrt(dot)`` instead of ``np.linalg.norm``): rounding-level differences again; over 57 iterations of t2 the two
trajectories agree to ~1e-13, asserted to 1e-10. Against the closed form, F2SA stops at the minimiser of the penalised
hyper-objective, whose distance to x* is the bias O(1/lambda) (Kwon et al. 2023, Lemma 3.1), plus tol/mu_h from
the stopping rule (the x gradient mapping <= tol, mu_h the hyper-objective's strong convexity).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp

import optkit
from optkit.problems.bilevel import BilevelProblem
from optkit.problems.library.bilevel_toys import benchopt_quadratic, t1, t2
from optkit.problems.sets import Box, Simplex
from optkit.solvers.bilevel._common import schedule
from optkit.solvers.bilevel._value_penalty import run_value_penalty


@functools.cache
def _traced_t2():
    # one instance for the whole module: compiled programs are cached per problem, so tests share them
    return t2(jax=True)


def _calls(result: optkit.Result) -> tuple[int, int]:
    return int(result.counts["upper_grad"]), int(result.counts["lower_grad"])


def _same_run(jax_result: optkit.Result, numpy_result: optkit.Result, atol: float = 1e-8) -> None:
    assert jax_result.backend == "jax" and numpy_result.backend == "numpy"
    assert jax_result.status is numpy_result.status
    # the same iteration; the stop can move by a few steps when the inner residual (r / sigma: rounding in y
    # times lambda) creeps across tol slowly (benchopt 20 x 20, lambda = 1e5: 3 072 against 3 068)
    assert abs(jax_result.nit - numpy_result.nit) <= 2 + 0.005 * numpy_result.nit
    if jax_result.nit == numpy_result.nit:
        assert _calls(jax_result) == _calls(numpy_result)
    np.testing.assert_allclose(jax_result.x[0], numpy_result.x[0], rtol=0, atol=atol)
    np.testing.assert_allclose(jax_result.x[1], numpy_result.x[1], rtol=0, atol=atol)
    np.testing.assert_allclose(jax_result.info["z"], numpy_result.info["z"], rtol=0, atol=atol)


@pytest.mark.parametrize("inner_steps", [2, 10])
def test_t2_matches_numpy_backend_and_closed_form(inner_steps: int) -> None:
    # lambda ramps 1e4 -> 1e5 over the first 10 steps (the schedule's sigma changes between compiled calls)
    options = {"lambda0": 1e4, "lambda_max": 1e5, "lambda_rate": 1.0, "inner_steps": inner_steps}
    traced, plain = _traced_t2(), t2()
    got = optkit.solve(traced.problem, "f2sa", backend="jax", **options)
    want = optkit.solve(plain.problem, "f2sa", **options)
    assert got.status is optkit.Status.CONVERGED
    _same_run(got, want)
    # counts: 9 + 9 probe gradients, then per outer step T z-steps (f), T y-steps (F and f), 3 at the returned pair
    T = inner_steps
    for result in (got, want):
        k = result.nit
        assert _calls(result) == (9 + (T + 1) * k, 9 + (2 * T + 2) * k)
        assert result.info["oracle_calls"] == 18 + (3 * T + 3) * k
    # bias O(1/lambda) = O(1e-5) (measured on t2: |x - x*| ~ 1.9/lambda, |grad h| ~ 0.7/lambda)
    assert np.linalg.norm(got.x[0] - traced.x_star) <= 1e-4
    assert np.linalg.norm(traced.hypergradient(got.x[0])) <= 5e-5


def test_benchopt_fixed_lambda_matches_numpy_and_closed_form() -> None:
    # the benchmark's setting (fixed lambda = 1e5, T = 2) on a small instance of benchopt's recipe
    options = {"lambda0": 1e5, "lambda_max": 1e5, "inner_steps": 2}
    traced, plain = benchopt_quadratic(20, 20, 128, jax=True), benchopt_quadratic(20, 20, 128)
    got = optkit.solve(traced.problem, "f2sa", backend="jax", **options)
    want = optkit.solve(plain.problem, "f2sa", **options)
    assert got.status is optkit.Status.CONVERGED
    _same_run(got, want)
    assert _calls(got) == (9 + 3 * got.nit, 9 + 6 * got.nit)
    # bias O(1/lambda) (measured: |x - x*| ~ 20/lambda, |grad h| ~ 2.5/lambda on this instance)
    assert np.linalg.norm(traced.hypergradient(got.x[0])) <= 1e-4
    assert np.linalg.norm(got.x[0] - traced.x_star) <= 1e-3


def _box_problem(traced: bool) -> BilevelProblem:
    # a quadratic bilevel problem whose unconstrained x* lies outside [-0.5, 0.5]^2: the box is active
    K = np.array([[1.0, 0.3], [-0.2, 0.8]])
    target = np.array([2.0, -1.5])
    if traced:
        def upper(x, y):
            return 0.5 * jnp.sum((y - target) ** 2) + 0.05 * jnp.sum(x**2)

        def lower(x, y):
            return 0.5 * jnp.sum((y - K @ x) ** 2) + 0.1 * jnp.sum(y**2)

        return BilevelProblem(upper, lower, x0=np.zeros(2), y0=np.zeros(2), x_set=Box(-0.5, 0.5, dim=2))
    from optkit.problems.functions import Function

    def upper_value(v):
        x, y = v[:2], v[2:]
        return 0.5 * float(np.sum((y - target) ** 2)) + 0.05 * float(np.sum(x**2))

    def upper_grad(v):
        x, y = v[:2], v[2:]
        return np.concatenate([0.1 * x, y - target])

    def lower_value(v):
        x, y = v[:2], v[2:]
        return 0.5 * float(np.sum((y - K @ x) ** 2)) + 0.1 * float(np.sum(y**2))

    def lower_grad(v):
        x, y = v[:2], v[2:]
        r = y - K @ x
        return np.concatenate([-K.T @ r, r + 0.2 * y])

    return BilevelProblem(Function(upper_value, grad=upper_grad), Function(lower_value, grad=lower_grad),
                          x0=np.zeros(2), y0=np.zeros(2), x_set=Box(-0.5, 0.5, dim=2))


def test_box_x_matches_numpy_backend() -> None:
    options = {"lambda_max": 1e4, "inner_steps": 3}
    got = optkit.solve(_box_problem(True), "f2sa", backend="jax", **options)
    want = optkit.solve(_box_problem(False), "f2sa", **options)
    assert got.status is optkit.Status.CONVERGED
    _same_run(got, want)
    assert np.all(np.abs(got.x[0]) <= 0.5) and np.max(np.abs(got.x[0])) == pytest.approx(0.5)


def test_penalty_shared_inner_engine_matches_numpy() -> None:
    # the engine's Jacobi mode (penalty's fixed inner steps) has a JAX kernel too (penalty.py wires its backends)
    def run(toy, backend):
        return run_value_penalty(
            toy.problem, "penalty", sigma_of=lambda k: schedule(1e-4, 1e-4, k, kind="geometric", rate=0.5),
            sigma_final=1e-4, tol=1e-6, max_iter=20_000, step=None, step_decay=0.0, inner_steps=2, inner_max=2,
            inner_rtol=1.0, batch_size=None, time_limit=None, callback=None, progress=False, seed=None,
            extra_info={}, outer_rule="bb", shared_inner=True, backend=backend)

    got, want = run(_traced_t2(), "jax"), run(t2(), "numpy")
    assert got.status is optkit.Status.CONVERGED
    _same_run(got, want)
    assert _calls(got) == (9 + 2 * got.nit, 9 + 4 * got.nit)


def test_loop_contract_on_jax_backend() -> None:
    toy = _traced_t2()
    result = optkit.solve(toy.problem, "f2sa", backend="jax", max_iter=1, tol=1e-300)
    assert result.status is optkit.Status.MAX_ITER and result.nit == 1
    seen = []

    def stop(state):
        seen.append((state.x[0].copy(), state.x[1].copy()))
        return len(seen) >= 3

    result = optkit.solve(toy.problem, "f2sa", backend="jax", callback=stop)
    assert result.status is optkit.Status.CALLBACK_STOP and len(seen) == 3
    assert isinstance(seen[-1][1], np.ndarray) and seen[-1][1].dtype == np.float64
    np.testing.assert_array_equal(result.x[0], seen[-1][0])


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_non_finite_iterate_is_reported() -> None:
    # a fixed outer step far beyond 2/L_h diverges: NUMERICAL_ERROR with the last finite iterate
    result = optkit.solve(_traced_t2().problem, "f2sa", backend="jax", step=1e7, max_iter=2000)
    assert result.status is optkit.Status.NUMERICAL_ERROR
    assert np.all(np.isfinite(result.x[0])) and np.all(np.isfinite(result.x[1]))


@pytest.mark.parametrize("options", [{"lambda0": 100.0, "lambda_rate": 1.0}, {"step": 0.05, "step_decay": 0.5}])
def test_segments_follow_the_numpy_trajectory(options: dict) -> None:
    # 57 iterations (a segment budget of 7 at the end), lambda ramping inside segments (secant rule) or a decaying
    # fixed step: the same trajectory as the NumPy backend, iteration by iteration, and its counts
    traced, plain = _traced_t2(), t2()
    run = {"max_iter": 57, "tol": 1e-300, "inner_steps": 2, **options}
    got = optkit.solve(traced.problem, "f2sa", backend="jax", check_every=10, **run)
    want = optkit.solve(plain.problem, "f2sa", **run)
    assert got.status is want.status is optkit.Status.MAX_ITER
    assert got.nit == want.nit == 57
    assert _calls(got) == _calls(want) == (9 + 3 * 57, 9 + 6 * 57)
    np.testing.assert_allclose(got.x[0], want.x[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.x[1], want.x[1], rtol=0, atol=1e-10)
    # one history row per segment: 5 of 10 iterations and one of 7 (the iteration budget)
    np.testing.assert_array_equal(got.history["nit"], [10, 20, 30, 40, 50, 57])
    assert len(want.history["nit"]) == 57


def test_segment_length_does_not_change_the_run() -> None:
    # the stopping test runs inside the segment: the same stop, counts and iterate for any check_every, on both
    # backends; the callback sees segment ends only
    options = {"lambda0": 1e4, "lambda_max": 1e5, "lambda_rate": 1.0, "inner_steps": 2}
    traced, plain = _traced_t2(), t2()
    runs = {ce: optkit.solve(traced.problem, "f2sa", backend="jax", check_every=ce, **options) for ce in (1, 7)}
    runs[10] = optkit.solve(traced.problem, "f2sa", backend="jax", **options)  # the default
    reference = optkit.solve(plain.problem, "f2sa", **options)
    chunked = optkit.solve(plain.problem, "f2sa", check_every=7, **options)
    for result in (*runs.values(), chunked):
        assert result.status is optkit.Status.CONVERGED
        assert result.nit == reference.nit
        assert _calls(result) == _calls(reference)
        np.testing.assert_allclose(result.x[0], reference.x[0], rtol=0, atol=1e-8)
    np.testing.assert_array_equal(chunked.x[0], reference.x[0])  # NumPy: the same Python iteration
    nit = reference.nit
    assert len(runs[7].history["nit"]) == len(chunked.history["nit"]) == -(-nit // 7)
    assert runs[7].history["nit"][-1] == nit
    seen = []
    optkit.solve(traced.problem, "f2sa", backend="jax", check_every=7, callback=lambda s: seen.append(s.nit),
                 **options)
    assert seen == list(range(7, 7 * (len(seen) + 1), 7)) and len(seen) == (nit - 1) // 7


def test_segment_bb_and_shared_modes_match_numpy() -> None:
    # the engine's other outer rule (Barzilai-Borwein) and penalty's Jacobi mode inside a segment, sigma ramping
    def run(toy, backend, rule, shared):
        return run_value_penalty(
            toy.problem, "penalty", sigma_of=lambda k: schedule(1e-2, 1e-4, k, kind="geometric", rate=0.5),
            sigma_final=1e-4, tol=1e-6, max_iter=20_000, step=None, step_decay=0.0, inner_steps=2, inner_max=2,
            inner_rtol=1.0, batch_size=None, time_limit=None, callback=None, progress=False, seed=None,
            extra_info={}, outer_rule=rule, shared_inner=shared, backend=backend, check_every=10)

    traced, plain = _traced_t2(), t2()
    for rule, shared in (("bb", True), ("bb", False), ("secant", True)):
        got, want = run(traced, "jax", rule, shared), run(plain, "numpy", rule, shared)
        assert got.status is optkit.Status.CONVERGED
        _same_run(got, want)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_non_finite_inside_a_segment_matches_numpy() -> None:
    # the divergent run fails in the middle of a segment: the same failing iteration and counts as NumPy
    got = optkit.solve(_traced_t2().problem, "f2sa", backend="jax", step=1e7, max_iter=2000, check_every=10)
    want = optkit.solve(t2().problem, "f2sa", step=1e7, max_iter=2000)
    assert got.status is want.status is optkit.Status.NUMERICAL_ERROR
    assert got.nit == want.nit and got.nit % 10 != 0
    assert _calls(got) == _calls(want)
    assert np.all(np.isfinite(got.x[0])) and np.all(np.isfinite(got.x[1]))


def test_refusals() -> None:
    toy = _traced_t2()
    with pytest.raises(ValueError, match="batch_size"):
        optkit.solve(toy.problem, "f2sa", backend="jax", batch_size=8)
    with pytest.raises(ValueError, match="check_every"):
        optkit.solve(toy.problem, "f2sa", backend="jax", check_every=0)
    with pytest.raises(TypeError, match="check_every"):
        optkit.solve(toy.problem, "f2sa", backend="jax", check_every=2.5)
    with pytest.raises(ValueError, match="JAX-traceable"):
        optkit.solve(t1().problem, "f2sa", backend="jax")

    def F(x, y):
        return jnp.sum(x**2) + jnp.sum(y**2)

    simplex_y = BilevelProblem(F, F, x0=np.zeros(2), y0=np.full(2, 0.5), y_set=Simplex(2))
    with pytest.raises(ValueError, match="Y = R"):
        optkit.solve(simplex_y, "f2sa", backend="jax")
    with pytest.raises(ValueError, match="fixed inner steps"):
        run_value_penalty(
            toy.problem, "penalty", sigma_of=lambda k: 1e-3, sigma_final=1e-3, tol=1e-6, max_iter=10, step=None,
            step_decay=0.0, inner_steps=None, inner_max=10, inner_rtol=0.1, batch_size=None, time_limit=None,
            callback=None, progress=False, seed=None, extra_info={}, backend="jax")


def test_compiled_kernel_is_reused_per_problem() -> None:
    from optkit.solvers.bilevel._value_penalty_jax import fixed_inner_kernel

    problem = _traced_t2().problem
    assert fixed_inner_kernel(problem, 2, False) is fixed_inner_kernel(problem, 2, False)
    assert fixed_inner_kernel(problem, 3, False) is not fixed_inner_kernel(problem, 2, False)


def test_auto_backend_picks_jax_for_traceable_levels() -> None:
    problem = _traced_t2().problem
    assert optkit.solve(problem, "f2sa", inner_steps=2, max_iter=3, tol=1e-300).backend == "jax"
    # minibatches are NumPy-only: auto falls back instead of refusing
    assert optkit.solve(problem, "f2sa", inner_steps=2, max_iter=3, tol=1e-300, batch_size=8,
                        seed=0).backend == "numpy"
