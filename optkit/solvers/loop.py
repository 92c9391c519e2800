"""The one iteration driver shared by every Python-loop solver.

A solver supplies ``step(budget) -> Step``: it advances its own state by at most ``budget`` iterations (one, or a
chunk run inside a compiled kernel) and reports the residuals its stopping rule uses. :func:`drive` owns the
rest: the stopping test, iteration and time limits, callbacks, history, the progress bar and logging. A solver
file then holds only its mathematics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from optkit.solvers.result import History, Status

__all__ = ["Step", "IterationState", "LoopOutcome", "drive", "check_positive", "check_positive_int"]

logger = logging.getLogger("optkit")


@dataclass
class Step:
    """What one call of a solver's ``step`` did.

    ``status`` lets the step end the run itself (``NUMERICAL_ERROR`` after rolling back to the last finite
    iterate, ``STALLED``, ``DIVERGED``, ``INFEASIBLE``); ``message`` then says why.
    """

    iterations: int
    residuals: Mapping[str, float]
    counts: Mapping[str, float] = field(default_factory=dict)
    status: Status | None = None
    message: str = ""


@dataclass(frozen=True)
class IterationState:
    """What a callback sees: iteration count, elapsed seconds, the latest residuals and the current iterate."""

    nit: int
    elapsed: float
    residuals: Mapping[str, float]
    _current: Callable[[], Any] | None = field(default=None, repr=False)

    @property
    def x(self) -> Any:
        """The current iterate, in the shape of ``Result.x`` (computed on access)."""
        return None if self._current is None else self._current()


@dataclass
class LoopOutcome:
    status: Status
    message: str
    nit: int
    residuals: dict[str, float]
    counts: dict[str, float]
    history: History
    wall_time: float


def drive(
    step: Callable[[int], Step],
    *,
    converged: Callable[[Mapping[str, float]], bool],
    max_iter: int,
    method: str,
    time_limit: float | None = None,
    callback: Callable[[IterationState], Any] | None = None,
    progress: bool = False,
    current: Callable[[], Any] | None = None,
    initial: Mapping[str, float] | None = None,
    stopping_rule: str = "",
) -> LoopOutcome:
    """Run ``step`` until ``converged(residuals)``, a limit, a callback stop or a failure.

    Parameters
    ----------
    step
        ``step(budget)`` advances the solver by at most ``budget`` iterations and returns a :class:`Step`.
    converged
        The stopping rule, evaluated on the residuals of each step (and on ``initial``).
    max_iter, time_limit
        Limits on iterations and seconds.
    callback
        ``callback(IterationState)``; returning ``True`` or raising ``StopIteration`` stops with
        ``CALLBACK_STOP``.
    progress
        Show a tqdm bar (tqdm is imported only then).
    current
        Returns the current iterate for the callback state.
    initial
        Residuals at the starting point, recorded as iteration 0.
    stopping_rule
        Human-readable stopping rule for messages, e.g. ``"L1 marginal error <= 1e-9"``.
    """
    history = History()
    counts: dict[str, float] = {}
    start = time.perf_counter()
    nit = 0
    residuals: dict[str, float] = dict(initial or {})
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=method, leave=False)

    def record() -> None:
        history.append({"nit": nit, "time": time.perf_counter() - start, **residuals, **counts})

    status: Status | None = None
    message = ""
    if initial is not None:
        record()
        if _finite(residuals) and converged(residuals):
            status = Status.CONVERGED
    try:
        while status is None:
            if nit >= max_iter:
                status = Status.MAX_ITER
                break
            if time_limit is not None and time.perf_counter() - start >= time_limit:
                status = Status.TIME_LIMIT
                break
            report = step(max_iter - nit)
            nit += int(report.iterations)
            residuals = {k: float(v) for k, v in report.residuals.items()}
            for key, value in report.counts.items():
                counts[key] = counts.get(key, 0) + value
            record()
            if bar is not None:
                bar.update(int(report.iterations))
                bar.set_postfix({k: f"{v:.2e}" for k, v in list(residuals.items())[:2]}, refresh=False)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s it=%d %s", method, nit, residuals)
            if report.status is not None:
                status, message = report.status, report.message
                break
            if not _finite(residuals):
                status = Status.NUMERICAL_ERROR
                break
            if converged(residuals):
                status = Status.CONVERGED
                break
            if callback is not None:
                state = IterationState(nit, time.perf_counter() - start, dict(residuals), current)
                try:
                    stop = callback(state)
                except StopIteration:
                    stop = True
                if stop:
                    status = Status.CALLBACK_STOP
                    break
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    if not message:
        message = _message(method, status, nit, residuals, stopping_rule)
    logger.info("%s finished: %s after %d iterations (%.3g s)", method, status.name, nit, wall)
    return LoopOutcome(status, message, nit, residuals, counts, history, wall)


def _finite(residuals: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in residuals.values())


def _message(method: str, status: Status, nit: int, residuals: Mapping[str, float], rule: str) -> str:
    shown = ", ".join(f"{k} = {v:.3e}" for k, v in residuals.items())
    where = f" after {nit} iterations" + (f" ({shown})" if shown else "")
    if status is Status.CONVERGED:
        return f"{method} converged{where}" + (f": {rule}." if rule else ".")
    target = f" Stopping rule: {rule}." if rule else ""
    return f"{method} stopped with {status.name}{where}. {status.advice}{target}"


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Validate a positive finite real option and return it as a float."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return number


def check_positive_int(name: str, value: Any) -> int:
    """Validate a positive integer option."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    number = int(value)
    if number < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return number
