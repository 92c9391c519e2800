r"""Numba kernels for randomized Kaczmarz sweeps on a symmetric system :math:`Kz = b`.

Each kernel runs a pre-sampled sequence of row indices :math:`i_1, i_2, \dots` and keeps the residual
:math:`r = Kz - b` exact, so that the caller's stopping test :math:`\|r\| \le` ``target`` is checked after every
update. With :math:`S = e_i` the sketch-and-project step (Gower & Richtárik 2015, eq. (2.2) with :math:`W = I`)
on a symmetric :math:`K` is

.. math::

    z \leftarrow z - \frac{r_i}{\|K_{i,:}\|^2} K_{i,:}^\top,\qquad
    r \leftarrow r - \frac{r_i}{\|K_{i,:}\|^2} K K_{i,:}^\top .

Kernels take arrays and return arrays/integers; they know nothing of problems or solvers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["gaussian_vector_dense", "kaczmarz_csr", "kaczmarz_dense"]


@njit(cache=True)
def kaczmarz_dense(K, K2, row_norms_sq, rows, z, r, target_sq):  # pragma: no cover - compiled
    """Dense sweep; ``K2 = K @ K`` (symmetric) updates the residual in O(N). Returns the iterations done."""
    N = z.size
    for t in range(rows.size):
        i = rows[t]
        nrm = row_norms_sq[i]
        if nrm <= 0.0:
            continue
        alpha = r[i] / nrm
        rr = 0.0
        for k in range(N):
            z[k] -= alpha * K[i, k]
            r[k] -= alpha * K2[i, k]
            rr += r[k] * r[k]
        if rr <= target_sq:
            return t + 1
    return rows.size


@njit(cache=True)
def kaczmarz_csr(indptr, indices, data, row_norms_sq, rows, z, r, target_sq):  # pragma: no cover - compiled
    """CSR sweep for a symmetric sparse ``K``; the residual is updated through :math:`K K_{i,:}^\\top`
    (rows of the rows), and its squared norm is tracked incrementally and recomputed at the end."""
    rr = 0.0
    for k in range(r.size):
        rr += r[k] * r[k]
    done = rows.size
    for t in range(rows.size):
        i = rows[t]
        nrm = row_norms_sq[i]
        if nrm <= 0.0:
            continue
        alpha = r[i] / nrm
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            kij = data[p]
            z[j] -= alpha * kij
            # K e_j = K_{j,:}^T by symmetry: r -= alpha * K_ij * K_{j,:}
            for q in range(indptr[j], indptr[j + 1]):
                k = indices[q]
                old = r[k]
                new = old - alpha * kij * data[q]
                r[k] = new
                rr += new * new - old * old
        if rr <= target_sq:
            done = t + 1
            break
    return done


@njit(cache=True, fastmath=True)
def gaussian_vector_dense(K, K2, sketches, z, r, target_sq):  # pragma: no cover - compiled
    r"""Gaussian vector sketches :math:`s`: :math:`z \leftarrow z - \frac{s^\top r}{\|Ks\|^2} Ks`,
    :math:`r \leftarrow r - \frac{s^\top r}{\|Ks\|^2} K^2 s`, with ``K2 = K @ K`` so that :math:`Ks`,
    :math:`K^2 s` and :math:`\|Ks\|^2 = s^\top K^2 s` come from one fused pass over the rows.
    Returns the iterations done."""
    N = z.size
    Ks = np.empty(N)
    KKs = np.empty(N)
    for t in range(sketches.shape[0]):
        s = sketches[t]
        nrm = 0.0
        sr = 0.0
        for a in range(N):
            acc = 0.0
            acc2 = 0.0
            for b in range(N):
                acc += K[a, b] * s[b]
                acc2 += K2[a, b] * s[b]
            Ks[a] = acc
            KKs[a] = acc2
            nrm += acc * acc
            sr += s[a] * r[a]
        if nrm <= 0.0:
            continue
        alpha = sr / nrm
        rr = 0.0
        for a in range(N):
            z[a] -= alpha * Ks[a]
            r[a] -= alpha * KKs[a]
            rr += r[a] * r[a]
        if rr <= target_sq:
            return t + 1
    return sketches.shape[0]
