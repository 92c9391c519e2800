r"""Min-max instances from Cai, Alacaoglu and Diakonikolas (ICLR 2024), Section 5 / Figure 1.

* :func:`policeman_burglar` -- the matrix game :math:`\min_{x\in\Delta^n}\max_{y\in\Delta^m} y^\top A x` with the
  "policeman and burglar" payoff :math:`A_{ij} = w\,(1 - e^{-\theta|i-j|})`, :math:`w = |N(0, 1)|`,
  :math:`\theta = 0.8`, ``n = m = 500``, seed 1. Two things vary between sources, and both are options:

  - which index carries the weight. The official script (``github.com/zephyr-cai/Finite-Sum-Halpern-Iteration``,
    ``matrix_game.py``) computes ``w * C``, which broadcasts ``w`` over the **columns**: ``weights="columns"``,
    a near-degenerate game used to reproduce Figure 1. ``weights="rows"`` weights the rows, as the formula is
    written.
  - which generator draws ``w``. The official script calls ``np.random.seed(1); np.random.randn(n)``
    (``generator="legacy"``: value 0.0018914828 with column weights). The project notes' constants -- row-weighted
    value 2.298551318670, :math:`\|A\|_2 \approx 454` -- come from ``np.random.default_rng(1)``
    (``generator="default_rng"``, the default here), checked with scipy ``linprog`` (HiGHS).

  :func:`policeman_burglar_official` is the official script's instance (columns, legacy).
* :func:`quadratic_lower_bound` -- the unconstrained quadratic min-max instance of Ouyang and Xu (lower-bound
  construction), :math:`f(x, y) = \tfrac12 x^\top H x - h^\top x - \langle Ax - b, y\rangle` with
  :math:`A = \tfrac14 (\text{anti-diagonal } {+1},\ \text{next anti-diagonal } {-1})`, :math:`H = 2A^\top A`,
  :math:`b = \tfrac14\mathbf 1`, :math:`h = \tfrac14 e_n`, ``n = 200``.
"""

from __future__ import annotations

import numpy as np

from optkit.problems.monotone import BilinearGame, MonotoneInclusion
from optkit.problems.sets import Product, Reals

__all__ = ["ROW_WEIGHTED_VALUE", "policeman_burglar", "policeman_burglar_matrix", "policeman_burglar_official", "quadratic_lower_bound"]

#: Value of the row-weighted 500 x 500 game, ``default_rng(1)`` (scipy linprog, HiGHS).
ROW_WEIGHTED_VALUE = 2.298551318670


def policeman_burglar_matrix(n: int = 500, *, seed: int = 1, theta: float = 0.8, weights: str = "rows",
                             generator: str = "default_rng") -> np.ndarray:
    r"""The payoff matrix :math:`A_{ij} = w_\bullet (1 - e^{-\theta |i - j|})`, ``n x n``.

    Parameters
    ----------
    n : int
    seed : int
    theta : float
    weights : {"rows", "columns"}
        ``"rows"``: :math:`A_{ij} = w_i(\dots)`; ``"columns"``: :math:`A_{ij} = w_j(\dots)` (the official script).
    generator : {"default_rng", "legacy"}
        ``w = |default_rng(seed).standard_normal(n)|``, or ``|RandomState(seed).randn(n)|`` (the stream of the
        official script's ``np.random.seed(seed)``; a private ``RandomState`` leaves the global state alone).
    """
    if weights not in ("columns", "rows"):
        raise ValueError(f"weights must be 'columns' or 'rows', got {weights!r}")
    if generator not in ("default_rng", "legacy"):
        raise ValueError(f"generator must be 'default_rng' or 'legacy', got {generator!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if generator == "legacy":
        w = np.abs(np.random.RandomState(seed).randn(n))
    else:
        w = np.abs(np.random.default_rng(seed).standard_normal(n))
    index = np.arange(n)
    C = 1.0 - np.exp(-theta * np.abs(index[:, None] - index[None, :]))
    return C * (w[None, :] if weights == "columns" else w[:, None])


def policeman_burglar(n: int = 500, *, seed: int = 1, theta: float = 0.8, weights: str = "rows",
                      generator: str = "default_rng", splitting: str = "centered",
                      sampling: str = "importance") -> BilinearGame:
    """The policeman-and-burglar matrix game on simplices (see the module docstring and
    :func:`policeman_burglar_matrix`). Start: uniform strategies. The default is the row-weighted instance of
    value :data:`ROW_WEIGHTED_VALUE` (for ``n = 500``). ``splitting`` and ``sampling`` choose the component
    splitting (see :class:`~optkit.problems.BilinearGame`); ``"plain"``, ``"uniform"`` is the paper's."""
    A = policeman_burglar_matrix(n, seed=seed, theta=theta, weights=weights, generator=generator)
    return BilinearGame(A, splitting=splitting, sampling=sampling, name=f"policeman_burglar_{weights}_{n}")


def policeman_burglar_official(n: int = 500, *, splitting: str = "plain", sampling: str = "uniform") -> BilinearGame:
    """The official script's instance for Figure 1(a): column weights, ``np.random.seed(1)``, and (by default)
    the official code's plain splitting with uniform sampling."""
    return policeman_burglar(n, seed=1, weights="columns", generator="legacy", splitting=splitting,
                             sampling=sampling)


def _lower_bound_data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    A = np.zeros((n, n))
    flipped = np.arange(n)[::-1]
    A[np.arange(n), flipped] = 1.0
    A[np.arange(n - 1), flipped[1:]] = -1.0  # the next anti-diagonal, i + j = n - 2
    A *= 0.25
    H = 2.0 * A.T @ A
    b = np.full(n, 0.25)
    h = np.zeros(n)
    h[-1] = 0.25
    return A, H, b, h


def quadratic_lower_bound(n: int = 200, *, sampling: str = "importance", start: str = "zero") -> MonotoneInclusion:
    r"""The quadratic min-max instance (Figure 1(b)) as a monotone inclusion with :math:`G = 0`.

    .. math::

        F(x, y) = \big(Hx - h - A^\top y,\; Ax - b\big),

    split into :math:`n` components by rows: :math:`F_i(x, y) = n\,\big(H_{i,:}^\top x_i - h_i e_i
    - A_{i,:}^\top y_i,\; (A_{:,i} x_i) - b_i e_i\big)` -- the coordinate splitting of the paper's code,
    :math:`\frac1n\sum_i F_i = F`. The residual is :math:`\|F(x, y)\|`. Start: zero.

    ``lipschitz`` is :math:`\|M\|_2`, :math:`M = [[H, -A^\top], [A, 0]]`; ``lipschitz_components`` the
    mean-square constant of the splitting under the sampling: ``"uniform"`` (the paper's code) or
    ``"importance"`` (the default; component :math:`i` drawn with probability proportional to
    :math:`\|M_{:,i}\|^2 + \|M_{:,n+i}\|^2`, which makes the constant :math:`\|M\|_F`). :math:`F` is monotone
    but not cocoercive (its symmetric part :math:`\operatorname{diag}(H, 0)` is singular on the :math:`y` block).
    ``start`` is the default starting point: ``"zero"`` or ``"uniform"`` (:math:`x = y = \mathbf 1/n`, the
    official script's start).
    """
    if start not in ("zero", "uniform"):
        raise ValueError(f"start must be 'zero' or 'uniform', got {start!r}")
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if sampling not in ("importance", "uniform"):
        raise ValueError(f"sampling must be 'importance' or 'uniform', got {sampling!r}")
    A, H, b, h = _lower_bound_data(n)
    M = np.block([[H, -A.T], [A, np.zeros((n, n))]])
    offset = np.concatenate([-h, -b])
    # Component i uses column i of M's x-block and y-block: F(u) = sum_i (M[:, i] x_i + M[:, n+i] y_i) + offset.
    Mx, My = M[:, :n].T.copy(), M[:, n:].T.copy()  # (n, 2n): row i is column i of each block

    def components(u: np.ndarray, idx: np.ndarray) -> np.ndarray:
        x, y = u[:n], u[n:]
        return n * (Mx[idx] * x[idx, None] + My[idx] * y[idx, None]) + offset

    def operator(u: np.ndarray) -> np.ndarray:
        return M @ u + offset

    weights = np.sum(Mx**2, axis=1) + np.sum(My**2, axis=1)  # ||a x_i + b y_i||^2 <= (|a|^2 + |b|^2)|(x_i, y_i)|^2
    if sampling == "importance":
        q = weights / weights.sum()
        lipschitz_components = float(np.sqrt(weights.sum()))
    else:
        q = None
        lipschitz_components = float(np.sqrt(n * weights.max()))
    groups = np.stack([np.arange(n), n + np.arange(n)], axis=1).astype(np.int64)
    structure = {"D": M.T.copy(), "groups": groups, "starts": np.array([0, n, 2 * n], dtype=np.int64),
                 "kinds": np.zeros(2, dtype=np.int64), "totals": np.zeros(2)}
    return MonotoneInclusion(
        components, n, 2 * n, Product(Reals(n), Reals(n)), operator=operator,
        lipschitz=float(np.linalg.norm(M, 2)), lipschitz_components=lipschitz_components,
        x0=np.zeros(2 * n) if start == "zero" else np.full(2 * n, 1.0 / n), cocoercive=False, sampling=q, structure=structure, name=f"quadratic_lower_bound_{n}",
    )
