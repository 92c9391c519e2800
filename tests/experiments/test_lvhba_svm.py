"""The lvhba-svm experiment: one seed of the coupled diabetes instance (LV-HBA and the CVXPY grid search), the
records' fields and the summary rows (mean and std recomputed with numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from optkit.experiments import RECORD_FIELDS, get_experiment


def test_quick_slice_records_and_summary() -> None:
    from optkit.data._errors import DataNotFoundError

    module = get_experiment("lvhba-svm").module
    options = dict(module.LVHBA_OPTIONS, max_iter=10)
    try:
        rows = [module._lvhba("diabetes", "coupled", 1, options), module._grid("diabetes", "coupled", 1),
                module._grid("diabetes", "coupled", 2)]
    except DataNotFoundError as error:  # pragma: no cover - depends on the machine
        pytest.skip(str(error).splitlines()[0])
    for record in rows:
        assert set(record) == set(RECORD_FIELDS)
        assert 0.5 <= record["metrics"]["test_accuracy"] <= 1.0
    lv = rows[0]
    assert lv["nit"] == 10 and lv["status"] == "MAX_ITER"
    assert np.isfinite(lv["metrics"]["lower_gap"]) and lv["metrics"]["constraint_violation"] <= 1e-6
    summary = {r["method"]: r for r in module.summarise(rows)}
    grid = summary["grid search (CVXPY) (mean ± std, 2 seeds)"]["metrics"]
    values = [rows[1]["metrics"]["test_accuracy"], rows[2]["metrics"]["test_accuracy"]]
    assert grid["test_accuracy_mean"] == pytest.approx(np.mean(values))
    assert grid["test_accuracy_std"] == pytest.approx(np.std(values))
    assert "lv-hba (mean ± std, 1 seeds)" in summary
