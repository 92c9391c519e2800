"""The paper's deterministic baselines (l1-merit inexact SQP with GMRES, classical augmented Lagrangian) against
published optimal values (Hock-Schittkowski 1981 / SIF SOLTN) and an independently recomputed KKT residual."""

from __future__ import annotations

import pytest

import optkit
from optkit.problems.library.cutest import PAPER_PROBLEMS, load

F_STAR = dict(PAPER_PROBLEMS)


@pytest.mark.parametrize("method", ["l1-sqp", "augmented-lagrangian"])
@pytest.mark.parametrize("name", ["HS6", "BT2", "HS100LNP", "HS47"])
def test_reaches_reference_values(method, name):
    problem = load(name, source="s2mpj")
    result = optkit.solve(problem, method, tol=1e-6)
    assert result.success, result.message
    x, lam = result.x
    assert problem.kkt_norm(x, lam) <= 1e-6
    # KKT <= 1e-6 near a nondegenerate minimizer puts f within ~1e-6 of f*
    assert result.fun == pytest.approx(F_STAR[name], rel=1e-5, abs=1e-6)
    assert result.counts["gmres_iterations"] > 0


def test_bad_options():
    from optkit.solvers.nlp.sketch_newton import _example

    with pytest.raises(ValueError, match="mu_factor"):
        optkit.solve(_example(), "augmented-lagrangian", mu_factor=0.5)
    with pytest.raises(ValueError, match="kappa"):
        optkit.solve(_example(), "l1-sqp", kappa=-1.0)
