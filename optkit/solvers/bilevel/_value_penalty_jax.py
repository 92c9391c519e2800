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

Everything runs in float64 under :func:`~optkit.solvers.bilevel._jax_common.x64`. Only problems that
:func:`~optkit.solvers.bilevel._jax_common.jax_support` accepts without constraints (Y = R^m, so the lower
projections are the identity) reach this module.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._jax_common import jax_levels, x64

__all__ = ["FixedInnerKernel", "fixed_inner_kernel"]

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
