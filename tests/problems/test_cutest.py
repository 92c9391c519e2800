"""CUTEst library: derivatives at x0 vs finite differences, a second source, and reference optimal values."""

from __future__ import annotations

import numpy as np
import pytest

from optkit.problems.functions import check_derivatives
from optkit.problems.library.cutest import PAPER_PROBLEMS, load, paper_set
from optkit.solvers.nlp.sketch_newton import sketch_newton

F_STAR = dict(PAPER_PROBLEMS)
FAST = ["HS6", "HS7", "BT2", "HS28", "GENHS28", "HS42", "BT10", "MWRIGHT", "HS100LNP", "CUBENE"]


def _fd_lagrangian_hessian(problem, x, lam, h=1e-6):
    E = np.eye(problem.n)
    return np.stack([(problem.lagrangian_gradient(x + h * e, lam) - problem.lagrangian_gradient(x - h * e, lam))
                     / (2 * h) for e in E], axis=1)


@pytest.mark.parametrize("name", FAST)
def test_s2mpj_derivatives_at_x0_match_finite_differences(name):
    p = load(name, source="s2mpj")
    for fun in (p.f, p.c):
        report = check_derivatives(fun, p.x0, rtol=1e-5, seed=0)
        assert all(r["passed"] for r in report.values()), report
    lam = np.linspace(-1.0, 1.0, p.m)
    H = p.dense_lagrangian_hessian(p.x0, lam)
    np.testing.assert_allclose(H, _fd_lagrangian_hessian(p, p.x0, lam), rtol=1e-5,
                               atol=1e-5 * max(1.0, np.abs(H).max()))


@pytest.mark.parametrize("name", FAST)
def test_fast_subset_reaches_reference_values(name):
    p = load(name, source="s2mpj")
    result = sketch_newton(p, tol=1e-6, seed=0, sketch="gaussian")
    assert result.success, result.message
    assert result.fun == pytest.approx(F_STAR[name], rel=1e-6, abs=1e-6)
    # KKT residual recomputed independently of the solver's bookkeeping
    x, lam = result.x
    assert p.kkt_norm(x, lam) <= 1e-6


def test_morebvne_residual_matches_textbook():
    p = load("MOREBVNE")
    n, h = 10, 1.0 / 11
    t = h * np.arange(1, n + 1)
    x = p.x0
    xp = np.concatenate([[0.0], x, [0.0]])
    expected = 2 * x - xp[:-2] - xp[2:] + 0.5 * h**2 * (x + t + 1) ** 3
    np.testing.assert_allclose(p.constraints(x), expected, rtol=1e-14)


def test_unknown_source():
    with pytest.raises(ValueError, match="source"):
        load("HS6", source="nowhere")


@pytest.mark.slow
def test_sif2jax_and_s2mpj_agree_at_x0():
    both = ["HS6", "HS7", "BT2", "BT5", "BT9", "HS28", "HS40", "HS42", "HS77", "HS78", "HS79", "HIMMELBC"]
    for name in both:
        a, b = load(name, source="sif2jax"), load(name, source="s2mpj")
        if not np.allclose(np.sort(a.x0), np.sort(b.x0)):
            continue
        assert a.objective(a.x0) == pytest.approx(b.objective(b.x0), rel=1e-12, abs=1e-12), name
        np.testing.assert_allclose(np.sort(a.constraints(a.x0)), np.sort(b.constraints(b.x0)), rtol=1e-12,
                                   atol=1e-12, err_msg=name)


@pytest.mark.slow
def test_paper_set_all_47_reach_reference_values():
    entries = paper_set()
    assert len(entries) == 47
    for e in entries:
        result = sketch_newton(e.problem, tol=1e-6, seed=0, sketch="gaussian")
        assert result.success, (e.name, result.message)
        assert result.fun == pytest.approx(e.f_star, rel=1e-5, abs=1e-6), e.name


def test_load_from_sif2jax_without_importing_the_whole_package():
    import subprocess
    import sys

    # A fresh interpreter: loading HS7 must not execute sif2jax/__init__ (which builds all ~840 problems).
    code = ("import sys; from optkit.problems.library.cutest import load, source_of; p = load('HS7'); "
            "assert source_of('HS7') == 'sif2jax' and p.x0.dtype.name == 'float64'; "
            "print(p.n, p.m, p.objective(p.x0), 'sif2jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n, m, f0, imported = out.stdout.split()
    assert (n, m, imported) == ("2", "1", "False")
    assert float(f0) == pytest.approx(np.log(5.0) - 2.0, rel=1e-12)  # HS7 at x0 = (2, 2)
