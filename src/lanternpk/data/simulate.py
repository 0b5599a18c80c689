"""Synthetic studies from a truth file: exact kinetics, the bioluminescence measurement
model, and the truth (parameters and derived estimands) written beside the data.

The truth TOML (see ``data/truths/``) fixes per-cell-type first-pass fractions, release and
loss rates, animal-to-animal variation, photons per cell, transmission per modality and
region, image gain, residual noise, background and LOD, and the study design.

Generative model (DESIGN.md "Measurement"), per ROI:
``flux = (photons_per_cell × transmission × live cells × image gain + background) × exp(ε)``,
``ε ~ Normal(0, residual_sd)``; ``lod = background × (1 + 3 background_cv)``.
A ``whole_body`` ROI sums every organ through its own in vivo transmission; ex vivo regions
are compartments (excised organs).
Animal effects: first-pass fractions vary on the additive log-ratio scale
``log(f_j / f_other)``, rates on the log scale, each with the truth's sd.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from lanternpk import __version__, interrupt
from lanternpk.data.schema import OBSERVATION_COLUMNS
from lanternpk.errors import CONTROL_CHARACTER, DataError, Problem, UsageError
from lanternpk.estimands import (
    DETECTION_GRID_D,
    ENGRAFTED_DAYS,
    first_undetectable_day,
    kinetic_estimands,
)
from lanternpk.io import staging_directory, write_table_atomic, write_text_atomic
from lanternpk.solver.closed_form import organ_cells
from lanternpk.tomlfile import KeyedProblems, load_toml_model

WHOLE_BODY = "whole_body"
Positive = Annotated[float, Field(gt=0)]
#: A transmission: the fraction of emitted photons that reach the camera, in (0, 1].
Transmission = Annotated[float, Field(gt=0, le=1)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
#: Smallest loss rate, 1/day: a half-life of 1900 years. Below ~1e-308 the half-life is
#: infinite, which truth.json cannot hold.
MIN_LOSS_PER_D = 1e-6
#: Most animals in one sacrifice group, and most calibration replicates.
MAX_ANIMALS_PER_GROUP = 10_000
MAX_REPLICATES = 1_000
#: Most rows of a simulated table (observations, standard curve) and most animals: every
#: row is built in memory, so a larger count would exhaust it rather than fail.
MAX_ROWS = 1_000_000


def _printable(text: str) -> str:
    if CONTROL_CHARACTER.search(text):
        raise ValueError("holds a control character (a tab, line break or terminal escape); "
                         "it is written to the study's observations")
    return text


def _label(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty (it is written to the study's labels)")
    if text != text.strip():
        raise ValueError("leading or trailing spaces; labels are compared exactly")
    return _printable(text)


def _no_duplicates(what: str) -> AfterValidator:
    def check(values: list) -> list:
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            shown = ", ".join(repr(v) if isinstance(v, str) else f"{v:g}" for v in repeated)
            raise ValueError(f"repeated value(s) {shown}; each {what} is listed once")
        return values
    return AfterValidator(check)


def _loss_rate(rate: float) -> float:
    if rate < MIN_LOSS_PER_D:
        raise ValueError(f"must be at least {MIN_LOSS_PER_D:g} per day (a half-life of 1900 "
                         "years, beyond any study)")
    return rate


#: A label written into the observations (study, cell type, region): not empty, no
#: surrounding spaces, no control characters.
Label = Annotated[str, AfterValidator(_label)]
#: Free text written into the observations (species, disease): no control characters.
Text = Annotated[str, AfterValidator(_printable)]
#: The regions imaged in one modality, each listed once.
Regions = Annotated[list[Label], _no_duplicates("region")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class StudyInfo(_Strict):
    name: Label
    species: Text
    disease: Text
    dose_cells: Positive
    description: str = ""


class Sacrifice(_Strict):
    time_h: Positive
    animals: Annotated[int, Field(ge=1, le=MAX_ANIMALS_PER_GROUP)]


class Design(_Strict):
    cell_types: Annotated[list[Label], Field(min_length=1), _no_duplicates("cell type")]
    in_vivo_times_h: Annotated[list[Annotated[float, Field(ge=0)]],
                               _no_duplicates("imaging time")]
    in_vivo_regions: Regions
    ex_vivo_regions: Regions
    sacrifice: list[Sacrifice] = Field(min_length=1)

    @model_validator(mode="after")
    def _measured(self) -> Design:
        last = max(group.time_h for group in self.sacrifice)
        if not self.ex_vivo_regions and not (
                self.in_vivo_regions and any(t <= last for t in self.in_vivo_times_h)):
            raise ValueError("the study would have no measurements: ex_vivo_regions is empty, "
                             "and no in_vivo_regions are imaged at or before the last "
                             f"sacrifice ({last:g} h)")
        times = sorted(self.in_vivo_times_h)
        animals = len(self.cell_types) * sum(group.animals for group in self.sacrifice)
        rows = len(self.cell_types) * sum(
            group.animals * (len(self.ex_vivo_regions) + len(self.in_vivo_regions)
                             * bisect.bisect_right(times, group.time_h))
            for group in self.sacrifice)
        if max(animals, rows) > MAX_ROWS:
            raise KeyedProblems([("sacrifice", None, f"gives {animals:,} animals and {rows:,} "
                                  f"observation rows; at most {MAX_ROWS:,} of each")])
        return self


class CellKinetics(_Strict):
    first_pass: dict[str, Fraction]
    release_per_d: Annotated[float, Field(ge=0)]
    loss_per_d: dict[str, Annotated[float, AfterValidator(_loss_rate)]]


class Kinetics(_Strict):
    compartments: Annotated[list[Label], Field(min_length=1), _no_duplicates("compartment")]
    filter: str
    blood_efflux_per_d: Positive | None = None
    cell_types: dict[str, CellKinetics]


class Variation(_Strict):
    first_pass_sd: Annotated[float, Field(ge=0)]
    release_sd: Annotated[float, Field(ge=0)]
    loss_sd: Annotated[float, Field(ge=0)]


class Measurement(_Strict):
    photons_per_cell: Positive
    image_gain_sd: Annotated[float, Field(ge=0)]
    residual_sd: Annotated[float, Field(ge=0)]
    transmission_in_vivo: dict[str, Transmission]
    transmission_ex_vivo: dict[str, Transmission]
    background_in_vivo: dict[str, Positive]
    background_ex_vivo: dict[str, Positive]
    background_cv: Annotated[float, Field(ge=0)]


class Calibration(_Strict):
    in_vitro_cells: list[Positive] = Field(min_length=2)
    replicates: Annotated[int, Field(ge=1, le=MAX_REPLICATES)]
    residual_sd: Annotated[float, Field(ge=0)]
    background: Annotated[float, Field(ge=0)]
    ex_vivo_cells: list[Positive] = []
    ex_vivo_regions: Regions = []

    @model_validator(mode="after")
    def _bounded(self) -> Calibration:
        rows = self.replicates * (len(self.in_vitro_cells)
                                  + len(self.ex_vivo_regions) * len(self.ex_vivo_cells))
        if rows > MAX_ROWS:
            raise KeyedProblems([("replicates", self.replicates, f"gives {rows:,} standard-"
                                  f"curve rows; at most {MAX_ROWS:,}")])
        return self


class Truth(_Strict):
    """A truth file: the design and every parameter of the data-generating process."""

    study: StudyInfo
    design: Design
    kinetics: Kinetics
    variation: Variation
    measurement: Measurement
    calibration: Calibration

    @model_validator(mode="after")
    def _consistent(self) -> Truth:
        organs = self.kinetics.compartments
        problems = []  # (dotted key, value, message)
        if WHOLE_BODY in organs:
            problems.append(("kinetics.compartments", WHOLE_BODY, "is the in vivo region that "
                             "sums every compartment; give the compartment another name"))
        if self.kinetics.filter not in organs:
            problems.append(("kinetics.filter", self.kinetics.filter, f"is not in {organs}"))
        if set(self.kinetics.cell_types) != set(self.design.cell_types):
            problems.append(("kinetics.cell_types", None, "must match design.cell_types"))
        for name, ck in self.kinetics.cell_types.items():
            for key in ("first_pass", "loss_per_d"):
                if set(getattr(ck, key)) != set(organs):
                    problems.append((f"kinetics.cell_types.{name}.{key}", None,
                                     f"must name {organs}"))
            if sum(ck.first_pass.values()) >= 1:
                problems.append((f"kinetics.cell_types.{name}.first_pass", None, "sums to ≥ 1"))
        for region in self.design.ex_vivo_regions:
            if region not in organs:
                problems.append(("design.ex_vivo_regions", region, f"is not a compartment "
                                 f"{organs}; ex vivo images are of excised organs"))
        m = self.measurement
        for region in self.design.in_vivo_regions:
            if region != WHOLE_BODY and region not in m.transmission_in_vivo:
                problems.append(("measurement.transmission_in_vivo", None,
                                 f"lacks region '{region}'"))
            if region not in m.background_in_vivo:
                problems.append(("measurement.background_in_vivo", None,
                                 f"lacks region '{region}'"))
        for region in self.design.ex_vivo_regions + self.calibration.ex_vivo_regions:
            if region not in m.transmission_ex_vivo:
                problems.append(("measurement.transmission_ex_vivo", None,
                                 f"lacks region '{region}'"))
        for region in self.design.ex_vivo_regions:
            if region not in m.background_ex_vivo:
                problems.append(("measurement.background_ex_vivo", None,
                                 f"lacks region '{region}'"))
        for organ in sorted(set(m.transmission_in_vivo) - set(organs)):
            problems.append(("measurement.transmission_in_vivo", organ,
                             f"names a region that is not a compartment {organs}"))
        if problems:
            raise KeyedProblems(problems)
        return self

    @property
    def organs(self) -> list[str]:
        return list(self.kinetics.compartments)

    @property
    def filter_index(self) -> int:
        return self.organs.index(self.kinetics.filter)

    def population_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Typical-animal parameters stacked by cell type (design order).

        Returns first-pass fractions (n_cell_types, n_organs), release rates
        (n_cell_types,) in 1/day and loss rates (n_cell_types, n_organs) in 1/day.
        """
        cts = [self.kinetics.cell_types[c] for c in self.design.cell_types]
        first_pass = np.array([[c.first_pass[o] for o in self.organs] for c in cts])
        release = np.array([c.release_per_d for c in cts])
        loss = np.array([[c.loss_per_d[o] for o in self.organs] for c in cts])
        return first_pass, release, loss


def load_truth(path: str | Path) -> Truth:
    """Read and validate a truth TOML file (raises DataError naming file and key)."""
    return load_toml_model(path, Truth)


def animal_ids(design: Design, cell_type: str) -> list[str]:
    """A cell type's animals, ``muse01``…: one number width for all, so ids never collide
    (``m`` + ``101`` and ``m1`` + ``01`` would)."""
    n = sum(group.animals for group in design.sacrifice)
    width = max(2, len(str(n)))
    return [f"{cell_type}{number:0{width}d}" for number in range(1, n + 1)]


def image_id(animal: str, modality: str, time_h: float) -> str:
    """An image's id, ``muse01_in_vivo_24h``: the time in full where ``:g`` would round it,
    so two times never share an image."""
    time_h = float(time_h)
    short = f"{time_h:g}"
    return f"{animal}_{modality}_{short if float(short) == time_h else repr(time_h)}h"


@dataclass
class SimulatedStudy:
    """A simulated study: observations, standard curve, and the truth behind them."""

    truth: Truth
    seed: int
    observations: pd.DataFrame
    calibration: pd.DataFrame
    animals: pd.DataFrame
    estimands: list[dict] = field(default_factory=list)

    def describe(self) -> str:
        obs = self.observations
        return (
            f"{self.truth.study.name}: {obs['animal'].nunique()} animals, {len(obs)} ROI "
            f"measurements ({(obs['flux'] < obs['lod']).mean():.0%} below LOD), "
            f"{len(self.calibration)} standard-curve rows"
        )


def _animal_parameters(truth: Truth, rng: np.random.Generator) -> pd.DataFrame:
    """Draw every animal's kinetic parameters and its sacrifice time."""
    rows = []
    var = truth.variation
    for ct_name in truth.design.cell_types:
        ck = truth.kinetics.cell_types[ct_name]
        f = np.array([ck.first_pass[o] for o in truth.organs])
        k = np.array([ck.loss_per_d[o] for o in truth.organs])
        ids = iter(animal_ids(truth.design, ct_name))
        for group in truth.design.sacrifice:
            for _ in range(group.animals):
                # a first-pass fraction of 0 (the cell type never homes there) is 0 in every
                # animal: log 0 = −inf, exp(−inf) = 0
                with np.errstate(divide="ignore"):
                    log_ratio = np.log(f / (1.0 - f.sum()))
                log_ratio = log_ratio + var.first_pass_sd * rng.standard_normal(f.size)
                expo = np.exp(log_ratio)
                row = {
                    "animal": next(ids),
                    "cell_type": ct_name,
                    "sacrifice_h": group.time_h,
                    "release_per_d": ck.release_per_d
                    * np.exp(var.release_sd * rng.standard_normal()),
                }
                f_animal = expo / (1.0 + expo.sum())
                k_animal = k * np.exp(var.loss_sd * rng.standard_normal(k.size))
                for organ, fa, ka in zip(truth.organs, f_animal, k_animal, strict=True):
                    row[f"first_pass_{organ}"] = fa
                    row[f"loss_per_d_{organ}"] = ka
                rows.append(row)
    return pd.DataFrame(rows)


def _live_cells(truth: Truth, animal: pd.Series, times_h: np.ndarray) -> np.ndarray:
    """Live cells per organ of one animal at ``times_h``, shape (n_times, n_organs)."""
    f = animal[[f"first_pass_{o}" for o in truth.organs]].to_numpy(float)
    k = animal[[f"loss_per_d_{o}" for o in truth.organs]].to_numpy(float)
    efflux = truth.kinetics.blood_efflux_per_d
    fraction = organ_cells(
        f, np.asarray(animal["release_per_d"], dtype=float), k, np.asarray(times_h) / 24.0,
        filter_index=truth.filter_index, n_organs=len(truth.organs),
        blood_efflux=None if efflux is None else np.asarray(efflux),
    )
    return truth.study.dose_cells * fraction


def _observations(truth: Truth, animals: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    m = truth.measurement
    organ_index = {o: i for i, o in enumerate(truth.organs)}
    in_vivo_t = np.array([t for o, t in m.transmission_in_vivo.items()])
    in_vivo_idx = [organ_index[o] for o in m.transmission_in_vivo]
    rows = []
    for _, animal in animals.iterrows():
        times = [t for t in truth.design.in_vivo_times_h if t <= animal["sacrifice_h"]]
        sessions = [("in_vivo", t) for t in times] + [("ex_vivo", animal["sacrifice_h"])]
        cells = _live_cells(truth, animal, np.array([t for _, t in sessions]))
        for (modality, time_h), live in zip(sessions, cells, strict=True):
            gain = np.exp(m.image_gain_sd * rng.standard_normal())
            image = image_id(animal["animal"], modality, time_h)
            if modality == "in_vivo":
                regions, background = truth.design.in_vivo_regions, m.background_in_vivo
            else:
                regions, background = truth.design.ex_vivo_regions, m.background_ex_vivo
            for region in regions:
                if region == WHOLE_BODY:
                    light = m.photons_per_cell * float(in_vivo_t @ live[in_vivo_idx])
                else:
                    transmission = (
                        m.transmission_in_vivo if modality == "in_vivo" else m.transmission_ex_vivo
                    )[region]
                    light = m.photons_per_cell * transmission * live[organ_index[region]]
                expected = light * gain + background[region]
                rows.append({
                    "study": truth.study.name,
                    "animal": animal["animal"],
                    "cell_type": animal["cell_type"],
                    "dose_cells": truth.study.dose_cells,
                    "time_h": float(time_h),
                    "region": region,
                    "modality": modality,
                    "image": image,
                    "flux": expected * np.exp(m.residual_sd * rng.standard_normal()),
                    "lod": background[region] * (1.0 + 3.0 * m.background_cv),
                    "species": truth.study.species,
                    "disease": truth.study.disease,
                    "background": background[region],
                })
    table = pd.DataFrame(rows)
    for column, dtype in OBSERVATION_COLUMNS.items():
        table[column] = table[column].astype(dtype)
    return table


def _calibration(truth: Truth, rng: np.random.Generator) -> pd.DataFrame:
    cal, m = truth.calibration, truth.measurement
    rows = []
    for cells in cal.in_vitro_cells:
        for _ in range(cal.replicates):
            light = m.photons_per_cell * cells
            rows.append({"cells": cells, "setting": "in_vitro", "region": "", "light": light})
    for region in cal.ex_vivo_regions:
        for cells in cal.ex_vivo_cells:
            for _ in range(cal.replicates):
                light = m.photons_per_cell * m.transmission_ex_vivo[region] * cells
                rows.append(
                    {"cells": cells, "setting": "ex_vivo", "region": region, "light": light}
                )
    table = pd.DataFrame(rows)
    noise = np.exp(cal.residual_sd * rng.standard_normal(len(table)))
    table["flux"] = (table.pop("light") + cal.background) * noise
    return table[["cells", "flux", "setting", "region"]]


def truth_estimands(truth: Truth) -> list[dict]:
    """Estimands of the typical animal (DESIGN.md), as records of the summary contract."""
    first_pass, release, loss = truth.population_arrays()
    efflux = truth.kinetics.blood_efflux_per_d
    kin = kinetic_estimands(
        first_pass, release, loss, filter_index=truth.filter_index,
        blood_efflux=None if efflux is None else np.full(release.shape, efflux),
    )
    records = []

    def add(name, ct, region, value, time_d=None, modality=None):
        records.append({"name": name, "cell_type": ct, "region": region, "time_d": time_d,
                        "modality": modality, "value": float(value)})

    for c, ct in enumerate(truth.design.cell_types):
        for o, organ in enumerate(truth.organs):
            add("first_pass_fraction", ct, organ, kin["first_pass_fraction"][c, o])
            add("homing_fraction", ct, organ, kin["homing_fraction"][c, o])
            add("half_life_d", ct, organ, kin["half_life_d"][c, o])
            for d, day in enumerate(ENGRAFTED_DAYS):
                add("engrafted_fraction", ct, organ, kin["engrafted_fraction"][c, d, o],
                    time_d=int(day))
    records += _detection_estimands(truth, first_pass, release, loss)
    return records


def _detection_estimands(truth, first_pass, release, loss) -> list[dict]:
    """`time_to_undetectable_d` per region and modality, typical animal, gain 1."""
    m = truth.measurement
    efflux = truth.kinetics.blood_efflux_per_d
    grid = np.broadcast_to(DETECTION_GRID_D, (*release.shape, DETECTION_GRID_D.size))
    cells = truth.study.dose_cells * organ_cells(
        first_pass, release, loss, grid, filter_index=truth.filter_index,
        n_organs=len(truth.organs),
        blood_efflux=None if efflux is None else np.full(release.shape, efflux),
    )  # (cell_type, grid, organ)
    records = []
    for modality, regions, transmission, background in (
        ("in_vivo", truth.design.in_vivo_regions, m.transmission_in_vivo, m.background_in_vivo),
        ("ex_vivo", truth.design.ex_vivo_regions, m.transmission_ex_vivo, m.background_ex_vivo),
    ):
        for region in regions:
            if region == WHOLE_BODY:
                weights = np.array([transmission.get(o, 0.0) for o in truth.organs])
            else:
                weights = np.array([transmission[region] if o == region else 0.0
                                    for o in truth.organs])
            signal = m.photons_per_cell * cells @ weights + background[region]
            lod = background[region] * (1.0 + 3.0 * m.background_cv)
            days = first_undetectable_day(signal, lod)
            for c, ct in enumerate(truth.design.cell_types):
                records.append({"name": "time_to_undetectable_d", "cell_type": ct,
                                "region": region, "time_d": None, "modality": modality,
                                "value": float(days[c]) if np.isfinite(days[c]) else None})
    return records


def simulate_study(truth: Truth, *, seed: int) -> SimulatedStudy:
    """Simulate one study from ``truth`` with a fixed seed (same seed, same data).

    Extreme truth values can give numbers that are not finite; :func:`write_study` refuses
    to write those, naming the truth keys to check.
    """
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore", invalid="ignore"):  # no RuntimeWarning before the error
        animals = _animal_parameters(truth, rng)
        observations = _observations(truth, animals, rng)
        calibration = _calibration(truth, rng)
        estimands = truth_estimands(truth)
    return SimulatedStudy(truth=truth, seed=seed, observations=observations,
                          calibration=calibration, animals=animals, estimands=estimands)


#: Truth keys that can make a simulated number overflow or be NaN, per simulated column.
_LIKELY_KEYS = {
    "flux": ("study.dose_cells", "measurement.photons_per_cell", "measurement.image_gain_sd",
             "measurement.residual_sd", "variation.first_pass_sd", "variation.release_sd",
             "variation.loss_sd"),
    "lod": ("measurement.background_in_vivo", "measurement.background_ex_vivo",
            "measurement.background_cv"),
    "background": ("measurement.background_in_vivo", "measurement.background_ex_vivo"),
}
_LIKELY_CALIBRATION_KEYS = ("calibration.in_vitro_cells", "calibration.ex_vivo_cells",
                            "calibration.residual_sd", "calibration.background",
                            "measurement.photons_per_cell")


def _check_finite(study: SimulatedStudy, file: str) -> None:
    """Refuse a study whose simulated numbers are not finite (validate would reject it)."""
    problems = []
    tables = (("observations", study.observations, _LIKELY_KEYS),
              ("standard curve", study.calibration, {"flux": _LIKELY_CALIBRATION_KEYS}))
    for what, table, likely in tables:
        for column, keys in likely.items():
            bad = ~np.isfinite(table[column].to_numpy(float))
            if bad.any():
                problems.append(Problem(
                    file, f"the simulated {what} {column} is not a finite number in "
                    f"{int(bad.sum())} of {len(table)} rows (too large, or NaN); check "
                    + ", ".join(keys) + "; nothing was written"))
    if problems:
        raise DataError(problems)


def _check_study_directory(out_dir: Path, names: list[str], truth_file: Path) -> None:
    """Refuse a study directory whose writing would destroy anything of the user's.

    Checked before anything is moved into ``out_dir``, so that a refused run changes nothing.

    Parameters
    ----------
    out_dir : Path
        The study directory, as the user gave it.
    names : list of str
        The files that will be written into ``out_dir``.
    truth_file : Path
        The truth file read, which must not be overwritten.

    Raises
    ------
    UsageError
        ``out_dir`` or one of its ``names`` is ``truth_file``; ``out_dir`` is a file; it
        holds one of ``names`` but no ``provenance.json`` of an earlier ``lanternpk
        simulate``; or one of ``names`` there is not a regular file (e.g. a directory).
    """
    targets = [out_dir / name for name in names]
    for target in (out_dir, *targets):
        if target.exists() and os.path.samefile(target, truth_file):
            raise UsageError(f"refusing to write {target}: it is the truth file {truth_file} "
                             "being simulated; choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"refusing to write a study into {out_dir}: it is a file")
    if out_dir.is_symlink() and not out_dir.exists():  # before: "File exists" after the work
        raise UsageError(f"refusing to write a study into {out_dir}: it is a broken symbolic "
                         f"link (to {os.readlink(out_dir)})")
    present = [target for target in targets if os.path.lexists(target)]
    if not present:
        return
    try:
        earlier = json.loads((out_dir / "provenance.json").read_text(encoding="utf-8"))
        simulated = isinstance(earlier, dict) and earlier.get("synthetic") is True \
            and str(earlier.get("generated_by", "")).startswith("lanternpk")
    except (OSError, ValueError):
        simulated = False
    if not simulated:
        raise UsageError(f"refusing to overwrite {present[0]}: {out_dir} does "
                         "not hold a study written by `lanternpk simulate` (no provenance.json "
                         "marked synthetic); choose another --out")
    for target in present:
        if not target.is_file():
            kind = "a directory" if target.is_dir() else "not a regular file"
            raise UsageError(f"refusing to write a study into {out_dir}: {target} is {kind}")


def write_study(
    study: SimulatedStudy, out_dir: str | Path, *, truth_file: str | Path
) -> list[Path]:
    """Write observations, standard curve, truth and provenance into ``out_dir``.

    Files are first written to a temporary directory beside ``out_dir`` and moved in only
    when all of them are complete and every file they replace has been checked;
    ``provenance.json``, the mark of a simulated study, is moved last, so that a replace
    cut short still leaves a study that a new ``lanternpk simulate`` may overwrite.
    """
    out_dir = Path(out_dir)
    _check_finite(study, str(truth_file))
    names = ["observations.csv", "calibration.csv", "truth.json", "provenance.json"]
    _check_study_directory(out_dir, names, Path(truth_file))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    truth_bytes = Path(truth_file).read_bytes()
    truth_json = {
        "synthetic": True,
        "study": study.truth.study.model_dump(),
        "parameters": study.truth.model_dump(),
        "animals": study.animals.to_dict(orient="records"),
        "estimands": study.estimands,
    }
    provenance = {
        "synthetic": True,
        "note": "Synthetic data simulated by lanternpk; not measurements from animals.",
        "generated_by": f"lanternpk {__version__} simulate",
        "command": ["lanternpk", "simulate", str(truth_file), "--seed", str(study.seed),
                    "--out", str(out_dir)],
        "truth_file": str(truth_file),
        "truth_sha256": hashlib.sha256(truth_bytes).hexdigest(),
        "seed": study.seed,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "files": ["observations.csv", "calibration.csv", "truth.json"],
    }
    staging = staging_directory(out_dir)
    try:
        write_table_atomic(staging / names[0], study.observations)
        write_table_atomic(staging / names[1], study.calibration)
        write_text_atomic(staging / names[2], json.dumps(truth_json, indent=1) + "\n")
        write_text_atomic(staging / names[3], json.dumps(provenance, indent=1) + "\n")
        interrupt.check()  # a Ctrl-C that was lost on the way stops before any move
        out_dir.mkdir(exist_ok=True)
        for name in names:  # provenance.json last
            try:
                os.replace(staging / name, out_dir / name)
            except OSError as err:  # name the user's path, not the staging directory's
                raise UsageError(f"cannot write {out_dir / name}: {err.strerror or err}") \
                    from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in names]
