r"""The ``backend="jax"`` inner work of the value-function penalty engine (:mod:`._value_penalty`) for its
deterministic fixed-inner-step runs: ``"f2sa"`` (Kwon, Kwon, Wright & Nowak, ICML 2023, Algorithm 1 with full
gradients) and ``"penalty"`` with ``inner_steps`` (Kwon et al., ICLR 2024; the common-step Jacobi variant).

One outer iteration's inner work is one compiled call (``jax.jit`` of a ``lax.while_loop`` over the ``T`` inner
steps): with :math:`\sigma = 1/\lambda` and the steps :math:`\beta_z = 1/\ell_f`, :math:`\beta_y = 1/(\sigma\ell_F
+ \ell_f)` of the NumPy backend,

.. math::

    z \leftarrow z - \beta_z \nabla_y f(x, z), \qquad
    y \leftarrow y - \beta_y (\sigma\nabla_y F(x, y) + \nabla_y f(x, y))

``T`` times (the inner loops of F2SA's Algorithm 1, full gradients, its y-step :math:`\alpha = \beta_y/\sigma` on
:math:`\nabla_y F + \lambda\nabla_y f`), then the gradients at the returned pair and the x-direction

.. math::

    G_x = \nabla_x F(x, y) + \frac{\nabla_x f(x, y) - \nabla_x f(x, z)}{\sigma}

(the x-step of Kwon et al. 2023, Algorithm 1; Kwon et al. 2024, eq. (3) by Danskin). In the shared (Jacobi)
mode both copies take the step :math:`1/(\ell_f + \sigma\ell_F)` and :math:`G_x` reuses the gradients of the last
inner step (three gradients per inner step, none extra). The call returns the new copies (kept on the device for
the next call), and one host vector with :math:`G_x`, the last inner gradient-mapping norms :math:`\|v^+ - v\|/\beta`
of both copies, whether every entry is finite, and the oracle counts incremented by the loop (one gradient of a
level = one call, as the NumPy backend counts them). The outer loop (step rule, :math:`\lambda` schedule, stopping
test, history) stays the NumPy engine's.

The curvature probes at the start (:func:`~optkit.solvers.bilevel._common.probe_lipschitz`: 8 power iterations on
gradient differences from the same fixed random direction, 9 gradients per level) are one more compiled call.

Compiled code is cached per problem (:func:`fixed_inner_kernel`): a second solve of the same problem does not
trace or compile again. Cost on the CPU: on benchopt's quadratic (d = 100) one call takes ~150-220 us of CPU time
against ~20 us for an executable of the same signature that does no work; the XLA CPU runtime runs the ~47 operations
(21 matrix-vector products) as a parallel task graph on its thread pool, and the hand-offs, not the arithmetic,
dominate. Longer inner loops amortise it (T = 10: ~1.8x faster than the NumPy backend; T = 2: slower).

Hence :class:`Segment`: ``check_every`` whole outer iterations (schedule, inner steps, outer step rule, stopping
test) in one compiled call, so that the fixed cost per call (~0.1-0.2 ms on the CPU, whatever the work) and the
host's outer loop (~0.08 ms per iteration) are paid once per segment. On benchopt's quadratic (d = 100) at fixed
:math:`\lambda = 10^5`: ~27 us per outer iteration with T = 2 and ~80 us with T = 10 inside the segment (a 100 x 100
matrix-vector product takes ~0.9 us and an iteration makes 6T + 8 of them: mostly arithmetic), plus ~0.1 ms per
call. Measured and rejected (slower on this CPU): the inner steps unrolled, the two copies in two loops, the last
inner step (with the residual norms) outside the loop, both lower gradients as one batched (``vmap``) evaluation,
and one flat state vector for the whole loop carry; wider loop bodies let XLA:CPU run independent operations on its
thread pool, which costs more CPU time than it saves at these sizes.

Everything runs in float64 under :func:`~optkit.solvers.bilevel._jax_common.x64`. Only problems that
:func:`~optkit.solvers.bilevel._jax_common.jax_support` accepts without constraints (Y = R^m, so the lower
projections are the identity) reach this module.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._jax_common import jax_levels, jax_projection, x64

__all__ = ["FAILED", "FixedInnerKernel", "Segment", "fixed_inner_kernel"]

_PROBE_ITERATIONS = 8  # as probe_lipschitz

# compiled kernels per problem (immutable) and (inner_steps, shared): a second solve of the same problem reuses
# the compiled code; weak keys, and a kernel holds the levels' callables, not the problem
_KERNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fixed_inner_kernel(problem: BilevelProblem, inner_steps: int, shared: bool) -> FixedInnerKernel:
    """The :class:`FixedInnerKernel` of ``problem``, built (traced and compiled on first call) once per problem and
    ``(inner_steps, shared)``."""
    per_problem = _KERNELS.setdefault(problem, {})
    key = (int(inner_steps), bool(shared))
    if key not in per_problem:
        per_problem[key] = FixedInnerKernel(problem, inner_steps, shared)
    return per_problem[key]


class FixedInnerKernel:
    """Compiled inner work of :func:`~optkit.solvers.bilevel._value_penalty.run_value_penalty` with fixed inner
    steps (deterministic, uncoupled, Y = R^m), built once per solve.

    Parameters
    ----------
    problem
        A problem accepted by :func:`~optkit.solvers.bilevel._jax_common.jax_support`.
    inner_steps
        Inner steps per outer step (static: one compilation per solve).
    shared
        The common-step Jacobi update of ``penalty`` (``shared_inner``) instead of F2SA's separate steps.
    """

    def __init__(self, problem: BilevelProblem, inner_steps: int, shared: bool) -> None:
        import jax
        import jax.numpy as jnp
        from jax import lax

        upper, lower = jax_levels(problem)
        grad_upper = jax.grad(upper, argnums=(0, 1))
        grad_lower = jax.grad(lower, argnums=(0, 1))
        grad_upper_y = jax.grad(upper, argnums=1)
        grad_lower_y = jax.grad(lower, argnums=1)
        steps = int(inner_steps)
        n = problem.dims[0]
        self.n = n

        def norm(v: Any) -> Any:
            return jnp.sqrt(jnp.dot(v, v))

        def separate(x: Any, pair: Any, params: Any) -> Any:
            # F2SA: T steps of z on f (step beta_z) and of y on sigma F + f (step beta_y); residuals of the last
            sigma, beta_y, beta_z = params[0], params[1], params[2]

            def body(carry: tuple) -> tuple:
                i, y, z, _, _, n_upper, n_lower = carry
                z_new = z - beta_z * grad_lower_y(x, z)
                y_new = y - beta_y * (sigma * grad_upper_y(x, y) + grad_lower_y(x, y))
                return (i + 1, y_new, z_new, norm(y_new - y) / beta_y, norm(z_new - z) / beta_z,
                        n_upper + 1, n_lower + 2)

            zero = jnp.zeros((), pair.dtype)
            start = (jnp.int32(0), pair[0], pair[1], zero, zero, jnp.int32(0), jnp.int32(0))
            _, y, z, r_y, r_z, n_upper, n_lower = lax.while_loop(lambda c: c[0] < steps, body, start)
            Fx, _ = grad_upper(x, y)
            fx_y, _ = grad_lower(x, y)
            fx_z, _ = grad_lower(x, z)
            return y, z, Fx, fx_y, fx_z, r_y, r_z, n_upper + 1, n_lower + 2

        def jacobi(x: Any, pair: Any, params: Any) -> Any:
            # penalty's shared mode: both copies take 1/(L_f + sigma L_F) from the gradients at the current pair;
            # the x-direction uses the gradients of the last step (evaluated before it)
            sigma, beta = params[0], params[1]
            zeros_x = jnp.zeros(n, pair.dtype)

            def body(carry: tuple) -> tuple:
                i, y, z, _, _, _, _, _, n_upper, n_lower = carry
                Fx, Fy = grad_upper(x, y)
                fx_y, fy_y = grad_lower(x, y)
                fx_z, fy_z = grad_lower(x, z)
                y_new = y - beta * (sigma * Fy + fy_y)
                z_new = z - beta * fy_z
                return (i + 1, y_new, z_new, norm(y_new - y) / beta, norm(z_new - z) / beta, Fx, fx_y, fx_z,
                        n_upper + 1, n_lower + 2)

            zero = jnp.zeros((), pair.dtype)
            start = (jnp.int32(0), pair[0], pair[1], zero, zero, zeros_x, zeros_x, zeros_x, jnp.int32(0),
                     jnp.int32(0))
            _, y, z, r_y, r_z, Fx, fx_y, fx_z, n_upper, n_lower = lax.while_loop(lambda c: c[0] < steps, body, start)
            return y, z, Fx, fx_y, fx_z, r_y, r_z, n_upper, n_lower

        inner = jacobi if shared else separate
        self._inner = inner
        self._shared = bool(shared)
        self._project = jax_projection(problem)
        self.m = problem.dims[1]
        self._segments: dict[tuple, Any] = {}

        def outer_iteration(x: Any, pair: Any, params: Any) -> tuple[Any, Any]:
            y, z, Fx, fx_y, fx_z, r_y, r_z, n_upper, n_lower = inner(x, pair, params)
            direction = Fx + (fx_y - fx_z) / params[0]
            ok = jnp.isfinite(y).all() & jnp.isfinite(z).all() & jnp.isfinite(direction).all()
            tail = jnp.stack([r_y, r_z, ok.astype(pair.dtype), n_upper.astype(pair.dtype),
                              n_lower.astype(pair.dtype)])
            return jnp.stack([y, z]), jnp.concatenate([direction, tail])

        def probes(x: Any, y: Any, v0: Any) -> Any:
            # probe_lipschitz for both levels (the same start direction, 8 power iterations on gradient
            # differences; it stops at a zero or non-finite estimate, kept here by a flag)
            h = 1e-4 * jnp.maximum(1.0, norm(y))

            def probe(grad_y: Any) -> Any:
                g0 = grad_y(x, y)

                def body(_: Any, carry: tuple) -> tuple:
                    v, estimate, stopped = carry
                    w = (grad_y(x, y + h * v) - g0) / h
                    new = norm(w)
                    stop = (new == 0.0) | ~jnp.isfinite(new)
                    estimate = jnp.where(stopped, estimate, new)
                    v = jnp.where(stopped | stop, v, w / jnp.where(stop, 1.0, new))
                    return v, estimate, stopped | stop

                _, estimate, _ = lax.fori_loop(0, _PROBE_ITERATIONS, body,
                                               (v0, jnp.asarray(1e-12, y.dtype), jnp.asarray(False)))
                return 1.1 * jnp.maximum(estimate, 1e-12)

            return jnp.stack([probe(grad_lower_y), probe(grad_upper_y)])

        self._step = jax.jit(outer_iteration)
        self._probes = jax.jit(probes)

    def curvature(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
        """``(L_f, L_F, gradients per level)``: :func:`~optkit.solvers.bilevel._common.probe_lipschitz` of both
        levels in y at ``(x, y)``, in one compiled call."""
        rng = np.random.default_rng(1)  # probe_lipschitz's start direction
        v0 = rng.standard_normal(y.size)
        v0 /= np.linalg.norm(v0)
        with x64():
            out = np.asarray(self._probes(x, y, v0), dtype=np.float64)
        return float(out[0]), float(out[1]), _PROBE_ITERATIONS + 1

    def start(self, y: np.ndarray) -> Any:
        """The pair of copies ``(y, z)`` (both ``y``) as one device array."""
        import jax.numpy as jnp

        with x64():
            return jnp.asarray(np.stack([y, y]))

    def __call__(self, x: np.ndarray, pair: Any, sigma: float, beta_y: float,
                 beta_z: float) -> tuple[Any, np.ndarray, float, float, bool, int, int]:
        """One outer iteration's inner work: ``(pair, direction, r_y, r_z, finite, upper_grads, lower_grads)``;
        ``pair`` stays on the device, the rest is NumPy/Python."""
        with x64():
            pair, packed = self._step(x, pair, np.array([sigma, beta_y, beta_z]))
            packed = np.asarray(packed)
        n = self.n
        return (pair, packed[:n], float(packed[n]), float(packed[n + 1]), bool(packed[n + 2]),
                int(packed[n + 3]), int(packed[n + 4]))

    @staticmethod
    def copies(pair: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(y, z)`` as NumPy float64 arrays."""
        both = np.asarray(pair, dtype=np.float64)
        return both[0].copy(), both[1].copy()

    def segment(self, length: int, rule: str, fixed_step: bool) -> Segment:
        """The compiled segment of up to ``length`` outer iterations (:class:`Segment`), built once per kernel and
        ``(length, rule, fixed_step)``."""
        key = (int(length), str(rule), bool(fixed_step))
        if key not in self._segments:
            self._segments[key] = Segment(self, *key)
        return self._segments[key]


# what a segment reports (host vector): iterations taken, stop code, the last residuals, sigma, counts
_RUNNING, _STOPPED, _FAILED = 0, 1, 2
FAILED = _FAILED


class Segment:
    r"""Up to ``length`` outer iterations of :func:`~optkit.solvers.bilevel._value_penalty.run_value_penalty`
    (fixed inner steps, deterministic) as one compiled call: a ``lax.while_loop`` over outer iterations whose body
    is the NumPy engine's iteration,

    1. :math:`\sigma_k` from a table the host fills with the engine's schedule for :math:`k_0, \dots, k_0 + L - 1`
       (``sigma_of(k)``, i.e. F2SA's :math:`1/\lambda_k = 1/\min(\lambda_{max}, \lambda_0 (k+1)^p)`, computed by
       the same Python function as the NumPy backend, so both backends use bit-identical :math:`\sigma_k`), and
       the inner steps :math:`\beta_y = 1/(\sigma\ell_F + \ell_f)`, :math:`\beta_z = 1/\ell_f` (shared mode:
       :math:`1/(\ell_f + \sigma\ell_F)`);
    2. the ``T`` inner steps and the x-direction :math:`G_x` (the kernel's body, :class:`FixedInnerKernel`);
    3. the outer step :math:`\xi_k`: a port of :class:`~optkit.solvers.bilevel._common.SecantStep` (monotone
       secant estimate :math:`L_k = \max(L_{k-1}, \|G_k - G_{k-1}\|/\|x_k - x_{k-1}\|)` when
       :math:`\|x_k - x_{k-1}\| > 10^{-10}\max(1, \|x_k\|)` and the estimate is finite, :math:`\xi_k = 1/L_k`, the
       first step at most :math:`0.05\max(1, \|x\|)/\|G\|`), of :class:`~optkit.solvers.bilevel._common.BBStep`
       (Barzilai & Borwein 1988, eq. (5): :math:`\|s\|^2/\langle s, d\rangle` when positive and finite, else the
       previous step, clipped to :math:`[10^{-10}, 10^{10}]`), or the fixed steps (a host table, with
       ``step_decay``);
    4. :math:`x \leftarrow P_X(x - \xi_k G_x)`, the residuals :math:`\|x_k - x_{k+1}\|/\xi_k` and
       :math:`\max(r_y, r_z)/\sigma_k`, and the engine's stopping test (:math:`\sigma_k \le \sigma_{final}(1 +
       10^{-12})`, both residuals :math:`\le` ``tol``).

    The loop stops after ``budget`` iterations (at most ``length``), at the first iteration meeting the stopping
    test, or at the first non-finite value: copies or :math:`G_x` non-finite leave the state as it was before that
    iteration, a non-finite :math:`x_{k+1}` keeps the new copies and the old :math:`x` (as the NumPy engine does).
    The iteration that fails is counted, with its oracle calls.

    State (one device vector, kept on the device between calls): ``[x (n) | y (m) | z (m) | rule scalar | has
    previous | previous x (n) | previous G (n)]``, the rule scalar being the secant :math:`L` (start 1) or the BB
    step.
    """

    def __init__(self, kernel: FixedInnerKernel, length: int, rule: str, fixed_step: bool) -> None:
        import jax
        import jax.numpy as jnp
        from jax import lax

        if rule not in ("secant", "bb"):
            raise ValueError(f"outer_step must be 'secant' or 'bb', got {rule!r}")
        n, m = kernel.n, kernel.m
        self.n, self.m, self.length = n, m, int(length)
        inner, project, shared = kernel._inner, kernel._project, kernel._shared
        length = self.length

        def norm(v: Any) -> Any:
            return jnp.sqrt(jnp.dot(v, v))

        def all_finite(*vectors: Any) -> Any:
            # every entry finite: v * 0 is 0 for finite entries and NaN otherwise, so one sum tells (one fused
            # reduction instead of a test and a reduction per vector: fewer operations for XLA:CPU to schedule)
            return jnp.isfinite(jnp.sum(jnp.concatenate(vectors) * 0.0))

        def secant(scalar: Any, has: Any, last_x: Any, last_g: Any, x: Any, g: Any) -> tuple[Any, Any]:
            dx = norm(x - last_x)
            estimate = norm(g - last_g) / jnp.where(dx > 0, dx, 1.0)
            use = has & (dx > 1e-10 * jnp.maximum(1.0, norm(x))) & jnp.isfinite(estimate)
            lipschitz = jnp.where(use, jnp.maximum(scalar, estimate), scalar)
            step = 1.0 / lipschitz
            g_norm = norm(g)
            first = jnp.minimum(step, 0.05 * jnp.maximum(1.0, norm(x)) / jnp.where(g_norm > 0, g_norm, 1.0))
            step = jnp.where(has | (g_norm <= 0), step, first)
            return step, lipschitz

        def barzilai_borwein(scalar: Any, has: Any, last_x: Any, last_g: Any, x: Any, g: Any) -> tuple[Any, Any]:
            g_norm = norm(g)
            first = jnp.where(g_norm > 0, 0.05 * jnp.maximum(1.0, norm(x)) / jnp.where(g_norm > 0, g_norm, 1.0),
                              1.0)
            s, d = x - last_x, g - last_g
            sd = jnp.dot(s, d)
            ok = (sd > 0) & jnp.isfinite(sd)
            later = jnp.where(ok, jnp.dot(s, s) / jnp.where(ok, sd, 1.0), scalar)
            step = jnp.clip(jnp.where(has, later, first), 1e-10, 1e10)
            return step, step

        outer_rule = secant if rule == "secant" else barzilai_borwein

        def run(state: Any, params: Any) -> tuple[Any, Any]:
            nan = jnp.asarray(jnp.nan, state.dtype)

            def body(carry: tuple) -> tuple:
                s, report, params = carry
                i = report[0].astype(jnp.int32)
                lipschitz_f, lipschitz_F, tol, sigma_stop = params[0], params[1], params[2], params[3]
                sigmas = params[5:5 + length]
                alphas = params[5 + length:5 + 2 * length]
                x, y, z = s[:n], s[n:n + m], s[n + m:n + 2 * m]
                scalar, has = s[n + 2 * m], s[n + 2 * m + 1] > 0
                last_x, last_g = s[n + 2 * m + 2:2 * n + 2 * m + 2], s[2 * n + 2 * m + 2:]
                sigma = sigmas[i]
                if shared:
                    inner_params = jnp.stack([sigma, 1.0 / (lipschitz_f + sigma * lipschitz_F)])
                else:
                    inner_params = jnp.stack([sigma, 1.0 / (sigma * lipschitz_F + lipschitz_f), 1.0 / lipschitz_f])
                y_new, z_new, Fx, fx_y, fx_z, r_y, r_z, up, low = inner(x, jnp.stack([y, z]), inner_params)
                g = Fx + (fx_y - fx_z) / sigma
                copies_ok = all_finite(y_new, z_new, g)
                if fixed_step:
                    alpha, scalar_new, has_new, last_x_new, last_g_new = alphas[i], scalar, has, last_x, last_g
                else:
                    alpha, scalar_new = outer_rule(scalar, has, last_x, last_g, x, g)
                    has_new, last_x_new, last_g_new = jnp.asarray(True), x, g
                x_new = project(x - alpha * g)
                x_ok = all_finite(x_new)
                hyper = norm(x - x_new) / alpha
                inner_r = jnp.maximum(r_y, r_z) / sigma
                ok = copies_ok & x_ok
                converged = (sigma <= sigma_stop) & (hyper <= tol) & (inner_r <= tol)
                finite_r = jnp.isfinite(hyper) & jnp.isfinite(inner_r)
                code = jnp.where(~ok, _FAILED, jnp.where(converged | ~finite_r, _STOPPED, _RUNNING)).astype(jnp.int32)
                # copies: updated unless they (or G) are non-finite; x and the rule: only when everything is
                keep_copies = copies_ok
                new_state = jnp.concatenate([
                    jnp.where(ok, x_new, x), jnp.where(keep_copies, y_new, y), jnp.where(keep_copies, z_new, z),
                    jnp.where(ok, scalar_new, scalar)[None], jnp.where(ok, has_new, has).astype(s.dtype)[None],
                    jnp.where(ok, last_x_new, last_x), jnp.where(ok, last_g_new, last_g)])
                hyper = jnp.where(ok, hyper, nan)
                inner_r = jnp.where(ok, inner_r, nan)
                report = jnp.stack([report[0] + 1.0, code.astype(s.dtype), hyper, inner_r, sigma,
                                    report[5] + up.astype(s.dtype), report[6] + low.astype(s.dtype)])
                return new_state, report, params

            # the scalars travel as one vector: fewer loop buffers, so fewer copies in the entry program
            state, report, _ = lax.while_loop(lambda c: (c[1][0] < c[2][4]) & (c[1][1] == _RUNNING), body,
                                              (state, jnp.zeros(7, state.dtype), params))
            return state, report

        self._run = jax.jit(run)

    def start(self, x: np.ndarray, y: np.ndarray, initial_step: float = 1.0) -> Any:
        """The initial state vector (both copies ``y``, no previous pair, the rule scalar ``initial_step``)."""
        import jax.numpy as jnp

        n = self.n
        state = np.concatenate([x, y, y, [initial_step, 0.0], np.zeros(2 * n)]).astype(np.float64)
        with x64():
            return jnp.asarray(state)

    def __call__(self, state: Any, sigmas: np.ndarray, alphas: np.ndarray, lipschitz_f: float, lipschitz_F: float,
                 tol: float, sigma_stop: float, budget: int) -> tuple[Any, int, int, float, float, float, int, int]:
        """Run up to ``budget`` (<= ``length``) iterations: ``(state, iterations, code, hypergradient_norm,
        inner_residual, sigma, upper_grads, lower_grads)``; ``code`` 1: the stopping test held (or a residual is
        non-finite: the driver's test then reports it), 2: a non-finite copy, direction or x."""
        params = np.empty(5 + 2 * self.length)
        params[:5] = (lipschitz_f, lipschitz_F, tol, sigma_stop, budget)
        params[5:5 + self.length] = sigmas
        params[5 + self.length:] = alphas
        with x64():
            state, report = self._run(state, params)
            report = np.asarray(report)
        return (state, int(report[0]), int(report[1]), float(report[2]), float(report[3]), float(report[4]),
                int(report[5]), int(report[6]))

    def split(self, state: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, z)`` of a state vector as NumPy float64 arrays."""
        s = np.asarray(state, dtype=np.float64)
        n, m = self.n, self.m
        return s[:n].copy(), s[n:n + m].copy(), s[n + m:n + 2 * m].copy()
