"""`lanternpk compare` end to end on tiny runs whose data file has moved since the fit."""

from __future__ import annotations

import json
import shutil

import pytest

from lanternpk.cli import main
from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_INVALID, EXIT_OK, EXIT_USAGE

pytestmark = [pytest.mark.slow,
              # one CPU device when JAX was loaded by another test: numpyro runs the 2 chains
              # one after the other, and says so
              pytest.mark.filterwarnings("ignore:There are not enough devices:UserWarning")]


def test_compare_finds_moved_data_with_data_and_checks_it(fit_bundled, root, tmp_path,
                                                          capsys):
    """A run whose data file had moved could only be compared from the directory it was fit
    in; ppc had --data for that, compare had none."""
    data = tmp_path / "obs.csv"
    shutil.copy(root / "data/als_mouse/observations.csv", data)
    first, second = tmp_path / "first", tmp_path / "second"
    assert fit_bundled(first, draws=30, tune=30, data=data) in (EXIT_OK, EXIT_DIAGNOSTICS)
    shutil.copytree(first, second)  # another run of the same data
    moved = data.rename(tmp_path / "moved.csv")
    capsys.readouterr()
    assert main(["compare", str(first), str(second), "--no-refit"]) == EXIT_USAGE
    assert "or pass --data FILE" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("\n".join(moved.read_text().splitlines()[:-1]) + "\n")
    assert main(["compare", str(first), str(second), "--no-refit", "--data",
                 str(other)]) == EXIT_INVALID
    assert "does not match the run" in capsys.readouterr().err
    assert main(["compare", str(first), str(second), "--no-refit", "--data",
                 str(moved)]) == EXIT_OK
    records = json.loads((first / "compare.json").read_text())
    assert [r["n_rows"] for r in records] == [368, 368]
