"""Atomic file output: write to a temporary file beside the target, then rename.

Output directories (a run) are built in a staging directory and renamed into place; an
existing one is replaced only when that destroys nothing but an earlier output of the same
kind (:func:`check_replaceable_directory`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from lanternpk import interrupt
from lanternpk.argtypes import not_a_directory
from lanternpk.errors import UsageError


@contextmanager
def atomic_path(target: str | os.PathLike, *, through_symlink: bool = False
                ) -> Iterator[Path]:
    """Yield a temporary path; rename it onto ``target`` only if the block succeeds.

    Nothing is left behind on failure, and a reader never sees a half-written file. The file
    gets the permissions of a newly created file (``0o666`` less the umask), not the
    owner-only ones of :func:`tempfile.mkstemp`.

    A ``target`` that is a symbolic link is replaced by the new file, unless
    ``through_symlink``: then the file is written where the link points, as
    ``open(target, "w")`` would. Only a file the user names as output (``--out``) is written
    through a link; inside a directory lanternpk writes (a run, a report), a link is
    replaced, so that it cannot redirect the output onto a file elsewhere.
    """
    target = Path(target)
    destination = (Path(os.path.realpath(target)) if through_symlink and target.is_symlink()
                   else target)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp",
                                   dir=destination.parent)
    except OSError as err:  # name the user's path, not the temporary file's
        raise UsageError(f"cannot write {target}: {_reason(target, err)}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        interrupt.check()  # a Ctrl-C that was lost on the way stops here
        os.replace(tmp_path, destination)
    except OSError as err:
        if err.filename not in (None, tmp):  # another file's problem: its own message
            raise
        # a full disk or quota while writing: name the user's path, not the temporary one
        raise UsageError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        tmp_path.unlink(missing_ok=True)


def _reason(target: Path, err: OSError) -> str:
    """Why ``target`` could not be created: a file above it by name, else the OS's words."""
    return not_a_directory(target.parent) or err.strerror or str(err)


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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as err:  # name the user's path, not the staging directory's
        raise UsageError(f"cannot write {target}: {_reason(target, err)}") from None
    staging.chmod(0o777 & ~_umask())
    return staging


@contextmanager
def replacing_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a new directory beside ``target`` (:func:`staging_directory`) to fill; when the
    block succeeds it replaces ``target`` whole (:func:`replace_directory`), and on failure
    ``target`` is left as it was. The staging directory is removed either way."""
    target = Path(target)
    staging = staging_directory(target)
    try:
        yield staging
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(record: object) -> str:
    """``record`` as indented JSON text (with a final newline) that any parser accepts.

    JSON has no NaN or Infinity: a number that is not finite (a Pareto k of a draw that
    dominates, a log-likelihood of -inf) is written as ``null``, as in the summary contract.
    NumPy scalars and arrays are written as numbers and lists.
    """
    return json.dumps(_finite_or_null(record), indent=1, allow_nan=False) + "\n"


def _finite_or_null(value: object) -> object:
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_finite_or_null(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: File suffixes (matched ignoring case) of Parquet tables, read and written as Parquet;
#: any other table file is CSV.
PARQUET_SUFFIXES = (".parquet", ".pq")


def write_table_atomic(target: str | os.PathLike, table: pd.DataFrame, *,
                       through_symlink: bool = False) -> None:
    """Write a table as CSV (Parquet for a :data:`PARQUET_SUFFIXES` name), atomically.

    The index is not written: canonical tables carry source row numbers there, which are
    meaningless in the new file. ``through_symlink``: as in :func:`atomic_path`.
    """
    writer: Callable[[Path], None]
    if Path(target).suffix.lower() in PARQUET_SUFFIXES:
        def writer(p: Path) -> None:
            table.to_parquet(p, index=False)
    else:
        def writer(p: Path) -> None:
            table.to_csv(p, index=False, float_format="%.10g")
    with atomic_path(target, through_symlink=through_symlink) as tmp:
        writer(tmp)


def check_replaceable_directory(target: str | os.PathLike, *, marker: str, overwrite: bool,
                                inputs: Sequence[str | os.PathLike | None] = (),
                                owned: frozenset[str] | None = None) -> None:
    """Refuse an output directory whose writing would destroy anything of the user's.

    ``target`` may be absent (it is created; the nearest existing ancestor must be a
    writable directory), an empty directory, or a directory holding ``marker`` (an earlier
    output of the same kind, replaced as a whole) when ``overwrite`` is true and, when
    ``owned`` is given, nothing but the entries lanternpk writes there and what a killed
    write of one of them left (:func:`is_interrupted_write`).

    Raises
    ------
    UsageError
        ``target`` is a file or a symbolic link; a non-empty directory without ``marker``;
        an earlier output and ``overwrite`` is false; one that cannot be moved aside (not
        writable); holds entries not in ``owned`` (named); the current
        directory or one of its ancestors; holds one of ``inputs``; or its parent cannot be
        written.
    """
    target = Path(target)
    resolved = target.resolve()
    if target.is_symlink():  # replacing it would replace the link, not the run it names
        raise UsageError(f"refusing to write {target}: it is a symbolic link; give the "
                         f"directory itself ({resolved})")
    if target.exists() and not target.is_dir():
        raise UsageError(f"refusing to write {target}: it is a file, not a directory")
    if target.is_dir():
        entries = sorted(p.name for p in target.iterdir())
        if entries and not (target / marker).is_file():
            raise UsageError(f"refusing to replace {target}: it is not empty and not an "
                             f"earlier lanternpk output (holds {', '.join(entries[:3])}"
                             f"{', …' if len(entries) > 3 else ''}); choose another --out")
        if entries and not overwrite:
            raise UsageError(f"{target} already holds a run; pass --overwrite to replace it")
        if Path.cwd().resolve().is_relative_to(resolved):
            raise UsageError(f"refusing to replace {target}: it is the current directory or "
                             "contains it")
        for path in inputs:
            if path is not None and Path(path).resolve().is_relative_to(resolved):
                raise UsageError(f"refusing to replace {target}: it holds the input {path}")
        if entries and not os.access(target, os.W_OK | os.X_OK):  # moved aside to replace
            raise UsageError(f"cannot replace {target}: it is not a writable directory")
        foreign = [name for name in entries if owned is not None and name not in owned
                   and not is_interrupted_write(target / name, owned)]
        if foreign:
            raise UsageError(f"refusing to replace {target}: besides an earlier lanternpk output "
                             f"it holds {', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}"
                             ", which replacing it would delete; move them or choose another "
                             "--out")
    check_writable(target.parent, what=f"write {target}")  # a file above it, named as given
    check_writable(resolved.parent, what=f"write {target}")  # where it is renamed into place


def is_interrupted_write(entry: Path, owned: Iterable[str]) -> bool:
    """Whether ``entry`` is what a killed lanternpk write of one of ``owned`` left behind.

    A process killed outright (SIGKILL, power loss) cannot clean up: :func:`atomic_path`
    leaves its temporary file ``.F.XXXXXXXX.tmp``, :func:`staging_directory` its directory
    ``.D.XXXXXXXX`` and :func:`replace_directory` the earlier output moved aside,
    ``.D.old.XXXXXXXX`` (``XXXXXXXX``: the eight characters :mod:`tempfile` draws).
    """
    if entry.is_symlink():
        return False
    shape = r"\.(?:old\.)?[a-z0-9_]{8}" if entry.is_dir() else r"\.[a-z0-9_]{8}\.tmp"
    return any(re.fullmatch(rf"\.{re.escape(name)}{shape}", entry.name) for name in owned)


def check_writable(directory: str | os.PathLike, *, what: str) -> None:
    """Refuse unless ``directory``, or the nearest existing one above it, can be written.

    Raises
    ------
    UsageError
        ``cannot {what}: F is a file, not a directory`` when ``directory``, or the nearest
        existing path above it, is the file ``F`` (named as given, not resolved);
        ``cannot {what}: … is not a writable directory`` when it may not be written.
    """
    reason = not_a_directory(directory)
    if reason is not None:
        raise UsageError(f"cannot {what}: {reason}")
    resolved = Path(directory).resolve()
    existing = next(p for p in (resolved, *resolved.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot {what}: {existing} is not a writable directory")


def replace_directory(staging: Path, target: Path) -> None:
    """Move the complete ``staging`` directory onto ``target``, replacing an earlier one.

    The earlier ``target`` is first renamed aside, so ``target`` is at every moment either
    the old directory or the new one, and is deleted only after the new one is in place.
    A Ctrl-C or SIGTERM between the two renames is held back until both are done
    (:func:`lanternpk.interrupt.deferred`); it then stops the command with the new directory
    in place (and may leave the old one in its hidden ``.NAME.old.XXXXXXXX``).
    """
    interrupt.check()  # a Ctrl-C that was lost on the way stops here, before any rename
    if not target.exists():
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    with interrupt.deferred():
        try:
            os.replace(target, aside / target.name)
        except OSError:
            aside.rmdir()  # nothing moved: the earlier output is where it was
            raise
        try:
            os.replace(staging, target)
        except OSError:
            os.replace(aside / target.name, target)  # the earlier output back in place
            aside.rmdir()
            raise
    shutil.rmtree(aside, ignore_errors=True)
