r"""``"penalty"``: the penalty method of Kwon, Kwon, Wright & Nowak, "On Penalty Methods for Nonconvex Bilevel
Optimization and First-Order Stochastic Approximation" (ICLR 2024, arXiv 2309.01753).

It minimises :math:`\psi_\sigma(x) = (l(x,\sigma) - l(x,0))/\sigma` with :math:`l(x,\sigma) = \min_{y\in Y}
\sigma F(x,y) + f(x,y)` (the paper's :math:`h_\sigma = \sigma f + g` in its notation, where f is the upper and g
the lower objective), i.e. the min–max :math:`\min_{x, y}\max_z F(x,y) + (f(x,y) - f(x,z))/\sigma`, with
:math:`|\psi_\sigma - \psi| = O(\sigma/\mu)` under the proximal error bound. Two implementations:

* deterministic double loop (default): for each outer step the two lower copies :math:`y` (of :math:`\sigma F + f`)
  and :math:`z` (of :math:`f`) take common accelerated projected-gradient steps (same step, momentum and restarts,
  so that :math:`d = (y - z)/\sigma` is itself an accelerated gradient iteration on the implicit linear system and
  inner errors are not amplified by :math:`1/\sigma`), then a Barzilai–Borwein step on x along
  :math:`\nabla\psi_\sigma`, safeguarded by a watchdog (Chamberlain, Powell, Lemaréchal & Pedersen 1982) and, once
  the watchdog fires, a non-monotone line search (Grippo, Lampariello & Lucidi 1986) on :math:`\psi_\sigma` (see
  :func:`_run_deterministic`); :math:`\sigma` is constant by default (``sigma0=None``), or geometric from ``sigma0``;
* the previous double loop (``outer_step="secant"``: separate accelerated inner solves to ``inner_rtol * sigma *
  residual``, monotone secant :math:`1/L` step, :math:`\sigma` geometric from 1) and fixed inner steps
  (``inner_steps``) with ``outer_step="secant"`` or plain ``"bb"``;
* stochastic single loop (``batch_size`` set on a :class:`~optkit.problems.FiniteSum` problem): one minibatch
  projected-gradient step on each of :math:`z, y, x` per iteration, :math:`\sigma` on the same schedule, the x-step
  ``step / (k+1)^step_decay``. (The paper's momentum-assisted estimator is not implemented.)

The algorithm statements are in the paper's appendix, which we could not consult; the structure above follows the
paper's main text (penalty, two lower copies, projected steps, :math:`\sigma = O(\epsilon)`) — see
``algorithms/bilevel.md`` §1.3. Coupled affine lower constraints are handled by projecting both lower copies onto
:math:`K(x)` and adding their multipliers to the x-direction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optkit.problems.bilevel import BilevelProblem
from optkit.problems.sets import Reals
from optkit.solvers.bilevel._common import (
    LowerFeasibleSet,
    Oracles,
    finish,
    finite,
    probe_lipschitz,
    schedule,
)
from optkit.solvers.bilevel._jax_common import auto_backend, jax_support
from optkit.solvers.bilevel._value_penalty import (
    affine_coupling_only,
    run_value_penalty,
)
from optkit.solvers.loop import Step, check_positive, check_positive_int, drive
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result, Status

__all__ = ["penalty"]


def _accepts(problem: BilevelProblem) -> str | None:
    return affine_coupling_only(problem, "penalty")


def _example() -> BilevelProblem:
    from optkit.problems.library.bilevel_toys import t1

    return t1().problem


@register(
    "penalty", BilevelProblem, backends=("numpy", "jax"), default=True, stochastic=True, accepts=_accepts, example=_example
)
def penalty(
    problem: BilevelProblem,
    *,
    sigma: float = 1e-5,
    sigma0: float | None = None,
    sigma_decay: float = 0.5,
    tol: float = 1e-6,
    max_iter: int = 5000,
    step: float | None = None,
    step_decay: float = 0.0,
    inner_max: int = 500,
    inner_rtol: float | None = None,
    batch_size: int | None = None,
    inner_steps: int | None = None,
    outer_step: str = "nonmonotone_bb",
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
        :math:`\sigma_k = \max(\sigma, \sigma_0 r^k)`. ``sigma0=None``: ``sigma`` (constant) for the default loop,
        1 otherwise (a large early sigma only helps the separate inner solves of ``outer_step="secant"``).
    tol
        Stop when :math:`\sigma_k = \sigma`, the x gradient mapping is at most ``tol`` and the inner residuals are
        at most ``tol``: default loop, the gradient mappings :math:`r_z` of z and
        :math:`r_d = \|G_y - G_z\|/\sigma` of :math:`d = (y - z)/\sigma` (they bound the error of the x-direction,
        :math:`O(r_z/\mu)` and :math:`O(r_d/\mu)`); other modes, the gradient mappings of y and z divided by
        :math:`\sigma`.
    max_iter
        Outer iterations.
    step, step_decay
        Outer step; ``None`` estimates :math:`1/L` by secants. With ``step`` and ``step_decay > 0`` the step is
        ``step / (k+1)**step_decay`` (stochastic runs).
    inner_max, inner_rtol
        Double loop: cap on inner steps per outer step, and the inner tolerance: default loop
        :math:`\max(r_z, r_d) \le` ``inner_rtol`` times the smallest x gradient mapping so far (``None``: 0.3);
        ``outer_step="secant"``: ``inner_rtol * sigma * residual`` (``None``: 0.1).
    batch_size
        Minibatch size of the stochastic single loop (finite-sum problems); ``None`` is deterministic.
    inner_steps
        Fixed number of plain inner steps per outer step (``1`` gives the single loop); ``None``: adaptive.
        Deterministic and uncoupled, both copies then take the common step :math:`1/(L_f + \sigma L_F)` and the
        x-direction reuses the gradients of the last inner step (a Jacobi update of :math:`(x, y, z)`, three oracle
        calls per inner step): with a common step, :math:`(y - z)/\sigma` is a gradient iteration on the implicit
        linear system, so the inner errors are not amplified by :math:`1/\sigma`.
    outer_step
        ``"nonmonotone_bb"`` (default; deterministic, adaptive inner solves: the safeguarded loop above),
        ``"secant"`` (the previous default, also used by stochastic, fixed-inner-step and fixed-``step`` runs when
        ``"nonmonotone_bb"`` is asked) or ``"bb"``: plain Barzilai–Borwein long steps, no safeguard (for smooth
        strongly convex hyper-objectives, e.g. ``sigma0=sigma``, ``inner_steps=2`` on the benchopt quadratic).
        Ignored when ``step`` is given.
    backend
        ``"numpy"``, or ``"jax"`` (``"auto"`` picks JAX when the levels are JAX-traceable, the JAX backend takes
        the problem and the options select the default deterministic loop; NumPy otherwise): the same default loop
        (:mod:`optkit.solvers.bilevel._penalty_jax`; same steps, decisions, stopping tests and oracle counts,
        iterates equal up to rounding) with the watchdog phase's BB steps compiled in segments: the steps up to the
        next checkpoint (or the iteration budget, a change of :math:`\sigma`, the stopping test, a non-finite step)
        run as one compiled ``lax.while_loop``, then the checkpoint is the shared Python code; the checkpoints' and
        the line-search phase's inner solves are one compiled call each. Consequently, during the watchdog phase
        ``Result.history`` has one row per segment (up to 10 iterations; its ``nit`` column says which) and
        ``callback`` is called once per segment, so a callback (and ``time_limit``) can stop the run only at a
        segment's end; the NumPy backend records and calls back after every iteration. It needs JAX-traceable levels, X = R^n or a box,
        Y = R^m and no coupled constraints (``ValueError`` with the reason otherwise), and runs the default
        deterministic loop only: ``batch_size``, ``inner_steps``, ``step`` and ``outer_step`` other than
        ``"nonmonotone_bb"`` raise ``ValueError`` with ``backend="jax"``.
    time_limit, callback, progress, seed
        See :func:`optkit.solve`. Stochastic runs without ``seed`` use the fixed seed 0 and say so in ``info``.

    Returns
    -------
    Result
        ``x = (x, y)``; ``info`` has ``lower_gap``, ``constraint_violation``, ``upper_objective``,
        ``hypergradient_norm`` (of :math:`\nabla\psi_\sigma`), ``sigma`` and ``z``; the default loop adds
        ``backtracks``, ``rollbacks`` (watchdog failures) and ``final_mode`` (``"fast"`` or ``"line search"``).

    Examples
    --------
    >>> import optkit
    >>> from optkit.problems.library.bilevel_toys import t1
    >>> result = optkit.solve(t1().problem, "penalty")
    >>> bool(abs(result.x[0][0] - 0.5) < 1e-4)
    True
    """
    chosen = resolve_backend(backend, penalty.solver_info)
    reason = _accepts(problem)
    if reason is not None:
        raise ValueError(reason)
    sigma = check_positive("sigma", sigma)
    default_loop = outer_step == "nonmonotone_bb" and inner_steps is None and step is None and not (
        batch_size is not None and problem.is_stochastic)
    chosen = auto_backend(backend, chosen, problem, "penalty", options_ok=default_loop and batch_size is None)
    if sigma0 is None:
        sigma0 = sigma if default_loop else 1.0
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
    if inner_rtol is None:
        inner_rtol = 0.3 if default_loop else 0.1
    inner_rtol = check_positive("inner_rtol", inner_rtol)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
        if inner_steps is None:
            inner_steps = 1
    if inner_steps is not None:
        inner_steps = check_positive_int("inner_steps", inner_steps)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    if outer_step not in ("nonmonotone_bb", "secant", "bb"):
        raise ValueError(f"outer_step must be 'nonmonotone_bb', 'secant' or 'bb', got {outer_step!r}")

    def sigma_of(k: int) -> float:
        return schedule(sigma0, sigma, k, kind="geometric", rate=sigma_decay)

    start_copies = None
    if chosen == "jax":
        reason = jax_support(problem, "penalty")
        if reason is not None:
            raise ValueError(reason)
        if not default_loop or batch_size is not None:
            raise ValueError(
                "penalty with backend='jax' runs the default deterministic loop only (outer_step='nonmonotone_bb' "
                f"with step=None, inner_steps=None, batch_size=None); got outer_step={outer_step!r}, step={step!r}, "
                f"inner_steps={inner_steps!r}, batch_size={batch_size!r}: use backend='numpy' for the stochastic, "
                "fixed-step and secant variants")
        from optkit.solvers.bilevel._penalty_jax import start_copies
    if default_loop:
        return _run_deterministic(problem, sigma_of=sigma_of, sigma_final=sigma, tol=tol, max_iter=max_iter,
                                  inner_max=inner_max, inner_rtol=inner_rtol, time_limit=time_limit,
                                  callback=callback, progress=progress,
                                  info={"variant": "double loop", "outer_step": "nonmonotone_bb"},
                                  start_copies=start_copies, backend=chosen)
    if outer_step == "nonmonotone_bb":
        outer_step = "secant"
    variant = "double loop" if inner_steps is None else ("single loop" if inner_steps == 1 else "fixed inner steps")
    return run_value_penalty(
        problem, "penalty", sigma_of=sigma_of, sigma_final=sigma, tol=tol, max_iter=max_iter, step=step, step_decay=step_decay,
        inner_steps=inner_steps, inner_max=inner_max, inner_rtol=inner_rtol, batch_size=batch_size,
        time_limit=time_limit, callback=callback, progress=progress, seed=seed,
        extra_info={"variant": variant, "outer_step": outer_step if step is None else "fixed"},
        outer_rule=outer_step, shared_inner=True,
    )


# ------------------------------------------------------------------------------- deterministic default loop
# nonmonotone line search constants (as in aid): memory M, sufficient-decrease gamma, backtracking cap, BB clipping
_MIN_INNER = 0
_REFINE = 0.3
_FAST_STEPS = 2
_WATCHDOG = 10
_CHECK_MEMORY = 3
_CHECK_RTOL = 10.0
_GROWTH = 4.0
_NM_MEMORY = 10
_NM_GAMMA = 1e-4
_NM_MAX_BACKTRACKS = 30
_BB_MIN, _BB_MAX = 1e-10, 1e10


def _norm(v: np.ndarray) -> float:
    """Euclidean norm of a vector (as ``np.linalg.norm``: the square root of the dot product, less call overhead)."""
    return math.sqrt(float(v @ v))


def _identity(v: np.ndarray) -> np.ndarray:
    return v


def _bb_next(s: np.ndarray, sd: float, alpha: float, g_new: np.ndarray,
             projected: np.ndarray | None = None) -> float:
    r"""The BB1 step :math:`\|s\|^2/\langle s, d\rangle` (the previous one when :math:`\langle s, d\rangle \le 0`),
    clipped to [1e-10, 1e10] and so that the next move :math:`\alpha\|g\|` is at most ``_GROWTH`` times the last
    one: BB steps from poorly sampled curvature can otherwise leap across basins of a nonconvex hyper-objective.

    On a constrained X the move is measured by ``projected``, the gradient mapping
    :math:`(x - P_X(x - \alpha g))/\alpha` at the new point: with :math:`\|g\|` (which counts the components
    held at active bounds) the cap shrank the step geometrically to the 1e-10 floor and the run stalled (a box
    active at the solution of T2)."""
    ss = float(s @ s)
    bb = ss / sd if sd > 0 and math.isfinite(sd) else alpha
    norm = _norm(g_new if projected is None else projected)
    if norm > 0 and ss > 0:
        bb = min(bb, _GROWTH * math.sqrt(ss) / norm)
    return min(max(bb, _BB_MIN), _BB_MAX)


def _copies_step() -> Any:
    """The Numba kernel of :class:`_Copies`, imported on first use (``import optkit`` compiles nothing)."""
    global _COPIES_STEP
    if _COPIES_STEP is None:
        from optkit.kernels.numba_bilevel import copies_step

        _COPIES_STEP = copies_step
    return _COPIES_STEP


_COPIES_STEP: Any = None


class _Copies:
    r"""The two lower copies :math:`y` (of :math:`h_\sigma = \sigma F + f`) and :math:`z` (of :math:`f`), advanced
    by one common accelerated projected-gradient iteration (same step, same momentum, same restarts).

    With a common step :math:`\beta` and momentum, :math:`d = (y - z)/\sigma` follows the same accelerated
    iteration on :math:`(\nabla^2_{yy} f + \sigma\nabla^2_{yy}F)\, d = -\nabla_y F` (exactly so for quadratic
    levels without projections): inner errors reach the x-direction through :math:`d`, not amplified by
    :math:`1/\sigma`. The step is :math:`1/(L_f + \sigma L_F)` with :math:`L_f, L_F` from curvature probes, raised
    whenever a secant :math:`\|\nabla\phi(v') - \nabla\phi(v)\|/\|v' - v\|` between consecutive evaluation points
    of either copy shows more curvature (momentum restarted then): no function values are needed.
    """

    #: run the unprojected iteration as one Numba call (:func:`optkit.kernels.numba_bilevel.copies_step`); the
    #: NumPy loop below is the reference, kept for projected copies and for the tests
    fused = True

    def __init__(self, oracles: Oracles, feasible: LowerFeasibleSet, y: np.ndarray, lipschitz_f: float,
                 lipschitz_F: float) -> None:
        self.oracles, self.feasible = oracles, feasible
        self.y, self.z = y.copy(), y.copy()  # last gradient-step points
        self.vy, self.vz = y.copy(), y.copy()  # evaluation (extrapolated) points
        self.t = 1.0
        self.lipschitz_f, self.lipschitz_F = lipschitz_f, lipschitz_F
        self.r_z = self.r_d = self.r_y = math.inf
        # (x, vy, vz, gradients) of the last evaluation: a solve at the same x from the same points (the watchdog
        # check and the line search's refinement re-enter where the previous solve returned) reuses its gradients.
        # Keyed by identity: these arrays are never written into, and a projection or restore makes new ones.
        self._last: tuple | None = None
        self._work = np.empty((4, y.shape[0]))

    @classmethod
    def start(cls, oracles: Oracles, feasible: LowerFeasibleSet, x: np.ndarray, y0: np.ndarray) -> _Copies:
        """Probe the curvature constants :math:`L_f, L_F` at ``(x, y0)`` (:func:`probe_lipschitz`, 9 gradients of
        each level) and start both copies at ``y0``."""
        problem = oracles.problem
        lipschitz_f = probe_lipschitz(lambda v: problem.lower.grad_y(x, v), y0)
        lipschitz_F = probe_lipschitz(lambda v: problem.upper.grad_y(x, v), y0)
        oracles.counts["lower_grad"] += 9
        oracles.counts["upper_grad"] += 9
        return cls(oracles, feasible, y0, lipschitz_f, lipschitz_F)

    def values(self, x: np.ndarray) -> tuple[float, float, float]:
        """The three function values of the merit: :math:`F(x, y), f(x, y), f(x, z)` at the copies."""
        oracles = self.oracles
        return oracles.upper_value(x, self.y), oracles.lower_value(x, self.y), oracles.lower_value(x, self.z)

    def finite(self) -> bool:
        """Whether both copies are finite."""
        return finite(self.y, self.z)

    def solve(self, x: np.ndarray, sigma: float, target: float, max_steps: int, min_steps: int = 0,
              values: bool = False) -> dict[str, np.ndarray]:
        """Iterate at fixed ``(x, sigma)`` until :math:`\\max(r_z, r_d) \\le` ``target`` (gradient mappings of z and
        of d, see :func:`penalty`) or ``max_steps``; returns the gradients at the final evaluation points.
        (``values``: that :meth:`values` follows; used by the JAX copies to compute them in the same call.)"""
        oracles = self.oracles
        upper_grad, counts, lower_pair = oracles.upper_grad, oracles.counts, oracles.problem.lower.grad_pair
        upper, lower = oracles.problem.upper, oracles.problem.lower
        # only the y-blocks of the gradients enter the inner steps; with the grad_y / grad_x shortcuts of both
        # levels the x-blocks are computed at the returned point alone (the two halves of each gradient there,
        # counted once)
        split = upper.has_split_grad and lower.has_split_grad
        upper_grad_y, upper_grad_x, lower_grad_x = upper.grad_y, upper.grad_x, lower.grad_x
        lower_grad_y_pair = lower.grad_y_pair  # falls back to two grad_y calls

        def completed(grads: tuple) -> dict[str, np.ndarray]:
            Fx, Fy, fx_y, fy_y, fx_z, fy_z = grads
            if Fx is None:
                Fx, fx_y, fx_z = upper_grad_x(x, vy), lower_grad_x(x, vy), lower_grad_x(x, vz)
                cached = self._last
                if cached is not None and cached[1] is vy and cached[2] is vz:
                    self._last = cached[:3] + ((Fx, Fy, fx_y, fy_y, fx_z, fy_z),)
            return {"Fx": Fx, "Fy": Fy, "fx_y": fx_y, "fy_y": fy_y, "fx_z": fx_z, "fy_z": fy_z}

        if self.feasible.identity:  # Y = R^m, no coupled constraints: the projection is the identity
            project = None
        else:
            def project(v: np.ndarray) -> np.ndarray:
                return self.feasible.project(x, v)

            self.vy, self.vz = project(self.vy), project(self.vz)
        sqrt, isfinite = math.sqrt, math.isfinite
        previous = None
        fused = project is None and self.fused
        if fused:
            copies_step = _copies_step()
            work = self._work  # previous evaluation points and gradients, read and rewritten by the kernel
        for steps in range(max_steps + 1):
            vy, vz = self.vy, self.vz
            last = self._last
            if last is not None and last[0] is x and last[1] is vy and last[2] is vz:
                Fx, Fy, fx_y, fy_y, fx_z, fy_z = last[3]
            else:
                counts["lower_grad"] += 2
                if split:
                    counts["upper_grad"] += 1
                    Fx = fx_y = fx_z = None
                    Fy = upper_grad_y(x, vy)
                    fy_y, fy_z = lower_grad_y_pair(x, vy, vz)  # two lower y-blocks (counted above)
                else:
                    Fx, Fy = upper_grad(x, vy)
                    # both lower copies in one call when the problem gives FiniteSum(grad_pair=...) (one product
                    # with a two-column matrix); counted as the two lower gradients it replaces
                    (fx_y, fy_y), (fx_z, fy_z) = lower_pair(x, vy, vz)
                self._last = (x, vy, vz, (Fx, Fy, fx_y, fy_y, fx_z, fy_z))
            if fused:  # the same iteration as below, in one Numba call (Y = R^m)
                (points, self.lipschitz_f, self.lipschitz_F, raised, self.r_y, self.r_z, self.r_d,
                 t_new) = copies_step(vy, vz, Fy, fy_y, fy_z, self.y, self.z, work, steps > 0, sigma,
                                      self.lipschitz_f, self.lipschitz_F, self.t)
                if raised:  # as _update_curvature: momentum restarted from the last gradient-step points
                    self.t = 1.0
                    self.vy, self.vz = self.y.copy(), self.z.copy()
                if not isfinite(self.r_y + self.r_z):
                    return completed((Fx, Fy, fx_y, fy_y, fx_z, fy_z))
                if (max(self.r_z, self.r_d) <= target and steps >= min_steps) or steps == max_steps:
                    self.y, self.z, self.t = vy, vz, 1.0
                    return completed((Fx, Fy, fx_y, fy_y, fx_z, fy_z))
                # rows of one new array, never written into (the gradient cache above keys on identity)
                self.y, self.z, self.vy, self.vz = points
                self.t = t_new
                continue
            gy, gz = sigma * Fy + fy_y, fy_z
            if previous is not None:
                self._update_curvature(sigma, previous, vy, vz, gy, gz)
            beta = 1.0 / (self.lipschitz_f + sigma * self.lipschitz_F)
            if project is None:
                step_y, step_z = beta * gy, beta * gz
                y_new, z_new = vy - step_y, vz - step_z
            else:
                y_new, z_new = project(vy - beta * gy), project(vz - beta * gz)
                step_y, step_z = vy - y_new, vz - z_new
            step_d = step_y - step_z
            self.r_y = sqrt(float(step_y @ step_y)) / beta
            self.r_z = sqrt(float(step_z @ step_z)) / beta
            self.r_d = sqrt(float(step_d @ step_d)) / (beta * sigma)
            if not isfinite(self.r_y + self.r_z):  # non-finite gradients: the caller reports NUMERICAL_ERROR
                return completed((Fx, Fy, fx_y, fy_y, fx_z, fy_z))
            if (max(self.r_z, self.r_d) <= target and steps >= min_steps) or steps == max_steps:
                self.y, self.z, self.t = vy, vz, 1.0  # the point whose gradients are returned; momentum reset
                return completed((Fx, Fy, fx_y, fy_y, fx_z, fy_z))
            t_new = 0.5 * (1.0 + sqrt(1.0 + 4.0 * self.t**2))
            # O'Donoghue & Candes (2015) gradient restart, on the stacked (y, z) so that both copies restart together
            moved_y, moved_z = y_new - self.y, z_new - self.z
            if float(step_y @ moved_y) + float(step_z @ moved_z) > 0:
                self.t, t_new = 1.0, 1.0
            momentum = (self.t - 1.0) / t_new
            previous = (vy, vz, gy, gz)
            if momentum == 0.0:
                self.vy, self.vz = y_new, z_new
            else:
                self.vy, self.vz = y_new + momentum * moved_y, z_new + momentum * moved_z
            self.y, self.z, self.t = y_new, z_new, t_new
        return {"Fx": Fx, "Fy": Fy, "fx_y": fx_y, "fy_y": fy_y, "fx_z": fx_z,  # pragma: no cover - returned above
                "fy_z": fy_z}

    def save(self) -> tuple:
        return (self.y.copy(), self.z.copy(), self.vy.copy(), self.vz.copy(), self.t, self.lipschitz_f,
                self.lipschitz_F, self.r_z, self.r_d, self.r_y)

    def restore(self, saved: tuple) -> None:
        y, z, vy, vz, self.t, self.lipschitz_f, self.lipschitz_F, self.r_z, self.r_d, self.r_y = saved
        self._last = None
        self.y, self.z, self.vy, self.vz = y.copy(), z.copy(), vy.copy(), vz.copy()

    def _update_curvature(self, sigma: float, previous: tuple, vy: np.ndarray, vz: np.ndarray, gy: np.ndarray,
                          gz: np.ndarray) -> None:
        vy0, vz0, gy0, gz0 = previous
        raised = False
        sqrt, isfinite = math.sqrt, math.isfinite
        step = vz - vz0
        dz = sqrt(float(step @ step))
        if dz > 0:
            change = gz - gz0
            est = sqrt(float(change @ change)) / dz
            if isfinite(est) and est > self.lipschitz_f:
                self.lipschitz_f, raised = 1.1 * est, True
        step = vy - vy0
        dy = sqrt(float(step @ step))
        if dy > 0:
            change = gy - gy0
            est = sqrt(float(change @ change)) / dy
            if isfinite(est) and est > self.lipschitz_f + sigma * self.lipschitz_F:
                self.lipschitz_F, raised = 1.1 * (est - self.lipschitz_f) / sigma, True
        if raised:  # restart the momentum from the last gradient-step points
            self.t = 1.0
            self.vy, self.vz = self.y.copy(), self.z.copy()


def _run_deterministic(problem: BilevelProblem, *, sigma_of: Any, sigma_final: float, tol: float, max_iter: int,
                       inner_max: int, inner_rtol: float, time_limit: float | None, callback: Any, progress: bool,
                       info: dict[str, Any], start_copies: Any = None, backend: str = "numpy") -> Result:
    r"""The default deterministic double loop: :class:`_Copies` inner solves, Barzilai–Borwein steps on x.

    ``start_copies(oracles, feasible, x, y0)`` builds the copies (:meth:`_Copies.start`, the default, or
    :func:`optkit.solvers.bilevel._penalty_jax.start_copies` for ``backend="jax"``): this loop only calls their
    ``solve``, ``values``, ``finite``, ``save`` and ``restore`` and reads ``y``, ``z``, ``r_z``, ``r_d`` and the
    curvature constants, so both backends share it. Copies with a ``fast_segment`` method (the JAX ones) run
    several watchdog steps per call (up to the next checkpoint, the budget, a change of :math:`\sigma`, the
    stopping test or a non-finite step, with the arithmetic and decisions of ``one_fast_step``): the step
    function then reports several iterations at once.

    The penalty function is evaluated at the inner iterates as

    .. math::

        \hat\psi_\sigma(x) = F(x, y) + \frac{f(x, y) - f(x, z)}{\sigma}

    (three function values). With :math:`e_y, e_z` the errors of the copies and :math:`H` the lower Hessian,
    :math:`\hat\psi_\sigma - \psi_\sigma \approx \tfrac12 \sigma^{-1}(e_y - e_z)^\top H (e_y + e_z)`: the
    product of the error of :math:`d` and that of :math:`z`, second order in the inner residuals.

    *Watchdog phase* (Chamberlain, Powell, Lemaréchal & Pedersen 1982): plain BB1 steps, each after
    ``_FAST_STEPS`` = 2 common inner steps and without function values; every ``_WATCHDOG`` = 10 steps the copies are
    refined to :math:`\max(r_z, r_d) \le 10\,` ``inner_rtol`` times the smallest x residual (usually already
    met: no extra steps) and
    :math:`\hat\psi_\sigma` must satisfy :math:`\hat\psi_\sigma(x_{new}) \le \max(\text{last 3 checkpoint
    values}) + \gamma\min(0, \langle g_c, x_{new} - x_c\rangle)` (:math:`\gamma = 10^{-4}`); otherwise the run
    returns to the last checkpoint and continues in the *line-search phase*: each trial
    :math:`x^+ = P_X(x - \alpha g)` gets adaptive inner solves to ``inner_rtol`` times the smallest x residual and
    is accepted by the non-monotone Armijo test of Grippo, Lampariello & Lucidi (1986, eq. (6)), memory 10,
    :math:`\hat\psi_\sigma(x^+) \le \max_j \hat\psi_\sigma(x_{k-j}) + \gamma\langle g, x^+ - x\rangle`; a
    rejected trial first refines the copies (to 0.3 times that tolerance), then halves :math:`\alpha`. In both
    phases the BB1 step :math:`\|s\|^2/\langle s, d\rangle` is capped so that the next move is at most 4 times the
    last (:func:`_bb_next`). A change of :math:`\sigma` re-evaluates the current point and restarts the memories.
    """
    oracles = Oracles(problem)
    feasible = LowerFeasibleSet(problem)
    x = problem.x_set.project(problem.x0)
    # X = R^n: the identity (its arguments are always new arrays, x - alpha g)
    project_x = _identity if type(problem.x_set) is Reals else problem.x_set.project
    y0 = feasible.project(x, problem.y0)
    copies = (start_copies or _Copies.start)(oracles, feasible, x, y0)
    state: dict[str, Any] = {"x": x, "k": 0, "residual": math.inf, "smallest": math.inf, "backtracks": 0, "rollbacks": 0,
                             "mode": "fast" if _WATCHDOG > 0 else "line search", "sigma": None}

    def evaluate(xk: np.ndarray, sigma: float, rtol: float = inner_rtol,
                 min_steps: int = 0) -> tuple[np.ndarray, float, float, tuple[float, float, float]]:
        target = max(1e-14, rtol * state["smallest"])
        grads = copies.solve(xk, sigma, target, inner_max, min_steps, values=True)
        direction = direction_of(xk, sigma, grads)
        parts = copies.values(xk)
        return direction, merit(parts, sigma), max(copies.r_z, copies.r_d), parts

    def direction_of(xk: np.ndarray, sigma: float, grads: dict[str, np.ndarray]) -> np.ndarray:
        direction = grads["Fx"] + (grads["fx_y"] - grads["fx_z"]) / sigma
        if feasible.coupled:
            nu_y, mu_y = feasible.multipliers(xk, copies.y, sigma * grads["Fy"] + grads["fy_y"])
            nu_z, mu_z = feasible.multipliers(xk, copies.z, grads["fy_z"])
            direction = direction + feasible.x_gradient(nu_y - nu_z, mu_y - mu_z) / sigma
        return direction

    def projected(xk: np.ndarray, g: np.ndarray, alpha: float) -> np.ndarray | None:
        # the gradient mapping that _bb_next's growth cap measures moves by (None on R^n: the gradient itself)
        if project_x is _identity:
            return None
        return (xk - project_x(xk - alpha * g)) / alpha

    def merit(parts: tuple[float, float, float], sigma: float) -> float:
        return parts[0] + (parts[1] - parts[2]) / sigma

    def failure() -> Step:
        return Step(1, {"hypergradient_norm": math.nan, "inner_residual": math.nan}, status=Status.NUMERICAL_ERROR,
                    message="penalty: a non-finite iterate appeared; the last finite iterate is returned. Try a "
                    "larger final sigma or outer_step='secant'.")

    def checkpoint(value: float) -> None:
        state["checkpoint"] = {"x": state["x"].copy(), "g": state["g"].copy(), "alpha": state["alpha"],
                               "value": value, "copies": copies.save(), "inner": state["inner"], "parts": state["parts"],
                               "smallest": state["smallest"]}
        state["since"] = 0
        if state.get("checkpoint_sigma") != state["sigma"]:
            state["checkpoint_values"], state["checkpoint_sigma"] = [], state["sigma"]
        state["checkpoint_values"] = (state["checkpoint_values"] + [value])[-_CHECK_MEMORY:]

    def one_fast_step(x: np.ndarray, g: np.ndarray, sigma: float) -> tuple:
        # one BB step of the watchdog phase: x_new = P_X(x - alpha g), _FAST_STEPS common inner steps (no function
        # values), the x-direction, the next BB step and the residual; (steps, bad, x, g, alpha, residual, inner,
        # smallest) as the compiled segments of the JAX backend return them
        alpha = state["alpha"]
        x_new = project_x(x - alpha * g)
        grads = copies.solve(x_new, sigma, 0.0, _FAST_STEPS, _FAST_STEPS)
        g_new = direction_of(x_new, sigma, grads)
        inner = max(copies.r_z, copies.r_d)
        if not (finite(x_new, g_new) and copies.finite()):
            return 0, True, x, g, alpha, state["residual"], state["inner"], state["smallest"]
        s, d = x_new - x, g_new - g
        sd = float(s @ d)
        next_alpha = _bb_next(s, sd, alpha, g_new, projected(x_new, g_new, alpha))
        residual = _norm(x_new - project_x(x_new - next_alpha * g_new)) / next_alpha
        return 1, False, x_new, g_new, next_alpha, residual, inner, min(state["smallest"], residual)

    def fast_step(x: np.ndarray, g: np.ndarray, sigma: float, before: float, budget: int) -> Step:
        # watchdog phase (Chamberlain, Powell, Lemarechal & Pedersen 1982): plain BB steps with _FAST_STEPS inner
        # steps each and no function values; every _WATCHDOG steps the copies are refined and psi_sigma must have
        # decreased since the last checkpoint, otherwise the run returns there and continues with the line search.
        # NumPy: one step per call. JAX: the steps up to the next checkpoint, the budget, a change of sigma, the
        # stopping test or a non-finite step, as one compiled call (copies.fast_segment)
        segment = getattr(copies, "fast_segment", None)
        if segment is None:
            steps, bad, x_new, g_new, next_alpha, residual, inner, smallest = one_fast_step(x, g, sigma)
        else:
            cap = min(budget, _WATCHDOG - state["since"])
            limit = 1
            while limit < cap and sigma_of(state["k"] + limit) == sigma:
                limit += 1
            steps, bad, x_new, g_new, next_alpha, residual, inner, smallest = segment(
                x, g, sigma, state["alpha"], state["smallest"], limit, _FAST_STEPS, tol, at_final(sigma),
                _WATCHDOG - state["since"], _CHECK_RTOL * inner_rtol, inner_max)
        if bad:  # the failed step counts as one iteration, as the NumPy backend's
            return rollback(sigma, before, steps + 1)
        state.update(x=x_new, g=g_new, alpha=next_alpha, residual=residual, inner=inner, smallest=smallest)
        state["k"] += steps
        state["since"] += steps
        if state["since"] >= _WATCHDOG:
            g_new, value, inner, parts = evaluate(x_new, sigma, _CHECK_RTOL * inner_rtol)
            ckpt = state["checkpoint"]
            reference = max(state["checkpoint_values"])
            slack = 1e-12 * (1.0 + abs(reference)) + 1e-14 * (abs(parts[1]) + abs(parts[2])) / sigma
            decrease = min(0.0, _NM_GAMMA * float(ckpt["g"] @ (x_new - ckpt["x"])))
            if not (finite(g_new) and math.isfinite(value) and value <= reference + decrease + slack):
                # state["k"] advanced by the steps already; the rollback adds one more (as it always has)
                return rollback(sigma, before, steps, advance=1)
            residual = _norm(x_new - project_x(x_new - next_alpha * g_new)) / next_alpha
            state.update(g=g_new, residual=residual, inner=inner, parts=parts, history=[value])
            checkpoint(value)
        return Step(steps, {"hypergradient_norm": residual, "inner_residual": inner, "sigma": sigma},
                    counts={"oracle_calls": oracles.oracle_calls - before})

    def rollback(sigma: float, before: float, iterations: int = 1, advance: int | None = None) -> Step:
        ckpt = state["checkpoint"]
        copies.restore(ckpt["copies"])
        state.update(x=ckpt["x"], g=ckpt["g"], alpha=ckpt["alpha"], parts=ckpt["parts"], history=[ckpt["value"]],
                     inner=ckpt["inner"],
                     smallest=ckpt["smallest"], mode="line search")
        state["rollbacks"] += 1
        residual = _norm(state["x"] - project_x(state["x"] - state["alpha"] * state["g"]))
        residual /= state["alpha"]
        state["residual"] = residual
        state["k"] += iterations if advance is None else advance
        return Step(iterations, {"hypergradient_norm": residual, "inner_residual": state["inner"], "sigma": sigma},
                    counts={"oracle_calls": oracles.oracle_calls - before})

    def step_fn(budget: int) -> Step:
        before = oracles.oracle_calls
        sigma = sigma_of(state["k"])
        if "g" not in state or sigma != state["sigma"]:
            # direction and merit at x0, or again at the current x when sigma changed (psi_sigma is another
            # function: the memory of the line search restarts)
            for _ in range(2 if "alpha" not in state else 1):
                # at x0 the inner accuracy is relative to ||G_x||: a first pass measures it
                g, value, inner, parts = evaluate(state["x"], sigma)
                if not (finite(g) and math.isfinite(value)):
                    return failure()
                if "alpha" not in state:
                    state["residual"] = state["smallest"] = min(state["smallest"], float(np.linalg.norm(g)))
            state.update(g=g, inner=inner, parts=parts, history=[value], sigma=sigma)
            if "alpha" not in state:
                norm = float(np.linalg.norm(g))
                state["alpha"] = min(max(0.05 * max(1.0, float(np.linalg.norm(state["x"]))) / norm if norm > 0
                                         else 1.0, _BB_MIN), _BB_MAX)
            if state["mode"] == "fast":
                checkpoint(value)
        x, g = state["x"], state["g"]
        if state["mode"] == "fast":
            return fast_step(x, g, sigma, before, budget)
        reference = max(state["history"])
        alpha = state["alpha"]
        for attempt in range(_NM_MAX_BACKTRACKS + 1):
            x_new = project_x(x - alpha * g)
            for rtol, min_steps in ((inner_rtol, _MIN_INNER), (_REFINE * inner_rtol, 0)):
                g_new, value, inner, parts = evaluate(x_new, sigma, rtol, min_steps)
                ok = (finite(x_new, g_new) and copies.finite()) and math.isfinite(value)
                if ok:
                    # rounding in (f(y) - f(z))/sigma and the inner errors: a relative slack
                    slack = 1e-12 * (1.0 + abs(reference)) + 1e-14 * (abs(parts[1]) + abs(parts[2])) / sigma
                    ok = value <= reference + _NM_GAMMA * float(g @ (x_new - x)) + slack
                if ok or not (finite(x_new, g_new) and copies.finite()):
                    break
            if ok or attempt == _NM_MAX_BACKTRACKS:
                break
            alpha *= 0.5  # the copies keep the trial's inner progress as the next warm start
            state["backtracks"] += 1
        if not ((finite(x_new, g_new) and copies.finite()) and math.isfinite(value)):
            return failure()
        s, d = x_new - x, g_new - g
        sd = float(s @ d)
        next_alpha = _bb_next(s, sd, alpha, g_new, projected(x_new, g_new, alpha))
        residual = _norm(x_new - project_x(x_new - next_alpha * g_new)) / next_alpha
        state.update(x=x_new, g=g_new, alpha=next_alpha, residual=residual, inner=inner, parts=parts)
        state["smallest"] = min(state["smallest"], residual)
        state["history"] = (state["history"] + [value])[-_NM_MEMORY:]
        state["k"] += 1
        return Step(1, {"hypergradient_norm": residual, "inner_residual": inner, "sigma": sigma},
                    counts={"oracle_calls": oracles.oracle_calls - before})

    def at_final(sigma: float) -> bool:
        return sigma <= sigma_final * (1 + 1e-12)

    def converged(r: dict[str, float]) -> bool:
        return at_final(r.get("sigma", math.inf)) and r["hypergradient_norm"] <= tol and r["inner_residual"] <= tol

    outcome = drive(
        step_fn, converged=converged, max_iter=max_iter, method="penalty", time_limit=time_limit, callback=callback,
        progress=progress, current=lambda: (state["x"].copy(), copies.y.copy()),
        stopping_rule=f"sigma = {sigma_final:g}, x gradient mapping <= {tol:g} and inner residuals <= {tol:g}",
    )
    x_final, y_final = state["x"], copies.y
    if not finite(x_final, y_final):
        x_final, y_final = problem.x0, problem.y0
    elif feasible.coupled:
        y_final = feasible.project(x_final, y_final)
    info = dict(info, sigma=state["sigma"], z=copies.z.copy(), backtracks=state["backtracks"],
                rollbacks=state["rollbacks"], final_mode=state["mode"],
                lower_lipschitz=copies.lipschitz_f, upper_lipschitz=copies.lipschitz_F)
    return finish(problem, "penalty", x_final, y_final, outcome, oracles,
                  hypergradient_norm=outcome.residuals.get("hypergradient_norm"), info=info, backend=backend)
