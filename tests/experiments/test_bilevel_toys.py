"""The bilevel-toys experiment's quick slice: known solutions reached, refusals recorded with their reason."""

from __future__ import annotations

from optkit.experiments.runner import get_experiment, run_experiment


def test_quick_slice() -> None:
    exp = get_experiment("bilevel-toys")
    assert exp.module.demo() == {"quick": True}
    run = run_experiment("bilevel-toys", quick=True)
    rows = {(r["instance"], r["method"]): r for r in run.records}
    for method in ("penalty", "aid", "itd", "f2sa"):  # the T1 defaults reach ||x - x*|| <= 1e-4 (see the solver tests)
        assert rows[("T1", method)]["status"] == "CONVERGED"
        assert rows[("T1", method)]["metrics"]["x_error"] <= 1e-4
    assert rows[("T4-n3", "penalty")]["metrics"]["x_error"] <= 1e-4
    refusal = rows[("T4-n3", "aid")]
    assert refusal["status"] == "NOT_APPLICABLE" and "unconstrained lower level" in refusal["message"]
