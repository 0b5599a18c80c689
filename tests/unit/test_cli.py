"""The command line as a user sees it, run in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_the_arviz_refactor_notice_does_not_reach_the_user(tmp_path):
    """ArviZ 0.2x prints a FutureWarning about its 1.0 refactor on the first import of the
    day (its stamp file lives in the user's cache directory, fresh here)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("PYTHONWARNINGS", None)
    out = subprocess.run([sys.executable, "-m", "lanternpk.cli", "summarize",
                          str(tmp_path / "no_run")], capture_output=True, text=True, env=env,
                         check=False, timeout=300)
    if not (tmp_path / "arviz" / "daily_warning").is_file():
        pytest.skip("this ArviZ announces no refactor (or summarize no longer imports it)")
    assert out.returncode != 0 and "is not a lanternpk run" in out.stderr
    assert "ArviZ is undergoing" not in out.stderr, out.stderr


def test_the_printed_summary_shows_null_statistics_as_n_a():
    """A statistic that is not finite is null in summary.json (DESIGN.md); the one-screen
    summary of `fit` and `summarize` raised TypeError on it, after the run was written."""
    from lanternpk.fit import format_summary

    diagnostics = {"passed": True, "rhat_max": 1.004, "ess_bulk_min": 1017.0,
                   "ess_tail_min": 1033.0, "divergences": 0, "ebfmi_min": 0.69}
    contrast = {"name": "half_life_ratio", "numerator": "muse", "denominator": "msc",
                "region": "lung", "median": 1.92, "q05": 1.08, "q95": None, "p_gt_1": None}
    estimand = {"name": "half_life_d", "cell_type": "msc", "region": "lung", "median": None,
                "q05": 0.4, "q95": None, "barely_informed": False}
    text = format_summary({"diagnostics": diagnostics, "contrasts": [contrast],
                           "estimands": [estimand]})
    contrast_line, estimand_line = (line.split() for line in text.splitlines()
                                    if line.startswith(("half_life_ratio", "half_life_d ")))
    assert contrast_line == ["half_life_ratio", "muse/msc", "lung", "1.92", "[1.08,", "n/a]",
                             "n/a"]
    assert estimand_line == ["half_life_d", "msc", "lung", "n/a", "[0.4,", "n/a]"]
    notes = {flag: format_summary({"diagnostics": diagnostics, "contrasts": [],
                                   "estimands": [{**estimand, "barely_informed": flag}]}
                                  ).splitlines()[-1].split("]", 1)[1].strip()
             for flag in (True, False, None)}  # null: could not be decided, not "informed"
    assert notes == {True: "barely informed by data", False: "",
                     None: "informed? cannot tell"}
    shown = {p: format_summary({"diagnostics": diagnostics, "estimands": [],
                                "contrasts": [{**contrast, "p_gt_1": p}]}
                               ).splitlines()[-3].rsplit("]", 1)[1].strip()
             for p in (1.0, 0.9996, 0.5, 0.0)}  # P(>1) of a few thousand draws is no certainty
    assert shown == {1.0: "> 0.999", 0.9996: "> 0.999", 0.5: "0.500", 0.0: "< 0.001"}


def test_a_label_stdout_cannot_encode_is_escaped_not_a_traceback(root, tmp_path):
    """`validate` of a study named 'Sé1' on an ASCII terminal raised UnicodeEncodeError."""
    data = tmp_path / "accent.csv"
    text = (root / "data/als_mouse/observations.csv").read_text(encoding="utf-8")
    data.write_text(text.replace("als_mouse_synthetic", "Sé1"), encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "lanternpk.cli", "validate", str(data)],
                         capture_output=True, text=True, env=env, check=False, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "S\\xe91" in out.stdout


def test_a_path_with_an_escape_sequence_is_printed_escaped(root, tmp_path, capsys):
    """`simulate`'s success lines name the user's --out; an ESC in it reached the terminal raw."""
    from lanternpk.cli import main

    out = tmp_path / "study\x1b[2J"
    assert main(["simulate", str(root / "data/truths/als_mouse.toml"), "--seed", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed
    assert "study\\x1b[2J" in printed and "\n" in printed
    assert (out / "observations.csv").is_file()  # the directory itself keeps its real name


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_command_returned_leaves_its_exit_status(root, signum):
    """A Ctrl-C (or SIGTERM) during the interpreter's shutdown, after the command's outputs
    and messages were complete, printed "Exception ignored in atexit callback …
    KeyboardInterrupt", ended the process by the signal (status 130 or -15, no message) once
    Python had reset its handlers, or both; the exit status is now the command's own. The
    signal is sent from an exit handler, which runs after the command returned."""
    script = "\n".join([
        "import atexit, os, signal, sys, time",
        "from lanternpk.cli import console_main",
        "def late():",
        f"    os.kill(os.getpid(), signal.{signum})",
        "    time.sleep(0.2)  # Python runs a signal handler at the next instruction",
        "atexit.register(late)",
        f"sys.argv = ['lanternpk', 'validate', {str(root / 'data/als_mouse/observations.csv')!r}]",
        "console_main()"])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "KeyboardInterrupt" not in done.stderr and "observations" in done.stdout


@pytest.mark.parametrize(("patch", "args", "stderr"), [
    # a Ctrl-C while the parser's modules load (before: a KeyboardInterrupt traceback and
    # death by the signal, not status 2)
    ("orig = c.build_parser\n"
     "c.build_parser = lambda: (signal.raise_signal(signal.SIGINT), orig())[1]",
     ["validate", "observations.csv"], "lanternpk: interrupted"),
    # a Ctrl-C swallowed while JAX loads, as JAX's garbage-collection callback does (before:
    # lost, and the command ran on)
    ("import lanternpk.compile_cache as cc\n"
     "def swallowed():\n"
     "    try:\n"
     "        signal.raise_signal(signal.SIGINT)\n"
     "    except KeyboardInterrupt:\n"
     "        pass\n"
     "cc.enable_compile_cache = swallowed",
     ["ppc", "no_such_run"], "lanternpk ppc: interrupted"),
], ids=["while-the-parser-loads", "lost-while-jax-loads"])
def test_a_ctrl_c_while_the_command_starts_is_handled(tmp_path, patch, args, stderr):
    script = "\n".join(["import signal, sys", "import lanternpk.cli as c", patch,
                        f"sys.argv = ['lanternpk', *{args!r}]", "c.console_main()"])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == stderr
    assert "Traceback" not in done.stderr
