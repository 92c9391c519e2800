"""NonlinearProgram: validation, oracles (dense, sparse, matrix-free) and the Lagrangian Hessian vs autodiff/FD."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sparse
from scipy.sparse.linalg import LinearOperator

from optkit.problems.functions import Function
from optkit.problems.nlp import NonlinearProgram


def _hs7_f(x):
    return jnp.log(1.0 + x[0] ** 2) - x[1]


def _hs7_c(x):
    return jnp.array([(1.0 + x[0] ** 2) ** 2 + x[1] ** 2 - 4.0])


def test_jax_problem_oracles_against_finite_differences():
    p = NonlinearProgram(_hs7_f, _hs7_c, x0=[2.0, 2.0], lam0=[0.3])
    x, lam = np.array([0.7, -1.2]), np.array([0.4])
    h = 1e-6
    E = np.eye(2)
    fd_grad = np.array([(p.lagrangian(x + h * e, lam) - p.lagrangian(x - h * e, lam)) / (2 * h) for e in E])
    np.testing.assert_allclose(p.lagrangian_gradient(x, lam), fd_grad, rtol=1e-7, atol=1e-8)
    fd_hess = np.stack([(p.lagrangian_gradient(x + h * e, lam) - p.lagrangian_gradient(x - h * e, lam)) / (2 * h)
                        for e in E], axis=1)
    np.testing.assert_allclose(p.lagrangian_hessian(x, lam), fd_hess, rtol=1e-6, atol=1e-7)
    v = np.array([0.3, -2.0])
    np.testing.assert_allclose(p.lagrangian_hvp(x, lam, v), fd_hess @ v, rtol=1e-6, atol=1e-7)
    assert p.n == 2 and p.m == 1 and p.lam0.tolist() == [0.3]


def test_numpy_functions_with_sparse_and_matrix_free_derivatives():
    n = 5
    A = sparse.random(2, n, density=0.6, random_state=0, format="csr") + sparse.eye(2, n)
    f = Function(lambda x: 0.5 * x @ x, grad=lambda x: x, hess=lambda x: sparse.eye(n, format="csr"))
    c = Function(lambda x: A @ x - 1.0, jac=lambda x: A)
    p = NonlinearProgram(f, c, x0=np.zeros(n), linear_constraints=True)
    assert sparse.issparse(p.jacobian(p.x0)) and sparse.issparse(p.lagrangian_hessian(p.x0, p.lam0))
    # matrix-free: only products
    c2 = Function(lambda x: A @ x - 1.0, jvp=lambda x, v: A @ v, vjp=lambda x, u: A.T @ u)
    p2 = NonlinearProgram(f, c2, x0=np.zeros(n), lagrangian_hvp=lambda x, lam, v: v)
    G = p2.jacobian(p2.x0)
    assert isinstance(G, LinearOperator)
    np.testing.assert_allclose(p2.dense_jacobian(p2.x0), A.toarray())
    assert isinstance(p2.lagrangian_hessian(p2.x0, p2.lam0), LinearOperator)
    np.testing.assert_allclose(p2.dense_lagrangian_hessian(p2.x0, p2.lam0), np.eye(n))
    y = np.arange(2.0)
    np.testing.assert_allclose(p2.lagrangian_gradient(np.ones(n), y), np.ones(n) + A.T @ y)


def test_counting_copy():
    p = NonlinearProgram(_hs7_f, _hs7_c, x0=[2.0, 2.0])
    q = p.counting()
    q.kkt_norm(q.x0, q.lam0)
    assert q.counts["f_grad"] == 1 and q.counts["c_jac"] == 1 and q.counts["c_value"] == 1
    assert p.counts == {}


@pytest.mark.parametrize("kwargs,match", [
    ({"x0": [np.nan, 1.0]}, "x0"),
    ({"x0": [[1.0, 2.0]]}, "x0"),
    ({"x0": [1.0, 2.0], "lam0": [1.0, 2.0]}, "lam0"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NonlinearProgram(_hs7_f, _hs7_c, **kwargs)


def test_nan_at_x0_names_the_function():
    with pytest.raises(ValueError, match="f is not finite at x0"):
        NonlinearProgram(lambda x: jnp.log(x[0]), _hs7_c, x0=[-1.0, 0.0])
    with pytest.raises(ValueError, match="c is not finite"):
        NonlinearProgram(_hs7_f, lambda x: jnp.array([jnp.sqrt(x[0])]), x0=[-1.0, 0.0])


def test_jacobian_shape_mismatch():
    f = Function(lambda x: x @ x, grad=lambda x: 2 * x, hess=lambda x: 2 * np.eye(3))
    c = Function(lambda x: np.array([x[0], x[1]]), jac=lambda x: np.ones((3, 3)))
    with pytest.raises(ValueError, match="Jacobian of c has shape"):
        NonlinearProgram(f, c, x0=np.ones(3), linear_constraints=True)


def test_missing_lagrangian_hessian_is_explained():
    f = Function(lambda x: x @ x, grad=lambda x: 2 * x, hess=lambda x: 2 * np.eye(2))
    c = Function(lambda x: np.array([x @ x - 1]), jac=lambda x: 2 * x[None, :])
    with pytest.raises(ValueError, match="lagrangian_hessian"):
        NonlinearProgram(f, c, x0=np.ones(2))


def test_type_errors():
    with pytest.raises(TypeError, match="f must be"):
        NonlinearProgram(3.0, _hs7_c, x0=[1.0, 1.0])
