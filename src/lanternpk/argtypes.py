"""Argument types of the command line: checked conversions with a one-line reason."""

from __future__ import annotations

import argparse
from pathlib import Path

#: Seeds are one 32-bit word: what every random number generator used here accepts.
SEED_LIMIT = 2**32
#: Most chains of one fit. JAX samplers run each chain on its own XLA device, and the device
#: count goes to XLA as a flag before anything else is checked; XLA aborts, printing its whole
#: flag list, on a count it cannot parse.
MAX_CHAINS = 256
#: Most draws or tuning iterations per chain of one fit: 100 000 draws of this model's ~400
#: stored values take ~0.3 GB a chain; far beyond it, JAX fails with an allocation error or
#: an integer overflow instead of a message.
MAX_DRAWS = 100_000


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


def bounded_int(text: str, minimum: int, maximum: int) -> int:
    """An integer in [minimum, maximum] (the message names the bound it breaks)."""
    value = _int_at_least(text, minimum)
    if value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
    return value


def draw_count(text: str) -> int:
    """Draws per chain of a fit: an integer in [1, MAX_DRAWS] (a fit needs
    :data:`lanternpk.settings.MIN_DRAWS`: its own check names it, with the option)."""
    return bounded_int(text, 1, MAX_DRAWS)


def tune_count(text: str) -> int:
    """Tuning iterations per chain of a fit: an integer in [0, MAX_DRAWS]."""
    return bounded_int(text, 0, MAX_DRAWS)


def chain_count(text: str) -> int:
    """A number of chains: an integer in [1, MAX_CHAINS]."""
    return bounded_int(text, 1, MAX_CHAINS)


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
    if str(path) == "":
        return f"an empty path is not a {what}file"
    if Path(path).is_dir():
        return f"{path} is a directory, not a {what}file"
    if Path(path).exists():
        return f"{path} is not a regular {what}file (a device, a pipe or a socket)"
    return f"no such {what}file: {path}"


def not_a_directory(path: str | Path) -> str | None:
    """Why ``path`` cannot be a directory, or ``None`` when nothing is in the way.

    Something is in the way when ``path``, or the nearest existing path above it, is a file
    (or anything else but a directory, e.g. a broken link): nothing can be created below it.

    Parameters
    ----------
    path : str or path-like
        Directory to write into or to create, as the user gave it (not resolved, so the
        message names it as the user wrote it).

    Returns
    -------
    str or None
        E.g. ``"afile.txt is a file, not a directory"`` for ``afile.txt/run``.
    """
    path = Path(path)
    try:
        for existing in (path, *path.parents):
            if existing.exists() or existing.is_symlink():
                if existing.is_dir():
                    return None
                if existing.is_file():
                    return f"{existing} is a file, not a directory"
                return f"{existing} is not a directory"  # a broken link, a device, a FIFO
    except OSError:  # e.g. a directory that may not be searched: left to the write to report
        return None
    return None


def output_path(text: str) -> Path:
    """A file or directory to write: nothing above it may be a file (``--out``).

    Only the directories above it are checked here; whether the path itself may be replaced
    is for the command to decide.
    """
    if text == "":  # Path("") is ".", the current directory
        raise argparse.ArgumentTypeError("an empty path; name the directory or file to write")
    path = Path(text)
    reason = not_a_directory(path.parent)
    if reason is not None:
        raise argparse.ArgumentTypeError(f"cannot write {path}: {reason}")
    return path


def run_path(text: str) -> Path:
    """A run directory to read (``RUN_DIR``); whether it is a run is for the command to say.

    The empty path is refused here: ``Path("")`` is ``.``, which would be named instead.
    """
    if text == "":
        raise argparse.ArgumentTypeError("an empty path; name the run directory")
    return Path(text)


def existing_file(text: str) -> Path:
    """A path to an existing regular file."""
    path = Path(text)
    if text == "" or not path.is_file():  # Path("") is "."
        raise argparse.ArgumentTypeError(not_a_file(text))
    return path
