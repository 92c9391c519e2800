r"""``"f2sa"``: the fully first-order stochastic approximation method of Kwon, Kwon, Wright & Nowak, "A Fully
First-Order Method for Stochastic Bilevel Optimization" (ICML 2023, arXiv 2301.10945).

On the Lagrangian :math:`\mathcal L_\lambda(x, y, z) = F(x, y) + \lambda(f(x, y) - f(x, z))` (bias
:math:`O(1/\lambda)`), each iteration runs ``inner_steps`` projected gradient steps on the two lower copies

.. math::

    z \leftarrow P(z - \gamma\nabla_y f(x, z)), \qquad
    y \leftarrow P(y - \alpha(\nabla_y F(x, y) + \lambda_k\nabla_y f(x, y))),

then :math:`x \leftarrow P_X(x - \xi_k[\nabla_x F(x, y) + \lambda_k(\nabla_x f(x, y) - \nabla_x f(x, z))])`
(the paper's Algorithm 1, with minibatch gradients when ``batch_size`` is set on a finite-sum problem). Inner steps
are :math:`\gamma = 1/\ell_f`, :math:`\alpha = 1/(\ell_F + \lambda_k\ell_f)` from Hessian-free curvature probes.

The multiplier schedule is :math:`\lambda_k = \min(\lambda_{max}, \lambda_0 (k+1)^p)`. The growth rate follows the
paper's step-size design: its Theorem (convergence of Algorithm 1) and Corollary take polynomial step sizes
:math:`\alpha_k \propto (k + k_0)^{-a}` (y and x), :math:`\gamma_k \propto (k + k_0)^{-c}` (z) and
:math:`\lambda_k \propto (k + k_0)^{a - c}`, with :math:`(a, c) = (5/7, 4/7)` when both levels are stochastic,
:math:`(3/5, 2/5)` with noise in the upper level only and :math:`(1/3, 0)` deterministic, i.e.
:math:`\lambda_k \propto k^{1/7}, k^{1/5}, k^{1/3}`. These are the rates at which the bias
:math:`\|\nabla\mathcal L^*_{\lambda} - \nabla F\| = O(1/\lambda)` reaches :math:`\sqrt\epsilon` exactly at the
stated iteration complexities :math:`\epsilon^{-7/2}, \epsilon^{-5/2}, \epsilon^{-3/2}` (for
:math:`\mathbb E\|\nabla F\|^2 \le \epsilon`: :math:`\lambda_K = K^{1/7} = \epsilon^{-1/2}` etc.), which is how we
checked the exponents, since we could not consult the theorem statements themselves (notes ``algorithms/bilevel.md``
§4). benchopt's F2SA adds :math:`\delta/(k+1)^{1/7}` per iteration, so its :math:`\lambda_k` grows like
:math:`k^{6/7}`: it puts the exponent :math:`1/7` on the increment :math:`\delta_k = \lambda_{k+1} - \lambda_k`
where the paper's rate gives :math:`\delta_k \propto k^{-6/7}`. Our defaults: :math:`p = 1/3` for deterministic
runs and :math:`p = 1/7` with ``batch_size`` (the paper's rates), starting at :math:`\lambda_0 = \lambda_{max}/10`
(deterministic runs reach :math:`\lambda_{max}` after :math:`10^3` iterations). ``lambda_rate=1`` (the previous
default, with ``lambda0=100``) ramps faster, a practical choice outside the paper's analysis. Shares its engine with
``"penalty"`` (:math:`\sigma = 1/\lambda`); the stopping rule is the same.
"""

from __future__ import annotations

from typing import Any

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._common import schedule
from optkit.solvers.bilevel._value_penalty import (
    affine_coupling_only,
    run_value_penalty,
)
from optkit.solvers.loop import check_positive, check_positive_int
from optkit.solvers.bilevel._jax_common import auto_backend, jax_support
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result

__all__ = ["f2sa"]


def _accepts(problem: BilevelProblem) -> str | None:
    return affine_coupling_only(problem, "f2sa")


def _example() -> BilevelProblem:
    from optkit.problems.library.bilevel_toys import t1

    return t1().problem


@register("f2sa", BilevelProblem, backends=("numpy", "jax"), stochastic=True, accepts=_accepts, example=_example)
def f2sa(
    problem: BilevelProblem,
    *,
    lambda_max: float = 1e4,
    lambda0: float | None = None,
    lambda_rate: float | None = None,
    inner_steps: int = 10,
    tol: float = 1e-6,
    max_iter: int = 20_000,
    step: float | None = None,
    step_decay: float = 0.0,
    batch_size: int | None = None,
    time_limit: float | None = None,
    check_every: int | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""F2SA (Kwon et al., ICML 2023).

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.BilevelProblem` (affine coupled lower constraints allowed).
    lambda_max, lambda0, lambda_rate
        :math:`\lambda_k = \min(\lambda_{max}, \lambda_0 (k+1)^p)`; the bias is :math:`O(1/\lambda_{max})`.
        ``None``: :math:`\lambda_0 = \lambda_{max}/10` and the paper's rate :math:`p = 1/3` (deterministic) or
        :math:`p = 1/7` (``batch_size`` set, both levels stochastic), see the module docstring.
    inner_steps
        Lower steps per outer step (:math:`T`).
    tol
        Stop when :math:`\lambda_k = \lambda_{max}`, the x gradient mapping is at most ``tol`` and the inner
        gradient mappings times :math:`\lambda` are at most ``tol``.
    max_iter
        Outer iterations.
    step, step_decay
        Outer step :math:`\xi_k` (``None``: secant estimate); with ``step_decay > 0``, ``step/(k+1)**step_decay``.
    batch_size
        Minibatch size (finite-sum problems); ``None``: full gradients.
    backend
        ``"numpy"`` (the reference), ``"jax"`` or ``"auto"`` (JAX when the levels are JAX-traceable and the JAX
        backend takes the problem and ``batch_size`` is None, else NumPy:
        :func:`~optkit.solvers.bilevel._jax_common.auto_backend`). ``"jax"``: up to
        ``check_every`` whole outer iterations (the :math:`\lambda_k` schedule, the ``T`` steps of both copies, the
        x-direction, the outer step rule, the residuals and the stopping test) run as one compiled call
        (:class:`optkit.solvers.bilevel._value_penalty_jax.Segment`; same steps, same counts, iterates equal to
        the NumPy backend's up to rounding). It needs JAX-traceable levels, X = R^n or a
        box, Y = R^m, no upper set and no coupled lower constraints, and deterministic runs: ``batch_size`` with
        ``backend="jax"`` raises ``ValueError``.
    check_every
        Outer iterations per step of the driver (``None``: 10 with ``backend="jax"``, 1 with NumPy). With
        ``backend="jax"`` such a segment is ONE compiled call (schedule, inner steps, outer step rule, residuals
        and stopping test inside a ``lax.while_loop``; it stops inside the segment at the iteration where the
        stopping test holds or a value is non-finite, and never runs past ``max_iter``), so the iterates, ``nit``
        and the counts at convergence do not depend on it. What it changes: the history has one row per segment,
        and ``callback``, ``time_limit`` and ``progress`` act once per segment (a callback stop can come up to
        ``check_every - 1`` iterations after the first iterate that would have satisfied it).
    time_limit, callback, progress, seed
        See :func:`optkit.solve`. Stochastic runs without ``seed`` use the fixed seed 0 and say so in ``info``.

    Examples
    --------
    >>> import optkit
    >>> from optkit.problems.library.bilevel_toys import t1
    >>> result = optkit.solve(t1().problem, "f2sa")
    >>> bool(abs(result.x[0][0] - 0.5) < 1e-4)
    True
    """
    chosen = resolve_backend(backend, f2sa.solver_info, problem.x0, problem.y0)
    reason = _accepts(problem)
    if reason is not None:
        raise ValueError(reason)
    chosen = auto_backend(backend, chosen, problem, "f2sa", options_ok=batch_size is None)
    if chosen == "jax":
        reason = jax_support(problem, "f2sa")
        if reason is not None:
            raise ValueError(reason)
        if batch_size is not None:
            raise ValueError("f2sa with backend='jax' runs deterministic full-gradient steps; batch_size="
                             f"{batch_size!r} needs backend='numpy'")
    lambda_max = check_positive("lambda_max", lambda_max)
    if lambda0 is None:
        lambda0 = lambda_max / 10.0
    lambda0 = min(check_positive("lambda0", lambda0), lambda_max)
    if lambda_rate is None:  # Kwon et al. (2023), Corollary: lambda_k ~ k^(a - c)
        lambda_rate = 1.0 / 7.0 if batch_size is not None else 1.0 / 3.0
    lambda_rate = check_positive("lambda_rate", lambda_rate, allow_zero=True)
    inner_steps = check_positive_int("inner_steps", inner_steps)
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    if step is not None:
        step = check_positive("step", step)
    step_decay = check_positive("step_decay", step_decay, allow_zero=True)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    if check_every is None:
        check_every = 10 if chosen == "jax" else 1
    check_every = check_positive_int("check_every", check_every)

    def sigma_of(k: int) -> float:
        return 1.0 / schedule(lambda0, lambda_max, k, kind="polynomial", rate=lambda_rate)

    return run_value_penalty(
        problem, "f2sa", sigma_of=sigma_of, sigma_final=1.0 / lambda_max, tol=tol, max_iter=max_iter, step=step,
        step_decay=step_decay, inner_steps=inner_steps, inner_max=inner_steps, inner_rtol=1.0,
        batch_size=batch_size, time_limit=time_limit, callback=callback, progress=progress, seed=seed,
        extra_info={"lambda": "lambda = 1/sigma", "lambda0": lambda0, "lambda_rate": lambda_rate}, backend=chosen,
        check_every=check_every,
    )
