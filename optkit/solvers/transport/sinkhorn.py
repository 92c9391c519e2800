"""Log-domain Sinkhorn for entropic OT, registered as ``"sinkhorn"``.

Solves

.. math::

    \\min_{P\\mathbf 1 = a,\\; P^\\top\\mathbf 1 = b} \\langle C, P\\rangle
        + \\varepsilon\\sum_{ij} P_{ij}(\\log P_{ij} - 1)

through its dual, :math:`\\max_{f,g} \\langle f, a\\rangle + \\langle g, b\\rangle
- \\varepsilon\\sum_{ij} e^{(f_i + g_j - C_{ij})/\\varepsilon}`, by exact alternating maximisation
(Cuturi 2013, in the log domain of Peyré & Cuturi, *Computational Optimal Transport*, Remark 4.23, eq. 4.43).
Stopping rule: the L1 marginal error :math:`\\|P\\mathbf 1 - a\\|_1 + \\|P^\\top\\mathbf 1 - b\\|_1 \\le` ``tol``.

Backends: ``"numpy"`` (:mod:`optkit.kernels.numpy_sinkhorn`, the reference), ``"numba"``
(:mod:`optkit.kernels.numba_sinkhorn`: stabilised scaling with absorption, one fused pass over the kernel per
update, parallel over rows) and ``"jax"`` (:mod:`optkit.kernels.jax_sinkhorn` via
:mod:`optkit.solvers.transport._sinkhorn_jax`: jit/vmap-compatible and differentiable). All three return the
potentials in the balanced gauge :math:`\\langle a, f\\rangle = \\langle b, g\\rangle`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from optkit._arrays import is_jax_array
from optkit.problems.transport import Entropic, TransportProblem
from optkit.solvers.loop import Step, check_positive, check_positive_int, drive
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result, Status
from optkit.solvers.transport._solution import entropic_summary

__all__ = ["sinkhorn"]

Kernel = Callable[..., tuple[np.ndarray, np.ndarray, float, int]]


def _entropic_only(problem: TransportProblem) -> str | None:
    if not isinstance(problem.regularization, Entropic):
        return (
            f"method 'sinkhorn' needs an Entropic(epsilon) regularization, got {problem.regularization!r}; "
            "use method='emd' for exact OT"
        )
    return None


def _example() -> TransportProblem:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 2)), rng.normal(size=(9, 2)) + 0.5
    return TransportProblem.from_points(x, y, normalize="max", regularization=Entropic(0.05))


@register(
    "sinkhorn", TransportProblem, backends=("numpy", "numba", "jax"), default=True, accepts=_entropic_only,
    example=_example,
)
def sinkhorn(
    problem: TransportProblem,
    *,
    tol: float | None = None,
    max_iter: int = 10_000,
    check_every: int = 10,
    time_limit: float | None = None,
    init: tuple[Any, Any] | None = None,
    implicit_diff: bool = True,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    """Log-domain Sinkhorn for entropic optimal transport.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.TransportProblem` with ``Entropic(epsilon)`` regularization.
    tol
        Stop when the L1 marginal error :math:`\\|P\\mathbf 1 - a\\|_1 + \\|P^\\top \\mathbf 1 - b\\|_1` is at most
        ``tol``; by default ``1e-9`` for float64 data and ``1e-5`` for float32. On the JAX backend it may be a
        (traced) JAX scalar.
    max_iter
        Maximum number of Sinkhorn updates (one update = one ``f`` and one ``g`` half-step).
    check_every
        How many updates the compiled backends run between two records of the history (and callback calls):
        the Numba kernel measures the error at every update anyway (it falls out of its fused pass) and resumes
        its state between chunks; the JAX loop tests the stopping rule every ``check_every`` updates. The NumPy
        reference records every update.
    time_limit
        Seconds after which the run stops with ``TIME_LIMIT`` (checked between chunks).
    init
        Starting potentials ``(f, g)``; zeros by default.
    implicit_diff
        On the JAX backend, differentiate the solution by implicit differentiation of the optimality conditions
        (``False``: unroll the loop, whose reverse-mode memory grows with ``max_iter``).
    backend
        ``"auto"``, ``"numpy"``, ``"numba"`` or ``"jax"``.
    callback, progress, seed
        See :func:`optkit.solve` (Sinkhorn is deterministic and ignores ``seed``).

    Returns
    -------
    Result
        ``x`` is a :class:`~optkit.solvers.transport.TransportSolution`; ``fun`` is the entropic objective;
        ``residuals["marginal_error"]`` is the final L1 marginal error, recomputed from the returned plan.
        On the JAX backend ``x`` holds JAX arrays; under ``jax.jit``/``jax.vmap``/``jax.grad`` ``status`` is an
        ``int32`` array of :class:`~optkit.Status` codes and ``nit`` an array (see
        :mod:`optkit.solvers.transport._sinkhorn_jax`). ``callback``, ``progress`` and ``time_limit`` run the
        JAX backend in compiled chunks driven from Python, which cannot be traced.

    Examples
    --------
    >>> import numpy as np, optkit
    >>> from optkit.problems import TransportProblem, Entropic
    >>> rng = np.random.default_rng(0)
    >>> problem = TransportProblem.from_points(rng.normal(size=(50, 2)), rng.normal(size=(60, 2)),
    ...                                        normalize="max", regularization=Entropic(0.05))
    >>> result = optkit.solve(problem, "sinkhorn", tol=1e-9)
    >>> bool(result.success), result.residuals["marginal_error"] <= 1e-9
    (True, True)
    """
    reason = _entropic_only(problem)
    if reason is not None:
        raise ValueError(reason)
    if tol is None:
        tol = 1e-5 if problem.cost.dtype == np.float32 else 1e-9
    elif not is_jax_array(tol):
        tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    check_every = check_positive_int("check_every", check_every)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    chosen = resolve_backend(backend, sinkhorn.solver_info, problem.a, problem.b, problem.cost)
    if chosen == "jax":
        from optkit.solvers.transport._sinkhorn_jax import solve_jax

        return solve_jax(
            problem, tol=tol, max_iter=max_iter, check_every=check_every, time_limit=time_limit, init=init,
            implicit_diff=implicit_diff, callback=callback, progress=progress,
        )
    if problem.is_jax or is_jax_array(tol):
        raise ValueError(f"backend {chosen!r} needs NumPy arrays; this problem holds JAX arrays (use backend='jax')")
    if chosen == "numba":
        from optkit.kernels.numba_sinkhorn import sinkhorn_log_chunk as kernel
    else:
        from optkit.kernels.numpy_sinkhorn import sinkhorn_log_chunk as kernel
    return _solve_with_kernel(
        problem, kernel, chosen, tol=tol, max_iter=max_iter, chunk=1 if chosen == "numpy" else check_every,
        time_limit=time_limit, init=init, callback=callback, progress=progress,
    )


def _initial_potentials(problem: TransportProblem, init: tuple[Any, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    n, m = problem.shape
    dtype = problem.cost.dtype
    if init is None:
        return np.zeros(n, dtype), np.zeros(m, dtype)
    try:
        f0, g0 = init
    except (TypeError, ValueError):
        raise TypeError("init must be a pair of potentials (f, g)") from None
    f0 = np.array(f0, dtype=dtype)
    g0 = np.array(g0, dtype=dtype)
    if f0.shape != (n,) or g0.shape != (m,):
        raise ValueError(f"init potentials must have shapes ({n},) and ({m},), got {f0.shape} and {g0.shape}")
    if np.isnan(f0).any() or np.isnan(g0).any():
        raise ValueError("init potentials must not contain NaN")
    return f0, g0


def _balanced_gauge(f: np.ndarray, g: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift ``(f + c, g - c)`` so that ``<a, f> = <b, g>`` (the plan does not change; -inf entries stay)."""
    fa, gb = a > 0, b > 0
    c = (float(np.dot(b[gb], g[gb])) - float(np.dot(a[fa], f[fa]))) / (float(a.sum()) + float(b.sum()))
    return f + f.dtype.type(c), g - g.dtype.type(c)


def _solve_with_kernel(
    problem: TransportProblem,
    kernel: Kernel,
    backend: str,
    *,
    tol: float,
    max_iter: int,
    chunk: int,
    time_limit: float | None,
    init: tuple[Any, Any] | None,
    callback: Any,
    progress: bool,
) -> Result:
    """The shared Python driver for the NumPy and Numba kernels (the whole inner loop runs in the kernel)."""
    cost, a, b = problem.cost, problem.a, problem.b
    epsilon = float(problem.epsilon)
    f, g = _initial_potentials(problem, init)
    state = {"f": f, "g": g}

    def step(budget: int) -> Step:
        f_new, g_new, err, done = kernel(cost, a, b, state["f"], state["g"], epsilon, min(budget, chunk), tol)
        if not (np.isfinite(err) and not np.isnan(f_new).any() and not np.isnan(g_new).any()):
            return Step(max(int(done), 1), {"marginal_error": float("nan")}, status=Status.NUMERICAL_ERROR,
                        message=f"sinkhorn: a non-finite value appeared at epsilon = {epsilon:g}; the last finite "
                        "potentials are returned. Increase epsilon or use float64.")
        state["f"], state["g"] = f_new, g_new
        if done == 0 and not err <= tol:
            return Step(0, {"marginal_error": float(err)}, status=Status.STALLED,
                        message="sinkhorn: the kernel made no update; " + Status.STALLED.advice)
        return Step(int(done), {"marginal_error": float(err)})

    def current() -> Any:
        return entropic_summary(cost, a, b, *_balanced_gauge(state["f"], state["g"], a, b), epsilon)

    outcome = drive(
        step,
        converged=lambda r: r["marginal_error"] <= tol,
        max_iter=max_iter,
        method="sinkhorn",
        time_limit=time_limit,
        callback=callback,
        progress=progress,
        current=current,
        stopping_rule=f"L1 marginal error <= {tol:g}",
    )
    solution = current()
    marginal_error = solution.marginal_error[0] + solution.marginal_error[1]
    status, message = outcome.status, outcome.message
    if not np.isfinite(solution.objective):
        status = Status.NUMERICAL_ERROR
        message = "sinkhorn: the plan's objective is not finite; " + Status.NUMERICAL_ERROR.advice
    return Result(
        x=solution,
        fun=solution.objective,
        status=status,
        message=message,
        nit=outcome.nit,
        counts={"updates": outcome.nit, "kernel_calls": outcome.history.n_records},
        residuals={"marginal_error": marginal_error},
        history=outcome.history,
        wall_time=outcome.wall_time,
        method="sinkhorn",
        backend=backend,
        info={"epsilon": epsilon, "dual_objective": solution.dual_objective,
              "duality_gap": solution.objective - solution.dual_objective},
    )
