"""Check raw tables against the data contracts and convert them to the canonical form.

The validators take the raw-text frame of :func:`lanternpk.data.load.read_table` and return
``(canonical frame, [])`` or ``(None, problems)`` with *every* problem found, each naming the
file, the row (as a spreadsheet numbers it), the column, the value as written and what would
be valid. Nothing the user wrote is changed: labels are compared exactly as written.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from lanternpk.data import schema
from lanternpk.errors import CONTROL_CHARACTER, Problem

#: Number columns: (zero allowed, what the number is).
_NUMBERS: dict[str, tuple[bool, str]] = {
    "dose_cells": (False, "cells injected"),
    "time_h": (True, "hours since injection"),
    "flux": (True, "photons/s"),
    "lod": (False, "photons/s"),
    "background": (False, "photons/s, the ROI's mean background as measured, before any "
                   "subtraction; the model adds it to the cells' light and takes the log"),
    "cells": (False, "cells"),
}
#: A standard curve's numbers: the model takes the log of both, so zero is not allowed.
_CALIBRATION_NUMBERS: dict[str, tuple[bool, str]] = {
    "cells": (False, "cells; the model takes its log"),
    "flux": (False, "photons/s; the model takes its log"),
}
_TEXTS: dict[str, str] = {
    "study": "a study identifier",
    "animal": "an animal identifier",
    "cell_type": "a cell-type label such as 'muse' or 'msc'",
    "region": "a region label such as 'lung'",
    "modality": "one of " + ", ".join(repr(m) for m in schema.MODALITIES),
    "image": "an image identifier",
}
_IMAGE_RULE = ("an image is one acquisition of one animal at one time and modality "
               "(image identifiers are unique within a study)")


def validate_observations(
    raw: pd.DataFrame, file: str
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Validate raw observations and convert them to the canonical form.

    Parameters
    ----------
    raw : pandas.DataFrame
        Observations as read by :func:`lanternpk.data.load.read_table` (text cells, index
        ``row`` = spreadsheet row). Other frames are accepted too; without a ``row`` index, row
        ``i + 2`` is the ``i``-th record.
    file : str
        Path of the source file, used in every problem.

    Returns
    -------
    frame : pandas.DataFrame or None
        Canonical observations, or None when there is any problem: the required columns in
        :data:`~lanternpk.data.schema.OBSERVATION_COLUMNS` order (text as ``string``, numbers
        as ``float64``: ``dose_cells`` in cells, ``time_h`` in hours, ``flux`` and ``lod`` in
        photons/s), then the optional columns present (``species``, ``disease`` as text with
        empty cells as ``<NA>``; ``background`` in photons/s with empty cells as NaN), then
        any other columns, as text, in file order. The ``row`` index is kept.
    problems : list of lanternpk.errors.Problem
        Every problem found, ordered by row; empty when the data are valid.
    """
    raw = _with_row_index(raw)
    required, optional = schema.OBSERVATION_COLUMNS, schema.OPTIONAL_OBSERVATION_COLUMNS
    problems = _check_columns(raw, file, required, optional)
    if len(raw) == 0 or raw.columns.duplicated().any():
        return None, problems
    values: dict[str, pd.Series] = {}
    ok: dict[str, pd.Series] = {}
    for column in (*required, *optional):
        if column in raw:
            problems += _convert(raw, file, column, values, ok, required=column in required)
    if "modality" in values:
        problems += _one_of(raw, file, "modality", schema.MODALITIES, values, ok)
    if "background" in raw:
        problems += _all_or_none(raw, file, "background")

    def usable(*columns: str) -> pd.Series | None:
        if not all(c in ok for c in columns):
            return None
        return pd.concat([ok[c] for c in columns], axis=1).all(axis=1)

    if (mask := usable(*schema.OBSERVATION_KEY)) is not None:
        problems += _duplicates(raw, file, values, mask)
    for column in ("cell_type", "dose_cells"):
        if (mask := usable("study", "animal", column)) is not None:
            problems += _constant(raw, file, values, mask, ("study", "animal"), column,
                                  "animal", "an animal has one cell_type and one dose_cells")
    for column in ("animal", "time_h", "modality"):
        if (mask := usable("study", "image", column)) is not None:
            problems += _constant(raw, file, values, mask, ("study", "image"), column,
                                  "image", _IMAGE_RULE)
    if (mask := usable("study", "animal", "time_h", "modality")) is not None:
        problems += _sacrifice(raw, file, values, mask)

    problems.sort(key=lambda p: (p.row is not None, p.row or 0))
    if problems:
        return None, problems
    return _canonical(raw, values, (*required, *optional)), []


def validate_calibration(
    raw: pd.DataFrame, file: str
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Validate a raw standard curve and convert it to the canonical form.

    Parameters
    ----------
    raw : pandas.DataFrame
        Standard curve as read by :func:`lanternpk.data.load.read_table`.
    file : str
        Path of the source file, used in every problem.

    Returns
    -------
    frame : pandas.DataFrame or None
        Canonical standard curve, or None when there is any problem: ``cells`` (cells, finite,
        > 0) and ``flux`` (photons/s, finite, > 0: the model takes the log of both) as
        ``float64``; ``setting`` (``string``, ``in_vitro`` where the column is absent or the
        cell empty, else ``ex_vivo`` for cells spiked into excised tissue); ``region``
        (``string``, required for ``ex_vivo`` rows and ``<NA>`` for ``in_vitro`` rows); then
        any other columns, as text. Index ``row`` kept.
    problems : list of lanternpk.errors.Problem
        Every problem found, ordered by row; empty when the standard curve is valid.
    """
    raw = _with_row_index(raw)
    required, optional = schema.CALIBRATION_COLUMNS, schema.OPTIONAL_CALIBRATION_COLUMNS
    problems = _check_columns(raw, file, required, optional)
    if len(raw) == 0 or raw.columns.duplicated().any():
        return None, problems
    values: dict[str, pd.Series] = {}
    ok: dict[str, pd.Series] = {}
    for column in required:
        if column in raw:
            problems += _convert(raw, file, column, values, ok, required=True,
                                 numbers=_CALIBRATION_NUMBERS)

    setting = _text(raw["setting"]) if "setting" in raw else pd.Series("", index=raw.index)
    setting = setting.where(setting.str.strip() != "", "in_vitro")
    values["setting"] = setting
    problems += _one_of(raw.assign(setting=setting), file, "setting",
                        schema.CALIBRATION_SETTINGS, values, ok)

    region = _text(raw["region"]) if "region" in raw else pd.Series("", index=raw.index)
    for row in raw.index:
        given = region[row]
        if setting[row] == "ex_vivo" and not given.strip():
            problems.append(Problem(file, "empty region for an ex_vivo (spike-in) row; expected "
                                          "the region of the tissue the cells were spiked into",
                                    row=row, column="region", value=given))
        elif setting[row] == "ex_vivo" and given != given.strip():
            problems.append(_spaces(file, row, "region", given))
        elif setting[row] == "in_vitro" and given.strip():
            problems.append(Problem(file, "region given for an in_vitro row; set setting to "
                                          "'ex_vivo' for cells spiked into tissue, or leave "
                                          "region empty", row=row, column="region", value=given))
    values["region"] = region.mask(setting != "ex_vivo")

    problems.sort(key=lambda p: (p.row is not None, p.row or 0))
    if problems:
        return None, problems
    return _canonical(raw, values, (*required, *optional)), []


def describe(
    obs: pd.DataFrame,
    calibration: pd.DataFrame | None = None,
    *,
    source: str,
    calibration_source: str | None = None,
) -> str:
    """Summarise canonical observations (and standard curve) for a person to check.

    Parameters
    ----------
    obs : pandas.DataFrame
        Canonical observations (from :func:`validate_observations`).
    calibration : pandas.DataFrame, optional
        Canonical standard curve (from :func:`validate_calibration`).
    source : str
        Where the observations came from, printed on the first line.
    calibration_source : str, optional
        Where the standard curve came from.

    Returns
    -------
    str
        Plain text, one item per line, labels aligned, everything sorted: rows, studies,
        animals per cell type and doses (cells) per study, time points (hours), regions,
        modalities, the share of rows with flux below the limit of detection (overall and per
        region and modality), and for the standard curve the rows per setting and the median
        flux per cell (photons/s per cell).
    """
    lines: list[tuple[str, str]] = [("observations", source), ("rows", str(len(obs)))]
    studies = sorted(obs["study"].unique())
    lines.append(("studies", ", ".join(studies)))
    for study in studies:
        part = obs[obs["study"] == study]
        animals = part.groupby("cell_type")["animal"].nunique()
        doses = part.groupby("cell_type")["dose_cells"].unique()
        lines.append(("animals", f"{study}: " + ", ".join(
            f"{ct} {n}" for ct, n in sorted(animals.items()))))
        lines.append(("doses (cells)", f"{study}: " + ", ".join(
            f"{ct} " + " / ".join(f"{d:g}" for d in sorted(ds))
            for ct, ds in sorted(doses.items()))))
    lines.append(("time points (h)", ", ".join(f"{t:g}" for t in sorted(obs["time_h"].unique()))))
    lines.append(("regions", ", ".join(sorted(obs["region"].unique()))))
    lines.append(("modalities", ", ".join(sorted(obs["modality"].unique()))))
    below = obs["flux"] < obs["lod"]
    lines.append(("flux < lod", _share(int(below.sum()), len(obs))))
    for (region, modality), part in below.groupby([obs["region"], obs["modality"]]):
        lines.append((f"  {region}, {modality}", _share(int(part.sum()), len(part))))
    if calibration is not None:
        lines.append(("standard curve", calibration_source or ""))
        per_cell = calibration["flux"] / calibration["cells"]
        groups = per_cell.groupby([calibration["setting"], calibration["region"].fillna("")])
        for (setting, region), part in groups:
            where = f"{setting}, {region}" if region else setting
            lines.append((f"  {where}", f"{len(part)} rows, median flux/cells "
                                        f"{part.median():.3g} photons/s per cell"))
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(f"{label:<{width}}{text}".rstrip() for label, text in lines)


def _share(k: int, n: int) -> str:
    return f"{k} of {n} rows ({100 * k / n:.1f}%)" if n else "no rows"


def _with_row_index(raw: pd.DataFrame) -> pd.DataFrame:
    """Return `raw` with a unique ``row`` index (spreadsheet numbering when it has none)."""
    if raw.index.name == schema.INDEX_NAME and raw.index.is_unique:
        return raw
    rows = pd.RangeIndex(schema.FIRST_DATA_ROW, schema.FIRST_DATA_ROW + len(raw))
    return raw.set_axis(rows.rename(schema.INDEX_NAME), axis=0)


def _check_columns(
    raw: pd.DataFrame, file: str, required: Mapping[str, str], optional: Mapping[str, str]
) -> list[Problem]:
    """Report an empty table, missing required columns (with a hint), repeated names."""
    names = [str(c) for c in raw.columns]
    problems = [Problem(file, "column name repeated; column names must be unique", row=1,
                        column=name) for name in sorted({n for n in names if names.count(n) > 1})]
    if len(raw) == 0:
        problems.append(Problem(file, "no data rows"))
    unknown = [n for n in names if n not in required and n not in optional]
    for name in required:
        if name in names:
            continue
        hint = _hint(name, unknown)
        if hint is not None:
            message = f"required column is missing; did you mean {hint!r}?"
            if hint.strip().lower() == name.lower():
                message += " (column names are case-sensitive and must match exactly)"
        else:
            message = ("required column is missing; the file has columns "
                       + ", ".join(repr(n) for n in names))
        problems.append(Problem(file, message, row=1, column=name))
    return problems


def _hint(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate that `name` was most likely meant to be, if any."""
    candidates = list(candidates)
    for candidate in candidates:
        if _normal(candidate) == _normal(name):
            return candidate
    folded = {_normal(c): c for c in candidates}
    match = difflib.get_close_matches(_normal(name), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def _normal(text: str) -> str:
    return text.strip().lower().replace(" ", "_").replace("-", "_")


def _text(column: pd.Series) -> pd.Series:
    """Cells as Python strings; missing values (None, NaN, <NA>) become ``""``."""
    return column.map(lambda v: "" if _missing(v) else str(v)).astype(object)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _spaces(file: str, row: int, column: str, value: str) -> Problem:
    return Problem(file, f"leading or trailing spaces; labels are compared exactly, so write "
                         f"{value.strip()!r}", row=row, column=column, value=value)


def _convert(
    raw: pd.DataFrame,
    file: str,
    column: str,
    values: dict[str, pd.Series],
    ok: dict[str, pd.Series],
    *,
    required: bool,
    numbers: Mapping[str, tuple[bool, str]] = _NUMBERS,
) -> list[Problem]:
    """Parse one column into ``values[column]``; mark usable cells in ``ok[column]``."""
    problems = []
    if column in numbers:
        zero_ok, meaning = numbers[column]
        expected = f"expected a finite number {'≥' if zero_ok else '>'} 0 ({meaning})"
        parsed = np.full(len(raw), np.nan)
        for i, (row, value) in enumerate(raw[column].items()):
            number, why = _number(value)
            empty = why == "empty cell"
            if why is None and math.isnan(number):
                why, empty = "NaN is not allowed", True
            elif why is None and math.isinf(number):
                why = "infinite value"
            elif why is None and (number < 0 or (number == 0 and not zero_ok)):
                why = "negative value" if number < 0 else "zero is not allowed"
            if why is None:
                parsed[i] = number
            elif required or not empty:
                problems.append(Problem(file, f"{why}; {expected}", row=row, column=column,
                                        value=value))
        values[column] = pd.Series(parsed, index=raw.index, name=column)
        ok[column] = values[column].notna()
        return problems
    text = _text(raw[column])
    if required:
        for row, value in text.items():
            if not value.strip():
                problems.append(Problem(file, f"empty cell; expected {_TEXTS[column]}",
                                        row=row, column=column, value=value))
            elif value != value.strip():
                problems.append(_spaces(file, row, column, value))
            elif CONTROL_CHARACTER.search(value):
                problems.append(Problem(file, "control character (a tab, line break or "
                                        f"terminal escape) in a label; expected {_TEXTS[column]}",
                                        row=row, column=column, value=value))
        values[column] = text
        ok[column] = (text.str.strip() == text) & ~text.str.contains(CONTROL_CHARACTER)
        ok[column] &= text != ""
    else:  # free text (species, disease), printed in summaries and reports
        for row, value in text.items():
            if CONTROL_CHARACTER.search(value):
                problems.append(Problem(file, "control character (a tab, line break or "
                                        "terminal escape) in free text; expected one line of "
                                        "text or an empty cell", row=row, column=column,
                                        value=value))
        values[column] = text.mask(text == "")
        ok[column] = ~text.str.contains(CONTROL_CHARACTER)
    return problems


def _number(value: object) -> tuple[float, str | None]:
    """Parse one cell; return ``(number, None)`` or ``(nan, reason it is not a number)``."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return math.nan, "empty cell"
    if isinstance(value, bool | np.bool_):
        return math.nan, "not a number"
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value), None
    text = str(value).strip()
    if not text.isascii():  # Python's float() reads '５' (fullwidth) and '٥' (Arabic) as 5
        odd = next(c for c in text if not c.isascii())
        return math.nan, (f"not a number ({odd!r}, U+{ord(odd):04X}, is not ASCII; write "
                          "numbers with 0-9, '.', '-', 'e')")
    try:
        if "_" in text:
            raise ValueError(text)
        return float(text), None
    except ValueError:
        if "," in text:
            return math.nan, "not a number (use '.' for decimals and no thousands separators)"
        return math.nan, "not a number"


def _blank(value: object) -> bool:
    """An empty cell, or a NaN ('nan' in a CSV, NaN in Parquet): no value given."""
    number, why = _number(value)
    return why == "empty cell" or (why is None and math.isnan(number))


def _all_or_none(raw: pd.DataFrame, file: str, column: str) -> list[Problem]:
    """An optional column is filled on every row or on none (the model uses it only then).

    A NaN counts as empty: it is how a data frame writes a missing number.
    """
    empty = raw[column].map(_blank)
    if empty.all() or not empty.any():
        return []
    rows = list(raw.index[empty])
    shown = ", ".join(str(r) for r in rows[:5]) + (f" and {len(rows) - 5} more"
                                                   if len(rows) > 5 else "")
    return [Problem(file, f"empty or NaN on {len(rows)} of {len(raw)} rows (rows {shown}); give a "
                          f"{column} on every row or on none (the model uses the {column} "
                          "column only when every row has one, else it estimates it)",
                    column=column)]


def _one_of(
    raw: pd.DataFrame,
    file: str,
    column: str,
    allowed: tuple[str, ...],
    values: dict[str, pd.Series],
    ok: dict[str, pd.Series],
) -> list[Problem]:
    """Require non-empty cells of `column` to be one of `allowed`."""
    problems = []
    text = values[column]
    bad = ok.get(column, text.str.strip() != "") & ~text.isin(allowed)
    for row in text.index[bad]:
        value = raw.at[row, column]
        hint = _hint(text[row], allowed)
        message = f"unknown {column}; expected one of " + ", ".join(repr(a) for a in allowed)
        if hint is not None:
            message += f" (did you mean {hint!r}?)"
        problems.append(Problem(file, message, row=row, column=column, value=value))
    ok[column] = ~bad & text.isin(allowed)
    return problems


def _duplicates(
    raw: pd.DataFrame, file: str, values: dict[str, pd.Series], mask: pd.Series
) -> list[Problem]:
    """One measurement per OBSERVATION_KEY; name the earlier row with the same key."""
    key = list(schema.OBSERVATION_KEY)
    first: dict[tuple, int] = {}
    problems = []
    rows = raw.index[mask]
    keys = zip(*(values[c][mask] for c in key), strict=True)
    for row, k in zip(rows, keys, strict=True):
        if k in first:
            shown = ", ".join(f"{c}={raw.at[row, c]!r}" for c in key)
            problems.append(Problem(file, f"duplicate measurement: same {', '.join(key)} as row "
                                          f"{first[k]} ({shown}); each ROI measurement must "
                                          "appear once", row=row))
        else:
            first[k] = row
    return problems


def _constant(
    raw: pd.DataFrame,
    file: str,
    values: dict[str, pd.Series],
    mask: pd.Series,
    by: tuple[str, str],
    column: str,
    what: str,
    rule: str,
) -> list[Problem]:
    """Within each group of `by` (study and `what`), `column` must take one value.

    The most common value (the first one seen on a tie) is taken as meant; each row that
    differs is reported, naming a row that has the common value.
    """
    table = pd.DataFrame({c: values[c][mask] for c in (*by, column)})
    spread = table.groupby(list(by), sort=False)[column].transform("nunique")
    problems = []
    for (study, label), group in table[spread > 1].groupby(list(by), sort=False):
        counts = Counter(group[column].tolist())
        common = max(counts, key=counts.get)  # max keeps the first seen on a tie
        ref = group.index[group[column] == common][0]
        for row in group.index[group[column] != common]:
            problems.append(Problem(
                file, f"{what} {label!r} of study {study!r} has {column} "
                      f"{raw.at[row, column]!r} here but {raw.at[ref, column]!r} in row "
                      f"{ref}; {rule}",
                row=row, column=column, value=raw.at[row, column]))
    return problems


def _sacrifice(
    raw: pd.DataFrame, file: str, values: dict[str, pd.Series], mask: pd.Series
) -> list[Problem]:
    """An animal is sacrificed once: one ex_vivo time, and no in_vivo image after it."""
    ex_vivo = mask & (values["modality"] == "ex_vivo")
    problems = _constant(raw, file, values, ex_vivo, ("study", "animal"), "time_h", "animal",
                         "an animal is sacrificed once, so its ex_vivo rows share one time_h")
    table = pd.DataFrame({c: values[c][mask] for c in ("study", "animal", "time_h", "modality")})
    earliest = (table[table["modality"] == "ex_vivo"].sort_values("time_h", kind="stable")
                .groupby(["study", "animal"], sort=False).head(1))
    sacrifice = {(s, a): (row, t) for row, s, a, t in zip(
        earliest.index, earliest["study"], earliest["animal"], earliest["time_h"], strict=True)}
    in_vivo = table[table["modality"] == "in_vivo"]
    for row, s, a, t in zip(in_vivo.index, in_vivo["study"], in_vivo["animal"],
                            in_vivo["time_h"], strict=True):
        ref, t_ref = sacrifice.get((s, a), (None, math.inf))
        if t > t_ref:
            problems.append(Problem(
                file, f"animal {a!r} of study {s!r} is imaged in_vivo at {t:g} h, after its "
                      f"ex_vivo (sacrifice) measurement at {t_ref:g} h in row {ref}; in vivo "
                      "images must be taken at or before sacrifice",
                row=row, column="time_h", value=raw.at[row, "time_h"]))
    return problems


def _canonical(
    raw: pd.DataFrame, values: dict[str, pd.Series], known: tuple[str, ...]
) -> pd.DataFrame:
    """Assemble the canonical frame: known columns in contract order, then the rest as text."""
    dtypes = {**schema.OBSERVATION_COLUMNS, **schema.OPTIONAL_OBSERVATION_COLUMNS,
              **schema.CALIBRATION_COLUMNS, **schema.OPTIONAL_CALIBRATION_COLUMNS}
    columns = {c: values[c].astype(dtypes[c]) for c in known if c in values}
    columns.update({c: raw[c].astype(schema.TEXT) for c in raw.columns if c not in known})
    frame = pd.DataFrame(columns, index=raw.index)
    frame.index.name = schema.INDEX_NAME
    return frame
