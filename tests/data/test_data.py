"""Tests of optkit.data against the real files.

Reference values (sizes, sha256, rows x features, non-zeros, class counts) come from the
``SOURCES.md`` files of the shared data directory and from the published MNIST / UCI class counts,
not from optkit's registry. Tests needing a file that only the shared data directory holds find that
directory through ``$OPTKIT_DATA`` (read once, at import) and skip when it lacks the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from optkit import data
from optkit.data import _store

SHARED = data.data_home()

SHIPPED = {
    "diabetes", "diabetes_scale", "fourclass", "fourclass_scale", "breast-cancer",
    "breast-cancer_scale", "heart_scale", "australian", "australian_scale", "german.numer",
    "german.numer_scale", "splice", "splice_scale", "svmguide1",
}
PACKAGE_FILES = Path(data.__file__).parent / "files"

# Official MNIST class counts (also listed in mnist/SOURCES.md).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

# name: (rows, features, nnz, count of -1, count of +1). Rows, features and nnz from libsvm/SOURCES.md;
# class counts from SOURCES.md (ionosphere, sonar, mushrooms, phishing) or the UCI descriptions
# (adult: 24720/7841 and 12435/3846; Wisconsin breast cancer: 444 benign / 239 malignant;
# Pima diabetes: 500 negative / 268 positive; Statlog German 700/300; Statlog heart 150/120).
LIBSVM_CASES = {
    "a9a": (32561, 123, 451592, 24720, 7841),
    "a9a.t": (16281, 123, 225731, 12435, 3846),
    "w8a": (49749, 300, 579586, None, None),
    "ionosphere_scale": (351, 34, 10551, 126, 225),
    "sonar_scale": (208, 60, 12479, 111, 97),
    "mushrooms": (8124, 112, 170604, 3916, 4208),
    "phishing": (11055, 68, 331650, 4898, 6157),
    "breast-cancer": (683, 10, 6830, 444, 239),
    "diabetes_scale": (768, 8, 6135, 268, 500),
    "german.numer": (1000, 24, 24000, 700, 300),
    "heart_scale": (270, 13, 3378, 150, 120),
    "svmguide1": (3089, 4, 12356, None, None),
}


def shared_file(relpath: str) -> Path:
    """Path of a file in the shared data directory, skipping the test when it is absent."""
    path = SHARED / relpath
    if not path.is_file():
        pytest.skip(f"{relpath} is not in the data directory {SHARED} (set OPTKIT_DATA to the shared data)")
    return path


def sources_rows(collection: str) -> dict[str, list[str]]:
    """Rows of the file table of ``<collection>/SOURCES.md``, keyed by file name."""
    sources = shared_file(f"{collection}/SOURCES.md")
    rows = {}
    for line in sources.read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if match and re.search(r"\b[0-9a-f]{64}\b", line):
            rows[match.group(1)] = [cell.replace("`", "").strip() for cell in line.strip("|").split("|")]
    return rows


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail every download attempt fast; the list records the URLs tried."""
    attempts: list[str] = []

    def refuse(url, *args, **kwargs):
        attempts.append(url if isinstance(url, str) else url.full_url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.delenv("OPTKIT_OFFLINE", raising=False)
    return attempts


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("OPTKIT_DATA", str(home))
    return home


def serve(monkeypatch, payload: bytes) -> list[str]:
    """Make urlopen serve ``payload`` for any URL; returns the URLs requested."""
    requested: list[str] = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


# ---------------------------------------------------------------- registry


def test_registry_matches_libsvm_sources():
    rows = sources_rows("libsvm")
    assert len(rows) == 21
    for name, (_, n_bytes, sha256, n_rows, n_features, nnz, *_) in rows.items():
        entry = data.registry[name]
        assert entry.collection == "libsvm"
        assert (entry.n_bytes, entry.sha256) == (int(n_bytes), sha256), name
        assert entry.shape == (int(n_rows), int(n_features)), name
        assert entry.nnz == int(nnz), name
    assert set(data.list_datasets("libsvm")) == set(rows)


def test_registry_matches_mnist_sources():
    rows = sources_rows("mnist")
    for name, (_, n_bytes, md5, sha256, *_) in rows.items():
        entry = data.registry[name]
        assert (entry.n_bytes, entry.sha256, entry.md5) == (int(n_bytes), sha256, md5.split()[0]), name
    missing = data.registry["train-images-idx3-ubyte.gz"]
    assert (missing.n_bytes, missing.md5) == (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873")
    assert set(data.list_datasets("mnist")) == set(rows) | {missing.name}


def test_registry_contract():
    assert data.DATASETS is data.registry
    assert set(data.list_datasets(shipped=True)) == SHIPPED
    for name, entry in data.registry.items():
        assert entry.name == name and re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        if entry.collection == "libsvm":
            assert entry.url == f"https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/{name}"
            assert set(entry.label_map.values()) == {-1.0, 1.0}
            raw = sorted(entry.label_map)
            assert [entry.label_map[r] for r in raw] == [-1.0, 1.0]  # order-preserving
        else:
            assert entry.url == f"http://yann.lecun.com/exdb/mnist/{name}"
            assert entry.collection == "mnist" and entry.md5 and entry.mirrors
    with pytest.raises(ValueError, match="Did you mean 'a9a'"):
        data.fetch("a9b")
    with pytest.raises(ValueError, match="collection"):
        data.list_datasets("cifar")


def test_shipped_files_are_byte_identical():
    for name in SHIPPED:
        entry = data.registry[name]
        packaged = PACKAGE_FILES / "libsvm" / name
        assert packaged.stat().st_size == entry.n_bytes
        assert hashlib.sha256(packaged.read_bytes()).hexdigest() == entry.sha256
    assert sorted(p.name for p in (PACKAGE_FILES / "libsvm").iterdir()) == sorted(SHIPPED)


# ---------------------------------------------------------------- real files


def test_sha256_of_shared_files():
    rows = {**sources_rows("libsvm"), **sources_rows("mnist")}
    for name, cells in rows.items():
        expected = next(c for c in cells if re.fullmatch(r"[0-9a-f]{64}", c))
        path = data.fetch(name)
        assert path == SHARED / data.registry[name].relpath
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected


@pytest.mark.parametrize("name", sorted(LIBSVM_CASES))
def test_libsvm_shapes_and_labels(name):
    n_rows, n_features, nnz, n_minus, n_plus = LIBSVM_CASES[name]
    if not data.registry[name].shipped:
        shared_file(f"libsvm/{name}")
    X, y = data.load_libsvm(name)
    assert isinstance(X, scipy.sparse.csr_matrix) and X.dtype == np.float64
    assert X.shape == (n_rows, n_features) and X.nnz == nnz
    assert y.dtype == np.float64 and y.shape == (n_rows,)
    assert set(np.unique(y).tolist()) == {-1.0, 1.0}
    if n_minus is not None:
        assert (int((y == -1).sum()), int((y == 1).sum())) == (n_minus, n_plus)


def test_a9a_test_split_has_123_features():
    shared_file("libsvm/a9a.t")
    X, y = data.load_libsvm("a9a", split="test")
    assert X.shape == (16281, 123)
    X2, y2 = data.load_libsvm("a9a.t")
    assert (X != X2).nnz == 0 and np.array_equal(y, y2)
    assert data.load_libsvm("a9a.t", n_features=130)[0].shape == (16281, 130)
    with pytest.raises(ValueError, match="at least 123"):
        data.load_libsvm("a9a.t", n_features=122)


def test_libsvm_argument_errors():
    with pytest.raises(ValueError, match="no registered test split"):
        data.load_libsvm("heart_scale", split="test")
    with pytest.raises(ValueError, match="split"):
        data.load_libsvm("heart_scale", split="validation")
    with pytest.raises(ValueError, match="test file"):
        data.load_libsvm("a9a.t", split="train")
    with pytest.raises(ValueError, match="not a LIBSVM"):
        data.load_libsvm("t10k-labels-idx1-ubyte.gz")


def test_dense_matches_sparse():
    X, y = data.load_libsvm("fourclass_scale")
    D, y_dense = data.load_libsvm("fourclass_scale", dense=True)
    assert isinstance(D, np.ndarray) and D.dtype == np.float64 and D.flags.c_contiguous
    np.testing.assert_array_equal(D, X.toarray())
    np.testing.assert_array_equal(y, y_dense)


def test_mnist_test_split():
    shared_file("mnist/t10k-images-idx3-ubyte.gz")
    shared_file("mnist/t10k-labels-idx1-ubyte.gz")
    images, labels = data.load_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert images.mean() == pytest.approx(33.79, abs=0.005)
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_train_labels():
    path = shared_file("mnist/train-labels-idx1-ubyte.gz")
    assert data.fetch("train-labels-idx1-ubyte.gz") == path
    labels = data.read_idx(path, magic=2049)
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        data.read_idx(path, magic=2051)


def test_mnist_train_images_missing_offline(no_network):
    shared_file("mnist/train-labels-idx1-ubyte.gz")
    expected_path = SHARED / "mnist" / "train-images-idx3-ubyte.gz"
    if expected_path.exists():
        pytest.skip(f"{expected_path} exists, so nothing is missing")
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_mnist("train")
    message = str(info.value)
    entry = data.registry["train-images-idx3-ubyte.gz"]
    assert str(expected_path) in message
    assert entry.sha256 in message and entry.url in message
    assert isinstance(info.value, FileNotFoundError) and info.value.path == expected_path
    assert no_network == list(entry.urls)  # canonical URL, then every mirror
    assert not list(SHARED.glob("mnist/.*.part"))


# ---------------------------------------------------------------- data home mechanics


def test_shipped_files_load_from_empty_home(empty_home, no_network):
    for name in sorted(SHIPPED):
        entry = data.registry[name]
        path = data.fetch(name)
        assert path == PACKAGE_FILES / "libsvm" / name
        X, y = data.load_libsvm(name)
        assert X.shape == entry.shape and X.nnz == entry.nnz
        assert set(np.unique(y).tolist()) == {-1.0, 1.0}
    assert no_network == [] and not any(empty_home.iterdir())


def test_absent_file_in_empty_home(empty_home, monkeypatch, no_network):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_libsvm("w8a")
    assert str(empty_home / "libsvm" / "w8a") in str(info.value)
    assert no_network == [data.registry["w8a"].url]
    monkeypatch.setenv("OPTKIT_OFFLINE", "1")
    with pytest.raises(data.DataNotFoundError, match="OPTKIT_OFFLINE"):
        data.fetch("w8a")
    with pytest.raises(data.DataNotFoundError, match="download=False"):
        data.fetch("a9a", download=False)
    assert len(no_network) == 1


def test_home_copy_takes_precedence(empty_home):
    source = PACKAGE_FILES / "libsvm" / "heart_scale"
    (empty_home / "libsvm").mkdir()
    copy = shutil.copy(source, empty_home / "libsvm" / "heart_scale")
    assert data.fetch("libsvm/heart_scale") == Path(copy)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_copy_raises_checksum_error(empty_home, damage):
    payload = bytearray((PACKAGE_FILES / "libsvm" / "heart_scale").read_bytes())
    if damage == "flip":
        payload[100] ^= 0x01
    else:
        del payload[-10:]
    target = empty_home / "libsvm" / "heart_scale"
    target.parent.mkdir()
    target.write_bytes(payload)
    with pytest.raises(data.ChecksumError) as info:
        data.load_libsvm("heart_scale")
    assert isinstance(info.value, ValueError) and str(target) in str(info.value)
    assert data.registry["heart_scale"].sha256 in str(info.value)


def test_checksum_verified_once_per_path(empty_home, monkeypatch):
    target = empty_home / "libsvm" / "diabetes"
    target.parent.mkdir()
    shutil.copy(PACKAGE_FILES / "libsvm" / "diabetes", target)
    calls: list[Path] = []
    real = _store._sha256_file
    monkeypatch.setattr(_store, "_sha256_file", lambda path: calls.append(path) or real(path))
    for _ in range(3):
        data.load_libsvm("diabetes")
    assert calls == [target]
    stat = target.stat()
    target.write_bytes(target.read_bytes()[:-1] + b"X")  # same size, new content and mtime
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(data.ChecksumError):
        data.fetch("diabetes")


def test_accepted_variant_with_final_newline(empty_home):
    target = empty_home / "libsvm" / "svmguide1"
    target.parent.mkdir()
    target.write_bytes((PACKAGE_FILES / "libsvm" / "svmguide1").read_bytes() + b"\n")
    X, _ = data.load_libsvm("svmguide1")
    assert data.fetch("svmguide1") == target and X.shape == (3089, 4)


def test_download_writes_verified_file(empty_home, monkeypatch):
    payload = shared_file("libsvm/ionosphere_scale").read_bytes()
    requested = serve(monkeypatch, payload)
    path = data.fetch("ionosphere_scale")
    assert path == empty_home / "libsvm" / "ionosphere_scale"
    assert path.read_bytes() == payload
    assert requested == [data.registry["ionosphere_scale"].url]
    assert sorted(p.name for p in path.parent.iterdir()) == ["ionosphere_scale"]
    assert data.load_libsvm("ionosphere_scale")[0].shape == (351, 34)
    assert len(requested) == 1


def test_download_with_wrong_bytes_is_discarded(empty_home, monkeypatch):
    requested = serve(monkeypatch, b"+1 1:0.5\n")
    with pytest.raises(data.DataNotFoundError, match="sha256") as info:
        data.fetch("t10k-labels-idx1-ubyte.gz")
    assert requested == list(data.registry["t10k-labels-idx1-ubyte.gz"].urls)
    assert "The download was discarded" in str(info.value)
    assert list((empty_home / "mnist").iterdir()) == []


def test_read_idx_formats(tmp_path):
    values = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    raw = bytes([0, 0, 0x0C, 2]) + (3).to_bytes(4, "big") + (4).to_bytes(4, "big") + values.tobytes()
    (tmp_path / "plain").write_bytes(raw)
    (tmp_path / "packed.gz").write_bytes(gzip.compress(raw))
    for name in ("plain", "packed.gz"):
        out = data.read_idx(tmp_path / name)
        np.testing.assert_array_equal(out, values)
        assert out.dtype == np.dtype("int32") and out.flags.writeable
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "text").write_bytes(b"+1 1:0.5\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "text")
    with pytest.raises(ValueError, match="split"):
        data.load_mnist("validation")
