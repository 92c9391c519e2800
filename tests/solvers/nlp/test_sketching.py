"""Sketch-and-project solvers against numpy.linalg.solve on random (indefinite) KKT systems."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.linalg import aslinearoperator

from optkit.solvers.nlp.sketching import SketchSolver, kkt_matrix, sketch_solve


def _random_kkt(rng: np.random.Generator, n: int = 12, m: int = 4):
    A = rng.normal(size=(n, n))
    B = A @ A.T / n + 0.5 * np.eye(n)
    G = rng.normal(size=(m, n))
    K = kkt_matrix(B, G)
    b = rng.normal(size=n + m)
    return K, b, np.linalg.solve(K, b)


FORMS = {
    "dense": lambda K: K,
    "sparse": lambda K: sparse.csr_matrix(K),
    "operator": lambda K: aslinearoperator(K),
}
CASES = [("kaczmarz", "uniform", 1), ("kaczmarz", "row-norm", 1), ("gaussian", "uniform", 1),
         ("gaussian", "uniform", 4), ("rows", "uniform", 4), ("count", "uniform", 4)]


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("sketch,sampling,block", CASES)
def test_converges_to_numpy_solve(rng, form, sketch, sampling, block):
    K, b, z_star = _random_kkt(rng)
    out = sketch_solve(FORMS[form](K), b, sketch=sketch, sampling=sampling, block_size=block, tol=1e-10,
                       max_iter=500_000, seed=3)
    assert out.converged
    # ||z - z*|| <= ||K^{-1}|| ||r|| and ||r|| <= 1e-10 ||b||
    bound = np.linalg.norm(np.linalg.inv(K), 2) * 1e-10 * np.linalg.norm(b)
    assert np.linalg.norm(out.z - z_star) <= 1.01 * bound
    assert np.linalg.norm(K @ out.z - b) <= 1e-10 * np.linalg.norm(b) * (1 + 1e-6)
    assert out.flops > 0 and out.iterations > 0


def test_numba_and_numpy_kaczmarz_agree(rng):
    K, b, _ = _random_kkt(rng)
    a = SketchSolver(K, b, seed=5, backend="numba")
    c = SketchSolver(K, b, seed=5, backend="numpy")
    a.run(0.0, 300)
    c.run(0.0, 300)
    np.testing.assert_allclose(a.z, c.z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.r, K @ a.z - b, atol=1e-10)


def test_seeded_and_resumable(rng):
    K, b, _ = _random_kkt(rng)
    one = SketchSolver(K, b, sketch="gaussian", seed=7)
    one.run(0.0, 500)
    two = SketchSolver(K, b, sketch="gaussian", seed=7)
    two.run(0.0, 500)
    np.testing.assert_array_equal(one.z, two.z)
    before = one.residual_norm
    one.run(0.0, 2000)
    assert one.iterations == 2500 and one.residual_norm < before


def test_sparse_laplacian_kkt(rng):
    N = 6
    T = sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N))
    L = sparse.kronsum(T, T).tocsr()
    B = sparse.block_diag([sparse.eye(N * N), 0.1 * sparse.eye(N * N)])
    G = sparse.hstack([L, sparse.eye(N * N)])
    K = kkt_matrix(B, G)
    assert sparse.issparse(K)
    b = rng.normal(size=K.shape[0])
    out = sketch_solve(K, b, tol=1e-8, max_iter=2_000_000, seed=0)
    assert out.converged
    np.testing.assert_allclose(out.z, np.linalg.solve(K.toarray(), b), atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"sketch": "nope"}, "sketch"), ({"sampling": "x"}, "sampling"), ({"block_size": 0}, "block_size"),
    ({"sketch": "kaczmarz", "block_size": 3}, "block"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SketchSolver(np.eye(3), np.ones(3), **kwargs)
