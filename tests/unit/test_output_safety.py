"""Nothing the user gave is destroyed: output locations are checked before any work.

`fit` replaces only an earlier run (with --overwrite), never a directory of other files, the
current directory or one holding its inputs; other writers refuse to overwrite what they
did not write; unreadable runs and unwritable places are one-line errors, not tracebacks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import arviz as az
import numpy as np
import pytest

from lanternpk.cli import main
from lanternpk.errors import EXIT_INVALID, EXIT_USAGE, UsageError
from lanternpk.io import check_replaceable_directory, replace_directory

DATA = "data/als_mouse/observations.csv"
SPEC = "models/muse_vs_msc.toml"


def _fit(root, out, *extra):
    return main(["fit", str(root / DATA), "--model", str(root / SPEC), "--out", str(out),
                 "--chains", "1", "--draws", "10", "--tune", "10", "--quiet", *extra])


def _snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*")
            if p.is_file()}


def test_fit_refuses_a_directory_of_other_files_before_compiling(root, tmp_path, capsys,
                                                                 no_model_build):
    user = tmp_path / "work"
    user.mkdir()
    shutil.copy(root / DATA, user / "obs.csv")
    (user / "notes.txt").write_text("keep me")
    before = _snapshot(user)
    for extra in ([], ["--overwrite"]):
        assert _fit(root, user, *extra) == EXIT_USAGE
        err = capsys.readouterr().err
        assert "refusing to replace" in err and "not an earlier lanternpk output" in err
        assert "notes.txt" in err and "Traceback" not in err
    assert _snapshot(user) == before


@pytest.mark.parametrize("where", ["cwd", "input"])
def test_fit_never_replaces_the_current_directory_or_its_inputs(root, tmp_path, monkeypatch,
                                                                capsys, where):
    run = tmp_path / "run"
    run.mkdir()
    (run / "posterior.nc").write_bytes(b"an earlier run")
    shutil.copy(root / DATA, run / "obs.csv")
    before = _snapshot(run)
    if where == "cwd":
        monkeypatch.chdir(run)
        rc = _fit(root, ".", "--overwrite")
        reason = "it is the current directory or contains it"
    else:
        rc = main(["fit", str(run / "obs.csv"), "--model", str(root / SPEC), "--out", str(run),
                   "--overwrite", "--quiet"])
        reason = "it holds the input"
    assert rc == EXIT_USAGE and reason in capsys.readouterr().err
    assert _snapshot(run) == before


def test_fit_refuses_a_file_and_an_earlier_run_without_overwrite(root, tmp_path, capsys):
    target = tmp_path / "run"
    target.write_text("a file")
    assert _fit(root, target) == EXIT_USAGE
    assert "it is a file, not a directory" in capsys.readouterr().err
    target.unlink()
    target.mkdir()
    (target / "posterior.nc").write_bytes(b"an earlier run")
    assert _fit(root, target) == EXIT_USAGE
    assert "already holds a run; pass --overwrite" in capsys.readouterr().err
    assert (target / "posterior.nc").read_bytes() == b"an earlier run"


def test_unwritable_parent_is_refused_up_front(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # what a read-only directory answers (chmod alone would not do: CI runs as root, and
    # root may write anywhere)
    monkeypatch.setattr(os, "access", lambda path, mode: (Path(path) != locked
                                                          and real_access(path, mode)))
    with pytest.raises(UsageError, match=f"{locked} is not a writable directory"):
        check_replaceable_directory(locked / "run", marker="posterior.nc", overwrite=False)
    monkeypatch.undo()
    check_replaceable_directory(locked / "run", marker="posterior.nc", overwrite=False)


def test_replace_directory_swaps_in_the_new_output_and_leaves_nothing_beside(tmp_path):
    target, staging = tmp_path / "run", tmp_path / "staging"
    for directory, text in ((target, "old"), (staging, "new")):
        directory.mkdir()
        (directory / "posterior.nc").write_text(text)
    replace_directory(staging, target)
    assert (target / "posterior.nc").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_unreadable_or_foreign_posterior_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "posterior.nc").write_bytes(b"\x89HDF\r\n truncated")
    assert main(["summarize", str(run)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "is not a readable lanternpk run" in err and "Traceback" not in err
    az.from_dict(posterior={"x": np.zeros((1, 3))}).to_netcdf(run / "posterior.nc")
    assert main(["summarize", str(run)]) == EXIT_USAGE
    assert "has no 'lanternpk_provenance' record" in capsys.readouterr().err


def test_a_directory_given_as_an_input_file_is_named_as_such(root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"{tmp_path} is a directory, not a file" in capsys.readouterr().err


def test_import_livingimage_does_not_overwrite_its_input_or_an_existing_file(root, tmp_path,
                                                                             capsys):
    fixtures = root / "tests/fixtures/livingimage"
    export = tmp_path / "export.csv"
    shutil.copy(fixtures / "comma_utf8.csv", export)
    before = export.read_bytes()
    mapping = fixtures / "map.toml"
    assert main(["import-livingimage", str(export), "--map", str(mapping), "--out",
                 str(export), "--overwrite"]) == EXIT_USAGE
    assert f"it is the input file {export}" in capsys.readouterr().err
    assert export.read_bytes() == before
    # the --model spec, or a hard link to an input, is an input too (before: overwritten)
    spec = tmp_path / "spec.csv"
    shutil.copy(root / "models/muse_vs_msc.toml", spec)
    link = tmp_path / "link.csv"
    link.hardlink_to(export)
    for out, model in ((spec, spec), (link, None)):
        before = out.read_bytes()
        extra = ["--model", str(model)] if model else []
        assert main(["import-livingimage", str(export), "--map", str(mapping), *extra,
                     "--out", str(out), "--overwrite"]) == EXIT_USAGE
        assert "it is the input file" in capsys.readouterr().err
        assert out.read_bytes() == before
    out = tmp_path / "obs.csv"
    out.write_text("precious")
    assert main(["import-livingimage", str(export), "--map", str(mapping), "--out",
                 str(out)]) == EXIT_USAGE
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "precious"
    assert main(["import-livingimage", str(export), "--map", str(mapping), "--out", str(out),
                 "--overwrite"]) == 0
    assert out.read_text().startswith("study,animal,")
    # an --out that is a symbolic link is written where it points (before: the link replaced)
    pointed = tmp_path / "elsewhere.csv"
    (tmp_path / "via.csv").symlink_to(pointed)
    assert main(["import-livingimage", str(export), "--map", str(mapping), "--out",
                 str(tmp_path / "via.csv")]) == 0
    assert (tmp_path / "via.csv").is_symlink() and pointed.read_text() == out.read_text()


def test_simulate_overwrites_only_its_own_earlier_study(root, tmp_path, capsys):
    truth = str(root / "data/truths/als_mouse.toml")
    out = tmp_path / "study"
    out.mkdir()
    (out / "observations.csv").write_text("real measurements")
    assert main(["simulate", truth, "--seed", "1", "--out", str(out)]) == EXIT_USAGE
    assert "does not hold a study written by `lanternpk simulate`" in capsys.readouterr().err
    assert (out / "observations.csv").read_text() == "real measurements"
    fresh = tmp_path / "fresh"
    assert main(["simulate", truth, "--seed", "1", "--out", str(fresh)]) == 0
    assert main(["simulate", truth, "--seed", "2", "--out", str(fresh)]) == 0  # regenerate


@pytest.mark.parametrize("command", [
    ["fit", DATA, "--model", SPEC, "--quiet"],
    ["simulate", "data/truths/als_mouse.toml", "--seed", "1"],
    ["import-livingimage", "tests/fixtures/livingimage/comma_utf8.csv",
     "--map", "tests/fixtures/livingimage/map.toml"],
    ["report", "no_such_run"],
    ["sbc", SPEC, "--truth-design", "data/designs/sbc_small.toml", "--n", "1", "--quiet"],
    ["demo"],
])
@pytest.mark.parametrize("below", ["out.csv", "run", "a/b/run"])
def test_a_file_above_out_is_named_when_the_command_line_is_read(root, tmp_path, monkeypatch,
                                                                 capsys, command, below):
    """`--out afile.txt/x` names afile.txt (exit 2) before anything is read or compiled."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("mine")
    command = [str(root / a) if "/" in a else a for a in command]
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--out", f"afile.txt/{below}"])
    err = capsys.readouterr().err
    assert exit_.value.code == EXIT_USAGE and "Traceback" not in err
    assert err.splitlines()[-1] == (f"lanternpk {command[0]}: error: argument --out: cannot "
                                    f"write afile.txt/{below}: afile.txt is a file, not a "
                                    "directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt"]
    assert (tmp_path / "afile.txt").read_text() == "mine"


def test_report_refuses_a_file_as_out_before_loading_any_run(tmp_path, monkeypatch, capsys):
    """Checked first: a run would otherwise be loaded and its figures drawn (~20 s) in vain."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("mine")
    assert main(["report", "no_such_run", "--out", "afile.txt"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("lanternpk report: error: refusing to write a report into "
                                    "afile.txt: it is not a directory")
    assert (tmp_path / "afile.txt").read_text() == "mine"


def test_a_file_above_a_run_is_named_by_the_library_too(root, tmp_path):
    """Callers of :func:`lanternpk.fit.fit` (compare, demo) get the same reason."""
    from lanternpk.fit import fit
    from lanternpk.inference import SamplerSettings

    (tmp_path / "afile.txt").write_text("mine")
    out = tmp_path / "afile.txt" / "run"
    with pytest.raises(UsageError) as info:
        fit(root / DATA, root / SPEC, out, calibration_path=None, settings=SamplerSettings(),
            command=[])
    assert str(info.value) == f"cannot write {out}: {tmp_path / 'afile.txt'} is a file, not a " \
                              "directory"


@pytest.mark.parametrize(("text", "reason"), [("{broken", "is not an SBC campaign record"),
                                              ("[1, 2]", "not a JSON object")])
def test_a_corrupt_sbc_record_is_a_clear_error(root, tmp_path, capsys, text, reason):
    out = tmp_path / "sbc"
    out.mkdir()
    (out / "sbc_run.json").write_text(text)
    rc = main(["sbc", str(root / SPEC), "--truth-design",
               str(root / "data/designs/sbc_small.toml"), "--n", "1", "--out", str(out),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and reason in err and "Traceback" not in err
    assert (out / "sbc_run.json").read_text() == text


@pytest.mark.parametrize("command", ["summarize", "ppc", "report"])
def test_hand_edited_run_records_are_a_clear_error(tmp_path, capsys, command):
    """A posterior whose records lack what later commands read names what is missing."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    idata = az.from_dict(sample_stats={"diverging": np.zeros((1, 3), bool)})
    idata.attrs.update(lanternpk_provenance=json.dumps([1, 2]),
                       lanternpk_design=json.dumps({"organs": ["lung"]}),
                       lanternpk_diagnostics=json.dumps({"passed": True, "checks": {}}))
    idata.to_netcdf(run / "posterior.nc")
    args = [command, str(run)] + (["--out", str(tmp_path / "report")]
                                  if command == "report" else [])
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("it has no posterior group; its provenance record is not a JSON object (found "
            "list); its design record lacks 'spec', 'cell_types'") in err
    assert "its diagnostics record lacks 'rhat_max'" in err


def test_fit_overwrite_refuses_a_run_holding_the_users_files(tmp_path, capsys, root):
    run = tmp_path / "run"
    (run / "myplots").mkdir(parents=True)
    (run / "posterior.nc").write_text("earlier run")
    (run / "notes.txt").write_text("mine")
    rc = main(["fit", str(root / "data/als_mouse/observations.csv"),
               "--model", str(root / "models/muse_vs_msc.toml"), "--out", str(run),
               "--overwrite", "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "Traceback" not in err
    assert "it holds myplots, notes.txt, which replacing it would delete" in err
    assert (run / "notes.txt").read_text() == "mine"


def test_run_entries_name_what_ppc_and_compare_write():
    from lanternpk.compare import ANIMALS_FILE, COMPARE_FILE
    from lanternpk.fit import RUN_ENTRIES
    from lanternpk.ppc import PPC_DIR

    assert {PPC_DIR, COMPARE_FILE, ANIMALS_FILE} <= RUN_ENTRIES


def test_a_path_that_cannot_be_written_is_named_not_its_temporary_file(tmp_path):
    from lanternpk.errors import UsageError
    from lanternpk.io import atomic_path, staging_directory

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for make in (lambda: atomic_path(blocker / "out.csv").__enter__(),
                 lambda: staging_directory(blocker / "run")):
        with pytest.raises(UsageError, match=r"cannot write .*a_file/(out\.csv|run): ") as info:
            make()
        assert ".tmp" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_import_livingimage_refuses_a_directory_as_out(tmp_path, capsys, root):
    out = tmp_path / "adir"
    out.mkdir()
    exports = sorted((root / "tests/fixtures/livingimage").glob("*.csv"))[:1]
    mapping = next((root / "tests/fixtures/livingimage").glob("*.toml"))
    rc = main(["import-livingimage", *map(str, exports), "--map", str(mapping),
               "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "it is a directory, not a file" in err
    assert "Traceback" not in err and not any(out.iterdir())


def test_terminal_escapes_from_a_users_file_are_printed_escaped(root, tmp_path, capsys):
    """A column name or spec key holding an escape sequence (which would clear the screen)
    is shown as ``\\x1b``, in the location part of an error as in its message."""
    header, *rows = (root / "data/als_mouse/observations.csv").read_text().splitlines()
    data = tmp_path / "obs.csv"
    data.write_text("\n".join([header + ",\x1b[2Jx,\x1b[2Jx", *(r + ",1,2" for r in rows)]))
    spec = tmp_path / "spec.toml"
    spec.write_text((root / "models/muse_vs_msc.toml").read_text().replace(
        'blood = "fast"', 'blood = "fast"\n"\\u001b[2Jevil" = 1', 1))
    assert main(["validate", str(data)]) == EXIT_INVALID
    assert main(["validate", str(root / "data/als_mouse/observations.csv"),
                 "--model", str(spec)]) == EXIT_INVALID
    with pytest.raises(SystemExit):  # argparse's own error, naming the argument
        main(["validate", str(tmp_path / "\x1b[2Jmissing.csv")])
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "column '\\x1b[2Jx': column name repeated" in err
    assert "key 'model.\\x1b[2Jevil'" in err
    assert "no such file: " in err and "\\x1b[2Jmissing.csv" in err


def test_one_problem_on_every_row_is_shown_three_times_then_counted(root, tmp_path, capsys):
    """A label the spec lacks on all of a cell type's rows: not one line per row."""
    text = (root / "data/als_mouse/observations.csv").read_text()
    data = tmp_path / "obs.csv"
    data.write_text(text.replace(",muse,", ",neuron,"))
    n_rows = text.count(",muse,")
    assert main(["validate", str(data), "--model",
                 str(root / "models/muse_vs_msc.toml")]) == EXIT_INVALID
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 5, lines
    assert all("value 'neuron': cell type not in spec" in line for line in lines[:3])
    assert lines[3].startswith(f"error: {data}, column 'cell_type': {n_rows - 3} more with the "
                               "same problem, the last in row ")
    assert "(cell type not in spec muse_vs_msc" in lines[3]
    assert lines[4] == f"lanternpk validate: {n_rows} problem(s) found"


def test_fit_overwrite_refuses_a_run_whose_ppc_holds_the_users_files(root, tmp_path, capsys):
    """`fit --overwrite` deleted RUN/ppc/notes.txt with the run: only the top level of the
    run was checked for files lanternpk does not write."""
    run = tmp_path / "run"
    (run / "ppc").mkdir(parents=True)
    (run / "posterior.nc").write_bytes(b"an earlier run")
    (run / "ppc" / "coverage.json").write_text("[]")
    (run / "ppc" / "notes.txt").write_text("mine")
    rc = main(["fit", str(root / DATA), "--model", str(root / SPEC), "--out", str(run),
               "--overwrite", "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "Traceback" not in err
    assert (f"refusing to replace {run}: {run / 'ppc'} holds notes.txt, which ppc does not "
            "write") in err
    assert (run / "ppc" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_demo_files_are_in_the_checkout(root):
    """The demo and the benchmarks in bench/ read the bundled study through ``demo_files``."""
    from dataclasses import astuple

    from lanternpk.demo import demo_files

    files = demo_files(root)
    assert all(path.is_file() for path in astuple(files)), files
    assert files.observations.parent.name == files.truth.stem  # the study and its truth


def test_demo_replaces_only_a_run_demo_wrote(root, tmp_path, capsys):
    """`demo --out DIR` silently replaced DIR/run when it held the user's own fit."""
    import json

    from lanternpk.demo import check_demo_run

    run = tmp_path / "report" / "run"
    run.mkdir(parents=True)
    check_demo_run(run)  # empty: for fit to judge
    (run / "posterior.nc").write_bytes(b"a run")
    for command, by in ((["lanternpk", "fit", "obs.csv"], "`lanternpk fit`"), (None, None)):
        (run / "provenance.json").write_text(json.dumps({"command": command}))
        with pytest.raises(UsageError, match=f"written by {by or 'an unknown command'}, not by "
                                             "`lanternpk demo`; choose another --out"):
            check_demo_run(run)
    (run / "provenance.json").write_text("{not json")
    with pytest.raises(UsageError, match="an unknown command"):
        check_demo_run(run)
    (run / "provenance.json").write_text(json.dumps({"command": ["lanternpk", "demo"]}))
    check_demo_run(run)  # its own earlier run: replaced
    (run / "provenance.json").write_text(json.dumps({"command": ["lanternpk", "fit"]}))
    assert main(["demo", "--root", str(root), "--out", str(tmp_path / "report")]) == EXIT_USAGE
    assert "not by `lanternpk demo`" in capsys.readouterr().err
    assert (run / "posterior.nc").read_bytes() == b"a run"


class _Posterior:
    def to_netcdf(self, path):
        Path(path).write_bytes(b"")


def test_a_non_finite_statistic_is_written_as_json_null(tmp_path):
    import json

    from lanternpk.fit import _write_run

    diagnostics = {"rhat_max": float("nan"), "ebfmi_min": np.float64(np.inf),
                   "divergences": np.int64(0), "passed": False}
    summary = {"diagnostics": diagnostics, "estimands": {"x": [np.float64(0.5)]}}
    _write_run(tmp_path / "run", _Posterior(), {"seed": np.int64(3)}, diagnostics, summary)
    written = {name: json.loads((tmp_path / "run" / name).read_text(encoding="utf-8"))
               for name in ("provenance.json", "diagnostics.json", "summary.json")}
    assert written["diagnostics.json"] == {"rhat_max": None, "ebfmi_min": None,
                                           "divergences": 0, "passed": False}
    assert written["summary.json"]["estimands"] == {"x": [0.5]}
    assert written["provenance.json"] == {"seed": 3}


def test_summarize_json_writes_a_non_finite_statistic_as_null(monkeypatch, tmp_path, capsys):
    import json

    import lanternpk.fit

    summary = {"diagnostics": {"rhat_max": float("nan"), "passed": True}}
    monkeypatch.setattr(lanternpk.fit, "summary_from_run", lambda *a, **k: summary)
    assert main(["summarize", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"diagnostics": {"rhat_max": None,
                                                                   "passed": True}}


def test_provenance_names_the_data_the_fit_read_not_what_the_file_holds_later(
        root, tmp_path, monkeypatch):
    """The digests were taken after sampling: a data file edited during the fit was
    recorded with its new bytes' digest."""
    import hashlib
    import json

    import lanternpk.fit

    data = tmp_path / "observations.csv"
    shutil.copy(root / DATA, data)
    read = hashlib.sha256(data.read_bytes()).hexdigest()
    real_sample = lanternpk.fit.sample

    def sample_while_the_file_is_edited(*args, **kwargs):
        with data.open("a", encoding="utf-8") as handle:
            handle.write("\n")
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(lanternpk.fit, "sample", sample_while_the_file_is_edited)
    main(["fit", str(data), "--model", str(root / SPEC), "--out", str(tmp_path / "run"),
          "--chains", "1", "--draws", "10", "--tune", "10", "--quiet"])
    provenance = json.loads((tmp_path / "run/provenance.json").read_text(encoding="utf-8"))
    assert provenance["data_sha256"] == read != hashlib.sha256(data.read_bytes()).hexdigest()
