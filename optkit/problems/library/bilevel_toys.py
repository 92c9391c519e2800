r"""Small bilevel problems with known solutions (T1–T8 of the project notes ``algorithms/bilevel.md``, section 7).

Each factory returns a :class:`BilevelToy`: the :class:`~optkit.problems.bilevel.BilevelProblem`, the known
solution (``x_star``, ``y_star``, ``upper_star`` where they are known) and, for the nonconvex toys, the local
minima of the value function :math:`\varphi(x) = F(x, y^*(x))`. Gradients are hand-written NumPy (fast oracles for
tests and examples); they are checked against JAX autodiff in ``tests/problems/test_bilevel.py``.

======  =====================================================  ==============================================
toy     lower level                                            known solution
======  =====================================================  ==============================================
T1      :math:`\tfrac12(y-x)^2`                                 :math:`x^* = y^* = 1/2`, :math:`F^* = 1/4`
T2      benchopt-style quadratic finite sum                     :math:`x^*` from one linear solve
T3      :math:`\tfrac12\|y_1\|^2 - x^\top y_1` (y2 free)       :math:`x = y_1 = y_2 = 1`, :math:`F^* = 0`
T4      LV-HBA LLC toy, coupled equality                        :math:`x^* = -0.3`, :math:`F^* = 0.05n`
T5      BiC-GAFFA toy (T4's lower level)                        :math:`x^* = 1, y_1^* = 2, y_2^* = -3`, 0
T6      PBGD toy, PL lower level, :math:`x\in[0,3]`             global min :math:`x \approx 1.2152`
T7      BLOCC toys, coupled :math:`y \le x`                     toy 1: :math:`x\approx0.3007`; toy 2: 0.9862
T8      LLSC toy, :math:`y^*(x)` in closed form                 :math:`y^*(x) = (I - A^+A)x - A^+Hx`
======  =====================================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit

from optkit.problems.bilevel import BilevelProblem, FiniteSum, LowerConstraints
from optkit.problems.functions import Function
from optkit.problems.sets import Affine, Box

__all__ = ["BilevelToy", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "benchopt_quadratic", "TOYS"]


@dataclass(frozen=True)
class BilevelToy:
    """A toy problem with what is known about its solution.

    ``x_star``/``y_star``/``upper_star`` are None where not unique or not known; ``local_minima`` lists
    ``(x, phi(x))`` of the value function for the nonconvex toys (the global one first); ``y_of_x`` gives the
    lower-level solution map where it is known in closed form; ``hypergradient`` the exact :math:`\\nabla\\varphi`
    where it is.
    """

    name: str
    problem: BilevelProblem
    x_star: np.ndarray | None = None
    y_star: np.ndarray | None = None
    upper_star: float | None = None
    local_minima: tuple[tuple[float, float], ...] = ()
    y_of_x: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    hypergradient: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    note: str = ""


def _function(value: Callable[[np.ndarray], float], grad: Callable[[np.ndarray], np.ndarray],
              hvp: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, name: str = "") -> Function:
    return Function(value, grad, hvp=hvp, name=name)


# ---------------------------------------------------------------------------------------------- T1
def t1(x0: float = 0.0, y0: float = 0.0) -> BilevelToy:
    r"""T1: :math:`F = \tfrac12(x-1)^2 + \tfrac12 y^2`, :math:`f = \tfrac12(y - x)^2`.

    :math:`\varphi(x) = \tfrac12(x-1)^2 + \tfrac12x^2`, so :math:`x^* = y^* = \tfrac12`, :math:`F^* = \tfrac14`.
    """
    upper = _function(lambda z: 0.5 * (z[0] - 1.0) ** 2 + 0.5 * z[1] ** 2,
                      lambda z: np.array([z[0] - 1.0, z[1]]), lambda z, v: v.copy(), "t1_upper")
    lower = _function(lambda z: 0.5 * (z[1] - z[0]) ** 2,
                      lambda z: np.array([z[0] - z[1], z[1] - z[0]]),
                      lambda z, v: np.array([v[0] - v[1], v[1] - v[0]]), "t1_lower")
    problem = BilevelProblem(upper, lower, x0=[x0], y0=[y0], name="T1")
    return BilevelToy("T1", problem, np.array([0.5]), np.array([0.5]), 0.25,
                      y_of_x=lambda x: np.array(x, dtype=float), hypergradient=lambda x: 2.0 * np.asarray(x) - 1.0)


# ---------------------------------------------------------------------------------------------- T2
@dataclass(frozen=True)
class _QuadraticData:
    """Rank-one per-sample factors of the benchopt-style quadratic (rows are samples)."""

    a: np.ndarray  # lower yy: A_i = a_i a_i^T
    b: np.ndarray  # lower xx
    c: np.ndarray  # lower cross x^T (c_i d_i^T) y
    d: np.ndarray
    lin_y: np.ndarray
    lin_x: np.ndarray

    def means(self) -> dict[str, np.ndarray]:
        n = self.a.shape[0]
        return {"yy": self.a.T @ self.a / n, "xx": self.b.T @ self.b / n, "xy": self.c.T @ self.d / n,
                "ly": self.lin_y.mean(axis=0), "lx": self.lin_x.mean(axis=0)}


def _quadratic_sum(data: _QuadraticData, name: str) -> FiniteSum:
    r""":math:`\frac1N\sum_i \tfrac12 (a_i^\top y)^2 + \tfrac12 (b_i^\top x)^2 + (c_i^\top x)(d_i^\top y)
    + \ell_{y,i}^\top y + \ell_{x,i}^\top x` with full-batch oracles from the mean matrices.

    The full-batch oracles use the stacked form :math:`\phi(z) = \tfrac12 z^\top K z + \ell^\top z` of
    :math:`z = (x, y)`, :math:`K = \begin{pmatrix} \bar B & \bar C \\ \bar C^\top & \bar A \end{pmatrix}` (the
    means of :math:`b_i b_i^\top`, :math:`c_i d_i^\top`, :math:`a_i a_i^\top`): one :math:`(n+m)\times(n+m)`
    matrix-vector product per gradient, Hessian-vector product or value instead of three or four smaller ones
    (an :math:`(n+m)\times m` one for a Hessian-vector product with :math:`v_x = 0`). The shortcuts
    ``grad_y`` (the :math:`m` rows of :math:`K` acting on the y-block only: half the matrix), ``grad_x`` (the other
    :math:`n` rows), ``grad_y_pair`` (``grad_y`` at y, and at z as that plus :math:`K_{yy}(z - y)`) and ``grad_pair`` (the
    gradients at :math:`(x, y)` and :math:`(x, z)`, the second as :math:`\nabla\phi(x, y) + K_{:, y}(z - y)`:
    one and a half matrix-vector products instead of two) give the same numbers up to rounding."""
    N = data.a.shape[0]
    M = data.means()
    n = M["xx"].shape[0]
    K = np.block([[M["xx"], M["xy"]], [M["xy"].T, M["yy"]]])
    K_y = np.ascontiguousarray(K[:, n:])  # the columns acting on y: Hessian-vector products with v_x = 0
    K_rows_y = np.ascontiguousarray(K[n:, :])  # the rows giving grad_y
    K_rows_x = np.ascontiguousarray(K[:n, :])  # the rows giving grad_x
    K_yy = np.ascontiguousarray(K[n:, n:])  # grad_y_pair: the y-block at z from the one at y
    lin = np.concatenate([M["lx"], M["ly"]])
    lin_y = np.ascontiguousarray(lin[n:])
    lin_x = np.ascontiguousarray(lin[:n])
    for array in (K, K_y, K_rows_y, K_rows_x, K_yy, lin, lin_y, lin_x):
        array.flags.writeable = False

    def full(idx: np.ndarray) -> bool:
        return len(idx) == N

    def value(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
        if full(idx):
            z = np.concatenate((x, y))
            return float(z @ (0.5 * (K @ z) + lin))
        a, b, c, d = data.a[idx], data.b[idx], data.c[idx], data.d[idx]
        terms = 0.5 * (a @ y) ** 2 + 0.5 * (b @ x) ** 2 + (c @ x) * (d @ y) + data.lin_y[idx] @ y + data.lin_x[idx] @ x
        return float(terms.mean())

    def grad(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if full(idx):
            g = K @ np.concatenate((x, y))
            g += lin
            return g[:n], g[n:]
        a, b, c, d = data.a[idx], data.b[idx], data.c[idx], data.d[idx]
        k = len(idx)
        gx = (b.T @ (b @ x) + c.T @ (d @ y)) / k + data.lin_x[idx].mean(axis=0)
        gy = (a.T @ (a @ y) + d.T @ (c @ x)) / k + data.lin_y[idx].mean(axis=0)
        return gx, gy

    def grad_y(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        g = K_rows_y @ np.concatenate((x, y))
        g += lin_y
        return g

    def grad_y_pair(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = grad_y(x, y)
        g_z = K_yy @ (z - y)
        g_z += g
        return g, g_z

    def grad_x(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        g = K_rows_x @ np.concatenate((x, y))
        g += lin_x
        return g

    def grad_pair(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Any:
        # at (x, z): the gradient at (x, y) plus K's y columns times z - y (exact for a quadratic): 1.5
        # matrix-vector products instead of 2 (a two-column BLAS product is slower than two matvecs at this size)
        g = K @ np.concatenate((x, y))
        g += lin
        g_z = K_y @ (z - y)
        g_z += g
        return (g[:n], g[n:]), (g_z[:n], g_z[n:])

    def hvp(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray, idx: np.ndarray) -> Any:
        if full(idx):
            # v_x = 0 (conjugate gradient in y, power iterations): half the matrix
            h = K_y @ vy if not vx.any() else K @ np.concatenate((vx, vy))
            return h[:n], h[n:]
        a, b, c, d = data.a[idx], data.b[idx], data.c[idx], data.d[idx]
        k = len(idx)
        return (b.T @ (b @ vx) + c.T @ (d @ vy)) / k, (a.T @ (a @ vy) + d.T @ (c @ vx)) / k

    return FiniteSum(value, N, grad=grad, hvp=hvp, grad_y=grad_y, grad_pair=grad_pair, grad_x=grad_x,
                     grad_y_pair=grad_y_pair, name=name)


def _factors(rng: np.random.Generator, n_samples: int, dim_x: int, dim_y: int, mu: float, L: float,
             L_cross: float) -> _QuadraticData:
    def orthonormal(k: int) -> np.ndarray:
        q, _ = np.linalg.qr(rng.standard_normal((n_samples, k)))
        return q

    def spd_root(dim: int) -> np.ndarray:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        return (q * np.sqrt(np.linspace(mu, L, dim))) @ q.T

    root_n = np.sqrt(n_samples)
    a = root_n * orthonormal(dim_y) @ spd_root(dim_y)
    b = root_n * orthonormal(dim_x) @ spd_root(dim_x)
    u, _, vt = np.linalg.svd(rng.standard_normal((dim_x, dim_y)), full_matrices=False)
    k = min(dim_x, dim_y)
    s = np.sqrt(L_cross * np.linspace(0.1, 1.0, k))  # spectral norm of the mean cross term is L_cross
    w = orthonormal(k)
    c = root_n * (w * s) @ u.T
    d = root_n * (w * s) @ vt
    return _QuadraticData(a, b, c, d, rng.standard_normal((n_samples, dim_y)), rng.standard_normal((n_samples, dim_x)))


def t2(dim_x: int = 10, dim_y: int = 10, n_samples: int = 64, *, mu: float = 0.1, L: float = 1.0,
       L_cross: float = 0.1, seed: int = 0, jax: bool = False) -> BilevelToy:
    r"""T2: a quadratic finite sum with rank-one per-sample Hessians, in the spirit of benchopt's ``simulated``.

    Lower :math:`f = \frac1N\sum_i \tfrac12 y^\top A_i y + \tfrac12 x^\top B_i x + x^\top C_i y + a_i^\top y
    + b_i^\top x` and the upper :math:`F` likewise (independent draws), with :math:`\bar A` of spectrum
    :math:`[\mu, L]` and :math:`\|\bar C\|_2 = L_{cross}`. Our own generator (benchopt's recipe is reproduced in
    spirit: rank-one samples whose means have prescribed spectra; regenerated until the hyper-objective is strictly
    convex). With :math:`J = -\bar A^{-1}\bar C^\top`, :math:`y^*(x) = -\bar A^{-1}(\bar a + \bar C^\top x)` and

    .. math::

        \nabla\varphi(x) = \bar H x + \bar K y^* + \bar h + J^\top(\bar F y^* + \bar K^\top x + \bar f),

    a quadratic with Hessian :math:`\bar H + \bar K J + J^\top \bar K^\top + J^\top \bar F J`, so :math:`x^*` is one
    linear solve (notes §7, T2). ``t2(100, 100, 1024)`` is the benchmark size. ``jax=True``: the same instance
    with JAX-traceable levels (:func:`_jax_quadratic`), for the solvers' ``backend="jax"``.
    """
    rng = np.random.default_rng(seed)
    for _ in range(100):
        low = _factors(rng, n_samples, dim_x, dim_y, mu, L, L_cross)
        up = _factors(rng, n_samples, dim_x, dim_y, mu, L, L_cross)
        ml, mu_ = low.means(), up.means()
        J = -np.linalg.solve(ml["yy"], ml["xy"].T)  # dy*/dx, shape (dim_y, dim_x)
        hess = mu_["xx"] + mu_["xy"] @ J + J.T @ mu_["xy"].T + J.T @ mu_["yy"] @ J
        if np.linalg.eigvalsh(0.5 * (hess + hess.T)).min() > 1e-3:
            break
    else:  # pragma: no cover - the spectra above make this practically impossible
        raise RuntimeError("could not draw a strictly convex hyper-objective")

    def y_of_x(x: np.ndarray) -> np.ndarray:
        return -np.linalg.solve(ml["yy"], ml["ly"] + ml["xy"].T @ np.asarray(x))

    def hypergradient(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        y = y_of_x(x)
        return mu_["xx"] @ x + mu_["xy"] @ y + mu_["lx"] + J.T @ (mu_["yy"] @ y + mu_["xy"].T @ x + mu_["ly"])

    # Hypergradient is affine: grad(x) = hess x + grad(0).
    x_star = np.linalg.solve(hess, -hypergradient(np.zeros(dim_x)))
    problem = _quadratic_problem("T2", up, low, dim_x, dim_y, jax, "t2")
    y_star = y_of_x(x_star)
    return BilevelToy("T2", problem, x_star, y_star, problem.upper.value(x_star, y_star),
                      y_of_x=y_of_x, hypergradient=hypergradient)


def _quadratic_problem(name: str, up: _QuadraticData, low: _QuadraticData, dim_x: int, dim_y: int, jax: bool,
                       prefix: str) -> BilevelProblem:
    if jax:
        upper, lower = _jax_quadratic(up.means()), _jax_quadratic(low.means())
    else:
        upper, lower = _quadratic_sum(up, f"{prefix}_upper"), _quadratic_sum(low, f"{prefix}_lower")
    return BilevelProblem(upper, lower, x0=np.zeros(dim_x), y0=np.zeros(dim_y), name=name)


def _jax_quadratic(means: dict[str, np.ndarray]) -> Callable[[Any, Any], Any]:
    r"""The full-batch quadratic :math:`\tfrac12 y^\top\bar A y + \tfrac12 x^\top\bar B x + x^\top\bar C y +
    \bar a^\top y + \bar b^\top x` as a JAX-traceable ``phi(x, y)`` (the mean matrices as NumPy float64 constants,
    float64 when traced under ``jax.enable_x64``), for ``backend="jax"``: its gradients and Hessian-vector
    products come from autodiff."""
    import jax.numpy as jnp

    yy, xx, xy, ly, lx = (np.array(means[k], dtype=np.float64) for k in ("yy", "xx", "xy", "ly", "lx"))

    def phi(x: Any, y: Any) -> Any:
        return 0.5 * y @ (yy @ y) + 0.5 * x @ (xx @ x) + x @ (xy @ y) + jnp.dot(ly, y) + jnp.dot(lx, x)

    return phi


def _benchopt_factors(rng: np.random.RandomState, n_samples: int, dim_y: int, dim_x: int, L_yy: float,
                      L_xx: float, L_cross: float, mu: float) -> _QuadraticData:
    r"""One level of benchopt's ``quadratic`` recipe (``benchmark_utils/oracles/quadratic.py``, ``gen_matrices``),
    re-implemented from its description: :math:`H_i = s_i^\top s_i` with :math:`s_i = g_i A`, :math:`g_i \sim
    N(0, I)` and :math:`A = U\,\mathrm{diag}(\sqrt{\lambda})\,U^\top` (:math:`U` the left singular vectors of a
    Gaussian vector, :math:`\lambda` log-spaced in :math:`[\mu, L]`; the x-block has one zero eigenvalue), cross
    terms :math:`C_i = (U_c D g_i^\top)(g_i V_c^\top)` with :math:`D` log-spaced in :math:`[\mu, L_{cross}]`,
    Gaussian linear terms. The draws follow the recipe's order; benchopt draws :math:`U_c, V_c` from NumPy's
    unseeded global generator, we draw them from the seeded one so that the instance is reproducible."""
    def sqrt_hessian(dim: int, top: float, zero_first: bool) -> np.ndarray:
        u, _, _ = np.linalg.svd(rng.randn(dim, 1))
        if zero_first:
            diag = np.r_[0.0, np.logspace(np.log10(mu) / 2, np.log10(top) / 2, dim - 1)]
        else:
            diag = np.logspace(np.log10(mu) / 2, np.log10(top) / 2, dim)
        return (u * diag) @ u.T

    a_root = sqrt_hessian(dim_y, L_yy, False)
    a = rng.randn(n_samples, dim_y) @ a_root  # rows s_i: H_i = s_i^T s_i (yy block)
    b_root = sqrt_hessian(dim_x, L_xx, True)
    b = rng.randn(n_samples, dim_x) @ b_root  # xx block
    u_c, _, v_c = np.linalg.svd(rng.randn(dim_x, dim_y))
    k = min(dim_x, dim_y)
    diag = np.zeros((dim_x, dim_y))
    diag[:k, :k] = np.diag(np.logspace(np.log10(mu), np.log10(L_cross), k))
    g = rng.randn(n_samples, dim_y)
    c = g @ (u_c @ diag).T  # x-side factor U D g_i^T (as a row)
    d = g @ v_c.T  # y-side factor g_i V^T (V = the right singular vectors as rows, NumPy's vh)
    lin_y, lin_x = rng.randn(n_samples, dim_y), rng.randn(n_samples, dim_x)
    return _QuadraticData(a, b, c, d, lin_y, lin_x)


def benchopt_quadratic(dim_x: int = 100, dim_y: int = 100, n_samples: int = 1024, *, mu: float = 0.1,
                       L: float = 1.0, L_cross: float = 0.1, seed: int = 0, jax: bool = False) -> BilevelToy:
    r"""The benchopt bilevel benchmark's ``quadratic`` / ``simulated`` instance, built with its recipe
    (see :func:`_benchopt_factors`): lower and upper levels are independent draws (seeds from
    ``RandomState(seed).randint(2**31 - 1, size=2)``), redrawn (at most 20 times) until the Hessian of the
    hyper-objective has smallest eigenvalue :math:`\ge 10^{-12}`. Defaults are the benchmark's (``dim = 100``,
    ``n = 1024``, :math:`\mu = 0.1`, :math:`L = 1`, :math:`L_{cross} = 0.1`); benchopt's seed is 2442, the issue's
    measurements use 0. ``hypergradient`` is exact (linear solves), as benchopt's ``value`` metric
    :math:`\|\nabla h(x)\|^2`. ``jax=True``: the same instance with JAX-traceable levels (full-batch
    quadratics in the mean matrices), for the solvers' ``backend="jax"``.
    """
    rng = np.random.RandomState(seed)
    for _ in range(20):
        seed_low, seed_up = rng.randint(2**31 - 1, size=2)
        low = _benchopt_factors(np.random.RandomState(seed_low), n_samples, dim_y, dim_x, L, L, L_cross, mu)
        up = _benchopt_factors(np.random.RandomState(seed_up), n_samples, dim_y, dim_x, L, L, L_cross, mu)
        ml, mu_ = low.means(), up.means()
        J = -np.linalg.solve(ml["yy"], ml["xy"].T)
        hess = mu_["xx"] + mu_["xy"] @ J + J.T @ mu_["xy"].T + J.T @ mu_["yy"] @ J
        if np.linalg.eigvalsh(0.5 * (hess + hess.T)).min() >= 1e-12:
            break
    else:  # pragma: no cover
        raise RuntimeError("could not draw a hyper-objective with a positive definite Hessian in 20 trials")
    return _quadratic_toy("benchopt-quadratic", up, low, ml, mu_, J, hess, dim_x, dim_y, jax)


def _quadratic_toy(name: str, up: _QuadraticData, low: _QuadraticData, ml: dict, mu_: dict, J: np.ndarray,
                   hess: np.ndarray, dim_x: int, dim_y: int, jax: bool = False) -> BilevelToy:
    def y_of_x(x: np.ndarray) -> np.ndarray:
        return -np.linalg.solve(ml["yy"], ml["ly"] + ml["xy"].T @ np.asarray(x))

    def hypergradient(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        y = y_of_x(x)
        return mu_["xx"] @ x + mu_["xy"] @ y + mu_["lx"] + J.T @ (mu_["yy"] @ y + mu_["xy"].T @ x + mu_["ly"])

    x_star = np.linalg.solve(hess, -hypergradient(np.zeros(dim_x)))
    problem = _quadratic_problem(name, up, low, dim_x, dim_y, jax, name)
    y_star = y_of_x(x_star)
    return BilevelToy(name, problem, x_star, y_star, problem.upper.value(x_star, y_star),
                      y_of_x=y_of_x, hypergradient=hypergradient)


# ---------------------------------------------------------------------------------------------- T3, T4, T5
def _t34_upper(n: int) -> Function:
    def value(z: np.ndarray) -> float:
        x, y1, y2 = z[:n], z[n:2 * n], z[2 * n:]
        return 0.5 * float(np.sum((x - y2) ** 2) + np.sum((y1 - 1.0) ** 2))

    def grad(z: np.ndarray) -> np.ndarray:
        x, y1, y2 = z[:n], z[n:2 * n], z[2 * n:]
        return np.concatenate([x - y2, y1 - 1.0, y2 - x])

    def hvp(z: np.ndarray, v: np.ndarray) -> np.ndarray:
        vx, v1, v2 = v[:n], v[n:2 * n], v[2 * n:]
        return np.concatenate([vx - v2, v1, v2 - vx])

    return _function(value, grad, hvp, "t34_upper")


def _t34_lower(n: int, linear_y2: float) -> Function:
    r""":math:`\tfrac12\|y_1\|^2 - x^\top y_1 + c\,\mathbf 1^\top y_2`."""

    def value(z: np.ndarray) -> float:
        x, y1, y2 = z[:n], z[n:2 * n], z[2 * n:]
        return float(0.5 * y1 @ y1 - x @ y1 + linear_y2 * np.sum(y2))

    def grad(z: np.ndarray) -> np.ndarray:
        x, y1 = z[:n], z[n:2 * n]
        return np.concatenate([-y1, y1 - x, np.full(n, linear_y2)])

    def hvp(z: np.ndarray, v: np.ndarray) -> np.ndarray:
        vx, v1 = v[:n], v[n:2 * n]
        return np.concatenate([-v1, v1 - vx, np.zeros(n)])

    return _function(value, grad, hvp, "t34_lower")


def t3(n: int = 2, x0: float = 0.0, y0: float = 0.0) -> BilevelToy:
    r"""T3: a non-singleton lower level (the BDA example, Liu et al. ICML 2020).

    :math:`f = \tfrac12\|y_1\|^2 - x^\top y_1` (so :math:`y_1 = x`, :math:`y_2` free),
    :math:`F = \tfrac12\|x - y_2\|^2 + \tfrac12\|y_1 - \mathbf 1\|^2`. Optimistic optimum
    :math:`x = y_1 = y_2 = \mathbf 1`, :math:`F^* = 0`.
    """
    problem = BilevelProblem(_t34_upper(n), _t34_lower(n, 0.0), x0=np.full(n, x0), y0=np.full(2 * n, y0), name="T3")
    return BilevelToy("T3", problem, np.ones(n), np.ones(2 * n), 0.0,
                      note="lower level not strongly convex in y2: implicit differentiation does not apply")


def _sum_constraint(n: int) -> LowerConstraints:
    return LowerConstraints(equality=(np.ones((1, n)), np.ones((1, 2 * n)), np.zeros(1)))


def t4(n: int = 100, x0: float = 10.0, y0: float = 10.0) -> BilevelToy:
    r"""T4: LV-HBA's LLC toy, a coupled equality constraint.

    :math:`F = \tfrac12\|x - y_2\|^2 + \tfrac12\|y_1 - \mathbf 1\|^2`; lower
    :math:`\min_y \tfrac12\|y_1\|^2 - x^\top y_1 + \mathbf 1^\top y_2` s.t. :math:`\mathbf 1^\top x + \mathbf 1^\top y
    = 0`. Lower solutions :math:`y_1 = x + \mathbf 1`, any :math:`y_2` with :math:`\mathbf 1^\top y_2 =
    -2\,\mathbf 1^\top x - n`; optimum :math:`x^* = -0.3\cdot\mathbf 1`, :math:`y_1^* = 0.7`, :math:`y_2^* = -0.4`,
    :math:`F^* = 0.05\,n`. Start :math:`x = y = 10\cdot\mathbf 1` as in the official script.
    """
    problem = BilevelProblem(_t34_upper(n), _t34_lower(n, 1.0), x0=np.full(n, x0), y0=np.full(2 * n, y0),
                             lower_constraints=_sum_constraint(n), name="T4")
    y_star = np.concatenate([np.full(n, 0.7), np.full(n, -0.4)])
    return BilevelToy("T4", problem, np.full(n, -0.3), y_star, 0.05 * n)


def t5(n: int = 10, x0: float = 0.0, y0: float = 0.0) -> BilevelToy:
    r"""T5: the BiC-GAFFA toy, T4's lower level with :math:`F = (y_1 - 2)^\top(x - 1) + \|y_2 + 3\|^2`.

    Optimum :math:`x^* = \mathbf 1`, :math:`y_1^* = 2`, :math:`y_2^* = -3`, :math:`F^* = 0`; on the lower solution
    set :math:`\varphi(x) = \|x - 1\|^2 + 4n(1 - \bar x)^2`.
    """
    def value(z: np.ndarray) -> float:
        x, y1, y2 = z[:n], z[n:2 * n], z[2 * n:]
        return float((y1 - 2.0) @ (x - 1.0) + np.sum((y2 + 3.0) ** 2))

    def grad(z: np.ndarray) -> np.ndarray:
        x, y1, y2 = z[:n], z[n:2 * n], z[2 * n:]
        return np.concatenate([y1 - 2.0, x - 1.0, 2.0 * (y2 + 3.0)])

    def hvp(z: np.ndarray, v: np.ndarray) -> np.ndarray:
        vx, v1, v2 = v[:n], v[n:2 * n], v[2 * n:]
        return np.concatenate([v1, vx, 2.0 * v2])

    problem = BilevelProblem(_function(value, grad, hvp, "t5_upper"), _t34_lower(n, 1.0), x0=np.full(n, x0),
                             y0=np.full(2 * n, y0), lower_constraints=_sum_constraint(n), name="T5")
    return BilevelToy("T5", problem, np.ones(n), np.concatenate([np.full(n, 2.0), np.full(n, -3.0)]), 0.0)


# ---------------------------------------------------------------------------------------------- T6
def t6(x0: float = 1.8, y0: float = 0.0) -> BilevelToy:
    r"""T6: Shen & Chen's PBGD toy; the lower level is nonconvex in :math:`(x, y)` but PL in :math:`y`.

    :math:`f = (x+y)^2 + x\sin^2(x+y)`, :math:`F = \cos(4y+2)/(1+e^{2-4x}) + \tfrac12\ln((4x-2)^2+1)`,
    :math:`X = [0, 3]`; :math:`y^*(x) = -x`. Local minima of :math:`\varphi(x) = F(x, -x)` at
    :math:`x \approx 0.3824, 1.2152` (global, :math:`\varphi \approx 0.19991`) and :math:`2.8296`.
    Documented start: :math:`x_0 = 1.8` lies in the basin of the global minimum (between the maxima of
    :math:`\varphi` at 0.747 and 2.109).
    """
    def upper_value(z: np.ndarray) -> float:
        x, y = z
        return float(np.cos(4 * y + 2) * expit(4 * x - 2) + 0.5 * np.log((4 * x - 2) ** 2 + 1))

    def upper_grad(z: np.ndarray) -> np.ndarray:
        x, y = z
        s = expit(4 * x - 2)
        u = 4 * x - 2
        return np.array([4 * np.cos(4 * y + 2) * s * (1 - s) + 4 * u / (u * u + 1), -4 * np.sin(4 * y + 2) * s])

    def lower_value(z: np.ndarray) -> float:
        x, y = z
        return float((x + y) ** 2 + x * np.sin(x + y) ** 2)

    def lower_grad(z: np.ndarray) -> np.ndarray:
        x, y = z
        s = x + y
        return np.array([2 * s + np.sin(s) ** 2 + x * np.sin(2 * s), 2 * s + x * np.sin(2 * s)])

    def lower_hvp(z: np.ndarray, v: np.ndarray) -> np.ndarray:
        x, y = z
        s = x + y
        hxx = 2 + 2 * np.sin(2 * s) + 2 * x * np.cos(2 * s)
        hxy = 2 + np.sin(2 * s) + 2 * x * np.cos(2 * s)
        hyy = 2 + 2 * x * np.cos(2 * s)
        return np.array([hxx * v[0] + hxy * v[1], hxy * v[0] + hyy * v[1]])

    problem = BilevelProblem(_function(upper_value, upper_grad, name="t6_upper"),
                             _function(lower_value, lower_grad, lower_hvp, "t6_lower"),
                             x0=[x0], y0=[y0], x_set=Box(0.0, 3.0, dim=1), name="T6")
    minima = ((1.2152, 0.19991), (0.3824, 0.44271), (2.8296, 1.24346))
    return BilevelToy("T6", problem, np.array([1.2152]), np.array([-1.2152]), 0.19991, minima,
                      y_of_x=lambda x: -np.asarray(x, dtype=float))


# ---------------------------------------------------------------------------------------------- T7
def t7(variant: int = 1, x0: float | None = None, y0: float = 0.0) -> BilevelToy:
    r"""T7: the BLOCC toys, a coupled inequality :math:`y \le x`.

    Lower :math:`f = (y - 2x)^2` s.t. :math:`y \le x`, :math:`X = [0, 3]`, so :math:`y^*(x) = x`.

    * ``variant=1``: :math:`F = e^{2-y}/(2+\cos 4x) + \tfrac12\ln((4x-2)^2+1) + x^2`; minima
      :math:`x \approx 0.3007` (global, :math:`\varphi \approx 2.6545`) and 1.1627 (3.585); the global basin is :math:`[0, 0.789)`.
      Documented start :math:`x_0 = 0.6`.
    * ``variant=2``: :math:`\cos 6x` and no :math:`x^2`; minima 0.1489, 0.9862 (global, 1.72188), 2.0197,
      2.9908; the global basin is :math:`(0.495, 1.559)`. Documented start :math:`x_0 = 1.2`.
    """
    if variant not in (1, 2):
        raise ValueError(f"variant must be 1 or 2, got {variant!r}")
    freq, quad = (4.0, 1.0) if variant == 1 else (6.0, 0.0)
    if x0 is None:
        x0 = 0.6 if variant == 1 else 1.2

    def upper_value(z: np.ndarray) -> float:
        x, y = z
        return float(np.exp(2 - y) / (2 + np.cos(freq * x)) + 0.5 * np.log((4 * x - 2) ** 2 + 1) + quad * x * x)

    def upper_grad(z: np.ndarray) -> np.ndarray:
        x, y = z
        den = 2 + np.cos(freq * x)
        u = 4 * x - 2
        gx = np.exp(2 - y) * freq * np.sin(freq * x) / den**2 + 4 * u / (u * u + 1) + 2 * quad * x
        return np.array([gx, -np.exp(2 - y) / den])

    lower = _function(lambda z: float((z[1] - 2 * z[0]) ** 2),
                      lambda z: np.array([-4 * (z[1] - 2 * z[0]), 2 * (z[1] - 2 * z[0])]),
                      lambda z, v: np.array([8 * v[0] - 4 * v[1], -4 * v[0] + 2 * v[1]]), "t7_lower")
    cons = LowerConstraints(inequality=(-np.ones((1, 1)), np.ones((1, 1)), np.zeros(1)))
    problem = BilevelProblem(_function(upper_value, upper_grad, name=f"t7_{variant}_upper"), lower,
                             x0=[x0], y0=[y0], x_set=Box(0.0, 3.0, dim=1), lower_constraints=cons,
                             name=f"T7-{variant}")
    if variant == 1:
        minima = ((0.3007, 2.6545), (1.1627, 3.585))
    else:
        minima = ((0.9862, 1.72188), (0.1489, None), (2.0197, None), (2.9908, None))
    best = minima[0]
    return BilevelToy(f"T7-{variant}", problem, np.array([best[0]]), np.array([best[0]]), best[1], minima,
                      y_of_x=lambda x: np.asarray(x, dtype=float))


# ---------------------------------------------------------------------------------------------- T8
def t8(n: int = 10, p: int = 9, q: int = 2, seed: int = 0) -> BilevelToy:
    r"""T8: the LLSC toy (LV-HBA / AiPOD) on a random instance of our own (the official ``.npy`` data are not
    shipped): lower :math:`\min_y \tfrac12\|x - y\|^2` s.t. :math:`A y + H x = 0` (:math:`A \in \mathbb{R}^{p\times
    n}`), so :math:`y^*(x) = (I - A^+A)x - A^+Hx`; upper :math:`F = \sin(c^\top x + d^\top y) + \ln(\|x + y\|^2 + 1)`
    with the upper constraint :math:`Bx = 0` (:math:`B \in \mathbb{R}^{q\times n}`). The upper optimum is not known;
    use :attr:`BilevelToy.y_of_x` to test :math:`\|y - y^*(x)\|`. The official sizes are ``n=100, p=90``.
    """
    rng = np.random.default_rng(seed)
    A, H, B = rng.standard_normal((p, n)), rng.standard_normal((p, n)), rng.standard_normal((q, n))
    c, d = rng.standard_normal(n), rng.standard_normal(n)

    def upper_value(z: np.ndarray) -> float:
        x, y = z[:n], z[n:]
        s = x + y
        return float(np.sin(c @ x + d @ y) + np.log(s @ s + 1))

    def upper_grad(z: np.ndarray) -> np.ndarray:
        x, y = z[:n], z[n:]
        s = x + y
        common = 2 * s / (s @ s + 1)
        t = np.cos(c @ x + d @ y)
        return np.concatenate([t * c + common, t * d + common])

    lower = _function(lambda z: 0.5 * float(np.sum((z[:n] - z[n:]) ** 2)),
                      lambda z: np.concatenate([z[:n] - z[n:], z[n:] - z[:n]]),
                      lambda z, v: np.concatenate([v[:n] - v[n:], v[n:] - v[:n]]), "t8_lower")
    pinv = np.linalg.pinv(A)

    def y_of_x(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return x - pinv @ (A @ x) - pinv @ (H @ x)

    upper_set = Affine(np.hstack([B, np.zeros((q, n))]), np.zeros(q))
    problem = BilevelProblem(_function(upper_value, upper_grad, name="t8_upper"), lower, x0=np.zeros(n),
                             y0=np.zeros(n), lower_constraints=LowerConstraints(equality=(H, A, np.zeros(p))),
                             upper_set=upper_set, name="T8")
    return BilevelToy("T8", problem, y_of_x=y_of_x, note="upper optimum unknown; test y against y_of_x")


#: Factories by name.
TOYS: dict[str, Callable[..., BilevelToy]] = {
    "T1": t1, "T2": t2, "T3": t3, "T4": t4, "T5": t5, "T6": t6, "T7": t7, "T8": t8,
}
