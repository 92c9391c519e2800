"""Shared helpers for the benchmark scripts: timing, the machine description, a markdown table, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn: Callable[[], Any], *, repeat: int = 3, budget: float = 5.0) -> tuple[float, float, Any]:
    """Run ``fn`` up to ``repeat`` times (stopping once ``budget`` seconds are spent) and return
    ``(best wall seconds, CPU seconds of that run, its result)``. The best run is the least disturbed by other
    processes on a shared machine."""
    best = (float("inf"), float("nan"), None)
    spent = 0.0
    for _ in range(max(1, repeat)):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if wall < best[0]:
            best = (wall, cpu, out)
        spent += wall
        if spent >= budget:
            break
    return best


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine(packages: Sequence[str] = ("numpy", "scipy", "numba", "jax", "pot", "ott-jax")) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, load, thread settings and package versions."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": {p: _version(p) for p in packages if _version(p) is not None},
    }
    for var in ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if var in os.environ:
            info[var] = os.environ[var]
    try:
        import numba

        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for a README or a log."""
    load = info.get("load_average_at_start")
    load_text = f", load average {load[0]:.1f}" if load else ""
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    return f"{info['cpu']}, {info['logical_cores']} logical cores{load_text}; {versions}"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``rows`` (dicts) over ``columns``; floats get 3 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:
                return "-"
            return f"{value:.3g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``benchmarks/results/<name>.json`` and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=float))
    return path
