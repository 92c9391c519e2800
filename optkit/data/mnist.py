"""Reader for MNIST's gzipped IDX files, written against the IDX format description on the MNIST page."""

from __future__ import annotations

import gzip
import logging
import math
import os

import numpy as np

from ._store import fetch

__all__ = ["load_mnist", "read_idx"]

logger = logging.getLogger("optkit.data")

# IDX type byte -> element type; multi-byte types are big-endian.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian array.

    The header is two zero bytes, a type byte, the number of dimensions :math:`k`, then :math:`k`
    big-endian uint32 sizes; the data follow, big-endian, in C order.

    Parameters
    ----------
    path : path-like
        IDX file; gzip compression is detected from its first two bytes.
    magic : int, optional
        Required magic number (the first four bytes as a big-endian integer), e.g. 2051 for MNIST
        images, 2049 for labels.

    Returns
    -------
    numpy.ndarray
        Writable array with the dimensions of the header.

    Raises
    ------
    ValueError
        Not an IDX file, an unknown type byte, the wrong magic number, or a data length that does
        not match the header.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from optkit.data import read_idx
    >>> header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "tiny-idx2-ubyte")
    ...     with open(path, "wb") as f:
    ...         _ = f.write(header + bytes(range(6)))
    ...     read_idx(path, magic=0x0802)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    with open(path, "rb") as stream:
        raw = stream.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{os.fspath(path)} is not an IDX file (its first two bytes are not zero).")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise ValueError(f"{os.fspath(path)} has IDX magic number {found}, expected {magic}.")
    dtype = _IDX_TYPES.get(raw[2])
    if dtype is None:
        raise ValueError(f"{os.fspath(path)} has unknown IDX type byte {raw[2]:#04x}.")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"{os.fspath(path)} ends inside its IDX header.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{os.fspath(path)} holds {len(raw) - offset} data bytes, but its IDX header "
                         f"{shape} of {dtype} needs {expected}.")
    data = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def load_mnist(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split from the original gzipped IDX files.

    Files are located with :func:`optkit.data.fetch` under ``<data home>/mnist/``: the data home,
    then a download from the original MNIST URL or its mirrors.

    Parameters
    ----------
    split : {"test", "train"}, default "test"
        ``"test"``: the 10,000 ``t10k`` digits; ``"train"``: the 60,000 training digits.

    Returns
    -------
    images : numpy.ndarray of uint8, shape (n, 28, 28)
        Grey levels 0 (background) to 255.
    labels : numpy.ndarray of uint8, shape (n,)
        Digits 0 to 9.

    Raises
    ------
    ValueError
        A bad ``split`` or a malformed file.
    DataNotFoundError, ChecksumError
        As raised by :func:`optkit.data.fetch` (e.g. training images absent while offline).

    Examples
    --------
    >>> from optkit.data import load_mnist
    >>> images, labels = load_mnist("test")  # doctest: +SKIP
    >>> images.shape, labels.shape, images.dtype  # doctest: +SKIP
    ((10000, 28, 28), (10000,), dtype('uint8'))
    """
    if split not in _FILES:
        raise ValueError(f"`split` must be 'test' or 'train', got {split!r}.")
    image_name, label_name = _FILES[split]
    # Locate both before decoding either, so a missing file fails fast.
    image_path, label_path = fetch(image_name), fetch(label_name)
    images = read_idx(image_path, magic=_IMAGES_MAGIC)
    labels = read_idx(label_path, magic=_LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"MNIST {split} files disagree: images {images.shape}, labels {labels.shape}.")
    logger.debug("read MNIST %s: %d images", split, images.shape[0])
    return images, labels
