"""Log-domain Sinkhorn in JAX: ``lax.while_loop`` iterations, implicit or unrolled differentiation.

Arrays in, arrays out (no problem or result classes here). The iteration is the one of
:mod:`optkit.kernels.numpy_sinkhorn` (Peyré & Cuturi, *Computational Optimal Transport*, eq. 4.43):

.. math::

    f \\leftarrow \\varepsilon\\log a - \\varepsilon\\,\\mathrm{LSE}_j\\big((g_j - C_{ij})/\\varepsilon\\big),\\qquad
    g \\leftarrow \\varepsilon\\log b - \\varepsilon\\,\\mathrm{LSE}_i\\big((f_i - C_{ij})/\\varepsilon\\big),

carrying :math:`s_i = \\mathrm{LSE}_j((g_j - C_{ij})/\\varepsilon)` so that the L1 marginal error after a ``g``
update, :math:`\\sum_i |e^{f_i/\\varepsilon + s_i} - a_i|`, costs :math:`O(n)`.

Zero-mass points get potential :math:`-\\infty`. Every expression that combines potentials is written with a
mask (``where(mask, x, 0)`` inside, ``where(mask, ..., -inf)`` outside) so that neither values nor derivatives
(with respect to ``cost``, ``a``, ``b`` or ``epsilon``) ever meet :math:`0\\cdot\\infty`.

Differentiation (:func:`sinkhorn_potentials`):

* ``implicit_diff=True``: a ``custom_vjp`` on the solve. With :math:`F(f, g; \\theta) = (P\\mathbf 1 - a,
  P^\\top\\mathbf 1 - b)` and :math:`P = e^{(f\\oplus g - C)/\\varepsilon}`, the optimality conditions
  :math:`F = 0` give (implicit function theorem) :math:`\\bar\\theta = -\\partial_\\theta F^\\top \\mu` with
  :math:`\\partial_{(f,g)}F\\,\\mu = (\\bar f, \\bar g)` and
  :math:`\\partial_{(f,g)}F = \\varepsilon^{-1}\\begin{pmatrix}\\mathrm{diag}(P\\mathbf 1) & P\\\\ P^\\top &
  \\mathrm{diag}(P^\\top\\mathbf 1)\\end{pmatrix}` (symmetric positive semi-definite; cf. Luise et al. 2018,
  *Differential properties of Sinkhorn approximation*, Thm. 2, and Cuturi et al. 2022, OTT-JAX, Sec. 3). Its null
  direction :math:`(\\mathbf 1, -\\mathbf 1)` (the gauge :math:`(f + c, g - c)`) is removed by projecting the
  cotangent onto its orthogonal complement and adding :math:`\\alpha w w^\\top`, :math:`w = (\\mathbf 1,
  -\\mathbf 1)`, to the matrix; the system is solved by Jacobi-preconditioned conjugate gradients
  (``jax.scipy.sparse.linalg.cg``). Zero-mass points are removed from the system (identity rows).
* ``implicit_diff=False``: the loop runs as a ``lax.scan`` of ``ceil(max_iter / check_every)`` checkpointed
  blocks (each skipped by ``lax.cond`` once converged), so reverse-mode autodiff unrolls the iterations.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.sparse.linalg import cg

__all__ = [
    "balanced_gauge",
    "entropic_summary",
    "plan_from_potentials",
    "sinkhorn_log_chunk",
    "sinkhorn_potentials",
]


def _log_weights(w: Any) -> tuple[Any, Any]:
    positive = w > 0
    return positive, jnp.log(jnp.where(positive, w, 1))


def _scaled(cost: Any, f: Any, g: Any, mask_f: Any, mask_g: Any, epsilon: Any) -> Any:
    """:math:`(f_i + g_j - C_{ij})/\\varepsilon`, ``-inf`` where either point has no mass, NaN-free derivatives."""
    fs = jnp.where(mask_f, f, 0)
    gs = jnp.where(mask_g, g, 0)
    mask = mask_f[:, None] & mask_g[None, :]
    return jnp.where(mask, (fs[:, None] + gs[None, :] - cost) / epsilon, -jnp.inf)


def _row_lse(cost: Any, g: Any, mask_b: Any, epsilon: Any) -> Any:
    """:math:`s_i = \\mathrm{LSE}_j((g_j - C_{ij})/\\varepsilon)` over the points with mass."""
    gs = jnp.where(mask_b, g, 0)
    z = jnp.where(mask_b[None, :], (gs[None, :] - cost) / epsilon, -jnp.inf)
    return jax.nn.logsumexp(z, axis=1)


def _col_lse(cost: Any, f: Any, mask_a: Any, epsilon: Any) -> Any:
    fs = jnp.where(mask_a, f, 0)
    z = jnp.where(mask_a[:, None], (fs[:, None] - cost) / epsilon, -jnp.inf)
    return jax.nn.logsumexp(z, axis=0)


def _row_error(f: Any, s: Any, a: Any, mask_a: Any, epsilon: Any) -> Any:
    """:math:`\\sum_i |e^{f_i/\\varepsilon + s_i} - a_i|` (values only; never differentiated)."""
    f, s = lax.stop_gradient(f), lax.stop_gradient(s)
    rows = jnp.where(mask_a, jnp.exp(jnp.where(mask_a, f, 0) / epsilon + s), 0)
    return jnp.sum(jnp.abs(rows - a))


class _Data:
    """The constant inputs of one solve (a plain holder closed over by the loop bodies)."""

    def __init__(self, cost: Any, a: Any, b: Any, epsilon: Any) -> None:
        self.cost, self.a, self.b, self.epsilon = cost, a, b, epsilon
        self.mask_a, self.log_a = _log_weights(a)
        self.mask_b, self.log_b = _log_weights(b)

    def update(self, s: Any) -> tuple[Any, Any, Any]:
        """One Sinkhorn update from the carried row log-sum-exp ``s``: returns ``(f, g, s)``."""
        neg_inf = jnp.array(-jnp.inf, self.cost.dtype)
        f = jnp.where(self.mask_a, self.epsilon * (self.log_a - s), neg_inf)
        g = jnp.where(self.mask_b, self.epsilon * (self.log_b - _col_lse(self.cost, f, self.mask_a, self.epsilon)),
                      neg_inf)
        return f, g, _row_lse(self.cost, g, self.mask_b, self.epsilon)

    def row_lse(self, g: Any) -> Any:
        return _row_lse(self.cost, g, self.mask_b, self.epsilon)

    def error(self, f: Any, s: Any) -> Any:
        return _row_error(f, s, self.a, self.mask_a, self.epsilon)


@jax.jit
def sinkhorn_log_chunk(cost: Any, a: Any, b: Any, f: Any, g: Any, epsilon: Any, max_updates: Any,
                       tol: Any) -> tuple[Any, Any, Any, Any]:
    """Run at most ``max_updates`` updates, stopping once the L1 marginal error is <= ``tol``.

    The JAX twin of :func:`optkit.kernels.numpy_sinkhorn.sinkhorn_log_chunk` (same arguments and returns, as
    JAX arrays; ``max_updates`` and ``tol`` are traced, so one compilation serves every chunk). The error is
    measured before the first update and after every update. Used by the solver's chunked path (callbacks,
    progress bars, time limits).
    """
    data = _Data(cost, a, b, epsilon)
    s = data.row_lse(g)
    err = data.error(f, s)

    def cond(carry: tuple) -> Any:
        _, _, _, err, done = carry
        return (done < max_updates) & ~(err <= tol) & ~jnp.isnan(err)

    def body(carry: tuple) -> tuple:
        _, _, s, _, done = carry
        f, g, s = data.update(s)
        return f, g, s, data.error(f, s), done + 1

    f, g, _, err, done = lax.while_loop(cond, body, (f, g, s, err, jnp.zeros((), jnp.int32)))
    return f, g, err, done


def _loop_parts(data: _Data, tol: Any, max_iter: int, check_every: int) -> tuple:
    """``cond`` and ``body`` of the whole solve: blocks of ``check_every`` updates, an error check after each."""

    def cond(carry: tuple) -> Any:
        _, _, _, err, nit, _, _, ok = carry
        return ~(err <= tol) & (nit < max_iter) & ok

    def body(carry: tuple) -> tuple:
        f, g, s, err, nit, k, errors, _ = carry

        def inner(t: Any, fgs: tuple) -> tuple:
            new = data.update(fgs[2])
            active = nit + t < max_iter
            return tuple(jnp.where(active, x_new, x_old) for x_new, x_old in zip(new, fgs))

        f2, g2, s2 = lax.fori_loop(0, check_every, inner, (f, g, s))
        err2 = data.error(f2, s2)
        ok = jnp.isfinite(err2) & ~jnp.any(jnp.isnan(f2)) & ~jnp.any(jnp.isnan(g2))
        # A non-finite block is discarded: the carry keeps the last finite iterate.
        keep = partial(jnp.where, ok)
        errors = errors.at[k + 1].set(err2)
        return (keep(f2, f), keep(g2, g), keep(s2, s), keep(err2, err), jnp.minimum(nit + check_every, max_iter),
                k + 1, errors, ok)

    return cond, body


def _initial(data: _Data, f0: Any, g0: Any, max_iter: int, check_every: int) -> tuple:
    s0 = data.row_lse(g0)
    err0 = data.error(f0, s0)
    n_checks = -(-max_iter // check_every)
    errors = jnp.full(n_checks + 1, jnp.nan, data.cost.dtype).at[0].set(err0)
    zero = jnp.zeros((), jnp.int32)
    return (f0, g0, s0, err0, zero, zero, errors, jnp.array(True))


def _solve_while(cost: Any, a: Any, b: Any, epsilon: Any, tol: Any, f0: Any, g0: Any, max_iter: int,
                 check_every: int) -> tuple:
    data = _Data(cost, a, b, epsilon)
    cond, body = _loop_parts(data, tol, max_iter, check_every)
    f, g, _, err, nit, _, errors, ok = lax.while_loop(cond, body, _initial(data, f0, g0, max_iter, check_every))
    return f, g, err, nit, ok, errors


def _solve_unrolled(cost: Any, a: Any, b: Any, epsilon: Any, tol: Any, f0: Any, g0: Any, max_iter: int,
                    check_every: int) -> tuple:
    data = _Data(cost, a, b, epsilon)
    cond, body = _loop_parts(data, tol, max_iter, check_every)

    @jax.checkpoint
    def step(carry: tuple) -> tuple:
        return lax.cond(cond(carry), body, lambda c: c, carry)

    carry = _initial(data, f0, g0, max_iter, check_every)
    carry, _ = lax.scan(lambda c, _: (step(c), None), carry, None, length=-(-max_iter // check_every))
    f, g, _, err, nit, _, errors, ok = carry
    return f, g, err, nit, ok, errors


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve_implicit(max_iter: int, check_every: int, cost: Any, a: Any, b: Any, epsilon: Any, tol: Any,
                    f0: Any, g0: Any) -> tuple:
    return _solve_while(cost, a, b, epsilon, tol, f0, g0, max_iter, check_every)


def _implicit_fwd(max_iter: int, check_every: int, cost: Any, a: Any, b: Any, epsilon: Any, tol: Any, f0: Any,
                  g0: Any) -> tuple:
    out = _solve_while(cost, a, b, epsilon, tol, f0, g0, max_iter, check_every)
    return out, (cost, a, b, epsilon, out[0], out[1], tol, f0, g0)


def _implicit_bwd(max_iter: int, check_every: int, residuals: tuple, cotangents: tuple) -> tuple:
    cost, a, b, epsilon, f, g, tol, f0, g0 = residuals
    f_bar, g_bar = cotangents[0], cotangents[1]
    dtype = cost.dtype
    mask_a, mask_b = a > 0, b > 0
    wa, wb = mask_a.astype(dtype), mask_b.astype(dtype)
    f_bar = jnp.where(mask_a, f_bar, 0)
    g_bar = jnp.where(mask_b, g_bar, 0)
    count = jnp.sum(wa) + jnp.sum(wb)
    # Keep the part of the cotangent orthogonal to the gauge direction w = (1, -1): gauge-invariant outputs give
    # such cotangents anyway; for the others this is the minimum-norm (pseudo-inverse) convention.
    t = (jnp.sum(f_bar) - jnp.sum(g_bar)) / count
    rhs = (f_bar - t * wa, g_bar + t * wb)
    plan = jnp.exp(_scaled(cost, f, g, mask_a, mask_b, epsilon))
    rows, cols = plan.sum(axis=1), plan.sum(axis=0)
    alpha = (jnp.sum(rows) + jnp.sum(cols)) / count**2

    def matvec(x: tuple) -> tuple:
        xf, xg = x
        gauge = alpha * (jnp.dot(wa, xf) - jnp.dot(wb, xg))
        yf = rows * xf + plan @ xg + gauge * wa
        yg = plan.T @ xf + cols * xg - gauge * wb
        return jnp.where(mask_a, yf, xf), jnp.where(mask_b, yg, xg)

    diag_f = jnp.where(mask_a, rows + alpha, 1)
    diag_g = jnp.where(mask_b, cols + alpha, 1)
    tiny = jnp.finfo(dtype).tiny
    diag_f, diag_g = jnp.maximum(diag_f, tiny), jnp.maximum(diag_g, tiny)

    def precondition(x: tuple) -> tuple:
        return x[0] / diag_f, x[1] / diag_g

    n, m = cost.shape
    cg_tol = 1e-12 if dtype == jnp.float64 else 1e-6
    mu, _ = cg(matvec, rhs, tol=cg_tol, maxiter=20 * (n + m) + 100, M=precondition)
    mu = (epsilon * mu[0], epsilon * mu[1])

    def conditions(cost: Any, a: Any, b: Any, epsilon: Any) -> tuple:
        p = jnp.exp(_scaled(cost, f, g, mask_a, mask_b, epsilon))
        return p.sum(axis=1) - a, p.sum(axis=0) - b

    _, vjp = jax.vjp(conditions, cost, a, b, epsilon)
    cost_bar, a_bar, b_bar, epsilon_bar = vjp((-mu[0], -mu[1]))
    return (cost_bar, a_bar, b_bar, epsilon_bar, jnp.zeros_like(tol), jnp.zeros_like(f0), jnp.zeros_like(g0))


_solve_implicit.defvjp(_implicit_fwd, _implicit_bwd)


def sinkhorn_potentials(cost: Any, a: Any, b: Any, epsilon: Any, tol: Any, f0: Any, g0: Any, *, max_iter: int,
                        check_every: int, implicit_diff: bool = True) -> tuple:
    """Solve for the potentials by log-domain Sinkhorn; jit- and vmap-compatible, differentiable.

    Parameters
    ----------
    cost, a, b
        Cost (n, m) and weights (n,), (m,), all of one floating dtype (the dtype of the computation).
    epsilon, tol
        Regularization and L1 marginal tolerance (scalars; may be traced).
    f0, g0
        Starting potentials.
    max_iter, check_every
        Static: the update budget and how many updates run between two error checks.
    implicit_diff
        Differentiate by the implicit function theorem (``True``) or by unrolling (``False``).

    Returns
    -------
    f, g
        Potentials (``-inf`` at zero-mass points), in the gauge the iteration ends in.
    error
        Row L1 marginal error at ``(f, g)`` (columns are exact after a ``g`` update).
    nit
        ``int32`` number of updates.
    finite
        ``False`` when a block produced a non-finite value (the iterate before it is returned).
    errors
        The error after every block, ``errors[0]`` at the start; NaN for blocks that did not run.
    """
    if implicit_diff:
        return _solve_implicit(max_iter, check_every, cost, a, b, epsilon, tol, f0, g0)
    return _solve_unrolled(cost, a, b, epsilon, tol, f0, g0, max_iter, check_every)


def balanced_gauge(f: Any, g: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """Shift :math:`(f + c, g - c)` so that :math:`\\langle a, f\\rangle = \\langle b, g\\rangle`.

    The plan does not depend on the shift; fixing it makes the potentials a function of the data (and so
    differentiable). ``-inf`` entries (zero mass) stay ``-inf``.
    """
    mask_a, mask_b = a > 0, b > 0
    af = jnp.sum(jnp.where(mask_a, a * jnp.where(mask_a, f, 0), 0))
    bg = jnp.sum(jnp.where(mask_b, b * jnp.where(mask_b, g, 0), 0))
    c = (bg - af) / (jnp.sum(a) + jnp.sum(b))
    return f + c, g - c


def plan_from_potentials(cost: Any, a: Any, b: Any, f: Any, g: Any, epsilon: Any) -> Any:
    """:math:`P_{ij} = e^{(f_i + g_j - C_{ij})/\\varepsilon}` (zero rows/columns for zero-mass points)."""
    return jnp.exp(_scaled(cost, f, g, a > 0, b > 0, epsilon))


def entropic_summary(cost: Any, a: Any, b: Any, f: Any, g: Any, epsilon: Any) -> dict[str, Any]:
    """Plan, transport cost, primal and dual objectives and marginal errors from potentials (JAX, NaN-free
    derivatives): primal :math:`\\langle C, P\\rangle + \\varepsilon\\sum P(\\log P - 1)`, dual
    :math:`\\langle a, f\\rangle + \\langle b, g\\rangle - \\varepsilon\\sum P`."""
    mask_a, mask_b = a > 0, b > 0
    z = _scaled(cost, f, g, mask_a, mask_b, epsilon)
    plan = jnp.exp(z)
    mask = mask_a[:, None] & mask_b[None, :]
    log_plan = jnp.where(mask, z, 0)
    transport = jnp.sum(cost * plan)
    objective = transport + epsilon * jnp.sum(plan * (log_plan - 1))
    total = jnp.sum(plan)
    dual = (jnp.sum(jnp.where(mask_a, a * jnp.where(mask_a, f, 0), 0))
            + jnp.sum(jnp.where(mask_b, b * jnp.where(mask_b, g, 0), 0)) - epsilon * total)
    return {
        "plan": plan,
        "cost": transport,
        "objective": objective,
        "dual_objective": dual,
        "row_error": jnp.sum(jnp.abs(plan.sum(axis=1) - a)),
        "col_error": jnp.sum(jnp.abs(plan.sum(axis=0) - b)),
    }
