r"""The PDE-constrained test problem of Hong, Na, Mahoney & Kolar (ICML 2023, Section 5; notes A.4).

A discretised Poisson control problem on an :math:`N\times N` interior grid with zero Dirichlet boundary:

.. math::

    \min_{w, z\in\mathbb{R}^{N^2}}\ \tfrac12\|w - w^\star\|^2 + \tfrac{0.1}{2}\|z\|^2
    \quad\text{s.t.}\quad \Delta_h w + z = 0,

where :math:`\Delta_h` is the 5-point Laplacian with :math:`h = 2/(N+1)`,
:math:`(\Delta_h w)_{ij} = (w_{i+1,j} + w_{i-1,j} + w_{i,j+1} + w_{i,j-1} - 4w_{ij})/h^2` (neighbours outside
the grid are 0), and the target is

.. math::

    w^\star_{ij} = \sin\Bigl(4 + \tfrac{0.1}{\sqrt{15}}\bigl(i - \tfrac{N+1}{2}\bigr)\Bigr)
                 + \cos\Bigl(3 + \tfrac{0.1}{\sqrt{15}}\bigl(j - \tfrac{N+1}{2}\bigr)\Bigr),\qquad i, j = 1..N.

Variables are ordered :math:`x = (w, z)` with :math:`w_{ij}` at position :math:`(i-1)N + (j-1)`; so
:math:`n = 2N^2`, :math:`m = N^2`, the Jacobian :math:`G = (\Delta_h\ \ I)` and the Hessian
:math:`\operatorname{diag}(I, 0.1I)` are constant and returned as :mod:`scipy.sparse` CSR matrices. Start
:math:`x^0 = \mathbf 1`, :math:`\lambda^0 = \mathbf 1`. The paper runs :math:`N = 3` (:math:`n = 18`, :math:`m = 9`).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from optkit.problems.functions import Function
from optkit.problems.nlp import NonlinearProgram

__all__ = ["laplacian_2d", "pde_control", "pde_target"]

CONTROL_WEIGHT = 0.1


def laplacian_2d(N: int) -> sparse.csr_matrix:
    r"""The 5-point Laplacian :math:`\Delta_h` on the :math:`N\times N` interior grid, :math:`h = 2/(N+1)`,
    zero Dirichlet boundary, as an :math:`N^2\times N^2` CSR matrix."""
    h = 2.0 / (N + 1)
    T = sparse.diags([np.ones(N - 1), -2.0 * np.ones(N), np.ones(N - 1)], [-1, 0, 1], shape=(N, N))
    eye = sparse.identity(N)
    return ((sparse.kron(T, eye) + sparse.kron(eye, T)) / h**2).tocsr()


def pde_target(N: int) -> np.ndarray:
    r""":math:`w^\star` flattened row-major (index :math:`(i-1)N + (j-1)`)."""
    k = np.arange(1, N + 1) - (N + 1) / 2.0
    scale = 0.1 / np.sqrt(15.0)
    return (np.sin(4.0 + scale * k)[:, None] + np.cos(3.0 + scale * k)[None, :]).ravel()


def pde_control(N: int = 3) -> NonlinearProgram:
    """The paper's PDE-constrained problem on an ``N x N`` grid (``N = 3`` in the paper; sparse for any ``N``).

    Examples
    --------
    >>> problem = pde_control(3)
    >>> problem.n, problem.m
    (18, 9)
    """
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N must be a positive int, got {N!r}")
    N = int(N)
    L = laplacian_2d(N)
    target = pde_target(N)
    k = N * N
    G = sparse.hstack([L, sparse.identity(k)], format="csr")
    weights = np.concatenate([np.ones(k), CONTROL_WEIGHT * np.ones(k)])
    H = sparse.diags(weights, format="csr")

    def objective(x: np.ndarray) -> float:
        w, z = x[:k], x[k:]
        r = w - target
        return 0.5 * float(r @ r) + 0.5 * CONTROL_WEIGHT * float(z @ z)

    def gradient(x: np.ndarray) -> np.ndarray:
        return weights * x - np.concatenate([target, np.zeros(k)])

    f = Function(objective, grad=gradient, hess=lambda x: H, hvp=lambda x, v: weights * v, name=f"pde-{N}")
    c = Function(lambda x: G @ x, jac=lambda x: G, name=f"pde-{N}-constraints")
    return NonlinearProgram(f, c, np.ones(2 * k), np.ones(k), linear_constraints=True, name=f"pde-{N}")
