"""Argument types of the command line: checked conversions with a one-line reason."""

from __future__ import annotations

import argparse
from pathlib import Path

#: Seeds are one 32-bit word: what every random number generator used here accepts.
SEED_LIMIT = 2**32


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1 (counts of draws, fits, workers)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer ≥ 0 (limits where 0 means none)."""
    return _int_at_least(text, 0)


def random_seed(text: str) -> int:
    """A random seed: an integer in [0, 2³²)."""
    value = _int_at_least(text, 0)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below 2**32 = {SEED_LIMIT}, got {value}")
    return value


def not_a_file(path: str | Path, what: str = "") -> str:
    """Why ``path`` cannot be read as a file (for an error message).

    ``what`` names the file's role, e.g. "spec " gives "no such spec file: P".
    """
    if Path(path).is_dir():
        return f"{path} is a directory, not a {what}file"
    return f"no such {what}file: {path}"


def existing_file(text: str) -> Path:
    """A path to an existing regular file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(not_a_file(path))
    return path
