"""Import Living Image ROI measurement exports into the canonical observation table.

An export has one row per ROI and image, with columns such as ``Image Number``, ``ROI``,
``Total Flux [p/s]``, ``Avg Radiance [p/s/cm²/sr]``, ``Stdev Radiance`` and ``Area [cm²]``;
other columns (``Image Layer``, ``Min``, ``Max``, user labels) are ignored. Tolerated quirks:
UTF-8 (with or without BOM), UTF-16 with BOM, cp1252/latin-1 and UTF-8 read as latin-1
(``cmÂ²``); a mangled ``²`` (``cm_``, ``cm?``); units in ``[...]`` or ``(...)``; comma, semicolon
or tab delimiters, with decimal commas (``1,23E+05``) in semicolon and tab files; preamble
lines before the header, blank lines, and a trailing delimiter. Headers are matched by meaning
after normalisation (lower case, units and punctuation removed).

Mapping file (TOML, read as data, never executed)
--------------------------------------------------
::

    ignore_rois = ["Tail"]     # optional, before any table: ROIs to drop (not organs)

    [defaults]                 # optional: values shared by every image
    study = "als_pilot"

    [images."IMG0001"]         # key: Image Number as written in the export (text)
    animal = "m01"
    cell_type = "muse"
    dose_cells = 5e4           # cells injected IV at time 0, > 0
    time_h = 24                # hours since injection, >= 0
    modality = "in_vivo"       # or "ex_vivo"
    # study, species, disease may be given here too (they override [defaults])
    [images."IMG0001".rois]    # optional: ROI names that mean something else in this image
    "ROI 3" = "spinal_cord"    # (each must be an ROI of the image's export rows)

    [rois]                     # ROI name -> region (snake_case, as in the model spec)
    "ROI 1" = "lung"
    "ROI 2" = "femur"

    [lod]                      # at least one of background_rois or fixed
    background_rois = ["BKG 1"]  # ROIs measuring background; never emitted as rows
    k_sd = 3.0                   # LOD = background mean + k_sd SD (default 3)
    fixed = { lung = 2.0e4 }     # LOD per region, photons/s; overrides the rule there

Every image needs ``study``, ``animal``, ``cell_type``, ``dose_cells``, ``time_h`` and
``modality`` (from its table or ``[defaults]``); ``species`` and ``disease`` become output
columns when given for every image. Unknown keys are errors, with a "did you mean" hint.

Background and limit of detection
---------------------------------
Radiance (p/s/cm²/sr) is per area, so background measured in one ROI can be scaled to an
organ ROI of another area. Living Image sums radiance × pixel area × a constant solid-angle
factor Ω over the pixels of an ROI, so Total Flux = Avg Radiance × Area × Ω. Ω is read from
the background ROIs themselves, ``Ω = Σ flux_b / Σ (radiance_b × area_b)``, not assumed.
Per image, the background ROIs give the pixel mean radiance ``m`` and SD ``s`` of their
union (area-weighted, so two ROIs pool as one). For an organ ROI of area ``A`` (cm²)::

    background = m × A × Ω                 (p/s, output column ``background``)
    lod        = (m + k_sd × s) × A × Ω    (p/s)

Scaling the pixel SD by the whole area is the usual conservative "mean + 3 SD" practice.
A region listed in ``[lod] fixed`` takes that LOD instead. The ``background`` column is written
whenever ``background_rois`` is given.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from lanternpk.data.load import wide_unicode
from lanternpk.data.schema import (
    FIRST_DATA_ROW,
    INDEX_NAME,
    OBSERVATION_COLUMNS,
    OBSERVATION_KEY,
    OPTIONAL_OBSERVATION_COLUMNS,
)
from lanternpk.data.validate import validate_observations
from lanternpk.errors import (
    DataError,
    Problem,
    UsageError,
    closest,
    did_you_mean,
    unknown_key_message,
)
from lanternpk.io import PARQUET_SUFFIXES
from lanternpk.tomlfile import parse_toml, plain_message, read_utf8, with_lines

if TYPE_CHECKING:
    from lanternpk.spec import ModelSpec

__all__ = ["LivingImageMapping", "check_output_suffix", "import_livingimage", "load_mapping",
           "mapping_vs_spec", "parse_mapping"]

# --------------------------------------------------------------------------- mapping schema

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Region = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ImageFields(_Table):
    """Per-image metadata; every field may also come from ``[defaults]``."""

    study: Text | None = None
    animal: Text | None = None
    cell_type: Text | None = None
    dose_cells: PositiveFloat | None = None
    time_h: NonNegativeFloat | None = None
    modality: Literal["in_vivo", "ex_vivo"] | None = None
    species: Text | None = None
    disease: Text | None = None


class ImageEntry(ImageFields):
    """One ``[images."..."]`` table: metadata plus ROI names specific to that image."""

    rois: dict[str, Region] = Field(default_factory=dict)


class LodRule(_Table):
    """The ``[lod]`` table: background ROIs (mean + k SD rule) and/or fixed LODs (p/s)."""

    background_rois: Annotated[list[Text], Field(min_length=1)] | None = None
    k_sd: NonNegativeFloat | None = None
    fixed: dict[Region, PositiveFloat] | None = None

    @model_validator(mode="after")
    def _some_rule(self) -> LodRule:
        if self.background_rois is None and self.fixed is None:
            raise ValueError("give 'background_rois' (LOD = background mean + k_sd SD), "
                             "'fixed' (LOD per region, p/s), or both")
        if self.k_sd is not None and self.background_rois is None:
            raise ValueError("'k_sd' needs 'background_rois'")
        return self


class LivingImageMapping(_Table):
    """The whole mapping file (see the module docstring)."""

    defaults: ImageFields = Field(default_factory=ImageFields)
    images: Annotated[dict[str, ImageEntry], Field(min_length=1)]
    rois: dict[str, Region] = Field(default_factory=dict)
    ignore_rois: list[Text] = Field(default_factory=list)
    lod: LodRule


_REQUIRED_IMAGE_FIELDS = ("study", "animal", "cell_type", "dose_cells", "time_h", "modality")
_OPTIONAL_IMAGE_FIELDS = ("species", "disease")
_ANIMAL_TRAITS = ("cell_type", "dose_cells", *_OPTIONAL_IMAGE_FIELDS)  # constant per animal
_TABLES: dict[tuple, type[BaseModel]] = {
    (): LivingImageMapping, ("defaults",): ImageFields, ("lod",): LodRule,
}


@dataclass(frozen=True)
class _Image:
    """Resolved metadata of one image: ``[defaults]`` overlaid by its own table."""

    fields: dict[str, object]
    rois: dict[str, str]


def _key_path(loc: Iterable[object]) -> str:
    parts = [str(p) for p in loc if p != "[key]"]
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p) for p in parts)


def _pydantic_problem(file: str, err: dict) -> Problem:
    loc = err["loc"]
    kind = err["type"]
    value = None if isinstance(err.get("input"), dict | list) else err.get("input")  # no repr
    if kind == "extra_forbidden":
        model = _TABLES.get(tuple(loc[:-1]))
        if model is None and len(loc) == 3 and loc[0] == "images":
            model = ImageEntry
        allowed = list(model.model_fields) if model else []
        message = unknown_key_message(str(loc[-1]), allowed)
        value = None
    elif kind == "missing":
        message = f"missing required key '{loc[-1]}'"
    elif kind == "string_pattern_mismatch":
        message = "a region name is snake_case (a-z, 0-9, _), e.g. 'spinal_cord'"
    else:
        message = plain_message(err)
        if loc and loc[-1] == "[key]":
            message = f"invalid key: {message}"
    return Problem(file, message, key=_key_path(loc) or None, value=value)


def load_mapping(path: Path) -> tuple[LivingImageMapping, dict[str, _Image]]:
    """Read and validate a mapping file.

    Parameters
    ----------
    path : Path
        Mapping TOML (schema in the module docstring).

    Returns
    -------
    mapping : LivingImageMapping
        The validated file.
    images : dict of str to _Image
        Per Image Number: metadata with ``[defaults]`` applied, and its ROI → region map.

    Raises
    ------
    DataError
        Every problem in the file, each naming the file and the key.
    """
    return parse_mapping(_read_mapping(path), file=str(path))


def _read_mapping(path: Path) -> str:
    return read_utf8(path, what="the mapping file")  # a byte-order mark is parse_toml's


def parse_mapping(text: str, *, file: str) -> tuple[LivingImageMapping, dict[str, _Image]]:
    """Validate a mapping given as TOML text (see :func:`load_mapping`); ``file`` names it."""
    raw = parse_toml(text, file=file, what="not a valid UTF-8 TOML file")
    try:
        mapping = LivingImageMapping.model_validate(raw)
    except ValidationError as err:
        raise DataError(with_lines([_pydantic_problem(file, e) for e in err.errors()],
                                   text)) from err

    problems: list[Problem] = []
    background = set(mapping.lod.background_rois or ())
    defaults = mapping.defaults.model_dump(exclude_none=True)
    images: dict[str, _Image] = {}
    for key, entry in mapping.images.items():
        fields = defaults | entry.model_dump(exclude_none=True, exclude={"rois"})
        for name in _REQUIRED_IMAGE_FIELDS:
            if name not in fields:
                problems.append(Problem(
                    file, f"missing required key '{name}' (give it in this table or in "
                    "[defaults])", key=_key_path(["images", key])))
        images[key] = _Image(fields, mapping.rois | entry.rois)
    for name in _OPTIONAL_IMAGE_FIELDS:
        given = [k for k, img in images.items() if name in img.fields]
        if given and len(given) < len(images):
            missing = next(k for k in images if k not in given)
            problems.append(Problem(file, f"'{name}' is given for some images but not for "
                                    f"'{missing}'; give it for every image (e.g. in [defaults]) "
                                    "or for none", key=_key_path(["images", missing])))
    lists = {"lod.background_rois": background, "ignore_rois": set(mapping.ignore_rois)}
    both: set[tuple[str, str]] = set()  # a global [rois] entry is named once, not per image
    for key, img in images.items():
        for listed, names in lists.items():
            for roi in sorted(names & set(img.rois)):
                own = roi in mapping.images[key].rois
                where = _key_path(["images", key, "rois", roi] if own else ["rois", roi])
                if (where, listed) not in both:
                    both.add((where, listed))
                    problems.append(Problem(file, f"ROI is both an organ ROI and in {listed}; "
                                            "keep it in one of them", key=where))
    for roi in sorted(background & lists["ignore_rois"]):
        problems.append(Problem(file, "ROI is both in ignore_rois and in lod.background_rois; "
                                "keep it in one of them", key="ignore_rois", value=roi))
    seen: dict[tuple, tuple[str, dict]] = {}
    for key, img in images.items():
        animal = (img.fields.get("study"), img.fields.get("animal"))
        traits = {n: img.fields.get(n) for n in _ANIMAL_TRAITS}
        first_key, first = seen.setdefault(animal, (key, traits))
        for name, value in traits.items():
            if value != first[name]:
                problems.append(Problem(
                    file, f"animal '{animal[1]}' has {name} {first[name]!r} in image "
                    f"'{first_key}' but {value!r} here; one animal has one {name}",
                    key=_key_path(["images", key, name]), value=value))
    if problems:
        raise DataError(with_lines(problems, text))
    return mapping, images


# --------------------------------------------------------------------------- export reading

#: Meaning -> normalised header aliases, most specific first.
_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image number", "image no", "image name", "image"),
    "roi": ("roi", "roi name", "roi label"),
    "flux": ("total flux",),
    "radiance": ("avg radiance", "average radiance", "mean radiance"),
    "radiance_sd": ("stdev radiance", "std dev radiance", "sd radiance", "stdev"),
    "area": ("area", "roi area"),
}
_DISPLAY = {
    "image": "Image Number", "roi": "ROI", "flux": "Total Flux [p/s]",
    "radiance": "Avg Radiance [p/s/cm²/sr]", "radiance_sd": "Stdev Radiance",
    "area": "Area [cm²]",
}
_RULE_COLUMNS = ("radiance", "radiance_sd", "area")
_DELIMITERS = (",", ";", "\t")
_HEADER_SEARCH_LINES = 50
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?", re.ASCII)  # not '５'/'٥'


@dataclass(frozen=True)
class _Row:
    file: str
    line: int
    columns: dict[str, str]  # meaning -> header as written in this file
    image: str
    roi: str
    values: dict[str, float]  # flux, and radiance, radiance_sd, area when the rule needs them


def _normalise(header: str) -> str:
    """Lower-case a header and drop units in brackets (mangled or not) and punctuation."""
    header = re.sub(r"[\[(][^\])]*([\])]|$)", " ", header.lower())
    return " ".join(re.sub(r"[^0-9a-z]+", " ", header).split())


def _meaning(header: str) -> tuple[str, int] | None:
    name = _normalise(header)
    for meaning, aliases in _ALIASES.items():
        if name in aliases:
            return meaning, aliases.index(name)
    return None


def _decode(raw: bytes) -> str | None:
    """Decode an export; ``None`` when it is not text at all."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if b"\x00" in raw:
        return None
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = raw.decode("latin-1")
    if "Ã" in text or "Â" in text:  # UTF-8 once read as latin-1 and saved again
        try:
            text = text.encode("cp1252").decode("utf-8")
        except UnicodeError:
            pass
    return text


def _split(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter), [])


def _records(lines: Sequence[str], start: int, delimiter: str
             ) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """Yield ``(line index, cells)`` for each row of ``lines`` from ``lines[start]`` on.

    A quoted cell may hold line breaks, so a row may take several lines; when those lines are
    not strictly well quoted (a quote left open, or closed inside a cell) or cannot be read,
    the first line is read alone and the next ones as rows of their own. ``cells`` is the
    :class:`csv.Error` of a line that cannot be read.
    """
    while start < len(lines):
        reader = csv.reader(itertools.islice(lines, start, None), delimiter=delimiter)
        while True:
            index = start + reader.line_num
            cells: list[str] | csv.Error
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                cells = err
            end = start + reader.line_num
            if end > index + 1 and (isinstance(cells, csv.Error)
                                    or not _well_quoted(lines[index:end], delimiter)):
                start = index + 1
                try:
                    cells = _split(lines[index], delimiter)
                except csv.Error as err:
                    cells = err
                yield index, cells
                break
            yield index, cells


def _well_quoted(lines: Sequence[str], delimiter: str) -> bool:
    """Whether ``lines`` read as one row when quotes must close right before a delimiter."""
    try:
        next(csv.reader(lines, delimiter=delimiter, strict=True))
    except csv.Error:
        return False
    return True


def _find_header(lines: Sequence[str]) -> tuple[int, str] | None:
    """Return (line index, delimiter) of the first line naming two or more known columns."""
    for index, line in enumerate(lines[:_HEADER_SEARCH_LINES]):
        try:
            scores = {d: len({m[0] for c in _split(line, d) if (m := _meaning(c))})
                      for d in _DELIMITERS}
        except csv.Error:  # e.g. a field over the csv module's size limit: not the header
            continue
        delimiter = max(_DELIMITERS, key=scores.__getitem__)
        if scores[delimiter] >= 2:
            return index, delimiter
    return None


def _parse_number(text: str, *, decimal_comma: bool) -> float | None:
    text = text.strip().replace("\u00a0", "").replace(" ", "")
    if not _NUMBER.fullmatch(text) or ("," in text and not decimal_comma):
        return None
    return float(text.replace(",", "."))


def _read_export(path: Path, *, rule: bool
                 ) -> tuple[list[_Row], list[Problem], set[tuple[str, str]]]:
    """Parse one export into rows; the rule needs radiance, its SD and area as well as flux.

    Returns the valid rows, the problems, and the ``(image, ROI)`` names of the rows refused
    for a problem of their own (so that the caller does not report their absence again).
    """
    file = str(path)
    try:
        raw = Path(path).read_bytes()
        wide = wide_unicode(raw)
        if wide == "UTF-32":  # its BOM begins with UTF-16's: name it first
            return [], [Problem(file, "UTF-32 text, which Living Image does not write; export "
                                "the ROI measurements again (.csv, or .txt in UTF-16)")], set()
        if wide == "UTF-16" and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            return [], [Problem(file, "UTF-16 text without a byte-order mark, which Living "
                                "Image does not write; export the ROI measurements again")], set()
        text = _decode(raw)
    except OSError as err:
        return [], [Problem(file, f"cannot read the export: {err.strerror}")], set()
    except UnicodeDecodeError as err:  # only UTF-16 (it has a BOM) is decoded strictly
        return [], [Problem(file, f"not valid UTF-16 text ({err.reason} at byte {err.start}); "
                            "export the ROI measurements from Living Image again")], set()
    # Lines end at \r\n, \r or \n only (str.splitlines also splits at U+2028, U+0085, \f, ...).
    if text is None:
        return [], [Problem(file, "not text (it holds NUL bytes): not a Living Image ROI "
                            "measurement export (export them from Living Image as .csv or "
                            ".txt)")], set()
    lines = io.StringIO(text, newline="").readlines()
    found = _find_header(lines)
    if found is None:
        return [], [Problem(file, "not a Living Image ROI measurement export: no header line "
                            "with 'Image Number', 'ROI' and 'Total Flux [p/s]' found (export the "
                            "ROI measurements from Living Image as .csv or .txt)")], set()
    header_index, delimiter = found
    headers = _split(lines[header_index], delimiter)
    header_line = header_index + 1

    columns: dict[str, int] = {}
    rank: dict[str, int] = {}
    problems: list[Problem] = []
    for position, header in enumerate(headers):
        if (m := _meaning(header)) is None:
            continue
        meaning, alias_rank = m
        if meaning in columns and rank[meaning] == alias_rank:
            problems.append(Problem(file, f"two columns mean {_DISPLAY[meaning]!r}: "
                                    f"{headers[columns[meaning]]!r} and {header!r}",
                                    row=header_line, column=header))
        elif meaning not in columns or alias_rank < rank[meaning]:
            columns[meaning], rank[meaning] = position, alias_rank
    needed = ("image", "roi", "flux", *(_RULE_COLUMNS if rule else ()))
    unused = {_normalise(h): h for i, h in enumerate(headers) if i not in columns.values()}
    for meaning in needed:
        if meaning not in columns:
            close = closest(_ALIASES[meaning][0], unused)
            hint = f"; did you mean {unused[close]!r}?" if close else ""
            why = " (the background LOD rule in [lod] needs it)" if meaning in _RULE_COLUMNS else ""
            problems.append(Problem(file, f"missing column {_DISPLAY[meaning]!r}{why}{hint}",
                                    row=header_line, column=_DISPLAY[meaning]))
    if problems:
        return [], problems, set()

    names = {meaning: headers[i] for meaning, i in columns.items()}
    rows: list[_Row] = []
    refused: set[tuple[str, str]] = set()
    for index, cells in _records(lines, header_index + 1, delimiter):
        line_no = index + 1
        if isinstance(cells, csv.Error):
            problems.append(Problem(file, f"cannot read this line as a table row ({cells}); "
                                    "check its quotes", row=line_no))
            continue
        if not any(c.strip() for c in cells):
            continue
        row_problems: list[Problem] = []
        if any(c.strip() for c in cells[len(headers):]):
            hint = " (a decimal comma in a comma-separated file?)" if delimiter == "," else ""
            row_problems.append(Problem(file, f"the row has {len(cells)} fields but the header "
                                        f"has {len(headers)}{hint}", row=line_no))
        cells += [""] * (len(headers) - len(cells))
        text_values: dict[str, str] = {}
        for meaning in ("image", "roi"):
            text_values[meaning] = cells[columns[meaning]].strip()
            if not text_values[meaning]:
                row_problems.append(Problem(file, "missing value", row=line_no,
                                            column=names[meaning]))
        values: dict[str, float] = {}
        for meaning in needed[2:]:
            cell = cells[columns[meaning]]
            value = _parse_number(cell, decimal_comma=delimiter != ",")
            if value is None:
                message = ("missing value" if not cell.strip() else
                           "not a number (expected e.g. 1.23E+05"
                           + (" or 1,23E+05)" if delimiter != "," else ")"))
                row_problems.append(Problem(file, message, row=line_no, column=names[meaning],
                                            value=cell or None))
            elif not math.isfinite(value):
                row_problems.append(Problem(file, "too large: overflows to infinity (expected "
                                            "a finite number)", row=line_no,
                                            column=names[meaning], value=cell))
            elif value < 0 or (meaning == "area" and value == 0):
                bound = "> 0" if meaning == "area" else ">= 0"
                extra = (" (export flux as measured, without Living Image's background "
                         "subtraction)" if meaning == "flux" else "")
                row_problems.append(Problem(file, f"must be {bound}{extra}", row=line_no,
                                            column=names[meaning], value=cell))
            else:
                values[meaning] = value
        problems += row_problems
        if not row_problems:
            rows.append(_Row(file, line_no, names, text_values["image"], text_values["roi"],
                             values))
        elif text_values["image"] and text_values["roi"]:
            refused.add((text_values["image"], text_values["roi"]))
    if not rows and not problems:
        problems.append(Problem(file, "the export has a header but no measurements",
                                row=header_line))
    return rows, problems, refused


# --------------------------------------------------------------------------- assembly


def _background(rows: Sequence[_Row]) -> tuple[float, float, float] | None:
    """Pixel mean and SD of radiance over the union of background ROIs, and Ω (sr)."""
    area = sum(r.values["area"] for r in rows)
    weighted = sum(r.values["radiance"] * r.values["area"] for r in rows)
    if weighted <= 0:
        return None
    mean = weighted / area
    second = sum(r.values["area"] * (r.values["radiance_sd"] ** 2 + r.values["radiance"] ** 2)
                 for r in rows) / area
    omega = sum(r.values["flux"] for r in rows) / weighted
    return mean, math.sqrt(max(second - mean**2, 0.0)), omega


def _too_large(bkg_rows: Sequence[_Row], organ: _Row | None = None) -> Problem:
    """Background ROI values whose background or LOD cannot be computed as a finite number."""
    first = bkg_rows[0]
    scaled = (f" scaled to ROI '{organ.roi}' ({organ.file} row {organ.line})"
              if organ is not None else "")
    return Problem(first.file, f"background ROI radiance, its SD or area too large: the "
                   f"background or LOD{scaled} is not a finite number; check the export",
                   row=first.line, column=first.columns["roi"], value=first.roi)


def _once(problems: dict[tuple, list], key: tuple, problem: Problem) -> None:
    """Record a problem once per key, counting repeats."""
    problems.setdefault(key, [problem, 0])[1] += 1


def _unused_fixed(file: str, mapping: LivingImageMapping,
                  images: dict[str, _Image]) -> list[Problem]:
    """Regions of ``[lod] fixed`` that no ROI is mapped to (their LOD would never be used)."""
    mapped = {region for img in images.values() for region in img.rois.values()}
    return [Problem(file, f"no ROI is mapped to region '{region}', so its fixed LOD is never "
                    f"used (mapped regions: {', '.join(sorted(mapped)) or 'none'})"
                    + did_you_mean(region, mapped), key=_key_path(["lod", "fixed", region]),
                    value=lod) for region, lod in (mapping.lod.fixed or {}).items()
            if region not in mapped]


def mapping_vs_spec(file: str, mapping: LivingImageMapping, images: dict[str, _Image],
                    model: ModelSpec) -> list[Problem]:
    """Regions and cell types of a mapping that the model spec does not have.

    Each problem names the mapping key (``rois."ROI 1"``, ``images."IMG1".rois."ROI 3"``,
    ``lod.fixed.lung``, ``images."IMG1".cell_type`` or ``defaults.cell_type``), the value and
    the closest name the spec has.
    """
    regions = model.region_compartments
    problems: list[Problem] = []

    def check(where: list[str], value: str, known, what: str) -> None:
        if value not in known:
            problems.append(Problem(
                file, f"{what} not in spec {model.name} (expected one of {sorted(known)})"
                + did_you_mean(value, known), key=_key_path(where), value=value))

    for roi, region in mapping.rois.items():
        check(["rois", roi], region, regions, "region")
    for key, entry in mapping.images.items():
        for roi, region in entry.rois.items():
            check(["images", key, "rois", roi], region, regions, "region")
    for region in mapping.lod.fixed or {}:
        check(["lod", "fixed", region], region, regions, "region")
    if mapping.defaults.cell_type is not None:
        check(["defaults", "cell_type"], mapping.defaults.cell_type, model.cell_types,
              "cell type")
    for key, entry in mapping.images.items():
        if entry.cell_type is not None:
            check(["images", key, "cell_type"], entry.cell_type, model.cell_types, "cell type")
    return problems


def import_livingimage(exports: Sequence[Path], *, mapping: Path,
                       model: ModelSpec | None = None) -> pd.DataFrame:
    """Convert Living Image ROI exports into the canonical observation table.

    Parameters
    ----------
    exports : sequence of Path
        ROI measurement exports (CSV or tab-separated text); quirks tolerated are listed in
        the module docstring. Fluxes are in photons/s, radiances in p/s/cm²/sr, areas in cm².
    mapping : Path
        Mapping TOML: Image Number → study/animal/cell type/dose/time/modality, ROI name →
        region, and the limit-of-detection rule (schema in the module docstring).
    model : ModelSpec, optional
        Also check the mapping's regions and cell types against this spec
        (:func:`mapping_vs_spec`).

    Returns
    -------
    pandas.DataFrame
        One row per organ ROI (background and ignored ROIs are dropped), columns in the order
        of ``schema.OBSERVATION_COLUMNS`` (``flux``, ``lod`` in photons/s, ``time_h`` in hours,
        ``dose_cells`` in cells), then ``species``/``disease`` when mapped and ``background``
        (photons/s) when ``lod.background_rois`` is given. Text is ``string``, numbers
        ``float64``. Rows are sorted by study, animal, time, modality, region and image; the
        index, named ``row``, is the row number in the written table (header = row 1).

    Raises
    ------
    DataError
        Every problem found in the mapping and the exports, each naming the file, row, column
        and value: missing or ambiguous columns, unparsable numbers, images missing from the
        mapping, unmapped ROI names, images without a background ROI, duplicate measurements.
    UsageError
        When no export is given.
    """
    if not exports:
        raise UsageError("give at least one Living Image export")
    map_file = str(mapping)
    map_text = ""
    try:
        map_text = _read_mapping(Path(mapping))
        spec, images = parse_mapping(map_text, file=map_file)
    except DataError as err:
        spec, images, problems = None, {}, list(err.problems)
    else:
        problems = [] if model is None else mapping_vs_spec(map_file, spec, images, model)
        named = {p.key for p in problems}
        problems += [p for p in _unused_fixed(map_file, spec, images) if p.key not in named]
    rule = spec is not None and spec.lod.background_rois is not None
    rows: list[_Row] = []
    refused: set[tuple[str, str]] = set()  # (image, ROI) of rows already reported as invalid
    for path in exports:
        file_rows, file_problems, file_refused = _read_export(Path(path), rule=rule)
        rows += file_rows
        problems += file_problems
        refused |= file_refused
    if spec is None:
        raise DataError(problems)

    background_rois = set(spec.lod.background_rois or ())
    ignored = set(spec.ignore_rois)
    k_sd = 3.0 if spec.lod.k_sd is None else spec.lod.k_sd
    fixed = spec.lod.fixed or {}
    grouped: dict[tuple, list] = {}  # problems reported once per key, with a repeat count
    seen: dict[tuple[str, str], _Row] = {}
    organs: list[tuple[_Row, _Image, str]] = []
    backgrounds: dict[str, list[_Row]] = {}
    for row in rows:
        if (row.image, row.roi) in seen:
            first = seen[(row.image, row.roi)]
            problems.append(Problem(row.file, f"ROI '{row.roi}' of image '{row.image}' appears "
                                    f"twice (also {first.file} row {first.line})", row=row.line,
                                    column=row.columns["roi"], value=row.roi))
            continue
        seen[(row.image, row.roi)] = row
        image = images.get(row.image)
        if image is None:
            _once(grouped, ("image", row.file, row.image), Problem(
                row.file, f"image not in the mapping {map_file}; add a table "
                f"[images.{json.dumps(row.image)}] with animal, cell_type, dose_cells, time_h, "
                "modality", row=row.line, column=row.columns["image"], value=row.image))
        elif row.roi in background_rois:
            backgrounds.setdefault(row.image, []).append(row)
        elif row.roi in image.rois:
            organs.append((row, image, image.rois[row.roi]))
        elif row.roi not in ignored:
            known = [*image.rois, *background_rois, *ignored]
            _once(grouped, ("roi", row.file, row.roi), Problem(
                row.file, f"ROI not in the mapping {map_file}: map it to a region under [rois] "
                f"(e.g. {json.dumps(row.roi)} = \"lung\"), or list it in lod.background_rois or "
                f"ignore_rois{did_you_mean(row.roi, known)}", row=row.line,
                column=row.columns["roi"], value=row.roi))

    exported = {image for image, _ in seen}
    for key, entry in spec.images.items():  # an image's own ROI names: a typo maps nothing
        if key in exported:
            own = sorted(r for i, r in seen if i == key)
            problems += [Problem(map_file, f"image '{key}' has no ROI '{roi}' in the exports"
                                 f"{did_you_mean(roi, own)}; its ROIs: {', '.join(own)}",
                                 key=_key_path(["images", key, "rois", roi]), value=region)
                         for roi, region in entry.rois.items()
                         if (key, roi) not in seen and (key, roi) not in refused]

    stats: dict[str, tuple[float, float, float] | None] = {}
    records: list[tuple[dict[str, object], _Row]] = []
    for row, image, region in organs:
        record = {**image.fields, "region": region, "image": row.image, "flux": row.values["flux"]}
        if rule:
            bkg_rows = backgrounds.get(row.image, [])
            if row.image not in stats:
                try:
                    stats[row.image] = _background(bkg_rows) if bkg_rows else None
                    overflow = False
                except OverflowError:
                    stats[row.image], overflow = None, True
                if not bkg_rows:
                    if any((row.image, roi) in refused for roi in background_rois):
                        continue  # its background ROI row is invalid, and reported as such
                    problems.append(Problem(row.file, "image has no background ROI (one of "
                                            f"{sorted(background_rois)}), needed for its LOD",
                                            row=row.line, column=row.columns["image"],
                                            value=row.image))
                elif overflow:
                    problems.append(_too_large(bkg_rows))
                elif stats[row.image] is None:
                    first = bkg_rows[0]
                    problems.append(Problem(first.file, "background ROI has zero radiance; "
                                            "cannot scale it to other ROIs", row=first.line,
                                            column=first.columns["roi"], value=first.roi))
            if (bkg := stats[row.image]) is None:
                continue
            mean, sd, omega = bkg
            record["background"] = mean * row.values["area"] * omega
            record["lod"] = (mean + k_sd * sd) * row.values["area"] * omega
            if not math.isfinite(record["background"]) or not math.isfinite(
                    (mean + sd) * row.values["area"] * omega):
                problems.append(_too_large(bkg_rows, row))
                continue
            if not math.isfinite(record["lod"]):
                _once(grouped, ("k_sd",), Problem(
                    map_file, f"LOD = background mean + k_sd × SD is not finite "
                    f"({record['lod']}); use a k_sd such as 3", key="lod.k_sd", value=k_sd))
                continue
        if region in fixed:
            record["lod"] = fixed[region]
        elif not rule:
            _once(grouped, ("lod", region), Problem(
                map_file, f"no LOD for region '{region}' (ROI '{row.roi}' of image "
                f"'{row.image}'); add it to [lod] fixed, or give lod.background_rois",
                key=_key_path(["lod", "fixed", region])))
            continue
        if not record["lod"] > 0:
            problems.append(Problem(row.file, "LOD from the background ROIs is 0; check them",
                                    row=row.line, column=row.columns["roi"], value=row.roi))
            continue
        records.append((record, row))

    for problem, count in grouped.values():
        if count > 1:
            problem = dataclasses.replace(problem, message=f"{problem.message} ({count} rows)")
        problems.append(problem)
    if not problems and not records:
        problems.append(Problem(", ".join(map(str, exports)), "no organ ROIs found "
                                "(every ROI is a background or ignored ROI)"))
    if not problems:  # the table must pass the contract that `lanternpk validate` checks
        table, sources = _table(records)
        problems = _contract_problems(table, sources, spec, map_file)
    if problems:  # the mapping's keys with their lines (the exports' rows have theirs)
        raise DataError(with_lines(problems, map_text))
    return table


def _contract_problems(table: pd.DataFrame, sources: Sequence[_Row],
                       spec: LivingImageMapping, map_file: str) -> list[Problem]:
    """The observation contract's problems with ``table``, at the mapping key or export row.

    A value the mapping gives (``animal``, ``time_h``, ...) is named by its key; a row of
    ``table`` that a message refers to, by its image and ROI (the table is not written yet).
    """
    def source(row: int) -> _Row:
        return sources[row - FIRST_DATA_ROW]

    def named(match: re.Match) -> str:
        if not FIRST_DATA_ROW <= int(match[1]) < FIRST_DATA_ROW + len(sources):
            return match[0]  # e.g. in a label quoted in the message
        row = source(int(match[1]))
        return f"image '{row.image}' (ROI '{row.roi}', {row.file} row {row.line})"

    problems: dict[Problem, None] = {}  # each once: an image's ROIs share its mapping keys
    for problem in validate_observations(table, map_file)[1]:
        message = re.sub(r"\brow (\d+)", named, problem.message)
        if problem.row is None:  # not expected: the columns are built here
            problems[Problem(map_file, message, column=problem.column)] = None
            continue
        row, name = source(problem.row), problem.column
        if name in _REQUIRED_IMAGE_FIELDS + _OPTIONAL_IMAGE_FIELDS:
            own = getattr(spec.images[row.image], name) is not None
            key = _key_path(["images", row.image, name] if own else ["defaults", name])
            value = getattr(spec.images[row.image] if own else spec.defaults, name)
            problems[Problem(map_file, message, key=key, value=value)] = None
        else:
            problems[Problem(row.file, message, row=row.line, column=row.columns.get(name),
                             value=problem.value)] = None
    return list(problems)


def _table(records: list[tuple[dict[str, object], _Row]]
           ) -> tuple[pd.DataFrame, list[_Row]]:
    """Build the canonical table, refusing two measurements with the same key.

    Returns the table and, for each of its rows in order, the export row it comes from.
    """
    optional = [c for c in OPTIONAL_OBSERVATION_COLUMNS if c in records[0][0]]
    dtypes = OBSERVATION_COLUMNS | {c: OPTIONAL_OBSERVATION_COLUMNS[c] for c in optional}
    table = pd.DataFrame.from_records([r for r, _ in records], columns=list(dtypes))
    sources = [row for _, row in records]
    duplicated = table.duplicated(list(OBSERVATION_KEY), keep=False)
    if duplicated.any():
        problems = []
        for _, group in table[duplicated].groupby(list(OBSERVATION_KEY), sort=False):
            first, *rest = (sources[i] for i in group.index)
            for row in rest:
                problems.append(Problem(
                    row.file, f"same study, animal, time_h, region, modality and image as "
                    f"{first.file} row {first.line} (image '{first.image}', ROI "
                    f"'{first.roi}'); map each ROI of an image to its own region",
                    row=row.line, column=row.columns["roi"], value=row.roi))
        raise DataError(problems)
    table = table.astype(dtypes).sort_values(
        ["study", "animal", "time_h", "modality", "region", "image"], kind="mergesort")
    sources = [sources[i] for i in table.index]
    table.index = pd.RangeIndex(FIRST_DATA_ROW, FIRST_DATA_ROW + len(table), name=INDEX_NAME)
    return table, sources


# --------------------------------------------------------------------------- output

def check_output_suffix(path: str | Path) -> None:
    """Refuse an observations file name that is neither ``.csv`` nor a Parquet name.

    :func:`lanternpk.io.write_table_atomic` writes Parquet for the names of
    :data:`lanternpk.io.PARQUET_SUFFIXES` (ignoring case) and CSV for any other; ``.csv`` is
    the only honest name for the latter.

    Parameters
    ----------
    path : str or Path
        The observations file to be written.

    Raises
    ------
    UsageError
        Another suffix (e.g. ``.xlsx``, ``.txt``) or none; the message names the path and the
        supported suffixes.
    """
    suffix = Path(path).suffix
    if suffix.lower() in (".csv", *PARQUET_SUFFIXES):
        return
    what = f"'{suffix}' is not a supported output format" if suffix else "it has no suffix"
    raise UsageError(f"cannot write {path}: {what}; give a file name ending in .csv (CSV), "
                     f"{' or '.join(PARQUET_SUFFIXES)} (Parquet)")
