r"""Numba kernels for the stochastic sweeps of the variance-reduced monotone-inclusion solvers.

The kernels work on *linear component structure*: component differences of the form

.. math::

    \frac{F_i(u) - F_i(v)}{n\,q_i} = \frac1{q_i}\sum_{j \in S_i} (u_j - v_j)\, D_{j,:},

where :math:`S_i` is a group of at most two coordinates (``groups[i]``, ``-1`` pads), :math:`D` holds the
(centred) columns of the operator's matrix as rows and :math:`q_i` is the sampling probability of component
``i`` (the kernels take ``inv_q`` :math:`= 1/q_i`). This covers the bilinear games and the quadratic instance of Cai, Alacaoglu and Diakonikolas (ICLR 2024).
The resolvent of :math:`G` is a product of blocks: ``kinds[b] = 0`` (reals) or ``1`` (a simplex of total
``totals[b]``) over ``starts[b]:starts[b+1]``.

Kernels take arrays and return arrays; they know no problem class.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["forb_segment", "project_blocks"]


@njit(cache=True)
def _project_simplex(v, lo, hi, total, out):  # pragma: no cover - compiled
    # Sort-based projection onto {x >= 0, sum x = total} (Held, Wolfe and Crowder 1974).
    m = hi - lo
    s = np.sort(v[lo:hi])
    cumulative = 0.0
    theta = 0.0
    for r in range(m - 1, -1, -1):
        cumulative += s[r]
        t = (cumulative - total) / (m - r)
        if r == 0 or s[r - 1] <= t:
            theta = t
            break
    for j in range(lo, hi):
        x = v[j] - theta
        out[j] = x if x > 0.0 else 0.0


@njit(cache=True)
def project_blocks(v, starts, kinds, totals, out):  # pragma: no cover - compiled
    """``out = J_G(v)`` for a product of real and simplex blocks."""
    for b in range(kinds.size):
        lo, hi = starts[b], starts[b + 1]
        if kinds[b] == 1:
            _project_simplex(v, lo, hi, totals[b], out)
        else:
            for j in range(lo, hi):
                out[j] = v[j]


@njit(cache=True)
def forb_segment(v, w, w_prev, Fw, center, eta, gamma, alpha, D, groups, inv_q, picks,
                 starts, kinds, totals):  # pragma: no cover - compiled
    r"""Run ``picks.size`` VR-FoRB steps with a fixed snapshot ``w`` on :math:`\Phi(v) = \eta F(v) + v - c`.

    .. math::

        v_{j+1} = J_{\gamma\eta G}\Big(\alpha v_j + (1-\alpha) w
        - \gamma\big[\eta F(w) + w - c + v_j - w_{j-1}
        + \eta\,\tfrac{1}{q_\xi}\textstyle\sum_{l\in S_\xi}(v_{j,l} - w_{j-1,l}) D_{l,:}\big]\Big)

    (the bracket is :math:`\Phi(w) + [\Phi_\xi(v_j) - \Phi_\xi(w_{j-1})]/(n q_\xi)` with
    :math:`F_\xi(a) - F_\xi(b) = n\sum_{l\in S_\xi}(a_l - b_l)D_{l,:}`). ``v`` is updated in place and ``w_prev`` becomes ``w`` after the first step. Returns nothing.
    """
    d = v.size
    direction = np.empty(d)
    trial = np.empty(d)
    g = groups.shape[1]
    for t in range(picks.size):
        i = picks[t]
        for j in range(d):
            direction[j] = eta * Fw[j] + (w[j] - center[j]) + (v[j] - w_prev[j])
        scale = eta * inv_q[i]
        for r in range(g):
            col = groups[i, r]
            if col >= 0:
                delta = (v[col] - w_prev[col]) * scale
                if delta != 0.0:
                    for j in range(d):
                        direction[j] += delta * D[col, j]
        for j in range(d):
            trial[j] = alpha * v[j] + (1.0 - alpha) * w[j] - gamma * direction[j]
        project_blocks(trial, starts, kinds, totals, v)
        if t == 0:
            for j in range(d):
                w_prev[j] = w[j]
