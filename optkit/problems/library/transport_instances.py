"""Optimal-transport instances of the Sinkhorn-Newton-Sparse and sparsity-constrained OT papers.

Each function returns a :class:`~optkit.problems.TransportProblem` with the ``regularization`` it is given
(``None``: exact OT), so that one instance can be solved by every OT method:

- :func:`random_assignment`: :math:`C_{ij} \\sim U[0, 1]`, uniform marginals (Tang et al., ICLR 2024, §5: n = 500,
  :math:`\\eta = 1/\\varepsilon = 1200`);
- :func:`point_clouds`: two random clouds in 2-D or 3-D, squared Euclidean cost;
- :func:`mnist_pair`: two digit images as densities on the pixel grid, with the L1 (:math:`W_1`) or squared L2
  (:math:`W_2^2`) ground cost (Tang et al., Table 1); 28 x 28 MNIST from the data home, scikit-learn's 8 x 8 digits
  as the fallback that is always there;
- :func:`gaussian_mixtures_1d`: two Gaussian mixtures on a grid of [0, 1], or at their quantiles with uniform
  weights (Liu, Puigcerver & Blondel, ICLR 2023,
  Figure 1);
- :func:`color_transfer`: colour-transfer point clouds, the RGB values of pixels sampled from two photographs
  bundled with scikit-learn (``china.jpg`` and ``flower.jpg``).

Examples
--------
>>> from optkit.problems import Entropic
>>> from optkit.problems.library.transport_instances import random_assignment
>>> problem = random_assignment(50, regularization=Entropic(1 / 1200), seed=0)
>>> problem.shape
(50, 50)
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from optkit._arrays import as_generator
from optkit.problems.library.digits import digit_images, digit_pair
from optkit.problems.transport import Regularization, TransportProblem, pairwise_cost

__all__ = ["color_transfer", "gaussian_mixtures_1d", "grid_l1_cost", "mnist_pair", "point_clouds",
           "random_assignment"]

_COSTS = ("sqeuclidean", "cityblock")


def _size(name: str, value: Any, minimum: int = 1) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def random_assignment(n: int = 500, *, regularization: Regularization | None = None, seed: Any = 0
                      ) -> TransportProblem:
    """The random assignment problem: :math:`C_{ij} \\sim U[0,1]` i.i.d., uniform marginals :math:`1/n`.

    The first instance of Tang et al. (ICLR 2024, Table 1) with n = 500 and :math:`\\eta = 1200`, i.e.
    ``regularization=Entropic(1 / 1200)``.

    Parameters
    ----------
    n
        Number of points on each side, >= 1.
    regularization
        The problem's regularization (``None``: exact OT).
    seed
        An int or a :class:`numpy.random.Generator`.
    """
    n = _size("n", n)
    cost = as_generator(seed).random((n, n))
    return TransportProblem(None, None, cost, regularization)


def point_clouds(n: int = 1000, m: int | None = None, dim: int = 2, *,
                 regularization: Regularization | None = None, seed: Any = 0) -> TransportProblem:
    """Two random point clouds in ``dim`` = 2 or 3 dimensions with the squared Euclidean cost, max-normalised.

    The source is uniform on :math:`[0, 1]^d`; the target is a mixture of three Gaussians (standard deviation
    0.1, centres uniform in :math:`[0.2, 0.8]^d`). Both have uniform weights. The cost is divided by its maximum,
    so that the regularization is relative to a unit cost.

    Parameters
    ----------
    n, m
        Numbers of source and target points (``m`` defaults to ``n``).
    dim
        2 or 3.
    regularization, seed
        As for :func:`random_assignment`.
    """
    n = _size("n", n)
    m = n if m is None else _size("m", m)
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    rng = as_generator(seed)
    x = rng.random((n, dim))
    centres = 0.2 + 0.6 * rng.random((3, dim))
    y = centres[rng.integers(0, 3, size=m)] + 0.1 * rng.normal(size=(m, dim))
    return TransportProblem.from_points(x, y, normalize="max", regularization=regularization)


def grid_l1_cost(height: int, width: int) -> np.ndarray:
    """L1 cost :math:`|r_k - r_l| + |c_k - c_l|` between the pixel centres of a grid scaled to :math:`[0,1]^2`.

    Same pixel numbering and scaling as :func:`optkit.problems.library.digits.grid_cost` (so :math:`\\max C = 2`).
    """
    height, width = _size("height", height, 2), _size("width", width, 2)
    rows, cols = np.meshgrid(np.arange(height) / (height - 1), np.arange(width) / (width - 1), indexing="ij")
    points = np.column_stack([rows.ravel(), cols.ravel()])
    return pairwise_cost(points, points, "cityblock")


def mnist_pair(i: int = 0, j: int = 1, *, cost: str = "sqeuclidean", source: str = "auto", floor: float = 0.0,
               support_only: bool = False, regularization: Regularization | None = None) -> TransportProblem:
    """Two digit images as densities on their pixel grid (Tang et al., ICLR 2024, Table 1: MNIST L1 and L2).

    Parameters
    ----------
    i, j
        Indices of the two images (see :func:`optkit.problems.library.digits.digit_images`).
    cost
        ``"sqeuclidean"`` (:math:`W_2^2`, the paper's "L2") or ``"cityblock"`` (:math:`W_1` with the L1 ground
        distance, the paper's "L1"), between pixel centres scaled to :math:`[0, 1]^2` (both have maximum 2).
    source
        ``"auto"`` (MNIST 28 x 28 when the ``t10k`` files are in the data home, else scikit-learn's 8 x 8 digits;
        never downloads), ``"mnist"`` or ``"sklearn"``.
    floor
        Added to every pixel, relative to the image's mean, before normalising (0: background pixels keep zero
        mass).
    support_only
        Keep only the pixels with positive mass (rows of the source, columns of the target). The OT problem is
        the same (zero-mass points carry no plan), only smaller; methods that need positive weights can use it.
    regularization
        As for :func:`random_assignment`.
    """
    if cost not in _COSTS:
        raise ValueError(f"cost must be one of {_COSTS}, got {cost!r}")
    a, b, squared = digit_pair(i, j, source, floor=floor)
    if cost == "sqeuclidean":
        matrix = squared
    else:
        images, _, _ = digit_images(source)
        matrix = grid_l1_cost(*images.shape[1:])
    if support_only:
        rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
        a, b, matrix = a[rows], b[cols], matrix[np.ix_(rows, cols)]
    return TransportProblem(a, b, matrix, regularization)


def gaussian_mixtures_1d(n: int = 200, m: int | None = None, *, regularization: Regularization | None = None,
                         points: str = "grid") -> TransportProblem:
    """Two 1-D Gaussian mixtures, squared cost (deterministic).

    The source has modes at 0.2 and 0.6 (standard deviations 0.05, 0.1; weights 0.5, 0.5), the target at 0.3,
    0.55 and 0.85 (standard deviations 0.04, 0.06, 0.05; weights 0.3, 0.4, 0.3): the kind of pair the
    sparsity-constrained OT paper plots its plans on (Liu, Puigcerver & Blondel, ICLR 2023, Figure 1).

    Parameters
    ----------
    n, m
        Numbers of source and target points (``m`` defaults to ``n``), >= 2.
    regularization
        As for :func:`random_assignment`.
    points
        ``"grid"``: the densities on a uniform grid of :math:`[0, 1]`, normalised (masses from ~1e-14 in the
        tails to ~2e-2); ``"quantiles"``: the mixtures' quantiles at levels :math:`(i + 1/2)/n` with uniform
        weights :math:`1/n` (an empirical measure of the same mixture; :func:`_mixture_quantiles`).
    """
    n = _size("n", n, 2)
    m = n if m is None else _size("m", m, 2)
    if points not in ("grid", "quantiles"):
        raise ValueError(f"points must be 'grid' or 'quantiles', got {points!r}")
    if points == "grid":
        x, y = np.linspace(0, 1, n), np.linspace(0, 1, m)
        a, b = _mixture_density(x, *MIXTURE_SOURCE), _mixture_density(y, *MIXTURE_TARGET)
        a, b = a / a.sum(), b / b.sum()
    else:
        x, y = _mixture_quantiles(n, *MIXTURE_SOURCE), _mixture_quantiles(m, *MIXTURE_TARGET)
        a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    return TransportProblem(a, b, (x[:, None] - y[None, :]) ** 2, regularization)


MIXTURE_SOURCE = ((0.2, 0.6), (0.05, 0.1), (0.5, 0.5))  # means, standard deviations, weights
MIXTURE_TARGET = ((0.3, 0.55, 0.85), (0.04, 0.06, 0.05), (0.3, 0.4, 0.3))


def _mixture_density(grid: np.ndarray, means: tuple, stds: tuple, weights: tuple) -> np.ndarray:
    """The (unnormalised by the grid) density of a Gaussian mixture at ``grid``."""
    return sum(w * np.exp(-0.5 * ((grid - mu) / s) ** 2) / (s * np.sqrt(2 * np.pi))
               for mu, s, w in zip(means, stds, weights))


def _mixture_quantiles(count: int, means: tuple, stds: tuple, weights: tuple) -> np.ndarray:
    """The mixture's quantiles at levels (i + 1/2) / count: its CDF integrated by the trapezoid rule on a grid of
    step 1e-5 over [-0.5, 1.5] (where these mixtures hold all but ~1e-20 of their mass), inverted by interpolation."""
    fine = np.linspace(-0.5, 1.5, 200_001)
    values = _mixture_density(fine, means, stds, weights)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (values[1:] + values[:-1]))])
    cdf /= cdf[-1]
    return np.interp((np.arange(count) + 0.5) / count, cdf, fine)


@functools.lru_cache(maxsize=1)
def _photographs() -> tuple[np.ndarray, np.ndarray]:
    # deferred: scikit-learn is slow to import
    from sklearn.datasets import load_sample_images

    first, second = load_sample_images().images
    return (first.reshape(-1, 3) / 255.0, second.reshape(-1, 3) / 255.0)


def color_transfer(n: int = 1000, m: int | None = None, *, regularization: Regularization | None = None,
                   seed: Any = 0) -> TransportProblem:
    """Colour transfer: RGB values in :math:`[0, 1]^3` of ``n`` pixels of one photograph and ``m`` of another.

    The photographs are the two sample images bundled with scikit-learn (``china.jpg``, ``flower.jpg``;
    :func:`sklearn.datasets.load_sample_images`), pixels drawn uniformly without replacement, uniform weights,
    squared Euclidean cost in RGB (maximum 3), as in the colour-transfer examples of the OT literature (Ferradans
    et al., SIAM J. Imaging Sci. 2014).

    Parameters
    ----------
    n, m
        Numbers of source and target pixels (``m`` defaults to ``n``).
    regularization, seed
        As for :func:`random_assignment`.
    """
    n = _size("n", n)
    m = n if m is None else _size("m", m)
    source, target = _photographs()
    if n > source.shape[0] or m > target.shape[0]:
        raise ValueError(f"n and m must be at most {min(source.shape[0], target.shape[0])} pixels")
    rng = as_generator(seed)
    x = source[rng.choice(source.shape[0], n, replace=False)]
    y = target[rng.choice(target.shape[0], m, replace=False)]
    return TransportProblem.from_points(x, y, regularization=regularization)
