"""The sns-table1 and sparse-ot experiments: grids, and their numbers against POT."""

from __future__ import annotations

import numpy as np
import ot
import pytest

from optkit.experiments import run_experiment, sns_table1, sparse_ot


def test_sns_table1_grid_and_sns_row() -> None:
    grid = sns_table1.instances(True)
    assert [inst.params["kind"] for inst in grid] == ["random assignment", "digits L2", "digits L1"]
    assert all(inst.problem.epsilon == 1 / 1200 for inst in grid)
    run = run_experiment("sns-table1", quick=True, instances=["digits-sklearn-0v1-L2"], methods=["sns"])
    (record,) = run.records
    assert record["status"] == "CONVERGED" and record["residuals"]["marginal_error"] <= 1e-9
    assert record["counts"]["newton_steps"] >= 1


def test_sparse_ot_grid_and_reference() -> None:
    grid = sparse_ot.instances(True)
    assert [inst.params["k"] for inst in grid] == [2, 5, 40]
    run = run_experiment("sparse-ot", quick=True, instances=["mixtures-quantiles-n40-k2"],
                         methods=["sparse-ot (semi-dual)"])
    reference, solved = run.records
    problem = grid[0].problem
    assert reference["fun"] == pytest.approx(ot.emd2(problem.a, problem.b, np.asarray(problem.cost)), rel=1e-12)
    assert solved["metrics"]["max_nonzeros"] <= 2
    # uniform weights: polishing gives a feasible 2-sparse plan, whose objective is at least the exact OT cost
    assert solved["status"] == "CONVERGED" and solved["residuals"]["marginal_error"] <= 1e-6
    assert solved["fun"] >= reference["fun"]
