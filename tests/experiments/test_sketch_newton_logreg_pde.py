"""The sketch-newton-logreg and sketch-newton-pde experiments: their quick slices reach KKT 1e-6."""

from __future__ import annotations

import pytest

from optkit.experiments import get_experiment, run_experiment


def test_pde_quick_slice():
    exp = get_experiment("sketch-newton-pde")
    run = run_experiment(exp, quick=True, methods=["sketch-newton (kaczmarz)", "sketch-newton (exact)"])
    assert len(run.records) == 2
    for record in run.records:
        assert record["success"] and record["metrics"]["kkt"] <= 1e-6, record["message"]


@pytest.mark.slow
def test_logreg_quick_slice():
    run = run_experiment("sketch-newton-logreg", quick=True)
    assert len(run.records) == 4
    for record in run.records:
        assert record["success"] and record["metrics"]["kkt"] <= 1e-6, record["message"]
