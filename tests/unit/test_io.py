"""Atomic writes: complete files only, nothing left behind, ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
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


def test_a_lost_interrupt_stops_before_anything_is_put_in_place(tmp_path):
    """Ctrl-C during a JAX garbage-collection callback was printed as 'Exception ignored'
    and `fit --overwrite` went on to replace the run; the recorded signal is raised again
    at the rename."""
    import signal

    target = tmp_path / "summary.json"
    target.write_text("old")
    run = tmp_path / "run"
    run.mkdir()
    (run / "posterior.nc").write_text("old run")
    # Python's own handler to start from: pytest started in the background by a
    # non-interactive shell (`bash .ci/run &`) inherits SIGINT ignored, and Python keeps that
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_during_replacement(target, run)
    finally:
        signal.signal(signal.SIGINT, outside)


def _interrupt_during_replacement(target, run) -> None:
    import signal

    from lanternpk import interrupt
    from lanternpk.io import replace_directory

    with interrupt.handling_interrupts():
        try:  # the signal arrives where its exception is swallowed
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
            tmp.write_text("new")
        staging = staging_directory(run)
        with pytest.raises(KeyboardInterrupt):
            replace_directory(staging, run)
    assert target.read_text() == "old" and (run / "posterior.nc").read_text() == "old run"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    interrupt.check()  # and forgotten


def test_sigterm_stops_a_command_like_ctrl_c_and_a_lost_raise_is_not_printed(monkeypatch):
    """SIGTERM (a CI timeout) killed `compare` without cleaning up: its refit runs stayed in
    /tmp/lanternpk-compare-*. A Ctrl-C lost in a JAX garbage-collection callback printed
    "Exception ignored in: <function _xla_gc_callback> … KeyboardInterrupt"."""
    import signal
    import sys

    from lanternpk import interrupt

    class LosesTheInterrupt:  # where Python cannot raise, as in a GC callback
        def __del__(self):
            raise KeyboardInterrupt

    reported = []  # what Python's hook would print as "Exception ignored"
    monkeypatch.setattr(sys, "unraisablehook", lambda info: reported.append(info.exc_type))
    hook = sys.unraisablehook
    with interrupt.handling_interrupts():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        LosesTheInterrupt()  # its __del__ raises where nothing can catch it
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    assert reported == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and sys.unraisablehook is hook
    with interrupt.handling_interrupts():  # no interrupt came: reported as Python does
        LosesTheInterrupt()
    assert reported == [KeyboardInterrupt]


def test_a_run_that_cannot_be_moved_aside_is_refused_before_the_work(tmp_path):
    """A read-only earlier run passed the check, the whole fit ran, then the rename failed
    and left an empty .run.old.* directory."""
    from lanternpk.errors import UsageError
    from lanternpk.io import check_replaceable_directory, replace_directory

    run = tmp_path / "run"
    run.mkdir()
    (run / "posterior.nc").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(run)
    with pytest.raises(UsageError, match="it is a symbolic link; give the directory itself"):
        check_replaceable_directory(link, marker="posterior.nc", overwrite=True)
    staging = staging_directory(run)
    original = os.replace

    def refuse_the_first(src, dst):
        if Path(src) == run:
            raise PermissionError(13, "Permission denied", str(src))
        return original(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", refuse_the_first)
        with pytest.raises(PermissionError):
            replace_directory(staging, run)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run", "link",
                                                                 staging.name])
    real_access = os.access  # a read-only run (chmod would not do: CI runs as root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "access", lambda path, mode: Path(path) != run and real_access(path, mode))
        with pytest.raises(UsageError, match=r"cannot replace .*not a writable directory"):
            check_replaceable_directory(run, marker="posterior.nc", overwrite=True)
    check_replaceable_directory(run, marker="posterior.nc", overwrite=True)


def test_an_interrupt_between_the_two_renames_waits_until_both_are_done(tmp_path):
    """A Ctrl-C (or a CI timeout's SIGTERM) after the earlier run was moved aside and before
    the new one was moved in raised at once: the target was gone, the new run was deleted
    with its staging directory, and the old one was left hidden in .run.old.XXXXXXXX."""
    import signal

    from lanternpk import interrupt
    from lanternpk.io import replacing_directory

    run = tmp_path / "run"
    run.mkdir()
    (run / "posterior.nc").write_text("old run")
    original, calls = os.replace, []

    def signal_after_the_first(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the old run is aside, the new one not yet in place
            signal.raise_signal(signal.SIGINT)
        return original(src, dst)

    with interrupt.handling_interrupts(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", signal_after_the_first)
        with pytest.raises(KeyboardInterrupt), replacing_directory(run) as staging:
            (staging / "posterior.nc").write_text("new run")
    assert len(calls) == 2
    assert (run / "posterior.nc").read_text() == "new run"
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # nothing left blocked


def test_replacing_directory_swaps_in_a_complete_directory_or_nothing(tmp_path):
    from lanternpk.io import replacing_directory

    run = tmp_path / "run"
    run.mkdir()
    (run / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replacing_directory(run) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in run.iterdir()) == ["old.txt"]
    with replacing_directory(run) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in run.iterdir()) == ["new.txt"]


def test_what_a_killed_write_left_in_a_run_does_not_block_replacing_it(tmp_path):
    """A SIGKILLed `ppc` left RUN/.ppc.XXXXXXXX; `fit --overwrite` then refused the run and
    told the user to move lanternpk's own leftover away. A user's hidden file still counts."""
    import tempfile

    from lanternpk.errors import UsageError
    from lanternpk.io import check_replaceable_directory, is_interrupted_write

    run = tmp_path / "run"
    run.mkdir()
    (run / "posterior.nc").write_text("old")
    owned = frozenset({"posterior.nc", "ppc", "compare.json"})
    leftovers = [Path(tempfile.mkdtemp(prefix=".ppc.", dir=run)),  # staging_directory
                 Path(tempfile.mkdtemp(prefix=".ppc.old.", dir=run)),  # moved aside
                 Path(tempfile.mkstemp(prefix=".compare.json.", suffix=".tmp", dir=run)[1])]
    assert all(is_interrupted_write(path, owned) for path in leftovers)
    check_replaceable_directory(run, marker="posterior.nc", overwrite=True, owned=owned)
    (run / ".ppc.abcd1234.tmp").mkdir()  # a directory is never a temporary file
    for name in (".ppc", ".ppc.notes", ".ppc.12345678.txt", ".notes.12345678",
                 ".compare.json.12345678", ".ppc.abcd1234.tmp"):
        if not (run / name).exists():
            (run / name).write_text("mine")
        assert not is_interrupted_write(run / name, owned), name
    (run / ".ppc.zzzz9999").symlink_to(leftovers[0])  # the right name, but a link
    assert not is_interrupted_write(run / ".ppc.zzzz9999", owned)
    with pytest.raises(UsageError, match=r"it holds \.compare\.json\.12345678, \.notes"):
        check_replaceable_directory(run, marker="posterior.nc", overwrite=True, owned=owned)


def test_a_symbolic_link_is_written_through_only_when_asked(tmp_path):
    """`import-livingimage --out link.csv` replaced the link by a file: the file it named (or,
    for a dangling link, the file it was to create) never got the table. Inside an output
    directory a link is replaced instead: a report's index.html linked to ../notes.html must
    not overwrite the notes."""
    from lanternpk.io import write_table_atomic

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "table.csv").write_text("old")
    link, dangling = tmp_path / "link.csv", tmp_path / "dangling.csv"
    link.symlink_to(shared / "table.csv")
    dangling.symlink_to(shared / "new.csv")
    table = pd.DataFrame({"x": [1]})
    write_table_atomic(link, table, through_symlink=True)
    write_table_atomic(dangling, table, through_symlink=True)
    assert link.is_symlink() and (shared / "table.csv").read_text() == "x\n1\n"
    assert dangling.is_symlink() and (shared / "new.csv").read_text() == "x\n1\n"
    assert sorted(p.name for p in shared.iterdir()) == ["new.csv", "table.csv"]
    (shared / "notes.html").write_text("mine")
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").symlink_to(shared / "notes.html")
    write_text_atomic(report / "index.html", "<p>report</p>")
    assert not (report / "index.html").is_symlink()
    assert (report / "index.html").read_text() == "<p>report</p>"
    assert (shared / "notes.html").read_text() == "mine"
