"""The one return type of every solver: :class:`Result`, its :class:`Status` and its :class:`History`."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Status", "History", "Result"]


class Status(enum.IntEnum):
    """Why a solver stopped.

    An ``IntEnum`` so that it can be carried as an integer inside jitted JAX code (where ``Result.status``
    is an ``int32`` array holding one of these codes) and compared with ``==`` either way.
    """

    CONVERGED = 0
    MAX_ITER = 1
    TIME_LIMIT = 2
    STALLED = 3
    DIVERGED = 4
    INFEASIBLE = 5
    NUMERICAL_ERROR = 6
    CALLBACK_STOP = 7

    def __str__(self) -> str:
        # IntEnum prints as a bare integer on Python >= 3.11; users should read the name.
        return f"Status.{self.name}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    @property
    def advice(self) -> str:
        """A sentence that says what to do about this outcome."""
        return _ADVICE[self]


_ADVICE = {
    Status.CONVERGED: "The stopping rule was met.",
    Status.MAX_ITER: "The maximum number of iterations was reached before the stopping rule was met; "
    "you may need to increase `max_iter` or loosen `tol`.",
    Status.TIME_LIMIT: "The time limit was reached before the stopping rule was met; increase `time_limit`.",
    Status.STALLED: "The iterates stopped making progress before the stopping rule was met; the tolerance may be "
    "below what the working precision allows.",
    Status.DIVERGED: "The iterates diverged; try a smaller step size or a better starting point.",
    Status.INFEASIBLE: "The problem appears infeasible.",
    Status.NUMERICAL_ERROR: "A non-finite value appeared; the last finite iterate is returned. For entropic OT "
    "this usually means epsilon is too small for the working precision.",
    Status.CALLBACK_STOP: "The callback asked the solver to stop.",
}


class History(Mapping[str, np.ndarray]):
    """Columnar per-iteration records: ``history["time"]``, ``history["nit"]``, one column per residual.

    Built by appending rows of scalars; columns are materialised as 1-D NumPy arrays. A key missing from a row
    is recorded as NaN in that column (NaN in the history means "not measured at that iteration", never a
    failed value).
    """

    def __init__(self, columns: Mapping[str, Any] | None = None) -> None:
        self._rows: list[dict[str, float]] = []
        self._columns: dict[str, np.ndarray] = {}
        self._keys: list[str] = []
        if columns:
            lengths = {len(np.asarray(v)) for v in columns.values()}
            if len(lengths) > 1:
                raise ValueError(f"history columns have different lengths: {sorted(lengths)}")
            for key, value in columns.items():
                self._columns[key] = np.asarray(value)
                self._keys.append(key)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any], *, convert: bool = True) -> History:
        """Build from equal-length columns; ``convert=False`` keeps them as given (JAX arrays or tracers)."""
        if convert:
            return cls(columns)
        history = cls()
        history._columns = dict(columns)
        history._keys = list(columns)
        return history

    def append(self, row: Mapping[str, float]) -> None:
        """Add one record (a mapping of column name to scalar)."""
        self._materialise_into_rows()
        for key in row:
            if key not in self._keys:
                self._keys.append(key)
        self._rows.append({k: float(v) for k, v in row.items()})

    def _materialise_into_rows(self) -> None:
        if self._columns and not self._rows:
            n = len(next(iter(self._columns.values())))
            self._rows = [{k: float(c[i]) for k, c in self._columns.items()} for i in range(n)]
            self._columns = {}

    def _column(self, key: str) -> np.ndarray:
        if self._rows:
            return np.array([row.get(key, np.nan) for row in self._rows], dtype=float)
        return self._columns[key]

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keys:
            raise KeyError(f"{key!r} is not in the history; columns are {self._keys}")
        return self._column(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def n_records(self) -> int:
        """The number of recorded iterations."""
        if self._rows:
            return len(self._rows)
        return len(next(iter(self._columns.values()))) if self._columns else 0

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-friendly copy: column name to list of floats."""
        return {k: np.asarray(self[k], dtype=float).tolist() for k in self}

    def __repr__(self) -> str:
        return f"History(records={self.n_records}, columns={self._keys})"


@dataclass(frozen=True)
class Result:
    """What happened in one solve.

    Attributes
    ----------
    x
        The solution, shaped like the problem: a :class:`~optkit.solvers.transport.TransportSolution` for OT,
        ``(x, y)`` for bilevel problems, ``(x, lambda)`` for NLPs.
    fun
        The objective value the solver optimised, at ``x``.
    status
        A :class:`Status` (an ``int32`` array of status codes inside jitted JAX code).
    message
        What happened and, when it did not converge, what to try.
    nit
        Iterations performed.
    counts
        Oracle calls: gradients, Hessian-vector products, component operators, linear-solver iterations ...
    residuals
        The final values of the quantities the stopping rule used.
    history
        Per-iteration records (time, residuals, counts).
    wall_time
        Seconds spent in the solver.
    method, backend
        The registered solver name and the backend that ran (``"numpy"``, ``"numba"`` or ``"jax"``).
    info
        Anything else the solver reports (seeds used, parameters chosen, warnings).
    """

    x: Any
    fun: Any
    status: Any
    message: str
    nit: Any
    counts: Mapping[str, Any] = field(default_factory=dict)
    residuals: Mapping[str, Any] = field(default_factory=dict)
    history: History = field(default_factory=History)
    wall_time: float = 0.0
    method: str = ""
    backend: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> Any:
        """``True`` when the stopping rule was met (a boolean array inside jitted JAX code)."""
        if isinstance(self.status, Status):
            return self.status is Status.CONVERGED
        return self.status == int(Status.CONVERGED)

    def __repr__(self) -> str:
        status = self.status.name if isinstance(self.status, Status) else self.status
        res = ", ".join(f"{k}={_fmt(v)}" for k, v in self.residuals.items())
        return (
            f"Result(method={self.method!r}, backend={self.backend!r}, status={status}, nit={self.nit}, "
            f"fun={_fmt(self.fun)}, residuals={{{res}}}, wall_time={self.wall_time:.3g}s)"
        )


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return repr(value)
