"""JAX (jit-compiled) semi-dual and dual oracles of sparsity-constrained OT and an L-BFGS loop in ``lax.while_loop``.

Same mathematics as :mod:`optkit.kernels.numpy_sparse_ot` (Liu, Puigcerver & Blondel, ICLR 2023, §3; see there),
written over the transposed cost ``cost_t`` (m, n) so that the k largest scores of each plan column are selected
along the last axis (k rounds of ``argmax`` for small k, ``jax.lax.top_k`` above ``SELECTION_MAX_K``). The plan
comes back in the column-sparse format of the NumPy oracles, transposed: ``rows`` (m, k) and ``values`` (m, k).

:func:`run` advances L-BFGS (two-loop recursion, Nocedal & Wright Alg. 7.4, on a circular buffer) by at most
``budget`` iterations inside one compiled ``lax.while_loop`` and stops early at an L1 marginal error ``<= tol``. Its
line search is backtracking with safeguarded quadratic interpolation on the sufficient-decrease condition
(N&W eq. 3.6a), accepting also Hager & Zhang's approximate Wolfe condition (SIAM J. Optim. 16, 2005, eq. 4.1) where
function differences reach rounding level. The objective is minimised: the solver passes the negated concave
(semi-)dual. Structural arguments (``k``, ``memory``, ``formulation``) are static; ``gamma``, ``tol`` and ``budget``
are traced, so one compilation serves every tolerance and chunk length.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["LbfgsState", "dual_oracle", "init", "plan_of", "run", "semi_dual_oracle"]

C1 = 1e-4  # sufficient decrease
SIGMA = 0.9  # approximate-Wolfe curvature constant
APPROXIMATE_EPSILON = 1e-10  # relative value slack of the approximate Wolfe test
MAX_TRIALS = 40


SELECTION_MAX_K = 32  # up to this k, top-k by k rounds of argmax (XLA's CPU top_k sorts: 10-30x slower at n = 1000)


def _top_k(scores: jnp.ndarray, k: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Values and indices of the k largest entries of each row, in decreasing order (ties: the lower index first)."""
    if k > SELECTION_MAX_K:
        return lax.top_k(scores, k)
    rows = jnp.arange(scores.shape[0])
    values, indices = [], []
    for _ in range(k):
        index = jnp.argmax(scores, axis=-1)
        values.append(scores[rows, index])
        indices.append(index)
        scores = scores.at[rows, index].set(-jnp.inf)
    return jnp.stack(values, axis=-1), jnp.stack(indices, axis=-1)


def _project_sorted(top: jnp.ndarray) -> jnp.ndarray:
    """Simplex projection of rows of ``top`` (m, k) sorted in decreasing order (Held-Wolfe-Crowder threshold)."""
    k = top.shape[-1]
    cumulative = jnp.cumsum(top, axis=-1) - 1.0
    ranks = jnp.arange(1, k + 1, dtype=top.dtype)
    support = top - cumulative / ranks > 0  # a prefix of each row for sorted input
    rho = jnp.maximum(jnp.sum(support, axis=-1), 1)
    theta = jnp.take_along_axis(cumulative, (rho - 1)[:, None], axis=-1)[:, 0] / rho
    return jnp.maximum(top - theta[:, None], 0.0)


def semi_dual_oracle(alpha, cost_t, a, b, gamma, k: int):
    """``(value, grad, rows, values)`` of :math:`S(\\alpha)`; see :func:`optkit.kernels.numpy_sparse_ot.semi_dual_oracle`."""
    active = b > 0
    scale = gamma * jnp.where(active, b, 1.0)
    scores = alpha[None, :] - cost_t
    top, rows = _top_k(scores / scale[:, None], k)
    u = _project_sorted(top)
    kept_scores = top * scale[:, None]
    max_omega = jnp.sum(kept_scores * u, axis=-1) - 0.5 * scale * jnp.sum(u * u, axis=-1)
    values = u * jnp.where(active, b, 0.0)[:, None]
    value = a @ alpha - jnp.sum(jnp.where(active, b * max_omega, 0.0))
    grad = a - jnp.zeros_like(alpha).at[rows].add(values)
    return value, grad, rows, values


def dual_oracle(potentials, cost_t, a, b, gamma, k: int):
    """``(value, grad, rows, values)`` of :math:`D(\\alpha,\\beta)` with ``potentials = concat(alpha, beta)``."""
    n = a.shape[0]
    alpha, beta = potentials[:n], potentials[n:]
    scores = alpha[None, :] + beta[:, None] - cost_t
    top, rows = _top_k(scores, k)
    values = jnp.maximum(top, 0.0) / gamma
    value = a @ alpha + b @ beta - 0.5 * gamma * jnp.sum(values * values)
    grad = jnp.concatenate([a - jnp.zeros_like(alpha).at[rows].add(values), b - jnp.sum(values, axis=-1)])
    return value, grad, rows, values


class LbfgsState(NamedTuple):
    x: Any
    f: Any  # minimised value: minus the (semi-)dual
    g: Any
    s: Any  # (memory, d) correction pairs, circular
    y: Any
    rho: Any  # (memory,) 1 / s^T y, 0 for an empty slot
    head: Any  # slot of the next pair
    error: Any  # L1 marginal error at x
    failed: Any  # the last line search found no step (bool)
    evaluations: Any


def _negated(formulation: str, k: int, x, cost_t, a, b, gamma):
    oracle = dual_oracle if formulation == "dual" else semi_dual_oracle
    value, grad, rows, values = oracle(x, cost_t, a, b, gamma, k)
    n = a.shape[0]
    # The gradient is the marginal residual: rows (and for the dual, columns); semi-dual columns are exact.
    error = jnp.sum(jnp.abs(grad)) if formulation == "dual" else jnp.sum(jnp.abs(grad[:n]))
    return -value, -grad, error, rows, values


@partial(jax.jit, static_argnames=("formulation", "k", "memory"))
def init(x0, cost_t, a, b, gamma, *, formulation: str, k: int, memory: int) -> LbfgsState:
    f, g, error, _, _ = _negated(formulation, k, x0, cost_t, a, b, gamma)
    d = x0.shape[0]
    zeros = jnp.zeros((memory, d), x0.dtype)
    return LbfgsState(x0, f, g, zeros, zeros, jnp.zeros(memory, x0.dtype), jnp.asarray(0), error,
                      jnp.asarray(False), jnp.asarray(1))


def _direction(state: LbfgsState, memory: int):
    newest = (state.head - 1) % memory

    def backward(i, carry):
        q, coefficients = carry
        slot = (state.head - 1 - i) % memory
        c = state.rho[slot] * (state.s[slot] @ q)
        return q - c * state.y[slot], coefficients.at[slot].set(c)

    q, coefficients = lax.fori_loop(0, memory, backward, (-state.g, jnp.zeros(memory, state.g.dtype)))
    yy = state.y[newest] @ state.y[newest]
    have_pairs = state.rho[newest] > 0
    steepest_scale = jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.max(jnp.abs(state.g)), 1e-300))
    q = q * jnp.where(have_pairs, 1.0 / jnp.where(have_pairs, state.rho[newest] * yy, 1.0), steepest_scale)

    def forward(i, q):
        slot = (state.head + i) % memory
        return q + (coefficients[slot] - state.rho[slot] * (state.y[slot] @ q)) * state.s[slot]

    return lax.fori_loop(0, memory, forward, q)


@partial(jax.jit, static_argnames=("formulation", "k", "memory"))
def run(state: LbfgsState, cost_t, a, b, gamma, tol, budget, *, formulation: str, k: int, memory: int):
    """At most ``budget`` L-BFGS iterations from ``state``; returns ``(state, iterations done)``.

    Stops early when ``state.error <= tol``, the state turns non-finite, or a line search fails twice in a row
    (from the quasi-Newton direction, then from steepest descent with the memory cleared): ``state.failed``.
    """
    def objective(x):
        return _negated(formulation, k, x, cost_t, a, b, gamma)[:3]

    def line_search(state, direction, slope):
        def trial(carry):
            t, _, _, _, _, count, _ = carry
            f, g, error = objective(state.x + t * direction)
            slope_t = g @ direction
            armijo = f <= state.f + C1 * t * slope
            approximate = ((f <= state.f + APPROXIMATE_EPSILON * jnp.abs(state.f))
                           & (slope_t >= SIGMA * slope) & (slope_t <= (2 * C1 - 1) * slope))
            ok = (armijo | approximate) & jnp.isfinite(f)
            # Minimiser of the quadratic through f(0), f'(0), f(t), kept in [0.1 t, 0.5 t].
            curvature = f - state.f - t * slope
            shrunk = jnp.where(jnp.isfinite(f) & (curvature > 0), -slope * t * t / (2 * curvature), 0.5 * t)
            next_t = jnp.where(ok, t, jnp.clip(shrunk, 0.1 * t, 0.5 * t))
            return next_t, f, g, error, ok, count + 1, t

        def going(carry):
            return ~carry[4] & (carry[5] < MAX_TRIALS)

        start = (jnp.asarray(1.0, state.x.dtype), state.f, state.g, state.error, jnp.asarray(False), 0,
                 jnp.asarray(0.0, state.x.dtype))
        _, f, g, error, ok, count, t = lax.while_loop(going, trial, start)
        return ok, t, f, g, error, count

    def body(carry):
        state, iterations = carry
        direction = _direction(state, memory)
        slope = state.g @ direction
        descent = slope < 0
        # A non-descent quasi-Newton direction (stale pairs): steepest descent with the memory cleared.
        cleared = state._replace(rho=jnp.where(descent, state.rho, 0.0))
        direction = jnp.where(descent, direction, _direction(cleared, memory))
        slope = state.g @ direction
        ok, t, f, g, error, count = line_search(cleared, direction, slope)
        s = t * direction
        y = g - state.g
        sy = s @ y
        keep = ok & (sy > 1e-12 * (y @ y)) & (sy > 0)
        slot = state.head
        moved = LbfgsState(
            x=state.x + s, f=f, g=g,
            s=jnp.where(keep, cleared.s.at[slot].set(s), cleared.s),
            y=jnp.where(keep, cleared.y.at[slot].set(y), cleared.y),
            rho=jnp.where(keep, cleared.rho.at[slot].set(1.0 / jnp.where(sy > 0, sy, 1.0)), cleared.rho),
            head=jnp.where(keep, (slot + 1) % memory, slot), error=error, failed=jnp.asarray(False),
            evaluations=state.evaluations + count)
        had_pairs = jnp.any(cleared.rho > 0)
        # Failure with pairs: clear them and try again next iteration; failure without: give up (failed).
        stuck = state._replace(rho=jnp.zeros_like(state.rho), failed=~had_pairs,
                               evaluations=state.evaluations + count)
        new = jax.tree_util.tree_map(lambda u, v: jnp.where(ok, u, v), moved, stuck)
        return new, iterations + 1

    def going(carry):
        state, iterations = carry
        return ((iterations < budget) & (state.error > tol) & ~state.failed & jnp.isfinite(state.f)
                & jnp.isfinite(state.error))

    return lax.while_loop(going, body, (state, jnp.asarray(0)))


@partial(jax.jit, static_argnames=("formulation", "k"))
def plan_of(x, cost_t, a, b, gamma, *, formulation: str, k: int):
    """``(value, rows, values)`` of the (semi-)dual at ``x``: the recovered plan in transposed sparse format."""
    oracle = dual_oracle if formulation == "dual" else semi_dual_oracle
    value, _, rows, values = oracle(x, cost_t, a, b, gamma, k)
    return value, rows, values
