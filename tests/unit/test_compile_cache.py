"""JAX's persistent compilation cache: where it lives, when it is off, and that a second
`lanternpk fit` in a fresh process loads its programs from it with the same result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pytest

from lanternpk.compile_cache import ENV_VAR, cache_directory, enable_compile_cache


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    assert cache_directory() == tmp_path / "mine"
    for off in ("off", "OFF", "", " "):
        monkeypatch.setenv(ENV_VAR, off)
        assert cache_directory() is None
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_directory() == tmp_path / "xdg" / "lanternpk" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_directory() == Path.home() / ".cache" / "lanternpk" / "jax"


def test_an_impossible_directory_leaves_the_cache_off(monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(ENV_VAR, str(blocker / "jax"))
    assert enable_compile_cache() is None
    monkeypatch.setenv(ENV_VAR, "off")
    assert enable_compile_cache() is None


#: ``lanternpk fit`` with every compiled program stored, however fast it compiled: which
#: programs pass MIN_COMPILE_S would otherwise depend on the machine's load that moment.
_FIT_STORING_ALL = ("import sys; import lanternpk.compile_cache as c; c.MIN_COMPILE_S = 0.0; "
                    "from lanternpk.cli import main; sys.exit(main(sys.argv[1:]))")


def _fit(root: Path, out: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, ENV_VAR: str(cache), "JAX_LOG_COMPILES": "1"}
    return subprocess.run(
        [sys.executable, "-c", _FIT_STORING_ALL, "fit",
         str(root / "data/als_mouse/observations.csv"),
         "--model", str(root / "models/muse_vs_msc.toml"),
         "--calibration", str(root / "data/als_mouse/calibration.csv"),
         "--out", str(out), "--chains", "2", "--draws", "50", "--tune", "50"],
        capture_output=True, text=True, env=env, timeout=600)


def _stored(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if p.name.endswith("-cache")}


@pytest.mark.slow
def test_second_fit_loads_its_programs_from_the_cache(root, tmp_path):
    """Without --quiet too: stderr is not a terminal here, so there is no progress bar,
    whose host callback would keep the NUTS program out of the cache."""
    cache = tmp_path / "cache"
    first = _fit(root, tmp_path / "run1", cache)
    # exit 0 (diagnostics passed) or 3 (failed: 50 draws are too few); both wrote a run
    assert first.returncode in (0, 3), first.stderr[-2000:]
    assert "Persistent compilation cache hit" not in first.stderr
    stored = _stored(cache)
    assert len(stored) >= 2, f"the first fit stored {sorted(stored)}"
    second = _fit(root, tmp_path / "run2", cache)
    assert second.returncode == first.returncode, second.stderr[-2000:]
    hits = second.stderr.count("Persistent compilation cache hit")
    compiles = len(re.findall(r"Finished XLA compilation of \S+ in", second.stderr))
    # each program the second fit needed came from the cache (one that calls back into
    # Python, as a progress bar does, is never stored and so would be compiled again)
    assert hits == compiles == len(stored), (hits, compiles, sorted(stored))
    assert _stored(cache) == stored, "the second fit compiled and stored a new program"
    one = az.from_netcdf(tmp_path / "run1" / "posterior.nc").posterior
    two = az.from_netcdf(tmp_path / "run2" / "posterior.nc").posterior
    for name in one.data_vars:
        np.testing.assert_array_equal(one[name].values, two[name].values, err_msg=name)


def test_a_cache_path_that_cannot_be_expanded_turns_the_cache_off(monkeypatch):
    """`~nosuchuser/x` (or no home directory) raised RuntimeError, a traceback from every
    compiling command; the docstring promises a fit never fails for want of a cache."""
    monkeypatch.setenv(ENV_VAR, "~no_such_user_lanternpk/jax")
    assert cache_directory() is None and enable_compile_cache() is None
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(
        RuntimeError("Could not determine home directory"))))
    assert cache_directory() is None
