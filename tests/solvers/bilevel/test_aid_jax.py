"""``aid`` with ``backend="jax"`` against the NumPy backend and the closed forms of the quadratic toys.

The JAX backend runs the same algorithm (same stopping tests, warm starts, counts) with autodiff oracles compiled
by XLA, so on the toys its iterates equal the NumPy backend's up to rounding: matrix-vector products summed in
another order differ in the last bits, and the non-monotone BB outer loop (a chaotic map of its past steps)
amplifies those bits. Hence: identical iteration and oracle counts and iterates to 1e-12 where the runs are short
enough (T2 to tol 1e-8: under 50 iterations; the benchopt recipe: 60 iterations, where the measured gap is
~4e-12 and grows ~10x per 30 iterations), and closed-form checks where they are not.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp

import optkit
from optkit.problems.bilevel import BilevelProblem
from optkit.problems.library.bilevel_toys import benchopt_quadratic, t1, t2
from optkit.problems.sets import Box, Simplex
from optkit.solvers.bilevel import _aid_jax
from optkit.solvers.bilevel._common import Oracles
from optkit.solvers.bilevel._implicit import lower_lipschitz


@pytest.fixture(scope="module")
def toys_t2():
    return t2(), t2(jax=True)


@pytest.fixture(scope="module")
def toys_benchopt():
    return benchopt_quadratic(20, 20, 128), benchopt_quadratic(20, 20, 128, jax=True)


def _same_run(numpy_result, jax_result, atol: float) -> None:
    assert jax_result.backend == "jax" and numpy_result.backend == "numpy"
    assert jax_result.status == numpy_result.status
    assert jax_result.nit == numpy_result.nit
    assert jax_result.counts == numpy_result.counts
    np.testing.assert_allclose(jax_result.x[0], numpy_result.x[0], rtol=0, atol=atol)
    np.testing.assert_allclose(jax_result.x[1], numpy_result.x[1], rtol=0, atol=atol)


def test_default_matches_numpy_and_closed_form_on_t2(toys_t2) -> None:
    plain, traced = toys_t2
    tol = 1e-8
    reference = optkit.solve(plain.problem, "aid", tol=tol)
    result = optkit.solve(traced.problem, "aid", tol=tol, backend="jax")
    assert result.success
    _same_run(reference, result, 1e-12)
    assert result.info["backtracks"] == reference.info["backtracks"]
    # stopped on the projected hypergradient mapping <= tol with X = R^n: the exact hypergradient at the returned
    # x is within the inner-solve error (inner_rtol * tol) of that, and x - x* <= |grad h| / lambda_min(hess h)
    assert np.linalg.norm(traced.hypergradient(result.x[0])) <= 2 * tol
    assert np.linalg.norm(result.x[0] - traced.x_star) <= 1e-6


@pytest.mark.parametrize("options", [
    {"outer_step": "secant"},
    {"outer_step": "bb", "inner_steps": 2, "cg_steps": 2},
    {"outer_step": "bb", "inner_steps": 2, "cg_steps": 2, "linear_solver": "gd"},
    {"inner_steps": 3, "cg_steps": 1},
    {"step": 0.5},  # a fixed step (overrides the default outer_step)
])
def test_other_outer_rules_and_fixed_steps_match_numpy_on_t2(toys_t2, options) -> None:
    plain, traced = toys_t2
    reference = optkit.solve(plain.problem, "aid", tol=1e-8, **options)
    result = optkit.solve(traced.problem, "aid", tol=1e-8, backend="jax", **options)
    assert result.success
    _same_run(reference, result, 1e-9)  # 50-160 outer iterations: measured gaps up to ~3e-11


def test_benchopt_recipe_same_iterates_then_closed_form(toys_benchopt) -> None:
    plain, traced = toys_benchopt
    reference = optkit.solve(plain.problem, "aid", tol=1e-300, max_iter=60)
    result = optkit.solve(traced.problem, "aid", tol=1e-300, max_iter=60, backend="jax")
    assert result.status.name == "MAX_ITER"
    _same_run(reference, result, 1e-9)
    # run to convergence: the trajectory then departs from NumPy's by rounding, the answer does not
    converged = optkit.solve(traced.problem, "aid", tol=1e-8, backend="jax")
    assert converged.success
    assert np.linalg.norm(traced.hypergradient(converged.x[0])) <= 2e-8


def test_one_evaluation_is_the_implicit_hypergradient(toys_benchopt) -> None:
    # inner solves to 1e-13 (the floor at a tiny outer residual): the estimate is grad h(x) up to
    # ||H^-1|| (||grad_y f|| + ||r||) times O(1) constants, ~1e-11 on this instance (mu = 0.1)
    _, traced = toys_benchopt
    problem = traced.problem
    oracles = Oracles(problem)
    x = np.linspace(-1.0, 1.0, problem.dims[0])
    lipschitz = _aid_jax.lower_lipschitz(problem, oracles, x, problem.y0)
    assert lipschitz == pytest.approx(lower_lipschitz(Oracles(problem), x, problem.y0), rel=1e-12)
    assert oracles.counts["lower_hvp"] == 20
    evaluate = _aid_jax.hypergradient_oracle(problem, oracles, lipschitz, inner_rtol=0.1, inner_steps=None,
                                             cg_steps=None, inner_max=100_000, linear_solver="cg")
    state = {"y": np.zeros(problem.dims[1]), "v": np.zeros(problem.dims[1]), "residual": 1e-12}
    estimate, lower_norm = evaluate(x, state)
    assert lower_norm <= 1e-13
    np.testing.assert_allclose(estimate, traced.hypergradient(x), rtol=0, atol=1e-9)
    np.testing.assert_allclose(state["y"], traced.y_of_x(x), rtol=0, atol=1e-11)
    # counts: one upper gradient, the gradients and products the loops took, all integers
    assert oracles.counts["upper_grad"] == 1
    assert oracles.counts["lower_grad"] > 1 and oracles.counts["lower_hvp"] > 21
    # warm start: a second call at the same x needs one gradient and one product
    before = dict(oracles.counts)
    evaluate(x, state)
    assert oracles.counts["lower_grad"] - before["lower_grad"] == 1
    assert oracles.counts["lower_hvp"] - before["lower_hvp"] == 1


def test_box_constrained_x_matches_numpy() -> None:
    # a quadratic whose unconstrained x* lies outside the box, so the projection is active at the solution
    rng = np.random.default_rng(4)
    n, m = 4, 3
    B = rng.standard_normal((m, m))
    A = B @ B.T + np.eye(m)
    C = rng.standard_normal((n, m))
    target = np.array([3.0, -3.0, 0.5])

    def upper(x, y):
        return 0.5 * jnp.sum((y - target) ** 2) + 0.05 * jnp.sum(x ** 2)

    def lower(x, y):
        return 0.5 * y @ (A @ y) - y @ (C.T @ x)

    problem = BilevelProblem(upper, lower, x0=np.zeros(n), y0=np.zeros(m), x_set=Box(-0.5, 0.5, dim=n))
    reference = optkit.solve(problem, "aid", tol=1e-9, backend="numpy")
    result = optkit.solve(problem, "aid", tol=1e-9, backend="jax")
    assert result.success
    assert np.any(np.abs(np.abs(result.x[0]) - 0.5) < 1e-12)  # a bound is active
    _same_run(reference, result, 1e-10)


def test_refusals_name_the_reason(toys_t2) -> None:
    with pytest.raises(ValueError, match="JAX-traceable"):
        optkit.solve(t1().problem, "aid", backend="jax")
    with pytest.raises(ValueError, match="Box"):
        F = lambda x, y: jnp.sum(x ** 2) + jnp.sum((y - x) ** 2)
        optkit.solve(BilevelProblem(F, F, x0=np.full(2, 0.5), y0=np.zeros(2), x_set=Simplex(2)), "aid",
                     backend="jax")
    with pytest.raises(ValueError, match="backend"):
        optkit.solve(toys_t2[1].problem, "aid", backend="numba")


def test_auto_backend_picks_jax_for_traceable_levels(toys_t2) -> None:
    # JAX-traceable levels run on JAX; hand-written NumPy oracles stay on NumPy
    assert optkit.solve(toys_t2[1].problem, "aid", tol=1e-6).backend == "jax"
    assert optkit.solve(toys_t2[0].problem, "aid", tol=1e-6).backend == "numpy"


def test_programs_are_built_once_per_problem(toys_t2) -> None:
    problem = toys_t2[1].problem
    optkit.solve(problem, "aid", tol=1e-6, backend="jax")
    programs = dict(_aid_jax._PROGRAMS[problem])
    optkit.solve(problem, "aid", tol=1e-6, backend="jax")
    assert dict(_aid_jax._PROGRAMS[problem]) == programs  # the same jitted callables: no retrace per solve
