r"""JAX backend of ``"aid"`` (``backend="jax"``): one hypergradient evaluation as one compiled call.

The outer loop of :func:`optkit.solvers.bilevel.aid.aid` (step rule, line search, stopping test, history, callback)
is the NumPy backend's Python code; what it calls once per trial point, ``hypergradient(x, state)``, is here one
``jax.jit`` program that runs, with the NumPy backend's stopping tests, warm starts and counts:

1. gradient descent on the lower level, :math:`y \leftarrow y - \nabla_y f(x, y)/\ell`, from the previous
   :math:`y`, while :math:`\|\nabla_y f(x, y)\|^2 >` ``target_sq`` (at most ``inner_max`` steps; exactly
   ``inner_steps`` when fixed), one lower gradient per evaluation of :math:`\nabla_y f` (the first at the warm
   start);
2. the upper value and gradient :math:`(F, \nabla_x F, \nabla_y F)(x, y)` (``jax.value_and_grad``: one upper
   gradient; the value is counted as one upper value where the outer line search reads it);
3. conjugate gradient on :math:`\nabla^2_{yy} f\, v = \nabla_y F` from the previous :math:`v`, carrying
   :math:`\nabla^2_{xy} f\, v` along (one Hessian-vector product for the initial residual, one per step) to
   ``cg_tol_sq`` or ``cg_max`` steps or a non-positive curvature; or ``cg_steps`` Richardson steps
   (``linear_solver="gd"``);
4. the outputs: the estimate :math:`\nabla_x F - \nabla^2_{xy} f\, v` (the implicit-function formula of
   :mod:`optkit.solvers.bilevel.aid`; Pedregosa 2016, HOAG), :math:`\|\nabla_y f\|` and the corrected value
   :math:`F(x, y) - \langle v, \nabla_y f(x, y)\rangle`.

Inputs and outputs travel in one float64 vector (:class:`_Layout`: one transfer each way per call).
Hessian-vector products are forward over reverse (``jax.jvp`` of ``jax.grad(f, argnums=(0, 1))`` along
:math:`(0, w)`), both blocks :math:`(\nabla^2_{xy} f\, w, \nabla^2_{yy} f\, w)` as the NumPy oracle
``lower.hvp(x, y, 0, w)`` gives them. The Lipschitz estimate :math:`\ell` is
:func:`~optkit.solvers.bilevel._implicit.lower_lipschitz` as one compiled power iteration.

The programs depend only on the problem's levels and sizes: they are built once per problem (a weak cache;
problems are immutable), so repeated solves do not recompile. Per call, the fixed cost (dispatch, reading the
state, the phases) is a few tens of microseconds on the CPU, plus JAX's asynchronous CPU dispatch (the call runs
on a worker thread: ~0.05-0.08 ms on a small shared machine) unless ``jax_cpu_enable_async_dispatch`` is off.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._common import Oracles
from optkit.solvers.bilevel._jax_common import jax_levels, x64

__all__ = ["hypergradient_oracle", "lower_lipschitz"]

# problem -> {"lipschitz": program, ("evaluate", richardson): program}
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_POWER_ITERATIONS = 20  # as optkit.solvers.bilevel._implicit.lower_lipschitz
_START: dict[int, np.ndarray] = {}


def _programs(problem: BilevelProblem) -> dict[Any, Any]:
    programs = _PROGRAMS.get(problem)
    if programs is None:
        programs = {}
        _PROGRAMS[problem] = programs
    return programs


def _derivatives(problem: BilevelProblem) -> tuple[Callable, Callable, Callable]:
    """``(upper_value_and_grad, lower_grad_y, lower_hvp)`` as traceable functions of 1-D arrays."""
    import jax

    F, f = jax_levels(problem)
    upper_value_and_grad = jax.value_and_grad(F, argnums=(0, 1))
    lower_grad_y = jax.grad(f, argnums=1)
    lower_grad = jax.grad(f, argnums=(0, 1))

    def lower_hvp(x: Any, y: Any, w: Any) -> tuple[Any, Any]:
        # (H_xy w, H_yy w): the directional derivative of (grad_x f, grad_y f) along (0, w)
        return jax.jvp(lambda b: lower_grad(x, b), (y,), (w,))[1]

    return upper_value_and_grad, lower_grad_y, lower_hvp


def _build_lipschitz(problem: BilevelProblem) -> Any:
    import jax
    import jax.numpy as jnp
    from jax import lax

    _, _, lower_hvp = _derivatives(problem)

    def power(x: Any, y: Any, w0: Any) -> Any:
        def cond(c: tuple) -> Any:
            k, _, _, bad = c
            return (k < _POWER_ITERATIONS) & jnp.logical_not(bad)

        def body(c: tuple) -> tuple:
            k, w, _, _ = c
            hw = lower_hvp(x, y, w)[1]
            estimate = jnp.linalg.norm(hw)
            bad = (estimate == 0.0) | jnp.logical_not(jnp.isfinite(estimate))
            return k + 1, jnp.where(bad, w, hw / estimate), estimate, bad

        k, _, estimate, bad = lax.while_loop(cond, body, (jnp.asarray(0), w0, jnp.asarray(1.0, w0.dtype),
                                                          jnp.asarray(False)))
        return jnp.stack((jnp.where(bad, 1.0, 1.05 * estimate), k.astype(w0.dtype)))

    return jax.jit(power)


def lower_lipschitz(problem: BilevelProblem, oracles: Oracles, x: np.ndarray, y: np.ndarray) -> float:
    """:func:`optkit.solvers.bilevel._implicit.lower_lipschitz` in one compiled call: the largest eigenvalue of
    :math:`\\nabla^2_{yy} f(x, y)` by 20 power iterations from the same start vector (times 1.05; 1.0 when a
    product is zero or not finite), each Hessian-vector product counted in ``oracles``."""
    programs = _programs(problem)
    if "lipschitz" not in programs:
        programs["lipschitz"] = _build_lipschitz(problem)
    start = _START.get(y.size)
    if start is None:  # the NumPy backend's start vector (seeding a generator costs more than the loop)
        start = np.random.default_rng(1).standard_normal(y.size)
        start /= np.linalg.norm(start)
        start.flags.writeable = False
        _START[y.size] = start
    with x64():
        out = np.asarray(programs["lipschitz"](np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                                               start))
    oracles.counts["lower_hvp"] += int(out[1])
    return float(out[0])


class _Layout:
    r"""Offsets of the one float64 state vector of an evaluation (inputs, iterates, outputs and scalars).

    Vectors: ``x`` (n), ``y``, ``v``, ``g`` = :math:`\nabla_y f`, ``Fy`` = :math:`\nabla_y F` (m each), ``Fx``,
    ``cross`` = :math:`\nabla^2_{xy} f\, v`, ``estimate`` = ``Fx - cross`` (n each). Scalars: the inputs
    ``lipschitz``, ``target_sq``, ``cg_tol_sq``, ``inner_max``, ``cg_max``; ``value`` = :math:`F(x, y)`; the
    outputs ``gradient_norm`` = :math:`\|\nabla_y f\|`, ``corrected`` =
    :math:`F - \langle v, \nabla_y f\rangle`; the counts ``gradients``, ``products`` and ``phase`` (zero on
    entry: ``counters`` is their slice). The caller writes the inputs and reads the outputs."""

    SCALARS = ("lipschitz", "target_sq", "cg_tol_sq", "inner_max", "cg_max", "value", "gradient_norm",
               "corrected", "gradients", "products", "phase")

    def __init__(self, n: int, m: int) -> None:
        self.n, self.m = n, m
        offset = 0
        for name, size in (("x", n), ("y", m), ("v", m), ("g", m), ("Fy", m), ("Fx", n), ("cross", n),
                           ("estimate", n)):
            setattr(self, name, slice(offset, offset + size))
            offset += size
        for name in self.SCALARS:
            setattr(self, name, offset)
            offset += 1
        self.size = offset
        self.counters = slice(self.gradients, self.phase + 1)


# phases of an evaluation, one pass of the outer loop each: gradient descent on y (a loop), the upper gradient,
# the linear solve (a loop), the outputs, done
_DESCENT, _UPPER, _SOLVE, _FINISH, _DONE = 0.0, 1.0, 2.0, 3.0, 4.0


def _build_evaluate(problem: BilevelProblem, richardson: bool) -> Any:
    """The compiled evaluation: ``state -> state`` on the vector described by :class:`_Layout`.

    One ``lax.while_loop`` whose passes run the phases in turn (``lax.switch``): the inner gradient loop, the
    upper gradient, the CG (or Richardson) loop, the outputs. Each phase is a small program of its own, with the
    NumPy backend's tests. The shape is about XLA:CPU's runtime: a program (or a branch, or a loop body) of more
    than 8 operations is run by a dataflow executor that costs ~1 us per operation and hands work to a thread
    pool as soon as more than 8 operations are ready at once (a handoff costs more than this whole evaluation);
    8 operations or fewer run back to back in the calling thread. The phases keep every level of the program
    narrow and most of them short."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    n, m = problem.dims
    at = _Layout(n, m)
    upper_value_and_grad, lower_grad_y, lower_hvp = _derivatives(problem)

    def descent(s: Any) -> Any:
        # y <- y - g / l from the warm start while ||g||^2 > target (NaN continues, as the NumPy test) and fewer
        # than inner_max steps were taken; the first pass only evaluates g at the warm start
        x, lipschitz, target_sq, inner_max = s[at.x], s[at.lipschitz], s[at.target_sq], s[at.inner_max]

        def go_on(c: tuple) -> Any:
            k, _, g = c
            return (k == 0) | ((k <= inner_max) & jnp.logical_not(g @ g <= target_sq))

        def step(c: tuple) -> tuple:
            k, y, g = c
            y = jnp.where(k == 0, y, y - g / lipschitz)
            return k + 1.0, y, lower_grad_y(x, y)

        k, y, g = lax.while_loop(go_on, step, (jnp.zeros((), s.dtype), s[at.y], s[at.g]))
        s = s.at[at.y].set(y).at[at.g].set(g)
        return s.at[at.gradients].set(k).at[at.phase].set(_UPPER)

    def upper(s: Any) -> Any:
        value, (Fx, Fy) = upper_value_and_grad(s[at.x], s[at.y])
        s = s.at[at.Fx].set(Fx).at[at.Fy].set(Fy).at[at.value].set(value)
        return s.at[at.phase].set(_SOLVE)

    def conjugate_gradient(s: Any) -> Any:
        # CG on H_yy v = grad_y F from the warm start, cross = H_xy v carried along, one product per pass: the
        # first pass gives the initial residual r = p = grad_y F - H_yy v; then steps while r.r > tol, fewer than
        # cg_max steps were taken and the curvature p.H p stays positive (at a non-positive one NumPy breaks:
        # the product counted, nothing updated)
        x, y, Fy, cg_max, tol_sq = s[at.x], s[at.y], s[at.Fy], s[at.cg_max], s[at.cg_tol_sq]

        def go_on(c: tuple) -> Any:
            k, _, _, _, _, rr, stop = c
            return (k == 0) | ((k <= cg_max) & jnp.logical_not(rr <= tol_sq) & jnp.logical_not(stop))

        def step(c: tuple) -> tuple:
            k, v, cross, r, p, rr, _ = c
            first = k == 0
            hx, hp = lower_hvp(x, y, jnp.where(first, v, p))
            curvature = p @ hp
            stop = jnp.logical_not(first) & (curvature <= 0)
            # a zero step leaves v, cross and r as they were (p is not used after a stop)
            a = jnp.where(stop | first, 0.0, rr / curvature)
            v, cross = v + a * p, jnp.where(first, hx, cross + a * hx)
            r = jnp.where(first, Fy - hp, r - a * hp)
            rr_new = jnp.where(stop, rr, r @ r)
            p = jnp.where(first, r, r + (rr_new / rr) * p)
            return k + 1.0, v, cross, r, p, rr_new, stop

        v = s[at.v]
        one = jnp.ones((), s.dtype)
        k, v, cross, _, _, _, _ = lax.while_loop(go_on, step, (0.0 * one, v, s[at.cross], v, v, one,
                                                              jnp.asarray(False)))
        s = s.at[at.v].set(v).at[at.cross].set(cross)
        return s.at[at.products].set(k).at[at.phase].set(_FINISH)

    def gradient_steps(s: Any) -> Any:
        # cg_max Richardson steps v <- v + (grad_y F - H_yy v) / l, the cross term of the last product (NumPy's
        # linear_solver="gd")
        x, y, Fy, lipschitz = s[at.x], s[at.y], s[at.Fy], s[at.lipschitz]

        def step(_: Any, c: tuple) -> tuple:
            v, _ = c
            cross, hv = lower_hvp(x, y, v)
            return v + (Fy - hv) / lipschitz, cross

        v, cross = lax.fori_loop(0, s[at.cg_max].astype(jnp.int32), step, (s[at.v], s[at.cross]))
        s = s.at[at.v].set(v).at[at.cross].set(cross)
        return s.at[at.products].set(s[at.cg_max]).at[at.phase].set(_FINISH)

    def finish(s: Any) -> Any:
        g, v = s[at.g], s[at.v]
        s = s.at[at.estimate].set(s[at.Fx] - s[at.cross]).at[at.gradient_norm].set(jnp.sqrt(g @ g))
        return s.at[at.corrected].set(s[at.value] - v @ g).at[at.phase].set(_DONE)

    branches = (descent, upper, gradient_steps if richardson else conjugate_gradient, finish)

    def evaluate(state: Any) -> Any:
        return lax.while_loop(lambda s: s[at.phase] < _DONE,
                              lambda s: lax.switch(s[at.phase].astype(jnp.int32), branches, s), state)

    return jax.jit(evaluate)


def hypergradient_oracle(problem: BilevelProblem, oracles: Oracles, lipschitz: float, *, inner_rtol: float,
                         inner_steps: int | None, cg_steps: int | None, inner_max: int,
                         linear_solver: str) -> Callable[[np.ndarray, dict[str, Any]], tuple[np.ndarray, float]]:
    """The JAX counterpart of the NumPy backend's ``hypergradient(x, state)`` closure in
    :func:`optkit.solvers.bilevel.aid.aid`: same targets (``inner_rtol * min(1, residual)``, floored at
    1e-14) or fixed step counts, same warm starts (``state["y"]``, ``state["v"]``), same counts added to
    ``oracles.counts``. Also stores ``state["value"]``, :math:`F(x, y) - \\langle v, \\nabla_y f(x, y)\\rangle` at
    the returned point (the outer line search's value; it counts it as one upper value when it reads it)."""
    richardson = linear_solver == "gd"
    programs = _programs(problem)
    key = ("evaluate", richardson)
    if key not in programs:
        programs[key] = _build_evaluate(problem, richardson)
    program = programs[key]
    n, m = problem.dims
    at = _Layout(n, m)
    counts = oracles.counts
    state = np.zeros(at.size)
    state[at.lipschitz] = float(lipschitz)
    state[at.inner_max] = float(inner_steps if inner_steps is not None else inner_max)
    state[at.cg_max] = float(cg_steps if cg_steps is not None else inner_max)
    fixed_inner, fixed_cg = inner_steps is not None, cg_steps is not None
    float64 = x64()  # one context object, entered at each call (cheaper than building one per call)

    def hypergradient(x: np.ndarray, st: dict[str, Any]) -> tuple[np.ndarray, float]:
        target = max(1e-14, inner_rtol * min(1.0, st["residual"]))
        target_sq = target * target
        state[at.x], state[at.y], state[at.v] = x, st["y"], st["v"]
        state[at.target_sq] = -1.0 if fixed_inner else target_sq  # a fixed count: never stop early
        state[at.cg_tol_sq] = 0.0 if fixed_cg else target_sq
        state[at.counters] = 0.0
        with float64:
            out = np.asarray(program(state))
        # read-only views of one buffer: the outer loop rebinds state entries, never writes into them
        st["y"], st["v"], st["lower_grad"] = out[at.y], out[at.v], out[at.g]
        st["hypergradient"] = estimate = out[at.estimate]
        st["value"] = float(out[at.corrected])
        counts["lower_grad"] += int(out[at.gradients])
        counts["upper_grad"] += 1
        counts["lower_hvp"] += int(out[at.products])
        return estimate, float(out[at.gradient_norm])

    return hypergradient
