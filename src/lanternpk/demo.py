"""`lanternpk demo`: the README's main job on the bundled data.

Validates and describes every bundled study (``data/*/observations.csv``), fits the default
model to the ALS-like study with default sampler settings into ``reports/demo/run``, runs the
posterior predictive checks (``reports/demo/run/ppc/``), renders the report
(``reports/demo/index.html``, ``summary.md``, ``summary.json``) and prints the one-screen
summary, the predictive check table and the path of the report. The report also shows the
simulation-based calibration of the default spec recorded in ``bench/results/sbc/`` (see
``bench/sbc.md``) when the checkout has it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lanternpk.data.load import load_calibration, load_observations
from lanternpk.data.validate import describe
from lanternpk.errors import UsageError
from lanternpk.fit import FitResult, fit, format_summary
from lanternpk.settings import SamplerSettings

DEMO_STUDY = "als_mouse"
DEMO_SPEC = "models/muse_vs_msc.toml"
#: The recorded SBC campaign of DEMO_SPEC (bench/sbc.md), shown in the demo report.
DEMO_SBC = "bench/results/sbc"


@dataclass(frozen=True)
class DemoFiles:
    """Where a checkout keeps the demo's study (the ALS-like one), its truth and the spec
    it is fit with; the benchmarks in ``bench/`` use the same files."""

    observations: Path
    calibration: Path
    truth: Path
    spec: Path


def demo_files(root: Path) -> DemoFiles:
    """The demo's files in the checkout at ``root``."""
    study = root / "data" / DEMO_STUDY
    return DemoFiles(observations=study / "observations.csv",
                     calibration=study / "calibration.csv",
                     truth=root / "data" / "truths" / f"{DEMO_STUDY}.toml",
                     spec=root / DEMO_SPEC)


def bundled_studies(root: Path) -> list[Path]:
    """Directories under ``root/data`` that hold a bundled study."""
    studies = sorted(p.parent for p in (root / "data").glob("*/observations.csv"))
    if not studies:
        raise UsageError(
            f"no bundled studies under {root / 'data'}; run from a lanternpk checkout "
            "or pass --root"
        )
    return studies


def check_demo_run(run_dir: Path) -> None:
    """Refuse to replace a run in ``OUT/run`` that ``lanternpk demo`` did not write.

    ``demo`` always refits, replacing the run it wrote the last time; a run the user fit
    (``lanternpk fit --out OUT/run``) is theirs. Which command wrote a run is read from its
    ``provenance.json``. An absent, empty or non-run directory is for ``fit`` to judge.

    Raises
    ------
    UsageError
        ``run_dir`` holds a run whose recorded command is not ``lanternpk demo``.
    """
    if not (run_dir / "posterior.nc").is_file():
        return
    try:
        record = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
        command = record.get("command") if isinstance(record, dict) else None
    except (OSError, UnicodeDecodeError, ValueError):
        command = None
    if not (isinstance(command, list) and command[1:2] == ["demo"]):
        by = (f"`{' '.join(map(str, command[:2]))}`" if isinstance(command, list) and command
              else "an unknown command")
        raise UsageError(f"refusing to replace {run_dir}: it holds a run written by {by}, not "
                         "by `lanternpk demo`; choose another --out")


def run_demo(*, root: Path, out: Path, settings: SamplerSettings | None = None,
             ppc_draws: int | None = None) -> FitResult:
    """Validate the bundled studies, fit the ALS-like one, check it and write its report.

    Parameters
    ----------
    root : Path
        A lanternpk checkout holding ``data/`` and ``models/``.
    out : Path
        Report directory; the run is written to ``out/run``.
    settings : SamplerSettings, optional
        Sampler settings (default: the defaults of ``lanternpk fit``).
    ppc_draws : int, optional
        Posterior draws simulated by the predictive checks (default: all).

    Returns
    -------
    FitResult
        The fit; its ``summary["diagnostics"]["passed"]`` decides the exit status.
    """
    from lanternpk.ppc import format_report, run_ppc
    from lanternpk.report import load_run_report, load_sbc, render_report
    from lanternpk.report.render import REPORT_RUN_DIR, check_report_directory

    check_report_directory(out)  # before any work: the fit checks out/run itself
    check_demo_run(out / REPORT_RUN_DIR)
    for study in bundled_studies(root):
        observations = load_observations(study / "observations.csv")
        calibration_file = study / "calibration.csv"
        calibration = load_calibration(calibration_file) if calibration_file.exists() else None
        print(describe(observations, calibration, source=str(study / "observations.csv"),
                       calibration_source=str(calibration_file)))
        print()
    files = demo_files(root)
    print(f"fitting {DEMO_SPEC} to {files.observations} …", flush=True)
    result = fit(files.observations, files.spec, out / REPORT_RUN_DIR,
                 calibration_path=files.calibration,
                 settings=settings or SamplerSettings(),
                 command=["lanternpk", "demo", "--root", str(root), "--out", str(out)],
                 overwrite=True)
    print(format_summary(result.summary))
    print("\nposterior predictive checks …", flush=True)
    print(format_report(run_ppc(result.run_dir, draws=ppc_draws)))
    sbc_dir = root / DEMO_SBC
    sbc = load_sbc(sbc_dir) if (sbc_dir / "sbc.json").is_file() else None
    render_report([load_run_report(result.run_dir)], out=out, sbc=sbc)
    print(f"\nrun: {result.run_dir}\nreport: {out / 'index.html'}")
    return result
