"""Command-line shell: parse arguments, call the library, turn user errors into exit codes.

Every command prints its reasons for failing, one line per problem, and exits non-zero
(:mod:`lanternpk.errors`; 2 also when interrupted); a traceback appears only for a bug in
lanternpk itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from lanternpk import __version__, interrupt
from lanternpk.argtypes import (
    chain_count,
    draw_count,
    existing_file,
    output_path,
    random_seed,
    run_path,
    tune_count,
)
from lanternpk.errors import (
    EXIT_DIAGNOSTICS,
    EXIT_OK,
    EXIT_USAGE,
    DataError,
    UsageError,
    UserError,
    format_problems,
    load_all,
    notice,
    printable,
)
from lanternpk.interrupt import handling_interrupts
from lanternpk.settings import MIN_DRAWS

Handler = Callable[[argparse.Namespace], int]


def _cmd_validate(args: argparse.Namespace) -> int:
    from lanternpk.data.load import load_calibration, load_observations
    from lanternpk.data.validate import describe

    if args.model is not None:  # the checks fit makes before compiling anything
        from lanternpk.fit import load_inputs

        obs, calibration, spec, data, _ = load_inputs(args.data, args.model, args.calibration)
    else:
        obs, calibration = load_all((load_observations, args.data),
                                    (load_calibration, args.calibration))
    print(describe(obs, calibration, source=str(args.data),
                   calibration_source=None if args.calibration is None else str(args.calibration)))
    if args.model is not None:
        print(f"{'model spec':<24}{args.model}: {spec.name}, fits these data "
              f"({len(data.animals)} animals, {len(data.images)} images, "
              f"{len(data.session_time_d)} imaging sessions)")
    return EXIT_OK


def _cmd_import_livingimage(args: argparse.Namespace) -> int:
    from lanternpk.data.livingimage import check_output_suffix, import_livingimage
    from lanternpk.io import write_table_atomic

    out = Path(args.out)
    inputs = [*args.exports, args.map, *([args.model] if args.model is not None else [])]
    for path in map(Path, inputs):  # existing files (argparse); samefile sees links too
        if out.exists() and os.path.samefile(out, path):
            raise UsageError(f"refusing to write {out}: it is the input file {path}")
    if out.is_dir():
        raise UsageError(f"refusing to write {out}: it is a directory, not a file")
    check_output_suffix(out)  # refuse an unsupported suffix before reading any input
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    model = None
    if args.model is not None:
        from lanternpk.spec import load_spec

        model = load_spec(args.model)
    table = import_livingimage(args.exports, mapping=args.map, model=model)
    write_table_atomic(out, table, through_symlink=True)  # the user's --out, as named
    print(f"wrote {len(table)} observations from {len(args.exports)} export(s) to {args.out}")
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from lanternpk.data.simulate import load_truth, simulate_study, write_study

    truth = load_truth(args.truth)
    study = simulate_study(truth, seed=args.seed)
    paths = write_study(study, args.out, truth_file=args.truth)
    print(f"simulated {study.describe()}")
    for path in paths:
        print(f"  wrote {path}")
    return EXIT_OK


def _cmd_fit(args: argparse.Namespace) -> int:
    from lanternpk.fit import fit, format_summary
    from lanternpk.settings import SamplerSettings

    settings = SamplerSettings(sampler=args.sampler, chains=args.chains, draws=args.draws,
                               tune=args.tune, seed=args.seed,
                               target_accept=args.target_accept)
    result = fit(args.data, args.model, args.out, calibration_path=args.calibration,
                 settings=settings, command=args.command_line, overwrite=args.overwrite,
                 progressbar=not args.quiet)
    print(format_summary(result.summary))
    print(f"\nwrote {result.run_dir} ({result.wall_s:.1f} s: model build, compiling or the "
          "compilation cache, sampling, prior draws)")
    if not result.summary["diagnostics"]["passed"]:
        notice("fit", "convergence checks FAILED (see diagnostics.json)")
        if result.censoring_note:
            notice("fit", result.censoring_note)
        return EXIT_DIAGNOSTICS
    return EXIT_OK


def _cmd_summarize(args: argparse.Namespace) -> int:
    from lanternpk.fit import format_summary, summary_from_run
    from lanternpk.io import json_text

    summary = summary_from_run(args.run_dir, spec_path=args.model, data_path=args.data)
    if args.json:
        print(json_text(summary), end="")
    else:
        print(format_summary(summary))
    return EXIT_OK if summary["diagnostics"]["passed"] else EXIT_DIAGNOSTICS


def _cmd_demo(args: argparse.Namespace) -> int:
    from lanternpk.demo import run_demo

    result = run_demo(root=args.root, out=args.out)
    return EXIT_OK if result.summary["diagnostics"]["passed"] else EXIT_DIAGNOSTICS


class _Parser(argparse.ArgumentParser):
    """argparse, with control characters of the user's arguments escaped in its errors."""

    def error(self, message: str):
        super().error(printable(message, keep=_LAYOUT))


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for the ``lanternpk`` command."""
    parser = _Parser(
        prog="lanternpk",
        description="Bayesian biodistribution of IV-injected, luciferase-labelled cells.",
    )
    parser.add_argument("--version", action="version", version=f"lanternpk {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "validate",
        help="check an observations file (and standard curve, and model spec) before a fit",
        description=(
            "Exit status: 0 valid, 1 invalid data (every problem of each file against its "
            "contract is listed; with --model, the data's labels are checked against the "
            "spec once the files are valid), 2 usage error."
        ),
    )
    p.add_argument("data", type=existing_file, help="observations, CSV or Parquet")
    p.add_argument("--calibration", type=existing_file, help="standard curve, CSV or Parquet")
    p.add_argument("--model", type=existing_file,
                   help="model spec TOML: also check the data against it, as fit does")
    p.set_defaults(handler=_cmd_validate)

    p = commands.add_parser(
        "import-livingimage",
        help="convert Living Image ROI exports into an observations table",
        description="Exit status: 0 written; 1 invalid exports or mapping (every problem is "
        "listed, nothing is written); 2 usage error.",
    )
    p.add_argument("exports", nargs="+", type=existing_file, help="ROI measurement exports")
    p.add_argument("--map", required=True, type=existing_file, help="mapping TOML")
    p.add_argument("--out", required=True, type=output_path,
                   help="observations file to write: .csv (CSV) or .parquet/.pq (Parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--model", type=existing_file,
                   help="model spec TOML: also check the mapping's regions and cell types")
    p.set_defaults(handler=_cmd_import_livingimage)

    p = commands.add_parser(
        "simulate", help="simulate a synthetic study from a truth file (exact kinetics)",
        description="Exit status: 0 written; 1 invalid truth file; 2 usage error.",
    )
    p.add_argument("truth", type=existing_file, help="truth TOML (see data/truths/)")
    p.add_argument("--seed", type=random_seed, required=True, help="random seed")
    p.add_argument("--out", type=output_path, required=True,
                   help="directory to write the study into")
    p.set_defaults(handler=_cmd_simulate)

    p = commands.add_parser(
        "fit", help="fit a model spec to observations and write a run directory",
        description="Exit status: 0 fit and checks passed; 1 invalid data or spec; 2 usage "
        "error; 3 the fit finished but a convergence check failed.",
    )
    p.add_argument("data", type=existing_file, help="observations, CSV or Parquet")
    p.add_argument("--model", required=True, type=existing_file, help="model spec TOML")
    p.add_argument("--out", required=True, type=output_path, help="run directory to write")
    p.add_argument("--calibration", type=existing_file, help="standard curve, CSV or Parquet")
    p.add_argument("--sampler", default="numpyro",
                   choices=["numpyro", "nutpie", "pymc", "blackjax"],
                   help="NUTS implementation (default: %(default)s; nutpie and blackjax are "
                   "in the [samplers] extra)")
    p.add_argument("--chains", type=chain_count, default=4,
                   help="number of chains (default: %(default)s)")
    p.add_argument("--draws", type=draw_count, default=1000,
                   help=f"posterior draws per chain after tuning, at least {MIN_DRAWS} "
                   "(default: %(default)s)")
    p.add_argument("--tune", type=tune_count, default=1000,
                   help="tuning (warm-up) iterations per chain, discarded (default: %(default)s)")
    p.add_argument("--seed", type=random_seed, default=20261125,
                   help="random seed of starting points, sampling and prior draws "
                   "(default: %(default)s)")
    p.add_argument("--target-accept", type=float, default=0.9,
                   help="NUTS target acceptance probability, in [0.5, 1) "
                   "(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    p.set_defaults(handler=_cmd_fit)

    p = commands.add_parser(
        "summarize", help="print the estimands, contrasts and diagnostics of a run",
        description="Recomputed from the saved posterior. With --model/--data, refuses a "
        "run fit to other files. Exit status: 0 ok; 1 the spec or data differ from the run's; "
        "2 usage error; 3 the run's convergence checks failed.",
    )
    p.add_argument("run_dir", type=run_path)
    p.add_argument("--json", action="store_true", help="print the JSON contract")
    p.add_argument("--model", type=existing_file, help="spec the run must have been fit to")
    p.add_argument("--data", type=existing_file, help="data the run must have been fit to")
    p.set_defaults(handler=_cmd_summarize)

    p = commands.add_parser(
        "demo", help="run the main job on the bundled data",
        description="Fit, posterior predictive checks and report on the bundled ALS study. "
        "Exit status: 0 ok; 1 invalid bundled files; 2 usage error; 3 the fit's convergence "
        "checks failed (the report is still written).",
    )
    p.add_argument(
        "--root", type=Path, default=Path("."),
        help="lanternpk checkout holding data/ and models/ (default: current directory)",
    )
    p.add_argument("--out", type=output_path, default=Path("reports/demo"),
                   help="where to write the demo run and summary (default: reports/demo)")
    p.set_defaults(handler=_cmd_demo)

    from lanternpk.compare import add_compare_parser
    from lanternpk.ppc import add_ppc_parser
    from lanternpk.report import add_report_parser
    from lanternpk.sbc import add_sbc_parser

    add_ppc_parser(commands)
    add_report_parser(commands)
    add_sbc_parser(commands)
    add_compare_parser(commands)
    return parser


#: Commands whose JAX programs JAX's persistent compilation cache keeps (compile_cache.py).
#: Not sbc: each of its fits has its own simulated data, compiled into its own program.
_COMPILING_COMMANDS = frozenset({"fit", "demo", "ppc", "compare"})
#: Characters an error message may lay itself out with; others from a user's file are escaped.
_LAYOUT = "\n"


#: ArviZ 0.2x announces its 1.0 refactor on import once a day (a FutureWarning whose text
#: starts with a line break); a notice to developers that would only puzzle a user reading
#: ``lanternpk`` output.
ARVIZ_REFACTOR_NOTICE = r"(?s)\s*ArviZ is undergoing a major refactor"


def _escape_unencodable_output() -> None:
    """Print what stdout's encoding cannot hold (a label with 'é' on an ASCII terminal) as
    escapes, as Python's stderr already does, instead of failing with UnicodeEncodeError."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="backslashreplace")
        except (ValueError, OSError):  # a closed or unusual stream: leave it as it is
            pass


class _EscapingStdout:
    """stdout whose text has control characters as escapes, line breaks kept.

    What a command prints holds the user's paths and labels (``wrote RUN_DIR``); a directory
    name with an escape sequence would otherwise clear or rewrite the terminal's screen.
    """

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text, keep=_LAYOUT))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _escaping_stdout() -> Iterator[None]:
    """Route ``print`` through :class:`_EscapingStdout` for one command."""
    stream = sys.stdout
    sys.stdout = _EscapingStdout(stream)
    try:
        yield
    finally:
        sys.stdout = stream


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run the command line; return the exit status.

    ``exiting``: the process exits right after (the ``lanternpk`` executable,
    :func:`console_main`), so SIGINT and SIGTERM are ignored once the command has returned
    (:mod:`lanternpk.interrupt`).
    """
    warnings.filterwarnings("ignore", message=ARVIZ_REFACTOR_NOTICE, category=FutureWarning)
    _escape_unencodable_output()
    with _escaping_stdout():
        return _run(argv, exiting=exiting)


def console_main() -> None:
    """The ``lanternpk`` executable: run the command line and exit with its status."""
    sys.exit(main(exiting=True))


def _run(argv: Sequence[str] | None, *, exiting: bool = False) -> int:
    command = ""  # until the command line is read
    try:
        # from the start: a Ctrl-C while the parser's modules or JAX load (~2 s) was a
        # KeyboardInterrupt traceback, or was lost in a JAX callback and the command ran on
        with handling_interrupts(then_ignore=exiting):
            args = build_parser().parse_args(argv)
            command = args.command
            args.command_line = ["lanternpk", *(sys.argv[1:] if argv is None else argv)]
            if command in ("fit", "demo"):
                from lanternpk.inference import configure_jax_devices

                configure_jax_devices(max(getattr(args, "chains", 4), os.cpu_count() or 1))
            if command in _COMPILING_COMMANDS:
                from lanternpk.compile_cache import enable_compile_cache

                enable_compile_cache()
            handler: Handler = args.handler
            interrupt.check()  # a Ctrl-C lost while JAX loaded stops here, before any work
            return handler(args)
    except DataError as err:
        for line in format_problems(err.problems):
            print(f"error: {printable(line, keep=_LAYOUT)}", file=sys.stderr)
        notice(command, f"{len(err.problems)} problem(s) found")
        return err.exit_code
    except UserError as err:
        notice(command, f"error: {err}")
        return err.exit_code
    except OSError as err:  # a file or directory that cannot be read or written
        where = f": {err.filename}" if err.filename else ""
        notice(command, f"error: {err.strerror or err}{where}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        notice(command, "interrupted")
        return EXIT_USAGE


if __name__ == "__main__":
    console_main()
