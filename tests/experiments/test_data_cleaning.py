"""The data-cleaning experiment: records of a short run of two methods on a small scikit-learn-digits instance,
the traced history against time, the metrics recomputed from scratch (accuracy, sklearn's F1) and the figure."""

from __future__ import annotations

import numpy as np
import pytest

from optkit.experiments import RECORD_FIELDS, get_experiment


def test_short_run_records_history_and_metrics(tmp_path) -> None:
    module = get_experiment("data-cleaning").module
    cleaning = module._problem("sklearn", 120, 120, 200, 0)
    records = [module.run_method(cleaning, method, time_limit=0.4, eval_every=0.05) for method in ("aid", "v-pbgd")]
    for record in records:
        assert set(record) == set(RECORD_FIELDS)
        assert record["status"] in ("CONVERGED", "TIME_LIMIT", "MAX_ITER"), record["message"]
        history = record["history"]
        assert len(history["time"]) >= 2 and np.all(np.diff(history["time"]) >= 0)
        assert history["test_accuracy"][-1] == record["metrics"]["test_accuracy"]
        # the corrupted training set still teaches something: better than the 10-class chance level
        assert record["metrics"]["test_accuracy"] > 0.3
        assert 0.0 <= record["metrics"]["cleaner_f1"] <= 1.0
    aid = records[0]
    assert aid["metrics"]["cleaner_f1"] > 0.6  # learnt weights flag mostly corrupted examples
    module.save_figure(records, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0


def test_metrics_against_sklearn() -> None:
    from sklearn.metrics import f1_score

    from optkit.problems.library.cleaning import accuracy, cleaner_f1

    module = get_experiment("data-cleaning").module
    cleaning = module._problem("sklearn", 120, 120, 200, 0)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=120), rng.normal(size=cleaning.problem.dims[1])
    A, labels = cleaning.test
    assert accuracy(cleaning, y) == pytest.approx(np.mean(np.argmax(A @ y.reshape(65, 10), axis=1) == labels))
    assert cleaner_f1(x, cleaning.corrupted) == pytest.approx(f1_score(cleaning.corrupted, x < 0))
