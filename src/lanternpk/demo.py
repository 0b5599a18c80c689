"""`lanternpk demo`: the README's main job on the bundled data.

Validates and describes every bundled study (``data/*/observations.csv``), then fits the
default model to the ALS-like study with default sampler settings, writes the run to
``reports/demo/run`` and its summary JSON to ``reports/demo/summary.json``, and prints the
one-screen summary. Posterior predictive checks and the HTML report join later issues.
"""

from __future__ import annotations

import json
from pathlib import Path

from lanternpk.data.load import load_calibration, load_observations
from lanternpk.data.validate import describe
from lanternpk.errors import UsageError
from lanternpk.fit import FitResult, fit, format_summary
from lanternpk.inference import SamplerSettings
from lanternpk.io import write_text_atomic

DEMO_STUDY = "als_mouse"
DEMO_SPEC = "models/muse_vs_msc.toml"


def bundled_studies(root: Path) -> list[Path]:
    """Directories under ``root/data`` that hold a bundled study."""
    studies = sorted(p.parent for p in (root / "data").glob("*/observations.csv"))
    if not studies:
        raise UsageError(
            f"no bundled studies under {root / 'data'}; run from a lanternpk checkout "
            "or pass --root"
        )
    return studies


def run_demo(*, root: Path, out: Path, settings: SamplerSettings | None = None) -> FitResult:
    """Validate the bundled studies, fit the ALS-like one, write and print its summary."""
    for study in bundled_studies(root):
        observations = load_observations(study / "observations.csv")
        calibration_file = study / "calibration.csv"
        calibration = load_calibration(calibration_file) if calibration_file.exists() else None
        print(describe(observations, calibration, source=str(study / "observations.csv"),
                       calibration_source=str(calibration_file)))
        print()
    study = root / "data" / DEMO_STUDY
    print(f"fitting {DEMO_SPEC} to {study / 'observations.csv'} …", flush=True)
    result = fit(study / "observations.csv", root / DEMO_SPEC, out / "run",
                 calibration_path=study / "calibration.csv",
                 settings=settings or SamplerSettings(),
                 command=["lanternpk", "demo", "--root", str(root), "--out", str(out)],
                 overwrite=True)
    write_text_atomic(out / "summary.json", json.dumps(result.summary, indent=1) + "\n")
    print(format_summary(result.summary))
    print(f"\nrun: {result.run_dir}\nsummary: {out / 'summary.json'}")
    return result
