"""Shared fixtures: paths of the bundled data and specs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    """The checkout, holding data/, models/ and bench/."""
    return ROOT
