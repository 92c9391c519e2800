"""The experiment runner on a tiny grid: records, JSON, markdown, plots, errors, executors."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from optkit.experiments import (
    RECORD_FIELDS,
    Experiment,
    Instance,
    MethodSpec,
    experiments,
    get_experiment,
    markdown_table,
    run_experiment,
    write_outputs,
)
from optkit.problems import Entropic, TransportProblem
from optkit.solvers.registry import get, resolve_backend


def _tiny_module(name: str = "optkit_tests_tiny_experiment") -> types.ModuleType:
    module = types.ModuleType(name)
    module.NAME = "tiny"
    module.DESCRIPTION = "two small OT problems, sinkhorn twice"
    module.METRICS = ("nit", "wall_time", "marginal_error", "cost")
    module.REFERENCE_LABEL = "exact"

    def instances(quick):
        rng = np.random.default_rng(0)
        out = []
        for n in (6, 9):
            x, y = rng.normal(size=(n, 2)), rng.normal(size=(n + 1, 2))
            problem = TransportProblem.from_points(x, y, normalize="max", regularization=Entropic(0.1))
            out.append(Instance(f"n{n}", problem, {"n": n}))
        return out

    def methods(quick):
        return [MethodSpec("sinkhorn", {"tol": 1e-8}), MethodSpec("sinkhorn", {"tol": 1e-3}, label="loose")]

    def reference(instance):
        import ot

        p = instance.problem
        return {"cost": float(ot.emd2(p.a, p.b, np.asarray(p.cost)))}

    def measure(instance, result, ref):
        return {"cost": float(result.x.cost), "above_exact": float(result.x.cost) >= ref["cost"] - 1e-6}

    module.instances, module.methods, module.reference, module.measure = instances, methods, reference, measure
    return module


@pytest.fixture
def tiny(monkeypatch) -> Experiment:
    module = _tiny_module()
    monkeypatch.setitem(sys.modules, module.__name__, module)  # workers import the module by name
    return Experiment(module.NAME, module.DESCRIPTION, module)


def test_discovery_finds_entropic_ot():
    names = [exp.name for exp in experiments()]
    assert "entropic-ot" in names
    exp = get_experiment("entropic-ot")
    assert exp.description and exp.has_demo and "cost_gap" in exp.metrics
    with pytest.raises(ValueError, match="unknown experiment 'no-such'.*entropic-ot"):
        get_experiment("no-such")


def test_tiny_grid_records_and_outputs(tiny, tmp_path):
    run = run_experiment(tiny, seeds=[0])
    # 2 reference rows + 2 instances x 2 methods x 1 seed.
    assert len(run.records) == 6
    for record in run.records:
        assert set(record) == set(RECORD_FIELDS)
    solved = [r for r in run.records if r["status"] != "REFERENCE"]
    assert {r["method"] for r in solved} == {"sinkhorn", "loose"}
    for r in solved:
        assert r["status"] == "CONVERGED" and r["success"] and r["solver"] == "sinkhorn"
        assert r["backend"] == resolve_backend("auto", get("sinkhorn"))  # what backend="auto" picks
        assert r["nit"] >= 1 and r["wall_time"] > 0
        assert isinstance(r["fun"], float) and r["metrics"]["above_exact"] in (True, False)
        tol = 1e-8 if r["method"] == "sinkhorn" else 1e-3
        assert r["residuals"]["marginal_error"] <= tol
        history = r["history"]
        assert len(history["nit"]) == len(history["marginal_error"]) >= 1
        assert r["params"]["n"] in (6, 9)
    # Records come grouped by instance, the reference row first.
    assert [r["instance"] for r in run.records] == ["n6"] * 3 + ["n9"] * 3
    assert run.records[0]["status"] == "REFERENCE" and run.records[0]["method"] == "exact"

    written = write_outputs(run, tmp_path / "out")
    payload = json.loads(written["json"].read_text())  # strict JSON: would fail on NaN
    assert payload["experiment"] == "tiny" and len(payload["records"]) == 6
    table = written["markdown"].read_text()
    assert "| instance | method | status | nit | wall_time | marginal_error | cost |" in table
    assert table.count("| n6 |") == 3
    assert len(written["plots"]) == 2
    for path in written["plots"]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filters_seeds_and_table_medians(tiny):
    run = run_experiment(tiny, seeds=[1, 2], instances=["n9"], methods=["loose"])
    solved = [r for r in run.records if r["status"] != "REFERENCE"]
    assert [r["seed"] for r in solved] == [1, 2]
    table = run.table()
    assert "2/2 CONVERGED" in table
    with pytest.raises(ValueError, match="unknown instance"):
        run_experiment(tiny, instances=["n1000"])
    with pytest.raises(ValueError, match="workers"):
        run_experiment(tiny, workers=0)


def test_a_failing_run_is_recorded_not_raised(tiny):
    tiny.module.methods = lambda quick: [MethodSpec("sinkhorn", {"no_such_option": 1}, label="bad")]
    run = run_experiment(tiny, instances=["n6"])
    bad = [r for r in run.records if r["method"] == "bad"]
    assert bad[0]["status"] == "ERROR" and "no_such_option" in bad[0]["message"]


def test_markdown_table_format():
    records = [
        {"instance": "i", "method": "m", "status": "CONVERGED", "nit": 3, "wall_time": 0.5,
         "residuals": {"err": 1e-9}, "metrics": {}, "counts": {}, "params": {}},
        {"instance": "i", "method": "m", "status": "MAX_ITER", "nit": 5, "wall_time": 1.5,
         "residuals": {"err": 1e-3}, "metrics": {}, "counts": {}, "params": {}},
    ]
    table = markdown_table(records, ["nit", "wall_time", "err", "missing"])
    assert table.splitlines()[2] == "| i | m | 1/2 CONVERGED | 4 | 1 | 0.0005 | — |"


def test_scheduler_without_dask_gives_a_clear_error(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match="dask"):
        run_experiment(tiny, scheduler="tcp://127.0.0.1:8786")


@pytest.mark.slow  # spawns two interpreters (several seconds on a loaded machine)
def test_local_processes_match_in_process():
    serial = run_experiment("entropic-ot", quick=True, instances=["clouds-n100-eps0.01"])
    parallel = run_experiment("entropic-ot", quick=True, instances=["clouds-n100-eps0.01"], workers=2)
    assert [(r["method"], r["nit"]) for r in serial.records] == [(r["method"], r["nit"]) for r in parallel.records]
    # Compiled kernels may sum in another order in another process: equal to rounding.
    for mine, theirs in zip(serial.records, parallel.records):
        assert mine["metrics"]["cost"] == pytest.approx(theirs["metrics"]["cost"], rel=1e-12)


def test_dask_cluster_matches_in_process(tiny):
    distributed = pytest.importorskip("distributed")
    serial = run_experiment(tiny, instances=["n6"])
    # A threads-only local cluster: the same code path as a remote scheduler, without spawning processes.
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        on_dask = run_experiment(tiny, instances=["n6"], scheduler=client)
    assert on_dask.settings["scheduler"] is not None
    strip = [(r["method"], r["status"], r["nit"]) for r in serial.records]
    assert strip == [(r["method"], r["status"], r["nit"]) for r in on_dask.records]
    for mine, theirs in zip(serial.records, on_dask.records):  # equal to rounding (compiled reductions)
        assert mine["metrics"]["cost"] == pytest.approx(theirs["metrics"]["cost"], rel=1e-12)
