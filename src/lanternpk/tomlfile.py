"""Read a TOML file into a strict pydantic model; turn every failure into located problems.

Nothing in the file is executed: TOML is parsed as data and checked field by field.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from lanternpk.errors import DataError, Problem

M = TypeVar("M", bound=BaseModel)


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at ``loc`` (best effort, for "did you mean" hints)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return []
        annotation = current.model_fields[part].annotation
        current = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel
        ) else None
    return list(current.model_fields) if current is not None else []


def problems_from_validation(
    error: ValidationError, *, file: str, model: type[BaseModel]
) -> list[Problem]:
    """Convert a pydantic error into one :class:`Problem` per failed field."""
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        message = item["msg"]
        value = item.get("input")
        if item["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _allowed_fields(model, loc), n=1)
            message = "unknown key" + (f"; did you mean '{hint[0]}'?" if hint else "")
            value = None
        elif item["type"] == "missing":
            value = None
        elif isinstance(value, dict | list):
            value = None
        problems.append(Problem(file=file, column=key, value=value, message=message))
    return problems


def load_toml_model(path: str | Path, model: type[M]) -> M:
    """Parse ``path`` as TOML and validate it as ``model``.

    Raises
    ------
    DataError
        On unreadable files, TOML syntax errors and every failed field, each naming the file
        and the dotted key.
    """
    file = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise DataError([Problem(file=file, message=f"not valid TOML: {err}")]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError([Problem(file=file, message=f"cannot read file: {err}")]) from None
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise DataError(problems_from_validation(err, file=file, model=model)) from None
