"""sketch-newton against closed forms, scipy's SLSQP and an independent KKT residual."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import optkit
from optkit.problems.nlp import NonlinearProgram
from optkit.solvers.nlp.sketch_newton import _example


def _kkt_independent(problem, x, lam):
    """KKT residual by central differences (not the solver's oracles)."""
    h = 1e-6
    n = x.size
    E = np.eye(n)
    L = lambda y: problem.objective(y) + lam @ problem.constraints(y)
    g = np.array([(L(x + h * e) - L(x - h * e)) / (2 * h) for e in E])
    return np.linalg.norm(np.concatenate([g, problem.constraints(x)]))


@pytest.mark.parametrize("sketch,block", [("kaczmarz", 1), ("gaussian", 1), ("rows", 2), ("count", 3),
                                          ("exact", 1)])
def test_hs7_reaches_the_published_optimum(sketch, block):
    result = optkit.solve(_example(), "sketch-newton", tol=1e-8, seed=1, sketch=sketch, block_size=block)
    assert result.success, result.message
    x, lam = result.x
    # Hock-Schittkowski 1981, problem 7: f* = -sqrt(3) at (0, sqrt(3)).
    assert result.fun == pytest.approx(-np.sqrt(3.0), abs=1e-7)
    np.testing.assert_allclose(x, [0.0, np.sqrt(3.0)], atol=1e-6)
    assert _kkt_independent(_example(), x, lam) <= 1e-6
    assert result.residuals["kkt"] <= 1e-8
    assert result.counts["line_search_trials"] >= result.nit
    gx, cx = result.info["kkt_components"]
    assert np.linalg.norm(np.concatenate([gx, cx])) == pytest.approx(result.residuals["kkt"])


def test_matches_slsqp_on_a_random_nonconvex_problem(rng):
    n, m = 8, 3
    A = rng.normal(size=(m, n))
    Q = rng.normal(size=(n, n))
    Q = Q + Q.T
    q = rng.normal(size=n)

    def f(x):
        return 0.5 * x @ (Q @ x) + q @ x + 0.25 * jnp.sum(x**4)

    def c(x):
        return jnp.concatenate([A @ x - 1.0, jnp.array([x @ x - 4.0])])

    problem = NonlinearProgram(f, c, x0=np.ones(n))
    result = optkit.solve(problem, "sketch-newton", tol=1e-9, seed=0, sketch="gaussian", max_inner=10**6)
    assert result.success, result.message
    x, lam = result.x
    assert _kkt_independent(problem, x, lam) <= 1e-6
    ref = so.minimize(problem.objective, result.x[0] + 1e-3, jac=problem.gradient, method="SLSQP",
                      constraints={"type": "eq", "fun": problem.constraints, "jac": problem.dense_jacobian},
                      options={"ftol": 1e-14, "maxiter": 500})
    assert ref.success
    assert result.fun == pytest.approx(ref.fun, rel=1e-7, abs=1e-7)


def test_theta_schedule_kkt_and_seed_reproducibility():
    a = optkit.solve(_example(), "sketch-newton", tol=1e-10, seed=3, theta_schedule="kkt")
    b = optkit.solve(_example(), "sketch-newton", tol=1e-10, seed=3, theta_schedule="kkt")
    assert a.success and a.counts["inner_iterations"] == b.counts["inner_iterations"]
    np.testing.assert_array_equal(a.x[0], b.x[0])


def test_licq_failure_reports_the_smallest_singular_value():
    # Two copies of the same constraint: G has rank 1 everywhere.
    problem = NonlinearProgram(lambda x: x @ x, lambda x: jnp.array([x[0] + x[1] - 1.0, 2 * x[0] + 2 * x[1] - 2.0]),
                               x0=np.array([3.0, 0.0]))
    result = optkit.solve(problem, "sketch-newton")
    assert result.status is optkit.Status.NUMERICAL_ERROR
    assert "smallest singular value" in result.message
    assert result.info["smallest_singular_value"] <= 1e-10


@pytest.mark.parametrize("kwargs,exc", [({"beta": 0.6}, ValueError), ({"nu": 1.0}, ValueError),
                                        ({"sketch": "x"}, ValueError), ({"theta_schedule": "y"}, ValueError),
                                        ({"tol": -1}, ValueError)])
def test_bad_options(kwargs, exc):
    with pytest.raises(exc):
        optkit.solve(_example(), "sketch-newton", **kwargs)
