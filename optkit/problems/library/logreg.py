r"""Constrained logistic regression on LIBSVM data (Hong, Na, Mahoney & Kolar, ICML 2023, Section 5).

.. math::

    \min_{w\in\mathbb{R}^d}\ f(w) = \frac1N\sum_{i=1}^N \log\bigl(1 + e^{-y_i x_i^\top w}\bigr)
    \quad\text{s.t.}\quad Aw = b,\qquad \|w\|^2 = 1,

with :math:`A\in\mathbb{R}^{10\times d}` and :math:`b\in\mathbb{R}^{10}` i.i.d. :math:`N(0, 1)`, so
:math:`m = 11`; start :math:`w^0 = \mathbf 1`, :math:`\lambda^0 = \mathbf 1` (the authors' code, notes A.4).

Derivatives use the structure and never differentiate through the data: with margins
:math:`\mu_i = y_i x_i^\top w` and :math:`\sigma(t) = 1/(1 + e^{-t})`,

.. math::

    \nabla f = -\tfrac1N X^\top\bigl(y\odot\sigma(-\mu)\bigr),\qquad
    \nabla^2 f = \tfrac1N X^\top D X,\ D = \operatorname{diag}\bigl(\sigma(\mu)\sigma(-\mu)\bigr),\qquad
    \nabla^2_w\mathcal L = \nabla^2 f + 2\lambda_{11} I,

and :math:`G = \begin{pmatrix} A \\ 2w^\top\end{pmatrix}`. :math:`X^\top D X` is formed once per Hessian call
from the sparse (CSR) or dense data matrix, :math:`O(\sum_i \mathrm{nnz}(x_i)^2)`; Hessian-vector products cost two
products with :math:`X`.

The reference code draws :math:`A, b` with Julia's generator (seed 2023); we draw them with NumPy from ``seed``,
so the instances have the same distribution, not the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import expit

from optkit._arrays import as_generator
from optkit.problems.functions import Function
from optkit.problems.nlp import NonlinearProgram

__all__ = ["PAPER_DATASETS", "constrained_logistic_regression", "logistic_problem"]

#: The seven LIBSVM data sets of the paper's experiment (N x d: 351x34, 8124x112, 11055x68, 208x60, 1000x60,
#: 32561x123, 49749x300).
PAPER_DATASETS = ("ionosphere_scale", "mushrooms", "phishing", "sonar_scale", "splice_scale", "a9a", "w8a")


class _Logistic:
    """The logistic loss on fixed data, caching the margins of the last point (f and its gradient share them)."""

    def __init__(self, X: Any, y: np.ndarray) -> None:
        self.X, self.y, self.N = X, y, X.shape[0]
        self._w: np.ndarray | None = None
        self._margins = np.empty(0)

    def margins(self, w: np.ndarray) -> np.ndarray:
        if self._w is None or not np.array_equal(w, self._w):
            self._margins = self.y * np.asarray(self.X @ w).reshape(-1)
            self._w = np.array(w, dtype=np.float64)
        return self._margins

    def value(self, w: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0.0, -self.margins(w))))

    def grad(self, w: np.ndarray) -> np.ndarray:
        weights = -self.y * expit(-self.margins(w)) / self.N
        return np.asarray(self.X.T @ weights).reshape(-1)

    def curvature(self, w: np.ndarray) -> np.ndarray:
        mu = self.margins(w)
        return expit(mu) * expit(-mu) / self.N

    def hess(self, w: np.ndarray) -> np.ndarray:
        d = self.curvature(w)
        X = self.X
        if sparse.issparse(X):
            H = (X.T @ sparse.diags(d) @ X).toarray()
        else:
            H = X.T @ (X * d[:, None])
        return 0.5 * (H + H.T)

    def hvp(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.X.T @ (self.curvature(w) * np.asarray(self.X @ v).reshape(-1))).reshape(-1)


def logistic_problem(X: Any, y: Any, A: Any, b: Any, *, x0: Any = None, lam0: Any = None,
                     name: str = "logreg") -> NonlinearProgram:
    r"""Logistic regression on ``(X, y)`` subject to :math:`Aw = b` and :math:`\|w\|^2 = 1`.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix, shape (N, d)
    y : array_like, shape (N,)
        Labels in :math:`\{-1, +1\}`.
    A : array_like, shape (k, d); b : array_like, shape (k,)
        Linear equalities (``k = 0`` allowed).
    x0, lam0 : array_like, optional
        Defaults :math:`\mathbf 1` (length ``d``) and :math:`\mathbf 1` (length ``k + 1``), as in the paper.

    Raises
    ------
    ValueError
        Naming the argument for inconsistent shapes, labels outside :math:`\{-1, +1\}` or non-finite data.
    """
    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=np.float64)
        values = X.data
    else:
        X = np.ascontiguousarray(X, dtype=np.float64)
        values = X
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D matrix, got shape {X.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("X must be finite")
    N, d = X.shape
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape != (N,):
        raise ValueError(f"y must have shape ({N},) like the rows of X, got {y.shape}")
    if not np.all(np.abs(y) == 1.0):
        raise ValueError("y must hold labels in {-1, +1}")
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    if A.size == 0:
        A = np.zeros((0, d))
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if A.shape[1] != d:
        raise ValueError(f"A must have {d} columns (one per feature), got shape {A.shape}")
    if b.shape != (A.shape[0],):
        raise ValueError(f"b must have shape ({A.shape[0]},) (one entry per row of A), got {b.shape}")
    k = A.shape[0]
    loss = _Logistic(X, y)

    def constraints(w: np.ndarray) -> np.ndarray:
        return np.concatenate([A @ w - b, [w @ w - 1.0]])

    def jacobian(w: np.ndarray) -> np.ndarray:
        return np.vstack([A, 2.0 * w[None, :]])

    def lagrangian_hessian(w: np.ndarray, lam: np.ndarray) -> np.ndarray:
        H = loss.hess(w)
        H[np.diag_indices(d)] += 2.0 * lam[k]
        return H

    def lagrangian_hvp(w: np.ndarray, lam: np.ndarray, v: np.ndarray) -> np.ndarray:
        return loss.hvp(w, v) + 2.0 * lam[k] * v

    f = Function(loss.value, grad=loss.grad, hess=loss.hess, hvp=loss.hvp, name=name)
    c = Function(constraints, jac=jacobian, name=f"{name}-constraints")
    return NonlinearProgram(f, c, np.ones(d) if x0 is None else x0, np.ones(k + 1) if lam0 is None else lam0,
                            lagrangian_hessian=lagrangian_hessian, lagrangian_hvp=lagrangian_hvp, name=name)


def constrained_logistic_regression(dataset: str = "a9a", *, n_constraints: int = 10, seed: Any = 0,
                                    data: tuple[Any, Any] | None = None) -> NonlinearProgram:
    r"""The paper's constrained logistic regression on a LIBSVM data set.

    Parameters
    ----------
    dataset : str, default "a9a"
        A name registered in :mod:`optkit.data` (the paper's are :data:`PAPER_DATASETS`).
    n_constraints : int, default 10
        Rows of the Gaussian :math:`A` (the paper uses 10).
    seed : int or numpy.random.Generator, default 0
        Draws :math:`A` then :math:`b`, each i.i.d. :math:`N(0, 1)`.
    data : (X, y), optional
        Use these instead of reading ``dataset`` (e.g. a subsample).

    Examples
    --------
    >>> problem = constrained_logistic_regression("sonar_scale", seed=0)  # doctest: +SKIP
    >>> problem.n, problem.m  # doctest: +SKIP
    (60, 11)
    """
    if isinstance(n_constraints, bool) or not isinstance(n_constraints, (int, np.integer)) or n_constraints < 0:
        raise ValueError(f"n_constraints must be a non-negative int, got {n_constraints!r}")
    if data is None:
        from optkit.data import load_libsvm

        X, y = load_libsvm(dataset)
    else:
        X, y = data
    rng = as_generator(seed)
    d = X.shape[1]
    A = rng.standard_normal((n_constraints, d))
    b = rng.standard_normal(n_constraints)
    return logistic_problem(X, y, A, b, name=f"logreg-{dataset}")
