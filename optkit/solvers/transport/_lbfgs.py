"""SciPy's L-BFGS-B, one iteration at a time, for the iteration driver.

SciPy's ``minimize`` owns its loop and reports each iteration through a callback (push); :func:`optkit.solvers.loop.drive`
pulls iterations through ``step``. :class:`LbfgsIterations` bridges the two: SciPy runs in a worker thread that
blocks in its callback until the driver asks for the next iteration, and a stop request makes that callback raise
``StopIteration``, which ends ``minimize`` cleanly (SciPy >= 1.11). Only one of the two threads runs at a time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["LbfgsIterations"]


class LbfgsIterations:
    """Iterate L-BFGS-B on ``fun_and_grad`` (to be *minimised*) from ``x0``.

    ``next()`` returns ``("iterate", x)`` after each accepted L-BFGS iteration, or ``("done", OptimizeResult)``
    when SciPy stops by itself (line-search failure, its own tolerances, ``maxiter``). Call ``close()`` when done.
    SciPy's own tolerances are set to zero so that the caller's stopping rule decides.
    """

    def __init__(self, fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, *,
                 memory: int, max_iter: int) -> None:
        self._fun_and_grad = fun_and_grad
        self._x0 = x0
        self._options = {"maxcor": memory, "maxiter": max_iter, "maxfun": 20 * max_iter + 100, "gtol": 0.0,
                         "ftol": 0.0, "maxls": 40}
        self._to_driver: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        self._to_worker: queue.Queue[str] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._waiting = False  # the worker is blocked in its callback
        self._finished = False

    def _run(self) -> None:
        from scipy.optimize import minimize

        try:
            result = minimize(self._fun_and_grad, self._x0, jac=True, method="L-BFGS-B", callback=self._report,
                              options=self._options)
            self._to_driver.put(("done", result))
        except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread and re-raised there
            self._to_driver.put(("error", exc))

    def _report(self, intermediate_result: Any) -> None:
        self._to_driver.put(("iterate", np.array(intermediate_result.x)))
        if self._to_worker.get() == "stop":
            raise StopIteration

    def next(self) -> tuple[str, Any]:
        if self._finished:
            raise RuntimeError("L-BFGS has already finished")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="optkit-lbfgs", daemon=True)
            self._thread.start()
        else:
            self._to_worker.put("go")
        kind, payload = self._to_driver.get()
        if kind == "error":
            self._finished = True
            raise payload
        self._waiting = kind == "iterate"
        self._finished = kind == "done"
        return kind, payload

    def close(self) -> None:
        """Stop SciPy if it is still running and join its thread."""
        if self._thread is None:
            return
        if self._waiting and not self._finished:
            self._to_worker.put("stop")
            self._to_driver.get()
            self._waiting = False
            self._finished = True
        self._thread.join()
