"""Convergence plots (matplotlib, imported only when a plot is drawn).

Figures are drawn on matplotlib's Agg canvas directly, without :mod:`matplotlib.pyplot`, so plotting never
changes the user's backend or opens a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["convergence_figure", "save_convergence_plot", "save_png"]

_NOT_RESIDUALS = {"nit", "time"}


def _residual_name(records: Sequence[Mapping[str, Any]], residual: str | None) -> str | None:
    if residual is not None:
        return residual
    for record in records:
        for name in record.get("residuals") or {}:
            if name in (record.get("history") or {}):
                return name
    return None


def convergence_figure(
    records: Sequence[Mapping[str, Any]], *, residual: str | None = None, title: str = ""
) -> Any:
    """A two-panel figure: ``residual`` against iterations and against seconds, log scale, one line per record.

    Parameters
    ----------
    records
        Run records (see :mod:`optkit.experiments.runner`), each with a ``history`` mapping of column name to
        list of values (``nit``, ``time`` and the residuals) and a ``method`` label.
    residual
        The history column to plot; defaults to the first residual the records report.
    title
        The figure title.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` when no record has the residual in its history.

    Examples
    --------
    >>> from optkit.plotting import convergence_figure
    >>> record = {"method": "sinkhorn", "residuals": {"err": 1e-9},
    ...           "history": {"nit": [0, 1, 2], "time": [0.0, 0.1, 0.2], "err": [1.0, 1e-3, 1e-9]}}
    >>> fig = convergence_figure([record])
    >>> len(fig.axes)
    2
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    name = _residual_name(records, residual)
    if name is None:
        return None
    series = []
    for record in records:
        history = record.get("history") or {}
        if name not in history:
            continue
        values = [math.nan if v is None else float(v) for v in history[name]]
        keep = [i for i, v in enumerate(values) if math.isfinite(v) and v > 0]
        if not keep:
            continue
        label = str(record.get("method", ""))
        if record.get("seed") not in (None, 0):
            label += f" (seed {record['seed']})"
        nit = history.get("nit") or list(range(len(values)))
        times = history.get("time") or [math.nan] * len(values)
        series.append((label, [nit[i] for i in keep], [times[i] for i in keep], [values[i] for i in keep]))
    if not series:
        return None
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_it, ax_time = fig.subplots(1, 2, sharey=True)
    for label, nit, times, values in series:
        ax_it.plot(nit, values, label=label)
        ax_time.plot(times, values, label=label)
    for ax, xlabel in ((ax_it, "iteration"), (ax_time, "seconds")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="major", alpha=0.3)
    ax_it.set_ylabel(name.replace("_", " "))
    ax_time.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def save_convergence_plot(
    records: Sequence[Mapping[str, Any]], path: str | Path, *, residual: str | None = None, title: str = ""
) -> bool:
    """Draw :func:`convergence_figure` and save it to ``path`` (PNG); ``False`` when there was nothing to plot."""
    return save_png(convergence_figure(records, residual=residual, title=title), path) is not None


def save_png(fig: Any, path: str | Path) -> Path | None:
    """Save a figure to ``path`` (PNG, 110 dpi, parent folders created); ``None`` (nothing written) for no figure."""
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
