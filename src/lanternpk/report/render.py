"""Render a report from run directories alone: ``index.html``, ``summary.md``, ``summary.json``.

:func:`load_run_report` gathers everything a report shows from one run directory (the saved
posterior and its attributes, the run's ``ppc/`` and ``compare.json`` when present, and the
observations from the copy saved in ``posterior.nc``; a run written before runs kept that copy
falls back to the data file named in its provenance when still readable and unchanged).
:func:`render_report` draws the figures, fills the jinja2 templates (autoescape on) and writes
each of the three files atomically (temporary file, then rename).
A figure that fails to render fails the report with a :class:`FigureError` naming it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from lanternpk.data.load import load_observations, observations_from_csv_text
from lanternpk.diagnostics import format_check_value
from lanternpk.digest import file_sha256
from lanternpk.errors import EXIT_INVALID, DataError, UsageError, UserError, printable
from lanternpk.estimands import (
    BARELY_INFORMED_RATIO,
    cell_type_positions,
    contrast_pair,
    stacked_draws,
)
from lanternpk.fit import (
    OBSERVATIONS_ATTR,
    POSTERIOR_FILE,
    load_run,
    make_summary,
)
from lanternpk.io import check_writable, is_interrupted_write, json_text, write_text_atomic
from lanternpk.report import figures
from lanternpk.run_records import MAX_LISTED, SbcSummaryRecord, record_problems
from lanternpk.solver.closed_form import organ_cells

TEMPLATES = Path(__file__).parent / "templates"
#: Draws per chain below which the report warns that the sampler settings were reduced.
FULL_DRAWS = 1000
#: Time grid of the engraftment curves, days (1 hour to 8 weeks).
ENGRAFTMENT_GRID_D = np.geomspace(1.0 / 24.0, 56.0, 120)
#: Columns of ``ppc/coverage.json`` records, in display order.
PPC_COLUMNS = ("region", "modality", "time_h", "n", "n_censored", "coverage_50", "coverage_90",
               "below_lod_observed", "below_lod_predicted", "flagged")
REPORT_FILES = ("index.html", "summary.md", "summary.json")
#: Files a report directory may also hold (the browser check's screenshot).
REPORT_EXTRAS = ("screenshot.png",)
#: The one directory a report directory may hold: the run ``lanternpk demo`` fits there.
REPORT_RUN_DIR = "run"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHECK_LABELS = {"rhat": "R-hat max", "ess_bulk": "bulk ESS min", "ess_tail": "tail ESS min",
                 "divergences": "divergences", "ebfmi": "E-BFMI min",
                 "finite_draws": "parameters with non-finite draws"}


class FigureError(UserError):
    """A report figure failed to render; the report is not written (exit status 1: what
    the run holds cannot be drawn, e.g. draws that are all NaN)."""

    exit_code = EXIT_INVALID


@dataclass(frozen=True)
class RunReport:
    """What the report shows of one run directory.

    Attributes
    ----------
    run_dir : Path
        The run directory.
    summary : dict
        The summary contract, recomputed from the saved posterior (as
        :func:`lanternpk.fit.summary_from_run` computes it).
    design, provenance, diagnostics : dict
        The posterior's ``lanternpk_design``, ``lanternpk_provenance`` and
        ``lanternpk_diagnostics`` attributes (diagnostics with per-check detail).
    engraftment : ndarray, shape (3, n_cell_types, n_times, n_organs)
        5/50/95% posterior quantiles of live cells / dose on :data:`ENGRAFTMENT_GRID_D`.
    observations : pandas.DataFrame or None
        The canonical observations (the copy saved in the run), or ``None`` when a run
        written before runs kept a copy has no readable, unchanged data file.
    data_note : str or None
        Why the observations are unavailable.
    ppc_coverage : list of dict or None
        Records of ``ppc/coverage.json``; ``None`` when absent.
    ppc_figures : list of (str, bytes)
        Name and PNG bytes of every ``ppc/*.png``.
    compare : object or None
        Contents of ``compare.json``; ``None`` when absent.
    label : str or None
        How the report names the run; ``None``: its directory's name
        (:func:`build_context` gives the full path where two runs share a name).
    """

    run_dir: Path
    summary: dict
    design: dict
    provenance: dict
    diagnostics: dict
    engraftment: np.ndarray
    observations: pd.DataFrame | None = None
    data_note: str | None = None
    ppc_coverage: list[dict] | None = None
    ppc_figures: list[tuple[str, bytes]] = field(default_factory=list)
    compare: object | None = None
    label: str | None = None


def load_run_report(run_dir: str | os.PathLike) -> RunReport:
    """Gather what the report shows of one run directory.

    Raises
    ------
    lanternpk.errors.UsageError
        If ``run_dir`` is not a run, or its ``ppc/`` or ``compare.json`` files are malformed.
    """
    run_dir = Path(run_dir)
    idata, design, provenance = load_run(run_dir)  # once (summary_from_run would load it again)
    diagnostics = json.loads(idata.attrs["lanternpk_diagnostics"])
    summary = make_summary(idata, design, diagnostics, provenance)
    observations, note = _observations(idata, provenance, run_dir / POSTERIOR_FILE)
    ppc_dir = run_dir / "ppc"
    coverage = _read_json(ppc_dir / "coverage.json")
    if coverage is not None and not (isinstance(coverage, list)
                                     and all(isinstance(r, dict) and set(PPC_COLUMNS) <= set(r)
                                             for r in coverage)):
        raise UsageError(f"{ppc_dir / 'coverage.json'}: not a coverage table (a list of "
                         f"records with the keys {', '.join(PPC_COLUMNS)}, as `lanternpk ppc` "
                         "writes); run `lanternpk ppc` again")
    pngs = []
    for path in sorted(ppc_dir.glob("*.png")):
        pngs.append((path.stem, read_png(path)))
    return RunReport(run_dir=run_dir, summary=summary, design=design, provenance=provenance,
                     diagnostics=diagnostics,
                     engraftment=engraftment_quantiles(idata.posterior, design),
                     observations=observations, data_note=note, ppc_coverage=coverage,
                     ppc_figures=pngs, compare=_read_json(run_dir / "compare.json"))


def engraftment_quantiles(posterior, design: dict,
                          days: np.ndarray = ENGRAFTMENT_GRID_D) -> np.ndarray:
    """5/50/95% quantiles of live cells / dose per cell type, time and organ.

    Parameters
    ----------
    posterior : xarray.Dataset
        Posterior with ``first_pass`` (fraction), ``release`` and ``loss`` (1/day), and
        ``blood_efflux`` (1/day) for the explicit-blood model.
    design : dict
        The run's design record.
    days : ndarray
        Time grid, days.

    Returns
    -------
    ndarray, shape (3, n_cell_types, n_times, n_organs)
        Along the design's cell types, in its order (the parameters hold every cell type
        of the spec; :func:`lanternpk.estimands.cell_type_positions`). NaN where a
        non-finite draw (which the convergence checks name) enters.
    """
    positions = [c for c, _ in cell_type_positions(posterior, design)]
    release = stacked_draws(posterior, "release")[:, positions]
    efflux = None
    if design["explicit_blood"]:
        efflux = np.broadcast_to(stacked_draws(posterior, "blood_efflux")[:, None],
                                 release.shape)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # non-finite draws
        cells = organ_cells(stacked_draws(posterior, "first_pass")[:, positions], release,
                            stacked_draws(posterior, "loss")[:, positions],
                            np.broadcast_to(days, (*release.shape, days.size)),
                            filter_index=design["filter_index"],
                            n_organs=len(design["organs"]), blood_efflux=efflux)
    return np.quantile(cells, [0.05, 0.5, 0.95], axis=0)


def _observations(idata, provenance: dict, posterior: Path
                  ) -> tuple[pd.DataFrame | None, str | None]:
    """The run's data: the copy saved in ``posterior.nc``, or for a run written before
    runs kept one, its data file if that is readable here and unchanged since the fit."""
    saved = idata.attrs.get(OBSERVATIONS_ATTR)
    if saved is not None:
        try:
            source = f"{posterior} ({OBSERVATIONS_ATTR})"
            return observations_from_csv_text(str(saved), source), None
        except DataError as err:
            return None, f"The copy of the data saved with the run could not be read: {err}"
    path = Path(provenance["data_file"])
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    try:
        if not path.is_file():
            return None, f"The data file {path}{where} named in the provenance is not readable."
        if file_sha256(path) != provenance["data_sha256"]:
            return None, (f"The data file {path}{where} has changed since the fit (its sha256 "
                          "differs from the provenance); its data are not shown.")
        return load_observations(path), None
    except (OSError, DataError) as err:
        return None, f"The data file {path}{where} could not be read: {err}"


def _read_json(path: Path) -> object | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:  # (JSONDecodeError is a ValueError)
        raise UsageError(f"{path}: not valid JSON ({err})") from err
    except RecursionError as err:
        raise UsageError(f"{path}: not valid JSON (nested too deeply)") from err


def load_sbc(sbc_dir: str | os.PathLike) -> dict:
    """The summary (``sbc.json``) and ECDF figure (``sbc_ecdf.png``) of a ``lanternpk sbc`` run.

    Raises
    ------
    UsageError
        If ``sbc_dir`` holds no ``sbc.json``, or a file is malformed or not a PNG.
    """
    sbc_dir = Path(sbc_dir)
    summary = _read_json(sbc_dir / "sbc.json")
    if not isinstance(summary, dict) or "quantities" not in summary:
        raise UsageError(f"{sbc_dir} is not a lanternpk sbc directory (no valid sbc.json)")
    quantities = summary["quantities"]
    if not (isinstance(quantities, list) and all(isinstance(q, dict) for q in quantities)):
        raise UsageError(f"{sbc_dir / 'sbc.json'}: 'quantities' is not a list of records, as "
                         "`lanternpk sbc` writes; run `lanternpk sbc` again")
    problems = record_problems("sbc.json", SbcSummaryRecord, summary)
    if problems:  # e.g. "passed": "false", which would have read as passed
        raise UsageError(f"{sbc_dir / 'sbc.json'} is not as `lanternpk sbc` writes it: "
                         + "; ".join(problems[:MAX_LISTED]) + "; run `lanternpk sbc` again")
    png = None
    if (sbc_dir / "sbc_ecdf.png").is_file():
        png = _png("sbc_ecdf.png", read_png(sbc_dir / "sbc_ecdf.png"))
    return {"dir": str(sbc_dir), "summary": summary, "figure": png}


def read_png(path: Path) -> bytes:
    """The bytes of a figure a command wrote, once they read as a whole PNG file.

    Checked: the signature, then every chunk's length and CRC up to ``IEND`` (the image
    data are not decoded), so that a truncated or damaged figure (a copy cut short, a disk
    that filled up) is named instead of being embedded as a broken image.

    Raises
    ------
    UsageError
        The file is not a PNG, is cut short, or a chunk fails its CRC.
    """
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise UsageError(f"{path}: not a PNG file")
    start = len(_PNG_SIGNATURE)
    while True:
        if start + 12 > len(data):
            raise UsageError(f"{path}: a PNG file cut short ({len(data)} bytes, no end "
                             "chunk); write it again")
        length, kind = struct.unpack(">I4s", data[start:start + 8])
        end = start + 12 + length
        if end > len(data):
            raise UsageError(f"{path}: a PNG file cut short ({len(data)} bytes, its "
                             f"chunk at byte {start} needs {end}); write it again")
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(data[start + 4:end - 4]) != crc:
            raise UsageError(f"{path}: a damaged PNG file (the chunk at byte {start} fails "
                             "its CRC); write it again")
        if kind == b"IEND":
            return data
        start = end


# --- formatting ------------------------------------------------------------------------------

def fmt(value: object) -> str:
    """A number to about three significant figures, without exponents for 0.001–99999.

    ``None`` is a dash; an integer (a count) is shown whole; anything that is not a number
    (text, or a list or record from a hand-edited JSON file) is shown as its text, as is a
    number too large for a float.
    """
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return str(value)
    if isinstance(value, int | np.integer):  # counts: 3, not 3.00
        return str(int(value))
    try:
        value = float(value)
    except OverflowError:
        return str(value)
    if not np.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = int(np.floor(np.log10(abs(value))))
    if -3 <= magnitude < 5:
        return f"{value:.{max(0, 2 - magnitude)}f}"
    return f"{value:.2e}"


def _cell(record: dict | None) -> dict:
    """Median and 90% interval of an estimand or contrast record, formatted."""
    if record is None:
        return {"median": "—", "interval": "", "barely": False}
    return {"median": fmt(record["median"]),
            "interval": f"[{fmt(record['q05'])}, {fmt(record['q95'])}]",
            "barely": bool(record.get("barely_informed", False))}


# --- figures ---------------------------------------------------------------------------------

def render_figure(name: str, function: Callable, *args, **kwargs) -> dict:
    """Call a figure function and encode its figure as a PNG data URI.

    Raises
    ------
    FigureError
        If the function or the PNG encoding fails; the message names the figure.
    """
    try:
        with matplotlib.rc_context({"font.size": 10}):
            fig, _ = function(*args, **kwargs)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=2 * figures.CSS_DPI)
    except Exception as err:
        raise FigureError(f"figure '{name}' failed to render: {type(err).__name__}: {err}"
                          ) from err
    return {"name": name, "width": round(fig.get_figwidth() * figures.CSS_DPI),
            "src": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}


def _png(name: str, data: bytes) -> dict:
    return {"name": name, "width": None,
            "src": "data:image/png;base64," + base64.b64encode(data).decode()}


# --- context ---------------------------------------------------------------------------------

def _label(run: RunReport) -> str:
    return run.label or run.run_dir.resolve().name


def _distinct_labels(runs: Sequence[RunReport]) -> list[RunReport]:
    """The runs, each labelled by its directory's name, or by its full path where two runs'
    directories share a name (``a/run`` and ``b/run``)."""
    names = [run.run_dir.resolve().name for run in runs]
    counts = Counter(names)
    return [replace(run, label=name if counts[name] == 1
                                else str(run.run_dir.resolve()))
            for run, name in zip(runs, names, strict=True)]


def _study(run: RunReport) -> str:
    if run.observations is None:
        return Path(run.provenance["data_file"]).name
    return ", ".join(dict.fromkeys(run.observations["study"]))


def _warnings(runs: Sequence[RunReport], sbc: dict | None = None) -> list[dict]:
    """One-line banners: reduced sampler settings, failed convergence checks, and an SBC
    campaign of another spec than the reported run's (its calibration says nothing of it)."""
    reduced, failed = [], []
    for run in runs:
        sampler = run.provenance["sampler"]
        if sampler["draws"] < FULL_DRAWS:
            reduced.append(f"{_label(run)} {sampler['chains']} chains × {sampler['draws']} draws")
        if not run.diagnostics["passed"]:
            checks = [f"{_CHECK_LABELS.get(k, k)} {_check_value(k, c['value'])}, needs "
                      f"{_threshold(c['threshold'])}"
                      for k, c in run.diagnostics["checks"].items() if not c["passed"]]
            failed.append(f"{_label(run)}: {', '.join(checks)}")
    out = []
    if reduced:
        out.append({"level": "warn", "head": "Reduced sampler settings", "text": (
            f"{'; '.join(reduced)} (full runs: ≥ {FULL_DRAWS} draws per chain). Extra Monte "
            "Carlo error: not for conclusions.")})
    if failed:
        out.append({"level": "fail", "head": "Convergence checks FAILED", "text": (
            f"{'; '.join(failed)}. Posterior summaries are not trustworthy.")})
    campaign = sbc["summary"].get("campaign") if sbc is not None else None
    spec = runs[0].provenance
    if isinstance(campaign, dict) and campaign.get("spec_sha256") != spec["spec_sha256"]:
        out.append({"level": "warn", "head": "Calibration of another model", "text": (
            f"the SBC campaign {sbc['dir']} checked spec {campaign.get('spec_file')} (sha256 "
            f"{str(campaign.get('spec_sha256'))[:12]}), not this run's {spec['spec_file']} "
            f"({spec['spec_sha256'][:12]}); its result does not apply to this model.")})
    version = spec.get("versions", {}).get("lanternpk")
    if isinstance(campaign, dict) and campaign.get("lanternpk") not in (None, version):
        out.append({"level": "warn", "head": "Calibration by another version", "text": (
            f"the SBC campaign {sbc['dir']} ran lanternpk {campaign.get('lanternpk')}, this "
            f"run lanternpk {version}: changes to the model's sampling or to the sampler "
            "since then are not covered by it.")})
    return out


def _answer(run: RunReport) -> dict | None:
    """Rows of the answer table: homing fraction and half-life per organ, ratio, P(> 1)."""
    cell_types = run.design["cell_types"]
    if len(cell_types) < 2 or not run.summary["contrasts"]:
        return None
    num, den = contrast_pair(cell_types)
    estimands = {(e["name"], e["cell_type"], e["region"]): e for e in run.summary["estimands"]
                 if e["time_d"] is None and e["modality"] is None}
    contrasts = {(c["name"], c["region"]): c for c in run.summary["contrasts"]}
    rows = []
    for organ in run.design["organs"]:
        row = {"region": organ, "groups": []}
        for name, contrast in (("homing_fraction", "homing_fraction_ratio"),
                               ("half_life_d", "half_life_ratio")):
            ratio = contrasts.get((contrast, organ))
            row["groups"].append({
                "cells": [_cell(estimands.get((name, num, organ))),
                          _cell(estimands.get((name, den, organ))), _cell(ratio)],
                "p": "—" if ratio is None else figures.ratio_probability(ratio)})
        rows.append(row)
    return {"numerator": figures.cell_label(num), "denominator": figures.cell_label(den),
            "rows": rows, "any_barely": any(c["barely"] for r in rows for g in r["groups"]
                                            for c in g["cells"])}


def _threshold(text: str) -> str:
    return text.replace("<=", "≤").replace(">=", "≥").replace("==", "=")


def _check_value(name: str, value) -> str:
    """A check's value as the verdict reads it (:func:`diagnostics.format_check_value`)."""
    return format_check_value(name, value) or "—"


def _diagnostic_rows(diagnostics: dict) -> list[dict]:
    return [{"check": _CHECK_LABELS.get(name, name), "value": _check_value(name, check["value"]),
             "threshold": _threshold(check["threshold"]), "passed": check["passed"]}
            for name, check in diagnostics["checks"].items()]


def _data_counts(obs: pd.DataFrame, cell_types: Sequence[str]) -> list[dict]:
    rows = []
    for (region, modality), group in obs.groupby(["region", "modality"], sort=False):
        counts = []
        for ct in cell_types:
            sel = group[group["cell_type"] == ct]
            counts.append(f"{len(sel)} ({int((sel['flux'] < sel['lod']).sum())})")
        rows.append({"region": region, "modality": modality, "counts": counts,
                     "lod": fmt(group["lod"].median()),
                     "times": ", ".join(f"{t:g}" for t in sorted(group["time_h"].unique()))})
    return rows


def _ppc(run: RunReport) -> dict | None:
    if run.ppc_coverage is None and not run.ppc_figures:
        return None
    rows = []
    for record in run.ppc_coverage or []:
        rows.append({"cells": [fmt(record.get(c)) if not isinstance(record.get(c), str)
                               else record[c] for c in PPC_COLUMNS],
                     "flagged": bool(record.get("flagged"))})
    return {"columns": PPC_COLUMNS, "rows": rows, "have_coverage": run.ppc_coverage is not None,
            "figures": [_png(name, data) for name, data in run.ppc_figures]}


def _sbc(sbc: dict | None) -> dict | None:
    """Header numbers and one row per ranked quantity of an SBC summary."""
    if sbc is None:
        return None
    summary = sbc["summary"]
    rows = [{"name": str(q.get("name")), "chi": fmt(q.get("chi_square_p")),
             "ecdf": fmt(q.get("ecdf_p")), "failed": bool(q.get("failed"))}
            for q in summary["quantities"]]
    rows.sort(key=lambda r: (not r["failed"], r["name"]))
    return {"dir": sbc["dir"], "figure": sbc["figure"], "rows": rows,
            "passed": bool(summary.get("passed")),
            **{key: summary.get(key) for key in ("n_requested", "n_ok", "n_failed",
                                                 "n_missing", "n_draws", "alpha", "tests")}}


def _run_row(run: RunReport) -> dict:
    p, d, s = run.provenance, run.diagnostics, run.provenance["sampler"]
    return {"label": _label(run), "spec": run.design["spec"], "spec_sha": p["spec_sha256"][:12],
            "data_file": p["data_file"], "data_sha": p["data_sha256"][:12],
            "sampler": f"{s['sampler']} {s['chains']}×{s['draws']} (tune {s['tune']})",
            "passed": d["passed"], "rhat": _check_value("rhat", d["rhat_max"]),
            "ess": _check_value("ess_bulk", d["ess_bulk_min"]),
            "divergences": d["divergences"]}


def _compare(run: RunReport) -> dict | None:
    """``compare.json`` verbatim: a table when it is a list of flat records (null, e.g. the
    infinite Pareto k of few draws, as a dash), else JSON text."""
    data = run.compare
    if data is None:
        return None
    if (isinstance(data, list) and data and all(isinstance(r, dict) for r in data)
            and all(not isinstance(v, dict | list) for r in data for v in r.values())):
        columns = list(dict.fromkeys(k for r in data for k in r))
        rows = [[r[c] if isinstance(r.get(c), str) else fmt(None) if r.get(c) is None
                 else json.dumps(r.get(c)) for c in columns] for r in data]
        return {"label": _label(run), "columns": columns, "rows": rows, "text": None}
    return {"label": _label(run), "columns": None, "rows": None,
            "text": json.dumps(data, indent=1)}


def _barely(run: RunReport) -> list[dict]:
    """Estimands flagged barely informed, and those whose flag could not be decided (null:
    no prior draws, a non-finite draw), which are not to be read as informed; then the
    contrasts flagged barely informed (the answer table's † points here). A contrast's null
    flag is not listed: a ratio the model fixes at 1 has no width to compare."""
    rows = []
    for e in run.summary["estimands"]:
        if e.get("barely_informed") is False:
            continue
        day = "" if e["time_d"] is None else f"{e['time_d']:g}"
        rows.append({"name": e["name"], "cell_type": figures.cell_label(e["cell_type"]),
                     "region": e["region"], "time_d": day, "modality": e["modality"] or "",
                     **_cell(e),
                     "ratio": fmt(e["posterior_prior_width_ratio"])
                     if e.get("barely_informed") else "cannot tell"})
    for c in run.summary["contrasts"]:
        if c.get("barely_informed"):
            rows.append({"name": c["name"], "cell_type": f"{figures.cell_label(c['numerator'])}"
                         f" / {figures.cell_label(c['denominator'])}", "region": c["region"],
                         "time_d": "", "modality": "", **_cell(c),
                         "ratio": fmt(c["posterior_prior_width_ratio"])})
    return rows


def _provenance(run: RunReport) -> dict:
    """The provenance record as label–text pairs; a field a hand-edited record lacks (or
    holds in another shape) is a dash, not a traceback (the record's schema requires only
    the files, their hashes and the sampler)."""
    p = run.provenance
    s = p["sampler"]
    command = p.get("command")
    items = [
        ("run directory", str(run.run_dir)),
        ("model spec", f"{run.design['spec']} — {p['spec_file']} (sha256 {p['spec_sha256']})"),
        ("data", f"{p['data_file']} (sha256 {p['data_sha256']})"),
        ("standard curve", "none" if p.get("calibration_file") is None
         else f"{p['calibration_file']} (sha256 {p['calibration_sha256']})"),
        ("absolute scale set by", p.get("scale_set_by", "—")),
        ("sampler", ", ".join(f"{k} {v}" for k, v in s.items())),
        ("seed", str(p.get("seed", s.get("seed", "—")))),
        ("command line", shlex.join(map(str, command)) if isinstance(command, list) else "—"),
        ("created", p.get("created", "—")),
        ("wall time", f"{p['wall_time_s']} s" if "wall_time_s" in p else "—"),
        ("machine", ", ".join(f"{k} {v}" for k, v in p.get("machine", {}).items())),
        ("versions", ", ".join(f"{k} {v}" for k, v in p.get("versions", {}).items())),
    ]
    return {"label": _label(run), "fields": items}


def build_context(runs: Sequence[RunReport], sbc: dict | None = None) -> dict:
    """Everything the templates show, figures included (as PNG data URIs).

    The first run is the one whose answer, data, diagnostics and checks are shown; all runs
    appear in the comparison and provenance sections.

    Raises
    ------
    FigureError
        If a figure fails to render.
    """
    if not runs:
        raise UsageError("a report needs at least one run directory")
    runs = _distinct_labels(runs)
    run = runs[0]
    design = run.design
    answer = _answer(run)
    if answer is not None:
        answer["figure"] = render_figure("answer ratios", figures.ratio_forest,
                                         run.summary["contrasts"])
    floor = 0.5 / max(design["dose_cells"].values())
    engraftment = render_figure("engrafted fraction over time", figures.engraftment_bands,
                                ENGRAFTMENT_GRID_D, run.engraftment,
                                cell_types=design["cell_types"], organs=design["organs"],
                                floor=floor)
    data = {"note": run.data_note, "figure": None, "counts": []}
    if run.observations is not None:
        data["figure"] = render_figure("data overview", figures.data_overview,
                                       run.observations, cell_types=design["cell_types"])
        data["counts"] = _data_counts(run.observations, design["cell_types"])
    data_hashes = {r.provenance["data_sha256"] for r in runs}
    return {
        "title": f"{_study(run)} — {design['spec']}",
        "study": _study(run), "run": _run_row(run), "warnings": _warnings(runs, sbc),
        "scale_set_by": run.provenance.get("scale_set_by"),
        "cell_types": [figures.cell_label(ct) for ct in design["cell_types"]],
        "answer": answer, "engraftment": engraftment, "floor": fmt(floor), "data": data,
        "diagnostics": {"passed": run.diagnostics["passed"],
                        "rows": _diagnostic_rows(run.diagnostics)},
        "ppc": _ppc(run),
        "runs": [_run_row(r) for r in runs] if len(runs) > 1 else [],
        "same_data": len(data_hashes) == 1,
        "compare": [c for c in (_compare(r) for r in runs) if c is not None],
        "sbc": _sbc(sbc),
        "barely": _barely(run), "barely_ratio": BARELY_INFORMED_RATIO,
        "provenance": [_provenance(r) for r in runs],
    }


# --- output ----------------------------------------------------------------------------------

def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html.j2", "md.j2"), default=True,
                                     default_for_string=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, finalize=_visible,
    )


def _visible(value: object) -> object:
    """Control characters of a user's text (a terminal escape in a label or command line)
    as escapes, before HTML escaping; markup the report made itself is left alone."""
    if isinstance(value, str) and not isinstance(value, Markup) and not value.isprintable():
        return printable(value, keep="\n\t")  # the test first: figures are long strings
    return value


#: Characters with a meaning inside a line of GitHub Markdown, escaped in user text: links
#: and images (brackets), emphasis, code spans, table cells, strikethrough, math, and the
#: colon of a bare URL. Not ``_`` (inside a word, as in ``spinal_cord``, it means nothing;
#: ``_x_`` is italic at worst); ``& < > " '`` are left to autoescaping, as entities.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|~$:])")


def _md_cell(value: object) -> str:
    """User text for ``summary.md``, on one line, with Markdown punctuation escaped (a study
    named ``[x](http://…)`` is text, not a link); HTML characters are autoescaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value).replace("\n", " "))


def render_report(runs: Sequence[RunReport], *, out: str | os.PathLike,
                  sbc: dict | None = None) -> Path:
    """Write ``index.html``, ``summary.md`` and ``summary.json`` of ``runs`` into ``out``.

    Parameters
    ----------
    runs : sequence of RunReport
        The first is the run reported on; the others join the comparison.
    out : path-like
        Report directory; created, or its report files replaced if it holds an earlier
        report.
    sbc : dict, optional
        From :func:`load_sbc`: shown under model comparison and calibration.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    FigureError
        If a figure fails to render (nothing is written).
    lanternpk.errors.UsageError
        If ``out`` exists and is not a report directory.
    """
    context = build_context(runs, sbc)
    env = _environment()
    env.filters["md"] = _md_cell
    files = {
        "index.html": env.get_template("report.html.j2").render(context),
        "summary.md": env.get_template("summary.md.j2").render(context),
        "summary.json": json_text(runs[0].summary),  # NaN/inf as null, like the run's
    }
    return write_report(out, files)


def check_report_directory(out: str | os.PathLike, names: Iterable[str] = REPORT_FILES) -> None:
    """Refuse a report directory that holds files a report does not write.

    Raises
    ------
    UsageError
        ``out`` is a file, holds files other than ``names`` and :data:`REPORT_EXTRAS`, or
        a directory other than :data:`REPORT_RUN_DIR` (e.g. ``--out data`` of a checkout,
        whose study directories would have been written beside), or cannot be created or
        written. What a killed report or demo left there (a temporary file of one of these
        files, the staging directory of the run) is not refused:
        :func:`~lanternpk.io.is_interrupted_write`.
    """
    out = Path(out)
    ours = {*names, *REPORT_EXTRAS}
    if out.exists() and not out.is_dir():
        raise UsageError(f"refusing to write a report into {out}: it is not a directory")
    if out.is_dir():
        foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                         if not ((p.name in ours and p.is_file())
                                 or (p.name == REPORT_RUN_DIR and p.is_dir())
                                 or is_interrupted_write(p, {*ours, REPORT_RUN_DIR})))
        if foreign:
            raise UsageError(f"refusing to write a report into {out}: it does not hold a "
                             f"lanternpk report (found {', '.join(foreign[:3])})")
    check_writable(out, what=f"write a report into {out}")


def write_report(out: str | os.PathLike, files: dict[str, str]) -> Path:
    """Write ``files`` (name → UTF-8 text) into the directory ``out``, each atomically.

    Each file is written to a temporary file beside it and renamed into place, ``index.html``
    last, so a reader never sees a half-written file. Directories inside ``out`` (a run
    directory, as ``lanternpk demo`` keeps in ``reports/demo/run``) are left alone; a
    directory holding files that a report does not write is refused, so nothing of the user's
    is overwritten.
    """
    out = Path(out)
    check_report_directory(out, names=files)
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == "index.html"):
        write_text_atomic(out / name, files[name])
    return out
