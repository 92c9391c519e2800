"""Registry of the data files optkit knows: sizes, sha256 sums, shapes, label maps and sources.

Sizes, sha256 sums, shapes and non-zero counts are those recorded in ``libsvm/SOURCES.md`` and
``mnist/SOURCES.md`` of the shared data directory (every LIBSVM file was checked there against the
official LIBSVM rows x features). The sha256 of ``train-images-idx3-ubyte.gz``, the one file not held
locally, is the widely used checksum of the official archive (e.g. the ossci-datasets MNIST mirror
manifest); its size and MD5 are the official ones.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LIBSVM_BASE_URL",
    "MNIST_BASE_URL",
    "MNIST_MIRROR_URLS",
    "DataFile",
    "list_datasets",
    "lookup",
    "registry",
]

#: Directory of the official LIBSVM binary-classification data sets.
LIBSVM_BASE_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"
#: Original MNIST distribution (the URL torchvision, Keras and TFDS loaders were written against).
MNIST_BASE_URL = "http://yann.lecun.com/exdb/mnist/"
#: Mirrors serving byte-identical MNIST archives (the original site often refuses downloads).
MNIST_MIRROR_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_PLUS_MINUS = ((-1.0, -1.0), (1.0, 1.0))


@dataclass(frozen=True)
class DataFile:
    """One registered data file.

    Parameters
    ----------
    name : str
        Canonical file name (the LIBSVM / MNIST distribution name); the registry key.
    collection : {"libsvm", "mnist"}
        Sub-directory of the data home holding the file.
    n_bytes : int
        Size of the file in bytes.
    sha256 : str
        Hex sha256 of the file.
    shape : tuple of int
        Decoded shape: ``(rows, features)`` for LIBSVM, the IDX dimensions for MNIST.
    url : str
        Canonical download URL.
    shipped : bool
        Whether the file ships inside the package (``optkit/data/files/<collection>/<name>``).
    labels : tuple of (float, float)
        LIBSVM label map ``(raw, mapped)``; every map sends the smaller raw label to -1 and the larger
        to +1. Empty for MNIST.
    nnz : int or None
        Stored non-zeros of the LIBSVM matrix.
    mirrors : tuple of str
        Further URLs serving the same bytes, tried in order after ``url``.
    variants : tuple of (int, str)
        Other ``(n_bytes, sha256)`` accepted for the file: the same data with only a final newline
        added, as some copies (and likely the official site) have it. The parsed data are identical.
    md5 : str or None
        Official MD5 where one is published (MNIST).
    """

    name: str
    collection: str
    n_bytes: int
    sha256: str
    shape: tuple[int, ...]
    url: str
    shipped: bool = False
    labels: tuple[tuple[float, float], ...] = ()
    nnz: int | None = None
    mirrors: tuple[str, ...] = ()
    variants: tuple[tuple[int, str], ...] = ()
    md5: str | None = None

    @property
    def relpath(self) -> str:
        """Path of the file relative to the data home, e.g. ``"libsvm/a9a"``."""
        return f"{self.collection}/{self.name}"

    @property
    def urls(self) -> tuple[str, ...]:
        """Canonical URL followed by the mirrors."""
        return (self.url, *self.mirrors)

    @property
    def label_map(self) -> dict[float, float]:
        """LIBSVM label map ``{raw: mapped}`` (empty for MNIST)."""
        return dict(self.labels)

    @property
    def n_rows(self) -> int:
        """Number of rows (samples)."""
        return self.shape[0]

    @property
    def n_features(self) -> int | None:
        """Number of features of a LIBSVM file (``None`` for MNIST)."""
        return self.shape[1] if self.collection == "libsvm" else None

    @property
    def accepted(self) -> tuple[tuple[int, str], ...]:
        """All accepted ``(n_bytes, sha256)`` pairs, the registered one first."""
        return ((self.n_bytes, self.sha256), *self.variants)

    def accepts(self, n_bytes: int, sha256: str) -> bool:
        """Whether a file of this size and digest is a valid copy."""
        return (n_bytes, sha256.lower()) in self.accepted


def _libsvm(name: str, n_bytes: int, sha256: str, rows: int, features: int, nnz: int, *,
            labels: tuple[tuple[float, float], ...] = _PLUS_MINUS, shipped: bool = False,
            variants: tuple[tuple[int, str], ...] = ()) -> DataFile:
    return DataFile(name=name, collection="libsvm", n_bytes=n_bytes, sha256=sha256,
                    shape=(rows, features), url=LIBSVM_BASE_URL + name, shipped=shipped,
                    labels=labels, nnz=nnz, variants=variants)


def _mnist(name: str, n_bytes: int, sha256: str, md5: str, shape: tuple[int, ...]) -> DataFile:
    return DataFile(name=name, collection="mnist", n_bytes=n_bytes, sha256=sha256, shape=shape,
                    url=MNIST_BASE_URL + name, mirrors=tuple(m + name for m in MNIST_MIRROR_URLS),
                    md5=md5)


_FILES = (
    # Larger LIBSVM files: data home or download only.
    _libsvm("a9a", 2362434, "35b6bafa772838b1eb3000a6550ff48505ad79aaa381cfd28960e68679f4453b",
            32561, 123, 451592,
            variants=((2362435, "0934cce020907e80e8ac2b030d5849793a1d5993ef1765df76a4157c141db13a"),)),
    # The test file never uses feature 123, hence the registered width (matches ``a9a``).
    _libsvm("a9a.t", 1164628, "1f448a153f0320399a7e40836eb207655b0bde0f21fc941cc472193daa9f5de9",
            16281, 123, 225731),
    _libsvm("w8a", 3478239, "b464b4f6ce6a5d9e181ffc793e19a04751036273722312398ef7673705014902",
            49749, 300, 579586),
    # Raw 1 = poisonous (3916), 2 = edible (4208); order-preserving map: poisonous -1, edible +1.
    _libsvm("mushrooms", 879712, "f39a4eb628dc61a7d43760815b061c9e497aa728ce1ad8bde57a09ef6043b538",
            8124, 112, 170604, labels=((1.0, -1.0), (2.0, 1.0))),
    # Raw 0 = phishing (4898), 1 = legitimate (6157).
    _libsvm("phishing", 3620168, "0cf66ef36604c393da9359b2e5d894a2df8aee31fd184633cefa138add2ef08a",
            11055, 68, 331650, labels=((0.0, -1.0), (1.0, 1.0))),
    _libsvm("ionosphere_scale", 102170,
            "f7751584264819b6ea908d513180cec6f9d9fad0d54e7f5693407da1e2eaece1", 351, 34, 10551),
    _libsvm("sonar_scale", 156001, "037cfd45bb601292b0ecfa6d21ac0ebe61564d85cfe6d4dd61f221b9157174c5",
            208, 60, 12479),
    # Small LIBSVM files shipped inside the package.
    _libsvm("australian", 115307, "a3b5960775ac0eff78b579ab43affd73b848bef6f59d1cc972fc60188f0fb6ba",
            690, 14, 9660, shipped=True),
    _libsvm("australian_scale", 71160,
            "86799bcc4dbcd41929a514fa181d1c1a40e01f009dee139d4141a194d7ecd9e3", 690, 14, 8447,
            shipped=True),
    # Raw 2 = benign (444), 4 = malignant (239); feature 1 is the sample ID, as in the official file.
    _libsvm("breast-cancer", 87065, "445505b580a88e9e19b533b4f126d3dda1883bc7551e46907041ca263aa3c5d9",
            683, 10, 6830, labels=((2.0, -1.0), (4.0, 1.0)), shipped=True),
    _libsvm("breast-cancer_scale", 60430,
            "8fe6bce62147e0715a192378d29acf839b4a8a71d75ae4c88245a3526c20a6e4", 683, 10, 6830,
            shipped=True),
    _libsvm("diabetes", 75503, "419ba20be4862fc53a6fe92e55a84a53ae0075df06632c07592a17d619b5cb23",
            768, 8, 6144, shipped=True),
    _libsvm("diabetes_scale", 68645,
            "0c07eb4c49e7a8ffb9c9f25095ac3022df2ca85b0dcb7d294c3ddea69f392cba", 768, 8, 6135,
            shipped=True),
    _libsvm("fourclass", 25006, "7b36a3beaa482bd982b8a601a26b7e74ffc39e00a825b5b501bd17b34a56e48f",
            862, 2, 1724, shipped=True),
    _libsvm("fourclass_scale", 23155,
            "b0d75d26036e2ebb274d8bbc9d49fef85561cbd273771a21b6d27721db634f14", 862, 2, 1717,
            shipped=True),
    _libsvm("german.numer", 285793,
            "49cd2d01c2b2908a84db1f1c94e3ec04f772db3a91560af1225edf739f003194", 1000, 24, 24000,
            shipped=True),
    _libsvm("german.numer_scale", 165392,
            "e461161650598fda2988f2a4c3b592634bbcae1c0eec382c94ceda5f30d4dab4", 1000, 24, 23001,
            shipped=True,
            variants=((165393, "97637cc6b994bd3fa78999c771bc044bea7a0cdf91d43b6ecfd10f7e7c4ebc82"),)),
    _libsvm("heart_scale", 27670, "5defa0a4c4c5bdaf3f55ae3828310252e8565c13ee37ce279e0b86d82e7f4ce9",
            270, 13, 3378, shipped=True),
    _libsvm("splice", 715000, "eee33566cfe8988ec26122460cc712d66c5c5b79b966b259408e803addaa584d",
            1000, 60, 60000, shipped=True),
    _libsvm("splice_scale", 541716,
            "acf38472f2077e7d40f1a551f0e920298aedbcb73c50ae481ec64976b5e54940", 1000, 60, 60000,
            shipped=True),
    _libsvm("svmguide1", 192781, "6af4ac2c8dff259b69186ba7f04f6f11ba883f864a8203eb39dfd8361b92d380",
            3089, 4, 12356, labels=((0.0, -1.0), (1.0, 1.0)), shipped=True,
            variants=((192782, "2b9ab55b6236f62cee6b7739b52f9e7cb033771f39b9c22c1f1790d80ef14d7f"),)),
    # MNIST, original gzipped IDX archives.
    _mnist("train-images-idx3-ubyte.gz", 9912422,
           "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
           "f68b3c2dcbeaaa9fbdd348bbdeb94873", (60000, 28, 28)),
    _mnist("train-labels-idx1-ubyte.gz", 28881,
           "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
           "d53e105ee54ea40749a09fcbcd1e9432", (60000,)),
    _mnist("t10k-images-idx3-ubyte.gz", 1648877,
           "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
           "9fb629c4189551a2d022fa330f9573f3", (10000, 28, 28)),
    _mnist("t10k-labels-idx1-ubyte.gz", 4542,
           "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
           "ec29112dd5afa0611ce80d1b7f02629c", (10000,)),
)

#: Read-only mapping ``name -> DataFile`` of every registered file.
registry: Mapping[str, DataFile] = types.MappingProxyType({f.name: f for f in _FILES})


def lookup(name: str) -> DataFile:
    """Return the registry entry for ``name`` (``"a9a"`` or ``"libsvm/a9a"``).

    Raises
    ------
    ValueError
        If the name is not registered; the message suggests close matches.
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str naming a registered data file, got {type(name).__name__}.")
    key = name.split("/", 1)[1] if "/" in name else name
    entry = registry.get(key)
    if entry is None or ("/" in name and name != entry.relpath):
        close = difflib.get_close_matches(key, list(registry), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown data file {name!r}.{hint} "
                         "See optkit.data.list_datasets() for the registered names.")
    return entry


def list_datasets(collection: str | None = None, *, shipped: bool | None = None) -> list[str]:
    """List registered data files.

    Parameters
    ----------
    collection : {"libsvm", "mnist"}, optional
        Only files of this collection.
    shipped : bool, optional
        ``True``: only files shipped inside the package; ``False``: only the others.

    Returns
    -------
    list of str
        Sorted registered names, usable with :func:`fetch` and :func:`load_libsvm`.

    Examples
    --------
    >>> from optkit.data import list_datasets
    >>> list_datasets("libsvm", shipped=True)[:3]
    ['australian', 'australian_scale', 'breast-cancer']
    >>> "t10k-images-idx3-ubyte.gz" in list_datasets("mnist")
    True
    """
    collections = {f.collection for f in _FILES}
    if collection is not None and collection not in collections:
        raise ValueError(f"`collection` must be one of {sorted(collections)} or None, got {collection!r}.")
    return sorted(f.name for f in _FILES
                  if (collection is None or f.collection == collection)
                  and (shipped is None or f.shipped == shipped))
