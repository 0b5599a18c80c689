"""Atomic file output: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; rename it onto ``target`` only if the block succeeds.

    Nothing is left behind on failure, and a reader never sees a half-written file. The file
    gets the permissions of a newly created file (``0o666`` less the umask), not the
    owner-only ones of :func:`tempfile.mkstemp`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def staging_directory(target: str | os.PathLike) -> Path:
    """A new empty directory beside ``target``, to be filled and renamed onto it.

    It gets the permissions of a newly created directory (``0o777`` less the umask), not
    the owner-only ones of :func:`tempfile.mkdtemp`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o777 & ~_umask())
    return staging


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_table_atomic(target: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table as CSV (or Parquet when ``target`` ends in ``.parquet``), atomically.

    The index is not written: canonical tables carry source row numbers there, which are
    meaningless in the new file.
    """
    writer: Callable[[Path], None]
    if str(target).endswith(".parquet"):
        def writer(p: Path) -> None:
            table.to_parquet(p, index=False)
    else:
        def writer(p: Path) -> None:
            table.to_csv(p, index=False, float_format="%.10g")
    with atomic_path(target) as tmp:
        writer(tmp)
