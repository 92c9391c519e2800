"""Log-domain Sinkhorn in NumPy: the readable reference the Numba and JAX kernels are tested against."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = ["row_lse", "sinkhorn_log_chunk"]


def row_lse(cost: np.ndarray, g: np.ndarray, epsilon: float) -> np.ndarray:
    """:math:`s_i = \\log\\sum_j \\exp((g_j - C_{ij})/\\varepsilon)`."""
    return logsumexp((g[None, :] - cost) / epsilon, axis=1)


def sinkhorn_log_chunk(
    cost: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    g: np.ndarray,
    epsilon: float,
    max_updates: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Run at most ``max_updates`` log-domain Sinkhorn updates, stopping once the L1 marginal error is <= ``tol``.

    One update is the pair

    .. math::

        f \\leftarrow \\varepsilon\\log a - \\varepsilon\\,\\mathrm{LSE}_j\\big((g_j - C_{ij})/\\varepsilon\\big),\\qquad
        g \\leftarrow \\varepsilon\\log b - \\varepsilon\\,\\mathrm{LSE}_i\\big((f_i - C_{ij})/\\varepsilon\\big).

    After a ``g`` update the column marginals are exact, so the L1 marginal error is the row error
    :math:`\\sum_i |e^{f_i/\\varepsilon} \\sum_j e^{(g_j - C_{ij})/\\varepsilon} - a_i|`, whose log-sum-exp is the one
    the next ``f`` update needs: the error is measured at every update for free.

    Returns ``(f, g, error, updates)``: the potentials, the L1 marginal error of the plan they define, and the
    number of updates made.
    """
    with np.errstate(divide="ignore"):
        log_a = np.log(a)
        log_b = np.log(b)
    s = row_lse(cost, g, epsilon)
    err = float(np.abs(np.exp(f / epsilon + s) - a).sum())
    done = 0
    while done < max_updates and not err <= tol:
        f = epsilon * (log_a - s)
        g = epsilon * (log_b - logsumexp((f[:, None] - cost) / epsilon, axis=0))
        s = row_lse(cost, g, epsilon)
        err = float(np.abs(np.exp(f / epsilon + s) - a).sum())
        done += 1
    return f, g, err, done
