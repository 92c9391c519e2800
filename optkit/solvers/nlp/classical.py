r"""The paper's deterministic baselines: the :math:`\ell_1`-merit inexact SQP with GMRES and the classical
augmented Lagrangian (Hong, Na, Mahoney & Kolar, ICML 2023, Section 5; constants of the authors' code, notes A.3).

``"l1-sqp"`` — adaptive inexact SQP on :math:`\phi_\mu(x) = f(x) + \mu\|c(x)\|_1` (the authors'
``GmresL1AdapSQP``; Byrd, Curtis & Nocedal, *An inexact SQP method for equality constrained optimization*, SIAM
J. Optim. 2008). Each iteration solves :math:`K_t z = -\nabla\mathcal L_t` (the same :math:`K_t` and Hessian
modification as ``"sketch-newton"``) by GMRES to :math:`\|r\|_1 \le \kappa\|\nabla\mathcal L_t\|_1`
(:math:`\kappa^0 = 0.1`), and requires the model reduction

.. math::

    m_{\rm red} = -\nabla f^\top\Delta x - \max(\tfrac12\Delta x^\top B_t\Delta x, 0)
        + \mu\bigl(\|c\|_1 - \|c + G\Delta x\|_1\bigr)
    \ \ge\ \sigma\mu\max\bigl(\|c\|_1, \|c + G\Delta x\|_1 - \|c\|_1\bigr),\qquad \sigma = 0.09;

while it fails, :math:`\mu \leftarrow 1.5\mu`, :math:`\kappa \leftarrow \kappa/1.5^2` and GMRES continues from
its iterate. Armijo on :math:`\phi_\mu`: :math:`\phi_\mu(x + \alpha\Delta x) \le \phi_\mu(x) - 10^{-8}\alpha
m_{\rm red}`, halving; :math:`\lambda \leftarrow \lambda + \alpha\Delta\lambda`.

``"augmented-lagrangian"`` — the classical method of multipliers: approximately minimize
:math:`\mathcal L_A(x) = f + \lambda^\top c + \tfrac\mu2\|c\|^2` by Newton steps (Hessian
:math:`\nabla^2_x\mathcal L(x, \lambda + \mu c) + \mu G^\top G`, shifted by :math:`(1 - \lambda_{\min})I` when
its smallest eigenvalue :math:`\lambda_{\min} \le 0`), GMRES to relative residual :math:`10^{-4}`, Armijo with
:math:`\beta = 0.1`, to :math:`\|\nabla\mathcal L_A\| \le \tau` (:math:`\tau^0 = 0.1`, :math:`\tau \leftarrow
0.1\tau`, at most 100 Newton steps); then :math:`\lambda \leftarrow \lambda + \mu c`, :math:`\mu \leftarrow
1.5\mu` (:math:`\mu^0 = 1`). One outer iteration is one multiplier update.

Both stop on :math:`\|(\nabla_x\mathcal L, c)\|_2 \le` ``tol`` and report ``counts["gmres_iterations"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

from optkit.problems.nlp import NonlinearProgram
from optkit.solvers.loop import Step, check_positive, check_positive_int, drive
from optkit.solvers.nlp import _linalg
from optkit.solvers.nlp.sketching import kkt_matrix
from optkit.solvers.registry import register
from optkit.solvers.result import Result, Status

__all__ = ["augmented_lagrangian", "l1_sqp"]


def _example() -> NonlinearProgram:
    from optkit.solvers.nlp.sketch_newton import _example as hs7

    return hs7()


def _gmres(A: Any, b: np.ndarray, x0: np.ndarray, atol: float, counter: dict[str, float]) -> np.ndarray:
    """GMRES to ``||A x - b||_2 <= atol`` (restart 50, at most 20 cycles); counts inner iterations."""
    def count(_: Any) -> None:
        counter["gmres_iterations"] += 1

    x, _ = spla.gmres(A, b, x0=x0, rtol=0.0, atol=atol, restart=50, maxiter=20, callback=count,
                      callback_type="pr_norm")
    return np.asarray(x, dtype=np.float64)


def _residuals(problem: NonlinearProgram, x: np.ndarray, lam: np.ndarray) -> dict[str, float]:
    gx, cx = problem.kkt_residual(x, lam)
    return {"kkt": float(np.sqrt(gx @ gx + cx @ cx)), "stationarity": float(np.linalg.norm(gx)),
            "feasibility": float(np.linalg.norm(cx))}


def _modified_hessian(H: Any, G: Any, hessian_tol: float, xi_b: float) -> tuple[Any, bool]:
    if _linalg.reduced_hessian_min(H, G) >= hessian_tol:
        return H, False
    shift = xi_b + _linalg.spectral_norm(H)
    if _linalg.is_dense(H):
        return H + shift * np.eye(H.shape[0]), True
    from scipy import sparse

    if sparse.issparse(H):
        return (H + shift * sparse.eye(H.shape[0], format="csr")).tocsr(), True
    return H + shift * spla.aslinearoperator(sparse.eye(H.shape[0])), True


def _finish(problem: NonlinearProgram, prob: NonlinearProgram, outcome: Any, state: dict[str, Any], method: str,
            info: dict[str, Any]) -> Result:
    x, lam = state["x"], state["lam"]
    counts = dict(outcome.counts)
    counts.update({k: float(v) for k, v in prob.counts.items()})
    return Result(x=(x.copy(), lam.copy()), fun=problem.objective(x), status=outcome.status,
                  message=outcome.message, nit=outcome.nit, counts=counts, residuals=_residuals(problem, x, lam),
                  history=outcome.history, wall_time=outcome.wall_time, method=method, backend="numpy", info=info)


@register("l1-sqp", NonlinearProgram, backends=("numpy",), example=_example)
def l1_sqp(
    problem: NonlinearProgram,
    *,
    tol: float = 1e-4,
    max_iter: int = 10_000,
    mu: float = 1.0,
    kappa: float = 0.1,
    sigma: float = 0.09,
    armijo: float = 1e-8,
    xi_b: float = 0.1,
    hessian_tol: float = 1e-6,
    max_backtracks: int = 60,
    time_limit: float | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""Adaptive inexact SQP with GMRES on the :math:`\ell_1` merit (the paper's ``GmresL1AdapSQP``).

    Parameters
    ----------
    problem : NonlinearProgram
    tol, max_iter
        Stop when :math:`\|(\nabla_x\mathcal L, c)\|_2 \le` ``tol``; outer-iteration cap.
    mu, kappa, sigma, armijo
        :math:`\mu^0 = 1`, :math:`\kappa^0 = 0.1`, :math:`\sigma = 0.09`, Armijo constant :math:`10^{-8}`.
    xi_b, hessian_tol
        Hessian modification as in ``"sketch-newton"``.
    max_backtracks, time_limit, backend, callback, progress, seed
        See :func:`optkit.solve` (deterministic: ``seed`` is unused; ``backend`` must be numpy/auto).

    Examples
    --------
    >>> import optkit
    >>> from optkit.solvers.nlp.classical import _example
    >>> result = optkit.solve(_example(), "l1-sqp", tol=1e-8)
    >>> bool(result.success), round(result.fun, 6)
    (True, -1.732051)
    """
    if not isinstance(problem, NonlinearProgram):
        raise TypeError(f"problem must be a NonlinearProgram, got {type(problem).__name__}")
    tol, mu, kappa, sigma, armijo, xi_b = (check_positive(k, v) for k, v in (
        ("tol", tol), ("mu", mu), ("kappa", kappa), ("sigma", sigma), ("armijo", armijo), ("xi_b", xi_b)))
    max_iter = check_positive_int("max_iter", max_iter)
    max_backtracks = check_positive_int("max_backtracks", max_backtracks)
    hessian_tol = check_positive("hessian_tol", hessian_tol, allow_zero=True)
    if backend not in ("auto", "numpy"):
        raise ValueError(f"backend must be 'auto' or 'numpy' for l1-sqp, got {backend!r}")
    prob = problem.counting()
    state: dict[str, Any] = {"x": problem.x0.copy(), "lam": problem.lam0.copy(), "mu": mu}

    def merit(x: np.ndarray, mu_: float) -> float:
        return prob.objective(x) + mu_ * float(np.sum(np.abs(prob.constraints(x))))

    def step(budget: int) -> Step:
        x, lam, mu_ = state["x"], state["lam"], state["mu"]
        counts: dict[str, float] = {"gmres_iterations": 0, "line_search_trials": 0, "penalty_updates": 0}
        G = prob.jacobian(x)
        grad_f = prob.gradient(x)
        c = prob.constraints(x)
        grad_l = grad_f + np.asarray(G.T @ lam).reshape(-1)
        B, _ = _modified_hessian(prob.lagrangian_hessian(x, lam), G, hessian_tol, xi_b)
        K = kkt_matrix(B, G)
        rhs = -np.concatenate([grad_l, c])
        size = rhs.size
        norm1 = float(np.sum(np.abs(rhs)))
        kappa_t = kappa
        z = np.zeros(size)
        c1 = float(np.sum(np.abs(c)))
        for _ in range(200):
            # ||r||_1 <= sqrt(N) ||r||_2, so this 2-norm target gives ||r||_1 <= kappa ||grad L||_1
            z = _gmres(K, rhs, z, kappa_t * norm1 / np.sqrt(size), counts)
            dx = z[: problem.n]
            Bdx = np.asarray(B @ dx).reshape(-1)
            linear = c + np.asarray(G @ dx).reshape(-1)
            lin1 = float(np.sum(np.abs(linear)))
            reduction = -(grad_f @ dx) - max(0.5 * float(dx @ Bdx), 0.0) + mu_ * (c1 - lin1)
            if reduction >= sigma * mu_ * max(c1, lin1 - c1):
                break
            mu_ *= 1.5
            kappa_t /= 1.5**2
            counts["penalty_updates"] += 1
        state["mu"] = mu_
        dlam = z[problem.n:]
        if not (np.all(np.isfinite(z)) and np.isfinite(reduction)):
            return Step(1, _residuals(prob, x, lam), counts, Status.NUMERICAL_ERROR,
                        "l1-sqp: non-finite step; the last finite iterate is returned.")
        phi0 = merit(x, mu_)
        alpha = 1.0
        for _ in range(max_backtracks):
            counts["line_search_trials"] += 1
            value = merit(x + alpha * dx, mu_)
            if np.isfinite(value) and value <= phi0 - armijo * alpha * max(reduction, 0.0):
                break
            alpha *= 0.5
        else:
            return Step(1, _residuals(prob, x, lam), counts, Status.STALLED,
                        f"l1-sqp: Armijo line search failed after {max_backtracks} halvings.")
        state["x"], state["lam"] = x + alpha * dx, lam + alpha * dlam
        return Step(1, {**_residuals(prob, state["x"], state["lam"]), "step_size": alpha}, counts)

    with _linalg.single_threaded_blas(problem.n + problem.m):
        outcome = drive(step, converged=lambda r: r["kkt"] <= tol, max_iter=max_iter, method="l1-sqp",
                        time_limit=time_limit, callback=callback, progress=progress,
                        current=lambda: (state["x"].copy(), state["lam"].copy()),
                        initial=_residuals(prob, state["x"], state["lam"]),
                        stopping_rule=f"||(grad_x L, c)|| <= {tol:g}")
    return _finish(problem, prob, outcome, state, "l1-sqp", {"mu": state["mu"]})


@register("augmented-lagrangian", NonlinearProgram, backends=("numpy",), example=_example)
def augmented_lagrangian(
    problem: NonlinearProgram,
    *,
    tol: float = 1e-4,
    max_iter: int = 1_000,
    mu: float = 1.0,
    mu_factor: float = 1.5,
    inner_tol: float = 0.1,
    inner_factor: float = 0.1,
    max_inner: int = 100,
    beta: float = 0.1,
    gmres_rtol: float = 1e-4,
    max_backtracks: int = 60,
    time_limit: float | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""Classical augmented Lagrangian (method of multipliers) with inexact Newton-GMRES inner solves.

    Parameters
    ----------
    problem : NonlinearProgram
    tol, max_iter
        Stop when :math:`\|(\nabla_x\mathcal L, c)\|_2 \le` ``tol``; cap on multiplier updates.
    mu, mu_factor
        :math:`\mu^0 = 1`, :math:`\mu \leftarrow 1.5\mu` after each multiplier update.
    inner_tol, inner_factor, max_inner
        :math:`\tau^0 = 0.1`, :math:`\tau \leftarrow 0.1\tau`; at most 100 Newton steps per outer iteration.
    beta, gmres_rtol
        Armijo constant 0.1; GMRES relative residual :math:`10^{-4}`.
    max_backtracks, time_limit, backend, callback, progress, seed
        See :func:`optkit.solve` (deterministic: ``seed`` is unused).

    Examples
    --------
    >>> import optkit
    >>> from optkit.solvers.nlp.classical import _example
    >>> result = optkit.solve(_example(), "augmented-lagrangian", tol=1e-8)
    >>> bool(result.success), round(result.fun, 6)
    (True, -1.732051)
    """
    if not isinstance(problem, NonlinearProgram):
        raise TypeError(f"problem must be a NonlinearProgram, got {type(problem).__name__}")
    tol, mu, inner_tol, inner_factor, beta, gmres_rtol = (check_positive(k, v) for k, v in (
        ("tol", tol), ("mu", mu), ("inner_tol", inner_tol), ("inner_factor", inner_factor), ("beta", beta),
        ("gmres_rtol", gmres_rtol)))
    mu_factor = check_positive("mu_factor", mu_factor)
    if not mu_factor >= 1:
        raise ValueError(f"mu_factor must be >= 1, got {mu_factor!r}")
    max_iter = check_positive_int("max_iter", max_iter)
    max_inner = check_positive_int("max_inner", max_inner)
    max_backtracks = check_positive_int("max_backtracks", max_backtracks)
    if backend not in ("auto", "numpy"):
        raise ValueError(f"backend must be 'auto' or 'numpy' for augmented-lagrangian, got {backend!r}")
    prob = problem.counting()
    state: dict[str, Any] = {"x": problem.x0.copy(), "lam": problem.lam0.copy(), "mu": mu, "tau": inner_tol}

    def al_value(x: np.ndarray, lam: np.ndarray, mu_: float) -> float:
        c = prob.constraints(x)
        return prob.objective(x) + float(lam @ c) + 0.5 * mu_ * float(c @ c)

    def step(budget: int) -> Step:
        x, lam, mu_, tau = state["x"], state["lam"], state["mu"], state["tau"]
        counts: dict[str, float] = {"gmres_iterations": 0, "newton_steps": 0, "line_search_trials": 0}
        for _ in range(max_inner):
            c = prob.constraints(x)
            G = prob.jacobian(x)
            shifted = lam + mu_ * c
            grad = prob.lagrangian_gradient(x, shifted, jacobian=G)
            if not np.all(np.isfinite(grad)):
                return Step(1, _residuals(prob, state["x"], state["lam"]), counts, Status.NUMERICAL_ERROR,
                            "augmented-lagrangian: non-finite gradient; the last finite iterate is returned.")
            if np.linalg.norm(grad) <= tau:
                break
            Gd = _linalg.to_dense(G)
            H = _linalg.to_dense(prob.lagrangian_hessian(x, shifted)) + mu_ * (Gd.T @ Gd)
            low = float(_linalg.symmetric_eigenvalues(H)[0])
            if low <= 0:
                H = H + (1.0 - low) * np.eye(problem.n)
            d = _gmres(H, -grad, np.zeros(problem.n), gmres_rtol * float(np.linalg.norm(grad)), counts)
            slope = float(grad @ d)
            if slope >= 0:  # inexact solve not a descent direction: steepest descent
                d, slope = -grad, -float(grad @ grad)
            value0 = al_value(x, lam, mu_)
            alpha = 1.0
            for _ in range(max_backtracks):
                counts["line_search_trials"] += 1
                trial = al_value(x + alpha * d, lam, mu_)
                if np.isfinite(trial) and trial <= value0 + beta * alpha * slope:
                    break
                alpha *= 0.5
            else:
                return Step(1, _residuals(prob, x, lam), counts, Status.STALLED,
                            "augmented-lagrangian: Armijo line search failed in the inner Newton solve.")
            x = x + alpha * d
            counts["newton_steps"] += 1
        lam = lam + mu_ * prob.constraints(x)
        state.update(x=x, lam=lam, mu=mu_ * mu_factor, tau=tau * inner_factor)
        return Step(1, _residuals(prob, x, lam), counts)

    with _linalg.single_threaded_blas(problem.n + problem.m):
        outcome = drive(step, converged=lambda r: r["kkt"] <= tol, max_iter=max_iter,
                        method="augmented-lagrangian", time_limit=time_limit, callback=callback,
                        progress=progress, current=lambda: (state["x"].copy(), state["lam"].copy()),
                        initial=_residuals(prob, state["x"], state["lam"]),
                        stopping_rule=f"||(grad_x L, c)|| <= {tol:g}")
    return _finish(problem, prob, outcome, state, "augmented-lagrangian", {"mu": state["mu"]})
