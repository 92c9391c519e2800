r"""JAX backend of ``"aid"`` (``backend="jax"``): one hypergradient evaluation as one compiled call.

The outer loop of :func:`optkit.solvers.bilevel.aid.aid` (step rule, line search, stopping test, history, callback)
is the NumPy backend's Python code; what it calls once per trial point, ``hypergradient(x, state)``, is here one
``jax.jit`` program of three parts, each the NumPy backend's loop with the same stopping test, warm start and
counts:

1. gradient descent on the lower level, :math:`y \leftarrow y - \nabla_y f(x, y)/\ell`, from the previous
   :math:`y`, while :math:`\|\nabla_y f(x, y)\|^2 >` ``target_sq`` (at most ``inner_max`` steps; a fixed number
   with ``inner_steps``), one lower gradient per evaluation of :math:`\nabla_y f`;
2. the upper gradient and value :math:`(F, \nabla_x F, \nabla_y F)(x, y)` (``jax.value_and_grad``, one upper
   gradient; the value is counted as one upper value only where the outer loop uses it);
3. conjugate gradient on :math:`\nabla^2_{yy} f\, v = \nabla_y F` from the previous :math:`v`, carrying
   :math:`\nabla^2_{xy} f\, v` along (one Hessian-vector product per step plus one for the initial residual), to
   ``cg_tol_sq`` (or ``cg_steps`` Richardson steps, ``linear_solver="gd"``).

It returns :math:`y, v`, the estimate :math:`\nabla_x F - \nabla^2_{xy} f\, v`, :math:`\nabla_y f`, its norm, the
corrected value :math:`F(x, y) - \langle v, \nabla_y f(x, y)\rangle` and the two loop counts, packed in one float64
vector (one transfer each way per call). Hessian-vector products are forward-over-reverse
(``jax.jvp`` of ``jax.grad(f, argnums=(0, 1))`` in the :math:`y` direction), giving both blocks
:math:`(\nabla^2_{xy} f\, w, \nabla^2_{yy} f\, w)` as the NumPy oracle ``lower.hvp(x, y, 0, w)`` does.

The compiled programs depend only on the problem's levels and sizes; they are built once per problem (a weak
cache: problems are immutable) so repeated solves do not recompile.
"""

from __future__ import annotations

import math
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
    start = np.random.default_rng(1).standard_normal(y.size)
    start /= np.linalg.norm(start)
    with x64():
        out = np.asarray(programs["lipschitz"](np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                                               start))
    oracles.counts["lower_hvp"] += int(out[1])
    return float(out[0])


class _Layout:
    r"""Offsets of the one float64 state vector of an evaluation (inputs, iterates, outputs and scalars).

    Vectors: ``x`` (n), ``y``, ``v``, ``g`` = :math:`\nabla_y f`, ``Fy`` = :math:`\nabla_y F`, ``r``, ``p`` (m
    each), ``Fx``, ``cross`` = :math:`\nabla^2_{xy} f\, v` (n each). Scalars: the inputs ``lipschitz``,
    ``target_sq``, ``cg_tol_sq``, ``inner_max``, ``cg_max``, then ``rr``, ``value`` = :math:`F(x, y)`, the counts
    ``gradients`` and ``products``, and ``phase``. The caller writes the inputs (x, y, v, the five scalars) and
    reads the rest."""

    SCALARS = ("lipschitz", "target_sq", "cg_tol_sq", "inner_max", "cg_max", "rr", "value", "gradients",
               "products", "phase")

    def __init__(self, n: int, m: int) -> None:
        self.n, self.m = n, m
        offset = 0
        for name, size in (("x", n), ("y", m), ("v", m), ("g", m), ("Fy", m), ("r", m), ("p", m), ("Fx", n),
                           ("cross", n)):
            setattr(self, name, slice(offset, offset + size))
            offset += size
        for name in self.SCALARS:
            setattr(self, name, offset)
            offset += 1
        self.size = offset
        self.inputs = 2 * m + n  # x, y, v lead, then the five input scalars after the vectors


# phases of an evaluation (one loop pass each): gradient step on y, upper gradient, initial CG residual (or a
# Richardson step), CG step, done
_DESCENT, _UPPER, _RESIDUAL, _CG, _DONE = 0.0, 1.0, 2.0, 3.0, 4.0


def _build_evaluate(problem: BilevelProblem, richardson: bool) -> Any:
    """The compiled evaluation: ``state -> state`` on the vector described by :class:`_Layout`.

    One ``lax.while_loop`` whose pass runs one phase (``lax.switch``): each pass evaluates one oracle (a lower
    gradient, the upper gradient, or a Hessian-vector product) and decides the next phase with the NumPy
    backend's tests. Written as one loop over one state vector rather than a chain of loops because XLA:CPU runs
    the operations of a program concurrently on a thread pool as soon as more than a handful are ready at once,
    and on these sizes one such handoff costs more than the whole evaluation: one loop keeps every level of the
    program narrow."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    n, m = problem.dims
    at = _Layout(n, m)
    upper_value_and_grad, lower_grad_y, lower_hvp = _derivatives(problem)

    def descent(s: Any) -> Any:
        # the gradient at the warm start, then y <- y - g / l while ||g||^2 > target (NaN continues, as the NumPy
        # test) and fewer than inner_max steps were taken: a loop of its own inside this phase
        x, lipschitz, target_sq, inner_max = s[at.x], s[at.lipschitz], s[at.target_sq], s[at.inner_max]

        def go_on(c: tuple) -> Any:
            k, _, g = c
            return (k <= inner_max) & jnp.logical_not(g @ g <= target_sq)

        def step(c: tuple) -> tuple:
            k, y, g = c
            y = y - g / lipschitz
            return k + 1.0, y, lower_grad_y(x, y)

        y = s[at.y]
        k, y, g = lax.while_loop(go_on, step, (jnp.asarray(1.0, s.dtype), y, lower_grad_y(x, y)))
        s = s.at[at.y].set(y).at[at.g].set(g)
        return s.at[at.gradients].set(k).at[at.phase].set(_UPPER)

    def upper(s: Any) -> Any:
        value, (Fx, Fy) = upper_value_and_grad(s[at.x], s[at.y])
        s = s.at[at.Fx].set(Fx).at[at.Fy].set(Fy).at[at.value].set(value)
        return s.at[at.phase].set(_RESIDUAL)

    def residual(s: Any) -> Any:
        # cross = H_xy v, r = p = grad_y F - H_yy v (one product, counted); no CG step when r.r <= tol
        cross, hv = lower_hvp(s[at.x], s[at.y], s[at.v])
        r = s[at.Fy] - hv
        rr = r @ r
        s = s.at[at.cross].set(cross).at[at.r].set(r).at[at.p].set(r).at[at.rr].set(rr)
        done = (s[at.cg_max] < 1) | (rr <= s[at.cg_tol_sq])
        return s.at[at.products].set(1.0).at[at.phase].set(jnp.where(done, _DONE, _CG))

    def cg_step(s: Any) -> Any:
        # CG from the initial residual to r.r <= tol, cg_max steps or a non-positive curvature: a loop of its own
        x, y, cg_max, tol_sq = s[at.x], s[at.y], s[at.cg_max], s[at.cg_tol_sq]

        def go_on(c: tuple) -> Any:
            k, _, _, _, _, rr, stop = c
            return (k <= cg_max) & jnp.logical_not(rr <= tol_sq) & jnp.logical_not(stop)

        def step(c: tuple) -> tuple:
            k, v, cross, r, p, rr, _ = c
            hx, hp = lower_hvp(x, y, p)
            curvature = p @ hp
            stop = curvature <= 0  # NumPy breaks here: the product counted, nothing updated
            a = rr / curvature
            r_new = r - a * hp
            rr_new = r_new @ r_new
            new = (v + a * p, cross + a * hx, r_new, r_new + (rr_new / rr) * p, rr_new)
            kept = tuple(jnp.where(stop, old, fresh) for old, fresh in zip((v, cross, r, p, rr), new, strict=True))
            return (k + 1.0, *kept, stop)

        start = (s[at.products], s[at.v], s[at.cross], s[at.r], s[at.p], s[at.rr], jnp.asarray(False))
        k, v, cross, r, p, rr, _ = lax.while_loop(go_on, step, start)
        s = s.at[at.v].set(v).at[at.cross].set(cross).at[at.r].set(r).at[at.p].set(p).at[at.rr].set(rr)
        return s.at[at.products].set(k).at[at.phase].set(_DONE)

    def richardson_step(s: Any) -> Any:
        # v <- v + (grad_y F - H_yy v) / l, the cross term of the last product (NumPy's linear_solver="gd")
        v = s[at.v]
        cross, hv = lower_hvp(s[at.x], s[at.y], v)
        v = v + (s[at.Fy] - hv) / s[at.lipschitz]
        k = s[at.products] + 1.0
        s = s.at[at.v].set(v).at[at.cross].set(cross).at[at.products].set(k)
        return s.at[at.phase].set(jnp.where(k >= s[at.cg_max], _DONE, _RESIDUAL))

    branches = (descent, upper, richardson_step if richardson else residual, cg_step)

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

    def hypergradient(x: np.ndarray, st: dict[str, Any]) -> tuple[np.ndarray, float]:
        target = max(1e-14, inner_rtol * min(1.0, st["residual"]))
        target_sq = target * target
        state[at.x], state[at.y], state[at.v] = x, st["y"], st["v"]
        state[at.target_sq] = -1.0 if fixed_inner else target_sq  # a fixed count: never stop early
        state[at.cg_tol_sq] = 0.0 if fixed_cg else target_sq
        state[at.gradients] = state[at.products] = state[at.phase] = 0.0
        with x64():
            out = np.asarray(program(state))
        # read-only views of one buffer: the outer loop rebinds state entries, never writes into them
        g = out[at.g]
        st["y"], st["v"], st["lower_grad"] = out[at.y], out[at.v], g
        st["hypergradient"] = estimate = out[at.Fx] - out[at.cross]
        gg = float(g @ g)
        st["value"] = float(out[at.value]) - float(out[at.v] @ g)
        counts["lower_grad"] += int(out[at.gradients])
        counts["upper_grad"] += 1
        counts["lower_hvp"] += int(out[at.products])
        return estimate, math.sqrt(gg)

    return hypergradient
