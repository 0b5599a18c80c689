"""Command-line numbers are checked when parsed: a clear one-line error, no traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lanternpk.cli import main
from lanternpk.errors import UsageError
from lanternpk.inference import SamplerSettings


@pytest.mark.parametrize("command", [
    ["simulate", "data/truths/als_mouse.toml", "--out", "study"],
    ["fit", "data/als_mouse/observations.csv", "--model", "models/muse_vs_msc.toml",
     "--out", "run"],
    ["ppc", "run"],
    ["sbc", "models/muse_vs_msc.toml", "--truth-design", "data/designs/sbc_small.toml",
     "--n", "1"],
])
@pytest.mark.parametrize(("seed", "reason"), [
    ("-1", "must be at least 0, got -1"),
    ("4294967296", "must be below 2**32"),
    ("1.5", "not an integer: 1.5"),
])
def test_seed_out_of_range_is_a_usage_error(root, monkeypatch, tmp_path, capsys, command,
                                            seed, reason):
    monkeypatch.chdir(root)
    command = [str(tmp_path / a) if a in ("study", "run") else a for a in command]
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--seed", seed])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "--seed" in err and reason in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(("option", "value", "reason"), [
    ("--chains", "0", "must be at least 1, got 0"),
    # more than XLA's device-count flag can take aborted the process with its flag list
    ("--chains", "99999999999999999999", "must be at most 256, got 99999999999999999999"),
    ("--draws", "-5", "must be at least 1, got -5"),
    ("--tune", "-1", "must be at least 0, got -1"),
    # JAX failed with an allocation error or an integer overflow, as a traceback
    ("--draws", "1000000000000", "must be at most 100000, got 1000000000000"),
    ("--tune", "100001", "must be at most 100000, got 100001"),
])
def test_fit_sampler_counts_are_checked(root, monkeypatch, tmp_path, capsys, option, value,
                                        reason):
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "data/als_mouse/observations.csv", "--model", "models/muse_vs_msc.toml",
              "--out", str(tmp_path / "run"), option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and option in err and reason in err


@pytest.mark.parametrize(("command", "option", "value", "reason"), [
    (["compare", "a", "b"], "--is-draws", "99999999999999999999",
     "must be at most 10000, got 99999999999999999999"),
    (["compare", "a", "b", "--max-refits", "1"], "--refit-draws", "1000000000000",
     "must be at most 100000, got 1000000000000"),
    (["sbc", "models/muse_vs_msc.toml", "--truth-design", "data/designs/sbc_small.toml"],
     "--draws", "1000000000000", "must be at most 100000, got 1000000000000"),
])
def test_compare_and_sbc_draw_counts_are_bounded(root, monkeypatch, capsys, command, option,
                                                 value, reason):
    """A huge --is-draws or --refit-draws gave a NumPy or JAX traceback after the runs were
    loaded; a huge sbc --draws failed every fit with JAX's traceback text as the reason."""
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exit_:
        main([*command, option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and option in err and reason in err


def test_sampler_settings_allow_zero_tuning_but_not_negative():
    assert SamplerSettings(tune=0).tune == 0
    with pytest.raises(UsageError, match="--tune must be at least 0, got -1"):
        SamplerSettings(tune=-1)
    with pytest.raises(UsageError, match=r"--seed must be at least 0 and below 2\*\*32"):
        SamplerSettings(seed=-3)
    assert SamplerSettings(chains=256).chains == 256
    with pytest.raises(UsageError, match="--chains must be at most 256, got 257"):
        SamplerSettings(chains=257)
    with pytest.raises(UsageError, match="--draws must be at most 100000, got 100001"):
        SamplerSettings(draws=100_001)


@pytest.mark.parametrize(("option", "value", "reason"), [
    ("--timeout", "0", "--timeout must be a positive number of seconds, got 0.0"),
    ("--alpha", "1.5", "--alpha must be in [0.001, 1), got 1.5"),
    # simulated p-values: 1e-6 would have needed ~5e8 rank sets after all the fits
    ("--alpha", "1e-6", "--alpha must be in [0.001, 1), got 1e-06"),
])
def test_sbc_limits_are_checked_before_any_fit(root, monkeypatch, tmp_path, capsys, option,
                                               value, reason):
    monkeypatch.chdir(root)
    rc = main(["sbc", "models/muse_vs_msc.toml", "--truth-design",
               "data/designs/sbc_small.toml", "--n", "1", "--out", str(tmp_path / "sbc"),
               "--quiet", option, value])
    assert rc == 2 and reason in capsys.readouterr().err
    assert not (tmp_path / "sbc").exists()


def test_not_a_directory_names_the_nearest_existing_path_that_is_no_directory(tmp_path,
                                                                              monkeypatch):
    from lanternpk.argtypes import not_a_directory

    monkeypatch.chdir(tmp_path)
    Path("afile.txt").write_text("x")
    Path("adir").mkdir()
    Path("broken").symlink_to("no_such_target")
    assert not_a_directory("adir") is None
    assert not_a_directory("adir/new/deeper") is None
    assert not_a_directory("new") is None
    assert not_a_directory("afile.txt") == "afile.txt is a file, not a directory"
    assert not_a_directory("afile.txt/a/b") == "afile.txt is a file, not a directory"
    assert not_a_directory(tmp_path / "afile.txt" / "a") == \
        f"{tmp_path / 'afile.txt'} is a file, not a directory"
    assert not_a_directory("broken/run") == "broken is not a directory"


def test_output_path_checks_only_what_is_above_it(tmp_path, monkeypatch):
    from lanternpk.argtypes import output_path

    monkeypatch.chdir(tmp_path)
    Path("afile.txt").write_text("x")
    assert output_path("afile.txt") == Path("afile.txt")  # replacing it is the command's call
    assert output_path("new/run") == Path("new/run")
    with pytest.raises(argparse.ArgumentTypeError,
                       match=r"^cannot write afile\.txt/x\.csv: afile\.txt is a file, not a "
                             r"directory$"):
        output_path("afile.txt/x.csv")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^an empty path; name the directory"):
        output_path("")  # Path("") is ".": `sbc --out ""` wrote into the current directory


@pytest.mark.parametrize("command", [["summarize"], ["ppc"], ["report"], ["compare", "run"]])
def test_an_empty_run_directory_argument_is_named_as_empty(capsys, command):
    """`summarize ''` said '. is not a lanternpk run': Path("") is the current directory."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, ""])
    assert exit_.value.code == 2
    assert "an empty path; name the run directory" in capsys.readouterr().err


def test_an_input_that_is_no_regular_file_is_named_for_what_it_is(tmp_path, capsys):
    """/dev/null and a FIFO exist (not "no such file"); an empty argument is not ".". """
    import os

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for path, reason in (("/dev/null", "/dev/null is not a regular file"),
                         (str(fifo), f"{fifo} is not a regular file"),
                         ("", "an empty path is not a file"),
                         (str(tmp_path / "none.csv"), f"no such file: {tmp_path / 'none.csv'}")):
        with pytest.raises(SystemExit) as exit_:
            main(["validate", path])
        assert exit_.value.code == 2 and reason in capsys.readouterr().err


def test_a_run_directory_that_does_not_exist_is_named_so(tmp_path, capsys):
    assert main(["summarize", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} is not a lanternpk run: no such directory" in \
        capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["summarize", str(tmp_path / "file")]) == 2
    assert "is not a lanternpk run: not a directory" in capsys.readouterr().err
