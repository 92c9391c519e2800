"""digit_pair: valid histograms and the grid cost, on scikit-learn's digits and on MNIST when present."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from optkit.problems.library.digits import digit_images, digit_pair, grid_cost


def _mnist_available() -> bool:
    from optkit.problems.library.digits import _mnist_present

    return _mnist_present()


@pytest.mark.parametrize(
    "source, side",
    [("sklearn", 8), pytest.param("mnist", 28, marks=pytest.mark.skipif(not _mnist_available(),
                                                                         reason="MNIST t10k not in the data home"))],
)
def test_digit_pair_histograms(source, side):
    a, b, cost = digit_pair(0, 1, source=source)
    assert a.shape == b.shape == (side * side,) and cost.shape == (side * side, side * side)
    for w in (a, b):
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
        assert (w == 0).any()  # background pixels keep zero mass (no floor by default)
    images, _, used = digit_images(source)
    assert used == source
    np.testing.assert_allclose(a, images[0].ravel() / images[0].sum())
    grid = np.array([(r / (side - 1), c / (side - 1)) for r in range(side) for c in range(side)])
    np.testing.assert_allclose(cost, cdist(grid, grid, "sqeuclidean"), atol=1e-12)
    floored, _, _ = digit_pair(0, 1, source=source, floor=1e-6)
    assert np.all(floored > 0) and floored.sum() == pytest.approx(1.0)


def test_auto_source_and_errors():
    _, _, used = digit_images("auto")
    assert used == ("mnist" if _mnist_available() else "sklearn")
    with pytest.raises(ValueError, match="source"):
        digit_pair(0, 1, source="emnist")
    with pytest.raises(ValueError, match="i must index"):
        digit_pair(10**6, 1, source="sklearn")
    with pytest.raises(TypeError, match="j must be an int"):
        digit_pair(0, 1.5, source="sklearn")
    with pytest.raises(ValueError, match="floor"):
        digit_pair(0, 1, source="sklearn", floor=-1.0)
    with pytest.raises(ValueError, match="2 x 2"):
        grid_cost(1, 5)
