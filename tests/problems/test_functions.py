"""Function: oracles, fallbacks, JAX autodiff, counting, derivative checks, errors.

References: SciPy's Rosenbrock function and its derivatives, closed-form
Jacobians, and central finite differences.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import sparse
from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from optkit.problems.functions import CountedFunction, Function, check_derivatives

X = np.array([-1.2, 1.0, 0.7, 1.3, -0.4])
V = np.array([0.3, -1.0, 2.0, 0.5, 1.5])


def constraints(x):
    return np.array([x[0] ** 2 + x[1] - 1.0, np.sin(x[0]) * x[2], np.exp(x[1]) - x[2] ** 3])


def constraints_jac(x):
    return np.array(
        [
            [2.0 * x[0], 1.0, 0.0],
            [np.cos(x[0]) * x[2], 0.0, np.sin(x[0])],
            [0.0, np.exp(x[1]), -3.0 * x[2] ** 2],
        ]
    )


def jax_rosen(x):
    import jax.numpy as jnp

    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def jax_constraints(x):
    import jax.numpy as jnp

    return jnp.stack([x[0] ** 2 + x[1] - 1.0, jnp.sin(x[0]) * x[2], jnp.exp(x[1]) - x[2] ** 3])


@pytest.fixture(scope="module")
def jax():
    return pytest.importorskip("jax")


@pytest.fixture(scope="module")
def jax_rosenbrock(jax):
    return Function.from_jax(jax_rosen, name="rosenbrock")


# -- numpy oracles and fallbacks -------------------------------------------------


def test_given_oracles_are_passed_through():
    f = Function(rosen, rosen_der, hess=rosen_hess, hvp=rosen_hess_prod)
    value = f(X)
    assert isinstance(value, float) and value == f.value(X) == rosen(X)
    np.testing.assert_array_equal(f.grad(X), rosen_der(X))
    np.testing.assert_array_equal(f.hess(X), rosen_hess(X))
    np.testing.assert_array_equal(f.hvp(X, V), rosen_hess_prod(X, V))
    assert f.name == "rosen" and not f.is_jax
    assert f.grad(list(X)).dtype == np.float64


@pytest.mark.parametrize(
    "hess",
    [rosen_hess, lambda x: sparse.csr_matrix(rosen_hess(x)), lambda x: aslinearoperator(rosen_hess(x))],
    ids=["dense", "sparse", "linear_operator"],
)
def test_hvp_from_hess(hess):
    f = Function(rosen, rosen_der, hess=hess)
    np.testing.assert_allclose(f.hvp(X, V), rosen_hess_prod(X, V), rtol=1e-14)
    kind = type(hess(X))
    assert isinstance(f.hess(X), kind)  # sparse and operators are kept as they are


def test_dense_hess_from_hvp_counts_products():
    f = Function(rosen, rosen_der, hvp=rosen_hess_prod).counting()
    np.testing.assert_allclose(f.hess(X), rosen_hess(X), rtol=1e-14)
    assert f.counts["hvp"] == X.size and f.counts["hess"] == 0


def test_hess_from_hvp_does_not_share_the_unit_vector():
    def mutating_hvp(x, v):
        out = 2.0 * v
        v[:] = 7.0  # a careless user callback must not corrupt later columns
        return out

    f = Function(lambda x: x @ x, hvp=mutating_hvp)
    np.testing.assert_array_equal(f.hess(np.zeros(3)), 2.0 * np.eye(3))


def test_scalar_function_jacobian_and_products_from_grad():
    f = Function(rosen, rosen_der).counting()
    jac = f.jac(X)
    assert jac.shape == (1, X.size)
    np.testing.assert_array_equal(jac[0], rosen_der(X))
    jvp = f.jvp(X, V)
    assert isinstance(jvp, float) and jvp == pytest.approx(rosen_der(X) @ V, rel=1e-14)
    np.testing.assert_allclose(f.vjp(X, 2.5), 2.5 * rosen_der(X), rtol=1e-14)
    np.testing.assert_allclose(f.vjp(X, np.array([2.5])), 2.5 * rosen_der(X), rtol=1e-14)
    assert f.counts == {"value": 0, "grad": 4, "hess": 0, "hvp": 0, "jac": 0, "jvp": 0, "vjp": 0}


@pytest.mark.parametrize(
    "jac",
    [
        constraints_jac,
        lambda x: sparse.csr_array(constraints_jac(x)),
        lambda x: aslinearoperator(constraints_jac(x)),
    ],
    ids=["dense", "sparse", "linear_operator"],
)
def test_vector_function_products_from_jac(jac):
    c = Function(constraints, jac=jac)
    x, v, u = np.array([0.4, -0.3, 1.1]), np.array([1.0, 2.0, -0.5]), np.array([0.2, -1.0, 3.0])
    J = constraints_jac(x)
    out = c(x)
    assert isinstance(out, np.ndarray) and out.shape == (3,)
    np.testing.assert_allclose(c.jvp(x, v), J @ v, rtol=1e-14)
    np.testing.assert_allclose(c.vjp(x, u), J.T @ u, rtol=1e-14)
    with pytest.raises(ValueError, match=r"u must have shape \(3,\)"):
        c.vjp(x, np.ones(2))


def test_direct_products_take_precedence():
    calls = []
    c = Function(
        constraints,
        jac=lambda x: calls.append("jac") or constraints_jac(x),
        jvp=lambda x, v: calls.append("jvp") or constraints_jac(x) @ v,
        vjp=lambda x, u: calls.append("vjp") or constraints_jac(x).T @ u,
    )
    x = np.array([0.4, -0.3, 1.1])
    c.jvp(x, np.ones(3))
    c.vjp(x, np.ones(3))
    assert calls == ["jvp", "vjp"]


@pytest.mark.parametrize(
    ("oracles", "expected"),
    [
        ({}, {"value"}),
        ({"grad": rosen_der}, {"value", "grad", "jac", "jvp", "vjp"}),
        ({"hess": rosen_hess}, {"value", "hess", "hvp"}),
        ({"hvp": rosen_hess_prod}, {"value", "hess", "hvp"}),
        ({"jac": constraints_jac}, {"value", "jac", "jvp", "vjp"}),
        ({"jvp": lambda x, v: v}, {"value", "jvp"}),
    ],
)
def test_has(oracles, expected):
    f = Function(rosen, **oracles)
    names = ("value", "grad", "hess", "hvp", "jac", "jvp", "vjp")
    assert {name for name in names if f.has(name)} == expected


def test_has_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"unknown oracle 'hessian'; expected one of"):
        Function(rosen).has("hessian")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: f.grad(X), r"'rosen' has no gradient: pass grad=\.\.\..*Function\.from_jax"),
        (lambda f: f.hess(X), r"no Hessian: pass hess=\.\.\. or hvp=\.\.\."),
        (lambda f: f.hvp(X, V), r"no Hessian-vector product: pass hvp=\.\.\. or hess=\.\.\."),
        (lambda f: f.jac(X), r"no Jacobian: pass jac=\.\.\."),
        (lambda f: f.jvp(X, V), r"no Jacobian-vector product: pass jvp=\.\.\. or jac=\.\.\."),
        (lambda f: f.vjp(X, 1.0), r"no vector-Jacobian product: pass vjp=\.\.\. or jac=\.\.\."),
    ],
)
def test_missing_derivative_message(call, match):
    with pytest.raises(NotImplementedError, match=match):
        call(Function(rosen))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fun": None}, "fun must be callable, got None"),
        ({"fun": 3.0}, "fun must be callable, got float"),
        ({"fun": rosen, "grad": np.ones(3)}, "grad must be callable, got ndarray"),
        ({"fun": rosen, "hess": "exact"}, "hess must be callable, got str"),
        ({"fun": rosen, "hvp": 1}, "hvp must be callable, got int"),
        ({"fun": rosen, "jac": []}, "jac must be callable, got list"),
        ({"fun": rosen, "jvp": {}}, "jvp must be callable, got dict"),
        ({"fun": rosen, "vjp": 0}, "vjp must be callable, got int"),
        ({"fun": rosen, "name": 5}, "name must be a str"),
    ],
)
def test_constructor_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        Function(**kwargs)


def test_shape_errors():
    f = Function(rosen, lambda x: np.ones(x.size + 1), hess=lambda x: np.eye(x.size + 1), name="bad")
    with pytest.raises(ValueError, match="x must be a 1-D array"):
        f.value(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"grad must return an array of shape \(5,\), got \(6,\)"):
        f.grad(X)
    with pytest.raises(ValueError, match=r"hess must return a matrix of shape \(5, 5\), got \(6, 6\)"):
        f.hess(X)
    with pytest.raises(ValueError, match=r"v must have shape \(5,\) like x"):
        f.hvp(X, np.ones(4))
    with pytest.raises(ValueError, match="fun must return a scalar or a 1-D array"):
        Function(lambda x: np.outer(x, x))(X)
    with pytest.raises(ValueError, match=r"jac must return a matrix of shape \(m, 5\)"):
        Function(rosen, jac=lambda x: np.ones((2, 4))).jac(X)


def test_immutable():
    f = Function(rosen, rosen_der)
    with pytest.raises(AttributeError, match="immutable"):
        f.grad = rosen_hess
    with pytest.raises(AttributeError, match="immutable"):
        f._name = "other"
    with pytest.raises(AttributeError, match="immutable"):
        del f._oracles
    with pytest.raises(TypeError):
        f._oracles["hess"] = rosen_hess
    assert not f.has("hess")


def test_repr():
    f = Function(rosen, rosen_der, hvp=rosen_hess_prod)
    assert repr(f) == "Function('rosen', oracles=['grad', 'hvp'])"


# -- counting ---------------------------------------------------------------------


def test_counting_is_a_view_that_does_not_mutate():
    f = Function(rosen, rosen_der, hess=rosen_hess)
    fc = f.counting()
    assert isinstance(fc, CountedFunction) and isinstance(fc, Function) and fc.function is f
    fc(X)
    fc.value(X)
    fc.grad(X)
    fc.hvp(X, V)  # through the Hessian
    fc.jac(X)  # through the gradient
    assert fc.counts == {"value": 2, "grad": 2, "hess": 1, "hvp": 0, "jac": 0, "jvp": 0, "vjp": 0}
    assert not hasattr(f, "counts")
    other = f.counting()
    assert sum(other.counts.values()) == 0
    counts = fc.counts
    counts["value"] = 100  # a copy
    assert fc.counts["value"] == 2
    fc.reset_counts()
    assert sum(fc.counts.values()) == 0
    with pytest.raises(AttributeError, match="immutable"):
        fc.counts = {}


def test_nested_counting_counts_in_both():
    outer = Function(rosen, rosen_der).counting()
    inner = outer.counting()
    inner.grad(X)
    outer.grad(X)
    assert inner.counts["grad"] == 1 and outer.counts["grad"] == 2


def test_counted_function_rejects_non_functions():
    with pytest.raises(TypeError, match="function must be a Function"):
        CountedFunction(rosen)


def test_pickle_roundtrip():
    f = Function(rosen, rosen_der, hvp=rosen_hess_prod, name="rb")
    clone = pickle.loads(pickle.dumps(f))
    assert clone.name == "rb" and clone.has("hess")
    np.testing.assert_array_equal(clone.grad(X), f.grad(X))
    fc = f.counting()
    fc.grad(X)
    cloned_view = pickle.loads(pickle.dumps(fc))
    assert cloned_view.counts["grad"] == 1
    cloned_view.grad(X)
    assert cloned_view.counts["grad"] == 2 and fc.counts["grad"] == 1


# -- check_derivatives ------------------------------------------------------------


def test_check_derivatives_accepts_correct_oracles():
    f = Function(rosen, rosen_der, hess=rosen_hess, hvp=rosen_hess_prod)
    report = check_derivatives(f, X, seed=0)
    assert set(report) == {"grad", "hess", "hvp"}
    assert all(entry["passed"] for entry in report.values()), report
    c = Function(constraints, jac=constraints_jac, vjp=lambda x, u: constraints_jac(x).T @ u)
    report = check_derivatives(c, np.array([0.4, -0.3, 1.1]), seed=np.random.default_rng(1))
    assert set(report) == {"jac", "vjp"}
    assert all(entry["passed"] for entry in report.values()), report


def test_check_derivatives_detects_errors():
    wrong = Function(
        rosen,
        lambda x: rosen_der(x) * (1.0 + 1e-3 * np.arange(x.size)),
        hvp=lambda x, v: rosen_hess_prod(x, v) + 1e-2 * v,
    )
    report = check_derivatives(wrong, X, seed=0)
    assert not report["grad"]["passed"] and report["grad"]["error"] > 1e-4
    assert not report["hvp"]["passed"]
    wrong_jac = Function(constraints, jac=lambda x: constraints_jac(x).T)
    assert not check_derivatives(wrong_jac, np.array([0.4, -0.3, 1.1]))["jac"]["passed"]


def test_check_derivatives_is_reproducible():
    f = Function(rosen, rosen_der, hvp=rosen_hess_prod)
    first, second = check_derivatives(f, X, seed=3), check_derivatives(f, X, seed=3)
    assert first == second


def test_check_derivatives_validates_arguments():
    with pytest.raises(TypeError, match="f must be a Function"):
        check_derivatives(rosen, X)
    with pytest.raises(ValueError, match="rtol must be positive"):
        check_derivatives(Function(rosen), X, rtol=0.0)


# -- JAX --------------------------------------------------------------------------


def test_from_jax_matches_scipy_rosenbrock(jax_rosenbrock):
    f = jax_rosenbrock
    assert f.is_jax and f.name == "rosenbrock"
    assert all(f.has(name) for name in ("value", "grad", "hess", "hvp", "jac", "jvp", "vjp"))
    value = f(X)
    assert isinstance(value, float) and value == pytest.approx(rosen(X), rel=1e-14)
    grad = f.grad(X)
    assert type(grad) is np.ndarray and grad.dtype == np.float64
    np.testing.assert_allclose(grad, rosen_der(X), rtol=1e-13)
    np.testing.assert_allclose(f.hess(X), rosen_hess(X), rtol=1e-13)
    np.testing.assert_allclose(f.hvp(X, V), rosen_hess_prod(X, V), rtol=1e-13)
    np.testing.assert_allclose(f.jac(X), rosen_der(X)[None, :], rtol=1e-13)
    assert f.jvp(X, V) == pytest.approx(rosen_der(X) @ V, rel=1e-13)
    np.testing.assert_allclose(f.vjp(X, 2.0), 2.0 * rosen_der(X), rtol=1e-13)


def test_from_jax_against_finite_differences(jax_rosenbrock, jax):
    report = check_derivatives(jax_rosenbrock, X, seed=0)
    assert set(report) == {"grad", "hess", "hvp", "jac", "jvp", "vjp"}
    assert all(entry["passed"] for entry in report.values()), report
    c = Function.from_jax(jax_constraints)
    report = check_derivatives(c, np.array([0.4, -0.3, 1.1]), seed=0)
    assert set(report) == {"jac", "jvp", "vjp"}
    assert all(entry["passed"] for entry in report.values()), report


def test_from_jax_vector_function(jax):
    import jax.numpy as jnp

    c = Function.from_jax(jax_constraints)
    x, v, u = np.array([0.4, -0.3, 1.1]), np.array([1.0, 2.0, -0.5]), np.array([0.2, -1.0, 3.0])
    np.testing.assert_allclose(c(x), constraints(x), rtol=1e-14)
    np.testing.assert_allclose(c.jac(x), constraints_jac(x), rtol=1e-14)
    np.testing.assert_allclose(c.jvp(x, v), constraints_jac(x) @ v, rtol=1e-14)
    np.testing.assert_allclose(c.vjp(x, u), constraints_jac(x).T @ u, rtol=1e-14)
    with pytest.raises(ValueError, match=r"grad is defined for scalar-valued functions.*shape \(3,\)"):
        c.grad(x)
    with pytest.raises(ValueError, match="hvp is defined for scalar-valued functions"):
        c.hvp(x, v)
    # More outputs than inputs (forward mode) and fewer (reverse mode).
    tall = Function.from_jax(lambda z: jnp.concatenate([z, z**2, jnp.sin(z)]))
    wide = Function.from_jax(lambda z: jnp.stack([jnp.sum(z), jnp.prod(z)]))
    z = np.array([0.5, -2.0])
    np.testing.assert_allclose(tall.jac(z), np.vstack([np.eye(2), np.diag(2 * z), np.diag(np.cos(z))]))
    np.testing.assert_allclose(wide.jac(z), [[1.0, 1.0], [z[1], z[0]]])


def test_from_jax_computes_in_float64_without_global_x64(jax):
    before = jax.config.jax_enable_x64
    tiny = 2.0**-40  # lost in float32 arithmetic
    f = Function.from_jax(lambda x: (x[0] - 1.0) * 3.0)
    assert f(np.array([1.0 + tiny])) == 3.0 * tiny
    assert jax.config.jax_enable_x64 == before  # the global setting is untouched


def test_from_jax_counting_and_pickle(jax_rosenbrock):
    fc = jax_rosenbrock.counting()
    fc.hvp(X, V)
    fc.hess(X)  # a direct oracle under JAX, not n products
    assert fc.counts["hvp"] == 1 and fc.counts["hess"] == 1
    clone = pickle.loads(pickle.dumps(jax_rosenbrock))
    assert clone.is_jax and clone.name == "rosenbrock"
    np.testing.assert_allclose(clone.grad(X), rosen_der(X), rtol=1e-13)


def test_from_jax_validates(jax):
    with pytest.raises(TypeError, match="fun must be callable, got int"):
        Function.from_jax(1)
    with pytest.raises(TypeError, match="name must be a str"):
        Function.from_jax(jax_rosen, name=1)
    with pytest.raises(ValueError, match="x must be a 1-D array"):
        Function.from_jax(jax_rosen).grad(np.ones((2, 2)))
    assert repr(Function.from_jax(jax_rosen)) == (
        "Function('jax_rosen', oracles=['grad', 'hess', 'hvp', 'jac', 'jvp', 'vjp'], jax)"
    )


def test_linear_operator_hessian_is_checked_by_check_derivatives():
    f = Function(
        rosen,
        rosen_der,
        hess=lambda x: LinearOperator((x.size, x.size), matvec=lambda v: rosen_hess_prod(x, v)),
    )
    assert check_derivatives(f, X, seed=1)["hess"]["passed"]
