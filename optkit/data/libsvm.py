"""Reader for the registered LIBSVM (svmlight) binary-classification files."""

from __future__ import annotations

import logging
import operator

import numpy as np
import scipy.sparse

from ._registry import DataFile, list_datasets, lookup
from ._store import fetch

__all__ = ["load_libsvm"]

logger = logging.getLogger("optkit.data")

_SPLITS = (None, "train", "test")


def _resolve(name: str, split: str | None) -> DataFile:
    if split not in _SPLITS:
        raise ValueError(f"`split` must be None, 'train' or 'test', got {split!r}.")
    entry = lookup(name)
    if entry.collection != "libsvm":
        raise ValueError(f"{name!r} is a {entry.collection} file, not a LIBSVM one; "
                         "use the matching loader (e.g. optkit.data.load_mnist).")
    if split == "train" and entry.name.endswith(".t"):
        raise ValueError(f"{name!r} is a test file; ask for split='train' with "
                         f"name={entry.name.removesuffix('.t')!r}.")
    if split == "test" and not entry.name.endswith(".t"):
        test_name = f"{entry.name}.t"
        try:
            entry = lookup(test_name)
        except ValueError:
            having = sorted(n.removesuffix(".t") for n in _test_files())
            raise ValueError(f"{name!r} has no registered test split ({test_name!r}); "
                             f"LIBSVM files with one: {having}.") from None
    return entry


def _test_files() -> list[str]:
    return [n for n in list_datasets("libsvm") if n.endswith(".t")]


def _map_labels(raw: np.ndarray, entry: DataFile) -> np.ndarray:
    keys = np.array([k for k, _ in entry.labels], dtype=np.float64)
    values = np.array([v for _, v in entry.labels], dtype=np.float64)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    index = np.clip(np.searchsorted(keys, raw), 0, keys.size - 1)
    unknown = keys[index] != raw
    if unknown.any():
        raise ValueError(f"{entry.relpath!r} holds labels {np.unique(raw[unknown]).tolist()} outside "
                         f"the registered map {entry.label_map}.")
    return values[index]


def load_libsvm(name: str, *, split: str | None = None, n_features: int | None = None,
                dense: bool = False) -> tuple[scipy.sparse.csr_matrix | np.ndarray, np.ndarray]:
    r"""Load a registered LIBSVM binary-classification file with labels in :math:`\{-1, +1\}`.

    The file is located with :func:`optkit.data.fetch` (data home, shipped copy, download) and read
    with :func:`sklearn.datasets.load_svmlight_file` using the registered number of features, so a
    test file whose highest feature index is unused (``a9a.t`` stops at 122) still has the width of
    its training file (123).

    Labels are mapped to :math:`\{-1, +1\}` by the registered, order-preserving map (smaller raw
    label to -1): ``breast-cancer`` :math:`\{2, 4\}` (benign -1, malignant +1), ``svmguide1`` and
    ``phishing`` :math:`\{0, 1\}` (phishing -1, legitimate +1), ``mushrooms`` :math:`\{1, 2\}`
    (poisonous -1, edible +1); the other files already use :math:`\{-1, +1\}`.

    Parameters
    ----------
    name : str
        Registered LIBSVM name, e.g. ``"heart_scale"``, ``"a9a"`` or ``"a9a.t"``.
    split : {None, "train", "test"}, optional
        ``None`` reads ``name`` itself; ``"train"`` the same, refusing a ``.t`` file; ``"test"``
        reads the registered ``<name>.t`` (only ``a9a`` has one), or ``name`` if it is a ``.t`` file.
    n_features : int, optional
        Number of columns; defaults to the registered width. A larger value pads with empty
        columns; a smaller one is rejected.
    dense : bool, default False
        Return ``X`` as a dense C-ordered ``numpy.ndarray`` instead of CSR.

    Returns
    -------
    X : scipy.sparse.csr_matrix or numpy.ndarray, shape (n_samples, n_features)
        Features, float64.
    y : numpy.ndarray, shape (n_samples,)
        Labels in :math:`\{-1.0, +1.0\}`, float64.

    Raises
    ------
    ValueError
        Unknown name, a non-LIBSVM file, a bad ``split`` or a too small ``n_features``.
    DataNotFoundError, ChecksumError
        As raised by :func:`optkit.data.fetch`.

    Examples
    --------
    >>> from optkit.data import load_libsvm
    >>> X, y = load_libsvm("heart_scale")
    >>> X.shape, X.format, sorted(set(y.tolist()))
    ((270, 13), 'csr', [-1.0, 1.0])
    >>> X, y = load_libsvm("breast-cancer", dense=True)
    >>> X.shape, int((y == 1).sum())
    ((683, 10), 239)
    """
    entry = _resolve(name, split)
    width = entry.n_features
    if n_features is not None:
        n_features = operator.index(n_features)
        if n_features < width:
            raise ValueError(f"`n_features` must be at least {width} for {entry.name!r} "
                             f"(its registered width), got {n_features}.")
        width = n_features
    path = fetch(entry.name)
    from sklearn.datasets import load_svmlight_file  # deferred: scikit-learn is slow to import

    X, raw = load_svmlight_file(path, n_features=width, dtype=np.float64)
    logger.debug("read %s: %d x %d, %d non-zeros", path, X.shape[0], X.shape[1], X.nnz)
    y = _map_labels(np.asarray(raw, dtype=np.float64), entry)
    X = scipy.sparse.csr_matrix(X, dtype=np.float64)
    return (X.toarray() if dense else X), y
