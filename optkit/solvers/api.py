"""``optkit.solve``: one entry point for every problem and method."""

from __future__ import annotations

from typing import Any

from optkit.solvers.registry import select
from optkit.solvers.result import Result

__all__ = ["solve"]


def solve(
    problem: Any,
    method: Any = None,
    *,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
    **options: Any,
) -> Result:
    """Solve ``problem`` with ``method`` and return a :class:`~optkit.Result`.

    Parameters
    ----------
    problem
        A problem object from :mod:`optkit.problems` (validated at construction).
    method
        A registered method name (see :func:`optkit.available`), a solver function, or ``None`` for the
        default method of this problem type.
    backend
        ``"auto"`` (JAX arrays run on JAX, otherwise Numba where the method has a kernel, else NumPy),
        ``"numpy"``, ``"numba"`` or ``"jax"``.
    callback
        Called as ``callback(state)`` after each recorded iteration with an
        :class:`~optkit.solvers.loop.IterationState`; return ``True`` (or raise ``StopIteration``) to stop.
    progress
        Show a tqdm progress bar.
    seed
        An int or a :class:`numpy.random.Generator` for stochastic methods.
    **options
        Method options (``tol``, ``max_iter``, ...). Unknown options raise ``TypeError`` listing the valid ones.

    Examples
    --------
    >>> import numpy as np, optkit
    >>> from optkit.problems import TransportProblem, Entropic
    >>> x = np.random.default_rng(0).normal(size=(5, 2))
    >>> problem = TransportProblem.from_points(x, x + 1.0, regularization=Entropic(0.1))
    >>> result = optkit.solve(problem, "sinkhorn", tol=1e-9)
    >>> result.success
    True
    """
    info = select(problem, method)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        valid = ", ".join(sorted(info.options)) or "(none)"
        raise TypeError(f"unknown option(s) {unknown} for method {info.name!r}; valid options are: {valid}")
    return info.func(problem, backend=backend, callback=callback, progress=progress, seed=seed, **options)
