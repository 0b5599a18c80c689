"""The simulator: exact kinetics against a stiff ODE reference, determinism, contract."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from lanternpk.cli import main
from lanternpk.data.simulate import _live_cells, load_truth, simulate_study
from lanternpk.errors import DataError
from lanternpk.solver.reference import rate_matrix, solve_bdf

TRUTHS = ["als_mouse", "heart_rabbit"]


@pytest.mark.parametrize("blood_efflux", [None, 2.16e4])  # fast blood; blood t½ ≈ 2 s
def test_simulator_matches_bdf_on_stiff_rates(root, blood_efflux):
    """Blood half-life of seconds to minutes, tissue half-lives of months, times to 1 year.

    Tolerance: 1e-6 relative (the issue's bar) plus 1e-11 of the dose absolute, which is
    10× the reference integrator's own atol=1e-12; below that the reference is noise.
    """
    truth = load_truth(root / "data/truths/als_mouse.toml")
    truth = truth.model_copy(update={"kinetics": truth.kinetics.model_copy(
        update={"blood_efflux_per_d": blood_efflux})})
    times_h = np.array([0.0, 0.01, 0.5, 1, 24, 72, 168, 672, 1344, 8760])
    animal = pd.Series({
        "release_per_d": 1.0,
        "first_pass_lung": 0.7, "first_pass_femur": 0.03, "first_pass_spinal_cord": 0.005,
        "loss_per_d_lung": 0.35, "loss_per_d_femur": 0.03, "loss_per_d_spinal_cord": 0.0058,
    })
    ours = _live_cells(truth, animal, times_h) / truth.study.dose_cells
    a, x0 = rate_matrix([0.7, 0.03, 0.005], 1.0, [0.35, 0.03, 0.0058], filter_index=0,
                        blood_efflux=blood_efflux)
    ref = solve_bdf(a, x0, times_h / 24.0, rtol=1e-10, atol=1e-12)[:, :3]
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-11)


@pytest.mark.parametrize("name", TRUTHS)
def test_same_seed_same_study(root, name):
    truth = load_truth(root / f"data/truths/{name}.toml")
    a = simulate_study(truth, seed=3)
    b = simulate_study(truth, seed=3)
    c = simulate_study(truth, seed=4)
    pd.testing.assert_frame_equal(a.observations, b.observations)
    assert not np.allclose(a.observations["flux"], c.observations["flux"])


def test_heart_truth_engrafts_published_fraction(root):
    """Yamada 2018: ~14.5% of IV Muse cells engrafted in the infarcted heart at 3 days."""
    truth = load_truth(root / "data/truths/heart_rabbit.toml")
    records = simulate_study(truth, seed=0).estimands
    (value,) = [r["value"] for r in records if r["name"] == "engrafted_fraction"
                and r["cell_type"] == "muse" and r["region"] == "damaged_organ"
                and r["time_d"] == 3]
    assert value == pytest.approx(0.145, abs=0.005)


@pytest.mark.parametrize("name", TRUTHS)
def test_bundled_data_is_what_the_truth_file_and_seed_give(root, name, tmp_path):
    """The bundled dataset regenerates exactly from its provenance sidecar."""
    provenance = json.loads((root / f"data/{name}/provenance.json").read_text())
    assert provenance["synthetic"] is True
    rc = main(["simulate", str(root / provenance["truth_file"]), "--seed",
               str(provenance["seed"]), "--out", str(tmp_path / name)])
    assert rc == 0
    for file in ("observations.csv", "calibration.csv"):
        assert (tmp_path / name / file).read_text() == (root / f"data/{name}/{file}").read_text()


def _edited_truth(root, tmp_path, *edits: tuple[str, str]):
    """The bundled ALS truth file with each ``(old, new)`` of ``edits`` replaced."""
    text = (root / "data/truths/als_mouse.toml").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "edited.toml"
    path.write_text(text)
    return path


def _truth_problems(root, tmp_path, old: str, new: str, *more: tuple[str, str]) -> list:
    """Problems of the bundled ALS truth file with ``old`` replaced by ``new`` (and ``more``)."""
    with pytest.raises(DataError) as err:
        load_truth(_edited_truth(root, tmp_path, (old, new), *more))
    return err.value.problems


def test_bad_truth_names_the_key(root, tmp_path):
    messages = [str(p) for p in _truth_problems(root, tmp_path, "image_gain_sd = 0.35",
                                                "image_gain_sdd = 0.35")]
    assert any("measurement.image_gain_sdd" in m and "did you mean 'image_gain_sd'" in m
               for m in messages), messages


def test_truth_numbers_must_be_numbers_not_strings(root, tmp_path):
    """Truth files are read as strictly as specs: a quoted number is an error, not coerced."""
    (problem,) = _truth_problems(root, tmp_path, "photons_per_cell = 800.0",
                                 'photons_per_cell = "800.0"')
    assert problem.key == "measurement.photons_per_cell" and problem.value == "800.0"


def test_truth_transmission_above_one_is_refused(root, tmp_path):
    """As in a spec: a transmission is a fraction of the emitted photons (it was accepted)."""
    (problem,) = _truth_problems(root, tmp_path, "transmission_in_vivo = { lung = 3.0e-3",
                                 "transmission_in_vivo = { lung = 3.0")
    assert problem.key == "measurement.transmission_in_vivo.lung" and problem.value == 3.0
    assert "less than or equal to 1" in problem.message


@pytest.mark.parametrize(("old", "new", "key", "message"), [
    ("in_vivo_times_h = [1, 24,", "in_vivo_times_h = [1, 1, 24,", "design.in_vivo_times_h",
     "repeated value(s) 1; each imaging time is listed once"),
    ('name = "als_mouse_synthetic"', 'name = ""', "study.name", "must not be empty"),
    ('name = "als_mouse_synthetic"', 'name = " als"', "study.name", "leading or trailing"),
    # each was written, and `lanternpk validate` then rejected the study
    ('name = "als_mouse_synthetic"', r'name = "a\u0007b"', "study.name", "control character"),
    ('species = "mouse"', r'species = "mo\u001buse"', "study.species", "control character"),
    ('cell_types = ["muse", "msc"]', 'cell_types = ["muse", "msc", "muse"]',
     "design.cell_types", "repeated value(s) 'muse'; each cell type is listed once"),
    ('in_vivo_regions = ["whole_body", "lung", "femur", "spinal_cord"]',
     'in_vivo_regions = ["lung", "lung"]', "design.in_vivo_regions",
     "repeated value(s) 'lung'; each region is listed once"),
    # a phantom fourth compartment, with duplicated estimands
    ('compartments = ["lung", "femur", "spinal_cord"]',
     'compartments = ["lung", "femur", "spinal_cord", "femur"]', "kinetics.compartments",
     "repeated value(s) 'femur'; each compartment is listed once"),
    # a half-life of infinity days: "Infinity" in truth.json, which is not JSON
    ("loss_per_d = { lung = 0.35,", "loss_per_d = { lung = 1e-320,",
     "kinetics.cell_types.muse.loss_per_d.lung", "must be at least 1e-06 per day"),
])
def test_truth_that_would_give_an_invalid_study_names_the_key(root, tmp_path, old, new, key,
                                                               message):
    (problem,) = _truth_problems(root, tmp_path, old, new)
    assert problem.key == key and message in problem.message, problem


_EX_VIVO = 'ex_vivo_regions = ["lung", "femur", "spinal_cord"]'
_IN_VIVO = 'in_vivo_regions = ["whole_body", "lung", "femur", "spinal_cord"]'


def _with_ex_vivo(region: str) -> list[tuple[str, str]]:
    """Edits giving an ex vivo ``region`` its transmission and background."""
    return [("transmission_ex_vivo = { lung", f"transmission_ex_vivo = {{ {region} = 0.3, lung"),
            ("background_ex_vivo = { lung", f"background_ex_vivo = {{ {region} = 1.0e3, lung")]


@pytest.mark.parametrize(("edits", "key", "value", "message"), [
    # was a KeyError traceback
    ([(_EX_VIVO, 'ex_vivo_regions = ["lung", "heart"]'), *_with_ex_vivo("heart")],
     "design.ex_vivo_regions", "heart", "is not a compartment"),
    # was simulated with the in vivo transmissions, and its truth with the ex vivo ones
    ([(_EX_VIVO, 'ex_vivo_regions = ["lung", "whole_body"]'), *_with_ex_vivo("whole_body")],
     "design.ex_vivo_regions", "whole_body", "is not a compartment"),
    # both were a KeyError traceback: a study without a single measurement
    ([(_EX_VIVO, "ex_vivo_regions = []"), (_IN_VIVO, "in_vivo_regions = []")],
     "design", None, "no measurements"),
    ([(_EX_VIVO, "ex_vivo_regions = []"),
      ("in_vivo_times_h = [1, 24, 72, 168, 336, 672, 1008, 1344]", "in_vivo_times_h = [2000]")],
     "design", None, "no measurements"),
])
def test_truth_cross_checks_name_the_key(root, tmp_path, edits, key, value, message):
    (problem,) = _truth_problems(root, tmp_path, *edits[0], *edits[1:])
    assert (problem.key, problem.value) == (key, value) and message in problem.message, problem
    assert problem.line is not None, problem


def test_close_imaging_times_get_their_own_images(root, tmp_path, capsys):
    """`{time_h:g}` made one image id of 1 h and 1.0000001 h; validate rejected the study."""
    truth = _edited_truth(root, tmp_path, (
        "in_vivo_times_h = [1, 24, 72, 168, 336, 672, 1008, 1344]",
        "in_vivo_times_h = [1, 1.0000001, 24]"))
    out = tmp_path / "study"
    assert main(["simulate", str(truth), "--seed", "1", "--out", str(out)]) == 0
    assert main(["validate", str(out / "observations.csv")]) == 0, capsys.readouterr().err
    images = set(pd.read_csv(out / "observations.csv")["image"])
    assert {"muse01_in_vivo_1h", "muse01_in_vivo_1.0000001h", "muse01_in_vivo_24h",
            "muse01_ex_vivo_24h"} <= images


def test_animal_ids_of_similar_cell_types_do_not_collide(root, tmp_path):
    """Cell types 'm' and 'm1' with over 100 animals each gave two animals 'm101'."""
    truth = load_truth(_edited_truth(
        root, tmp_path, ('cell_types = ["muse", "msc"]', 'cell_types = ["m", "m1"]'),
        ("[kinetics.cell_types.muse]", "[kinetics.cell_types.m]"),
        ("[kinetics.cell_types.msc]", "[kinetics.cell_types.m1]"),
        ("{ time_h = 24, animals = 2 }", "{ time_h = 24, animals = 95 }")))
    animals = simulate_study(truth, seed=1).animals
    assert animals["animal"].is_unique and "m001" in set(animals["animal"])


def test_a_first_pass_fraction_of_zero_stays_zero_without_a_warning(root, tmp_path):
    """MSCs that never reach the cord: a RuntimeWarning (divide by zero in log) was printed
    before the study, which was right."""
    truth = load_truth(_edited_truth(root, tmp_path, ("spinal_cord = 2.0e-5", "spinal_cord = 0.0")))
    animals = simulate_study(truth, seed=1).animals  # warnings are errors in the tests
    msc = animals[animals["cell_type"] == "msc"]
    assert len(msc) and (msc["first_pass_spinal_cord"] == 0.0).all()
    assert (animals.loc[animals["cell_type"] == "muse", "first_pass_spinal_cord"] > 0).all()


def test_simulated_numbers_that_are_not_finite_are_not_written(root, tmp_path, capsys):
    text = (root / "data/truths/als_mouse.toml").read_text()
    truth = tmp_path / "truth.toml"
    truth.write_text(text.replace("residual_sd = 0.3", "residual_sd = 1e10", 1))
    out = tmp_path / "study"
    assert main(["simulate", str(truth), "--seed", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert (f"{truth}: the simulated observations flux is not a finite number in ") in err
    assert "measurement.residual_sd" in err and "Traceback" not in err
    assert not out.exists()


def _files(directory) -> dict:
    """Every file below ``directory`` and its bytes."""
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_refused_resimulation_changes_nothing(root, tmp_path, capsys):
    """Files were moved in one by one: a directory in the way of calibration.csv left the
    study with seed 2's observations beside seed 1's truth and provenance."""
    truth, out = root / "data/truths/als_mouse.toml", tmp_path / "s6"
    assert main(["simulate", str(truth), "--seed", "1", "--out", str(out)]) == 0
    (out / "calibration.csv").unlink()
    (out / "calibration.csv" / "x").mkdir(parents=True)
    before = _files(out)
    capsys.readouterr()
    assert main(["simulate", str(truth), "--seed", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'calibration.csv'} is a directory" in err and "Traceback" not in err
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s6"]  # no staging left behind


def test_a_broken_symbolic_link_as_out_is_named(root, tmp_path, capsys):
    """Before: the study was simulated, then 'error: File exists: deadlink'."""
    link = tmp_path / "deadlink"
    link.symlink_to(tmp_path / "gone")
    rc = main(["simulate", str(root / "data/truths/als_mouse.toml"), "--seed", "1", "--out",
               str(link)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"refusing to write a study into {link}: it is a broken symbolic link" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deadlink"]


@pytest.mark.parametrize("target", ["calibration.csv", "provenance.json", ""])
def test_simulate_never_overwrites_its_truth_file(root, tmp_path, capsys, target):
    """A truth file copied into an earlier study was replaced by the simulated data."""
    text = (root / "data/truths/als_mouse.toml").read_text()
    out = tmp_path / "s8"
    assert main(["simulate", str(root / "data/truths/als_mouse.toml"), "--seed", "1",
                 "--out", str(out)]) == 0
    truth = out / target if target else tmp_path / "truth.toml"
    if target == "provenance.json":  # a hard link, still marked as a study
        (tmp_path / "truth.toml").write_text(text)
        truth.unlink()
        truth.hardlink_to(tmp_path / "truth.toml")
    else:
        truth.write_text(text)
    before = _files(tmp_path)
    capsys.readouterr()
    assert main(["simulate", str(truth), "--seed", "2", "--out",
                 str(out if target else truth)]) == 2
    err = capsys.readouterr().err
    assert f"it is the truth file {truth} being simulated" in err, err
    assert _files(tmp_path) == before


@pytest.mark.parametrize(("edits", "key", "message"), [
    ([("{ time_h = 24, animals = 2 }", "{ time_h = 24, animals = 100000000 }")],
     "design.sacrifice[0].animals", "less than or equal to 10000"),
    ([("animals = 2 }", "animals = 9000 }")],  # every group: 72,000 animals, 1.7M rows
     "design.sacrifice", "observation rows; at most 1,000,000"),
    ([("replicates = 3", "replicates = 100000000")],
     "calibration.replicates", "less than or equal to 1000"),
    ([("replicates = 3", "replicates = 1000\nex_vivo_regions = [\"lung\"]\nex_vivo_cells = ["
       + ", ".join(["1.0"] * 1000) + "]")],
     "calibration.replicates", "standard-curve rows; at most 1,000,000"),
])
def test_counts_that_would_exhaust_memory_are_refused(root, tmp_path, edits, key, message):
    """100 million animals per group had no bound: the process was killed (exit 137)."""
    (problem,) = _truth_problems(root, tmp_path, *edits[0], *edits[1:])
    assert problem.key == key and message in problem.message, problem
    assert problem.line is not None, problem


def test_overflow_gives_the_error_without_numpy_warnings(root, tmp_path, capsys):
    """A dose of 1e308 printed RuntimeWarnings (overflow, invalid value) before the error."""
    truth = _edited_truth(root, tmp_path, ("dose_cells = 5.0e4", "dose_cells = 1e308"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["simulate", str(truth), "--seed", "1", "--out",
                     str(tmp_path / "study")]) == 1
    err = capsys.readouterr().err
    assert "study.dose_cells" in err and "Warning" not in err
    assert not (tmp_path / "study").exists()
