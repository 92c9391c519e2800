r"""Distributionally robust logistic regression over a chi-square ball, as a finite-sum min-max problem.

.. math::

    \min_{x\in\mathbb R^d}\ \max_{p\in P}\ \sum_{i=1}^N p_i\,\ell_i(x) + \frac\lambda2\|x\|^2,
    \qquad \ell_i(x) = \log\big(1 + e^{-b_i a_i^\top x}\big),

    P = \Big\{p \in \Delta^N :\ \tfrac12\sum_i \tfrac1N (N p_i - 1)^2 \le \rho\Big\}
      = \Delta^N \cap \{\|p - \tfrac1N\mathbf 1\|_2 \le r\},\quad r = \sqrt{2\rho/N}

(the chi-square uncertainty set of Namkoong and Duchi, NeurIPS 2016). Cai, Alacaoglu and Diakonikolas (ICLR 2024)
motivate such finite sums but do not run one. As the monotone inclusion :math:`0 \in F(u) + N_{\mathbb R^d\times
P}(u)`, :math:`u = (x, p)`, the operator splits into :math:`N` components, one per sample,

.. math::

    F_i(x, p) = \big(N p_i\,\nabla\ell_i(x) + \lambda x,\; -N\,\ell_i(x)\, e_i\big),\qquad
    \frac1N\sum_i F_i = \big(\textstyle\sum_i p_i\nabla\ell_i(x) + \lambda x,\; -\ell(x)\big),

monotone (the gradient field of a convex-concave function) and Lipschitz on :math:`\mathbb R^d\times P`, not
cocoercive. The resolvent of :math:`G` projects :math:`p` onto :math:`P` (:func:`project_chi_square_ball`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from optkit.problems.monotone import MonotoneInclusion
from optkit.problems.sets import Simplex

__all__ = ["DROLogistic", "dro_logistic", "project_chi_square_ball"]


def project_chi_square_ball(v: np.ndarray, radius: float) -> np.ndarray:
    r"""Euclidean projection of ``v`` onto :math:`\Delta^N \cap \{\|p - \mathbf 1/N\| \le r\}`.

    With a multiplier :math:`\mu \ge 0` on the ball, the KKT conditions give
    :math:`p(\mu) = \Pi_\Delta\big((v + \mu\,\mathbf 1/N)/(1 + \mu)\big)`; :math:`\mu = 0` if that point is in the
    ball, else :math:`\mu` is the root of :math:`\|p(\mu) - \mathbf 1/N\| = r` (nonincreasing in :math:`\mu`),
    found by Brent's method.
    """
    N = v.size
    simplex = Simplex(N)
    center = np.full(N, 1.0 / N)

    def excess(mu: float) -> float:
        return float(np.linalg.norm(simplex.project((v + mu * center) / (1.0 + mu)) - center)) - radius

    if excess(0.0) <= 0.0:
        return simplex.project(v)
    hi = 1.0
    while excess(hi) > 0.0:
        hi *= 4.0
        if hi > 1e300:
            break
    mu = brentq(excess, 0.0, hi, xtol=1e-14, rtol=1e-14)
    p = simplex.project((v + mu * center) / (1.0 + mu))
    # Pull back onto the ball exactly (the root is found to ~1e-14; the segment to the centre stays in the simplex).
    distance = np.linalg.norm(p - center)
    return center + (p - center) * min(1.0, radius / distance) if distance > 0 else p


def _spectral_2x2(M: np.ndarray) -> float:
    """Spectral norm of a 2 x 2 matrix."""
    return float(np.linalg.norm(M, 2))


def _constants(A: np.ndarray, lam: float, radius: float) -> tuple[float, float, np.ndarray]:
    r"""Valid constants on :math:`\mathbb R^d\times P`: :math:`L_F`, the mean-square :math:`L` and per-component
    :math:`L_i` (see :class:`DROLogistic`, Notes)."""
    N = A.shape[0]
    row_sq = np.sum(A**2, axis=1)
    spectral = float(np.linalg.norm(A, 2))
    # max p_i over the simplex intersected with the ball: the deviation e_i - 1/N direction has norm sqrt((N-1)/N).
    p_max = min(1.0, 1.0 / N + radius * math.sqrt((N - 1) / N))
    h = lam + min(float(row_sq.max()), p_max * spectral**2) / 4
    lipschitz = _spectral_2x2(np.array([[h, spectral], [spectral, 0.0]]))
    a1 = p_max * math.sqrt(N * float(row_sq.max())) * spectral / 4
    mean_square = _spectral_2x2(np.array([[a1 + lam, math.sqrt(N * float(row_sq.max()))],
                                          [math.sqrt(N) * spectral, 0.0]]))
    alpha, beta = N * p_max * row_sq / 4 + lam, N * np.sqrt(row_sq)
    per_component = 0.5 * (alpha + np.sqrt(alpha**2 + 4 * beta**2))
    return lipschitz, mean_square, per_component


class DROLogistic(MonotoneInclusion):
    r"""Chi-square DRO logistic regression (see the module docstring) as a :class:`MonotoneInclusion`.

    Parameters
    ----------
    features : array_like or scipy.sparse matrix, shape (N, d)
        Rows :math:`a_i` (densified).
    labels : array_like, shape (N,)
        :math:`b_i \in \{-1, +1\}`.
    rho : float
        Chi-square radius :math:`\rho > 0` (:math:`r = \sqrt{2\rho/N}`).
    regularization : float
        :math:`\lambda > 0`.
    name : str, optional

    Notes
    -----
    ``lipschitz``, ``lipschitz_components`` and ``component_constants`` are valid upper bounds on
    :math:`\mathbb R^d\times P`, from :math:`|\sigma| \le 1`, :math:`\sigma' \le 1/4` and
    :math:`p_i \le p_{\max} = \min(1, 1/N + r\sqrt{(N-1)/N})`. The Jacobian of :math:`F` is
    :math:`\begin{pmatrix} H & B^\top\\ -B & 0\end{pmatrix}` with :math:`\|H\| \le h = \lambda +
    \min(\max_i\|a_i\|^2, p_{\max}\|A\|_2^2)/4` and :math:`\|B\| \le \|A\|_2`, so
    :math:`L_F \le \big\|\begin{pmatrix} h & \|A\|_2\\ \|A\|_2 & 0\end{pmatrix}\big\|_2`. Per component,
    :math:`\|F_i(u) - F_i(u')\|^2 \le (\alpha_i\|\Delta x\| + \beta_i|\Delta p_i|)^2 + \beta_i^2\|\Delta x\|^2`
    with :math:`\alpha_i = N p_{\max}\|a_i\|^2/4 + \lambda`, :math:`\beta_i = N\|a_i\|`, so
    :math:`L_i = \big\|\begin{pmatrix}\alpha_i & \beta_i\\ \beta_i & 0\end{pmatrix}\big\|_2`
    (``component_constants``). In mean square (Minkowski in :math:`L^2(i)`, :math:`\sum_i(\Delta\ell_i)^2 \le
    \|A\Delta x\|^2`), with :math:`m = \max_i\|a_i\|`:
    :math:`L \le \big\|\begin{pmatrix} p_{\max}\sqrt N m\|A\|_2/4 + \lambda & \sqrt N m\\
    \sqrt N\|A\|_2 & 0\end{pmatrix}\big\|_2`. The :math:`p`-block :math:`-N\ell_i e_i` of a component
    makes :math:`L` of order :math:`\sqrt N\|A\|_2 \ge \sqrt N L_F/2`: sampled components carry :math:`N`
    times the variance of the full :math:`p`-block, so variance reduction cannot beat the deterministic methods'
    :math:`nL_F` here by the paper's :math:`\sqrt n` factor. The start is :math:`x = 0`,
    :math:`p = \mathbf 1/N`.
    """

    def __init__(self, features: Any, labels: Any, *, rho: float = 0.5, regularization: float = 1e-2,
                 name: str | None = None) -> None:
        A = features.toarray() if hasattr(features, "toarray") else np.array(features, dtype=np.float64)
        A = np.ascontiguousarray(A, dtype=np.float64)
        b = np.asarray(labels, dtype=np.float64).reshape(-1)
        if A.ndim != 2 or A.shape[0] < 1:
            raise ValueError(f"features must be a nonempty 2-D array (N, d), got shape {A.shape}")
        if b.shape != (A.shape[0],):
            raise ValueError(f"labels must have shape ({A.shape[0]},), got {b.shape}")
        if not (np.all(np.isfinite(A)) and np.all(np.isin(b, (-1.0, 1.0)))):
            raise ValueError("features must be finite and labels must be -1 or +1")
        for argument, value in (("rho", rho), ("regularization", regularization)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{argument} must be a finite number > 0, got {value!r}")
        N, d = A.shape
        self.features, self.labels, self.rho, self.regularization = A, b, float(rho), float(regularization)
        self.radius = math.sqrt(2.0 * rho / N)
        self._N, self._d = N, d
        lam = float(regularization)

        def margins(x: np.ndarray, idx: np.ndarray | slice) -> np.ndarray:
            return b[idx] * (A[idx] @ x)

        def components(u: np.ndarray, idx: np.ndarray) -> np.ndarray:
            x, p = u[:d], u[d:]
            z = margins(x, idx)
            out = np.zeros((idx.size, d + N))
            out[:, :d] = (N * p[idx] * (-b[idx] * expit(-z)))[:, None] * A[idx] + lam * x
            out[np.arange(idx.size), d + idx] = -N * np.logaddexp(0.0, -z)
            return out

        def operator(u: np.ndarray) -> np.ndarray:
            x, p = u[:d], u[d:]
            z = margins(x, slice(None))
            return np.concatenate([A.T @ (p * (-b * expit(-z))) + lam * x, -np.logaddexp(0.0, -z)])

        radius = self.radius

        def prox(v: np.ndarray, eta: float) -> np.ndarray:
            return np.concatenate([v[:d], project_chi_square_ball(v[d:], radius)])

        lipschitz, lipschitz_components, self.component_constants = _constants(A, lam, radius)
        start = np.concatenate([np.zeros(d), np.full(N, 1.0 / N)])
        super().__init__(components, N, d + N, prox, operator=operator, lipschitz=lipschitz,
                         lipschitz_components=lipschitz_components, x0=start, cocoercive=False,
                         name=name or f"dro_logistic_N{N}_d{d}")

    def split(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x, p)``: the weights and the adversarial distribution."""
        return u[: self._d].copy(), u[self._d :].copy()

    def losses(self, x: Any) -> np.ndarray:
        r"""The per-sample losses :math:`\ell_i(x)`."""
        return np.logaddexp(0.0, -self.labels * (self.features @ np.asarray(x, dtype=np.float64)))

    def value(self, u: np.ndarray) -> float:
        """:math:`f(x, p) = p^\\top\\ell(x) + \\frac\\lambda2\\|x\\|^2`."""
        x, p = self.split(u)
        return float(p @ self.losses(x) + 0.5 * self.regularization * np.dot(x, x))


def dro_logistic(name: str = "a9a", *, samples: int | None = None, rho: float = 0.5,
                 regularization: float = 1e-2, seed: int = 0) -> DROLogistic:
    """The DRO problem on a LIBSVM data set (``"a9a"``, ``"w8a"``, ...), optionally on ``samples`` rows drawn
    without replacement with ``seed`` (read with :func:`optkit.data.load_libsvm`)."""
    from optkit.data import load_libsvm

    X, y = load_libsvm(name)
    if samples is not None:
        if not (isinstance(samples, int) and 1 <= samples <= X.shape[0]):
            raise ValueError(f"samples must be an int in [1, {X.shape[0]}], got {samples!r}")
        rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], samples, replace=False))
        X, y = X[rows], y[rows]
    return DROLogistic(X, y, rho=rho, regularization=regularization, name=f"dro_logistic_{name}_N{X.shape[0]}")
