"""Read a TOML file into a strict pydantic model; turn every failure into located problems.

Nothing in the file is executed: TOML is parsed as data and checked field by field.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from lanternpk.errors import DataError, Problem, UsageError, unknown_key_message

M = TypeVar("M", bound=BaseModel)

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*"
_HEADER = re.compile(rf"^[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*\]")
_ASSIGN = re.compile(rf"^[ \t]*({_DOTTED})[ \t]*=")
_PART = re.compile(rf"{_KEY}")
_PATH_PART = re.compile(r"""\[(\d+)\]|"((?:[^"\\]|\\.)*)"|([^."\[\]]+)""")


def _unquote(quoted: str) -> str:
    """A basic string's text (TOML escapes that JSON lacks, e.g. \\U, are left as written)."""
    try:
        return json.loads(quoted)
    except ValueError:
        return quoted[1:-1]


def _key_parts(dotted: str) -> tuple[str, ...]:
    parts = []
    for raw in _PART.findall(dotted):
        if raw.startswith('"'):
            parts.append(_unquote(raw))
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return tuple(parts)


def key_lines(text: str) -> dict[tuple, int]:
    """Line (from 1) where each table and key of a TOML document is first written.

    Keys are tuples of names, with the item number (from 0) after an array of tables'
    name, as pydantic locates them: ``("flows", 4, "from")``. A key of an inline table
    is found at its table's line (see :func:`line_of`). Lines inside multi-line strings are
    skipped. Best effort: used only to say where a problem is.
    """
    lines: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}
    table: tuple = ()
    in_string = None
    # lines end at "\n" only: TOML allows U+2028, U+0085 … in comments and strings, which
    # str.splitlines() would also break at, shifting every later line number
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = line.removesuffix("\r")
        if in_string is not None:
            if in_string in line:
                in_string = None
            continue
        header = _HEADER.match(line)
        assign = None if header else _ASSIGN.match(line)
        if header:
            table = ()
            for part in _key_parts(header[2]):
                table += (part,)
                if table in counts:
                    table += (counts[table],)
            if header[1] == "[[":
                base = table[:-1] if len(table) > 1 and isinstance(table[-1], int) else table
                counts[base] = counts.get(base, -1) + 1
                table = (*base, counts[base])
            key = table
        elif assign:
            key = table + _key_parts(assign[1])
            rest = line[assign.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2:
                    in_string = quote
        else:
            continue
        for end in range(1, len(key) + 1):
            lines.setdefault(key[:end], number)
    return lines


def path_parts(path: str) -> tuple:
    """``'flows[4].from'`` or ``'images."IMG 1".rois'`` as a key tuple (see :func:`key_lines`)."""
    parts: list = []
    for index, quoted, bare in _PATH_PART.findall(path):
        if index:
            parts.append(int(index))
        elif quoted or bare:
            parts.append(_unquote(f'"{quoted}"') if quoted else bare.strip())
    return tuple(parts)


def line_of(lines: dict[tuple, int], key: tuple) -> int | None:
    """Line of the longest written prefix of ``key`` (keys not in the file are skipped)."""
    found: tuple = ()
    for part in key:
        if (*found, part) in lines:
            found += (part,)
    return lines.get(found) if found else None


def with_lines(problems: list[Problem], text: str) -> list[Problem]:
    """Problems naming a TOML key, with the key's line added."""
    lines = key_lines(text)
    return [dataclasses.replace(p, line=line_of(lines, path_parts(p.key)))
            if p.key and p.line is None else p for p in problems]


def _table_model(annotation: object) -> type[BaseModel] | None:
    """The table model of a field: ``M``, ``M | None``, or the element of ``list[M]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, tuple) and get_args(annotation):
        return _table_model(get_args(annotation)[0])
    if get_origin(annotation) is dict:  # keyed by the user's own names: no fixed fields
        return None
    models = [m for m in map(_table_model, get_args(annotation)) if m is not None]
    return models[0] if len(models) == 1 else None  # (a union of one table and None)


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at ``loc``, in declaration order (best effort, for "did you mean"
    hints; empty where the keys are the user's own names)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is not None and isinstance(part, int):
            continue  # an element of an array of tables: its model is the current one
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return []
        current = _table_model(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


#: pydantic error types → the wording every TOML file's problems use (the dotted key and
#: the value are named beside it).
PLAIN_MESSAGES = {
    "missing": "required key is missing",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "string_type": "must be a string",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_too_short": "must not be empty",
}


def plain_message(item: dict) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) in plain words.

    The types of :data:`PLAIN_MESSAGES` get their fixed wording ("must be a number", with a
    hint when the number was quoted); pydantic's "Input should be …" reads "must be …", and a
    validator's own message loses pydantic's "Value error, " prefix.
    """
    kind, message = item["type"], item["msg"]
    if kind in PLAIN_MESSAGES:
        message = PLAIN_MESSAGES[kind]
        if kind == "float_type" and isinstance(item.get("input"), str):
            message += " (write it without quotes)"
        return message
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "too_short":  # "List should have at least 1 item after validation, not 0"
        least = item.get("ctx", {}).get("min_length")
        return f"must hold at least {least} item{'s' if least != 1 else ''}" if least else message
    return re.sub(r"^Input should be\s*", "must be ", message)


class KeyedProblems(ValueError):
    """Cross-field problems of a ``model_validator``, each on its own dotted key (relative to
    the model) with its value: :func:`problems_from_validation` makes one :class:`Problem`
    of each, located like any other key's."""

    def __init__(self, problems: list[tuple[str, object, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" for key, _, message in problems))


def dotted_key(loc: tuple) -> str:
    """A pydantic location as the key a problem names: ``design.sacrifice[1].animals``
    (an array index in brackets, so that :func:`path_parts` reads it back as a number and
    the problem gets the line of that element, not of the first)."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f"{'.' if key else ''}{part}"
    return key


def problems_from_validation(
    error: ValidationError, *, file: str, model: type[BaseModel]
) -> list[Problem]:
    """Convert a pydantic error into one :class:`Problem` per failed field."""
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        keyed = item.get("ctx", {}).get("error")
        if isinstance(keyed, KeyedProblems):
            prefix = f"{dotted_key(loc)}." if loc else ""
            problems += [Problem(file=file, key=prefix + key, value=value, message=message)
                         for key, value, message in keyed.problems]
            continue
        key = dotted_key(loc) or "(top level)"
        message = plain_message(item)
        value = item.get("input")
        if item["type"] == "extra_forbidden":
            message = unknown_key_message(str(loc[-1]), _allowed_fields(model, loc))
            value = None
        elif item["type"] == "missing":
            value = None
        elif isinstance(value, dict | list):
            value = None
        problems.append(Problem(file=file, key=key, value=value, message=message))
    return problems


def parse_toml(text: str, *, file: str, what: str = "not valid TOML") -> dict:
    """Parse TOML text; a leading byte-order mark is ignored, as in CSV and mapping files.

    Raises
    ------
    DataError
        A syntax error (``"{what}: …"`` with TOML's line and column), tables or arrays
        nested too deeply to parse, or an integer too long for Python to convert.
    """
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as err:
        raise DataError([Problem(file=file, message=f"{what}: {err}")]) from None
    except RecursionError:
        raise DataError([Problem(file=file, message=f"{what}: nested too deeply")]) from None
    except ValueError:  # Python refuses to convert an integer of thousands of digits
        limit = sys.get_int_max_str_digits()
        huge = re.search(rf"[=,\[]\s*[+-]?([0-9][0-9_]{{{limit},}})", text)  # a value, not text
        line = None if huge is None else text.count("\n", 0, huge.start(1)) + 1
        raise DataError([Problem(file=file, line=line, message=f"{what}: a number of more "
                                 f"than {limit} digits")]) from None


def read_utf8(path: str | Path, *, what: str = "file") -> str:
    """The text of a TOML file, which TOML requires to be UTF-8.

    Raises
    ------
    UsageError
        The file cannot be read (exit status 2, as for every input that cannot be read).
    DataError
        The file is not UTF-8 (a UTF-16 file saved by a Windows editor: the problem says so
        and on which line, not the codec's byte offset).
    """
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {what} {file}: {err.strerror or err}") from None
    return decode_utf8(raw, file=file, prefix=f"cannot read {what}: ")


def decode_utf8(raw: bytes, *, file: str, prefix: str = "") -> str:
    """``raw`` decoded as UTF-8.

    Raises
    ------
    DataError
        ``{prefix}not UTF-8 text (line N); save it as UTF-8``, naming the line of the first
        byte that is not UTF-8.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError([Problem(file=file, message=f"{prefix}not UTF-8 text (line {line}); "
                                 "save it as UTF-8")]) from None


def load_toml_model(path: str | Path, model: type[M]) -> M:
    """Parse ``path`` as TOML and validate it as ``model``.

    Raises
    ------
    DataError
        On unreadable files, TOML syntax errors and every failed field, each naming the file
        and the dotted key.
    """
    file = str(path)
    text = read_utf8(path)
    raw = parse_toml(text, file=file)
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = problems_from_validation(err, file=file, model=model)
        raise DataError(with_lines(problems, text)) from None
