"""The records a run keeps in ``posterior.nc``, and their checks when a run is opened.

``lanternpk fit`` stores three JSON records as attributes of the posterior file: provenance,
design and diagnostics. ``summarize``, ``report``, ``ppc`` and ``compare`` read them beside
the posterior's draws. :func:`run_record_problems` checks a hand-edited or foreign file before
any of them is used: each record against its schema (pydantic, strict types: ``"false"`` is
not a boolean), the design against itself (filter and detection organs among its organs, a
dose for every cell type) and against the draws (the variables the estimands read, organ and
cell-type axes of the same length and labels, background groups that exist). A mismatch is a
clear refusal, not a traceback later or, worse, estimands of other organs.
:class:`SbcSummaryRecord` is the same check of what ``report --sbc`` reads of an SBC
campaign's ``sbc.json``, and :class:`SbcFitRecord` of the fit records an SBC campaign resumes
from.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lanternpk.tomlfile import dotted_key, plain_message

Label = Annotated[str, Field(min_length=1)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
#: A statistic as ``fit`` stores it: a finite number, or null where it is not computable.
Statistic = Annotated[float, Field(allow_inf_nan=False)] | None

#: At most this many problems are listed; the rest are counted.
MAX_LISTED = 6


class _Record(BaseModel):
    """Strict types (no coercion of strings to numbers or booleans); extra keys kept."""

    model_config = ConfigDict(strict=True, extra="allow")


class SamplerRecord(_Record):
    sampler: Label
    chains: Annotated[int, Field(ge=1)]
    draws: Annotated[int, Field(ge=1)]
    tune: Count


class ProvenanceRecord(_Record):
    data_file: Label
    data_sha256: Sha256
    spec_file: Label
    spec_sha256: Sha256
    calibration_file: Label | None = None
    calibration_sha256: Sha256 | None = None
    sampler: SamplerRecord


class DetectionRecord(_Record):
    """One region × modality: the organs it sees, its LOD and background (photons/s)."""

    region: Label
    modality: Label
    organs: Annotated[list[Label], Field(min_length=1)]
    lod: Positive
    background: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None
    group: Count


class DesignRecord(_Record):
    spec: Label
    cell_types: Annotated[list[Label], Field(min_length=1)]
    organs: Annotated[list[Label], Field(min_length=1)]
    filter_index: Count
    explicit_blood: bool
    dose_cells: dict[str, Positive]
    detection: list[DetectionRecord]

    @model_validator(mode="after")
    def _consistent(self) -> DesignRecord:
        problems = []
        if self.filter_index >= len(self.organs):
            problems.append(f"filter_index {self.filter_index} is not a position in organs "
                            f"(it has {len(self.organs)})")
        if without := [ct for ct in self.cell_types if ct not in self.dose_cells]:
            problems.append(f"dose_cells has no dose for cell types {without}")
        for i, det in enumerate(self.detection):
            if unknown := [o for o in det.organs if o not in self.organs]:
                problems.append(f"detection[{i}] sees organs {unknown} that are not in organs")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class CheckRecord(_Record):
    value: Statistic
    threshold: str
    passed: bool


class DiagnosticsRecord(_Record):
    passed: bool
    checks: dict[str, CheckRecord]
    rhat_max: Statistic
    ess_bulk_min: Statistic
    ess_tail_min: Statistic
    ebfmi_min: Statistic
    divergences: Count
    nonfinite_parameters: list[str] = []


_RECORDS = {"provenance": ProvenanceRecord, "design": DesignRecord,
            "diagnostics": DiagnosticsRecord}


class SbcQuantityRecord(_Record):
    name: Label
    failed: bool
    chi_square_p: Statistic = None
    ecdf_p: Statistic = None


class SbcSummaryRecord(_Record):
    """What the report reads of a ``lanternpk sbc`` campaign's ``sbc.json``."""

    passed: bool
    n_requested: Count
    n_ok: Count
    n_failed: Count
    n_missing: Count
    n_draws: Count
    alpha: Annotated[float, Field(gt=0, lt=1)]
    tests: str
    quantities: list[SbcQuantityRecord]


class SbcFitDiagnosticsRecord(_Record):
    divergences: Count
    rhat_max: Statistic
    ess_bulk_min: Statistic


class SbcFitRecord(_Record):
    """One fit of an SBC campaign, ``fits/NNNN.json``, as ``sbc.fit_task`` and the client
    write it: a finished one (``ok``) holds whole ranks in 0 … ``n_draws`` and the
    diagnostics the summary reads; a ``failed`` one, its attempts."""

    index: Count
    key: str
    status: Literal["ok", "failed"]
    attempts: list[dict[str, Any]] = []
    ranks: dict[str, Count] | None = None
    n_draws: Annotated[int, Field(ge=1)] | None = None
    diagnostics: SbcFitDiagnosticsRecord | None = None
    wall_s: float | None = None

    @model_validator(mode="after")
    def _finished_fit_is_whole(self) -> SbcFitRecord:
        if self.status == "ok":
            if None in (self.ranks, self.n_draws, self.diagnostics, self.wall_s):
                raise ValueError("a finished fit needs ranks, n_draws, diagnostics and wall_s")
            if any(rank > self.n_draws for rank in self.ranks.values()):
                raise ValueError(f"a rank above n_draws = {self.n_draws}")
        return self


def record_problems(name: str, schema: type[BaseModel], record: Any) -> list[str]:
    """What is wrong with one record against its schema, one sentence each."""
    try:
        schema.model_validate(record)
    except ValidationError as err:
        errors = err.errors()
        problems = []
        if lacking := [dotted_key(tuple(e["loc"])) for e in errors if e["type"] == "missing"]:
            problems.append(f"its {name} record lacks " + ", ".join(map(repr, lacking)))
        return problems + [_describe(name, e) for e in errors if e["type"] != "missing"]
    return []


def run_record_problems(idata, provenance: Any, design: Any, diagnostics: Any) -> list[str]:
    """What is wrong with a run's records and draws, one sentence each (empty: nothing).

    Parameters
    ----------
    idata : arviz.InferenceData
        The run's ``posterior.nc``.
    provenance, design, diagnostics : object
        Its three records, as parsed from JSON.
    """
    problems = []
    if "posterior" not in idata.groups():
        problems.append("it has no posterior group")
    elif any(idata.posterior.sizes.get(dim, 1) == 0 for dim in ("chain", "draw")):
        problems.append("its posterior holds no draws")
    checked = {}
    for (name, schema), record in zip(_RECORDS.items(), (provenance, design, diagnostics),
                                      strict=True):
        found = record_problems(name, schema, record)
        if found:
            problems += found
        else:
            checked[name] = schema.model_validate(record)
    if "design" in checked and "posterior" in idata.groups():
        problems += _draw_problems(idata.posterior, checked["design"])
    if "design" in checked and "prior" in idata.groups():  # read for the width ratios
        problems += [f"its prior group lacks {name}" for name in
                     _needed_variables(checked["design"]) if name not in idata.prior]
    if len(problems) > MAX_LISTED:
        more = len(problems) - MAX_LISTED
        problems = [*problems[:MAX_LISTED], f"and {more} more problem{'s' * (more > 1)}"]
    return problems


def _describe(record: str, error: dict) -> str:
    where = dotted_key(tuple(error["loc"]))
    if error["type"] == "model_type" and not where:
        return f"its {record} record is not a JSON object (found {type(error['input']).__name__})"
    found = repr(error["input"])
    found = found if len(found) <= 60 else found[:57] + "..."
    message = plain_message(error)
    if not where:
        return f"its {record} record: {message}"
    return f"its {record} record '{where}': {message} (found {found})"


def _organ_variables(design: DesignRecord) -> list[str]:
    return ["first_pass", "loss",
            *sorted({f"transmission_{det.modality}" for det in design.detection})]


def _needed_variables(design: DesignRecord) -> list[str]:
    """The variables the estimands of ``design`` read from a group of draws."""
    needed = [*_organ_variables(design), "release", "photons_per_cell"]
    needed += ["blood_efflux"] if design.explicit_blood else []
    if any(det.background is None for det in design.detection):
        needed.append("log_background")
    return needed


def _draw_problems(posterior, design: DesignRecord) -> list[str]:
    """The design against the posterior draws the estimands read."""
    if missing := [name for name in _needed_variables(design) if name not in posterior]:
        return [f"its posterior lacks the variables {missing} that the design record needs"]
    estimated = [det.group for det in design.detection if det.background is None]
    problems = []
    for name in _organ_variables(design):
        problems += _axis_problems(posterior[name], "organ", design.organs, name, position=-1)
    for name in ("first_pass", "loss", "release"):
        problems += _axis_problems(posterior[name], "cell_type", design.cell_types, name,
                                   position=2, subset=True)
    if estimated and max(estimated) >= posterior["log_background"].shape[-1]:
        problems.append(f"the design record's detection groups go up to {max(estimated)}, "
                        f"but log_background has {posterior['log_background'].shape[-1]}")
    return problems


def _axis_problems(variable, dim: str, labels: list[str], name: str, *, position: int,
                   subset: bool = False) -> list[str]:
    """The design's ``labels`` against one axis of a variable of the draws (chain, draw, …).

    With a coordinate ``dim`` the labels are compared (``subset``: the design's must be
    among the draws', as a study may hold fewer cell types than its spec); without one, the
    axis at ``position`` must have one entry per label.
    """
    if dim in variable.coords:
        have = [str(v) for v in variable.coords[dim].values]
        if set(labels) <= set(have) if subset else labels == have:
            return []
        return [f"the design record's {dim}s {labels} are not those of {name} in the "
                f"posterior ({have})"]
    if variable.ndim >= 3 and variable.shape[position] == len(labels):
        return []
    return [f"the design record has {len(labels)} {dim}s, but {name} in the posterior has "
            f"shape {tuple(variable.shape)}"]
