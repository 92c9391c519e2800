"""The entropic-OT experiment: its grid, and its numbers against POT."""

from __future__ import annotations

import numpy as np
import ot
import pytest

from optkit.experiments import entropic_ot, run_experiment


def test_quick_grid_is_small_and_valid():
    grid = entropic_ot.instances(True)
    assert len(grid) == 6 and len({inst.name for inst in grid}) == 6
    for inst in grid:
        assert float(np.max(inst.problem.cost)) == pytest.approx(1.0)  # epsilon is relative to the max cost
        assert inst.params["epsilon"] == inst.problem.epsilon
    labels = [spec.name for spec in entropic_ot.methods(True)]
    assert labels[0] == "sinkhorn (numpy)"


def test_numbers_match_pot():
    run = run_experiment("entropic-ot", quick=True, instances=["clouds-n100-eps0.01"], methods=["sinkhorn (numpy)"])
    reference, solved = run.records
    problem = next(i for i in entropic_ot.instances(True) if i.name == "clouds-n100-eps0.01").problem
    a, b, cost = problem.a, problem.b, np.asarray(problem.cost)
    assert reference["metrics"]["cost"] == pytest.approx(ot.emd2(a, b, cost), rel=1e-12)
    # POT's log-domain Sinkhorn has the same plan; both stop at an L1 marginal error of ~1e-6, and the cost
    # matrix is bounded by 1, so their transport costs agree to a few 1e-6.
    plan = ot.sinkhorn(a, b, cost, 0.01, method="sinkhorn_log", stopThr=1e-12, numItermax=100_000)
    assert solved["status"] == "CONVERGED"
    assert solved["metrics"]["cost"] == pytest.approx(float(np.sum(plan * cost)), abs=5e-6)
    gap = (solved["metrics"]["cost"] - reference["metrics"]["cost"]) / reference["metrics"]["cost"]
    assert solved["metrics"]["cost_gap"] == pytest.approx(gap)
    assert 0 < gap < 1  # entropic blur raises the cost, by O(epsilon log 1/epsilon)
