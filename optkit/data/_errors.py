"""Exceptions raised by the dataset layer."""

from __future__ import annotations

__all__ = ["ChecksumError", "DataNotFoundError"]


class DataNotFoundError(FileNotFoundError):
    """A registered data file is neither in the data home nor shipped, and could not be downloaded.

    The message names the file, the exact path to place it at, its expected size and sha256, and the
    URL(s) it can be obtained from. The same facts are available as attributes.

    Attributes
    ----------
    name : str
        Registered name of the file (e.g. ``"a9a"``).
    path : pathlib.Path
        Where the file is looked for in the data home.
    sha256 : str
        Expected sha256 of the file.
    urls : tuple of str
        Canonical download URL first, then mirrors.
    """

    def __init__(self, message: str, *, name: str, path: object, sha256: str, urls: tuple[str, ...]):
        super().__init__(message)
        self.name = name
        self.path = path
        self.sha256 = sha256
        self.urls = urls

    def __str__(self) -> str:
        return str(self.args[0])


class ChecksumError(ValueError):
    """A data file exists but its size or sha256 differs from the registry.

    Attributes
    ----------
    path : pathlib.Path or None
        The offending file (``None`` for a rejected download that was never saved).
    expected : str
        Expected sha256.
    actual : str or None
        sha256 found (``None`` when the size check already failed).
    """

    def __init__(self, message: str, *, path: object, expected: str, actual: str | None):
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual
