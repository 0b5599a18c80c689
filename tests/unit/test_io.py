"""Atomic writes: complete files only, nothing left behind, ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lanternpk.io import atomic_path, staging_directory, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_file_has_the_permissions_of_a_new_file(tmp_path, umask_022):
    target = tmp_path / "report.html"
    write_text_atomic(target, "<p>hi</p>")
    assert target.read_text() == "<p>hi</p>"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_staging_directory_has_the_permissions_of_a_new_directory(tmp_path, umask_022):
    staging = staging_directory(tmp_path / "run")
    assert staging.parent == tmp_path and staging.name.startswith(".run.")
    assert stat.S_IMODE(staging.stat().st_mode) == 0o755


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_full_disk_names_the_file_being_written(tmp_path):
    """Before: 'error: No space left on device', with no path (the error of a write to an
    open file names no file)."""
    import errno

    from lanternpk.errors import UsageError

    target = tmp_path / "observations.csv"
    target.write_text("old")
    with pytest.raises(UsageError) as info, atomic_path(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(info.value) == f"cannot write {target}: No space left on device"
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["observations.csv"]
    other = OSError(errno.EACCES, "Permission denied", str(tmp_path / "input.csv"))
    with pytest.raises(OSError) as info, atomic_path(target):
        raise other
    assert info.value is other  # another file's problem keeps its own message


def test_a_file_above_the_target_is_named_as_given(tmp_path, monkeypatch):
    from lanternpk.errors import UsageError
    from lanternpk.io import check_replaceable_directory, check_writable

    monkeypatch.chdir(tmp_path)
    Path("afile.txt").write_text("mine")
    for write, target in ((lambda t: atomic_path(t).__enter__(), "afile.txt/x.csv"),
                          (staging_directory, "afile.txt/run"),
                          (lambda t: check_replaceable_directory(t, marker="posterior.nc",
                                                                 overwrite=False),
                           "afile.txt/a/run")):
        with pytest.raises(UsageError) as info:
            write(Path(target))
        assert str(info.value) == f"cannot write {target}: afile.txt is a file, not a directory"
    with pytest.raises(UsageError) as info:
        check_writable("afile.txt/report", what="write a report into afile.txt/report")
    assert str(info.value) == ("cannot write a report into afile.txt/report: afile.txt is a "
                               "file, not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt"]


def test_json_text_writes_what_is_not_finite_as_null():
    """ppc and compare wrote Infinity (a Pareto k), which JSON parsers refuse."""
    import json

    import numpy as np

    from lanternpk.io import json_text

    record = {"k": float("inf"), "rows": [1.5, float("nan"), np.float64(-np.inf)],
              "n": np.int64(3), "a": np.array([0.5, np.nan]), "ok": True, "s": "x"}
    text = json_text(record)
    assert json.loads(text) == {"k": None, "rows": [1.5, None, None], "n": 3,
                                "a": [0.5, None], "ok": True, "s": "x"}
    assert "Infinity" not in text and "NaN" not in text and text.endswith("}\n")
