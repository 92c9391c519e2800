"""BilevelProblem validation and the toy library (gradients against JAX autodiff, known solutions)."""

from __future__ import annotations

import numpy as np
import pytest

from optkit.problems.bilevel import BilevelProblem, FiniteSum, LowerConstraints
from optkit.problems.functions import Function
from optkit.problems.library import bilevel_toys as toys
from optkit.problems.sets import Box

jnp = pytest.importorskip("jax.numpy")


def _quadratic() -> tuple:
    return (lambda x, y: 0.5 * jnp.sum((x - 1) ** 2) + 0.5 * jnp.sum(y**2),
            lambda x, y: 0.5 * jnp.sum((y - x) ** 2))


def test_jax_callables_give_gradients() -> None:
    upper, lower = _quadratic()
    problem = BilevelProblem(upper, lower, x0=[0.2, 0.3], y0=[1.0, -1.0])
    gx, gy = problem.lower.grad(problem.x0, problem.y0)
    np.testing.assert_allclose(gx, -(problem.y0 - problem.x0))
    np.testing.assert_allclose(gy, problem.y0 - problem.x0)
    hx, hy = problem.lower.hvp(problem.x0, problem.y0, np.zeros(2), np.array([1.0, 0.0]))
    np.testing.assert_allclose(hy, [1.0, 0.0])
    np.testing.assert_allclose(hx, [-1.0, 0.0])


def test_mismatched_shapes_are_value_errors() -> None:
    upper, lower = _quadratic()
    with pytest.raises(ValueError, match="x_set has dimension 3 but x0 has 2"):
        BilevelProblem(upper, lower, x0=[0.0, 0.0], y0=[0.0, 0.0], x_set=Box(0, 1, dim=3))
    with pytest.raises(ValueError, match="y_set has dimension"):
        BilevelProblem(upper, lower, x0=[0.0, 0.0], y0=[0.0, 0.0], y_set=Box(0, 1, dim=1))
    # a Function of z = (x, y) with the wrong size
    f = Function(lambda z: float(z @ z), lambda z: 2 * z[:3])
    with pytest.raises(ValueError, match="lower"):
        BilevelProblem(upper, f, x0=[0.0, 0.0], y0=[0.0, 0.0])
    with pytest.raises(ValueError, match="A_x must have 2 columns"):
        BilevelProblem(upper, lower, x0=[0.0, 0.0], y0=[0.0, 0.0],
                       lower_constraints=LowerConstraints(equality=(np.ones((1, 3)), np.ones((1, 2)), np.zeros(1))))
    with pytest.raises(ValueError, match="x0 must be finite"):
        BilevelProblem(upper, lower, x0=[np.nan, 0.0], y0=[0.0, 0.0])
    with pytest.raises(TypeError, match="upper must be"):
        BilevelProblem(3.0, lower, x0=[0.0], y0=[0.0])


def test_coupled_constraints_infeasible_at_start() -> None:
    upper, lower = _quadratic()
    # y <= x - 5 with y in [0, 1] and x0 = 0: no feasible y
    cons = LowerConstraints(inequality=(-np.eye(1), np.eye(1), -5.0 * np.ones(1)))
    with pytest.raises(ValueError, match="infeasible at x0"):
        BilevelProblem(upper, lower, x0=[0.0], y0=[0.5], y_set=Box(0.0, 1.0, dim=1), lower_constraints=cons)
    # nonlinear: y^2 + 1 <= x at x0 = 0
    nonlinear = LowerConstraints(inequality=lambda x, y: y**2 + 1.0 - x)
    with pytest.raises(ValueError, match="infeasible at x0"):
        BilevelProblem(upper, lower, x0=[0.0], y0=[0.5], lower_constraints=nonlinear)
    # feasible at x0 = 2 (y in [-1, 1])
    BilevelProblem(upper, lower, x0=[2.0], y0=[0.5], lower_constraints=nonlinear)


def test_finite_sum_jax_minibatch() -> None:
    a = np.linspace(-1.0, 1.0, 8)
    a_jax = jnp.asarray(a)
    phi = FiniteSum(lambda x, y, i: jnp.mean(0.5 * (y[0] - a_jax[i] * x[0]) ** 2), 8)
    problem = BilevelProblem(phi, phi, x0=[1.0], y0=[0.0])
    gx, gy = problem.lower.batch_grad(problem.x0, problem.y0, np.array([0, 7]))
    np.testing.assert_allclose(gy, [np.mean(0.0 - a[[0, 7]])])
    np.testing.assert_allclose(gx, [np.mean(a[[0, 7]] ** 2)])
    assert problem.is_stochastic


@pytest.mark.parametrize("name", ["T1", "T3", "T5", "T6", "T7", "T8"])
def test_toy_gradients_match_finite_differences(name: str) -> None:
    from optkit.problems.functions import check_derivatives

    toy = toys.TOYS[name]()
    problem = toy.problem
    n, m = problem.dims
    z = np.random.default_rng(0).uniform(0.1, 0.9, n + m)
    for level in (problem.upper, problem.lower):
        report = check_derivatives(level._function, z, seed=0)
        assert all(r["passed"] for r in report.values()), (name, report)


def test_t2_quadratic_oracles() -> None:
    toy = toys.t2(4, 3, 16)
    problem = toy.problem
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=4), rng.normal(size=3)
    idx = np.array([1, 5, 5, 9])
    for level in (problem.upper, problem.lower):
        spec = level.spec
        gx, gy = spec.grad(x, y, idx)
        h = 1e-6
        fd_x = [(spec.fun(x + h * e, y, idx) - spec.fun(x - h * e, y, idx)) / (2 * h) for e in np.eye(4)]
        fd_y = [(spec.fun(x, y + h * e, idx) - spec.fun(x, y - h * e, idx)) / (2 * h) for e in np.eye(3)]
        np.testing.assert_allclose(gx, fd_x, atol=1e-7)
        np.testing.assert_allclose(gy, fd_y, atol=1e-7)
        full = np.arange(16)
        # full-batch shortcut agrees with the per-sample sum
        np.testing.assert_allclose(spec.fun(x, y, full), np.mean([spec.fun(x, y, np.array([i])) for i in full]))
    # the closed-form x* is stationary for the exact hypergradient
    assert np.linalg.norm(toy.hypergradient(toy.x_star)) < 1e-10


def test_known_optima_of_value_functions() -> None:
    """T4/T5 optima by a KKT solve of the optimistic single-level problem (scipy, independent of our solvers)."""
    from scipy.optimize import minimize

    t5 = toys.t5(3)
    n = 3

    def phi(x):  # optimistic value of T5 on the lower solution set
        c = 2 - 2 * np.mean(x)
        return np.sum((x - 1) ** 2) + n * c**2

    res = minimize(phi, np.zeros(n), tol=1e-12)
    np.testing.assert_allclose(res.x, t5.x_star, atol=1e-6)
    t4 = toys.t4(4)
    x, (y1, y2) = t4.x_star, np.split(t4.y_star, 2)
    np.testing.assert_allclose(y1, x + 1)
    np.testing.assert_allclose(np.sum(y2), -2 * np.sum(x) - 4)
    assert t4.problem.upper.value(x, t4.y_star) == pytest.approx(0.05 * 4)


def test_t8_lower_solution_map() -> None:
    toy = toys.t8()
    x = toy.problem.upper_set.project(np.concatenate([np.ones(10), np.zeros(10)]))[:10]
    y = toy.y_of_x(x)
    H, A, _ = toy.problem.lower_constraints.affine("equality")
    np.testing.assert_allclose(A @ y + H @ x, 0, atol=1e-10)


def test_benchopt_quadratic_recipe() -> None:
    """The benchopt-recipe instance: rank-one samples whose mean Hessians have the prescribed spectra, a positive
    definite hyper-objective, and an exact hypergradient that vanishes at x* and matches AID's."""
    from optkit.solvers.bilevel.aid import aid_hypergradient

    toy = toys.benchopt_quadratic(6, 5, 64, seed=3)
    problem = toy.problem
    n, m = problem.dims
    assert (n, m) == (6, 5)
    # mean lower yy-Hessian from the oracle: Hessian-vector products at unit vectors
    hyy = np.column_stack([problem.lower.hvp(np.zeros(n), np.zeros(m), np.zeros(n), e)[1] for e in np.eye(m)])
    eig = np.linalg.eigvalsh(0.5 * (hyy + hyy.T))
    assert eig.min() > 0  # 64 rank-one samples of a covariance with spectrum in [0.1, 1]: full rank, same scale
    assert 0.01 < eig.min() and eig.max() < 5.0
    np.testing.assert_allclose(toy.hypergradient(toy.x_star), 0.0, atol=1e-10)
    x = np.random.default_rng(0).normal(size=n)
    np.testing.assert_allclose(aid_hypergradient(problem, x), toy.hypergradient(x), atol=1e-8)


def test_lower_quadratic_declaration_is_checked() -> None:
    import jax.numpy as jnp

    def lower(x, y):
        return 0.5 * jnp.sum(jnp.exp(x) * y**2) - jnp.sum(x * y)

    good = BilevelProblem(lambda x, y: jnp.sum(y**2), lower, x0=[0.2, -0.1], y0=[1.0, 2.0],
                          lower_quadratic=lambda x: (np.exp(x), -x))
    assert good.has_lower_quadratic
    Q, q = good.lower_quadratic_at(np.array([0.2, -0.1]))
    np.testing.assert_allclose(Q, np.exp([0.2, -0.1]))
    with pytest.raises(ValueError, match="does not match the lower objective"):
        BilevelProblem(lambda x, y: jnp.sum(y**2), lower, x0=[0.2, -0.1], y0=[1.0, 2.0],
                       lower_quadratic=lambda x: (np.ones(2), -x))
    with pytest.raises(ValueError, match="shape"):
        BilevelProblem(lambda x, y: jnp.sum(y**2), lower, x0=[0.2, -0.1], y0=[1.0, 2.0],
                       lower_quadratic=lambda x: (np.ones(3), x))
    with pytest.raises(TypeError, match="lower_quadratic"):
        BilevelProblem(lambda x, y: jnp.sum(y**2), lower, x0=[0.2, -0.1], y0=[1.0, 2.0], lower_quadratic=3)
    with pytest.raises(ValueError, match="declares no lower_quadratic"):
        BilevelProblem(lambda x, y: jnp.sum(y**2), lower, x0=[0.2], y0=[1.0]).lower_quadratic_at(np.zeros(1))
