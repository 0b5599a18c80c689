"""Read observation and standard-curve tables from CSV or Parquet.

:func:`read_table` turns a file into raw text (every cell a string, exactly as written) indexed
by spreadsheet row number; :mod:`lanternpk.data.validate` turns that into the canonical form.
Anything wrong with the file itself is raised as :class:`~lanternpk.errors.DataError`, never as
a pandas or pyarrow exception.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from os import PathLike
from pathlib import Path
from typing import NoReturn

import pandas as pd

from lanternpk.argtypes import not_a_file
from lanternpk.data import schema
from lanternpk.errors import DataError, Problem, UsageError
from lanternpk.io import PARQUET_SUFFIXES

#: File signatures of things that are often given by mistake instead of a CSV table.
_SIGNATURES = {
    b"PAR1": "a Parquet file (give it a .parquet suffix)",
    b"PK\x03\x04": "a zip archive or Excel workbook (export the sheet as CSV)",
    b"\xd0\xcf\x11\xe0": "an old Excel workbook (export the sheet as CSV)",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"%PDF": "a PDF document",
}
#: Byte-order marks of the wider Unicode encodings, UTF-32 first (its little-endian mark begins
#: with UTF-16's).
_WIDE_BOMS = {
    b"\xff\xfe\x00\x00": ("UTF-32", "utf-32"),
    b"\x00\x00\xfe\xff": ("UTF-32", "utf-32"),
    b"\xff\xfe": ("UTF-16", "utf-16"),
    b"\xfe\xff": ("UTF-16", "utf-16"),
}
_WRONG_DELIMITERS = {";": "semicolon (';')", "\t": "tab", "|": "vertical bar ('|')"}
_EXPECTED = "expected a CSV table (comma-separated, column names on row 1) or a Parquet file"


def read_table(path: str | PathLike[str]) -> pd.DataFrame:
    """Read a CSV or Parquet table with every cell as raw text.

    Parameters
    ----------
    path : str or path-like
        File to read. A ``.parquet`` or ``.pq`` suffix means Parquet; anything else is read as
        comma-separated UTF-8 text (a byte-order mark is ignored) with the column names on the
        first row.

    Returns
    -------
    pandas.DataFrame
        One column per column of the file, in file order, each cell the text as written (an
        empty cell is ``""``; a Parquet null is ``""`` too). The index, named ``row``, is the
        row number as a spreadsheet counts it: the header is row 1, the first data row 2. For
        Parquet, row ``i + 2`` is the ``i``-th record.

    Raises
    ------
    lanternpk.errors.UsageError
        If `path` does not exist or is not a file.
    lanternpk.errors.DataError
        If the file is empty, has no data rows, is not a table (binary, JSON, rows with a
        different number of fields than the header), is text in another encoding than UTF-8
        (UTF-16 or UTF-32 is named as such), uses another delimiter than a comma, or has
        missing or repeated column names.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(not_a_file(path))
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {file}: {err.strerror or err}") from None
    if not data.strip():
        _fail(file, f"the file is empty; {_EXPECTED}")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        header, rows = _parse_parquet(file, data)
    else:
        header, rows = _parse_csv(file, data)
    return _frame(file, header, rows)


def load_observations(path: str | PathLike[str]) -> pd.DataFrame:
    """Read and validate an observations table (DESIGN.md, "Data contract: observations").

    Parameters
    ----------
    path : str or path-like
        Observations file, CSV or Parquet; one row per ROI measurement.

    Returns
    -------
    pandas.DataFrame
        The canonical observations (see :mod:`lanternpk.data.schema`): fluxes and limits of
        detection in photons/s, ``time_h`` in hours since injection, ``dose_cells`` in cells.

    Raises
    ------
    lanternpk.errors.DataError
        With every problem found, each naming the file, row, column and value.
    """
    from lanternpk.data.validate import validate_observations

    return _load(path, validate_observations)


def load_calibration(path: str | PathLike[str]) -> pd.DataFrame:
    """Read and validate a standard curve (known cell numbers and the flux they gave).

    Parameters
    ----------
    path : str or path-like
        Standard-curve file, CSV or Parquet, with columns ``cells`` (cells), ``flux``
        (photons/s) and optionally ``setting`` and ``region``.

    Returns
    -------
    pandas.DataFrame
        The canonical standard curve (see :func:`lanternpk.data.validate.validate_calibration`).

    Raises
    ------
    lanternpk.errors.DataError
        With every problem found, each naming the file, row, column and value.
    """
    from lanternpk.data.validate import validate_calibration

    return _load(path, validate_calibration)


def observations_from_csv_text(text: str, source: str) -> pd.DataFrame:
    """Validate observations given as CSV text (e.g. the copy a run keeps of its data).

    Parameters
    ----------
    text : str
        A CSV table with a header row, as :func:`read_table` reads from a file.
    source : str
        What to call the table in error messages.

    Returns
    -------
    pandas.DataFrame
        The canonical observations, as :func:`load_observations` returns them.

    Raises
    ------
    lanternpk.errors.DataError
        If the text is not a table or fails the observation contract.
    """
    from lanternpk.data.validate import validate_observations

    if not text.strip():
        _fail(source, f"the table is empty; {_EXPECTED}")
    raw = _frame(source, *_parse_csv(source, text.encode("utf-8")))
    frame, problems = validate_observations(raw, source)
    if problems:
        raise DataError(problems)
    return frame


def _load(path, validator) -> pd.DataFrame:
    raw = read_table(path)
    frame, problems = validator(raw, str(path))
    if problems:
        raise DataError(problems)
    return frame


def _fail(file: str, message: str, row: int | None = None) -> NoReturn:
    raise DataError([Problem(file, message, row=row)])


def _parse_csv(file: str, data: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Split CSV bytes into a header and ``(spreadsheet row, fields)`` pairs."""
    for signature, what in _SIGNATURES.items():
        if data.startswith(signature):
            _fail(file, f"this is {what}, not a CSV table; {_EXPECTED}")
    encoding = wide_unicode(data)
    if encoding is not None:
        _fail(file, f"this is {encoding} encoded text, not UTF-8; save the file as UTF-8 "
                    "('CSV UTF-8' in Excel)")
    if b"\x00" in data[:65536]:
        _fail(file, f"binary content, not text; {_EXPECTED}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        row = data[: err.start].count(b"\n") + 1
        _fail(file, "not UTF-8 text (save the file as 'CSV UTF-8')", row)
    if text.lstrip()[:1] in ("{", "["):
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            _fail(file, f"this is a JSON document, not a CSV table; {_EXPECTED}")

    # Count every record, blank ones included, so row numbers match what a spreadsheet shows
    # (a quoted field may span several lines and is still one row).
    records: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for fields in reader:
            records.append((len(records) + 1, fields))
    except csv.Error as err:
        _fail(file, f"cannot read this row as CSV ({err}); check its quotes", len(records) + 1)

    header = records[0][1] if records else []
    if not any(name.strip() for name in header):
        _fail(file, f"row 1 holds no column names; {_EXPECTED}", 1)
    if len(header) == 1:
        for delimiter, name in _WRONG_DELIMITERS.items():
            if delimiter in header[0]:
                _fail(file, f"the columns are separated by a {name}, but a comma (',') is "
                            "expected; save the file as comma-separated values", 1)
    rows = [(row, fields) for row, fields in records[1:] if fields]
    bad = [
        Problem(file, f"row has {len(fields)} field(s) but the header has {len(header)}; "
                      "check for a stray or unquoted comma or a missing field", row=row)
        for row, fields in rows
        if len(fields) != len(header)
    ]
    if bad:
        raise DataError(bad)
    return header, rows


def wide_unicode(data: bytes) -> str | None:
    """``"UTF-16"`` or ``"UTF-32"`` if ``data`` is text in that encoding, else ``None``.

    A byte-order mark tells. Without one, mostly-ASCII text (as a table's column names and
    numbers are) shows a pattern of NUL bytes: in UTF-16 every other byte is NUL and the bytes
    between never are; in UTF-32 three bytes of every four. Either guess stands only if the
    start of the file decodes in that encoding, so binary content stays binary.
    """
    for bom, (encoding, codec) in _WIDE_BOMS.items():
        if data.startswith(bom):
            return encoding if _decodes(data, codec) else None
    for width, encoding in ((4, "UTF-32"), (2, "UTF-16")):
        sample = data[: 4096 // width * width]
        if len(sample) < 2 * width:
            continue
        lanes = [sample[i::width] for i in range(width)]
        for order, text_lane in (("le", 0), ("be", width - 1)):
            mostly_nul = all(lane.count(0) >= len(lane) / 2
                             for i, lane in enumerate(lanes) if i != text_lane)
            if (mostly_nul and 0 not in lanes[text_lane]
                    and _decodes(sample, f"{encoding.lower()}-{order}")):
                return encoding
    return None


def _decodes(data: bytes, codec: str) -> bool:
    """Whether the first 4 KiB of ``data`` decode with ``codec`` (the last character may be cut)."""
    try:
        codecs.getincrementaldecoder(codec)().decode(data[:4096])
    except UnicodeDecodeError:
        return False
    return True


def _parse_parquet(file: str, data: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read Parquet bytes into a header and ``(row, fields)`` pairs of text."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        # ParquetFile.read, not read_table: read_table's dataset layer fails on a repeated
        # column name with a schema dump; here the header check names the column instead.
        table = pq.ParquetFile(pa.BufferReader(data)).read()
    except (pa.ArrowException, OSError, ValueError) as err:
        _fail(file, f"not a readable Parquet file ({err}); {_EXPECTED}")
    # A pandas index stored as a column is not data.
    index_columns = (table.schema.pandas_metadata or {}).get("index_columns", [])
    table = table.drop_columns([c for c in index_columns if isinstance(c, str)])
    wrong = [Problem(file, f"Parquet column type is {field.type}, but this column holds numbers; "
                           "store it as an int or float (convert a date, time or duration, e.g. "
                           "to hours)", row=1, column=field.name)
             for field in table.schema
             if field.name in _NUMBER_COLUMNS and not _numeric_or_text(field.type)]
    if wrong:
        raise DataError(wrong)
    columns = []
    for column in table.columns:
        try:
            values = pc.cast(column, pa.string()).to_pylist()
        except pa.ArrowException:
            values = [None if v is None else str(v) for v in column.to_pylist()]
        columns.append(["" if v is None else v for v in values])
    records = zip(*columns, strict=True)
    rows = [(i + schema.FIRST_DATA_ROW, list(fields)) for i, fields in enumerate(records)]
    return list(table.column_names), rows


#: Columns of the data contracts that hold numbers.
_NUMBER_COLUMNS = frozenset(
    name
    for contract in (schema.OBSERVATION_COLUMNS, schema.OPTIONAL_OBSERVATION_COLUMNS,
                     schema.CALIBRATION_COLUMNS, schema.OPTIONAL_CALIBRATION_COLUMNS)
    for name, dtype in contract.items()
    if dtype == schema.NUMBER
)


def _numeric_or_text(kind) -> bool:
    """Whether a Parquet column of this type can hold the numbers of a number column.

    Numbers are read as they are; text (and an all-null column) is checked cell by cell, as a
    CSV cell is. A date, time, duration or anything else would be read as a count of some
    unit (a duration of 2 h as 7200000000 microseconds), so it is refused.
    """
    import pyarrow.types as pt

    if pt.is_dictionary(kind):
        kind = kind.value_type
    return (pt.is_integer(kind) or pt.is_floating(kind) or pt.is_decimal(kind)
            or pt.is_string(kind) or pt.is_large_string(kind) or pt.is_null(kind))


def _frame(file: str, header: list[str], rows: list[tuple[int, list[str]]]) -> pd.DataFrame:
    """Build the raw-text frame; reject unnamed or repeated column names."""
    if not rows:
        _fail(file, "no data rows: the file has a header but nothing below it")
    frame = pd.DataFrame(
        [fields for _, fields in rows],
        columns=range(len(header)),
        index=pd.Index([row for row, _ in rows], name=schema.INDEX_NAME),
        dtype=object,
    )
    problems = []
    keep = []
    for position, name in enumerate(header):
        column = position + 1
        if name.strip():
            keep.append(position)
        elif (frame[position] != "").any():  # an unnamed, empty column is a trailing comma
            problems.append(Problem(file, f"column {column} has values but no name on row 1",
                                    row=1, value=name))
    for name in sorted({n for n in header if n.strip() and header.count(n) > 1}):
        where = ", ".join(str(i + 1) for i, n in enumerate(header) if n == name)
        problems.append(Problem(file, f"column name repeated (columns {where}); column names "
                                      "must be unique", row=1, column=name))
    if problems:
        raise DataError(problems)
    frame = frame[keep]
    frame.columns = pd.Index([header[p] for p in keep], dtype=object)
    return frame
