"""scipy baselines under optkit.solve: same problem objects, same KKT measure, published HS7 optimum."""

from __future__ import annotations

import numpy as np
import pytest

import optkit
from optkit.solvers.nlp.baselines import least_squares_multipliers
from optkit.solvers.nlp.sketch_newton import _example


@pytest.mark.parametrize("method", ["slsqp", "trust-constr"])
def test_hs7(method):
    result = optkit.solve(_example(), method, tol=1e-6)
    assert result.success, result.message
    assert result.fun == pytest.approx(-np.sqrt(3.0), abs=1e-6)  # Hock-Schittkowski 1981, problem 7
    _, lam = result.x
    # independent check: the optimal multiplier of HS7 solves grad f + lam grad c = 0 at (0, sqrt 3)
    np.testing.assert_allclose(lam, least_squares_multipliers(_example(), np.array([0.0, np.sqrt(3.0)])),
                               atol=1e-5)
    assert result.residuals["kkt"] <= 1e-6


def test_sketch_newton_agrees_with_trust_constr():
    a = optkit.solve(_example(), "trust-constr", tol=1e-8)
    b = optkit.solve(_example(), "sketch-newton", tol=1e-8, sketch="exact")
    np.testing.assert_allclose(a.x[0], b.x[0], atol=1e-6)
    np.testing.assert_allclose(a.x[1], b.x[1], atol=1e-6)
