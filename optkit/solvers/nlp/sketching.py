r"""Randomized iterative sketching (sketch-and-project) for symmetric linear systems such as the KKT system.

For :math:`Kz = b` with :math:`K = K^\top` (the Newton--KKT matrix
:math:`K = \begin{pmatrix} B & G^\top\\ G & 0\end{pmatrix}` is symmetric and indefinite), the sketch-and-project
step with identity geometry (Gower & Richtárik, *Randomized iterative methods for linear systems*, SIMAX 2015,
eq. (2.2) with :math:`B = I`) is

.. math::

    z_{j+1} = z_j - K S_j (S_j^\top K^2 S_j)^{\dagger} S_j^\top r_j,\qquad r_j = K z_j - b,

the step used by Hong, Na, Mahoney & Kolar (ICML 2023) for the Newton system :math:`K_t z = -\nabla\mathcal L_t`
(notes A.2; the paper's own equation numbers could not be checked here). Sketches :math:`S_j` (drawn i.i.d.):

``"kaczmarz"``
    :math:`S = e_i` with :math:`i` uniform (``sampling="uniform"``, the paper's code) or
    :math:`\propto \|K_{i,:}\|^2` (``sampling="row-norm"``, Strohmer--Vershynin): randomized Kaczmarz.
``"gaussian"``
    :math:`S \in \mathbb{R}^{N\times s}` with i.i.d. :math:`N(0,1)` entries; ``block_size=1`` is the paper's
    Gaussian vector sketch.
``"rows"``
    :math:`S = I_{:,\mathcal I}`, a uniformly random subset of :math:`s` distinct rows (block Kaczmarz).
``"count"``
    A count sketch: each of the :math:`N` rows is hashed to one of :math:`s` columns with a random sign.

For any distribution with :math:`\rho = 1 - \lambda_{\min}(\mathbb E[K S (S^\top K^2 S)^\dagger S^\top K]) < 1`,
:math:`\mathbb E\|z_j - z^*\|^2 \le \rho^j \|z_0 - z^*\|^2` (Gower & Richtárik 2015, Theorem 4.6).

The residual :math:`r_j` is kept exact at every step (it costs one more product with :math:`K`, or :math:`O(N)`
with a precomputed :math:`K^2` for dense Kaczmarz), so a caller's stopping test can be checked after each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from optkit._arrays import as_generator

__all__ = ["SKETCHES", "SketchResult", "SketchSolver", "kkt_matrix", "sketch_solve"]

SKETCHES = ("kaczmarz", "gaussian", "rows", "count")
SAMPLINGS = ("uniform", "row-norm")
#: Dense systems up to this size precompute K @ K so that a Kaczmarz step costs O(N).
DENSE_SQUARE_LIMIT = 4000
_CHUNK = 2048


def kkt_matrix(B: Any, G: Any) -> Any:
    r"""The symmetric KKT matrix :math:`\begin{pmatrix} B & G^\top \\ G & 0 \end{pmatrix}`.

    Dense when both blocks are dense arrays, CSR when either is sparse (the other is converted), and a
    :class:`~scipy.sparse.linalg.LinearOperator` when either block is one.
    """
    n = B.shape[0]
    m = G.shape[0]
    if tuple(B.shape) != (n, n):
        raise ValueError(f"B must be square, got shape {B.shape}")
    if G.shape[1] != n:
        raise ValueError(f"G must have {n} columns like B, got shape {G.shape}")
    if isinstance(B, LinearOperator) or isinstance(G, LinearOperator):
        Bop, Gop = aslinearoperator(B), aslinearoperator(G)

        def matvec(v: np.ndarray) -> np.ndarray:
            v = np.ravel(v)
            x, y = v[:n], v[n:]
            return np.concatenate([Bop.matvec(x) + Gop.rmatvec(y), Gop.matvec(x)])

        return LinearOperator((n + m, n + m), matvec=matvec, rmatvec=matvec, dtype=np.float64)
    if sparse.issparse(B) or sparse.issparse(G):
        return sparse.bmat([[sparse.csr_matrix(B), sparse.csr_matrix(G).T], [sparse.csr_matrix(G), None]],
                           format="csr")
    B = np.asarray(B, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    return np.block([[B, G.T], [G, np.zeros((m, m))]])


@dataclass
class SketchResult:
    """Outcome of :func:`sketch_solve`: the iterate, its residual norm, iterations and a flop estimate."""

    z: np.ndarray
    residual_norm: float
    iterations: int
    flops: float
    converged: bool


class SketchSolver:
    r"""Resumable sketch-and-project iteration for a symmetric system :math:`Kz = b`.

    Parameters
    ----------
    K : ndarray, scipy.sparse matrix or LinearOperator, shape (N, N)
        Symmetric (not checked for a LinearOperator). Matrix-free operators need only ``matvec``.
    b : array_like, shape (N,)
    sketch : {"kaczmarz", "gaussian", "rows", "count"}
    sampling : {"uniform", "row-norm"}
        Row sampling for ``"kaczmarz"``; row-norm sampling of a matrix-free operator costs ``N`` products once.
    block_size : int
        Sketch size :math:`s` (1 for ``"kaczmarz"``).
    z0 : array_like, optional
        Starting point (zeros by default).
    seed : int or numpy.random.Generator, optional
    backend : {"auto", "numba", "numpy"}
        Numba kernels run Kaczmarz sweeps on dense/CSR matrices and Gaussian vector sketches on dense ones.

    Attributes
    ----------
    z, r : ndarray
        Current iterate and its exact residual :math:`Kz - b`.
    iterations : int
    flops : float
        Estimated floating-point operations so far (setup included).
    """

    def __init__(
        self,
        K: Any,
        b: Any,
        *,
        sketch: str = "kaczmarz",
        sampling: str = "uniform",
        block_size: int = 1,
        z0: Any = None,
        seed: Any = None,
        backend: str = "auto",
    ) -> None:
        if sketch not in SKETCHES:
            raise ValueError(f"sketch must be one of {SKETCHES}, got {sketch!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        if sketch == "kaczmarz" and block_size != 1:
            raise ValueError("sketch='kaczmarz' has block_size 1; use sketch='rows' for block Kaczmarz")
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
        if isinstance(K, LinearOperator):
            self.kind = "operator"
        elif sparse.issparse(K):
            self.kind = "sparse"
            K = sparse.csr_matrix(K, dtype=np.float64)
            K.sort_indices()
        else:
            self.kind = "dense"
            K = np.ascontiguousarray(K, dtype=np.float64)
        if len(K.shape) != 2 or K.shape[0] != K.shape[1]:
            raise ValueError(f"K must be square, got shape {K.shape}")
        N = K.shape[0]
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if b.shape != (N,):
            raise ValueError(f"b must have shape ({N},), got {b.shape}")
        self.K, self.b, self.N = K, b, N
        self.sketch, self.sampling, self.block_size = sketch, sampling, int(block_size)
        self.rng = as_generator(seed)
        self.backend = "numba" if backend == "auto" and self.kind in ("dense", "sparse") else backend
        if self.backend == "numba" and self.kind == "operator":
            self.backend = "numpy"
        self.nnz = N * N if self.kind == "dense" else (K.nnz if self.kind == "sparse" else None)
        self.flops = 0.0
        self.iterations = 0
        self.z = np.zeros(N) if z0 is None else np.array(z0, dtype=np.float64).reshape(-1)
        if self.z.shape != (N,):
            raise ValueError(f"z0 must have shape ({N},), got {self.z.shape}")
        self.r = self._apply(self.z) - b
        self._row_norms: np.ndarray | None = None
        self._K2: np.ndarray | None = None
        self._dense_K: np.ndarray | None = None
        self._probabilities: np.ndarray | None = None
        self._row_flops: np.ndarray | None = None

    # -- linear algebra helpers ---------------------------------------------------------------------------------

    def _matvec_flops(self) -> float:
        return 2.0 * (self.nnz if self.nnz is not None else self.N * self.N)

    def _apply(self, v: np.ndarray) -> np.ndarray:
        self.flops += self._matvec_flops()
        if self.kind == "operator":
            return np.asarray(self.K.matvec(v), dtype=np.float64).reshape(-1)
        return np.asarray(self.K @ v, dtype=np.float64).reshape(-1)

    def _row(self, i: int) -> np.ndarray:
        if self.kind == "dense":
            return self.K[i]
        if self.kind == "sparse":
            return self.K.getrow(i).toarray().ravel()
        e = np.zeros(self.N)
        e[i] = 1.0
        return self._apply(e)

    def row_norms_sq(self) -> np.ndarray:
        r""":math:`\|K_{i,:}\|^2` for every row (``N`` products for a matrix-free operator)."""
        if self._row_norms is None:
            if self.kind == "dense":
                self._row_norms = np.einsum("ij,ij->i", self.K, self.K)
                self.flops += 2.0 * self.N * self.N
            elif self.kind == "sparse":
                self._row_norms = np.asarray(self.K.multiply(self.K).sum(axis=1)).ravel()
                self.flops += 2.0 * self.nnz
            else:
                self._row_norms = np.array([float(np.dot(row, row)) for row in map(self._row, range(self.N))])
        return self._row_norms

    @property
    def residual_norm(self) -> float:
        return float(np.linalg.norm(self.r))

    # -- the iteration ------------------------------------------------------------------------------------------

    def _sample_rows(self, count: int) -> np.ndarray:
        if self.sampling == "row-norm":
            if self._probabilities is None:
                norms = self.row_norms_sq()
                total = norms.sum()
                if not total > 0:
                    raise ValueError("K is zero: no row to sample")
                self._probabilities = norms / total
            return self.rng.choice(self.N, size=count, p=self._probabilities).astype(np.int64)
        return self.rng.integers(0, self.N, size=count).astype(np.int64)

    def run(self, target: float, max_iter: int) -> bool:
        """Iterate until :math:`\\|Kz - b\\| \\le` ``target`` or ``max_iter`` more steps; True when reached."""
        target_sq = float(target) ** 2
        budget = int(max_iter)
        if float(self.r @ self.r) <= target_sq:
            return True
        while budget > 0:
            chunk = min(budget, _CHUNK)
            done = self._chunk(chunk, target_sq)
            self.iterations += done
            budget -= done
            if not np.all(np.isfinite(self.r)):
                return False
            if float(self.r @ self.r) <= target_sq:
                return True
        return False

    def _chunk(self, count: int, target_sq: float) -> int:
        N = self.N
        if self.sketch == "kaczmarz":
            rows = self._sample_rows(count)
            norms = self.row_norms_sq()
            if self.backend == "numba" and self.kind == "dense" and N <= DENSE_SQUARE_LIMIT:
                from optkit.kernels.numba_sketching import kaczmarz_dense

                if self._K2 is None:
                    self._K2 = np.ascontiguousarray(self.K @ self.K)
                    self.flops += 2.0 * N**3
                done = int(kaczmarz_dense(self.K, self._K2, norms, rows, self.z, self.r, target_sq))
                self.flops += 6.0 * N * done
                return done
            if self.backend == "numba" and self.kind == "sparse":
                from optkit.kernels.numba_sketching import kaczmarz_csr

                K = self.K
                done = int(kaczmarz_csr(K.indptr, K.indices, K.data, norms, rows, self.z, self.r, target_sq))
                if self._row_flops is None:
                    lengths = np.diff(K.indptr).astype(np.float64)
                    pattern = sparse.csr_matrix((np.ones(K.nnz), K.indices, K.indptr), shape=K.shape)
                    self._row_flops = 2.0 * lengths + 2.0 * (pattern @ lengths)
                self.flops += float(np.sum(self._row_flops[rows[:done]]))
                self.r = self._apply(self.z) - self.b  # drop the incremental drift
                return done
            return self._generic(count, target_sq, rows=rows)
        if (self.sketch == "gaussian" and self.block_size == 1 and self.backend == "numba"
                and self.kind in ("dense", "sparse") and N <= DENSE_SQUARE_LIMIT):
            from optkit.kernels.numba_sketching import gaussian_vector_dense

            if self._K2 is None:
                # a Gaussian sketch touches every entry of K anyway: small sparse systems run on the dense kernel
                self._dense_K = self.K if self.kind == "dense" else np.ascontiguousarray(self.K.toarray())
                self._K2 = np.ascontiguousarray(self._dense_K @ self._dense_K)
                self.flops += 2.0 * N**3
            sketches = self.rng.standard_normal((count, N))
            done = int(gaussian_vector_dense(self._dense_K, self._K2, sketches, self.z, self.r, target_sq))
            self.flops += (4.0 * N * N + 7.0 * N) * done
            return done
        return self._generic(count, target_sq)

    def _sketched_columns(self, rows: np.ndarray | None, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(K S, S^T r)`` for the next sketch."""
        N, s = self.N, self.block_size
        if self.sketch == "kaczmarz":
            i = int(rows[t])
            return self._row(i)[:, None], self.r[i : i + 1]
        if self.sketch == "rows":
            idx = self.rng.choice(N, size=min(s, N), replace=False)
            if self.kind == "dense":
                KS = self.K[idx].T
            elif self.kind == "sparse":
                KS = self.K[idx].toarray().T
            else:
                KS = np.stack([self._row(int(i)) for i in idx], axis=1)
            return KS, self.r[idx]
        if self.sketch == "gaussian":
            S = self.rng.standard_normal((N, s))
        else:  # count sketch
            S = np.zeros((N, s))
            S[np.arange(N), self.rng.integers(0, s, size=N)] = self.rng.choice((-1.0, 1.0), size=N)
        if self.kind == "operator":
            KS = np.stack([self._apply(S[:, k]) for k in range(s)], axis=1)
        else:
            KS = np.asarray(self.K @ S)
            self.flops += self._matvec_flops() * s
        return KS, S.T @ self.r

    def _generic(self, count: int, target_sq: float, rows: np.ndarray | None = None) -> int:
        """Any sketch, any operator: :math:`z \\leftarrow z - KS\\,y`, :math:`y = (S^\\top K^2 S)^\\dagger S^\\top r`."""
        for t in range(count):
            KS, Sr = self._sketched_columns(rows, t)
            gram = KS.T @ KS
            s = gram.shape[0]
            self.flops += 2.0 * self.N * s * s + s**3 + 4.0 * self.N * s
            if s == 1:
                g = float(gram[0, 0])
                if not g > 0:
                    continue
                y = Sr / g
            else:
                y = np.linalg.lstsq(gram, Sr, rcond=None)[0]
            step = KS @ y
            self.z -= step
            self.r -= self._apply(step)
            if float(self.r @ self.r) <= target_sq:
                return t + 1
        return count


def sketch_solve(
    K: Any,
    b: Any,
    *,
    sketch: str = "kaczmarz",
    sampling: str = "uniform",
    block_size: int = 1,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    z0: Any = None,
    seed: Any = None,
    backend: str = "auto",
) -> SketchResult:
    r"""Solve the symmetric system :math:`Kz = b` by sketch-and-project to :math:`\|Kz - b\| \le tol\,\|b\|`.

    See :class:`SketchSolver` for the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> B, G = np.diag([2.0, 3.0, 4.0]), np.array([[1.0, 1.0, 1.0]])
    >>> K, b = kkt_matrix(B, G), np.array([1.0, 0.0, -1.0, 2.0])
    >>> out = sketch_solve(K, b, sketch="gaussian", tol=1e-10, seed=0)
    >>> out.converged, bool(np.allclose(out.z, np.linalg.solve(K, b)))
    (True, True)
    """
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    solver = SketchSolver(K, b, sketch=sketch, sampling=sampling, block_size=block_size, z0=z0, seed=seed,
                          backend=backend)
    converged = solver.run(tol * float(np.linalg.norm(solver.b)), max_iter)
    return SketchResult(solver.z.copy(), solver.residual_norm, solver.iterations, solver.flops, converged)
