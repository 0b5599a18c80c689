"""Validation of observations and standard curves against the data contract, and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lanternpk.cli import main
from lanternpk.data import schema
from lanternpk.data.load import read_table
from lanternpk.data.validate import describe, validate_calibration, validate_observations
from lanternpk.errors import Problem
from lanternpk.model import prepare_data
from lanternpk.spec import load_spec

FIXTURES = Path(__file__).parents[1] / "fixtures" / "observations"
VALID = FIXTURES / "valid.csv"
CALIBRATION = FIXTURES / "calibration.csv"

# Rows of valid.csv used below (spreadsheet numbering, header = row 1):
#   2, 3   M1 at 1 h, whole_body and lung, in_vivo, image S1-M1-1h
#   6, 7   M1 at 72 h, whole_body and lung, in_vivo
#   8, 9   M1 at 72 h, lung and spinal_cord, ex_vivo (sacrifice), image S1-M1-72h-ex
#   10     M2 at 1 h, whole_body, in_vivo, image S1-M2-1h


@pytest.fixture
def raw() -> pd.DataFrame:
    return read_table(VALID)


def problems_of(raw: pd.DataFrame, validate=validate_observations) -> list[Problem]:
    frame, problems = validate(raw, "obs.csv")
    assert frame is None
    assert problems
    assert all(p.file == "obs.csv" for p in problems)
    return problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


# --- valid data and the canonical form ----------------------------------------------------


def test_valid_observations_become_canonical(raw):
    before = raw.copy()
    frame, problems = validate_observations(raw, str(VALID))
    assert problems == []
    assert list(frame.columns) == [*schema.OBSERVATION_COLUMNS, "species", "notes"]
    expected = {**schema.OBSERVATION_COLUMNS, "species": schema.TEXT, "notes": schema.TEXT}
    assert {c: str(t) for c, t in frame.dtypes.items()} == expected
    assert frame.index.name == schema.INDEX_NAME
    assert list(frame.index) == list(range(2, 2 + 32))
    assert frame.at[2, "flux"] == 4e6
    assert frame.at[8, "notes"] == "organ imaged within 10 min"  # unknown column kept
    pd.testing.assert_frame_equal(raw, before)  # the input is not modified


def test_column_order_is_canonical_whatever_the_file_order(raw):
    order = [*raw.columns[::-1], "background", "disease"]
    raw = raw.assign(background="100", disease="")[order]
    frame, problems = validate_observations(raw, "obs.csv")
    assert problems == []
    assert list(frame.columns) == [*schema.OBSERVATION_COLUMNS, "species", "disease",
                                   "background", "notes"]
    assert frame["background"].dtype == np.float64
    assert frame["disease"].isna().all()  # empty optional text is missing, not ""


def test_control_characters_in_free_text_are_named(raw):
    """species and disease are printed in summaries and reports; a terminal escape there was
    accepted while the same text in a label, a spec or a truth file is refused. Other extra
    columns (notes) are kept as given."""
    raw = raw.assign(disease="ALS", notes="line one\nline two")
    raw.loc[3, "species"] = "mouse\x1b[2J"
    frame, problems = validate_observations(raw, "obs.csv")
    assert frame is None
    assert [(p.row, p.column, p.value) for p in problems] == [(3, "species", "mouse\x1b[2J")]
    assert "control character" in problems[0].message and "free text" in problems[0].message


def test_frame_without_row_index_is_numbered_as_a_spreadsheet():
    plain = pd.read_csv(VALID)  # typed columns, RangeIndex
    frame, problems = validate_observations(plain, "obs.csv")
    assert problems == []
    assert frame.index.name == "row"
    assert frame.index[0] == schema.FIRST_DATA_ROW
    assert frame["notes"].dtype == schema.TEXT


# --- columns ------------------------------------------------------------------------------


def test_misspelt_column_gets_a_hint(raw):
    problem = only(problems_of(raw.rename(columns={"time_h": "time_hr"})))
    assert problem.column == "time_h"
    assert problem.row == 1
    assert problem.message == "required column is missing; did you mean 'time_hr'?"


@pytest.mark.parametrize("variant", ["Flux", " flux", "FLUX "])
def test_case_or_space_variant_of_a_column_is_hinted(raw, variant):
    problem = only(problems_of(raw.rename(columns={"flux": variant})))
    assert problem.column == "flux"
    assert f"did you mean {variant!r}?" in problem.message
    assert "case-sensitive" in problem.message


def test_missing_column_without_a_lookalike_lists_the_columns(raw):
    problem = only(problems_of(raw.drop(columns="image")))
    assert problem.column == "image"
    assert problem.message.startswith("required column is missing; the file has columns 'study'")


def test_repeated_column_name_in_a_frame():
    raw = pd.DataFrame([["a", "b"]], columns=["study", "study"])
    problems = problems_of(raw)
    assert any(p.column == "study" and "repeated" in p.message for p in problems)


# --- one cell at a time ---------------------------------------------------------------------


def test_non_numeric_text_in_a_number_column(raw):
    raw.loc[3, "flux"] = "high"
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (3, "flux", "high")
    assert problem.message == "not a number; expected a finite number ≥ 0 (photons/s)"
    assert str(problem) == ("obs.csv, row 3, column 'flux', value 'high': "
                            "not a number; expected a finite number ≥ 0 (photons/s)")


@pytest.mark.parametrize(("text", "odd"), [("５", "'５', U+FF15"), ("1٥0", "'٥', U+0665"),
                                          ("−5", "'−', U+2212")])
def test_numbers_not_written_in_ascii_are_not_a_number(raw, text, odd):
    """Python's float() reads fullwidth and Arabic-Indic digits: '５' was taken as 5. A
    typographic minus (pasted from a word processor) is named, not the digits."""
    raw.loc[3, "flux"] = text
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (3, "flux", text)
    assert problem.message.startswith(f"not a number ({odd}, is not ASCII; write numbers "
                                      "with 0-9, '.', '-', 'e')")


def test_decimal_comma_is_explained(raw):
    raw.loc[3, "flux"] = "1,5"
    problem = only(problems_of(raw))
    assert "use '.' for decimals" in problem.message


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("flux", "nan", "NaN is not allowed"),
        ("lod", "NaN", "NaN is not allowed"),
        ("time_h", "inf", "infinite value"),
        ("dose_cells", "-inf", "infinite value"),
        ("flux", "", "empty cell"),
        ("time_h", "  ", "empty cell"),
    ],
)
def test_nan_inf_or_empty_in_a_required_number_column(raw, column, value, reason):
    raw.loc[5, column] = value
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (5, column, value)
    assert problem.message.startswith(f"{reason}; expected a finite number")


def test_negative_flux(raw):
    raw.loc[4, "flux"] = "-12.5"
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (4, "flux", "-12.5")
    assert problem.message == "negative value; expected a finite number ≥ 0 (photons/s)"


@pytest.mark.parametrize(("value", "reason"), [("0", "zero is not allowed"),
                                               ("-100", "negative value")])
def test_lod_must_be_positive(raw, value, reason):
    raw.loc[4, "lod"] = value
    problem = only(problems_of(raw))
    assert problem.message == f"{reason}; expected a finite number > 0 (photons/s)"


def test_negative_time(raw):
    raw.loc[4, "time_h"] = "-1"
    problem = only(problems_of(raw))
    assert (problem.row, problem.column) == (4, "time_h")
    assert problem.message == "negative value; expected a finite number ≥ 0 (hours since injection)"


@pytest.mark.parametrize(("value", "reason"), [("0", "zero is not allowed"),
                                               ("-1e6", "negative value")])
def test_dose_must_be_positive(raw, value, reason):
    raw.loc[4, "dose_cells"] = value
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (4, "dose_cells", value)
    assert problem.message == f"{reason}; expected a finite number > 0 (cells injected)"


def test_unknown_modality_with_hint(raw):
    raw.loc[2, "modality"] = "in vivo"
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (2, "modality", "in vivo")
    assert problem.message == ("unknown modality; expected one of 'in_vivo', 'ex_vivo' "
                               "(did you mean 'in_vivo'?)")


@pytest.mark.parametrize("column", ["study", "animal", "cell_type", "region", "modality", "image"])
def test_empty_text_in_a_required_column(raw, column):
    raw.loc[6, column] = ""
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (6, column, "")
    assert problem.message.startswith("empty cell; expected ")


def test_spaces_around_a_label_are_reported_not_stripped(raw):
    raw.loc[6, "region"] = "lung "
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (6, "region", "lung ")
    assert problem.message == ("leading or trailing spaces; labels are compared exactly, "
                               "so write 'lung'")


def test_optional_background_may_be_empty_but_not_negative(raw):
    raw["background"] = ""
    frame, problems = validate_observations(raw, "obs.csv")
    assert problems == []
    assert frame["background"].isna().all()
    raw["background"] = "150"
    raw.loc[3, "background"] = "-1"
    problem = only(problems_of(raw))
    assert (problem.row, problem.column) == (3, "background")


def test_a_zero_background_is_refused(raw):
    """A background of 0 passed: once a draw's cells underflowed to 0 light (loss rate ×
    time ≳ 745) the log density was −inf with non-finite gradients. A measured ROI always
    has a background; 0 means it was subtracted, which the flux contract does not allow."""
    raw["background"] = "150"
    raw.loc[4, "background"] = "0"
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (4, "background", "0")
    assert problem.message.startswith("zero is not allowed; expected a finite number > 0 "
                                      "(photons/s, the ROI's mean background as measured, "
                                      "before any subtraction")


def test_partly_filled_background_names_the_empty_rows(raw):
    raw["background"] = "150"
    raw.loc[[2, 3, 4, 5, 6, 7, 8], "background"] = ""
    problem = only(problems_of(raw))
    assert (problem.row, problem.column) == (None, "background")
    assert problem.message.startswith(
        f"empty or NaN on 7 of {len(raw)} rows (rows 2, 3, 4, 5, 6 and 2 more); give a "
        "background on every row or on none")


def test_a_nan_background_counts_as_empty(raw):
    """One 'nan' among filled backgrounds is an error (the model would drop the column)."""
    raw["background"] = "150"
    raw.loc[3, "background"] = "nan"
    problem = only(problems_of(raw))
    assert problem.message.startswith(f"empty or NaN on 1 of {len(raw)} rows (rows 3)")
    raw["background"] = "NaN"  # NaN on every row: no background given, estimated
    frame, problems = validate_observations(raw, "obs.csv")
    assert problems == [] and frame["background"].isna().all()


# --- across rows ----------------------------------------------------------------------------


def test_duplicate_measurement_names_both_rows(raw):
    raw.loc[3, "region"] = "whole_body"  # row 2 is M1, 1 h, whole_body, in_vivo
    raw.loc[3, "time_h"] = "1.0"  # the same time, written differently
    problem = only(problems_of(raw))
    assert problem.row == 3
    assert problem.message.startswith(
        "duplicate measurement: same study, animal, time_h, region, modality, image as row 2")


def test_repeat_imaging_of_one_animal_at_one_time_is_not_a_duplicate(raw):
    """A second image of M1's whole body at 1 h (SCIENCE.md: repeat imaging, 10–30% CV):
    one row per image, each image with its own gain, in one imaging session."""
    raw.loc[3, ["region", "image"]] = ["whole_body", "S1-M1-1h-repeat"]
    frame, problems = validate_observations(raw, "obs.csv")
    assert problems == []
    spec = load_spec(Path(__file__).parents[2] / "models" / "muse_vs_msc.toml")
    data = prepare_data(spec, frame)
    assert data.row_session[0] == data.row_session[1]  # one session: same animal, same time
    assert data.row_image[0] != data.row_image[1]


def test_cell_type_change_within_an_animal(raw):
    raw.loc[5, "cell_type"] = "msc"
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (5, "cell_type", "msc")
    assert problem.message == ("animal 'M1' of study 'S1' has cell_type 'msc' here but 'muse' "
                               "in row 2; an animal has one cell_type and one dose_cells")


def test_dose_change_within_an_animal(raw):
    raw.loc[5, "dose_cells"] = "5e5"
    raw.loc[6, "dose_cells"] = "1e6"  # the same dose, written differently: fine
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (5, "dose_cells", "5e5")
    assert "has dose_cells '5e5' here but '1000000' in row 2" in problem.message


def test_image_shared_by_two_animals(raw):
    raw.loc[10, "image"] = "S1-M1-1h"
    problem = only(problems_of(raw))
    assert (problem.row, problem.column, problem.value) == (10, "animal", "M2")
    assert problem.message.startswith(
        "image 'S1-M1-1h' of study 'S1' has animal 'M2' here but 'M1' in row 2; ")
    assert "image identifiers are unique within a study" in problem.message


def test_in_vivo_after_sacrifice(raw):
    raw.loc[[8, 9], "time_h"] = "48"  # M1 sacrificed at 48 h, but imaged in vivo at 72 h
    problems = problems_of(raw)
    assert [(p.row, p.column, p.value) for p in problems] == [(6, "time_h", "72"),
                                                              (7, "time_h", "72")]
    assert problems[0].message == (
        "animal 'M1' of study 'S1' is imaged in_vivo at 72 h, after its ex_vivo (sacrifice) "
        "measurement at 48 h in row 8; in vivo images must be taken at or before sacrifice")


def test_two_sacrifice_times(raw):
    raw.loc[9, "time_h"] = "96"
    messages = [p.message for p in problems_of(raw)]
    assert any("sacrificed once" in m and "time_h '96' here but '72' in row 8" in m
               for m in messages)


def test_every_problem_is_reported_in_row_order(raw):
    raw["flux"] = "x"
    raw["lod"] = "-1"
    raw = raw.drop(columns="image")
    problems = problems_of(raw)
    assert len(problems) == 1 + 2 * 32
    assert problems[0].column == "image"
    rows = [p.row for p in problems[1:]]
    assert rows == sorted(rows)


# --- standard curve -------------------------------------------------------------------------


def test_valid_calibration_is_canonical():
    frame, problems = validate_calibration(read_table(CALIBRATION), "cal.csv")
    assert problems == []
    assert list(frame.columns) == ["cells", "flux", "setting", "region"]
    assert [str(t) for t in frame.dtypes] == ["float64", "float64", "string", "string"]
    assert list(frame["setting"]) == ["in_vitro"] * 4 + ["ex_vivo"] * 2
    assert frame["region"].isna().sum() == 4
    assert frame.at[6, "region"] == "lung"


def test_calibration_setting_defaults_to_in_vitro():
    raw = pd.DataFrame({"cells": ["10", "100"], "flux": ["300", "3000"], "lab": ["a", "b"]})
    frame, problems = validate_calibration(raw, "cal.csv")
    assert problems == []
    assert list(frame["setting"]) == ["in_vitro", "in_vitro"]
    assert list(frame.columns) == ["cells", "flux", "setting", "region", "lab"]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("cells", "0", "zero is not allowed; expected a finite number > 0 (cells; the model "
                       "takes its log)"),
        ("cells", "ten", "not a number; expected a finite number > 0 (cells; the model takes "
                         "its log)"),
        ("flux", "0", "zero is not allowed; expected a finite number > 0 (photons/s; the model "
                      "takes its log)"),
        ("flux", "-3", "negative value; expected a finite number > 0 (photons/s; the model "
                       "takes its log)"),
        ("flux", "inf", "infinite value; expected a finite number > 0 (photons/s; the model "
                        "takes its log)"),
        ("setting", "in vitro", "unknown setting; expected one of 'in_vitro', 'ex_vivo' "
                                "(did you mean 'in_vitro'?)"),
    ],
)
def test_bad_calibration_cell(column, value, message):
    raw = read_table(CALIBRATION)
    raw.loc[3, column] = value
    problem = only(problems_of(raw, validate_calibration))
    assert (problem.row, problem.column, problem.value) == (3, column, value)
    assert problem.message == message


def test_calibration_region_goes_with_ex_vivo():
    raw = read_table(CALIBRATION)
    raw.loc[6, "region"] = ""
    raw.loc[2, "region"] = "lung"
    problems = problems_of(raw, validate_calibration)
    assert [(p.row, p.column) for p in problems] == [(2, "region"), (6, "region")]
    assert problems[0].message.startswith("region given for an in_vitro row")
    assert problems[1].message.startswith("empty region for an ex_vivo (spike-in) row")


def test_calibration_missing_column_hint():
    raw = read_table(CALIBRATION).rename(columns={"cells": "cell"})
    problem = only(problems_of(raw, validate_calibration))
    assert problem.message == "required column is missing; did you mean 'cell'?"


# --- describe ---------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


def test_describe_summarises_and_is_deterministic(raw):
    obs, _ = validate_observations(raw, "obs.csv")
    cal, _ = validate_calibration(read_table(CALIBRATION), "cal.csv")
    text = describe(obs, cal, source="obs.csv", calibration_source="cal.csv")
    lines = _lines(text)
    for expected in [
        "observations obs.csv",
        "rows 32",
        "studies S1",
        "animals S1: msc 2, muse 2",
        "doses (cells) S1: msc 1e+06, muse 1e+06",
        "time points (h) 1, 24, 72",
        "regions lung, spinal_cord, whole_body",
        "modalities ex_vivo, in_vivo",
        "flux < lod 6 of 32 rows (18.8%)",
        "lung, in_vivo 4 of 12 rows (33.3%)",
        "standard curve cal.csv",
        "in_vitro 4 rows, median flux/cells 31 photons/s per cell",
        "ex_vivo, lung 2 rows, median flux/cells 2.5 photons/s per cell",
    ]:
        assert expected in lines
    width = text.index("obs.csv")  # every value starts in the same column
    assert all(line[width - 1] == " " != line[width] for line in text.splitlines())
    shuffled = obs.sample(frac=1, random_state=0)
    assert describe(shuffled, cal, source="obs.csv", calibration_source="cal.csv") == text


# --- through the command line -----------------------------------------------------------------


def test_cli_valid(capsys):
    rc = main(["validate", str(VALID), "--calibration", str(CALIBRATION)])
    out, err = capsys.readouterr()
    assert rc == 0
    assert err == ""
    assert "rows" in out and "standard curve" in out


def test_cli_invalid_lists_every_problem(tmp_path, capsys, raw):
    raw.loc[3, "flux"] = "-1"
    raw.loc[5, "modality"] = "exvivo"
    path = tmp_path / "obs.csv"
    raw.to_csv(path, index=False)
    bad_cal = tmp_path / "cal.csv"
    bad_cal.write_text("cells,flux\n0,10\n")
    rc = main(["validate", str(path), "--calibration", str(bad_cal)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out == ""
    assert f"{path}, row 3, column 'flux', value '-1': negative value" in err
    assert f"{path}, row 5, column 'modality', value 'exvivo': unknown modality" in err
    assert f"{bad_cal}, row 2, column 'cells', value '0'" in err
    assert "3 problem(s) found" in err
    assert "Traceback" not in err


def test_cli_file_that_is_not_a_table(tmp_path, capsys):
    path = tmp_path / "obs.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "PNG image" in err
    assert "Traceback" not in err


def test_cli_names_utf16_and_accepts_utf8_with_a_byte_order_mark(tmp_path, capsys):
    text = VALID.read_text(encoding="utf-8")
    path = tmp_path / "obs.csv"
    path.write_bytes(text.encode("utf-16"))  # Excel's "Unicode text"
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.splitlines() == [
        f"error: {path}: this is UTF-16 encoded text, not UTF-8; save the file as UTF-8 "
        "('CSV UTF-8' in Excel)",
        "lanternpk validate: 1 problem(s) found",
    ]
    path.write_bytes(text.encode("utf-8-sig"))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().err == ""


def test_cli_missing_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(tmp_path / "nope.csv")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no such file" in err
    assert "Traceback" not in err


# --- against a model spec (the checks fit makes before compiling) -----------------------------

ROOT = Path(__file__).parents[2]
ALS = ROOT / "data" / "als_mouse"
SPEC = ROOT / "models" / "muse_vs_msc.toml"


def test_validate_with_model_reports_that_the_data_fit_the_spec(capsys):
    rc = main(["validate", str(ALS / "observations.csv"), "--calibration",
               str(ALS / "calibration.csv"), "--model", str(SPEC)])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    assert (f"model spec              {SPEC}: muse_vs_msc, fits these data (16 animals, "
            "96 images, 80 imaging sessions)") in out.splitlines()


def test_validate_with_model_takes_a_standard_curve_without_optional_columns(tmp_path, capsys):
    cal = pd.read_csv(ALS / "calibration.csv", dtype=str)[["cells", "flux"]]
    cal.to_csv(tmp_path / "cal.csv", index=False)
    rc = main(["validate", str(ALS / "observations.csv"), "--calibration",
               str(tmp_path / "cal.csv"), "--model", str(SPEC)])
    assert rc == 0 and capsys.readouterr().err == ""


def test_validate_with_model_names_rows_the_spec_cannot_model(tmp_path, capsys):
    """A misspelt region and cell type in the data and a spike-in region the spec lacks,
    all reported together with file, row, column, value and a hint; nothing is written."""
    obs = pd.read_csv(ALS / "observations.csv", dtype=str, keep_default_na=False)
    obs.loc[0, "region"] = "spinal_cod"
    animal = obs["animal"][obs["cell_type"] == "muse"].iloc[0]
    renamed = obs.index[obs["animal"] == animal]
    obs.loc[renamed, "cell_type"] = "Muse"
    data = tmp_path / "obs.csv"
    obs.to_csv(data, index=False)
    cal = pd.read_csv(ALS / "calibration.csv", dtype=str, keep_default_na=False)
    cal.loc[1, ["setting", "region"]] = ["ex_vivo", "kidney"]
    cal.loc[2, ["setting", "region"]] = ["ex_vivo", "lungs"]
    cal_path = tmp_path / "cal.csv"
    cal.to_csv(cal_path, index=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["validate", str(data), "--calibration", str(cal_path), "--model", str(SPEC)])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert (f"{data}, row 2, column 'region', value 'spinal_cod': region not in spec "
            "muse_vs_msc (expected one of ['damaged_organ', 'femur', 'lung', 'spinal_cord', "
            "'whole_body']) (did you mean 'spinal_cord'?)") in err
    assert (f"{data}, row {renamed[0] + 2}, column 'cell_type', value 'Muse': cell type not "
            "in spec muse_vs_msc (expected one of ['muse', 'msc']) (did you mean 'muse'?)") in err
    assert (f"{cal_path}, row 3, column 'region', value 'kidney': ex vivo spike-in region is "
            "not an organ of the spec") in err and "'kidney': ex vivo spike-in region is not " \
        "an organ of the spec (expected one of ['lung', 'femur', 'damaged_organ', " \
        "'spinal_cord'])\n" in err
    assert (f"{cal_path}, row 4, column 'region', value 'lungs': ex vivo spike-in region is "
            "not an organ of the spec (expected one of ['lung', 'femur', 'damaged_organ', "
            "'spinal_cord']) (did you mean 'lung'?)") in err
    assert f"{len(renamed) + 3} problem(s) found" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_spike_in_of_an_organ_without_an_ex_vivo_prior_is_named(tmp_path, capsys):
    """A spike-in measures photons per cell × ex vivo transmission; for an organ whose spec
    gives no ex vivo transmission the model used a made-up N(0, 1) prior on its log."""
    lines = SPEC.read_text().splitlines(keepends=True)
    section = lines.index("[measurement.transmission.ex_vivo]\n")
    cut = next(i for i, line in enumerate(lines)
               if i > section and line.startswith("damaged_organ = "))
    spec = tmp_path / "spec.toml"
    spec.write_text("".join(lines[:cut] + lines[cut + 1:]))
    cal = pd.read_csv(ALS / "calibration.csv", dtype=str, keep_default_na=False)
    cal.loc[1, ["setting", "region"]] = ["ex_vivo", "damaged_organ"]
    cal_path = tmp_path / "cal.csv"
    cal.to_csv(cal_path, index=False)
    rc = main(["validate", str(ALS / "observations.csv"), "--calibration", str(cal_path),
               "--model", str(spec)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert (f"{cal_path}, row 3, column 'region', value 'damaged_organ': the spec has no ex "
            "vivo transmission prior for this organ, which a spike-in measures (photons per "
            "cell × ex vivo transmission); add one under [measurement.transmission.ex_vivo] "
            "or leave the row out") in err
    assert "1 problem(s) found" in err


def test_validate_with_model_reports_a_bad_spec_with_bad_data(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.read_text().replace('blood = "fast"', 'blood = "quick"'))
    rc = main(["validate", str(VALID), "--model", str(spec)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{spec}, line 16, key 'model.blood', value 'quick'" in err
    assert "Traceback" not in err


def test_control_characters_in_labels_are_refused(raw):
    """A terminal escape or line break in a label could rewrite what `validate` prints."""
    raw.loc[3, "study"] = "S1\x1b[2J"
    raw.loc[4, "animal"] = "M1\nrows 999"
    problems = problems_of(raw)
    found = {(p.row, p.column) for p in problems if "control character" in p.message}
    assert found == {(3, "study"), (4, "animal")}
    assert "'S1\\x1b[2J'" in str(next(p for p in problems if p.row == 3))


def test_prepare_data_lists_every_problem_and_refuses_merged_animals(root):
    """Every row of an unknown cell type is named (it stopped at 50); and study/animal
    pairs that join to the same label would share one animal's random effects."""
    from lanternpk.data.load import load_observations
    from lanternpk.errors import DataError
    from lanternpk.model import prepare_data
    from lanternpk.spec import load_spec

    spec = load_spec(root / "models/muse_vs_msc.toml")
    obs = load_observations(root / "data/als_mouse/observations.csv")
    renamed = obs.assign(cell_type=obs["cell_type"].replace({"msc": "hsc"}))
    with pytest.raises(DataError) as err:
        prepare_data(spec, renamed)
    assert len(err.value.problems) == int((obs["cell_type"] == "msc").sum()) > 50
    muse01, muse02 = (obs["animal"] == "muse01"), (obs["animal"] == "muse02")
    clash = obs.copy()
    clash.loc[muse01, "study"] = "als/muse01"
    clash.loc[muse01, "animal"] = "x"
    clash.loc[~muse01, "study"] = "als"
    clash.loc[muse02, "animal"] = "muse01/x"
    with pytest.raises(DataError) as err:
        prepare_data(spec, clash)
    rows = {p.row for p in err.value.problems if p.column == "animal"}
    assert rows == {obs.index[muse01][0], obs.index[muse02][0]}
    assert "join to 'als/muse01/x'" in err.value.problems[0].message
