"""Living Image ROI export import: quirks, the LOD rule, mapping validation, CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lanternpk.cli import main
from lanternpk.data.livingimage import import_livingimage
from lanternpk.data.load import load_observations
from lanternpk.data.schema import OBSERVATION_COLUMNS
from lanternpk.errors import DataError
from lanternpk.spec import load_spec

FIXTURES = Path(__file__).parents[1] / "fixtures" / "livingimage"
MAP = FIXTURES / "map.toml"
REFERENCE = FIXTURES / "comma_utf8.csv"
QUIRKS = [
    "comma_bom.csv", "semicolon_decimal_comma.csv", "cp1252.csv", "mangled_cm_underscore.csv",
    "mangled_question.csv", "mangled_mojibake.csv", "parentheses_units.csv",
    "preamble_blank_lines.csv", "tab_utf16.txt",
]
DTYPES = OBSERVATION_COLUMNS | {"background": "float64"}


def _problems(exports: list[Path], mapping: Path) -> list[str]:
    with pytest.raises(DataError) as info:
        import_livingimage(exports, mapping=mapping)
    return [str(p) for p in info.value.problems]


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _write_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _mapping(tmp_path: Path, old: str = "", new: str = "") -> Path:
    text = MAP.read_text(encoding="utf-8")
    assert old in text
    return _write(tmp_path / "map.toml", text.replace(old, new, 1))


def _export(tmp_path: Path, old: str = "", new: str = "", name: str = "export.csv") -> Path:
    text = REFERENCE.read_text(encoding="utf-8")
    assert old in text
    return _write(tmp_path / name, text.replace(old, new))


@pytest.mark.parametrize(("content", "message"), [
    (REFERENCE.read_text(encoding="utf-8").encode("utf-32"),
     "UTF-32 text, which Living Image does not write; export the ROI measurements again "
     "(.csv, or .txt in UTF-16)"),
    (REFERENCE.read_bytes().replace(b"IMG0001", b"IMG\x000001", 1),
     "not text (it holds NUL bytes): not a Living Image ROI measurement export (export them "
     "from Living Image as .csv or .txt)"),
    (REFERENCE.read_text(encoding="utf-8").encode("utf-16-le"),
     "UTF-16 text without a byte-order mark, which Living Image does not write; export the "
     "ROI measurements again"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
     "not text (it holds NUL bytes): not a Living Image ROI measurement export (export them "
     "from Living Image as .csv or .txt)"),
])
def test_an_export_that_is_not_text_says_what_it_is(tmp_path: Path, content: bytes,
                                                    message: str) -> None:
    """A UTF-32 export, one with a NUL byte and an image were all 'no header line with
    'Image Number' … found' (a UTF-32 file was read as UTF-16: its BOM begins with that one)."""
    export = _write_bytes(tmp_path / "export.csv", content)
    assert _problems([export], MAP) == [f"{export}: {message}"]


def test_an_images_own_roi_that_no_export_row_has_is_named(tmp_path: Path) -> None:
    """`[images."IMG0001".rois] "ROI 9" = "liver"` for an ROI the image does not have was
    silently ignored (a misspelt ROI name mapped nothing)."""
    mapping = _mapping(tmp_path, 'cell_type = "muse"\n',
                       'cell_type = "muse"\nrois = { "ROI 9" = "liver" }\n')
    assert _problems([REFERENCE], mapping) == [
        f"{mapping}, line 11, key 'images.IMG0001.rois.\"ROI 9\"', value 'liver': image "
        "'IMG0001' has no ROI 'ROI 9' in the exports (did you mean 'ROI 3'?); its ROIs: "
        "BKG 1, ROI 1, ROI 2, ROI 3"]
    fine = _mapping(tmp_path, 'cell_type = "muse"\n',
                    'cell_type = "muse"\nrois = { "ROI 2" = "femur" }\n')
    import_livingimage([REFERENCE], mapping=fine)  # an ROI the image has: no problem


def test_an_array_of_tables_where_a_table_belongs_is_named_without_python_text(
        tmp_path: Path) -> None:
    """`[[images."IMG0001"]]` showed "value [{'animal': 'm01', ...}]", Python's text of it."""
    mapping = _mapping(tmp_path, '[images."IMG0001"]', '[[images."IMG0001"]]')
    assert _problems([REFERENCE], mapping) == [
        f"{mapping}, line 8, key 'images.IMG0001': must be a table"]


# --------------------------------------------------------------------------- quirks


@pytest.mark.parametrize("name", QUIRKS)
def test_every_quirk_imports_to_the_same_table(name: str) -> None:
    expected = import_livingimage([REFERENCE], mapping=MAP)
    got = import_livingimage([FIXTURES / name], mapping=MAP)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_one_experiment_split_over_two_files_in_different_formats() -> None:
    expected = import_livingimage([REFERENCE], mapping=MAP)
    got = import_livingimage([FIXTURES / "split_a.csv", FIXTURES / "split_b.csv"], mapping=MAP)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_non_ascii_roi_names_survive_cp1252_and_mojibake(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, '"ROI 2" = "femur"', '"Fémur" = "femur"')
    expected = import_livingimage([_export(tmp_path, "ROI 2", "Fémur")], mapping=mapping)
    text = REFERENCE.read_text(encoding="utf-8").replace("ROI 2", "Fémur")
    cp1252 = _write(tmp_path / "cp.csv", text, "cp1252")
    mojibake = _write(tmp_path / "moji.csv", text.encode("utf-8").decode("latin-1"))
    for path in (cp1252, mojibake):
        pd.testing.assert_frame_equal(import_livingimage([path], mapping=mapping), expected)


# --------------------------------------------------------------------------- content


def test_table_shape_dtypes_order_and_background_rule() -> None:
    table = import_livingimage([REFERENCE], mapping=MAP)
    assert list(table.columns) == list(DTYPES)
    assert table.dtypes.astype(str).to_dict() == DTYPES
    assert table.index.name == "row" and list(table.index) == [2, 3, 4, 5, 6, 7]
    assert list(table["region"]) == ["femur", "lung", "spinal_cord"] * 2
    assert "BKG 1" not in set(table["image"]) and len(table) == 6

    lung = table[(table["animal"] == "m01") & (table["region"] == "lung")].iloc[0]
    assert (lung["study"], lung["cell_type"], lung["modality"], lung["image"]) == (
        "als_pilot", "muse", "in_vivo", "IMG0001")
    assert (lung["dose_cells"], lung["time_h"], lung["flux"]) == (5e4, 24.0, 3.770e5)
    # Background ROI of IMG0001: flux 1.508e4 p/s, radiance 1.2e3 ± 2.1e2 p/s/cm²/sr, 1 cm².
    omega = 1.508e4 / (1.2e3 * 1.0)
    assert lung["background"] == pytest.approx(1.2e3 * 1.20 * omega, rel=1e-12)
    assert lung["lod"] == pytest.approx((1.2e3 + 3.0 * 2.1e2) * 1.20 * omega, rel=1e-12)


def test_fixed_lod_without_background_rois(tmp_path: Path) -> None:
    rule = 'background_rois = ["BKG 1"]\nk_sd = 3.0'
    fixed = 'fixed = { lung = 2e4, femur = 1e4, spinal_cord = 5e3 }'
    mapping = _mapping(tmp_path, rule, fixed)
    _write(mapping, 'ignore_rois = ["BKG 1"]\n' + mapping.read_text(encoding="utf-8"))
    table = import_livingimage([REFERENCE], mapping=mapping)
    assert list(table.columns) == list(OBSERVATION_COLUMNS)
    assert list(table["lod"]) == [1e4, 2e4, 5e3] * 2


def test_fixed_lod_overrides_the_rule_for_its_regions(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, "k_sd = 3.0", "k_sd = 2.0\nfixed = { lung = 2e4 }")
    table = import_livingimage([REFERENCE], mapping=mapping).set_index(["animal", "region"])
    assert table.loc[("m01", "lung"), "lod"] == 2e4
    omega = 1.508e4 / 1.2e3
    assert table.loc[("m01", "femur"), "lod"] == pytest.approx((1.2e3 + 2 * 2.1e2) * 0.35 * omega)
    assert table["background"].notna().all()


def test_species_and_disease_become_columns(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, 'study = "als_pilot"',
                       'study = "als_pilot"\nspecies = "mouse"\ndisease = "ALS"')
    table = import_livingimage([REFERENCE], mapping=mapping)
    assert list(table.columns)[-3:] == ["species", "disease", "background"]
    assert set(table["species"]) == {"mouse"} and table["disease"].dtype == "string"


def test_per_image_roi_names_override_the_global_ones(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, 'cell_type = "msc"\n',
                       'cell_type = "msc"\nrois = { "ROI 3" = "damaged_organ" }\n')
    table = import_livingimage([REFERENCE], mapping=mapping)
    regions = table.groupby("animal")["region"].apply(list).to_dict()
    assert regions == {"m01": ["femur", "lung", "spinal_cord"],
                       "m02": ["damaged_organ", "femur", "lung"]}


# --------------------------------------------------------------------------- export errors


def test_missing_column_suggests_the_close_header(tmp_path: Path) -> None:
    export = _export(tmp_path, "Total Flux [p/s]", "Totl Flux [p/s]")
    (problem,) = _problems([export], MAP)
    assert "missing column 'Total Flux [p/s]'" in problem
    assert "did you mean 'Totl Flux [p/s]'?" in problem and "row 1" in problem


def test_rule_without_radiance_or_area_columns_is_a_clear_error(tmp_path: Path) -> None:
    text = "Image Number,ROI,Total Flux [p/s]\nIMG0001,ROI 1,3.770E+05\n"
    problems = _problems([_write(tmp_path / "flux_only.csv", text)], MAP)
    assert len(problems) == 3
    assert all("background LOD rule" in p for p in problems)
    assert any("'Area [cm²]'" in p for p in problems)


def test_all_unparsable_numbers_are_reported_with_file_row_column_value(tmp_path: Path) -> None:
    export = _export(tmp_path, "3.770E+05", "n/a")
    text = export.read_text(encoding="utf-8").replace("1.257E+04", '"1,257E+04"')
    _write(export, text.replace("7.540E+03", "7,540E+03"))  # decimal comma in a comma file
    problems = _problems([export], MAP)
    assert len(problems) == 3
    assert problems[0] == (f"{export}, row 2, column 'Total Flux [p/s]', value 'n/a': "
                           "not a number (expected e.g. 1.23E+05)")
    assert "row 4" in problems[1] and "'1,257E+04'" in problems[1]
    assert "row 7" in problems[2] and "10 fields but the header has 9" in problems[2]


def test_negative_flux_is_refused(tmp_path: Path) -> None:
    (problem,) = _problems([_export(tmp_path, "3.770E+05", "-3.770E+05")], MAP)
    assert "must be >= 0" in problem and "background subtraction" in problem


def test_a_flux_that_overflows_to_infinity_is_refused(tmp_path: Path) -> None:
    """'1e999' parses as inf: it named no problem and wrote 'inf' into the table."""
    (problem,) = _problems([_export(tmp_path, "3.770E+05", "1e999")], MAP)
    assert "row 2" in problem and "value '1e999'" in problem and "infinity" in problem


@pytest.mark.parametrize(("old", "new"), [
    ("IMG0001,BKG 1,Overlay,1.508E+04,1.200E+03", "IMG0001,BKG 1,Overlay,1.508E+04,1e308"),
    ("IMG0001,BKG 1,Overlay,1.508E+04,1.200E+03,2.100E+02",
     "IMG0001,BKG 1,Overlay,1.508E+04,1.200E+03,1e200"),
])
def test_background_too_large_for_a_finite_lod_names_the_roi(tmp_path: Path, old: str,
                                                             new: str) -> None:
    (problem,) = _problems([_export(tmp_path, old, new)], MAP)
    assert problem.startswith(f"{tmp_path / 'export.csv'}, row 5, column 'ROI', value 'BKG 1': "
                              "background ROI radiance, its SD or area too large")


def test_k_sd_giving_an_infinite_lod_names_the_key(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, "k_sd = 3.0", "k_sd = 1e308")
    (problem,) = _problems([REFERENCE], mapping)
    assert problem.startswith(f"{mapping}, line 23, key 'lod.k_sd', value 1e+308: LOD = "
                              "background mean + k_sd × SD is not finite (inf)")


def test_a_field_over_the_csv_size_limit_is_a_problem_of_the_file(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("a" * 300_000 + "\n", encoding="utf-8")
    (problem,) = _problems([notes], MAP)
    assert "not a Living Image ROI measurement export" in problem
    big = _export(tmp_path, "IMG0002,ROI 3,Overlay", '"' + "x" * 200_000 + '",ROI 3,Overlay')
    (problem,) = _problems([big], MAP)
    assert problem.startswith(f"{big}, row 8: cannot read this line as a table row (field "
                              "larger than field limit")


@pytest.mark.parametrize("content", [b"just some notes\nnothing here\n", b"PK\x03\x04\x00\x00"])
def test_a_file_that_is_not_an_export(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.csv"
    path.write_bytes(content)
    (problem,) = _problems([path], MAP)
    assert problem.startswith(str(path)) and "not a Living Image ROI measurement export" in problem


@pytest.mark.parametrize("content", [b"\xff\xfeI\x00m\x00a", b"\xff\xfe\x00\xd8I\x00"])
def test_damaged_utf16_is_a_problem_of_the_file(tmp_path: Path, content: bytes) -> None:
    """An odd byte count or a lone surrogate after the BOM was a UnicodeDecodeError."""
    path = _write_bytes(tmp_path / "odd16.csv", content)
    (problem,) = _problems([path], MAP)
    assert problem.startswith(f"{path}: not valid UTF-16 text (")


def test_rows_are_the_file_lines_whatever_the_cells_hold(tmp_path: Path) -> None:
    """U+2028, U+0085 and a form feed in a cell split lines, and a quoted line break split the
    row in two: the rows named after them were off (or the file failed to import)."""
    text = REFERENCE.read_text(encoding="utf-8")
    for roi, layer in (("ROI 1", '"Over\nlay"'), ("ROI 2", "Over\u2028lay"),
                       ("ROI 3", "Over\x85lay"), ("BKG 1", "Over\x0clay")):
        text = text.replace(f"IMG0001,{roi},Overlay", f"IMG0001,{roi},{layer}")
    export = _write(tmp_path / "export.csv", text)
    expected = import_livingimage([REFERENCE], mapping=MAP)
    pd.testing.assert_frame_equal(import_livingimage([export], mapping=MAP), expected)
    _write(export, text.replace("7.540E+03", "n/a"))
    assert _problems([export], MAP) == [
        f"{export}, row 8, column 'Total Flux [p/s]', value 'n/a': not a number (expected e.g. "
        "1.23E+05)"]


def test_image_without_background_roi(tmp_path: Path) -> None:
    text = "".join(line for line in REFERENCE.read_text(encoding="utf-8").splitlines(True)
                   if not line.startswith("IMG0002,BKG 1"))
    (problem,) = _problems([_write(tmp_path / "e.csv", text)], MAP)
    assert "value 'IMG0002'" in problem and "no background ROI" in problem


@pytest.mark.parametrize(("old", "new", "column", "value"), [
    ("7.800E+02,1.830E+03,1.000E+00", "7.800E+02,1.830E+03,0", "Area [cm²]", "0"),
    ("IMG0001,BKG 1,Overlay,1.508E+04", "IMG0001,BKG 1,Overlay,n/a", "Total Flux [p/s]", "n/a"),
    # fullwidth digits, which Python's \d and float() read as 15080
    ("IMG0001,BKG 1,Overlay,1.508E+04", "IMG0001,BKG 1,Overlay,１５０８０", "Total Flux [p/s]",
     "１５０８０"),
])
def test_an_invalid_background_row_is_one_problem_not_also_a_missing_one(
        tmp_path: Path, old: str, new: str, column: str, value: str) -> None:
    """The refused background ROI row was also reported as 'image has no background ROI'."""
    export = _export(tmp_path, old, new)
    assert _problems([export], MAP) == [
        f"{export}, row 5, column '{column}', value '{value}': "
        + ("must be > 0" if value == "0" else "not a number (expected e.g. 1.23E+05)")]
    # An image that truly lacks one is still named, beside the invalid row of the other.
    text = "".join(line for line in export.read_text(encoding="utf-8").splitlines(True)
                   if not line.startswith("IMG0002,BKG 1"))
    problems = _problems([_write(export, text)], MAP)
    assert len(problems) == 2 and "row 5" in problems[0]
    assert "value 'IMG0002'" in problems[1] and "no background ROI" in problems[1]


def test_duplicate_rows_and_duplicate_measurements(tmp_path: Path) -> None:
    problems = _problems([REFERENCE, FIXTURES / "split_a.csv"], MAP)
    assert len(problems) == 4 and all("appears twice" in p for p in problems)
    mapping = _mapping(tmp_path, '"ROI 3" = "spinal_cord"', '"ROI 3" = "lung"')
    problems = _problems([REFERENCE], mapping)
    assert len(problems) == 2 and all("same study, animal, time_h, region, modality and image" in p
                                   for p in problems)


# --------------------------------------------------------------------------- mapping errors


def test_mapping_problems_are_all_collected_with_key_and_hint(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, 'animal = "m01"', 'animl = "m01"')
    _write(mapping, mapping.read_text(encoding="utf-8").replace('"in_vivo"', '"invivo"'))
    problems = _problems([REFERENCE], mapping)
    assert any("key 'images.IMG0001.animl'" in p and "did you mean 'animal'?" in p
               for p in problems)
    assert any("key 'defaults.modality'" in p and "'invivo'" in p for p in problems)
    assert len(problems) == 2


def test_image_fields_may_come_from_defaults_or_the_image(tmp_path: Path) -> None:
    (problem,) = _problems([REFERENCE], _mapping(tmp_path, 'animal = "m01"\n'))
    assert "key 'images.IMG0001'" in problem and "missing required key 'animal'" in problem


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("[lod]\nbackground_rois = [\"BKG 1\"]\nk_sd = 3.0", "[lod]",
     "give 'background_rois'"),
    ('animal = "m02"', 'animal = "m01"', "one animal has one cell_type"),
    ('"ROI 1" = "lung"', '"ROI 1" = "Lung"', "key 'rois.\"ROI 1\"'"),
    ("dose_cells = 5e4", 'dose_cells = "5e4"', "must be a number (write it without quotes)"),
    ("[rois]", "[rois", "not a valid UTF-8 TOML file"),
    ('cell_type = "muse"', 'cell_type = "muse"\nspecies = "mouse"',
     "'species' is given for some images but not for 'IMG0002'"),
    ('"ROI 1" = "lung"', '"ROI 1" = "lung"\n"BKG 1" = "lung"', "both an organ ROI and in lod"),
])
def test_invalid_mappings(tmp_path: Path, old: str, new: str, expected: str) -> None:
    problems = _problems([REFERENCE], _mapping(tmp_path, old, new))
    assert any(expected in p for p in problems), problems


def test_a_background_roi_mapped_as_an_organ_is_reported_once(tmp_path: Path) -> None:
    """A global [rois] entry was reported once per image, as identical lines."""
    mapping = _mapping(tmp_path, '"ROI 1" = "lung"', '"ROI 1" = "lung"\n"BKG 1" = "lung"')
    assert _problems([REFERENCE], mapping) == [
        f"{mapping}, line 18, key 'rois.\"BKG 1\"': ROI is both an organ ROI and in "
        "lod.background_rois; keep it in one of them"]
    # Per-image entries are distinct keys (and lines), one problem each.
    text = mapping.read_text(encoding="utf-8").replace('\n"BKG 1" = "lung"', "")
    for image in ("IMG0001", "IMG0002"):
        text = text.replace(f'[images."{image}"]',
                            f'[images."{image}".rois]\n"BKG 1" = "femur"\n[images."{image}"]')
    problems = _problems([REFERENCE], _write(mapping, text))
    assert [p.split(": ")[0].split("key ")[1] for p in problems] == [
        "'images.IMG0001.rois.\"BKG 1\"'", "'images.IMG0002.rois.\"BKG 1\"'"]


def test_an_ignored_roi_mapped_as_an_organ_or_background_is_a_conflict(tmp_path: Path) -> None:
    """An ROI in ignore_rois and in [rois] was imported as an organ, silently."""
    mapping = _mapping(tmp_path, "[defaults]", 'ignore_rois = ["ROI 3", "BKG 1"]\n[defaults]')
    _write(mapping, mapping.read_text(encoding="utf-8").replace(
        'cell_type = "msc"', 'cell_type = "msc"\nrois = { "ROI 3" = "damaged_organ" }'))
    assert _problems([REFERENCE], mapping) == [
        f"{mapping}, line 21, key 'rois.\"ROI 3\"': ROI is both an organ ROI and in "
        "ignore_rois; keep it in one of them",
        f"{mapping}, line 16, key 'images.IMG0002.rois.\"ROI 3\"': ROI is both an organ ROI "
        "and in ignore_rois; keep it in one of them",
        f"{mapping}, line 2, key 'ignore_rois', value 'BKG 1': ROI is both in ignore_rois and "
        "in lod.background_rois; keep it in one of them"]


def test_animal_imaged_in_vivo_after_its_ex_vivo_image_names_the_mapping_key(
        tmp_path: Path) -> None:
    """The table was written, and validate then refused it."""
    mapping = _mapping(tmp_path, 'cell_type = "muse"', 'cell_type = "muse"\ntime_h = 48')
    _write(mapping, mapping.read_text(encoding="utf-8").replace(
        'animal = "m02"\ncell_type = "msc"',
        'animal = "m01"\ncell_type = "muse"\nmodality = "ex_vivo"'))
    export = REFERENCE
    assert _problems([export], mapping) == [
        f"{mapping}, line 11, key 'images.IMG0001.time_h', value 48.0: animal 'm01' of study "
        "'als_pilot' is imaged in_vivo at 48 h, after its ex_vivo (sacrifice) measurement at "
        f"24 h in image 'IMG0002' (ROI 'ROI 2', {export} row 7); in vivo images must be taken "
        "at or before sacrifice"]


def test_a_control_character_in_a_mapping_label_names_the_mapping_key(tmp_path: Path) -> None:
    """animal = "m\\u0007x" was written into the table as is, and validate then refused it."""
    mapping = _mapping(tmp_path, 'animal = "m01"', 'animal = "m\\u0007x"')
    assert _problems([REFERENCE], mapping) == [
        f"{mapping}, line 9, key 'images.IMG0001.animal', value 'm\\x07x': control character "
        "(a tab, line break or terminal escape) in a label; expected an animal identifier"]
    mapping = _mapping(tmp_path, 'study = "als_pilot"', 'study = "als\\u001bpilot"')
    (problem,) = _problems([REFERENCE], mapping)
    assert problem.startswith(f"{mapping}, line 3, key 'defaults.study', value 'als\\x1bpilot'")


# --------------------------------------------------------------------------- CLI


def test_cli_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "obs.csv"
    parts = [str(FIXTURES / "split_a.csv"), str(FIXTURES / "split_b.csv")]
    assert main(["import-livingimage", *parts, "--map", str(MAP), "--out", str(out)]) == 0
    assert "wrote 6 observations from 2 export(s)" in capsys.readouterr().out
    back = pd.read_csv(out, dtype=DTYPES)
    expected = import_livingimage([REFERENCE], mapping=MAP).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, rtol=1e-9)


@pytest.mark.parametrize("name", ["obs.parquet", "obs.pq", "OBS.PARQUET", "OBS.CSV"])
def test_cli_writes_the_format_its_suffix_names(tmp_path: Path, name: str) -> None:
    """What it writes, load reads back as the same table (.PARQUET was written as CSV)."""
    out = tmp_path / name
    assert main(["import-livingimage", str(REFERENCE), "--map", str(MAP), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"PAR1") == ("csv" not in name.lower())
    got = load_observations(out)
    expected = import_livingimage([REFERENCE], mapping=MAP)
    pd.testing.assert_frame_equal(got, expected, rtol=1e-9)


@pytest.mark.parametrize(("name", "why"), [
    ("obs.xlsx", "'.xlsx' is not a supported output format"),
    ("obs.txt", "'.txt' is not a supported output format"),
    ("obs", "it has no suffix"),
])
def test_cli_refuses_an_unsupported_out_suffix_before_reading_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, why: str) -> None:
    """'--out obs.xlsx' wrote CSV text into a file named .xlsx."""
    mapping = _mapping(tmp_path, "[rois]", "[rois")  # invalid: it must not even be read
    out = tmp_path / name
    assert main(["import-livingimage", str(REFERENCE), "--map", str(mapping),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"lanternpk import-livingimage: error: cannot write {out}: {why}; give a "
                   "file name ending in .csv (CSV), .parquet or .pq (Parquet)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.toml"]


@pytest.mark.parametrize(("export_edit", "map_edit", "message"), [
    (("IMG0002", "IMG0003"), ("", ""),
     "row 6, column 'Image Number', value 'IMG0003': image not in the mapping"),
    (("ROI 3", "ROI 9"), ("", ""),
     "row 4, column 'ROI', value 'ROI 9': ROI not in the mapping"),
    (("", ""), ('cell_type = "muse"', 'cel_type = "muse"'),
     "key 'images.IMG0001.cel_type': unknown key 'cel_type' (did you mean 'cell_type'?); "
     "allowed keys: study, animal, cell_type, "),
])
def test_cli_errors_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  export_edit: tuple[str, str], map_edit: tuple[str, str],
                                  message: str) -> None:
    export = _export(tmp_path, *export_edit)
    mapping = _mapping(tmp_path, *map_edit)
    out = tmp_path / "out" / "obs.csv"
    assert main(["import-livingimage", str(export), "--map", str(mapping), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and "1 problem(s) found" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- against a spec

SPEC = Path(__file__).parents[2] / "models" / "muse_vs_msc.toml"


def test_mapping_checked_against_a_spec_names_each_key(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Misspelt regions (global, per image, fixed LOD) and a cell type the spec lacks are
    reported at import with the mapping key and a hint; without --model only the fixed LOD
    of a region no ROI is mapped to is."""
    text = MAP.read_text(encoding="utf-8")
    text = text.replace('"ROI 3" = "spinal_cord"', '"ROI 3" = "spinal_cod"')
    text = text.replace('cell_type = "msc"', 'cell_type = "mscs"')
    text = text.replace('cell_type = "muse"',
                        'cell_type = "muse"\n[images."IMG0001".rois]\n"ROI 2" = "femr"')
    text = text.replace("k_sd = 3.0", "k_sd = 3.0\nfixed = { lungs = 2.0e4 }")
    mapping = _write(tmp_path / "map.toml", text)
    out = tmp_path / "obs.csv"
    argv = ["import-livingimage", str(REFERENCE), "--map", str(mapping), "--out", str(out)]
    assert main([*argv, "--model", str(SPEC)]) == 1
    err = capsys.readouterr().err
    for expected in [
        "line 21, key 'rois.\"ROI 3\"', value 'spinal_cod': region not in spec muse_vs_msc "
        "(expected one of ['damaged_organ', 'femur', 'lung', 'spinal_cord', 'whole_body']) "
        "(did you mean 'spinal_cord'?)",
        "line 12, key 'images.IMG0001.rois.\"ROI 2\"', value 'femr': region not in spec "
        "muse_vs_msc",
        "line 26, key 'lod.fixed.lungs', value 'lungs': region not in spec muse_vs_msc",
        "line 16, key 'images.IMG0002.cell_type', value 'mscs': cell type not in spec "
        "muse_vs_msc (expected one of ['msc', 'muse']) (did you mean 'msc'?)",
    ]:
        assert f"{mapping}, {expected}" in err
    assert "4 problem(s) found" in err and "Traceback" not in err
    assert not out.exists()
    # Without --model, the spec's vocabulary is not the mapping's contract; only the fixed LOD
    # of a region no ROI is mapped to is an error (it would be silently unused).
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (f"{mapping}, line 26, key 'lod.fixed.lungs', value 20000.0: no ROI is mapped to "
            "region 'lungs', so its fixed LOD is never used (mapped regions: femr, femur, "
            "lung, spinal_cod) (did you mean 'lung'?)") in err
    assert "1 problem(s) found" in err
    _write(mapping, text.replace("\nfixed = { lungs = 2.0e4 }", ""))
    assert main(argv) == 0
    assert out.exists()


def test_mapping_consistent_with_the_spec_imports_as_without_it(tmp_path: Path) -> None:
    with_spec = import_livingimage([REFERENCE], mapping=MAP, model=load_spec(SPEC))
    pd.testing.assert_frame_equal(with_spec, import_livingimage([REFERENCE], mapping=MAP))


def test_a_region_without_lod_names_the_mapping_line(tmp_path: Path) -> None:
    text = MAP.read_text(encoding="utf-8").replace("[defaults]",
                                                   'ignore_rois = ["BKG 1"]\n\n[defaults]', 1)
    mapping = _write(tmp_path / "map.toml", text.replace(
        'background_rois = ["BKG 1"]\nk_sd = 3.0', "fixed = { lung = 2.0e4 }"))
    assert _problems([REFERENCE], mapping) == [
        f"{mapping}, line 24, key 'lod.fixed.{region}': no LOD for region '{region}' (ROI "
        f"'{roi}' of image 'IMG0001'); add it to [lod] fixed, or give lod.background_rois "
        "(2 rows)" for region, roi in (("femur", "ROI 2"), ("spinal_cord", "ROI 3"))]
