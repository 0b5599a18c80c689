"""User-facing errors: what went wrong, where, and which exit status to use.

A user error is printed as one line per problem (the same problem in many rows folded into a
count), never as a traceback. Exit status 1 means
the data (or a spec) is invalid, 2 means the command was used wrongly (missing file, bad flag,
an output location that cannot be written or would destroy other files) or was interrupted.
"""

from __future__ import annotations

import datetime
import difflib
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
#: The work ran, but a check failed: a fit's convergence checks (R-hat, ESS, divergences,
#: E-BFMI, finite draws), or in ``sbc`` a failed fit or a failed uniformity test.
EXIT_DIAGNOSTICS = 3


@dataclass(frozen=True)
class Problem:
    """One problem found in a user's file.

    Parameters
    ----------
    file : str
        Path of the file, as the user gave it.
    message : str
        What is wrong, and what would be valid.
    row : int or None
        Row as a spreadsheet numbers it: the header is row 1, the first data row is row 2.
    column : str or None
        Column name the problem is in (a table file).
    value : object
        The offending value as read, or None when there is none (e.g. a missing column).
    line : int or None
        Line of a text file the problem is on, from 1 (a TOML key's).
    key : str or None
        Dotted TOML key the problem is in (a spec, truth, design or mapping file).
    """

    file: str
    message: str
    row: int | None = None
    column: str | None = None
    value: object = None
    line: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column '{printable(self.column)}'")
        if self.key is not None:
            where.append(f"key '{printable(self.key)}'")
        if self.value is not None:
            where.append(f"value {_value_text(self.value, toml=self.key is not None)}")
        return f"{', '.join(where)}: {self.message}"


def _value_text(value: object, *, toml: bool) -> str:
    """A value as its file writes it where Python's repr differs: ``true`` in TOML, a date
    as ``2020-01-01`` (not ``datetime.date(2020, 1, 1)``); text and numbers as repr."""
    if toml and isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return repr(value)


#: Problems with the same file, column, key and message printed before the rest are counted.
SHOWN_PER_KIND = 3


def format_problems(problems: Sequence[Problem]) -> list[str]:
    """One line per problem, the same problem in many rows folded into a count.

    A systematic error (a wrong kind of file, a label the spec lacks) repeats one message on
    every row; after :data:`SHOWN_PER_KIND` of them one line says how many more rows have
    it and where they end, in the order first found.
    """
    kinds: dict[tuple, list[Problem]] = {}
    for problem in problems:
        key = (problem.file, problem.column, problem.key, problem.message)
        kinds.setdefault(key, []).append(problem)
    lines = []
    for (file, column, _, message), same in kinds.items():
        lines += [str(p) for p in same[:SHOWN_PER_KIND]]
        if rest := same[SHOWN_PER_KIND:]:
            rows = [p.row for p in rest if p.row is not None]
            last = f", the last in row {max(rows)}" if rows else ""
            where = f"{file}, column '{printable(column)}'" if column is not None else file
            lines.append(f"{where}: {len(rest)} more with the same problem{last} ({message})")
    return lines


#: Control characters (C0, DEL, C1): not part of any label or free text from a user's file,
#: and printed raw they can rewrite a terminal's screen.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, *, keep: str = "") -> str:
    """``text`` with control and invisible characters as escapes (``\\x1b``), except ``keep``.

    For text from a user's file on a terminal: an escape sequence in a column name or a
    spec's labels would otherwise move the cursor or clear the screen.
    """
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def notice(command: str, message: str) -> None:
    """Print ``lanternpk COMMAND: message`` on stderr, control characters as escapes.

    For progress and warnings that name the user's paths (``scoring RUN_DIR``); stdout gets
    the same escaping from the command line, stderr cannot (it carries the progress bars).
    """
    prefix = f"lanternpk {command}" if command else "lanternpk"  # "": before one is known
    print(f"{prefix}: {printable(message, keep=chr(10))}", file=sys.stderr)


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option most like ``word`` (difflib ratio at least 0.6), or ``None``."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options`` to ``word``, or ``""``."""
    close = closest(word, options)
    return f" (did you mean {close!r}?)" if close is not None else ""


def unknown_key_message(key: str, allowed: Iterable[str]) -> str:
    """The message for a key a file's table does not have, worded alike in every file kind.

    ``unknown key 'x' (did you mean 'y'?); allowed keys: a, b``; the list is left out when
    ``allowed`` is empty (a table whose keys are the user's own names).
    """
    allowed = list(allowed)
    message = f"unknown key {key!r}" + did_you_mean(key, allowed)
    return message + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")


def load_all(*jobs: tuple[Callable[[Any], Any], Any]) -> list[Any]:
    """Run each ``(loader, path)``; a ``None`` path is skipped and gives ``None``.

    Raises
    ------
    DataError
        The problems of every loader that failed, together (not only the first file's).
    """
    results, problems = [], []
    for loader, path in jobs:
        try:
            results.append(None if path is None else loader(path))
        except DataError as err:
            problems += err.problems
    if problems:
        raise DataError(problems)
    return results


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""

    exit_code = EXIT_USAGE


class UsageError(UserError):
    """The command was called wrongly (missing file, conflicting options)."""

    exit_code = EXIT_USAGE


class DataError(UserError):
    """A data, mapping or spec file is invalid; carries every problem found, not only the first."""

    exit_code = EXIT_INVALID

    def __init__(self, problems: list[Problem]):
        if not problems:
            raise ValueError("DataError needs at least one problem")
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
