"""The ``backend="jax"`` path of ``"sparse-ot"``: the whole L-BFGS loop compiled (:mod:`optkit.kernels.jax_sparse_ot`).

The driver (:func:`optkit.solvers.loop.drive`) calls the compiled loop in chunks of at most ``CHUNK`` iterations, so
callbacks, the history, the progress bar and the limits see the iterate between chunks; inside a chunk the loop
stops by itself at the tolerance. Everything runs in float64 in a local ``jax.enable_x64`` context (an L1 marginal
error of 1e-6 is below float32's resolution of the potentials).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from optkit.problems.functions import _x64_context
from optkit.solvers.loop import Step, drive
from optkit.solvers.result import Status

__all__ = ["CHUNK", "solve_jax"]

CHUNK = 25  # iterations per compiled call: a callback sees the iterate at least this often


def solve_jax(cost: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float, k: int, x0: np.ndarray, *,
              formulation: str, tol: float, max_iter: int, memory: int, time_limit: float | None,
              callback: Any, progress: bool, best: dict[str, Any], current: Callable[[], Any],
              chunk: int = CHUNK):
    """Run the compiled L-BFGS under the driver; returns ``(outcome, oracle evaluations)``.

    ``best`` (updated in place after every chunk) holds the NumPy iterate ``x``, the (semi-)dual ``value``, the
    recovered plan in the column-sparse ``rows``/``values`` format ((k, m), as the NumPy oracles return it) and the
    marginal ``error``; ``current()`` builds the callback's iterate from it.
    """
    import jax.numpy as jnp

    from optkit.kernels import jax_sparse_ot as kernels

    static = {"formulation": formulation, "k": k}
    with _x64_context():
        cost_t = jnp.asarray(cost.T, dtype=jnp.float64)
        a_j, b_j = jnp.asarray(a, dtype=jnp.float64), jnp.asarray(b, dtype=jnp.float64)
        gamma_j, tol_j = jnp.asarray(gamma, dtype=jnp.float64), jnp.asarray(tol, dtype=jnp.float64)

        def snapshot(state) -> dict[str, Any]:
            value, rows, values = kernels.plan_of(state.x, cost_t, a_j, b_j, gamma_j, **static)
            return {"x": np.asarray(state.x), "value": float(value), "rows": np.asarray(rows).T,
                    "values": np.asarray(values).T, "error": float(state.error)}

        holder = {"state": kernels.init(jnp.asarray(x0, dtype=jnp.float64), cost_t, a_j, b_j, gamma_j,
                                        memory=memory, **static)}
        best.update(snapshot(holder["state"]))
        evaluations = {"last": int(holder["state"].evaluations)}

        def step(budget: int) -> Step:
            with _x64_context():
                state, done = kernels.run(holder["state"], cost_t, a_j, b_j, gamma_j, tol_j,
                                          jnp.asarray(min(budget, chunk)), memory=memory, **static)
                finite = bool(jnp.isfinite(state.f)) and bool(jnp.all(jnp.isfinite(state.x)))
                if finite:
                    holder["state"] = state
                    best.update(snapshot(state))
            used = int(state.evaluations) - evaluations["last"]
            evaluations["last"] = int(state.evaluations)
            residuals = {"marginal_error": float(state.error)}
            counts = {"oracle_calls": used}
            if not finite:
                return Step(int(done), residuals, counts, status=Status.NUMERICAL_ERROR,
                            message="sparse-ot (jax): a non-finite dual value appeared; the last finite potentials "
                            "are returned. Increase gamma or rescale the cost.")
            if bool(state.failed) and not float(state.error) <= tol:
                return Step(int(done), residuals, counts, status=Status.STALLED,
                            message=f"sparse-ot (jax): the line search found no ascent step with L1 marginal error "
                            f"{float(state.error):.3e} > tol = {tol:g}. " + Status.STALLED.advice)
            return Step(int(done), residuals, counts)

        outcome = drive(
            step,
            converged=lambda r: r["marginal_error"] <= tol,
            max_iter=max_iter,
            method="sparse-ot",
            time_limit=time_limit,
            callback=callback,
            progress=progress,
            current=current,
            initial={"marginal_error": best["error"]},
            stopping_rule=f"L1 marginal error <= {tol:g}",
        )
    return outcome, int(holder["state"].evaluations)
