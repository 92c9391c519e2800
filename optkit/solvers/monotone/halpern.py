r"""Halpern iteration and its variance-reduced versions for :math:`0 \in F(u) + G(u)`, :math:`F = \frac1n\sum_i F_i`.

Registered methods:

* ``"halpern"`` -- Halpern's iteration on the forward-backward operator :math:`T = J_{\eta G}(I - \eta F)`,
  :math:`u_{k+1} = \lambda_k u_0 + (1 - \lambda_k) T(u_k)`, :math:`\lambda_k = 1/(k+2)` (a full pass per step).
* ``"vr-halpern"`` -- Algorithm 1 of Cai, Alacaoglu and Diakonikolas (ICLR 2024), the cocoercive case: the same
  iteration with :math:`\lambda_k = 2/(k+4)` and :math:`F(u_k)` replaced by the loopless PAGE-type estimator
  :math:`\tilde F_k` (a full pass with probability :math:`p_k`, otherwise the previous estimate plus a minibatch
  difference of size :math:`b = \lfloor\sqrt n\rfloor` drawn without replacement).
* ``"vr-halpern-inexact"`` -- Algorithm 2 (monotone Lipschitz case): inexact Halpern
  :math:`u_{k+1} = \lambda_k u_0 + (1-\lambda_k)\tilde u_k`, :math:`\lambda_k = 1/(k+2)`, with
  :math:`\tilde u_k \approx J_{\eta(F+G)}(u_k)` computed by :math:`M_k = \lfloor c_M n \log(k+2)\rfloor` steps of
  VR-FoRB (Alacaoglu and Malitsky 2022) on the 1-strongly monotone :math:`\eta F(v) + v - u_k`.

The constants are those of the official code (``zephyr-cai/Finite-Sum-Halpern-Iteration``, ``matrix_game.py``, read
at HEAD 638fc274; the paper's PDF was not reachable from here to check them against the text):
:math:`p_k = 1` for :math:`k \le 1`, :math:`p_k = 4/(k+4)` while :math:`k - 1 \le \sqrt n`, then
:math:`4/(\sqrt n + 5)`; Algorithm 2 uses :math:`\eta = \sqrt n / L`, VR-FoRB :math:`p = 1/n`,
:math:`\alpha = 1 - p`, :math:`\gamma = 5\sqrt{p(1-p)}/(\sqrt n + 1)`, :math:`c_M = 0.05`. Two departures from
that code, both options: the code puts the anchor inside the resolvent,
:math:`u_{k+1} = J_{\eta G}(\lambda_k u_0 + (1-\lambda_k)u_k - \eta\tilde F_k)` (``anchor="inside"``), while the
default here anchors outside as in the Halpern iteration written above (``anchor="outside"``); and the VR-FoRB
snapshot is refreshed to the new inner iterate :math:`v_{j+1}` as in Alacaoglu--Malitsky (the code resets it to
the outer point :math:`u_k`).

Accounting: see :mod:`optkit.solvers.monotone._common` (a difference of components counts two evaluations).

Anchor restarts (``restart=`` a factor :math:`\rho \in (0, 1)`): at every residual check, when the residual has
fallen below :math:`\rho` times its value at the last anchor, the anchor moves to the current point and the
schedule :math:`\lambda_k, p_k` starts again (restarted Halpern, as for sharp problems such as matrix games and
LPs, where restarting makes the rate linear). The checks then drive the iteration, so their full passes are
counted; a restart reuses that pass as its first step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optkit._arrays import as_generator
from optkit.problems.monotone import MonotoneInclusion
from optkit.solvers.loop import check_positive, check_positive_int
from optkit.solvers.monotone._common import (
    Counter, check_common, check_step, example_quadratic, run, start_point,
)
from optkit.solvers.registry import register, resolve_backend
from optkit.solvers.result import Result

__all__ = ["halpern", "vr_halpern", "vr_halpern_inexact"]


def _check_anchor(anchor: Any) -> str:
    if anchor not in ("outside", "inside"):
        raise ValueError(f"anchor must be 'outside' or 'inside', got {anchor!r}")
    return anchor


def _check_restart(restart: Any) -> float | None:
    if restart is None:
        return None
    value = check_positive("restart", restart)
    if not value < 1:
        raise ValueError(f"restart must be a factor in (0, 1) or None, got {restart!r}")
    return value


def _anchored(problem: MonotoneInclusion, anchor: str, u0: np.ndarray, u: np.ndarray, Fu: np.ndarray, lam: float,
              eta: float) -> np.ndarray:
    if anchor == "outside":
        return lam * u0 + (1.0 - lam) * problem.resolvent(u - eta * Fu, eta)
    return problem.resolvent(lam * u0 + (1.0 - lam) * u - eta * Fu, eta)


class _Restarts:
    """Anchor restarts driven by the residual checks (see the module docstring)."""

    def __init__(self, factor: float | None, counter: Counter, n: int) -> None:
        self.factor, self.counter, self.n = factor, counter, n
        self.reference = math.inf
        self.count = 0
        self.info: dict[str, Any] = {"restarts": 0}

    def describe(self, **entries: Any) -> dict[str, Any]:
        """The run's ``Result.info``: ``entries`` plus the restart count (kept current during the run)."""
        self.info.update(entries)
        return self.info

    def check(self, residual: float) -> bool:
        if self.factor is None:
            return False
        self.counter.evals += self.n  # the check's full pass now steers the iteration: count it
        if self.reference == math.inf:
            self.reference = residual
            return False
        if residual <= self.factor * self.reference:
            self.reference = residual
            self.count += 1
            self.info["restarts"] = self.count
            return True
        return False


@register("halpern", MonotoneInclusion, backends=("numpy",), example=example_quadratic)
def halpern(
    problem: MonotoneInclusion,
    *,
    step: float | None = None,
    tol: float = 1e-8,
    max_iter: int = 1_000_000,
    max_epochs: float = 1e5,
    check_every: float = 1.0,
    anchor: str = "outside",
    restart: float | None = 0.2,
    time_limit: float | None = None,
    init: Any = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""Halpern iteration on the forward-backward operator (deterministic; one epoch per iteration).

    .. math::

        u_{k+1} = \lambda_k u_0 + (1 - \lambda_k)\, J_{\eta G}\big(u_k - \eta F(u_k)\big),
        \qquad \lambda_k = \frac1{k+2}.

    For :math:`F` :math:`\tfrac1L`-cocoercive and :math:`\eta \le 2/L`, :math:`T = J_{\eta G}(I - \eta F)` is
    nonexpansive and the residual decays as :math:`O(1/k)` (Halpern 1967; Lieder 2021 for the constant).

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.MonotoneInclusion` (or a min-max problem, which is one).
    step
        :math:`\eta`; default :math:`1/L_F` (``problem.lipschitz``). Refused above :math:`2/L_F`.
    tol
        Stop when the natural residual :math:`\|u - J_G(u - F(u))\|` is at most ``tol``.
    max_iter, max_epochs
        Budgets in iterations and in epochs (``n_components`` component evaluations).
    check_every
        Epochs between residual checks (history records).
    anchor
        ``"outside"`` (above) or ``"inside"``: :math:`u_{k+1} = J_{\eta G}(\lambda_k u_0 + (1-\lambda_k)u_k -
        \eta F(u_k))`.
    restart
        Restart factor :math:`\rho \in (0, 1)` for adaptive anchor restarts (default 0.2), or ``None`` for the
        literal iteration.
    time_limit, init
        Seconds; the starting point (default ``problem.x0``).
    backend, callback, progress, seed
        See :func:`optkit.solve` (deterministic: ``seed`` is unused).

    Returns
    -------
    Result
        ``x`` is ``problem.split(u)`` (``(x, y)`` for min-max problems); ``counts["epochs"]``.

    Examples
    --------
    >>> import optkit
    >>> from optkit.solvers.monotone._common import example_quadratic
    >>> result = optkit.solve(example_quadratic(), "halpern", tol=1e-6)
    >>> bool(result.success)
    True
    """
    tol, max_iter, max_epochs, check_every, time_limit = check_common(tol, max_iter, max_epochs, check_every,
                                                                       time_limit)
    anchor, restart = _check_anchor(anchor), _check_restart(restart)
    chosen = resolve_backend(backend, halpern.solver_info)
    L = problem.lipschitz
    eta = check_step("halpern", "step", step, 1.0 / L, 2.0 / L, "L_F", L)
    n = problem.n_components
    counter = Counter()
    restarts = _Restarts(restart, counter, n)
    s = {"u": start_point(problem, init), "k": 0}
    s["u0"] = s["u"].copy()

    def iterate() -> int:
        u = s["u"]
        lam = 1.0 / (s["k"] + 2)
        s["u"] = _anchored(problem, anchor, s["u0"], u, problem.operator(u), lam, eta)
        s["k"] += 1
        return n

    def on_check(u: np.ndarray, residual: float, Fu: np.ndarray) -> None:
        if restarts.check(residual):
            s["u0"], s["k"] = u.copy(), 0

    return run(problem, "halpern", iterate, lambda: s["u"], counter, tol=tol, max_iter=max_iter,
               max_epochs=max_epochs, check_every=check_every, time_limit=time_limit, callback=callback,
               progress=progress, backend=chosen, info=restarts.describe(step=eta),
               on_check=on_check if restart is not None else None)


def page_probability(k: int, n: int) -> float:
    r"""The full-pass probability :math:`p_k` of Algorithm 1 (official code): 1 for :math:`k \le 1`,
    :math:`4/(k+4)` while :math:`k - 1 \le \sqrt n`, then :math:`4/(\sqrt n + 5)`."""
    if k <= 1:
        return 1.0
    if k - 1 <= math.sqrt(n):
        return 4.0 / (k + 4)
    return 4.0 / (math.sqrt(n) + 5)


class PageEstimator:
    r"""The loopless PAGE-type estimator of Algorithm 1.

    .. math::

        \tilde F_k = \begin{cases} F(u_k) & \text{with probability } p_k,\\
        \tilde F_{k-1} + \frac1b\sum_{i\in S_k}\big(F_i(u_k) - F_i(u_{k-1})\big) & \text{otherwise,}\end{cases}

    :math:`S_k` uniform without replacement, :math:`|S_k| = b`. Conditionally on the past,
    :math:`\mathbb E[\tilde F_k - F(u_k)] = (1 - p_k)(\tilde F_{k-1} - F(u_{k-1}))`: unbiased whenever the previous
    estimate is (a full pass at :math:`k = 0` makes every estimate unbiased).
    """

    def __init__(self, problem: MonotoneInclusion, batch: int, rng: np.random.Generator) -> None:
        self.problem, self.batch, self.rng = problem, batch, rng
        self.value: np.ndarray | None = None

    def full(self, u: np.ndarray, Fu: np.ndarray | None = None) -> int:
        self.value = self.problem.operator(u) if Fu is None else Fu
        return self.problem.n_components

    def update(self, u: np.ndarray, u_prev: np.ndarray, p: float) -> int:
        """Advance the estimate to ``u``; returns the component evaluations spent."""
        if self.value is None or self.rng.random() < p:
            return self.full(u)
        idx = self.rng.choice(self.problem.n_components, self.batch, replace=False)
        diff = self.problem.components(u, idx) - self.problem.components(u_prev, idx)
        self.value = self.value + diff.mean(axis=0)
        return 2 * self.batch


@register("vr-halpern", MonotoneInclusion, backends=("numpy",), stochastic=True, example=example_quadratic)
def vr_halpern(
    problem: MonotoneInclusion,
    *,
    step: float | None = None,
    batch_size: int | None = None,
    tol: float = 1e-8,
    max_iter: int = 10_000_000,
    max_epochs: float = 1e5,
    check_every: float = 1.0,
    anchor: str = "outside",
    restart: float | None = 0.2,
    time_limit: float | None = None,
    init: Any = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""Variance-reduced Halpern iteration, Algorithm 1 of Cai, Alacaoglu and Diakonikolas (ICLR 2024).

    .. math::

        u_{k+1} = \lambda_k u_0 + (1 - \lambda_k)\, J_{\eta G}\big(u_k - \eta \tilde F_k\big),
        \qquad \lambda_k = \frac2{k+4},

    with :math:`\tilde F_k` the PAGE-type estimator (:class:`PageEstimator`, probabilities
    :func:`page_probability`). A full pass costs ``n`` component evaluations, a minibatch step ``2b``.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.MonotoneInclusion` (theory: :math:`F` cocoercive on average).
    step
        :math:`\eta`; default :math:`1/L_F`. Refused above :math:`2/L_F` (the forward-backward stability bound).
    batch_size
        :math:`b`; default :math:`\lfloor\sqrt n\rfloor`.
    tol, max_iter, max_epochs, check_every, anchor, restart, time_limit, init
        As in :func:`halpern`.
    backend, callback, progress, seed
        See :func:`optkit.solve`; ``seed`` drives the coin flips and the minibatches.

    Examples
    --------
    >>> import optkit
    >>> from optkit.solvers.monotone._common import example_quadratic
    >>> result = optkit.solve(example_quadratic(), "vr-halpern", tol=1e-6, seed=0)
    >>> bool(result.success)
    True
    """
    tol, max_iter, max_epochs, check_every, time_limit = check_common(tol, max_iter, max_epochs, check_every,
                                                                       time_limit)
    anchor, restart = _check_anchor(anchor), _check_restart(restart)
    chosen = resolve_backend(backend, vr_halpern.solver_info)
    n = problem.n_components
    b = max(1, int(math.isqrt(n))) if batch_size is None else check_positive_int("batch_size", batch_size)
    if b > n:
        raise ValueError(f"batch_size must be at most n_components = {n}, got {b}")
    L = problem.lipschitz
    eta = check_step("vr-halpern", "step", step, 1.0 / L, 2.0 / L, "L_F", L)
    rng = as_generator(seed)
    counter = Counter()
    restarts = _Restarts(restart, counter, n)
    estimator = PageEstimator(problem, b, rng)
    s: dict[str, Any] = {"u": start_point(problem, init), "k": 0, "fresh": None}
    s["u0"] = s["u"].copy()
    s["prev"] = s["u"].copy()

    def iterate() -> int:
        u, k = s["u"], s["k"]
        if s["fresh"] is not None:
            # A restart hands over the full pass its check computed at u (already counted by the check).
            estimator.full(u, s["fresh"])
            s["fresh"], spent = None, 0
        else:
            spent = estimator.update(u, s["prev"], page_probability(k, n))
        s["prev"] = u
        s["u"] = _anchored(problem, anchor, s["u0"], u, estimator.value, 2.0 / (k + 4), eta)
        s["k"] = k + 1
        return spent

    def on_check(u: np.ndarray, residual: float, Fu: np.ndarray) -> None:
        if restarts.check(residual):
            s["u0"], s["k"], s["fresh"] = u.copy(), 0, Fu

    return run(problem, "vr-halpern", iterate, lambda: s["u"], counter, tol=tol, max_iter=max_iter,
               max_epochs=max_epochs, check_every=check_every, time_limit=time_limit, callback=callback,
               progress=progress, backend=chosen, info=restarts.describe(step=eta, batch_size=b),
               on_check=on_check if restart is not None else None)


def forb_resolvent(problem: MonotoneInclusion, center: np.ndarray, eta: float, gamma: float, steps: int, p: float,
                   rng: np.random.Generator, counter: Counter) -> np.ndarray:
    r"""Approximate :math:`J_{\eta(F+G)}(c)` by ``steps`` iterations of loopless VR-FoRB.

    Alacaoglu and Malitsky (COLT 2022), forward-reflected-backward with variance reduction, on
    :math:`\Phi(v) = \eta F(v) + v - c` (1-strongly monotone), :math:`\Phi_i = \eta F_i + I - c`:

    .. math::

        \bar v_j = \alpha v_j + (1-\alpha) w_j,\quad
        v_{j+1} = J_{\gamma\eta G}\big(\bar v_j - \gamma[\Phi(w_j) + \Phi_{\xi_j}(v_j) - \Phi_{\xi_j}(w_{j-1})]\big),

    :math:`\xi_j` uniform, :math:`w_{j+1} = v_{j+1}` with probability :math:`p` (a full pass) else :math:`w_j`,
    :math:`\alpha = 1 - p`, :math:`v_0 = w_0 = w_{-1} = c`.
    """
    n = problem.n_components
    alpha = 1.0 - p
    v = center.copy()
    w = center.copy()
    w_prev = center.copy()
    Fw = problem.operator(w)
    counter.evals += n
    coins = rng.random(steps) < p
    picks = rng.integers(0, n, size=steps)
    for j in range(steps):
        i = picks[j]
        both = problem.components(v, np.array([i]))[0] - problem.components(w_prev, np.array([i]))[0]
        direction = eta * (Fw + both) + (w - center) + (v - w_prev)
        vbar = alpha * v + (1.0 - alpha) * w
        v_new = problem.resolvent(vbar - gamma * direction, gamma * eta)
        counter.evals += 2
        w_prev = w
        if coins[j]:
            w = v_new.copy()
            Fw = problem.operator(w)
            counter.evals += n
        v = v_new
    return v


@register("vr-halpern-inexact", MonotoneInclusion, backends=("numpy",), stochastic=True,
          example=example_quadratic)
def vr_halpern_inexact(
    problem: MonotoneInclusion,
    *,
    eta: float | None = None,
    inner_step: float | None = None,
    inner_factor: float = 0.05,
    restart: float | None = 0.2,
    tol: float = 1e-8,
    max_iter: int = 1_000_000,
    max_epochs: float = 1e5,
    check_every: float = 1.0,
    time_limit: float | None = None,
    init: Any = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""Inexact variance-reduced Halpern iteration, Algorithm 2 of Cai, Alacaoglu and Diakonikolas (ICLR 2024).

    .. math::

        u_{k+1} = \lambda_k u_0 + (1-\lambda_k)\,\tilde u_k, \qquad \lambda_k = \frac1{k+2},\qquad
        \tilde u_k \approx J_{\eta(F+G)}(u_k),

    where :math:`\tilde u_k` comes from :math:`M_k = \max(1, \lfloor c_M\, n \log(k+2)\rfloor)` steps of VR-FoRB
    (:func:`forb_resolvent`) with :math:`p = 1/n`. For monotone Lipschitz :math:`F` this needs
    :math:`\tilde O(n + \sqrt n L/\varepsilon)` component evaluations.

    Parameters
    ----------
    problem
        A :class:`~optkit.problems.MonotoneInclusion` (monotone, Lipschitz on average).
    eta
        The resolvent parameter :math:`\eta`; default :math:`\sqrt n / L` with :math:`L` =
        ``problem.lipschitz_components`` (the paper's choice, :math:`\eta L = \sqrt n`).
    inner_step
        VR-FoRB step :math:`\gamma`; default :math:`5\sqrt{p(1-p)}/(\sqrt n + 1)` (official code). Refused above
        the inner problem's stability bound :math:`1/(1 + \eta L_F)` (:math:`\Phi` is
        :math:`(1+\eta L_F)`-Lipschitz).
    inner_factor
        :math:`c_M`.
    restart
        Anchor-restart factor (as in :func:`halpern`), or ``None`` for the literal Algorithm 2.
    tol, max_iter, max_epochs, check_every, time_limit, init
        As in :func:`halpern`; one iteration is one outer step.
    backend, callback, progress, seed
        See :func:`optkit.solve`.

    Examples
    --------
    >>> import optkit
    >>> from optkit.solvers.monotone._common import example_quadratic
    >>> result = optkit.solve(example_quadratic(), "vr-halpern-inexact", tol=1e-6, seed=0)
    >>> bool(result.success)
    True
    """
    tol, max_iter, max_epochs, check_every, time_limit = check_common(tol, max_iter, max_epochs, check_every,
                                                                       time_limit)
    chosen = resolve_backend(backend, vr_halpern_inexact.solver_info)
    restart = _check_restart(restart)
    inner_factor = check_positive("inner_factor", inner_factor)
    n = problem.n_components
    Lc, L = problem.lipschitz_components, problem.lipschitz
    eta_value = math.sqrt(n) / Lc if eta is None else check_positive("eta", eta)
    p = 1.0 / n
    bound = 1.0 / (1.0 + eta_value * L)
    default_gamma = min(5.0 * math.sqrt(p * (1.0 - p)) / (math.sqrt(n) + 1.0), bound) if n > 1 else 0.5 * bound
    gamma = check_step("vr-halpern-inexact", "inner_step", inner_step, default_gamma, bound, "(1 + eta L_F)",
                       1.0 + eta_value * L)
    rng = as_generator(seed)
    counter = Counter()
    restarts = _Restarts(restart, counter, n)
    s: dict[str, Any] = {"u": start_point(problem, init), "k": 0}
    s["u0"] = s["u"].copy()

    def on_check(u: np.ndarray, residual: float, Fu: np.ndarray) -> None:
        if restarts.check(residual):
            s["u0"], s["k"] = u.copy(), 0

    def iterate() -> int:
        k = s["k"]
        before = counter.evals
        steps = max(1, int(inner_factor * n * math.log(k + 2)))
        approx = forb_resolvent(problem, s["u"], eta_value, gamma, steps, p, rng, counter)
        lam = 1.0 / (k + 2)
        s["u"] = lam * s["u0"] + (1.0 - lam) * approx
        s["k"] = k + 1
        spent = counter.evals - before
        counter.evals = before  # run() adds what iterate() returns
        return spent

    return run(problem, "vr-halpern-inexact", iterate, lambda: s["u"], counter, tol=tol, max_iter=max_iter,
               max_epochs=max_epochs, check_every=check_every, time_limit=time_limit, callback=callback,
               progress=progress, backend=chosen, info=restarts.describe(eta=eta_value, inner_step=gamma),
               on_check=on_check if restart is not None else None)
