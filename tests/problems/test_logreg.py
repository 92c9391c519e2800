"""Constrained logistic regression (the paper's LIBSVM experiment): structured derivatives vs JAX autodiff and
finite differences; the solution vs scipy trust-constr from the same start."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import sparse

import optkit
from optkit.problems.library.logreg import (
    constrained_logistic_regression,
    logistic_problem,
)


@pytest.fixture(scope="module")
def sonar():
    return constrained_logistic_regression("sonar_scale", seed=0)


def test_paper_instance_shape_and_start(sonar):
    # sonar_scale is 208 x 60; ten Gaussian equalities plus ||w||^2 = 1; w0 = 1, lambda0 = 1 (notes A.4)
    assert (sonar.n, sonar.m) == (60, 11)
    np.testing.assert_array_equal(sonar.x0, np.ones(60))
    np.testing.assert_array_equal(sonar.lam0, np.ones(11))
    assert sonar.constraints(sonar.x0)[-1] == pytest.approx(59.0)


def test_derivatives_match_jax_autodiff(rng):
    X = sparse.random(40, 7, density=0.4, random_state=1, format="csr")
    y = np.where(rng.random(40) < 0.5, -1.0, 1.0)
    A, b = rng.normal(size=(3, 7)), rng.normal(size=3)
    p = logistic_problem(X, y, A, b)
    Xd = jnp.asarray(X.toarray())

    def lagrangian(w, lam):
        loss = jnp.mean(jnp.logaddexp(0.0, -y * (Xd @ w)))
        return loss + lam @ jnp.concatenate([A @ w - b, jnp.array([w @ w - 1.0])])

    w, lam = rng.normal(size=7), rng.normal(size=4)
    with jax.enable_x64(True):
        grad = np.asarray(jax.grad(lagrangian)(w, lam))
    np.testing.assert_allclose(p.lagrangian_gradient(w, lam), grad, rtol=1e-12, atol=1e-14)
    # Hessian (X^T D X / N + 2 lambda_m I) against central differences of the autodiff-checked gradient
    h, E = 1e-6, np.eye(7)
    fd = np.stack([(p.lagrangian_gradient(w + h * e, lam) - p.lagrangian_gradient(w - h * e, lam)) / (2 * h)
                   for e in E], axis=1)
    H = p.dense_lagrangian_hessian(w, lam)
    np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-8)
    v = rng.normal(size=7)
    np.testing.assert_allclose(p.lagrangian_hvp(w, lam, v), H @ v, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p.dense_jacobian(w), np.vstack([A, 2 * w]), rtol=1e-14)


def test_sketch_newton_matches_trust_constr(sonar):
    ours = optkit.solve(sonar, "sketch-newton", tol=1e-6, seed=0, hessian_tol=1e-2, max_inner=10**6)
    assert ours.success, ours.message
    x, lam = ours.x
    assert sonar.kkt_norm(x, lam) <= 1e-6
    assert np.linalg.norm(sonar.constraints(x)) <= 1e-6
    ref = optkit.solve(sonar, "trust-constr", tol=1e-6)
    # scipy's own gtol test can stop it just short of our KKT measure; a near-KKT reference point is enough
    assert ref.residuals["kkt"] <= 1e-5, ref.message
    # Both are KKT points from the same start; they agree to the accuracy the two KKT tolerances allow.
    assert ours.fun == pytest.approx(ref.fun, rel=1e-6)
    np.testing.assert_allclose(x, ref.x[0], atol=1e-4)


def test_bad_input(rng):
    X = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="labels"):
        logistic_problem(X, np.arange(5.0), np.ones((1, 3)), np.ones(1))
    with pytest.raises(ValueError, match="y must have shape"):
        logistic_problem(X, np.ones(4), np.ones((1, 3)), np.ones(1))
    with pytest.raises(ValueError, match="A must have 3 columns"):
        logistic_problem(X, np.ones(5), np.ones((1, 4)), np.ones(1))
    with pytest.raises(ValueError, match="n_constraints"):
        constrained_logistic_regression("sonar_scale", n_constraints=-1)
