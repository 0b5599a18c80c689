"""`lanternpk demo`: the README's main job on the bundled data.

Today it validates and summarises every bundled study (data/*/observations.csv with its
standard curve); fitting, checks and the report are added by later issues.
"""

from __future__ import annotations

from pathlib import Path

from lanternpk.data.load import load_calibration, load_observations
from lanternpk.data.validate import describe
from lanternpk.errors import UsageError


def bundled_studies(root: Path) -> list[Path]:
    """Directories under ``root/data`` that hold a bundled study."""
    studies = sorted(p.parent for p in (root / "data").glob("*/observations.csv"))
    if not studies:
        raise UsageError(
            f"no bundled studies under {root / 'data'}; run from a lanternpk checkout "
            "or pass --root"
        )
    return studies


def run_demo(*, root: Path) -> None:
    """Validate and describe each bundled study, printing the summaries."""
    for study in bundled_studies(root):
        observations = load_observations(study / "observations.csv")
        calibration_file = study / "calibration.csv"
        calibration = load_calibration(calibration_file) if calibration_file.exists() else None
        print(describe(observations, calibration, source=str(study / "observations.csv"),
                       calibration_source=str(calibration_file)))
        print()
