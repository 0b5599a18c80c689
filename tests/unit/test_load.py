"""Reading tables: raw text, spreadsheet row numbers, and clear errors for files that are not."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanternpk.data.load import load_calibration, load_observations, read_table
from lanternpk.data.validate import validate_observations
from lanternpk.errors import DataError, Problem, UsageError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "observations"
VALID = FIXTURES / "valid.csv"
CALIBRATION = FIXTURES / "calibration.csv"


def write(tmp_path: Path, content: str | bytes, name: str = "obs.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def problem_of(path: Path) -> Problem:
    with pytest.raises(DataError) as info:
        read_table(path)
    assert len(info.value.problems) == 1, info.value
    problem = info.value.problems[0]
    assert problem.file == str(path)
    return problem


def test_csv_cells_are_raw_text_indexed_by_spreadsheet_row():
    raw = read_table(VALID)
    assert raw.index.name == "row"
    assert list(raw.index[:3]) == [2, 3, 4]
    assert raw.at[2, "dose_cells"] == "1000000"  # as written, not parsed
    assert raw.at[2, "flux"] == "4e+06"
    assert raw.at[2, "notes"] == ""  # an empty cell is "", not NaN
    assert all(isinstance(v, str) for v in raw.to_numpy().ravel())


def test_bom_is_stripped_and_blank_and_multiline_rows_are_counted(tmp_path):
    path = write(tmp_path, '\ufeffa,b\n1,"two\nlines"\n\n3,4\n')
    raw = read_table(path)
    assert list(raw.columns) == ["a", "b"]
    assert list(raw.index) == [2, 4]  # row 3 is blank, as a spreadsheet shows it
    assert raw.at[2, "b"] == "two\nlines"


def test_trailing_commas_do_not_make_columns(tmp_path):
    raw = read_table(write(tmp_path, "a,b,\n1,2,\n"))
    assert list(raw.columns) == ["a", "b"]


def test_unnamed_column_with_values(tmp_path):
    problem = problem_of(write(tmp_path, "a,,c\n1,2,3\n"))
    assert problem.row == 1
    assert problem.message == "column 2 has values but no name on row 1"


def test_repeated_column_name(tmp_path):
    problem = problem_of(write(tmp_path, "flux,a,flux\n1,2,3\n"))
    assert (problem.row, problem.column) == (1, "flux")
    assert problem.message.startswith("column name repeated (columns 1, 3)")


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file(tmp_path, content):
    problem = problem_of(write(tmp_path, content))
    assert problem.message.startswith("the file is empty")


def test_header_only(tmp_path):
    problem = problem_of(write(tmp_path, "study,animal\n\n"))
    assert problem.message == "no data rows: the file has a header but nothing below it"


def test_inconsistent_field_counts_name_the_rows(tmp_path):
    with pytest.raises(DataError) as info:
        read_table(write(tmp_path, "a,b\n1,2\n1,2,3\n4\n"))
    problems = info.value.problems
    assert [p.row for p in problems] == [3, 4]
    assert problems[0].message.startswith("row has 3 field(s) but the header has 2")


def test_unterminated_quote_names_the_row(tmp_path):
    problem = problem_of(write(tmp_path, 'a,b\n1,2\n3,"4\n5,6\n'))
    assert problem.row == 3
    assert "check its quotes" in problem.message


@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon (';')"), ("\t", "tab")])
def test_wrong_delimiter(tmp_path, delimiter, name):
    text = VALID.read_text().replace(",", delimiter)
    problem = problem_of(write(tmp_path, text))
    assert problem.row == 1
    assert problem.message.startswith(f"the columns are separated by a {name}, but a comma "
                                      "(',') is expected")


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "this is a PNG image"),
        (b"PK\x03\x04\x14\x00", "Excel workbook"),
        (bytes(range(256)) * 4, "binary content"),
        (b'{"study": "S1", "rows": [1, 2]}', "this is a JSON document"),
        (b'[{"study": "S1"}]\n', "this is a JSON document"),
    ],
)
def test_not_a_table(tmp_path, content, what):
    problem = problem_of(write(tmp_path, content))
    assert what in problem.message
    assert "expected a CSV table" in problem.message or "export" in problem.message


def test_not_utf8_names_the_row(tmp_path):
    problem = problem_of(write(tmp_path, "a,b\n1,2\ncaf\xe9,3\n".encode("latin-1")))
    assert problem.row == 3
    assert "not UTF-8" in problem.message


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
                                   "utf-32-be"])
def test_utf16_or_utf32_text_is_named_with_or_without_a_byte_order_mark(tmp_path, codec):
    """Excel's "Unicode text" is UTF-16 with a mark; the '-le'/'-be' codecs write none."""
    text = "study,animal,flux\nS1,M1,4e+06\nS1,Mü,5e+06\n"
    problem = problem_of(write(tmp_path, text.encode(codec)))
    width = codec[:6].upper()
    assert problem.message == (f"this is {width} encoded text, not UTF-8; save the file as "
                               "UTF-8 ('CSV UTF-8' in Excel)")
    assert problem.row is None


@pytest.mark.parametrize("content", [
    b"\xff\xfe" + b"\x00\xdc" * 8,  # a UTF-16 mark, then lone surrogates
    b"a\x00b\x00" + b"\x00\x00" * 8,  # NULs in every byte lane
    bytes(range(256)) * 4,
])
def test_binary_content_with_nul_bytes_is_not_taken_for_utf16(tmp_path, content):
    problem = problem_of(write(tmp_path, content))
    assert problem.message.startswith("binary content, not text; expected a CSV table")


def test_utf8_with_a_byte_order_mark_is_read(tmp_path):
    raw = read_table(write(tmp_path, "a,b\n1,2\n".encode("utf-8-sig")))
    assert list(raw.columns) == ["a", "b"] and raw.at[2, "a"] == "1"


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        read_table(tmp_path / "nope.csv")


# --- Parquet ------------------------------------------------------------------------------


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "obs.parquet"
    pd.read_csv(VALID).to_parquet(path)  # typed columns, nulls for empty cells
    from_parquet = load_observations(path)
    pd.testing.assert_frame_equal(from_parquet, load_observations(VALID))


def test_canonical_frame_written_as_parquet_reads_back_the_same(tmp_path):
    canonical = load_observations(VALID)
    path = tmp_path / "obs.pq"
    canonical.to_parquet(path)  # the `row` index is stored, but is not a data column
    pd.testing.assert_frame_equal(load_observations(path).reset_index(drop=True),
                                  canonical.reset_index(drop=True))


def test_parquet_that_is_not_parquet(tmp_path):
    problem = problem_of(write(tmp_path, VALID.read_bytes(), name="obs.parquet"))
    assert problem.message.startswith("not a readable Parquet file")


def test_empty_parquet(tmp_path):
    path = tmp_path / "obs.parquet"
    pd.read_csv(VALID).head(0).to_parquet(path)
    assert problem_of(path).message.startswith("no data rows")


def test_parquet_repeated_column_name(tmp_path):
    """As for a CSV (pyarrow's read_table failed with a many-line schema dump)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(pd.read_csv(VALID), preserve_index=False)
    table = table.append_column("flux", table.column("flux"))
    path = tmp_path / "obs.parquet"
    pq.write_table(table, path)
    problem = problem_of(path)
    assert (problem.row, problem.column) == (1, "flux")
    assert problem.message.startswith(f"column name repeated (columns "
                                      f"{table.column_names.index('flux') + 1}, "
                                      f"{len(table.column_names)})")


@pytest.mark.parametrize("column", ["time_h", "flux"])
def test_parquet_number_column_of_a_time_type_is_refused(tmp_path, column):
    frame = pd.read_csv(VALID)
    frame[column] = pd.to_timedelta(frame[column], unit="h")  # would read as microseconds
    path = tmp_path / "obs.parquet"
    frame.to_parquet(path)
    problem = problem_of(path)
    assert (problem.row, problem.column) == (1, column)
    assert problem.message.startswith("Parquet column type is duration")


# --- loaders ------------------------------------------------------------------------------


def test_load_observations_raises_every_problem(tmp_path):
    text = VALID.read_text().replace(",4e+06,", ",-4e+06,").replace(",lung,in_vivo,", ",lung,vivo,")
    with pytest.raises(DataError) as info:
        load_observations(write(tmp_path, text))
    problems = info.value.problems
    assert len(problems) == 1 + 12  # one negative flux, twelve bad modalities
    assert problems[0].row == 2 and problems[0].column == "flux"


def test_load_calibration():
    frame = load_calibration(CALIBRATION)
    assert list(frame.columns) == ["cells", "flux", "setting", "region"]
    assert len(frame) == 6


# --- no raw exception for any input ---------------------------------------------------------

_cells = st.sampled_from(["", "S1", "lung", "in_vivo", "ex_vivo", "1", "-1", "0", "nan", "1e6",
                          "x", ",", '"', ";", " ", "\n", "\t", "é"])


@settings(max_examples=150, deadline=None)
@given(content=st.one_of(st.binary(max_size=300),
                         st.lists(st.lists(_cells, max_size=4), max_size=6).map(
                             lambda rows: "\n".join(",".join(r) for r in rows).encode())))
def test_any_bytes_give_a_table_or_a_data_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "obs.csv"
    path.write_bytes(content)
    try:
        raw = read_table(path)
    except DataError as err:
        assert all(p.file == str(path) for p in err.problems)
        return
    assert raw.index.name == "row"


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries(
    {c: _cells for c in ("study", "animal", "cell_type", "dose_cells", "time_h", "region",
                         "modality", "image", "flux", "lod")}), min_size=1, max_size=6))
def test_any_text_table_gives_a_frame_or_problems(rows):
    raw = pd.DataFrame(rows, dtype=object)
    frame, problems = validate_observations(raw, "obs.csv")
    assert (frame is None) == bool(problems)
    assert all(p.row is None or p.row >= 1 for p in problems)
