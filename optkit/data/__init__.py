"""Datasets for optkit experiments: a verified data home, LIBSVM and MNIST readers.

Files are looked up in the data home (``$OPTKIT_DATA``, default ``~/.optkit/data``) as
``libsvm/<name>`` and ``mnist/<name>``, then among the small LIBSVM files shipped with the package,
then downloaded from their canonical source when a network is reachable. Every file is checked
against the size and sha256 recorded in :data:`registry`.
"""

from ._errors import ChecksumError, DataNotFoundError
from ._registry import DataFile, list_datasets, registry
from ._store import data_home, fetch
from .libsvm import load_libsvm
from .mnist import load_mnist, read_idx

DATASETS = registry

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DataFile",
    "DataNotFoundError",
    "data_home",
    "fetch",
    "list_datasets",
    "load_libsvm",
    "load_mnist",
    "read_idx",
    "registry",
]
