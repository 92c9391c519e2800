r"""Adaptive inexact Newton on the exact augmented Lagrangian with randomized sketching, ``"sketch-newton"``.

Hong, Na, Mahoney & Kolar, *Constrained optimization via exact augmented Lagrangian and randomized iterative
sketching*, ICML 2023 (arXiv:2305.18379), "AdaSketch-Newton". For :math:`\min f(x)` s.t. :math:`c(x) = 0`:

1. **Newton--KKT system** :math:`K_t z = -\nabla\mathcal L_t`, :math:`K_t = \begin{pmatrix} B_t & G_t^\top \\
   G_t & 0\end{pmatrix}`, :math:`z = (\Delta x, \Delta\lambda)`, with :math:`B_t = \nabla^2_x\mathcal L_t` when the
   reduced Hessian satisfies :math:`\lambda_{\min}(Z^\top\nabla^2_x\mathcal L_t Z) \ge` ``hessian_tol`` and
   :math:`B_t = \nabla^2_x\mathcal L_t + (\xi_B + \|\nabla^2_x\mathcal L_t\|)I` otherwise.
2. **Randomized solver** (:mod:`optkit.solvers.nlp.sketching`), stopped by the *adaptive accuracy condition*

   .. math::

       \|K_t\|\,\Psi_t\,\|r_{t,j}\| \le \theta_t\,\delta_t\,\|\nabla\mathcal L_t\|,\qquad
       \Psi_t = \frac{20\max(\|B_t\|^2, 1)}{\min(\lambda_{\min}(G_tG_t^\top), 1)\min(\xi_B, 1)},

   :math:`\delta_t \leftarrow \max(10^{-6}, \min(\delta_t, \delta_{\rm trial}))`,
   :math:`\delta_{\rm trial} = (\tfrac12 - \beta)\eta_2 / ((1 + \eta_1 + \eta_2)\Upsilon_t^2\Psi_t^2)`,
   :math:`\Upsilon_t = \max(\|G_t\|, \|\nabla^2_x\mathcal L_t\|, 1)`.
3. **Merit**: the exact augmented Lagrangian

   .. math::

       \mathcal L_\eta(x,\lambda) = f + \lambda^\top c + \tfrac{\eta_1}{2}\|c\|^2
           + \tfrac{\eta_2}{2}\|\nabla_x\mathcal L\|^2,\qquad
       \nabla\mathcal L_\eta = \begin{pmatrix} (I + \eta_2\nabla^2_x\mathcal L)\nabla_x\mathcal L
           + \eta_1 G^\top c \\ c + \eta_2 G\nabla_x\mathcal L\end{pmatrix}.

   (The reference code uses :math:`\nabla^2 f` in the first block; we use :math:`\nabla^2_x\mathcal L`, which is
   the exact gradient.)
4. **Descent test and penalties**: accept :math:`z` when :math:`\nabla\mathcal L_\eta^\top z \le
   -\tfrac{\eta_2}{2}\|\nabla\mathcal L_t\|^2`; otherwise :math:`\eta_1 \leftarrow \nu^2\eta_1`,
   :math:`\eta_2 \leftarrow \eta_2/\nu`, :math:`\delta \leftarrow \max(10^{-6}, \min(\delta/\nu^4,
   \delta_{\rm trial}))` and sketching continues from the current :math:`z` (safeguard: accept once
   :math:`\eta_1 > 10^8` or :math:`\eta_2 < 10^{-8}`). Penalties and :math:`\delta` carry over between iterations.
5. **Armijo** backtracking on :math:`\mathcal L_\eta` from :math:`\alpha = 1`, halving, with constant
   :math:`\beta`.

Sources: the algorithm, constants and defaults are those of the authors' released code as summarised in the
project notes (Part A.1--A.2, tagged [code]); the paper's equation numbers could not be checked here. The
:math:`\theta_t \to 0` variant (``theta_schedule="kkt"``, :math:`\theta_t = \theta\min(1, \|\nabla\mathcal L_t\|)`)
is our choice of a sequence tending to zero, which the paper's superlinear result asks for.
Stopping rule: :math:`\|(\nabla_x\mathcal L, c)\|_2 \le` ``tol``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla
from scipy import sparse
from scipy.sparse.linalg import LinearOperator

from optkit.problems.nlp import NonlinearProgram
from optkit.solvers.loop import Step, check_positive, check_positive_int, drive
from optkit.solvers.nlp import _linalg
from optkit.solvers.nlp.sketching import SKETCHES, SketchSolver, kkt_matrix
from optkit.solvers.registry import register
from optkit.solvers.result import Result, Status

__all__ = ["sketch_newton"]

DELTA_FLOOR = 1e-6


def _example() -> NonlinearProgram:
    import jax.numpy as jnp

    # HS7: min log(1 + x1^2) - x2  s.t. (1 + x1^2)^2 + x2^2 = 4; f* = -sqrt(3) at (0, sqrt(3)).
    return NonlinearProgram(lambda x: jnp.log(1.0 + x[0] ** 2) - x[1],
                            lambda x: jnp.array([(1.0 + x[0] ** 2) ** 2 + x[1] ** 2 - 4.0]),
                            x0=np.array([2.0, 2.0]), name="HS7")


def _matvec(A: Any, v: np.ndarray) -> np.ndarray:
    return np.asarray(A @ v, dtype=np.float64).reshape(-1)


def _rmatvec(A: Any, u: np.ndarray) -> np.ndarray:
    if isinstance(A, LinearOperator):
        return np.asarray(A.rmatvec(u), dtype=np.float64).reshape(-1)
    return np.asarray(A.T @ u, dtype=np.float64).reshape(-1)


def _shift(H: Any, shift: float) -> Any:
    n = H.shape[0]
    if isinstance(H, LinearOperator):
        return H + shift * spla.aslinearoperator(sparse.eye(n))
    if sparse.issparse(H):
        return (H + shift * sparse.eye(n, format="csr")).tocsr()
    return H + shift * np.eye(n)


def _direct_solve(K: Any, rhs: np.ndarray, counts: dict[str, float]) -> np.ndarray:
    """Exact KKT solve: symmetric LU for dense, sparse LU for sparse, MINRES for matrix-free ``K``."""
    if _linalg.is_dense(K):
        counts["flops"] += (2.0 / 3.0) * K.shape[0] ** 3
        try:
            return scipy.linalg.solve(K, rhs, assume_a="sym")
        except (np.linalg.LinAlgError, ValueError):
            return np.linalg.lstsq(K, rhs, rcond=None)[0]
    if sparse.issparse(K):
        counts["flops"] += float(K.nnz) * 10.0
        return spla.spsolve(K.tocsc(), rhs)
    z, _ = spla.minres(K, rhs, rtol=1e-12, maxiter=10 * K.shape[0])
    counts["flops"] += 2.0 * 10 * K.shape[0] ** 2
    return z


#: Sketch iterations between two checks of the projected iterations to the target.
_SLICE = 8192


def _sketch_until(solver: SketchSolver, target: float, budget: int, *, give_up: bool) -> bool:
    """Run ``solver`` to ``||r|| <= target`` within ``budget`` iterations.

    With ``give_up``, stop early when the contraction over the last two slices of ``_SLICE`` iterations,
    extrapolated, needs more iterations than the budget has left (or the residual did not decrease over them):
    the caller then solves directly instead of burning the cap. The recent rate, not the average since the
    start, is the one that matters: sketch-and-project converges fast on the large eigencomponents first.
    """
    if not give_up:
        return solver.run(target, budget)
    norms = [solver.residual_norm]
    while budget > 0:
        piece = min(budget, _SLICE)
        if solver.run(target, piece):
            return True
        budget -= piece
        norms.append(solver.residual_norm)
        if len(norms) >= 3 and budget > 0:
            before, now = norms[-3], norms[-1]
            if not now < before:
                return False
            projected = 2 * _SLICE * math.log(now / max(target, np.finfo(float).tiny)) / math.log(before / now)
            if projected > budget:
                return False
    return False


class _Point:
    """First-order information at (x, lambda): f, c, G, grad_x L and the merit."""

    def __init__(self, problem: NonlinearProgram, x: np.ndarray, lam: np.ndarray) -> None:
        self.x, self.lam = x, lam
        self.f = problem.objective(x)
        self.c = problem.constraints(x)
        self.G = problem.jacobian(x)
        self.grad_l = problem.gradient(x) + _rmatvec(self.G, lam)
        self.kkt = float(np.sqrt(self.grad_l @ self.grad_l + self.c @ self.c))

    def merit(self, eta1: float, eta2: float) -> float:
        return (self.f + float(self.lam @ self.c) + 0.5 * eta1 * float(self.c @ self.c)
                + 0.5 * eta2 * float(self.grad_l @ self.grad_l))

    def finite(self) -> bool:
        return bool(np.isfinite(self.f) and np.all(np.isfinite(self.c)) and np.all(np.isfinite(self.grad_l)))


@register("sketch-newton", NonlinearProgram, backends=("numba", "numpy"), default=True, stochastic=True,
          example=_example)
def sketch_newton(
    problem: NonlinearProgram,
    *,
    tol: float = 1e-4,
    max_iter: int = 10_000,
    sketch: str = "kaczmarz",
    sampling: str = "uniform",
    block_size: int = 1,
    max_inner: int = 100_000,
    eta1: float = 1.0,
    eta2: float = 0.1,
    delta: float = 0.1,
    xi_b: float = 0.1,
    beta: float = 0.1,
    nu: float = 1.5,
    theta: float = 1.0,
    theta_schedule: str = "constant",
    hessian_tol: float = 1e-6,
    licq_tol: float = 1e-10,
    max_backtracks: int = 60,
    on_inner_cap: str = "exact",
    time_limit: float | None = None,
    backend: str = "auto",
    callback: Any = None,
    progress: bool = False,
    seed: Any = None,
) -> Result:
    r"""AdaSketch-Newton: adaptive inexact Newton with randomized sketching on the exact augmented Lagrangian.

    Parameters
    ----------
    problem : NonlinearProgram
    tol : float, default 1e-4
        Stop when :math:`\|(\nabla_x\mathcal L, c)\|_2 \le` ``tol`` (the paper's 1e-4).
    max_iter : int, default 10000
        Outer (Newton) iterations.
    sketch : {"kaczmarz", "gaussian", "rows", "count", "exact"}
        The KKT solver: a sketch of :mod:`optkit.solvers.nlp.sketching`, or ``"exact"`` (an LU / sparse LU solve,
        the same method with an exact Newton direction).
    sampling, block_size
        Row sampling for Kaczmarz (``"uniform"`` as in the paper, or ``"row-norm"``); sketch size :math:`s`.
    max_inner : int, default 100000
        Cap on sketch iterations per outer iteration (the paper's CUTEst setting; 1e6 for LR/PDE).
    eta1, eta2, delta, xi_b, beta, nu, theta
        :math:`\eta_1^0 = 1`, :math:`\eta_2^0 = 0.1`, :math:`\delta^0 = 0.1`, :math:`\xi_B = 0.1`,
        :math:`\beta = 0.1`, :math:`\nu = 1.5`, :math:`\theta = 1` (the defaults of the authors' code).
    theta_schedule : {"constant", "kkt"}
        :math:`\theta_t = \theta` (local linear rate) or :math:`\theta_t = \theta\min(1, \|\nabla\mathcal L_t\|)
        \to 0` (superlinear).
    hessian_tol : float, default 1e-6
        Threshold on :math:`\lambda_{\min}` of the reduced Hessian below which :math:`B_t` is shifted (the paper's
        code uses 1e-2 for logistic regression).
    licq_tol : float, default 1e-10
        The run stops with ``NUMERICAL_ERROR`` when :math:`\lambda_{\min}(G_tG_t^\top) <` ``licq_tol`` (the
        smallest singular value is reported in the message and ``info``). The reference code stops at 1e-2.
    max_backtracks : int
        Armijo halvings before the run stops as ``STALLED``.
    on_inner_cap : {"exact", "continue"}, default "exact"
        What to do when the sketch solver cannot meet the accuracy condition within ``max_inner`` iterations
        (or its observed contraction projects past that cap). ``"continue"`` uses the inexact iterate, as the
        reference code does; ``"exact"`` completes the direction with a direct solve of :math:`K_t z =
        -\nabla\mathcal L_t` (counted in ``counts["exact_fallbacks"]``). The condition becomes unreachable near
        degenerate solutions, where :math:`\kappa(K_t)` and :math:`\Psi_t` blow up: PRICE4NE's Jacobian is
        singular at its root (:math:`\lambda_{\min}(G_tG_t^\top) \to 0`), HS47's reduced Hessian is singular at
        its minimizer. There the inexact direction fails the descent test, the penalties are driven to the
        safeguard and the reference method stalls (thousands of outer iterations at ``tol=1e-6``).
    time_limit, backend, callback, progress, seed
        See :func:`optkit.solve`; ``seed`` drives the sketches; ``backend`` is ``"numba"`` (Kaczmarz/Gaussian
        kernels) or ``"numpy"``.

    Returns
    -------
    Result
        ``x = (x, lam)``; ``fun = f(x)``; ``residuals``: ``kkt`` (the stopping measure), ``stationarity``
        :math:`\|\nabla_x\mathcal L\|`, ``feasibility`` :math:`\|c\|`; ``info["kkt_components"]`` holds the final
        vectors :math:`(\nabla_x\mathcal L, c)`; ``counts``: ``inner_iterations``, ``flops`` (estimated flops of the
        KKT solves), ``line_search_trials``, ``penalty_updates``, ``hessian_modifications`` and the oracle calls.

    Examples
    --------
    >>> import optkit
    >>> from optkit.solvers.nlp.sketch_newton import _example
    >>> result = optkit.solve(_example(), "sketch-newton", tol=1e-8, seed=0)
    >>> bool(result.success), round(result.fun, 6)
    (True, -1.732051)
    """
    if not isinstance(problem, NonlinearProgram):
        raise TypeError(f"problem must be a NonlinearProgram, got {type(problem).__name__}")
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    max_inner = check_positive_int("max_inner", max_inner)
    max_backtracks = check_positive_int("max_backtracks", max_backtracks)
    eta1, eta2, delta, xi_b, theta = (check_positive(k, v) for k, v in
                                      (("eta1", eta1), ("eta2", eta2), ("delta", delta), ("xi_b", xi_b),
                                       ("theta", theta)))
    beta = check_positive("beta", beta)
    if not beta < 0.5:
        raise ValueError(f"beta must be in (0, 1/2) (unit steps need beta < 1/2), got {beta!r}")
    nu = check_positive("nu", nu)
    if not nu > 1:
        raise ValueError(f"nu must be > 1, got {nu!r}")
    hessian_tol = check_positive("hessian_tol", hessian_tol, allow_zero=True)
    licq_tol = check_positive("licq_tol", licq_tol, allow_zero=True)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    if sketch not in (*SKETCHES, "exact"):
        raise ValueError(f"sketch must be one of {(*SKETCHES, 'exact')}, got {sketch!r}")
    if on_inner_cap not in ("exact", "continue"):
        raise ValueError(f"on_inner_cap must be 'exact' or 'continue', got {on_inner_cap!r}")
    if theta_schedule not in ("constant", "kkt"):
        raise ValueError(f"theta_schedule must be 'constant' or 'kkt', got {theta_schedule!r}")
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy' for sketch-newton, got {backend!r}")
    chosen = "numpy" if backend == "numpy" else "numba"
    from optkit._arrays import as_generator

    rng = as_generator(seed)
    prob = problem.counting()
    point = _Point(prob, problem.x0.copy(), problem.lam0.copy())
    if not point.finite():
        raise ValueError("the KKT residual is not finite at (x0, lam0)")
    state: dict[str, Any] = {"point": point, "eta1": eta1, "eta2": eta2, "delta": delta, "sigma_min": math.nan,
                             "outer": 0}

    def residuals(p: _Point) -> dict[str, float]:
        return {"kkt": p.kkt, "stationarity": float(np.linalg.norm(p.grad_l)),
                "feasibility": float(np.linalg.norm(p.c))}

    def step(budget: int) -> Step:
        p: _Point = state["point"]
        counts: dict[str, float] = {"inner_iterations": 0, "flops": 0.0, "line_search_trials": 0,
                                    "penalty_updates": 0, "hessian_modifications": 0, "exact_fallbacks": 0}
        H = prob.lagrangian_hessian(p.x, p.lam)
        G = p.G
        norm_g, sigma_min = _linalg.singular_extremes(G)
        state["sigma_min"] = sigma_min
        lam_min_ggt = sigma_min**2
        if not lam_min_ggt >= licq_tol:
            return Step(1, residuals(p), counts, Status.NUMERICAL_ERROR,
                        f"sketch-newton: LICQ fails at iteration {state['outer']}: the smallest singular value of "
                        f"the constraint Jacobian is {sigma_min:.3e} (lambda_min(G G^T) = {lam_min_ggt:.3e} < "
                        f"licq_tol = {licq_tol:g}); the last iterate is returned. Check for redundant or "
                        "inconsistent constraints, or start elsewhere.")
        eigenvalues = _linalg.symmetric_eigenvalues(H)
        norm_h = _linalg.spectral_norm(H) if eigenvalues is None else float(np.max(np.abs(eigenvalues)))
        B, norm_b = H, norm_h
        if _linalg.reduced_hessian_min(H, G) < hessian_tol:
            shift = xi_b + norm_h
            B = _shift(H, shift)
            counts["hessian_modifications"] = 1
            # ||H + sI|| from the spectrum of H when we have it
            norm_b = (_linalg.spectral_norm(B) if eigenvalues is None
                      else float(np.max(np.abs(eigenvalues + shift))))
        psi = 20.0 * max(norm_b**2, 1.0) / (min(lam_min_ggt, 1.0) * min(xi_b, 1.0))
        upsilon = max(norm_g, norm_h, 1.0)

        def delta_trial() -> float:
            e1, e2 = state["eta1"], state["eta2"]
            return (0.5 - beta) * e2 / ((1.0 + e1 + e2) * upsilon**2 * psi**2)

        state["delta"] = max(DELTA_FLOOR, min(state["delta"], delta_trial()))
        K = kkt_matrix(B, G)
        rhs = -np.concatenate([p.grad_l, p.c])
        grad_norm = p.kkt
        theta_t = theta * (min(1.0, grad_norm) if theta_schedule == "kkt" else 1.0)
        solver = None
        if sketch == "exact":
            z = _direct_solve(K, rhs, counts)
        else:
            solver = SketchSolver(K, rhs, sketch=sketch, sampling=sampling, block_size=block_size, seed=rng,
                                  backend=chosen)
            spectrum = _linalg.symmetric_eigenvalues(K)
            norm_k = _linalg.spectral_norm(K) if spectrum is None else float(np.max(np.abs(spectrum)))
        # HVP for the merit gradient uses the true Hessian of the Lagrangian (not B).
        grad_merit_x_parts = (p.grad_l, _matvec(H, p.grad_l), _rmatvec(G, p.c), _matvec(G, p.grad_l))
        inner_left = max_inner
        while True:
            if solver is not None:
                target = theta_t * state["delta"] * grad_norm / (norm_k * psi)
                before = solver.iterations
                reached = _sketch_until(solver, target, inner_left, give_up=on_inner_cap == "exact")
                inner_left -= solver.iterations - before
                z = solver.z.copy()
                if not reached and on_inner_cap == "exact":
                    # The accuracy condition is out of reach (kappa(K_t) blows up at degenerate solutions):
                    # finish this direction with a direct solve; later penalty updates reuse it.
                    counts["inner_iterations"] += solver.iterations
                    counts["flops"] += solver.flops
                    counts["exact_fallbacks"] = 1
                    solver = None
                    z = _direct_solve(K, rhs, counts)
            dx, dlam = z[: problem.n], z[problem.n:]
            e1, e2 = state["eta1"], state["eta2"]
            gl, hgl, gtc, ggl = grad_merit_x_parts
            grad_x = gl + e2 * hgl + e1 * gtc
            grad_lam = p.c + e2 * ggl
            slope = float(grad_x @ dx + grad_lam @ dlam)
            if slope <= -0.5 * e2 * grad_norm**2 or e1 > 1e8 or e2 < 1e-8:
                break
            state["eta1"], state["eta2"] = nu**2 * e1, e2 / nu
            state["delta"] = max(DELTA_FLOOR, min(state["delta"] / nu**4, delta_trial()))
            counts["penalty_updates"] += 1
        if solver is not None:
            counts["inner_iterations"] += solver.iterations
            counts["flops"] += solver.flops
        if not np.all(np.isfinite(z)):
            return Step(1, residuals(p), counts, Status.NUMERICAL_ERROR,
                        "sketch-newton: the KKT solve produced a non-finite direction; the last finite iterate is "
                        "returned.")
        e1, e2 = state["eta1"], state["eta2"]
        merit0 = p.merit(e1, e2)
        alpha = 1.0
        for _ in range(max_backtracks):
            counts["line_search_trials"] += 1
            trial = _Point(prob, p.x + alpha * dx, p.lam + alpha * dlam)
            if trial.finite() and trial.merit(e1, e2) <= merit0 + alpha * beta * slope:
                break
            alpha *= 0.5
        else:
            return Step(1, residuals(p), counts, Status.STALLED,
                        f"sketch-newton: Armijo line search failed after {max_backtracks} halvings (slope "
                        f"{slope:.3e}); the KKT solve may be too inexact: lower delta or raise max_inner.")
        state["point"] = trial
        state["outer"] += 1
        return Step(1, {**residuals(trial), "step_size": alpha}, counts)

    def current() -> tuple[np.ndarray, np.ndarray]:
        p = state["point"]
        return p.x.copy(), p.lam.copy()

    with _linalg.single_threaded_blas(problem.n + problem.m):
        outcome = drive(step, converged=lambda r: r["kkt"] <= tol, max_iter=max_iter, method="sketch-newton",
                        time_limit=time_limit, callback=callback, progress=progress, current=current,
                        initial=residuals(point), stopping_rule=f"||(grad_x L, c)|| <= {tol:g}")
    final: _Point = state["point"]
    counts = dict(outcome.counts)
    counts.update({k: float(v) for k, v in prob.counts.items()})
    return Result(
        x=(final.x.copy(), final.lam.copy()),
        fun=final.f,
        status=outcome.status,
        message=outcome.message,
        nit=outcome.nit,
        counts=counts,
        residuals=residuals(final),
        history=outcome.history,
        wall_time=outcome.wall_time,
        method="sketch-newton",
        backend=chosen,
        info={"kkt_components": (final.grad_l.copy(), final.c.copy()), "eta1": state["eta1"],
              "eta2": state["eta2"], "delta": state["delta"], "smallest_singular_value": state["sigma_min"],
              "sketch": sketch},
    )
