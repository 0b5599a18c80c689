"""Shared fixtures: paths of the bundled data and specs, and tiny fits of the bundled study."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

# Property tests draw their examples from a fixed seed, so that a run (CI's above all) is
# repeatable; `pytest --hypothesis-profile=explore` draws new examples each run.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory) -> Iterator[Path]:
    """One JAX compilation cache for the session's in-process commands (not ~/.cache).

    A test that needs another cache, or none, sets ``LANTERNPK_JAX_CACHE`` for its own
    subprocess.
    """
    from lanternpk.compile_cache import ENV_VAR

    directory = tmp_path_factory.mktemp("jax-cache")
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(directory)
    yield directory
    if previous is None:
        del os.environ[ENV_VAR]
    else:
        os.environ[ENV_VAR] = previous


@pytest.fixture(scope="session")
def root() -> Path:
    """The checkout, holding data/, models/ and bench/."""
    return ROOT


@pytest.fixture(scope="session")
def fit_bundled(root) -> Callable[..., int]:
    """``fit(out, *, draws, tune, chains=2, data=None)``: `lanternpk fit` of the ALS study.

    Fits ``models/muse_vs_msc.toml`` with the bundled standard curve, quietly, to ``data``
    (default: the bundled ALS-like observations) and returns the exit status.
    """
    from lanternpk.cli import main

    def fit(out: Path, *, draws: int, tune: int, chains: int = 2, data: Path | None = None
            ) -> int:
        data = data or root / "data/als_mouse/observations.csv"
        return main(["fit", str(data), "--model", str(root / "models/muse_vs_msc.toml"),
                     "--calibration", str(root / "data/als_mouse/calibration.csv"),
                     "--out", str(out), "--chains", str(chains), "--draws", str(draws),
                     "--tune", str(tune), "--quiet"])

    return fit


@pytest.fixture
def no_model_build(monkeypatch) -> None:
    """``lanternpk.fit`` fails the test if it builds a model: for refusals that must come
    before anything is compiled."""
    import lanternpk.fit

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the refusal")

    monkeypatch.setattr(lanternpk.fit, "build_model", refuse)
