r"""``"penalty"``: the penalty method of Kwon, Kwon, Wright & Nowak, "On Penalty Methods for Nonconvex Bilevel
Optimization and First-Order Stochastic Approximation" (ICLR 2024, arXiv 2309.01753).

It minimises :math:`\psi_\sigma(x) = (l(x,\sigma) - l(x,0))/\sigma` with :math:`l(x,\sigma) = \min_{y\in Y}
\sigma F(x,y) + f(x,y)` (the paper's :math:`h_\sigma = \sigma f + g` in its notation, where f is the upper and g
the lower objective), i.e. the min–max :math:`\min_{x, y}\max_z F(x,y) + (f(x,y) - f(x,z))/\sigma`, with
:math:`|\psi_\sigma - \psi| = O(\sigma/\mu)` under the proximal error bound. Two implementations:

* deterministic double loop (default): for each outer step, the two lower copies :math:`y` (of :math:`\sigma F + f`)
  and :math:`z` (of :math:`f`) are solved to a tolerance proportional to :math:`\sigma` times the current outer
  residual by the shared accelerated projected-gradient loop, then one projected step on :math:`x` along
  :math:`\nabla\psi_\sigma`; :math:`\sigma` follows a geometric schedule from ``sigma0`` down to ``sigma``;
* stochastic single loop (``batch_size`` set on a :class:`~optkit.problems.FiniteSum` problem): one minibatch
  projected-gradient step on each of :math:`z, y, x` per iteration, :math:`\sigma` on the same schedule, the x-step
  ``step / (k+1)^step_decay``. (The paper's momentum-assisted estimator is not implemented.)

The algorithm statements are in the paper's appendix, which we could not consult; the structure above follows the
paper's main text (penalty, two lower copies, projected steps, :math:`\sigma = O(\epsilon)`) — see
``algorithms/bilevel.md`` §1.3. Coupled affine lower constraints are handled by projecting both lower copies onto
:math:`K(x)` and adding their multipliers to the x-direction.
"""

from __future__ import annotations

from typing import Any

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._common import schedule
from optkit.solvers.bilevel._value_penalty import affine_coupling_only, run_value_penalty
from optkit.solvers.loop import check_positive, check_positive_int
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result

__all__ = ["penalty"]


def _accepts(problem: BilevelProblem) -> str | None:
    return affine_coupling_only(problem, "penalty")


def _example() -> BilevelProblem:
    from optkit.problems.library.bilevel_toys import t1

    return t1().problem


@register(
    "penalty", BilevelProblem, backends=("numpy",), default=True, stochastic=True, accepts=_accepts, example=_example
)
def penalty(
    problem: BilevelProblem,
    *,
    sigma: float = 1e-5,
    sigma0: float = 1.0,
    sigma_decay: float = 0.5,
    tol: float = 1e-6,
    max_iter: int = 5000,
    step: float | None = None,
    step_decay: float = 0.0,
    inner_max: int = 500,
    inner_rtol: float = 0.1,
    batch_size: int | None = None,
    inner_steps: int | None = None,
    outer_step: str = "secant",
    time_limit: float | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""Penalty method of Kwon et al. (ICLR 2024) for bilevel problems.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.BilevelProblem` (affine coupled lower constraints allowed).
    sigma, sigma0, sigma_decay
        Final penalty parameter (the bias is :math:`O(\sigma)`), its start and the geometric decay
        :math:`\sigma_k = \max(\sigma, \sigma_0 r^k)`.
    tol
        Stop when :math:`\sigma_k = \sigma`, the x gradient mapping is at most ``tol`` and the inner gradient
        mappings divided by :math:`\sigma` are at most ``tol``.
    max_iter
        Outer iterations.
    step, step_decay
        Outer step; ``None`` estimates :math:`1/L` by secants. With ``step`` and ``step_decay > 0`` the step is
        ``step / (k+1)**step_decay`` (stochastic runs).
    inner_max, inner_rtol
        Double loop: cap on inner steps per outer step, and inner tolerance ``inner_rtol * sigma * residual``.
    batch_size
        Minibatch size of the stochastic single loop (finite-sum problems); ``None`` is deterministic.
    inner_steps
        Fixed number of plain inner steps per outer step (``1`` gives the single loop); ``None``: adaptive.
        Deterministic and uncoupled, both copies then take the common step :math:`1/(L_f + \sigma L_F)` and the
        x-direction reuses the gradients of the last inner step (a Jacobi update of :math:`(x, y, z)`, three oracle
        calls per inner step): with a common step, :math:`(y - z)/\sigma` is a gradient iteration on the implicit
        linear system, so the inner errors are not amplified by :math:`1/\sigma`.
    outer_step
        ``"secant"`` (default) or ``"bb"``: Barzilai–Borwein long steps on x (non-monotone; for smooth strongly
        convex hyper-objectives, e.g. ``sigma0=sigma``, ``inner_steps=2`` on the benchopt quadratic). Ignored when
        ``step`` is given.
    time_limit, backend, callback, progress, seed
        See :func:`optkit.solve`. Stochastic runs without ``seed`` use the fixed seed 0 and say so in ``info``.

    Returns
    -------
    Result
        ``x = (x, y)``; ``info`` has ``lower_gap``, ``constraint_violation``, ``upper_objective``,
        ``hypergradient_norm`` (of :math:`\nabla\psi_\sigma`), ``sigma`` and ``z``.

    Examples
    --------
    >>> import optkit
    >>> from optkit.problems.library.bilevel_toys import t1
    >>> result = optkit.solve(t1().problem, "penalty")
    >>> bool(abs(result.x[0][0] - 0.5) < 1e-4)
    True
    """
    resolve_backend(backend, ("numpy",))
    reason = _accepts(problem)
    if reason is not None:
        raise ValueError(reason)
    sigma = check_positive("sigma", sigma)
    sigma0 = max(check_positive("sigma0", sigma0), sigma)
    sigma_decay = check_positive("sigma_decay", sigma_decay)
    if sigma_decay >= 1:
        raise ValueError(f"sigma_decay must be in (0, 1), got {sigma_decay!r}")
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    if step is not None:
        step = check_positive("step", step)
    step_decay = check_positive("step_decay", step_decay, allow_zero=True)
    inner_max = check_positive_int("inner_max", inner_max)
    inner_rtol = check_positive("inner_rtol", inner_rtol)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
        if inner_steps is None:
            inner_steps = 1
    if inner_steps is not None:
        inner_steps = check_positive_int("inner_steps", inner_steps)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    variant = "double loop" if inner_steps is None else ("single loop" if inner_steps == 1 else "fixed inner steps")
    return run_value_penalty(
        problem, "penalty",
        # schedule() clips with min() when start == final, which would keep decaying: constant sigma then
        sigma_of=(lambda k: sigma) if sigma0 == sigma else
        (lambda k: schedule(sigma0, sigma, k, kind="geometric", rate=sigma_decay)),
        sigma_final=sigma, tol=tol, max_iter=max_iter, step=step, step_decay=step_decay,
        inner_steps=inner_steps, inner_max=inner_max, inner_rtol=inner_rtol, batch_size=batch_size,
        time_limit=time_limit, callback=callback, progress=progress, seed=seed,
        extra_info={"variant": variant, "outer_step": outer_step if step is None else "fixed"},
        outer_rule=outer_step, shared_inner=True,
    )
