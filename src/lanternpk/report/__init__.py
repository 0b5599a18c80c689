"""`lanternpk report`: a self-contained HTML report, a Markdown summary and the summary JSON.

Rendered from run directories alone (DESIGN.md style item 10). The command-line hooks live
here and import the rendering machinery (matplotlib, jinja2, the fit stack) only when run, so
that building the argument parser stays fast.

Public API
----------
add_report_parser, run_report_command
    The ``report`` sub-command.
render_report, load_run_report, load_sbc, RunReport, FigureError
    Rendering (from :mod:`lanternpk.report.render`, imported on first use).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from lanternpk.argtypes import output_path, run_path

__all__ = ["FigureError", "RunReport", "add_report_parser", "load_run_report", "load_sbc",
           "render_report", "run_report_command"]
_RENDER_NAMES = {"FigureError", "RunReport", "load_run_report", "load_sbc", "render_report"}


def __getattr__(name: str):
    if name in _RENDER_NAMES:
        return getattr(importlib.import_module("lanternpk.report.render"), name)
    raise AttributeError(f"module 'lanternpk.report' has no attribute {name!r}")


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` command to the ``lanternpk`` sub-command parsers.

    The parser's ``handler`` default takes the parsed namespace and returns the exit status.
    """
    p = subparsers.add_parser(
        "report", help="write an HTML report, a Markdown summary and the summary JSON of runs",
        description="Writes OUT/index.html (self-contained), OUT/summary.md and "
        "OUT/summary.json from the run directories alone; the first run is reported on, the "
        "others join the model comparison. Exit status: 0 written; 1 or 2 invalid input; 3 "
        "written, but a run's convergence checks failed.",
    )
    p.add_argument("run_dirs", nargs="+", type=run_path, metavar="RUN_DIR",
                   help="run directories written by `lanternpk fit`")
    p.add_argument("--out", required=True, type=output_path,
                   help="report directory, e.g. reports/NAME")
    p.add_argument("--sbc", type=Path, metavar="SBC_DIR",
                   help="also show a simulation-based calibration (`lanternpk sbc --out SBC_DIR`)")
    p.set_defaults(handler=lambda args: run_report_command(args.run_dirs, out=args.out,
                                                           sbc_dir=args.sbc))
    return p


def run_report_command(run_dirs: list[Path], *, out: Path, sbc_dir: Path | None = None) -> int:
    """Render the report of ``run_dirs`` (and of an SBC directory) into ``out``.

    Returns
    -------
    int
        0 when written and every run passed its convergence checks; 3 (``EXIT_DIAGNOSTICS``)
        when written but a run's checks failed.

    Raises
    ------
    UsageError
        A run directory is given twice; ``out`` is inside a run directory or the SBC
        directory (a report there changes an input: ``fit --overwrite`` then refuses the
        run), or is not a report directory.
    """
    from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_OK, UsageError, notice
    from lanternpk.report.render import (
        REPORT_FILES,
        FigureError,
        check_report_directory,
        load_run_report,
        load_sbc,
        render_report,
    )

    if len({Path(r).resolve() for r in run_dirs}) < len(run_dirs):
        raise UsageError("a run directory is given twice (the report would compare it with "
                         "itself)")
    for given in [*run_dirs, *([sbc_dir] if sbc_dir is not None else [])]:
        if Path(out).resolve().is_relative_to(Path(given).resolve()):
            raise UsageError(f"refusing to write a report into {out}: it is inside {given}, "
                             "an input of the report; choose another --out")
    check_report_directory(out)  # before the runs are loaded and the figures drawn
    sbc = load_sbc(sbc_dir) if sbc_dir is not None else None  # cheap: before the runs
    runs = [load_run_report(run_dir) for run_dir in run_dirs]
    try:
        render_report(runs, out=out, sbc=sbc)
    except FigureError as err:
        nonfinite = [f"{run.run_dir} ({', '.join(names)})" for run in runs
                     if (names := run.diagnostics.get("nonfinite_parameters"))]
        hint = (f"; non-finite (NaN or infinite) draws in {'; '.join(nonfinite)}"
                if nonfinite else "")
        raise FigureError(f"{err}{hint}; no report written") from None
    print(f"wrote {', '.join(str(Path(out) / name) for name in REPORT_FILES)}")
    failed = [str(run.run_dir) for run in runs if not run.diagnostics["passed"]]
    if failed:
        notice("report", f"convergence checks FAILED for {', '.join(failed)}")
        return EXIT_DIAGNOSTICS
    return EXIT_OK
