"""`lanternpk fit`: validate, build, sample, check, summarise, and write a run directory.

A run directory holds ``posterior.nc`` (ArviZ NetCDF: posterior, sample_stats, prior,
observed and constant data; its attributes carry the provenance, the design record, the
diagnostics and the canonical observations), ``provenance.json``, ``diagnostics.json``,
``summary.json`` (the DESIGN.md contract) and, when a convergence check failed,
``DIAGNOSTICS_FAILED`` (ARCHITECTURE.md, "Run directory"). It is written to a temporary
directory beside the target and renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import arviz as az
import pandas as pd

from lanternpk import __version__
from lanternpk.argtypes import not_a_file
from lanternpk.data.load import load_calibration, load_observations
from lanternpk.diagnostics import check_convergence, format_check_value
from lanternpk.digest import file_sha256, load_unchanged
from lanternpk.errors import DataError, Problem, UsageError, load_all
from lanternpk.estimands import format_probability, summarize_estimands
from lanternpk.inference import SamplerSettings, sample, sample_prior
from lanternpk.io import (
    check_replaceable_directory,
    check_writable,
    json_text,
    replacing_directory,
)
from lanternpk.model import (
    ModelData,
    build_model,
    calibration_problems,
    parameter_names,
    prepare_data,
)
from lanternpk.run_records import run_record_problems
from lanternpk.spec import ModelSpec, load_spec

POSTERIOR_FILE = "posterior.nc"
#: Attribute of ``posterior.nc`` holding the run's canonical observations as CSV text.
OBSERVATIONS_ATTR = "lanternpk_observations"
#: Everything lanternpk writes into a run directory: fit, then ppc (``ppc/``) and compare
#: (kept equal to ppc.PPC_DIR, compare.COMPARE_FILE and ANIMALS_FILE by a test).
#: ``fit --overwrite`` replaces a run only when it holds nothing else.
RUN_ENTRIES = frozenset({POSTERIOR_FILE, "provenance.json", "diagnostics.json", "summary.json",
                         "DIAGNOSTICS_FAILED", "ppc", "compare.json", "compare_animals.json"})
PRIOR_DRAWS = 1000
#: Parameters whose prior draws are kept to tell findings from priors.
REPORTED_PARAMETERS = ["first_pass", "release", "loss", "photons_per_cell",
                       "transmission_in_vivo", "transmission_ex_vivo"]
_LIBRARIES = ("numpy", "pandas", "pymc", "pytensor", "arviz", "jax", "jaxlib", "numpyro",
              "nutpie", "blackjax", "scipy", "xarray")


def library_versions() -> dict[str, str]:
    """Versions of Python and the numerical libraries this run used."""
    versions = {"lanternpk": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def design_record(spec: ModelSpec, obs: pd.DataFrame, data: ModelData) -> dict:
    """Constants that turn parameters into estimands: doses, LODs, backgrounds, organs.

    Per cell type the dose is the median dose of its animals (cells); per region × modality
    the LOD and background are medians over its ROIs (photons/s). Background is
    ``None`` where the model estimates it (no ``background`` column); the estimands then
    take each posterior draw's own background.
    """
    animal_doses = obs.groupby(["cell_type", "study", "animal"], sort=False)["dose_cells"].first()
    dose = {ct: float(animal_doses[ct].median())
            for ct in spec.cell_types if ct in animal_doses.index.get_level_values(0)}
    detection = []
    for (region, modality), rows in obs.groupby(["region", "modality"], sort=True):
        organs = [o for o in spec.region_compartments[region]
                  if spec.transmission(modality, o) is not None]
        detection.append({
            "region": region, "modality": modality, "organs": organs,
            "lod": float(rows["lod"].median()),
            "background": float(rows["background"].median())
            if data.background is not None else None,
            "group": data.background_groups.index(f"{region}/{modality}"),
        })
    return {"spec": spec.name, "cell_types": [ct for ct in spec.cell_types if ct in dose],
            "organs": list(spec.organs), "filter_index": spec.filter_index,
            "explicit_blood": spec.explicit_blood, "dose_cells": dose,
            "detection": detection}


@dataclass
class FitResult:
    """What a fit produced; ``run_dir`` holds the files."""

    run_dir: Path
    summary: dict
    wall_s: float
    #: :func:`censoring_note` of the data: what to say beside a failed check, or None.
    censoring_note: str | None = None


#: Share of rows below the LOD above which a failed fit names the censoring. In both SBC
#: campaigns of the default model (bench/sbc.md, 0.2.0 and 0.2.1), every fit with
#: divergences but one had more than 64% of its rows below the LOD, and none of the fits
#: with 52% or fewer had any (the bundled ALS study: 55%).
CENSORING_NOTE_FRACTION = 0.65


def censoring_note(censored) -> str | None:
    """Why a fit's checks may have failed when most rows are below the LOD; else None.

    Parameters
    ----------
    censored : ndarray of bool
        Per observation row, whether the flux was below the LOD.
    """
    n, below = censored.size, int(censored.sum())
    if n == 0 or below / n <= CENSORING_NOTE_FRACTION:
        return None
    return (f"{below} of {n} rows ({100 * below / n:.0f}%) are below the LOD: data this "
            "censored inform the model little, and in simulation-based calibration of the "
            "default model nearly every fit with divergences was of such data (bench/sbc.md)")


class Inputs(NamedTuple):
    """A fit's inputs, read and checked against each other."""

    obs: pd.DataFrame
    calibration: pd.DataFrame | None
    spec: ModelSpec
    data: ModelData
    #: Hex SHA-256 of the bytes read, by provenance key (``data_sha256``, ``spec_sha256``,
    #: ``calibration_sha256``: ``None`` when no standard curve was given).
    digests: dict[str, str | None]


def load_inputs(data_path: Path, spec_path: Path, calibration_path: Path | None) -> Inputs:
    """Read the observations, standard curve and spec, and check them against each other.

    Every check that needs no compilation: each file against its contract, then the data's
    cell types, regions and modalities and the standard curve's spike-in regions against
    the spec.

    Raises
    ------
    DataError
        Every problem found in the three files together (or, when all three are valid on
        their own, every mismatch between data and spec).
    UsageError
        A file is missing or unreadable, or changed while it was being read.
    """
    paths = {"data_sha256": data_path, "spec_sha256": spec_path,
             "calibration_sha256": calibration_path}
    (obs, calibration, spec), digests = load_unchanged(
        lambda: load_all((load_observations, data_path), (load_calibration, calibration_path),
                         (load_spec, spec_path)),
        list(paths.values()))
    problems: list[Problem] = []
    if calibration is not None:
        problems += calibration_problems(calibration, spec, source=str(calibration_path))
    try:
        data = prepare_data(spec, obs, source=str(data_path))
    except DataError as err:
        problems = err.problems + problems
    if problems:
        raise DataError(problems)
    return Inputs(obs, calibration, spec, data, dict(zip(paths, digests, strict=True)))


def fit(data_path: Path, spec_path: Path, out_dir: Path, *, calibration_path: Path | None,
        settings: SamplerSettings, command: list[str], overwrite: bool = False,
        progressbar: bool = True) -> FitResult:
    """Fit ``spec`` to the data and write the run directory.

    Validation of data, calibration and spec happens before anything is compiled; every
    problem found is reported together. ``progressbar`` shows the sampler's progress bar
    only when stderr is a terminal: numpyro's bar over several chains reports through host
    callbacks, which keep the NUTS program out of JAX's compilation cache (compile_cache.py).
    """
    out_dir = Path(out_dir)
    check_replaceable_directory(out_dir, marker=POSTERIOR_FILE, overwrite=overwrite,
                                owned=RUN_ENTRIES,
                                inputs=(data_path, spec_path, calibration_path))
    _check_ppc_entries(out_dir)
    obs, calibration, spec, data, digests = load_inputs(data_path, spec_path, calibration_path)

    start = time.perf_counter()
    model = build_model(spec, data, calibration)
    idata = sample(model, settings, progressbar=progressbar and sys.stderr.isatty())
    reported = (REPORTED_PARAMETERS + (["blood_efflux"] if spec.explicit_blood else [])
                + (["log_background"] if data.background is None else []))
    prior = sample_prior(model, reported, draws=PRIOR_DRAWS, seed=settings.seed + 1)
    idata.extend(prior)
    wall_s = time.perf_counter() - start

    diagnostics = check_convergence(idata, parameter_names(model))
    design = design_record(spec, obs, data)
    provenance = {
        "data_file": str(data_path), "data_sha256": digests["data_sha256"],
        "spec_file": str(spec_path), "spec_sha256": digests["spec_sha256"],
        "calibration_file": None if calibration_path is None else str(calibration_path),
        "calibration_sha256": digests["calibration_sha256"],
        "scale_set_by": _scale_source(calibration),
        "sampler": settings.as_dict(), "seed": settings.seed,
        "versions": library_versions(), "command": command,
        "wall_time_s": round(wall_s, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    summary = make_summary(idata, design, diagnostics, provenance)
    idata.attrs["lanternpk_provenance"] = json.dumps(provenance)
    idata.attrs["lanternpk_design"] = json.dumps(design)
    idata.attrs["lanternpk_diagnostics"] = json.dumps(diagnostics)
    # the canonical observations, so that a report needs nothing but the run (DESIGN.md)
    idata.attrs[OBSERVATIONS_ATTR] = obs.to_csv(index=False)
    _write_run(out_dir, idata, provenance, diagnostics, summary)
    return FitResult(run_dir=out_dir, summary=summary, wall_s=wall_s,
                     censoring_note=censoring_note(data.censored))


def _check_ppc_entries(out_dir: Path) -> None:
    """Refuse to replace a run whose ``ppc/`` holds anything ``lanternpk ppc`` did not write
    (the run is replaced as a whole: a note kept there would be deleted with it)."""
    from lanternpk.ppc import PPC_DIR, check_ppc_dir

    try:
        check_ppc_dir(out_dir / PPC_DIR)
    except UsageError as err:
        raise UsageError(f"refusing to replace {out_dir}: {err}") from None


def _scale_source(calibration: pd.DataFrame | None) -> str:
    """Which information fixed the absolute cell scale (DESIGN.md: the report says)."""
    if calibration is None:
        return "transmission and photons-per-cell priors only (no standard curve)"
    if (calibration["setting"] == "ex_vivo").any():
        return "ex vivo spike-in standard curve (photons per cell × ex vivo transmission)"
    return "in vitro standard curve (photons per cell) and the transmission priors"


def make_summary(idata: az.InferenceData, design: dict, diagnostics: dict,
                 provenance: dict) -> dict:
    """The summary JSON object of DESIGN.md, from a posterior with its prior group."""
    prior = idata.prior if "prior" in idata.groups() else None
    estimands, contrasts = summarize_estimands(idata.posterior, prior, design)
    return {
        "estimands": estimands,
        "contrasts": contrasts,
        "diagnostics": {k: diagnostics[k] for k in
                        ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences",
                         "ebfmi_min", "nonfinite_parameters", "passed") if k in diagnostics},
        "provenance": provenance,
    }


def _write_run(out_dir: Path, idata, provenance, diagnostics, summary) -> None:
    with replacing_directory(out_dir) as staging:
        idata.to_netcdf(staging / POSTERIOR_FILE)
        for name, record in (("provenance.json", provenance), ("diagnostics.json", diagnostics),
                             ("summary.json", summary)):
            (staging / name).write_text(json_text(record), encoding="utf-8")
        if not diagnostics["passed"]:
            (staging / "DIAGNOSTICS_FAILED").write_text(
                "Convergence checks failed; see diagnostics.json.\n", encoding="utf-8")


def require_run(run_dir: Path, *, writable: bool = False) -> Path:
    """The posterior file of a run directory (cheap check, nothing loaded).

    Parameters
    ----------
    run_dir : Path
    writable : bool
        Also require permission to add files to ``run_dir`` (for commands that write there).

    Raises
    ------
    UsageError
        ``run_dir`` holds no ``posterior.nc``, or is not writable when that is asked for.
    """
    posterior = Path(run_dir) / POSTERIOR_FILE
    if not Path(run_dir).is_dir():
        raise UsageError(f"{run_dir} is not a lanternpk run: "
                         + ("no such directory" if not Path(run_dir).exists() else
                            "not a directory"))
    if not posterior.is_file():
        raise UsageError(f"{run_dir} is not a lanternpk run (no {POSTERIOR_FILE} file in it)")
    if writable:
        check_writable(run_dir, what=f"write into the run {run_dir}")
    return posterior


def load_run(run_dir: Path, *, spec_path: Path | None = None, data_path: Path | None = None
             ) -> tuple[az.InferenceData, dict, dict]:
    """Open a run; refuse it if a given spec or data file differs from the one it was fit to.

    Returns
    -------
    idata, design, provenance
    """
    run_dir = Path(run_dir)
    posterior = require_run(run_dir)
    try:
        idata = az.from_netcdf(posterior)
        provenance, design, diagnostics = (json.loads(idata.attrs[f"lanternpk_{part}"])
                                           for part in ("provenance", "design", "diagnostics"))
    except KeyError as err:
        raise UsageError(f"{run_dir} is not a lanternpk run: {posterior} has no {err} "
                         "record") from None
    except (OSError, ValueError, TypeError) as err:  # unreadable NetCDF, broken JSON
        raise UsageError(f"{run_dir} is not a readable lanternpk run: {posterior}: "
                         f"{type(err).__name__}: {err}") from None
    problems = run_record_problems(idata, provenance, design, diagnostics)
    if problems:
        raise UsageError(f"{run_dir} is not a readable lanternpk run: {posterior}: "
                         + "; ".join(problems))
    _check_inputs(run_dir, provenance, spec_path=spec_path, data_path=data_path)
    return idata, design, provenance


def _check_inputs(run_dir: Path, provenance: dict, *, spec_path: Path | None,
                  data_path: Path | None) -> None:
    """Raise :class:`DataError` if a given spec or data file is not the one of the run."""
    problems = []
    for path, key in ((spec_path, "spec_sha256"), (data_path, "data_sha256")):
        if path is None or (digest := file_sha256(path)) == provenance[key]:
            continue
        recorded = provenance[key.replace("_sha256", "_file")]
        if Path(path).resolve() == Path(recorded).resolve():
            message = (f"has changed since the run in {run_dir} was fit to it (sha256 "
                       f"{provenance[key][:12]}… then, {digest[:12]}… now)")
        else:
            message = (f"does not match the run in {run_dir}: it was fit to {recorded} "
                       f"(sha256 {provenance[key][:12]}…, this file {digest[:12]}…)")
        problems.append(Problem(str(path), message))
    if problems:
        raise DataError(problems)


def load_run_with_inputs(run_dir: Path, *, command: str, data_path: Path | None = None,
                         data_hint: str = "") -> tuple[az.InferenceData, dict, Path, Path]:
    """Open a run with the spec and data files it was fit to, checked by sha256.

    The paths are those recorded in the run's provenance (relative to where ``lanternpk fit``
    ran), or ``data_path`` for the data when given. The posterior is read once.

    Parameters
    ----------
    run_dir : Path
        A run directory.
    command : str
        The sub-command asking (named in the error messages).
    data_path : Path, optional
        The observations file, when it is no longer at the recorded path.
    data_hint : str
        Appended to the message when the recorded data file is missing (e.g. an option).

    Returns
    -------
    idata, provenance, spec_path, data_path

    Raises
    ------
    UsageError
        Not a run, or a file is missing.
    DataError
        The spec or data file differs from the run's.
    """
    idata, _, provenance = load_run(run_dir)
    spec_path = Path(provenance["spec_file"])
    recorded = data_path is None
    data_path = Path(provenance["data_file"]) if recorded else Path(data_path)
    for path, what in ((spec_path, "spec"), (data_path, "data")):
        if path.is_file():
            continue
        if what == "data" and not recorded:
            raise UsageError(f"--data: {not_a_file(path)}")
        hint = data_hint if what == "data" else ""
        raise UsageError(f"{run_dir} was fit with {what} {path}, which is not there (relative "
                         "paths are relative to where `lanternpk fit` ran); run lanternpk "
                         f"{command} from that directory{hint}")
    _check_inputs(run_dir, provenance, spec_path=spec_path, data_path=data_path)
    return idata, provenance, spec_path, data_path


def summary_from_run(run_dir: Path, **kwargs) -> dict:
    """Recompute the summary JSON from the saved posterior alone."""
    idata, design, provenance = load_run(run_dir, **kwargs)
    diagnostics = json.loads(idata.attrs["lanternpk_diagnostics"])
    return make_summary(idata, design, diagnostics, provenance)


def _number(value: float | None, spec: str = ".3g") -> str:
    """A summary statistic as text; None (not finite, DESIGN.md's null) as "n/a"."""
    return "n/a" if value is None else format(value, spec)


def _interval(record: dict) -> str:
    return f"[{_number(record['q05'])}, {_number(record['q95'])}]"


def format_summary(summary: dict) -> str:
    """A one-screen text summary: contrasts, homing and half-lives, diagnostics.

    A statistic that is null in the summary (not finite: e.g. a half-life whose loss rate
    underflowed to 0) shows as "n/a".
    """
    lines = []
    diag = summary["diagnostics"]
    status = "PASSED" if diag["passed"] else "FAILED"
    def value(key: str, check: str) -> str:  # rounded away from the check's threshold
        return format_check_value(check, diag[key]) or "not computed"

    lines.append(f"diagnostics {status}: R-hat max {value('rhat_max', 'rhat')}, bulk ESS min "
                 f"{value('ess_bulk_min', 'ess_bulk')}, tail ESS min "
                 f"{value('ess_tail_min', 'ess_tail')}, divergences {diag['divergences']}, "
                 f"E-BFMI min {value('ebfmi_min', 'ebfmi')}")
    if diag.get("nonfinite_parameters"):
        lines.append("non-finite (NaN or infinite) draws in: "
                     + ", ".join(diag["nonfinite_parameters"]))
    lines.append("")
    lines.append(f"{'contrast':<32}{'region':<15}{'median':>10}{'90% interval':>24}"
                 f"{'P(>1)':>8}")
    for c in summary["contrasts"]:
        label = f"{c['name']} {c['numerator']}/{c['denominator']}"
        lines.append(f"{label:<32}{c['region']:<15}{_number(c['median']):>10}"
                     f"{_interval(c):>24}{format_probability(c['p_gt_1'], 3):>8}")
    lines.append("")
    lines.append(f"{'estimand':<20}{'cell':<6}{'region':<15}{'median':>10}"
                 f"{'90% interval':>24}  note")
    for e in summary["estimands"]:
        if e["name"] not in ("homing_fraction", "half_life_d"):
            continue
        note = {True: "barely informed by data", None: "informed? cannot tell"}.get(
            e["barely_informed"], "")
        lines.append(f"{e['name']:<20}{e['cell_type']:<6}{e['region']:<15}"
                     f"{_number(e['median']):>10}{_interval(e):>24}  {note}")
    return "\n".join(lines)
