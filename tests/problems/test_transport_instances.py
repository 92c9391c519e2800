"""The OT instance library: shapes, masses, costs against independent constructions, and exact solves by POT."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import optkit
from optkit.problems import Entropic, TransportProblem
from optkit.problems.library import transport_instances as lib

ot = pytest.importorskip("ot")


def _check(problem: TransportProblem, shape: tuple[int, int]) -> None:
    assert problem.shape == shape
    a, b = np.asarray(problem.a), np.asarray(problem.b)
    assert np.all(a >= 0) and np.all(b >= 0)
    assert abs(a.sum() - 1) < 1e-12 and abs(b.sum() - 1) < 1e-12
    assert np.all(np.isfinite(problem.cost)) and np.all(np.asarray(problem.cost) >= 0)


def test_random_assignment_is_seeded_uniform_cost() -> None:
    problem = lib.random_assignment(40, regularization=Entropic(1 / 1200), seed=3)
    _check(problem, (40, 40))
    np.testing.assert_array_equal(problem.cost, np.random.default_rng(3).random((40, 40)))
    np.testing.assert_array_equal(lib.random_assignment(40, seed=3).cost, problem.cost)
    assert problem.epsilon == 1 / 1200
    # Uniform marginals and a continuous cost: the exact plan is a permutation (scipy's Hungarian reference).
    from scipy.optimize import linear_sum_assignment

    result = optkit.solve(lib.random_assignment(40, seed=3), "emd")
    rows, cols = linear_sum_assignment(problem.cost)
    assert result.x.cost == pytest.approx(problem.cost[rows, cols].sum() / 40, rel=1e-12)


@pytest.mark.parametrize("dim", [2, 3])
def test_point_clouds(dim: int) -> None:
    problem = lib.point_clouds(30, 20, dim, seed=1)
    _check(problem, (30, 20))
    assert np.max(problem.cost) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dim"):
        lib.point_clouds(5, dim=4)


def test_mnist_pair_costs_and_support() -> None:
    l2 = lib.mnist_pair(0, 1, source="sklearn")
    l1 = lib.mnist_pair(0, 1, cost="cityblock", source="sklearn")
    _check(l2, (64, 64))
    grid = np.array([(r / 7, c / 7) for r in range(8) for c in range(8)])
    np.testing.assert_allclose(l2.cost, cdist(grid, grid, "sqeuclidean"), atol=1e-14)
    np.testing.assert_allclose(l1.cost, cdist(grid, grid, "cityblock"), atol=1e-14)
    small = lib.mnist_pair(0, 1, source="sklearn", support_only=True)
    assert np.all(np.asarray(small.a) > 0) and np.all(np.asarray(small.b) > 0)
    # Dropping zero-mass pixels does not change the OT problem: same exact cost as POT on the full grid.
    full = ot.emd2(np.asarray(l2.a), np.asarray(l2.b), np.asarray(l2.cost))
    assert optkit.solve(small, "emd").x.cost == pytest.approx(full, rel=1e-10)
    with pytest.raises(ValueError, match="cost"):
        lib.mnist_pair(0, 1, cost="cosine", source="sklearn")


def test_gaussian_mixtures_and_color_transfer() -> None:
    problem = lib.gaussian_mixtures_1d(50, 40)
    _check(problem, (50, 40))
    a = np.asarray(problem.a)
    assert np.argmax(a) in range(8, 12)  # the first mode at 0.2 on a 50-point grid of [0, 1]
    # quantiles with uniform weights: SciPy's mixture CDF at the points is (i + 1/2) / n
    from scipy.stats import norm

    quantiles = lib.gaussian_mixtures_1d(30, 20, points="quantiles")
    _check(quantiles, (30, 20))
    assert np.allclose(quantiles.a, 1 / 30) and np.allclose(quantiles.b, 1 / 20)
    x = lib._mixture_quantiles(30, *lib.MIXTURE_SOURCE)
    y = lib._mixture_quantiles(20, *lib.MIXTURE_TARGET)
    np.testing.assert_allclose(quantiles.cost, (x[:, None] - y[None, :]) ** 2, rtol=0, atol=0)
    for points, (means, stds, weights) in ((x, lib.MIXTURE_SOURCE), (y, lib.MIXTURE_TARGET)):
        cdf = sum(w * norm.cdf(points, mu, sd) for mu, sd, w in zip(means, stds, weights))
        np.testing.assert_allclose(cdf, (np.arange(points.size) + 0.5) / points.size, atol=1e-9)
    with pytest.raises(ValueError, match="points"):
        lib.gaussian_mixtures_1d(10, points="random")
    colors = lib.color_transfer(60, 50, seed=0)
    _check(colors, (60, 50))
    assert np.max(colors.cost) <= 3.0
    with pytest.raises(TypeError, match="n must be an int"):
        lib.color_transfer(2.5)
