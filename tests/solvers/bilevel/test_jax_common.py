"""The shared pieces of the bilevel JAX backend: which problems it takes, and the levels it traces.

The JAX variants of the quadratic toys (``jax=True``) must be the same instances as the NumPy ones: values and
autodiff gradients against the hand-written NumPy oracles at random points, to 1e-12 relative (rounding of sums of
O(10^2) products).
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from optkit.problems.bilevel import BilevelProblem, FiniteSum  # noqa: E402
from optkit.problems.functions import Function  # noqa: E402
from optkit.problems.library.bilevel_toys import benchopt_quadratic, t1, t2, t4  # noqa: E402
from optkit.problems.sets import Box, Simplex  # noqa: E402
from optkit.solvers.bilevel._jax_common import jax_levels, jax_projection, jax_support, x64  # noqa: E402


@pytest.mark.parametrize("make", [lambda jax: t2(jax=jax), lambda jax: benchopt_quadratic(12, 9, 64, seed=3, jax=jax)])
def test_jax_toys_are_the_numpy_instances(make) -> None:
    plain, traced = make(False), make(True)
    np.testing.assert_allclose(traced.x_star, plain.x_star, rtol=1e-12)
    assert jax_support(traced.problem, "aid") is None
    F, f = jax_levels(traced.problem)
    rng = np.random.default_rng(0)
    n, m = plain.problem.dims
    for _ in range(3):
        x, y = rng.standard_normal(n), rng.standard_normal(m)
        with x64():
            for level, numpy_level in ((F, plain.problem.upper), (f, plain.problem.lower)):
                gx, gy = jax.grad(level, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(y))
                assert gx.dtype == jnp.float64
                np.testing.assert_allclose(float(level(x, y)), numpy_level.value(x, y), rtol=1e-12)
                want_x, want_y = numpy_level.grad(x, y)
                np.testing.assert_allclose(np.asarray(gx), want_x, rtol=1e-12, atol=1e-13)
                np.testing.assert_allclose(np.asarray(gy), want_y, rtol=1e-12, atol=1e-13)


def test_levels_from_every_traceable_form() -> None:
    # F(x, y) = |x - y|^2 / 2 given three ways: a callable, Function.from_jax of z, a FiniteSum without grad
    def upper(x, y):
        return 0.5 * jnp.sum((x - y) ** 2)

    stacked = Function.from_jax(lambda z: 0.5 * jnp.sum((z[:2] - z[2:]) ** 2))
    weights = np.array([1.0, 3.0])
    summed = FiniteSum(lambda x, y, idx: jnp.mean(jnp.asarray(weights)[idx]) * 0.5 * jnp.sum((x - y) ** 2), 2)
    x, y = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    for spec, scale in ((upper, 1.0), (stacked, 1.0), (summed, 2.0)):
        problem = BilevelProblem(spec, upper, x0=np.zeros(2), y0=np.zeros(2))
        assert jax_support(problem, "aid") is None
        F, _ = jax_levels(problem)
        with x64():
            assert float(F(jnp.asarray(x), jnp.asarray(y))) == pytest.approx(scale * 0.5 * 9.25, rel=1e-14)


def test_jax_support_reasons() -> None:
    assert "JAX-traceable" in jax_support(t1().problem, "aid")  # hand-written NumPy gradients
    assert "coupled lower constraints" in jax_support(t4().problem, "aid") or "JAX-traceable" in jax_support(
        t4().problem, "aid")

    def F(x, y):
        return jnp.sum(x**2) + jnp.sum(y**2)

    constrained = BilevelProblem(F, F, x0=np.zeros(2), y0=np.full(2, 0.5), y_set=Simplex(2))
    assert "Y = R^m" in jax_support(constrained, "penalty")
    simplex_x = BilevelProblem(F, F, x0=np.full(2, 0.5), y0=np.zeros(2), x_set=Simplex(2))
    assert "Box" in jax_support(simplex_x, "aid")
    boxed = BilevelProblem(F, F, x0=np.zeros(2), y0=np.zeros(2), x_set=Box(-1.0, 1.0, dim=2))
    assert jax_support(boxed, "aid") is None
    project = jax_projection(boxed)
    with x64():
        np.testing.assert_array_equal(np.asarray(project(jnp.array([-3.0, 0.25]))), [-1.0, 0.25])
