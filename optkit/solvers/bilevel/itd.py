r"""``"itd"``: iterative differentiation, truncated back-propagation through the lower iterations (Maclaurin et
al. 2015; Franceschi et al. 2017, reverse-mode hypergradient; Shaban et al. 2019 for truncation), for
unconstrained lower levels strongly convex in :math:`y`.

With :math:`y_{t+1} = y_t - \eta\nabla_y f(x, y_t)`, :math:`t = 0..T-1` (warm-started from the previous outer
iteration, not differentiated through the warm start), the reverse recursion

.. math::

    v_T = \nabla_y F(x, y_T),\quad g = \nabla_x F(x, y_T),\quad
    g \leftarrow g - \eta\,\nabla^2_{xy} f(x, y_t)\,v_{t+1},\quad
    v_t = v_{t+1} - \eta\,\nabla^2_{yy} f(x, y_t)\,v_{t+1}

gives :math:`g = \nabla_x F(x, y_T(x))`; its bias against the implicit hypergradient decays like
:math:`(1 - \eta\mu)^T`. Step :math:`\eta = 1/\ell` from power iteration on Hessian-vector products.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.solvers.bilevel._common import Oracles, strongly_convex_unconstrained
from optkit.solvers.bilevel._implicit import lower_lipschitz, run_outer
from optkit.solvers.loop import check_positive, check_positive_int
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result

__all__ = ["itd"]


def _accepts(problem: BilevelProblem) -> str | None:
    return strongly_convex_unconstrained(problem, "itd")


def _example() -> BilevelProblem:
    from optkit.problems.library.bilevel_toys import t1

    return t1().problem


@register("itd", BilevelProblem, backends=("numpy",), accepts=_accepts, example=_example)
def itd(
    problem: BilevelProblem,
    *,
    tol: float = 1e-6,
    max_iter: int = 2000,
    step: float | None = None,
    inner_steps: int = 100,
    time_limit: float | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""Iterative differentiation through ``inner_steps`` lower gradient steps.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.BilevelProblem` whose lower level is unconstrained and strongly convex in y.
    tol
        Stop when the projected hypergradient mapping and the lower gradient norm at :math:`y_T` are at most
        ``tol``.
    max_iter
        Outer iterations.
    step
        Outer step; ``None``: secant estimate of :math:`1/L`.
    inner_steps
        :math:`T`, the number of differentiated lower steps per outer step (truncation bias
        :math:`O((1-\mu/\ell)^T)`).
    time_limit, backend, callback, progress, seed
        See :func:`optkit.solve` (deterministic: ``seed`` is ignored).

    Examples
    --------
    >>> import optkit
    >>> from optkit.problems.library.bilevel_toys import t1
    >>> result = optkit.solve(t1().problem, "itd")
    >>> bool(abs(result.x[0][0] - 0.5) < 1e-6)
    True
    """
    resolve_backend(backend, ("numpy",))
    reason = _accepts(problem)
    if reason is not None:
        raise ValueError(reason)
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    if step is not None:
        step = check_positive("step", step)
    inner_steps = check_positive_int("inner_steps", inner_steps)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    oracles = Oracles(problem)
    x0 = problem.x_set.project(problem.x0)
    eta = 1.0 / lower_lipschitz(oracles, x0, problem.y0)
    state: dict[str, Any] = {"x": x0, "y": np.array(problem.y0), "residual": 1.0}
    zero_x = np.zeros(problem.dims[0])

    def hypergradient(x: np.ndarray, st: dict[str, Any]) -> tuple[np.ndarray, float]:
        trajectory = [st["y"]]
        y = st["y"]
        for _ in range(inner_steps):
            y = y - eta * oracles.lower_grad(x, y)[1]
            trajectory.append(y)
        st["y"] = y
        g, v = oracles.upper_grad(x, y)
        for y_t in reversed(trajectory[:-1]):
            hx, hy = oracles.lower_hvp(x, y_t, zero_x, v)
            g = g - eta * hx
            v = v - eta * hy
        inner = float(np.linalg.norm(oracles.lower_grad(x, y)[1]))
        return g, inner

    return run_outer(problem, "itd", oracles, hypergradient, state, tol=tol, max_iter=max_iter, step=step,
                     time_limit=time_limit, callback=callback, progress=progress, info={"inner_step": eta})
