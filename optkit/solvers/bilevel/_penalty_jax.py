r"""The ``backend="jax"`` inner work of the ``"penalty"`` solver's default deterministic loop (imported only when it
runs).

:class:`JaxCopies` has the interface of :class:`optkit.solvers.bilevel.penalty._Copies` (``solve``, ``values``,
``finite``, ``save``, ``restore``, the attributes ``y``, ``z``, ``r_z``, ``r_d``, ``lipschitz_f``,
``lipschitz_F``), so that :func:`optkit.solvers.bilevel.penalty._run_deterministic` (watchdog Barzilai–Borwein
steps, non-monotone line search, history, callback) runs unchanged on it. Each ``solve`` is one compiled call:
a ``lax.while_loop`` over the common accelerated step of the two lower copies :math:`y` (of
:math:`\sigma F + f`) and :math:`z` (of :math:`f`),

.. math::

    \beta = \frac{1}{L_f + \sigma L_F},\qquad
    y^+ = v_y - \beta(\sigma\nabla_y F(x, v_y) + \nabla_y f(x, v_y)),\qquad
    z^+ = v_z - \beta\nabla_y f(x, v_z),

with the secant curvature update of :math:`L_f, L_F` (momentum restarted when raised), the gradient-mapping
norms :math:`r_y, r_z, r_d = \|\beta(g_y - g_z)\|/(\beta\sigma)`, the stopping test
:math:`\max(r_z, r_d) \le` target, the O'Donoghue & Candès (2015) gradient restart and the FISTA momentum, as
:func:`optkit.kernels.numba_bilevel.copies_step` and the NumPy reference in ``_Copies.solve``; then the x-blocks
of :math:`\nabla F(x, y)`, :math:`\nabla f(x, y)`, :math:`\nabla f(x, z)` at the returned points. The three
function values of the merit :math:`\hat\psi_\sigma` are one more compiled call, and the start's curvature probes
(power iterations on gradient differences, :func:`optkit.solvers.bilevel._common.probe_lipschitz`) one more.

Counting is the NumPy backend's: each evaluation of the copies is one upper and two lower gradients (the
x-blocks at the returned point are the other halves of gradients already counted), each probe 9 gradients of each
level, each merit 1 upper and 2 lower values. The gradient reuse of ``_Copies`` is kept: a solve re-entered at
the same ``x`` (the same array) from the points where the previous one returned starts from its gradients.

The watchdog phase of the outer loop (plain BB steps, ``_FAST_STEPS`` inner steps each, no function values,
a checkpoint every ``_WATCHDOG`` steps) runs in segments: :meth:`JaxCopies.fast_segment` is one compiled
``lax.while_loop`` over outer steps whose pass does what ``penalty._run_deterministic``'s ``one_fast_step`` does,

.. math::

    x^+ = P_X(x - \alpha g),\qquad (y, z) \leftarrow \text{the common steps above at } x^+ \text{ (target 0)},
    \qquad g^+ = \nabla_x F(x^+, y) + (\nabla_x f(x^+, y) - \nabla_x f(x^+, z))/\sigma,

then the BB1 step :math:`\|s\|^2/\langle s, g^+ - g\rangle` with ``_bb_next``'s clipping and growth cap (measured
by the gradient mapping on a box), the residual :math:`\|x^+ - P_X(x^+ - \alpha^+ g^+)\|/\alpha^+` and the
smallest residual; it stops after ``limit`` steps (the next checkpoint, the iteration budget, the last step with
the same :math:`\sigma`), at the outer stopping test, or at a non-finite step (not taken: its calls are counted and
the caller rolls back). The ``_FAST_STEPS + 1`` inner evaluations of a step are unrolled (the solve loop's step,
``common_step``, written out: no nested loop or branch per outer step). A segment that reaches the checkpoint also
runs, in the same call, the refinement solve and merit values the checkpoint asks for next (``_pending``); the
decision (accept, or roll back to the last checkpoint and switch to the line search) stays the shared Python code.

The compiled programs depend only on the problem's levels and sizes; they are built once per problem (a weak
cache: problems are immutable), so repeated solves do not recompile.

Speed on the CPU. XLA's CPU runtime costs ~250-350 us per compiled call whatever its arithmetic (thread-pool
handoffs, allocation; ``perf``: a third of the samples in ``Eigen::ThreadPoolTempl::GlobalSteal``/``MaybeGetTask``,
a tenth in ``malloc``/``free``), while one step of the segment loop costs ~45 us (three evaluations of the copies
and the x-blocks). With one call per outer step this backend took ~31 ms CPU on benchopt's quadratic (d = 100,
n = 1024, seed 0, ``||grad h||^2 <= 1e-8`` checked by a callback, 663 oracle calls, 76 compiled calls) against the
NumPy backend's ~14 ms; with the segments it makes 10 compiled calls (the curvature probe, the two evaluations
at x0, 7 segments) and takes ~8.5-9.4 ms CPU, ~6.7-7.7 ms wall (681 calls: the callback sees the target at the
end of the segment, two steps after the NumPy backend's 663) against NumPy's ~13.5-14.0 ms and jaxopt's
~13.0-13.5 ms CPU, ~12.1-12.8 ms wall (single-threaded flags of ``benchmarks/bilevel.py``, best of 3, five rounds
in one process, shared 2-core machine, 2026-11-22). What remains: ~300 us per call, ~45-80 us per outer step (the
loop body is ~150 XLA thunks, run by the dataflow executor, which hands work to its thread pool: CPU time exceeds
wall time by ~2 ms), Python ~2 ms. A body split into phases of at most 8 thunks each (run inline in the calling
thread, as ``_aid_jax`` does) would be the next step.
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.problems.sets import Box
from optkit.solvers.bilevel._common import LowerFeasibleSet, Oracles
from optkit.solvers.bilevel._jax_common import jax_levels, jax_projection, x64

__all__ = ["JaxCopies", "start_copies"]

_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# layout of the packed scalar input of the solve program
_SIGMA, _TARGET, _LF, _LF_UPPER, _T, _MAX_STEPS, _MIN_STEPS, _USE_CACHE, _WANT_VALUES = range(9)
# layout of the packed host output: 9 scalars, the 3 merit values (zeros unless asked), then the x-blocks (3, n),
# then the rows y, z (2, m)
_N_INFO = 12
# layout of the packed scalar input of the segment program
(_S_SIGMA, _S_ALPHA, _S_SMALLEST, _S_RESIDUAL, _S_INNER, _S_T, _S_LF, _S_LF_UPPER, _S_LIMIT, _S_FAST, _S_TOL,
 _S_AT_FINAL, _S_CHECK_AT, _S_CHECK_RTOL, _S_INNER_MAX) = range(15)
# its host output: the scalars steps, bad, evals, alpha, residual, inner, smallest and the solve program's 9 info
# scalars (t, L_f, L_F, r_y, r_z, r_d, evals of the last solve, cacheable, finite), whether the checkpoint's solve
# ran and its target; then x, g (n each), y, z (m each); then the checkpoint solve's host output (solve's layout)
_N_SEGMENT = 18


def _programs(problem: BilevelProblem) -> tuple[Any, Any, Any, Any]:
    programs = _PROGRAMS.get(problem)
    if programs is None:
        with x64():
            programs = _build(problem)
        _PROGRAMS[problem] = programs
    return programs


def _build(problem: BilevelProblem) -> tuple[Any, Any, Any, Any]:
    """The four jitted programs ``(solve, values, probe, segment)`` for ``problem``'s levels."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    # the BB constants of the outer loop (its module is loaded: it is the caller)
    from optkit.solvers.bilevel import penalty as outer

    F, f = jax_levels(problem)
    upper_grad_y, upper_grad_x = jax.grad(F, argnums=1), jax.grad(F, argnums=0)
    lower_grad_y_one, lower_grad_x_one = jax.grad(f, argnums=1), jax.grad(f, argnums=0)

    # the lower level at both copies, one call each (a jax.vmap over the two, i.e. matrix-matrix products for
    # quadratic levels, ran slower on XLA's CPU runtime)
    def lower_grad_y(x: Any, points: Any) -> Any:
        return jnp.stack((lower_grad_y_one(x, points[0]), lower_grad_y_one(x, points[1])))

    def lower_grad_x(x: Any, points: Any) -> Any:
        return jnp.stack((lower_grad_x_one(x, points[0]), lower_grad_x_one(x, points[1])))

    def lower_values(x: Any, points: Any) -> Any:
        return jnp.stack((f(x, points[0]), f(x, points[1])))

    def norm(v: Any) -> Any:
        return jnp.sqrt(jnp.dot(v, v))

    def values(x: Any, copies: Any) -> Any:
        return jnp.concatenate((jnp.reshape(F(x, copies[0]), (1,)), lower_values(x, copies)))

    def common_step(sigma: Any, target: Any, min_steps: Any, max_steps: Any, steps: Any, V: Any, previous: Any,
                    grads: Any, t: Any, lip_f: Any, lip_F: Any) -> tuple:
        # one common step of the copies from the y-blocks ``grads`` at the evaluation points V[2:] (the body of
        # the solve loop, also unrolled in the segments): the new state V and what the next step needs
        E = V[2:]  # evaluation points (vy, vz)
        g = jnp.stack((sigma * grads[0] + grads[1], grads[2]))  # (g_y, g_z)
        # secant curvature between consecutive evaluation points of either copy (not at the first step): the
        # four norms ||vy - vy'||, ||vz - vz'||, ||g_y - g_y'||, ||g_z - g_z'|| in one reduction
        secants = jnp.sqrt(jnp.sum(jnp.square(jnp.concatenate((E, g)) - previous), axis=1))
        later = steps > 0
        dy, dz, cy, cz = secants[0], secants[1], secants[2], secants[3]
        est = cz / jnp.where(dz > 0, dz, 1.0)
        raise_f = later & (dz > 0) & jnp.isfinite(est) & (est > lip_f)
        lip_f = jnp.where(raise_f, 1.1 * est, lip_f)
        est = cy / jnp.where(dy > 0, dy, 1.0)
        raise_F = later & (dy > 0) & jnp.isfinite(est) & (est > lip_f + sigma * lip_F)
        lip_F = jnp.where(raise_F, 1.1 * (est - lip_f) / sigma, lip_F)
        raised = raise_f | raise_F
        t_step = jnp.where(raised, 1.0, t)
        beta = 1.0 / (lip_f + sigma * lip_F)
        step = beta * g
        new = E - step  # gradient-step points (y+, z+)
        step_d = step[0] - step[1]
        # the three squared gradient-mapping norms and the restart test in one reduction
        sums = jnp.sum(jnp.stack((step[0] * step[0], step[1] * step[1], step_d * step_d,
                                  step[0] * (new[0] - V[0]) + step[1] * (new[1] - V[1]))), axis=1)
        r_y = jnp.sqrt(sums[0]) / beta
        r_z = jnp.sqrt(sums[1]) / beta
        r_d = jnp.sqrt(sums[2]) / (beta * sigma)
        # O'Donoghue & Candes (2015) gradient restart on the stacked (y, z)
        restart = sums[3] > 0
        t_new = jnp.where(restart, 1.0, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t_step * t_step)))
        momentum = (jnp.where(restart, 1.0, t_step) - 1.0) / t_new
        bad = ~jnp.isfinite(r_y + r_z)
        stop = bad | ((jnp.maximum(r_z, r_d) <= target) & (steps >= min_steps)) | (steps == max_steps)
        # the state _Copies.solve leaves: after a raise the next solve starts from the last gradient-step
        # points; a stop returns the evaluation points (momentum reset); a non-finite step changes nothing else
        kept = V[:2]
        stopped = jnp.concatenate((jnp.where(bad, kept, E), jnp.where(raised, kept, E)))
        V_out = jnp.where(stop, stopped, jnp.concatenate((new, new + momentum * (new - kept))))
        t_out = jnp.where(stop, jnp.where(bad, jnp.where(raised, 1.0, t), 1.0), t_new)
        return V_out, jnp.concatenate((E, g)), t_out, lip_f, lip_F, raised, r_y, r_z, r_d, bad, stop

    def solve(x: Any, state: Any, cached: Any, scalars: Any) -> tuple[Any, Any, Any]:
        # state rows: y, z (last gradient-step points), vy, vz (evaluation points); cached rows: the y-blocks
        # F_y(x, vy), f_y(x, vy), f_y(x, vz) when scalars[_USE_CACHE] says they are those of this (x, vy, vz)
        sigma, target = scalars[_SIGMA], scalars[_TARGET]
        max_steps = scalars[_MAX_STEPS].astype(jnp.int32)
        min_steps = scalars[_MIN_STEPS].astype(jnp.int32)
        want_values = scalars[_WANT_VALUES] > 0
        m = state.shape[1]
        dtype = state.dtype

        def evaluate(vy: Any, vz: Any) -> Any:
            return jnp.concatenate((upper_grad_y(x, vy)[None], lower_grad_y(x, jnp.stack((vy, vz)))))

        def cond(c: tuple) -> Any:
            return ~c[-1]

        # everything, the x-blocks and values at the end included, runs inside the loop, on stacked arrays (rows
        # y, z, vy, vz; the previous evaluation points and gradients; the scalars): XLA's CPU runtime pays per
        # operation, so fewer, larger operations run faster than the same arithmetic on separate vectors
        def body(c: tuple) -> tuple:
            (steps, V, previous, grads, t, lip_f, lip_F, have, evals, host, _) = c
            E = V[2:]  # evaluation points (vy, vz)
            grads = lax.cond(have, lambda: grads, lambda: evaluate(E[0], E[1]))
            evals = evals + jnp.where(have, 0, 1)
            (V_out, current, t_out, lip_f, lip_F, raised, r_y, r_z, r_d, _, stop) = common_step(
                sigma, target, min_steps, max_steps, steps, V, previous, grads, t, lip_f, lip_F)

            def finish() -> Any:
                # the x-blocks at the evaluation points, the merit values at the returned copies (when asked)
                blocks_x = jnp.concatenate((upper_grad_x(x, E[0])[None], lower_grad_x(x, E)))
                copies = V_out[:2]
                parts = lax.cond(want_values, lambda: values(x, copies), lambda: jnp.zeros(3, dtype))
                info = jnp.stack((t_out, lip_f, lip_F, r_y, r_z, r_d, evals.astype(dtype), (~raised).astype(dtype),
                                  jnp.all(jnp.isfinite(copies)).astype(dtype)))
                return jnp.concatenate((info, parts, blocks_x.ravel(), copies.ravel()))

            host = lax.cond(stop, finish, lambda: host)
            return (steps + 1, V_out, current, grads, t_out, lip_f, lip_F, jnp.asarray(False), evals, host, stop)

        n = x.shape[0]
        carry = (jnp.asarray(0, jnp.int32), state, jnp.zeros((4, m), dtype), cached, scalars[_T], scalars[_LF],
                 scalars[_LF_UPPER], scalars[_USE_CACHE] > 0, jnp.asarray(0, jnp.int32),
                 jnp.zeros(_N_INFO + 3 * n + 2 * m, dtype), jnp.asarray(False))
        out = lax.while_loop(cond, body, carry)
        return out[1], out[3], out[9]

    def probe(x: Any, y: Any, v: Any) -> Any:
        # probe_lipschitz for both levels: 8 power iterations on (grad(y + h v) - grad(y))/h, stopped at a zero or
        # non-finite estimate; times 1.1
        h = 1e-4 * jnp.maximum(1.0, norm(y))

        def one(grad: Any) -> Any:
            g0 = grad(x, y)

            def cond(c: tuple) -> Any:
                return (c[0] < 8) & ~c[3]

            def body(c: tuple) -> tuple:
                i, w_prev, _, _ = c
                w = (grad(x, y + h * w_prev) - g0) / h
                estimate = norm(w)
                stop = (estimate == 0.0) | ~jnp.isfinite(estimate)
                return i + 1, jnp.where(stop, w_prev, w / jnp.where(stop, 1.0, estimate)), estimate, stop

            estimate = lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), v, jnp.asarray(1e-12, y.dtype),
                                                   jnp.asarray(False)))[2]
            return 1.1 * jnp.maximum(estimate, 1e-12)

        return jnp.stack((one(lower_grad_y_one), one(upper_grad_y)))

    def state_values(x: Any, state: Any) -> Any:
        return values(x, state[:2])

    project = jax_projection(problem)
    boxed = isinstance(problem.x_set, Box)
    growth, bb_min, bb_max = outer._GROWTH, outer._BB_MIN, outer._BB_MAX

    def fast_inner(x: Any, sigma: Any, V: Any, t: Any, lip_f: Any, lip_F: Any, fast: int) -> tuple:
        # solve(x, target 0, min_steps = max_steps = fast) without the cache, unrolled: fast + 1 evaluations (the
        # steps after a non-finite one change nothing and are not counted), then the x-blocks at the last
        # evaluation points. One straight-line program: no nested loop or branch to dispatch.
        zero = jnp.zeros((), V.dtype)
        previous = jnp.zeros_like(V)
        live = jnp.asarray(True)
        evals = zero
        raised = r_y = r_z = r_d = None
        for i in range(fast + 1):
            E = V[2:]
            grads_i = jnp.concatenate((upper_grad_y(x, E[0])[None], lower_grad_y(x, E)))
            (V_i, current, t_i, lip_f_i, lip_F_i, raised_i, r_y_i, r_z_i, r_d_i, _, stop) = common_step(
                sigma, zero, fast, fast, jnp.asarray(i), V, previous, grads_i, t, lip_f, lip_F)
            evals = evals + jnp.where(live, 1.0, 0.0)
            if i == 0:
                E_last, grads, raised, r_y, r_z, r_d = E, grads_i, raised_i, r_y_i, r_z_i, r_d_i
            else:
                E_last, grads = jnp.where(live, E, E_last), jnp.where(live, grads_i, grads)
                raised, r_y, r_z, r_d = (jnp.where(live, raised_i, raised), jnp.where(live, r_y_i, r_y),
                                         jnp.where(live, r_z_i, r_z), jnp.where(live, r_d_i, r_d))
            V, previous = jnp.where(live, V_i, V), current
            t, lip_f, lip_F = jnp.where(live, t_i, t), jnp.where(live, lip_f_i, lip_f), jnp.where(live, lip_F_i, lip_F)
            live = live & ~stop
        blocks = jnp.concatenate((upper_grad_x(x, E_last[0])[None], lower_grad_x(x, E_last)))
        return V, grads, blocks, t, lip_f, lip_F, raised, r_y, r_z, r_d, evals

    def make_segment(fast: int) -> Any:
        def segment(x: Any, g: Any, state: Any, scalars: Any) -> tuple[Any, Any, Any, Any, Any]:
            # the watchdog phase's BB steps (penalty._run_deterministic.one_fast_step) in a loop: each pass is one
            # step, with the copies' fast + 1 inner evaluations unrolled (fast_inner)
            sigma, tol = scalars[_S_SIGMA], scalars[_S_TOL]
            limit = scalars[_S_LIMIT].astype(jnp.int32)
            at_final = scalars[_S_AT_FINAL] > 0
            m = state.shape[1]
            dtype = state.dtype
            zero = jnp.zeros((), dtype)
            one = jnp.ones((), dtype)

            def cond(c: tuple) -> Any:
                return ~c[-1]

            def body(c: tuple) -> tuple:
                (j, x, g, alpha, smallest, residual, inner, V, grads, info, evals, _, _) = c
                t, lip_f, lip_F = info[0], info[1], info[2]
                x_new = project(x - alpha * g)
                (V_new, grads_new, blocks, t, lip_f, lip_F, raised, r_y, r_z, r_d, count) = fast_inner(
                    x_new, sigma, V, t, lip_f, lip_F, fast)
                g_new = blocks[0] + (blocks[1] - blocks[2]) / sigma
                inner_new = jnp.maximum(r_z, r_d)
                finite_copies = jnp.all(jnp.isfinite(V_new[:2]))
                ok = jnp.all(jnp.isfinite(x_new)) & jnp.all(jnp.isfinite(g_new)) & finite_copies
                # _bb_next: BB1 (the previous step when <s, d> <= 0 or not finite), the growth cap measured by the
                # gradient mapping on a box X, clipped to [_BB_MIN, _BB_MAX]
                s, d = x_new - x, g_new - g
                sd, ss = jnp.dot(s, d), jnp.dot(s, s)
                use = (sd > 0) & jnp.isfinite(sd)
                bb = jnp.where(use, ss / jnp.where(use, sd, 1.0), alpha)
                measured = (x_new - project(x_new - alpha * g_new)) / alpha if boxed else g_new
                size = jnp.sqrt(jnp.dot(measured, measured))
                capped = (size > 0) & (ss > 0)
                cap = growth * jnp.sqrt(ss) / jnp.where(capped, size, 1.0)
                bb = jnp.where(capped & (cap < bb), cap, bb)
                bb = jnp.where(bb_min > bb, bb_min, bb)
                alpha_new = jnp.where(bb_max < bb, bb_max, bb)
                mapped = x_new - project(x_new - alpha_new * g_new)
                residual_new = jnp.sqrt(jnp.dot(mapped, mapped)) / alpha_new
                smallest_new = jnp.where(residual_new < smallest, residual_new, smallest)  # Python's min
                j_new = j + 1
                done = (~ok | (j_new >= limit) | ~jnp.isfinite(residual_new + inner_new)
                        | (at_final & (residual_new <= tol) & (inner_new <= tol)))
                # the solve program's info scalars (t, L_f, L_F, r_y, r_z, r_d, evals, cacheable, finite)
                info_new = jnp.stack((t, lip_f, lip_F, r_y, r_z, r_d, count, (~raised).astype(dtype),
                                      finite_copies.astype(dtype)))

                def keep(new: Any, old: Any) -> Any:  # a non-finite step changes nothing but the counts
                    return jnp.where(ok, new, old)

                return (jnp.where(ok, j_new, j), keep(x_new, x), keep(g_new, g), keep(alpha_new, alpha),
                        keep(smallest_new, smallest), keep(residual_new, residual), keep(inner_new, inner),
                        keep(V_new, V), keep(grads_new, grads), keep(info_new, info), evals + count, ~ok, done)

            info = jnp.concatenate((jnp.stack((scalars[_S_T], scalars[_S_LF], scalars[_S_LF_UPPER])),
                                    jnp.zeros(6, dtype)))
            carry = (jnp.asarray(0, jnp.int32), x, g, scalars[_S_ALPHA], scalars[_S_SMALLEST], scalars[_S_RESIDUAL],
                     scalars[_S_INNER], state, jnp.zeros((3, m), dtype), info, zero, jnp.asarray(False),
                     jnp.asarray(False))
            (j, x, g, alpha, smallest, residual, inner, V, grads, info, evals, bad, _) = lax.while_loop(
                cond, body, carry)
            # the checkpoint's refinement when this segment reached it: the solve the outer loop's evaluate asks
            # for next (target max(1e-14, _CHECK_RTOL inner_rtol smallest), inner_max steps, from the cached
            # gradients, with the merit values), run here so that it costs no call of its own
            do_check = (j == scalars[_S_CHECK_AT].astype(jnp.int32)) & ~bad
            target = scalars[_S_CHECK_RTOL] * smallest
            target = jnp.where(target > 1e-14, target, 1e-14)  # Python's max(1e-14, target)
            check_scalars = jnp.stack((sigma, target, info[1], info[2], info[0], scalars[_S_INNER_MAX], zero,
                                       info[7], one))
            n = x.shape[0]
            V_check, grads_check, info_check = lax.cond(
                do_check, lambda: solve(x, V, grads, check_scalars),
                lambda: (V, grads, jnp.zeros(_N_INFO + 3 * n + 2 * m, dtype)))
            head = jnp.concatenate((jnp.stack((j.astype(dtype), bad.astype(dtype), evals, alpha, residual, inner,
                                               smallest)), info, jnp.stack((do_check.astype(dtype), target))))
            return V, grads, V_check, grads_check, jnp.concatenate((head, x, g, V[:2].ravel(), info_check))

        return jax.jit(segment)

    return jax.jit(solve), jax.jit(state_values), jax.jit(probe), functools.lru_cache(maxsize=None)(make_segment)


def start_copies(oracles: Oracles, feasible: LowerFeasibleSet, x: np.ndarray, y0: np.ndarray) -> JaxCopies:
    r"""Probe the curvature constants :math:`L_f, L_F` at ``(x, y0)`` (9 gradients of each level, counted) and
    start the copies there (the JAX counterpart of ``_Copies.start``)."""
    solve, values, probe, segment = _programs(oracles.problem)
    rng = np.random.default_rng(1)  # the probe direction of probe_lipschitz
    v = rng.standard_normal(y0.size)
    v /= np.linalg.norm(v)
    with x64():
        lipschitz_f, lipschitz_F = np.asarray(probe(x, y0, v)).tolist()
    oracles.counts["lower_grad"] += 9
    oracles.counts["upper_grad"] += 9
    return JaxCopies(oracles, (solve, values, segment), x.size, y0, lipschitz_f, lipschitz_F)


class JaxCopies:
    r"""The two lower copies of the penalty method's default loop, advanced by compiled JAX programs.

    State: ``_state`` (a device array with rows :math:`y, z, v_y, v_z`), the momentum parameter ``t``, the
    curvature constants, the last gradient-mapping norms, and host copies of ``y`` and ``z``. ``_last`` keys the
    gradient reuse on the identity of ``x`` and of the state array (never written into: JAX arrays are immutable).
    """

    def __init__(self, oracles: Oracles, programs: tuple[Any, Any], n: int, y: np.ndarray, lipschitz_f: float,
                 lipschitz_F: float) -> None:
        import jax.numpy as jnp

        self.oracles = oracles
        self._solve, self._values, self._segment = programs
        self._n, self._m = n, y.shape[0]
        y = np.array(y, dtype=np.float64)
        with x64():
            self._state = jnp.asarray(np.stack((y, y, y, y)))
            self._cached = jnp.zeros((3, self._m))
        self.y, self.z = y.copy(), y.copy()
        self.t = 1.0
        self.lipschitz_f, self.lipschitz_F = lipschitz_f, lipschitz_F
        self.r_z = self.r_d = self.r_y = math.inf
        self._finite = True
        self._last: tuple | None = None  # (x, state) whose evaluation points' y-blocks are in _cached
        self._scalars = np.zeros(9)
        self._segment_scalars = np.zeros(15)
        self._pending: tuple | None = None  # a solve already computed by the last segment (see fast_segment)
        self._parts: tuple | None = None  # (x, state, values) computed by the last solve

    def solve(self, x: np.ndarray, sigma: float, target: float, max_steps: int, min_steps: int = 0,
              values: bool = False) -> dict[str, np.ndarray]:
        """Iterate at fixed ``(x, sigma)`` until :math:`\\max(r_z, r_d) \\le` ``target`` or ``max_steps`` (one
        compiled call); returns the gradient blocks at the final evaluation points (the x-blocks as NumPy arrays;
        the y-blocks stay on the device, ``None`` here: only coupled constraints, which this backend refuses,
        need them). ``values``: the same call also computes the merit's three function values at the returned
        copies, which the next :meth:`values` at this ``x`` returns (and counts) without another call."""
        pending, self._pending = self._pending, None
        if (pending is not None and values and pending[0] is x and pending[1] is self._state
                and pending[2] == (sigma, target, max_steps, min_steps)):
            state, self._cached, host = pending[3]  # computed by the segment that ended here
        else:
            last = self._last
            hit = last is not None and last[0] is x and last[1] is self._state
            scalars = self._scalars
            scalars[:] = (sigma, target, self.lipschitz_f, self.lipschitz_F, self.t, max_steps, min_steps, hit,
                          values)
            with x64():
                state, self._cached, host = self._solve(x, self._state, self._cached, scalars)
                host = np.asarray(host)
        self._state = state
        n, m = self._n, self._m
        (self.t, self.lipschitz_f, self.lipschitz_F, self.r_y, self.r_z, self.r_d, evals, cacheable, finite,
         *parts) = host[:_N_INFO].tolist()
        self._parts = (x, state, tuple(parts)) if values else None
        counts = self.oracles.counts
        evals = int(evals)
        counts["upper_grad"] += evals
        counts["lower_grad"] += 2 * evals
        self._finite = finite > 0
        self._last = (x, state) if cacheable > 0 else None
        blocks = host[_N_INFO:_N_INFO + 3 * n].reshape(3, n)
        self.y, self.z = host[_N_INFO + 3 * n:_N_INFO + 3 * n + m], host[_N_INFO + 3 * n + m:]
        return {"Fx": blocks[0], "Fy": None, "fx_y": blocks[1], "fy_y": None, "fx_z": blocks[2], "fy_z": None}

    def fast_segment(self, x: np.ndarray, g: np.ndarray, sigma: float, alpha: float, smallest: float, limit: int,
                     fast_steps: int, tol: float, at_final: bool, checkpoint_at: int, check_rtol: float,
                     inner_max: int) -> tuple:
        """Up to ``limit`` steps of the watchdog phase as one compiled call (see :func:`_build`'s ``segment``):
        returns ``(steps, bad, x, g, alpha, residual, inner, smallest)`` after the last finite step; ``bad``: the
        step after it was not finite (its oracle calls counted, nothing else changed; the caller rolls back).

        When the segment ends after ``checkpoint_at`` steps (the next checkpoint), the same call also runs the
        checkpoint's solve ``solve(x, sigma, max(1e-14, check_rtol * smallest), inner_max, 0, values=True)``; the
        next :meth:`solve` with exactly these arguments returns it (and counts its calls) without a call."""
        scalars = self._segment_scalars
        scalars[:] = (sigma, alpha, smallest, math.inf, math.inf, self.t, self.lipschitz_f, self.lipschitz_F, limit,
                      fast_steps, tol, at_final, checkpoint_at, check_rtol, inner_max)
        self._pending = None
        with x64():
            program = self._segment(fast_steps)  # the inner steps unrolled: one program per _FAST_STEPS
            state, cached, state_check, cached_check, host = program(x, g, self._state, scalars)
            host = np.asarray(host)
        n, m = self._n, self._m
        (steps, bad, evals, alpha, residual, inner, smallest, self.t, self.lipschitz_f, self.lipschitz_F, self.r_y,
         self.r_z, self.r_d, _, cacheable, finite, checked, target) = host[:_N_SEGMENT].tolist()
        counts = self.oracles.counts
        evals = int(evals)
        counts["upper_grad"] += evals
        counts["lower_grad"] += 2 * evals
        self._state, self._cached, self._finite, self._parts = state, cached, finite > 0, None
        start = _N_SEGMENT
        x_out, g_out = host[start:start + n], host[start + n:start + 2 * n]
        self.y, self.z = host[start + 2 * n:start + 2 * n + m], host[start + 2 * n + m:start + 2 * (n + m)]
        # the copies' evaluation points and their y-blocks at x_out: the checkpoint's solve there reuses them
        self._last = (x_out, state) if cacheable > 0 else None
        if checked > 0:
            self._pending = (x_out, state, (sigma, target, inner_max, 0),
                             (state_check, cached_check, host[start + 2 * (n + m):]))
        return int(steps), bad > 0, x_out, g_out, alpha, residual, inner, smallest

    def values(self, x: np.ndarray) -> tuple[float, float, float]:
        """:math:`F(x, y), f(x, y), f(x, z)` at the copies (1 upper and 2 lower values; computed by the last
        :meth:`solve` when it was asked to at this ``x``, otherwise one compiled call)."""
        known = self._parts
        if known is not None and known[0] is x and known[1] is self._state:
            parts = known[2]
        else:
            with x64():
                parts = np.asarray(self._values(x, self._state)).tolist()
        counts = self.oracles.counts
        counts["upper_value"] += 1
        counts["lower_value"] += 2
        return parts[0], parts[1], parts[2]

    def finite(self) -> bool:
        """Whether both copies are finite."""
        return self._finite

    def save(self) -> tuple:
        return (self._state, self.y, self.z, self._finite, self.t, self.lipschitz_f, self.lipschitz_F, self.r_z,
                self.r_d, self.r_y)

    def restore(self, saved: tuple) -> None:
        (self._state, self.y, self.z, self._finite, self.t, self.lipschitz_f, self.lipschitz_F, self.r_z, self.r_d,
         self.r_y) = saved
        self._last = self._parts = self._pending = None
