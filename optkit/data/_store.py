"""Locating, verifying and downloading registered data files.

Lookup order for a file: the data home, then the copy shipped inside the package, then a download
from the registered URLs (canonical first, then mirrors) when downloads are allowed. Every file is
checked against the registry's size and sha256 once per process (per path, size and mtime).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.client
import importlib.resources
import logging
import os
import tempfile
import threading
import urllib.request
from pathlib import Path

from ._errors import ChecksumError, DataNotFoundError
from ._registry import DataFile, lookup

__all__ = ["DOWNLOAD_TIMEOUT", "data_home", "fetch"]

logger = logging.getLogger("optkit.data")

#: Seconds urllib waits on a socket operation before a download attempt is abandoned.
DOWNLOAD_TIMEOUT = 10.0
_CHUNK = 1 << 20
_PACKAGE = "optkit.data"

_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()
_extracted: contextlib.ExitStack | None = None


def data_home() -> Path:
    """Return the optkit data home.

    The data home is ``$OPTKIT_DATA`` when that variable is set and non-empty, else
    ``~/.optkit/data``. Files live at ``<home>/libsvm/<name>`` and ``<home>/mnist/<name>``.
    Nothing is created here; a download creates the directories it writes to.

    Returns
    -------
    pathlib.Path
        The data home (``~`` expanded, not necessarily existing).

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> from optkit.data import data_home
    >>> with mock.patch.dict(os.environ, {"OPTKIT_DATA": "/srv/optkit-data"}):
    ...     print(data_home())
    /srv/optkit-data
    >>> with mock.patch.dict(os.environ, {"OPTKIT_DATA": ""}):
    ...     print(data_home().parts[-2:])
    ('.optkit', 'data')
    """
    env = os.environ.get("OPTKIT_DATA")
    return Path(env).expanduser() if env else Path.home() / ".optkit" / "data"


def _downloads_disabled() -> bool:
    return os.environ.get("OPTKIT_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, entry: DataFile) -> None:
    """Raise :class:`ChecksumError` unless ``path`` is a valid copy of ``entry``; cached per process."""
    stat = path.stat()
    key = (os.fspath(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _verified_lock:
        if key in _verified:
            return
    fix = (f"Delete it and place a fresh copy from {entry.url} at that path "
           "(or delete it and let optkit download it).")
    if stat.st_size not in {n for n, _ in entry.accepted}:
        raise ChecksumError(
            f"Data file {path} has {stat.st_size} bytes, but the registry expects {entry.n_bytes} bytes "
            f"(sha256 {entry.sha256}) for {entry.relpath!r}: it is truncated, corrupt or another "
            f"version. {fix}", path=path, expected=entry.sha256, actual=None)
    actual = _sha256_file(path)
    if not entry.accepts(stat.st_size, actual):
        raise ChecksumError(
            f"Data file {path} has sha256 {actual}, but the registry expects {entry.sha256} for "
            f"{entry.relpath!r}: it is corrupt or another version. {fix}",
            path=path, expected=entry.sha256, actual=actual)
    logger.debug("verified %s (sha256 %s)", path, actual)
    with _verified_lock:
        _verified.add(key)


def _shipped_path(entry: DataFile) -> Path | None:
    """Filesystem path of the packaged copy of ``entry``, or ``None`` if it is not shipped."""
    global _extracted
    if not entry.shipped:
        return None
    resource = importlib.resources.files(_PACKAGE).joinpath("files", entry.collection, entry.name)
    if not resource.is_file():
        logger.warning("%s is registered as shipped but missing from the installed package",
                       entry.relpath)
        return None
    if isinstance(resource, Path):
        return resource
    # Zipped installs: extract once and keep the copy until the interpreter exits.
    with _verified_lock:
        if _extracted is None:
            _extracted = contextlib.ExitStack()
            atexit.register(_extracted.close)
        return _extracted.enter_context(importlib.resources.as_file(resource))


def _download(entry: DataFile, url: str, destination: Path) -> Path:
    """Stream ``url`` to a temporary file next to ``destination``, verify it, then rename it."""
    logger.info("downloading %s from %s", entry.relpath, url)
    max_bytes = max(n for n, _ in entry.accepted)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{entry.name}.",
                                             suffix=".part")
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(handle, "wb") as out:
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        break
                    digest.update(chunk)
                    out.write(chunk)
            if not entry.accepts(size, digest.hexdigest()):
                got = f"more than {max_bytes} bytes" if size > max_bytes else \
                    f"{size} bytes with sha256 {digest.hexdigest()}"
                raise ChecksumError(f"{url} served {got}; expected {entry.n_bytes} bytes with sha256 "
                                    f"{entry.sha256}. The download was discarded.",
                                    path=None, expected=entry.sha256, actual=None)
            os.replace(temporary, destination)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
    _verify(destination, entry)
    logger.info("saved %s (%d bytes)", destination, size)
    return destination


def fetch(name: str, *, download: bool = True) -> Path:
    """Return the local path of a registered data file, downloading it if needed.

    The file is looked for in the data home (``<home>/<collection>/<name>``), then among the files
    shipped inside the package, then downloaded from its registered URLs (canonical first, then
    mirrors) into the data home, verified by size and sha256 before it is renamed into place.
    Downloads are skipped when ``download=False`` or the environment variable ``OPTKIT_OFFLINE`` is
    ``1``/``true``/``yes``/``on``. A found file is checked against the registry once per process.

    Parameters
    ----------
    name : str
        Registered name, e.g. ``"a9a"``, ``"a9a.t"``, ``"t10k-images-idx3-ubyte.gz"``; the
        ``"<collection>/<name>"`` form (``"libsvm/a9a"``) is accepted too.
    download : bool, default True
        Allow a download when the file is neither in the data home nor shipped.

    Returns
    -------
    pathlib.Path
        Path of a verified copy of the file.

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    ChecksumError
        If the copy found has the wrong size or sha256 (the shipped copy is not used as a fallback:
        a corrupt file in the data home is an error to fix, not to hide).
    DataNotFoundError
        If the file is absent and could not be downloaded. The message says where to put it, its
        sha256 and where to get it.

    Examples
    --------
    >>> from optkit.data import fetch
    >>> path = fetch("heart_scale")  # shipped with optkit
    >>> path.name, path.stat().st_size
    ('heart_scale', 27670)
    """
    entry = lookup(name)
    target = data_home() / entry.collection / entry.name
    if target.is_file():
        _verify(target, entry)
        return target
    shipped = _shipped_path(entry)
    if shipped is not None:
        _verify(shipped, entry)
        return shipped

    failures: list[str] = []
    if not download:
        failures.append("downloads disabled (download=False)")
    elif _downloads_disabled():
        failures.append("downloads disabled (OPTKIT_OFFLINE is set)")
    else:
        for url in entry.urls:
            try:
                return _download(entry, url, target)
            except (OSError, http.client.HTTPException, ChecksumError) as exc:
                logger.info("download of %s from %s failed: %s", entry.relpath, url, exc)
                failures.append(f"{url}: {exc}")
    urls = "\n".join(f"    {url}" for url in entry.urls)
    attempts = "\n".join(f"    {line}" for line in failures)
    raise DataNotFoundError(
        f"Data file {entry.relpath!r} is not available: it is not in the data home and could not be "
        f"downloaded.\n"
        f"  Place it at: {target}\n"
        f"  Expected: {entry.n_bytes} bytes, sha256 {entry.sha256}\n"
        f"  Get it from:\n{urls}\n"
        f"  Attempts:\n{attempts}\n"
        f"  The data home is $OPTKIT_DATA when set, else ~/.optkit/data.",
        name=entry.name, path=target, sha256=entry.sha256, urls=entry.urls)
