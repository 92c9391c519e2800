"""Writing experiment results: JSON, a markdown table and convergence plots (see :mod:`optkit.experiments.runner`)."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from optkit.experiments.runner import ExperimentRun

__all__ = ["lookup", "markdown_table", "write_outputs"]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become ``None`` (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return _number(value) if _number(value) is not None else str(value)




def lookup(record: Mapping[str, Any], metric: str) -> Any:
    """A metric of a record: a top-level field, else a residual, a measured metric or a count."""
    if metric in record and metric not in ("residuals", "metrics", "counts", "history", "params"):
        return record[metric]
    for group in ("residuals", "metrics", "counts", "params"):
        values = record.get(group) or {}
        if metric in values:
            return values[metric]
    return None


def _format(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """One row per (instance, method): the status and ``metrics``, medians over seeds.

    With several seeds the status column reads ``k/n CONVERGED`` (or ``k/n`` of the most common status when
    none converged).
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["instance"], record["method"]), []).append(record)
    header = ["instance", "method", "status", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for (instance, method), rows in groups.items():
        statuses = [r["status"] for r in rows]
        common = "CONVERGED" if "CONVERGED" in statuses else Counter(statuses).most_common(1)[0][0]
        status = common if len(rows) == 1 else f"{statuses.count(common)}/{len(rows)} {common}"
        cells: list[str] = [instance, method, status]
        for metric in metrics:
            values = [lookup(r, metric) for r in rows]
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(rows) > 1 and numbers:
                median = statistics.median(numbers)
                cells.append(_format(median if not all(isinstance(v, int) for v in numbers) else int(median)))
            else:
                cells.append(_format(values[0]))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(run: ExperimentRun, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and (with ``plots``) one convergence figure per instance.

    Returns the paths written: ``{"json": ..., "markdown": ..., "plots": [...]}`` (plots under ``plots/``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exp = run.experiment
    payload = {
        "experiment": exp.name,
        "description": exp.description,
        "settings": _jsonable(run.settings),
        "wall_time": run.wall_time,
        "metrics": list(exp.metrics),
        "records": run.records,
    }
    json_path = out / "results.json"
    json_path.write_text(json.dumps(payload, indent=1, allow_nan=False))
    md_path = out / "results.md"
    title = f"# {exp.name}\n\n{exp.description}\n\n"
    md_path.write_text(title + run.table() + f"\nSettings: {json.dumps(_jsonable(run.settings))}\n")
    written: dict[str, Any] = {"json": json_path, "markdown": md_path, "plots": []}
    if plots:
        from optkit.plotting import save_convergence_plot

        residual = getattr(exp.module, "RESIDUAL", None)
        by_instance: dict[str, list[Mapping[str, Any]]] = {}
        for record in run.records:
            if record.get("history"):
                by_instance.setdefault(record["instance"], []).append(record)
        for instance, records in by_instance.items():
            path = out / "plots" / f"{_slug(instance)}.png"
            if save_convergence_plot(records, path, residual=residual, title=f"{exp.name}: {instance}"):
                written["plots"].append(path)
        # An experiment may draw its own figure too (e.g. residual against epochs for the monotone solvers).
        custom = getattr(exp.module, "save_figure", None)
        if callable(custom):
            path = out / "plots" / "figure.png"
            custom(run.records, path)
            written["plots"].append(path)
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
