"""Convex sets: projections against CVXPY (Clarabel), invariants, validation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from optkit.problems.sets import (
    Affine,
    Ball,
    Box,
    ConvexSet,
    NonNegative,
    Product,
    Reals,
    Simplex,
)

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cvxpy")


def _rank_deficient_affine(rng: np.random.Generator, n: int = 7) -> Affine:
    # 5 equations of rank 3, consistent by construction.
    A = rng.standard_normal((5, 3)) @ rng.standard_normal((3, n))
    return Affine(A, A @ rng.standard_normal(n))


# Each case: a name, a seeded factory, and the CVXPY constraints describing the same set.
def _box(rng):
    lower = rng.uniform(-1.0, 0.0, 8)
    upper = lower + rng.uniform(0.0, 2.0, 8)
    lower[2], upper[5] = -np.inf, np.inf
    return Box(lower, upper)


def _box_constraints(z, s):
    lo, up = np.isfinite(s.lower), np.isfinite(s.upper)
    return [z[np.flatnonzero(lo)] >= s.lower[lo], z[np.flatnonzero(up)] <= s.upper[up]]


CASES = {
    "reals": (lambda rng: Reals(6), lambda cp, z, s: []),
    "box": (_box, lambda cp, z, s: _box_constraints(z, s)),
    "nonnegative": (lambda rng: NonNegative(9), lambda cp, z, s: [z >= 0]),
    "simplex": (lambda rng: Simplex(10), lambda cp, z, s: [z >= 0, cp.sum(z) == s.total]),
    "simplex_total": (lambda rng: Simplex(6, total=3.5), lambda cp, z, s: [z >= 0, cp.sum(z) == s.total]),
    "ball2": (
        lambda rng: Ball(rng.standard_normal(5), 0.7),
        lambda cp, z, s: [cp.norm(z - s.center, 2) <= s.radius],
    ),
    "ball_inf": (
        lambda rng: Ball(rng.standard_normal(5), 0.4, norm=np.inf),
        lambda cp, z, s: [cp.norm(z - s.center, "inf") <= s.radius],
    ),
    "affine": (
        lambda rng: Affine(rng.standard_normal((3, 8)), rng.standard_normal(3)),
        lambda cp, z, s: [s.A @ z == s.b],
    ),
    "affine_rank_deficient": (_rank_deficient_affine, lambda cp, z, s: [s.A @ z == s.b]),
    "product": (
        lambda rng: Product(Simplex(4, total=2.0), Ball(np.zeros(3), 1.0), NonNegative(2)),
        lambda cp, z, s: [z[:4] >= 0, cp.sum(z[:4]) == 2.0, cp.norm(z[4:7], 2) <= 1.0, z[7:] >= 0],
    ),
}


def _make(case: str, seed: int) -> tuple[ConvexSet, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = CASES[case][0](rng)
    return s, 2.0 * rng.standard_normal(s.dim)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(CASES))
def test_projection_matches_cvxpy(cp, case, seed):
    s, x = _make(case, seed)
    z = cp.Variable(s.dim)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(z - x)), CASES[case][1](cp, z, s))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert problem.status == cp.OPTIMAL
    np.testing.assert_allclose(s.project(x), z.value, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(CASES))
def test_projection_invariants(case, seed):
    s, x = _make(case, seed)
    p = s.project(x)
    assert p.shape == (s.dim,) and p.dtype == np.float64
    assert p is not x
    np.testing.assert_allclose(s.project(p), p, atol=1e-12)  # idempotent
    assert s.contains(p)
    # Obtuse-angle characterisation: (x - P x) . (y - P x) <= 0 for every y in the set.
    rng = np.random.default_rng(seed + 100)
    for y in s.project(5.0 * rng.standard_normal((20, s.dim))):
        assert (x - p) @ (y - p) <= 1e-9 * max(1.0, np.linalg.norm(x - p) * np.linalg.norm(y - p))


@pytest.mark.parametrize("case", [c for c in CASES if c != "reals"])
def test_far_point_is_not_contained(case):
    s, x = _make(case, 0)
    p = s.project(x)
    gap = np.linalg.norm(x - p)
    assert gap > 1e-3  # the seeded point lies outside every case's set
    far = p + 10.0 * (x - p) / gap  # same normal direction, distance 10
    assert not s.contains(x) and not s.contains(far, tol=1e-3)
    np.testing.assert_allclose(s.project(far), p, atol=1e-10)


@pytest.mark.parametrize("case", list(CASES))
def test_batched_projection_matches_rows(case):
    s, _ = _make(case, 3)
    X = 2.0 * np.random.default_rng(4).standard_normal((2, 3, s.dim))
    P = s.project(X)
    assert P.shape == X.shape
    for index in np.ndindex(2, 3):
        np.testing.assert_allclose(P[index], s.project(X[index]), rtol=1e-13, atol=1e-13)


def test_simplex_large_kkt():
    # KKT of the projection: z = max(x - theta, 0), sum z = total.
    x = np.random.default_rng(5).standard_normal(20_000)
    z = Simplex(x.size, total=3.0).project(x)
    assert np.all(z >= 0) and z.sum() == pytest.approx(3.0, rel=1e-12)
    support = z > 0
    theta = x[support] - z[support]
    np.testing.assert_allclose(theta, theta[0], atol=1e-12)
    assert np.all(x[~support] <= theta[0] + 1e-12)


def test_simplex_edge_cases():
    s = Simplex(3)
    np.testing.assert_allclose(s.project([5.0, 5.0, 5.0]), [1 / 3] * 3)
    np.testing.assert_allclose(s.project([0.2, 0.3, 0.5]), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(s.project([1e9, 0.0, -1e9]), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(Simplex(1, total=2.0).project([-7.0]), [2.0])


def test_affine_matches_pseudoinverse_formula():
    rng = np.random.default_rng(6)
    s = _rank_deficient_affine(rng, n=12)
    assert s.rank == 3
    x = rng.standard_normal(12)
    reference = x - np.linalg.pinv(s.A) @ (s.A @ x - s.b)
    np.testing.assert_allclose(s.project(x), reference, atol=1e-10)
    np.testing.assert_allclose(s.A @ s.project(x), s.b, atol=1e-10)


def test_affine_special_cases():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    A = scipy_sparse.csr_matrix(np.array([[1.0, 0.0, 1.0]]))
    np.testing.assert_allclose(Affine(A, [2.0]).project([0.0, 5.0, 0.0]), [1.0, 5.0, 1.0])
    everything = Affine(np.zeros((0, 3)), np.zeros(0))
    np.testing.assert_allclose(everything.project([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0])
    zero = Affine(np.zeros((2, 3)), np.zeros(2))
    assert zero.rank == 0 and zero.contains(np.ones(3))


def test_contains_and_tolerance():
    box = Box(0.0, 1.0, dim=2)
    assert box.contains([0.0, 1.0])
    assert box.contains([1.0 + 1e-12, 0.5])
    assert not box.contains([1.0 + 1e-6, 0.5])
    assert box.contains([1.0 + 1e-6, 0.5], tol=1e-5)
    assert not box.contains([np.nan, 0.5])
    assert not Reals(2).contains([np.inf, 0.0])
    assert Reals(2).contains([1e300, -1e300])
    assert Simplex(3).contains([0.2, 0.3, 0.5])
    assert not Simplex(3).contains([0.2, 0.3, 0.6])
    assert Ball(np.zeros(2), 1.0).contains([0.6, 0.8])
    assert not Ball(np.zeros(2), 1.0, norm="inf").contains([1.1, 0.0])


def test_box_broadcasting_and_subclasses():
    box = Box(-1.0, [1.0, 2.0, 3.0])
    assert box.dim == 3
    np.testing.assert_array_equal(box.lower, [-1.0, -1.0, -1.0])
    assert isinstance(NonNegative(2), Box) and isinstance(Reals(2), Box)
    np.testing.assert_array_equal(NonNegative(2).upper, [np.inf, np.inf])
    np.testing.assert_array_equal(Box(2.0, 2.0, dim=2).project([0.0, 5.0]), [2.0, 2.0])


def test_product_split_and_sets():
    prod = Product(Reals(1), Simplex(2), Box(0.0, 1.0, dim=3))
    assert prod.dim == 6 and len(prod.sets) == 3
    pieces = prod.split(np.arange(6.0))
    assert [p.tolist() for p in pieces] == [[0.0], [1.0, 2.0], [3.0, 4.0, 5.0]]
    nested = Product(prod, NonNegative(1))
    x = np.random.default_rng(7).standard_normal(7)
    np.testing.assert_allclose(nested.project(x)[:6], prod.project(x[:6]))


def test_project_returns_new_array():
    x = np.array([0.5, 0.5])
    for s in (Reals(2), Box(0.0, 1.0, dim=2), Affine(np.eye(2), x)):
        p = s.project(x)
        p[0] = 99.0
        assert x[0] == 0.5


def test_immutable_and_defensive_copies():
    lower = np.zeros(3)
    box = Box(lower, 1.0)
    lower[0] = 5.0
    assert box.lower[0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        box.lower[0] = 1.0
    with pytest.raises(AttributeError, match="immutable"):
        box.dim = 4
    with pytest.raises(AttributeError, match="immutable"):
        Simplex(3).total = 2.0
    with pytest.raises(AttributeError):
        box.new_attribute = 1


@pytest.mark.parametrize("case", list(CASES))
def test_pickle_roundtrip(case):
    s, x = _make(case, 0)
    clone = pickle.loads(pickle.dumps(s))
    assert type(clone) is type(s) and repr(clone) == repr(s)
    np.testing.assert_array_equal(clone.project(x), s.project(x))
    with pytest.raises(AttributeError, match="immutable"):
        clone._dim = 1


def test_repr():
    assert repr(Reals(3)) == "Reals(dim=3)"
    assert repr(NonNegative(2)) == "NonNegative(dim=2)"
    assert repr(Box(0.0, 1.0, dim=4)) == "Box(lower=0.0, upper=1.0, dim=4)"
    assert repr(Simplex(3, total=2.0)) == "Simplex(dim=3, total=2.0)"
    assert repr(Ball(0.0, 1.0, norm=np.inf, dim=2)) == "Ball(center=0.0, radius=1.0, norm=inf, dim=2)"
    assert repr(Affine(np.ones((1, 2)), [1.0])) == "Affine(m=1, dim=2, rank=1)"
    assert repr(Product(Reals(1), Simplex(2))) == "Product(Reals(dim=1), Simplex(dim=2, total=1.0))"


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: Reals(0), ValueError, "dim must be a positive integer"),
        (lambda: Reals(2.5), ValueError, "dim must be a positive integer"),
        (lambda: NonNegative(True), ValueError, "dim must be a positive integer"),
        (lambda: Box(1.0, 0.0, dim=2), ValueError, r"lower must not exceed upper.*lower\[0\]"),
        (lambda: Box([0.0, 2.0], [1.0, 1.0]), ValueError, r"lower\[1\]=2.0 > upper\[1\]=1.0"),
        (lambda: Box(0.0, 1.0), ValueError, "dim is required"),
        (lambda: Box([0.0, 0.0], [1.0, 1.0, 1.0]), ValueError, "same length"),
        (lambda: Box([0.0, 0.0], 1.0, dim=3), ValueError, "dim=3 does not match"),
        (lambda: Box([0.0, np.nan], 1.0), ValueError, "lower must not contain NaN"),
        (lambda: Box(0.0, np.nan, dim=2), ValueError, "upper must not contain NaN"),
        (lambda: Box(np.inf, np.inf, dim=2), ValueError, r"lower must not be \+inf"),
        (lambda: Box(-np.inf, -np.inf, dim=2), ValueError, "upper must not be -inf"),
        (lambda: Box(np.zeros((2, 2)), 1.0), ValueError, "lower must be a scalar or a 1-D array"),
        (lambda: Simplex(3, total=0.0), ValueError, "total must be positive"),
        (lambda: Simplex(3, total=-1.0), ValueError, "total must be positive"),
        (lambda: Simplex(3, total=np.nan), ValueError, "total must not be NaN"),
        (lambda: Ball(np.zeros(2), -1.0), ValueError, "radius must be nonnegative"),
        (lambda: Ball(np.zeros(2), np.inf), ValueError, "radius must be nonnegative and finite"),
        (lambda: Ball(np.zeros(2), 1.0, norm=1), ValueError, "norm must be 2 or inf"),
        (lambda: Ball([0.0, np.nan], 1.0), ValueError, "center must not contain NaN"),
        (lambda: Ball(0.0, 1.0), ValueError, "dim is required"),
        (lambda: Ball(np.zeros(2), 1.0, dim=3), ValueError, "dim=3 does not match"),
        (lambda: Affine(np.ones(3), [1.0]), ValueError, "A must be a 2-D array"),
        (lambda: Affine(np.ones((2, 3)), [1.0]), ValueError, r"b must have shape \(2,\)"),
        (lambda: Affine(np.array([[1.0, np.inf]]), [1.0]), ValueError, "A must be finite"),
        (lambda: Affine(np.array([[1.0, 1.0], [2.0, 2.0]]), [1.0, 3.0]), ValueError, "infeasible"),
        (lambda: Affine(np.zeros((1, 2)), [1.0]), ValueError, "infeasible"),
        (lambda: Product(), ValueError, "at least one"),
        (lambda: Product(Reals(2), "box"), TypeError, r"sets\[1\] must be a ConvexSet"),
    ],
)
def test_invalid_construction(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("case", list(CASES))
def test_project_rejects_wrong_shape(case):
    s, _ = _make(case, 0)
    with pytest.raises(ValueError, match=rf"x must have shape \({s.dim},\)"):
        s.project(np.zeros(s.dim + 1))
    with pytest.raises(ValueError, match="x must have shape"):
        s.project(1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        s.contains(np.zeros((2, s.dim)))
