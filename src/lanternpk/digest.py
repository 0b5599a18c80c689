"""SHA-256 digests of input files, taken from the bytes a result was computed from.

A run's provenance and an SBC campaign's key name their inputs by digest. Hashing a file
again after a 20-second fit would record the bytes it holds then, not the ones the fit read
(an export still being written, a spec edited meanwhile); :func:`load_unchanged` hashes
each file before and after it is read and refuses one that changed in between.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from lanternpk.errors import UsageError

T = TypeVar("T")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 (64 characters) of a file's bytes, read in blocks."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _sha256_or_none(path: str | os.PathLike) -> str | None:
    try:
        return file_sha256(path)
    except OSError:  # missing or unreadable: the loader names it
        return None


def load_unchanged(load: Callable[[], T], paths: Sequence[str | os.PathLike | None]
                   ) -> tuple[T, list[str | None]]:
    """Run ``load()`` and give the digests of the files in ``paths`` as it read them.

    Parameters
    ----------
    load : callable
        Reads the files (and raises its own errors for a missing or invalid one).
    paths : sequence of path-like or None
        The files ``load`` reads; ``None`` (an optional input not given) gives ``None``.

    Returns
    -------
    result, digests
        What ``load`` returned, and one hex SHA-256 per path.

    Raises
    ------
    UsageError
        A file's bytes differ before and after ``load`` ran: it was written to while being
        read, so no digest names what was read. Said in place of ``load``'s own error, if
        any (a half-written table fails to parse, and the parse error would mislead).
    """
    before = [None if path is None else _sha256_or_none(path) for path in paths]
    try:
        result = load()
    finally:
        digests = [None if path is None else _sha256_or_none(path) for path in paths]
        for path, earlier, now in zip(paths, before, digests, strict=True):
            if now != earlier:
                raise UsageError(f"{os.fspath(path)}: the file changed while it was being "
                                 "read; run the command again once it is written")
    return result, digests
