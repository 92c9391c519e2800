"""Optimal transport between two digit images: normalised pixel histograms on the pixel grid.

An image :math:`I \\in \\mathbb R_{\\ge 0}^{h\\times w}` becomes the histogram :math:`a = \\operatorname{vec}(I) / \\sum I`
on the :math:`hw` pixel centres :math:`z_{(r, c)} = (r / (h - 1),\\, c / (w - 1)) \\in [0, 1]^2`, and the ground
cost is the squared Euclidean distance :math:`C_{kl} = \\|z_k - z_l\\|^2` (so :math:`\\max C = 2`). This is the
"MNIST" OT instance of Cuturi (2013, Sect. 5) and of the Sinkhorn-Newton-Sparse experiments (Tang et al. 2024).
"""

from __future__ import annotations

import functools
import operator

import numpy as np

__all__ = ["digit_images", "digit_pair", "grid_cost"]

_SOURCES = ("auto", "mnist", "sklearn")
_MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _mnist_present() -> bool:
    from optkit.data import DataNotFoundError, fetch

    try:
        for name in _MNIST_FILES:
            fetch(name, download=False)
    except DataNotFoundError:
        return False
    return True


@functools.lru_cache(maxsize=2)
def _load(source: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "mnist":
        from optkit.data import load_mnist

        images, labels = load_mnist("test")
    else:
        from sklearn.datasets import load_digits  # deferred: scikit-learn is slow to import

        bunch = load_digits()
        images, labels = bunch.images, bunch.target
    images = np.asarray(images, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _resolve(source: str) -> str:
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
    if source == "auto":
        return "mnist" if _mnist_present() else "sklearn"
    return source


def digit_images(source: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """The digit images and labels of ``source``, and the source actually used.

    Parameters
    ----------
    source : {"auto", "mnist", "sklearn"}
        ``"mnist"``: the 10,000 MNIST ``t10k`` test digits (28 x 28, grey levels 0-255) from the data home, via
        :func:`optkit.data.load_mnist` (which may download them); ``"sklearn"``: the 1,797 8 x 8 digits
        bundled with scikit-learn (:func:`sklearn.datasets.load_digits`, levels 0-16); ``"auto"``: MNIST when
        both ``t10k`` files are already in the data home, else scikit-learn's (never downloads).

    Returns
    -------
    images : numpy.ndarray, shape (N, h, w), float64, read-only
    labels : numpy.ndarray, shape (N,), int64, read-only
    source : str
        ``"mnist"`` or ``"sklearn"``.
    """
    chosen = _resolve(source)
    images, labels = _load(chosen)
    return images, labels, chosen


def grid_cost(height: int, width: int) -> np.ndarray:
    """Squared Euclidean cost between the pixel centres of an ``height x width`` grid scaled to :math:`[0,1]^2`.

    Pixels are numbered in C (row-major) order, as ``image.ravel()`` does.

    Examples
    --------
    >>> from optkit.problems.library.digits import grid_cost
    >>> grid_cost(2, 2)
    array([[0., 1., 1., 2.],
           [1., 0., 2., 1.],
           [1., 2., 0., 1.],
           [2., 1., 1., 0.]])
    """
    height, width = operator.index(height), operator.index(width)
    if height < 2 or width < 2:
        raise ValueError(f"the grid must be at least 2 x 2, got {height} x {width}")
    rows, cols = np.meshgrid(np.arange(height) / (height - 1), np.arange(width) / (width - 1), indexing="ij")
    points = np.column_stack([rows.ravel(), cols.ravel()])
    diff = points[:, None, :] - points[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


def digit_pair(i: int, j: int, source: str = "auto", *, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two digit images as normalised histograms on the pixel grid, and the squared Euclidean grid cost.

    Parameters
    ----------
    i, j : int
        Indices of the two images in the data set (see :func:`digit_images`).
    source : {"auto", "mnist", "sklearn"}
        Where the images come from; see :func:`digit_images`.
    floor : float, default 0.0
        Added to every pixel (relative to the image's mean intensity) before normalising. The default keeps
        the zero-mass background pixels: log-domain Sinkhorn (whose potential is :math:`-\\infty` there) and
        exact OT handle zero weights, so no floor is needed by optkit's solvers. Pass e.g. ``1e-6`` for a
        method that needs strictly positive marginals.

    Returns
    -------
    a, b : numpy.ndarray, shape (h*w,)
        Non-negative weights summing to 1 (pixels in row-major order).
    cost : numpy.ndarray, shape (h*w, h*w)
        :func:`grid_cost` of the image grid, :math:`\\max C = 2`.

    Examples
    --------
    >>> from optkit.problems.library.digits import digit_pair
    >>> a, b, cost = digit_pair(0, 1, source="sklearn")
    >>> a.shape, cost.shape, round(float(a.sum()), 12)
    ((64,), (64, 64), 1.0)
    """
    images, _, _ = digit_images(source)
    count = images.shape[0]
    pair = []
    for name, index in (("i", i), ("j", j)):
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{name} must be an int, got {type(index).__name__}") from None
        if not -count <= index < count:
            raise ValueError(f"{name} must index one of the {count} images, got {index}")
        pair.append(images[index])
    floor = float(floor)
    if not np.isfinite(floor) or floor < 0:
        raise ValueError(f"floor must be finite and >= 0, got {floor!r}")
    histograms = []
    for name, image in zip(("i", "j"), pair):
        weights = image.ravel() + floor * image.mean()
        total = weights.sum()
        if not total > 0:
            raise ValueError(f"image {name} is blank (all pixels zero); choose another index")
        histograms.append(weights / total)
    height, width = images.shape[1:]
    return histograms[0], histograms[1], grid_cost(height, width)
