"""The sketch-newton-cutest experiment: its quick slice solves every problem to the reference f*."""

from __future__ import annotations

from optkit.experiments import get_experiment, run_experiment


def test_quick_slice_solves_every_problem():
    exp = get_experiment("sketch-newton-cutest")
    assert exp.has_demo and "solved" in exp.metrics
    run = run_experiment(exp, quick=True, methods=["sketch-newton (kaczmarz)", "trust-constr"])
    assert len(run.records) == 2 * 5
    for record in run.records:
        # solved = KKT <= 1e-6 recomputed from the oracles and |f - f*| <= 1e-5 max(1, |f*|) (SIF SOLTN values)
        assert record["metrics"]["solved"], (record["instance"], record["method"], record["message"])
