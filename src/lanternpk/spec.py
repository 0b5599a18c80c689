"""Declarative model specs: TOML files, validated strictly; the rate structure is derived.

A spec is data only. It is parsed with :mod:`tomllib` (nothing in it is ever executed) and
validated with pydantic (unknown keys are errors, with a "did you mean" hint). Every problem
becomes a :class:`~lanternpk.errors.Problem` naming the file and the dotted key path, e.g.
``priors.loss.lung.muse.sigma``; items of an array of tables are numbered from 0 in file
order, e.g. ``flows[3].to``. All problems are raised together as one
:class:`~lanternpk.errors.DataError`.

Schema
------
::

    [model]
    name = "muse_vs_msc"
    description = "..."                # optional
    cell_types = ["muse", "msc"]       # labels used in the data's cell_type column; contrasts
                                       # are Muse/MSC when both are listed, else the first
                                       # over the second (estimands.contrast_pair)
    blood = "fast"                     # "fast": blood outflow is an instantaneous split;
                                       # "explicit": blood compartment with a finite efflux rate
    filter = "lung"                    # the one organ that releases live cells back to blood

    [[compartments]]                   # exactly one kind = "blood", one kind = "sink",
    name = "blood"                     # at least one kind = "organ"; names are identifiers
    kind = "blood"
    description = "..."                # optional
    # ... one table per compartment

    [[flows]]                          # the rate structure is derived from these
    from = "blood"
    to = "lung"
    type = "first_pass"                # first_pass: blood -> organ (one per organ);
                                       # release: filter -> blood (exactly one);
                                       # loss: organ -> sink (one per organ)

    [priors.first_pass.lung]           # one table per flow, keyed by the flow's organ;
    muse = { dist = "logratio_normal", median = 0.70, sigma = 0.8,
             units = "fraction of blood outflow", source = "SCIENCE.md ..." }
    msc = { ... }                      # keys: every cell type, or exactly one key "all"
    [priors.release.lung]              # (shared by all cell types)
    [priors.loss.lung]
    [priors.blood_efflux]              # one prior, required iff model.blood = "explicit"

    [random_effects]                   # sd of the animal-level deviation (non-centred), on
    first_pass = { dist = "halfnormal", sigma = 0.3, ... }   # the log-ratio scale, and on
    release = { ... }                  # the log-rate scale for release and loss
    loss = { ... }

    [measurement]
    photons_per_cell = { dist = "lognormal", median = 400, sigma = 1.55, ... }
    image_gain_sd = { dist = "halfnormal", sigma = 0.4, ... }
    residual_sd = { dist = "halfnormal", sigma = 0.4, ... }
    calibration_sd = { dist = "halfnormal", sigma = 0.5, ... }   # optional, as shown
    background_lod_fraction = { dist = "lognormal", median = 0.5, sigma = 1.0, ... }  # optional
    [measurement.transmission.in_vivo] # per organ compartment
    lung = { dist = "lognormal", median = 3e-3, sigma = 1.4, ... }
    [measurement.transmission.ex_vivo]
    lung = { dist = "lognormal", median = 0.3, sigma = 0.63, ... }

    [regions]                          # data region label -> organ compartment, or "*":
    lung = "lung"                      # every organ, each through its own in vivo
    whole_body = "*"                   # transmission (blood is not included)

Distributions (every one carries non-empty ``units`` and ``source``):

``lognormal(median > 0, 1e-100 ≤ sigma ≤ 10)``
    ``log X ~ Normal(log median, sigma)``.
``logratio_normal(0 < median < 1, 1e-100 ≤ sigma ≤ 10)``
    first-pass fractions only: ``log(f_j / f_other) ~ Normal(log(median_j / m_other), sigma)``
    where ``m_other = 1 - sum_j median_j`` (per cell type) is the median of the remainder
    that goes neither to a modelled organ (liver, spleen, death in blood). The medians of a
    cell type must sum to < 1. ``median_j / m_other`` is the exact prior median of the ratio;
    the median of ``f_j`` itself is close to ``median_j`` when the sigmas are moderate.
``halfnormal(1e-100 ≤ sigma ≤ 10)``
    standard deviations (random effects, image gain, residual), all of log quantities.
``normal(mu, sigma ≥ 1e-100)``
    parsed for completeness; no slot of the current model accepts it, since every model
    parameter is positive or a fraction.

A sigma above 10 on a log scale (a 90% prior range of a factor 1.4e7 either way) is refused:
exponentiated prior draws would overflow or underflow float64. So is one below 1e-100: the
sampler's arithmetic would underflow.

Which distributions each slot accepts: first_pass ``logratio_normal``; release, loss,
blood_efflux, photons_per_cell, transmissions and background_lod_fraction ``lognormal``;
random effects, image_gain_sd, residual_sd and calibration_sd ``halfnormal``. The two
optional measurement priors default to the values shown (:class:`Measurement`):
calibration_sd is the residual sd of the standard curve, background_lod_fraction the prior
of an ROI background the model estimates (data without a ``background`` column), relative to
the median LOD of its region × modality. Rates (release, loss, blood_efflux) must have
units ``1/day``.

Organs are ordered as declared among ``[[compartments]]``; :attr:`ModelSpec.filter_index`
points into that order, and every per-organ array this module returns uses it.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StringConstraints,
    ValidationError,
    model_validator,
)

from lanternpk.digest import file_sha256
from lanternpk.errors import (
    CONTROL_CHARACTER,
    DataError,
    Problem,
    UsageError,
    did_you_mean,
    unknown_key_message,
)
from lanternpk.tomlfile import decode_utf8, parse_toml, plain_message, with_lines

__all__ = [
    "FLOW_KINDS",
    "MODALITIES",
    "SHARED",
    "WHOLE_BODY",
    "Compartment",
    "Flow",
    "HalfNormal",
    "LogNormal",
    "LogRatioNormal",
    "Measurement",
    "ModelSection",
    "ModelSpec",
    "Normal",
    "Prior",
    "Priors",
    "RandomEffects",
    "RateStructure",
    "Transmission",
    "load_spec",
    "parse_spec",
    "spec_hash",
]

#: Flow kinds, in the order the solver takes their parameters.
FLOW_KINDS = ("first_pass", "release", "loss")
#: The prior key that means "one parameter shared by every cell type".
SHARED = "all"
#: The region target that means "every organ, each through its own in vivo transmission".
WHOLE_BODY = "*"
#: Imaging modalities with their own transmission.
MODALITIES = ("in_vivo", "ex_vivo")
#: Units every rate must be given in (the solver works in days).
RATE_UNITS = "1/day"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_IDENTIFIER = "must be an identifier (a letter, then letters, digits or '_')"
_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _no_controls(text: str, allowed: str = "\t\n") -> str:
    """Free text of a spec is printed (summaries, errors): no control characters (an escape
    would move a terminal's cursor), other than ``allowed`` (tabs and line breaks)."""
    if CONTROL_CHARACTER.search(text.translate(dict.fromkeys(map(ord, allowed)))):
        raise ValueError("holds a control character (an escape, a carriage return, a NUL …)")
    return text


def _one_line(text: str) -> str:
    if "\n" in _no_controls(text) or "\t" in text:
        raise ValueError("must be one line, without tabs")
    return text


#: Free text: units, sources and descriptions (several lines allowed).
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1),
                 AfterValidator(_no_controls)]
Number = StrictFloat

#: Largest prior sigma on a log scale: 10 already gives a 90% prior range of a factor 1.4e7
#: either way; beyond it, exponentiated prior draws overflow or underflow float64.
MAX_LOG_SIGMA = 10.0
#: Smallest prior sigma: a subnormal one (1e-320) is flushed to zero by XLA's CPU code and its
#: square underflows below ~1e-154, so the log density is NaN; 1e-100 fixes a quantity to 100
#: digits already.
MIN_SIGMA = 1e-100
#: A prior's sigma where the quantity is on a log scale (all of this model's priors).
LogSigma = Annotated[StrictFloat, Field(ge=MIN_SIGMA, le=MAX_LOG_SIGMA)]
#: Range of a prior median on a log scale, in its units: with |log median| ≤ 230 and sigma
#: ≤ MAX_LOG_SIGMA a prior draw overflows or underflows float64 (e^±709) only beyond 47 sds.
MIN_MEDIAN, MAX_MEDIAN = 1e-100, 1e100


def _log_scale_median(median: float) -> float:
    if not MIN_MEDIAN <= median <= MAX_MEDIAN:
        raise ValueError(f"must be within [{MIN_MEDIAN:g}, {MAX_MEDIAN:g}] (a median on a log "
                         "scale; prior draws beyond it overflow)")
    return median


LogMedian = Annotated[Number, AfterValidator(_log_scale_median)]


class LogNormal(BaseModel):
    """Log-normal prior: ``log X ~ Normal(log median, sigma)``.

    Parameters
    ----------
    median : float
        Median of X, in [1e-100, 1e100], in ``units``.
    sigma : float
        Standard deviation of log X, in (0, 10] (dimensionless).
    units, source : str
        Units of X, and where the numbers come from (a SCIENCE.md row).
    """

    model_config = _CONFIG

    dist: Literal["lognormal"]
    median: LogMedian = Field(gt=0)
    sigma: LogSigma
    units: Text
    source: Text


class LogRatioNormal(BaseModel):
    """Prior on a first-pass fraction through its log-ratio to the "other" remainder.

    Parameters
    ----------
    median : float
        Prior median of the fraction of blood outflow, in [1e-100, 1).
    sigma : float
        Standard deviation of ``log(f_j / f_other)``, in (0, 10] (dimensionless).
    units, source : str
        Units (a fraction of blood outflow), and where the numbers come from.
    """

    model_config = _CONFIG

    dist: Literal["logratio_normal"]
    median: LogMedian = Field(gt=0, lt=1)
    sigma: LogSigma
    units: Text
    source: Text


class HalfNormal(BaseModel):
    """Half-normal prior on a non-negative quantity (a standard deviation).

    Parameters
    ----------
    sigma : float
        Scale, in (0, 10], in ``units`` (every half-normal prior of the model is on the sd
        of a log quantity).
    units, source : str
        Units, and where the number comes from.
    """

    model_config = _CONFIG

    dist: Literal["halfnormal"]
    sigma: LogSigma
    units: Text
    source: Text


class Normal(BaseModel):
    """Normal prior (parsed, but accepted by no slot of the current model).

    Parameters
    ----------
    mu : float
        Mean, in ``units``.
    sigma : float
        Standard deviation, > 0, in ``units``.
    units, source : str
        Units, and where the numbers come from.
    """

    model_config = _CONFIG

    dist: Literal["normal"]
    mu: Number
    sigma: Number = Field(ge=MIN_SIGMA)
    units: Text
    source: Text


#: Any prior; the ``dist`` key selects the distribution.
Prior = Annotated[Union[LogNormal, LogRatioNormal, HalfNormal, Normal], Field(discriminator="dist")]  # noqa: UP007

#: Priors per organ, then per cell type (or the single key "all").
FlowPriors = dict[str, dict[str, Prior]]


class ModelSection(BaseModel):
    """The ``[model]`` table: name, cell types, blood model and filter organ."""

    model_config = _CONFIG

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1),
                    AfterValidator(_one_line)]
    description: Annotated[str, AfterValidator(_no_controls)] = ""
    cell_types: tuple[str, ...] = Field(min_length=1)
    blood: Literal["fast", "explicit"]
    filter: str


class Compartment(BaseModel):
    """One ``[[compartments]]`` table."""

    model_config = _CONFIG

    name: str
    kind: Literal["blood", "organ", "sink"]
    description: Annotated[str, AfterValidator(_no_controls)] = ""


class Flow(BaseModel):
    """One ``[[flows]]`` table: a directed flow of live cells between two compartments."""

    model_config = _CONFIG

    from_: str = Field(alias="from")
    to: str
    type: Literal["first_pass", "release", "loss"]


class Priors(BaseModel):
    """The ``[priors]`` table: one prior per flow parameter, plus the blood efflux rate."""

    model_config = _CONFIG

    first_pass: FlowPriors
    release: FlowPriors
    loss: FlowPriors
    blood_efflux: Prior | None = None


class RandomEffects(BaseModel):
    """The ``[random_effects]`` table: priors on the sd of animal-level deviations.

    The deviations are on the log-ratio scale for first-pass fractions and on the log-rate
    scale for release and loss rates, shared by every organ and cell type of a kind.
    """

    model_config = _CONFIG

    first_pass: Prior
    release: Prior
    loss: Prior


class Transmission(BaseModel):
    """The ``[measurement.transmission]`` table: priors per organ and modality."""

    model_config = _CONFIG

    in_vivo: dict[str, Prior] = Field(default_factory=dict)
    ex_vivo: dict[str, Prior] = Field(default_factory=dict)


#: ``measurement.calibration_sd`` when a spec gives none.
DEFAULT_CALIBRATION_SD = HalfNormal(
    dist="halfnormal", sigma=0.5, units="sd of log flux of a standard-curve measurement",
    source="lanternpk default, weakly informative (a factor of ~2.3 at its 90% upper "
    "bound): a spec may set its own")
#: ``measurement.background_lod_fraction`` when a spec gives none.
DEFAULT_BACKGROUND_LOD_FRACTION = LogNormal(
    dist="lognormal", median=0.5, sigma=1.0, units="mean background of an ROI / its LOD",
    source="lanternpk default: SCIENCE.md, LOD = background mean + 3 SD, so the background "
    "lies below its LOD; weakly informative (a factor of ~5 either way at 90%): a spec may "
    "set its own")


class Measurement(BaseModel):
    """The ``[measurement]`` table: priors of the flux measurement model.

    ``calibration_sd`` (residual sd of the standard curve) and ``background_lod_fraction``
    (an estimated background as a fraction of its ROIs' median LOD, used when the data have
    no ``background`` column) are optional; a spec without them gets
    :data:`DEFAULT_CALIBRATION_SD` and :data:`DEFAULT_BACKGROUND_LOD_FRACTION`.
    """

    model_config = _CONFIG

    photons_per_cell: Prior
    image_gain_sd: Prior
    residual_sd: Prior
    transmission: Transmission
    calibration_sd: Prior = DEFAULT_CALIBRATION_SD
    background_lod_fraction: Prior = DEFAULT_BACKGROUND_LOD_FRACTION


@dataclass(frozen=True, eq=False)
class RateStructure:
    """Flow incidence derived from a spec's declared flows.

    Organ indices point into :attr:`organs` (the spec's declaration order); compartment
    indices point into :attr:`compartments`, the reference-solver state order: organs, then
    blood (explicit-blood model only), then the sink.

    Attributes
    ----------
    organs : tuple of str
        Organ names, in declaration order.
    compartments : tuple of str
        State order: organs..., blood (explicit only), sink.
    filter_index : int
        Organ index of the filter organ (the only one releasing cells to blood).
    explicit_blood : bool
        Whether blood is a compartment with a finite efflux rate.
    first_pass_organs : ndarray of int, shape (n_first_pass,)
        Organ index receiving each first-pass flow, in flow declaration order.
    release_organ : int
        Organ index of the release flow's source (equals ``filter_index``).
    loss_organs : ndarray of int, shape (n_loss,)
        Organ index losing cells to the sink by each loss flow, in flow declaration order.
    flow_from, flow_to : ndarray of int, shape (n_flows,)
        Compartment index of each declared flow's source and target (blood and sink use
        their names' positions in :attr:`compartment_names`, see below).
    flow_types : tuple of str
        Kind of each declared flow, in declaration order.
    compartment_names : tuple of str
        Every compartment, blood included even in the fast-blood model: organs..., blood,
        sink. ``flow_from``/``flow_to`` index this tuple.
    """

    organs: tuple[str, ...]
    compartments: tuple[str, ...]
    filter_index: int
    explicit_blood: bool
    first_pass_organs: np.ndarray
    release_organ: int
    loss_organs: np.ndarray
    flow_from: np.ndarray
    flow_to: np.ndarray
    flow_types: tuple[str, ...]
    compartment_names: tuple[str, ...]

    @property
    def n_organs(self) -> int:
        """Number of organ compartments."""
        return len(self.organs)

    def rate_matrix(
        self,
        first_pass: np.ndarray,
        release: float,
        loss: np.ndarray,
        *,
        blood_efflux: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rate matrix and post-bolus state of one animal, built flow by flow.

        Parameters
        ----------
        first_pass : ndarray, shape (n_organs,)
            Fraction of blood outflow entering each organ on one pass (sum < 1); the
            remainder goes to the sink.
        release : float
            Filter-to-blood release rate, 1/day.
        loss : ndarray, shape (n_organs,)
            Loss rate of each organ, 1/day.
        blood_efflux : float, optional
            Rate at which cells leave blood, 1/day; required iff the blood is explicit.

        Returns
        -------
        A : ndarray, shape (n, n)
            ``dx/dt = A x`` in :attr:`compartments` order, 1/day.
        x0 : ndarray, shape (n,)
            State right after a bolus of dose 1 (with fast blood: the first-pass split).
        """
        f_all = np.asarray(first_pass, dtype=float)
        k_all = np.asarray(loss, dtype=float)
        if f_all.shape != (self.n_organs,) or k_all.shape != (self.n_organs,):
            raise ValueError(f"first_pass and loss must have shape ({self.n_organs},)")
        if self.explicit_blood != (blood_efflux is not None):
            raise ValueError("blood_efflux is required iff the spec's blood model is explicit")
        n = len(self.compartments)
        sink = n - 1
        blood = self.n_organs if self.explicit_blood else None
        # Where cells leaving blood land: per organ by first-pass flows, the rest in the sink.
        split = np.zeros(n)
        for organ in self.first_pass_organs:
            split[organ] += f_all[organ]
        split[sink] += 1.0 - split.sum()
        a = np.zeros((n, n))
        for organ in self.loss_organs:
            a[organ, organ] -= k_all[organ]
            a[sink, organ] += k_all[organ]
        a[self.release_organ, self.release_organ] -= release
        if blood is None:
            a[:, self.release_organ] += release * split
            return a, split
        a[blood, self.release_organ] += release
        a[blood, blood] -= blood_efflux
        a[:, blood] += blood_efflux * split
        x0 = np.zeros(n)
        x0[blood] = 1.0
        return a, x0


class ModelSpec(BaseModel):
    """A validated model spec (see the module docstring for the schema).

    Cross-field rules (flows against compartments, priors against flows and cell types,
    regions and transmissions against organs) are checked on construction; a violation
    raises :class:`pydantic.ValidationError`, which :func:`load_spec` turns into a
    :class:`~lanternpk.errors.DataError` naming each key.
    """

    model_config = _CONFIG

    model: ModelSection
    compartments: tuple[Compartment, ...] = Field(min_length=1)
    flows: tuple[Flow, ...] = Field(min_length=1)
    priors: Priors
    random_effects: RandomEffects
    measurement: Measurement
    regions: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        issues = _Checker(self).run()
        if issues:
            raise _SpecIssues(issues)
        return self

    # ---- conveniences for the model builder -------------------------------------------

    @property
    def name(self) -> str:
        """The spec's name (``model.name``)."""
        return self.model.name

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Declared cell-type labels, in declaration order."""
        return self.model.cell_types

    @property
    def explicit_blood(self) -> bool:
        """Whether blood is a compartment with a finite efflux rate (``blood = "explicit"``)."""
        return self.model.blood == "explicit"

    @property
    def organs(self) -> tuple[str, ...]:
        """Organ compartment names, in declaration order (the filter is not moved first)."""
        return tuple(c.name for c in self.compartments if c.kind == "organ")

    @property
    def filter_index(self) -> int:
        """Index of the filter organ in :attr:`organs`."""
        return self.organs.index(self.model.filter)

    @property
    def blood(self) -> str:
        """Name of the blood compartment."""
        return next(c.name for c in self.compartments if c.kind == "blood")

    @property
    def sink(self) -> str:
        """Name of the (unobserved) sink compartment."""
        return next(c.name for c in self.compartments if c.kind == "sink")

    @property
    def region_compartments(self) -> dict[str, tuple[str, ...]]:
        """Organs whose cells each data region sees; ``"*"`` expands to every organ."""
        return {
            region: self.organs if target == WHOLE_BODY else (target,)
            for region, target in self.regions.items()
        }

    def is_shared(self, kind: str, organ: str) -> bool:
        """Whether one parameter of ``kind`` for ``organ`` is shared by all cell types.

        Parameters
        ----------
        kind : {"first_pass", "release", "loss"}
            Flow kind.
        organ : str
            Organ the flow belongs to (target of first_pass, source of release and loss).
        """
        return set(self._flow_priors(kind, organ)) == {SHARED}

    def prior(self, kind: str, organ: str, cell_type: str) -> LogNormal | LogRatioNormal:
        """The prior of one flow parameter for one cell type.

        Parameters
        ----------
        kind : {"first_pass", "release", "loss"}
            Flow kind.
        organ : str
            Organ the flow belongs to.
        cell_type : str
            A declared cell type; a shared ("all") prior is returned for every cell type.

        Returns
        -------
        LogRatioNormal or LogNormal
            First-pass fraction (fraction of blood outflow) or rate (1/day) prior.
        """
        if cell_type not in self.cell_types:
            raise KeyError(f"unknown cell type {cell_type!r}; declared: {self.cell_types}")
        entries = self._flow_priors(kind, organ)
        return entries.get(SHARED) or entries[cell_type]  # type: ignore[return-value]

    def first_pass_other_median(self, cell_type: str) -> float:
        """Prior median of the "other" first-pass remainder, ``1 - Σ_j median_j``.

        Parameters
        ----------
        cell_type : str
            A declared cell type.

        Returns
        -------
        float
            Fraction of blood outflow going to no modelled organ, in (0, 1).
        """
        return 1.0 - sum(self.prior("first_pass", o, cell_type).median for o in self.organs)

    def first_pass_logratio_loc(self, cell_type: str) -> np.ndarray:
        """Prior means of ``log(f_j / f_other)``, ``log(median_j / m_other)``, in organ order.

        Parameters
        ----------
        cell_type : str
            A declared cell type.

        Returns
        -------
        ndarray, shape (n_organs,)
            Dimensionless log-ratios.
        """
        other = self.first_pass_other_median(cell_type)
        medians = [self.prior("first_pass", o, cell_type).median for o in self.organs]
        return np.log(np.asarray(medians) / other)

    def transmission(self, modality: str, organ: str) -> LogNormal | None:
        """Transmission prior for an organ seen in a modality, or None if the spec has none.

        Parameters
        ----------
        modality : {"in_vivo", "ex_vivo"}
            Imaging modality.
        organ : str
            Organ compartment name.

        Returns
        -------
        LogNormal or None
            Prior on the fraction of emitted photons reaching the camera (dimensionless).
        """
        if modality not in MODALITIES:
            raise KeyError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        return getattr(self.measurement.transmission, modality).get(organ)

    def rate_structure(self) -> RateStructure:
        """Flow incidence derived from the declared flows (see :class:`RateStructure`)."""
        organs = self.organs
        organ_index = {name: i for i, name in enumerate(organs)}
        names = (*organs, self.blood, self.sink)
        index = {name: i for i, name in enumerate(names)}
        state = (*organs, self.blood, self.sink) if self.explicit_blood else (*organs, self.sink)

        def frozen(values: Iterable[int]) -> np.ndarray:
            arr = np.asarray(list(values), dtype=np.intp)
            arr.setflags(write=False)
            return arr

        by_kind = {kind: [f for f in self.flows if f.type == kind] for kind in FLOW_KINDS}
        return RateStructure(
            organs=organs,
            compartments=state,
            filter_index=self.filter_index,
            explicit_blood=self.explicit_blood,
            first_pass_organs=frozen(organ_index[f.to] for f in by_kind["first_pass"]),
            release_organ=organ_index[by_kind["release"][0].from_],
            loss_organs=frozen(organ_index[f.from_] for f in by_kind["loss"]),
            flow_from=frozen(index[f.from_] for f in self.flows),
            flow_to=frozen(index[f.to] for f in self.flows),
            flow_types=tuple(f.type for f in self.flows),
            compartment_names=names,
        )

    def _flow_priors(self, kind: str, organ: str) -> dict[str, Any]:
        if kind not in FLOW_KINDS:
            raise KeyError(f"unknown flow kind {kind!r}; expected one of {FLOW_KINDS}")
        table: dict[str, dict[str, Any]] = getattr(self.priors, kind)
        if organ not in table:
            raise KeyError(f"no {kind} prior for organ {organ!r}; have {sorted(table)}")
        return table[organ]


# ---- loading --------------------------------------------------------------------------


def spec_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a spec file's bytes, as 64 hex digits (for provenance)."""
    return file_sha256(path)


def load_spec(path: str | os.PathLike) -> ModelSpec:
    """Read and validate a model spec file.

    Parameters
    ----------
    path : str or path-like
        TOML spec file. Problems are reported with the path as given.

    Returns
    -------
    ModelSpec

    Raises
    ------
    UsageError
        The file does not exist or cannot be read.
    DataError
        The file is not UTF-8 TOML, or the spec is invalid; one problem per key.
    """
    file = os.fspath(path)
    try:
        raw = Path(file).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{file}: no such spec file") from None
    except OSError as exc:
        raise UsageError(f"{file}: cannot read spec file ({exc.strerror})") from None
    return parse_spec(decode_utf8(raw, file=file), file=file)


def parse_spec(text: str, *, file: str = "<spec>") -> ModelSpec:
    """Validate a spec given as TOML text.

    Parameters
    ----------
    text : str
        The TOML document.
    file : str
        Name used in problems.

    Returns
    -------
    ModelSpec

    Raises
    ------
    DataError
        The text is not valid TOML, or the spec is invalid.
    """
    data = parse_toml(text, file=file)
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise DataError(with_lines(_problems(exc, file), text)) from None


# ---- turning pydantic errors into problems -------------------------------------------


class _SpecIssues(ValueError):
    """Cross-field problems, carried through pydantic with their key paths intact."""

    def __init__(self, issues: list[tuple[str, object, str]]):
        self.issues = issues
        super().__init__("; ".join(f"{path}: {message}" for path, _, message in issues))


def _problems(exc: ValidationError, file: str) -> list[Problem]:
    errors = exc.errors()
    # A misspelt key shows up twice: as an unknown key and as a missing one. Keep the first,
    # whose hint names the missing key.
    misspelt = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = tuple(err["loc"])
            close = difflib.get_close_matches(str(loc[-1]), _keys_of(_walk(loc[:-1])[1]), 1, 0.6)
            misspelt.update((*loc[:-1], key) for key in close)
    problems = []
    for err in errors:
        if err["type"] == "missing" and tuple(err["loc"]) in misspelt:
            continue
        error = err.get("ctx", {}).get("error")
        if err["type"] == "value_error" and isinstance(error, _SpecIssues):
            problems.extend(
                Problem(file=file, key=path, value=value, message=message)
                for path, value, message in error.issues
            )
            continue
        loc = tuple(err["loc"])
        path, target = _walk(loc)
        value = err.get("input")
        kind = err["type"]
        ctx = err.get("ctx", {})
        if kind == "extra_forbidden":
            _, parent = _walk(loc[:-1])
            allowed = _keys_of(parent)
            message = unknown_key_message(str(loc[-1]), allowed)
        elif kind == "union_tag_invalid":  # pydantic's tag is str(value): True, not true
            given = value.get("dist") if isinstance(value, dict) else ctx.get("tag")
            path, value = f"{path}.dist", given
            tags = _tags_of(target)
            if isinstance(given, str):
                message = f"unknown distribution {given!r}" + did_you_mean(given, tags)
            else:
                message = "must be the name of a distribution, in quotes"
            message += f"; one of {', '.join(tags)}"
        elif kind == "union_tag_not_found":
            path, value = f"{path}.dist", None
            message = f"required key is missing (one of {', '.join(_tags_of(target))})"
        elif kind == "literal_error":
            options = [str(o) for o in get_args(_unwrap(target))]
            message = "must be " + " or ".join(repr(o) for o in options)
            message += did_you_mean(str(value), options)
        else:
            message = plain_message(err)
            if kind == "less_than_equal" and loc[-1] == "sigma":
                message += (" (the sd of a log: 10 is already a 90% prior range of a factor "
                            "1.4e7 either way, and prior draws beyond it overflow)")
            elif kind == "greater_than_equal" and loc[-1] == "sigma":
                message = (f"must be at least {MIN_SIGMA:g} (a standard deviation is "
                           "positive, and a smaller one underflows in the sampler's "
                           "arithmetic: a NaN log density)")
        if isinstance(value, dict | list | tuple) or kind == "missing":
            value = None
        problems.append(Problem(file=file, key=path or None, value=value, message=message))
    return problems


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``None`` from an annotation."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if _is_union(tp):
        members = [m for m in get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
        return Union[tuple(members)]  # noqa: UP007
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _tags_of(tp: Any) -> list[str]:
    tp = _unwrap(tp)
    if not _is_union(tp):
        return []
    return [_tag_of(m) for m in get_args(tp)]


def _tag_of(member: Any) -> str:
    return get_args(member.model_fields["dist"].annotation)[0]


def _keys_of(tp: Any) -> list[str]:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [field.alias or name for name, field in tp.model_fields.items()]
    return []


def _walk(loc: tuple[Any, ...]) -> tuple[str, Any]:
    """Render a pydantic location as a dotted key path, and find the annotation there.

    Union tags, which pydantic puts in the location, are dropped from the path.
    """
    tp: Any = ModelSpec
    path = ""
    for item in loc:
        tp = _unwrap(tp)
        if _is_union(tp) and isinstance(item, str):
            tp = next((m for m in get_args(tp) if _tag_of(m) == item), None)
            continue
        if isinstance(item, int):
            path += f"[{item}]"
        else:
            path = f"{path}.{item}" if path else str(item)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {field.alias or name: field for name, field in tp.model_fields.items()}
            tp = fields[item].annotation if item in fields else None
        elif get_origin(tp) in (tuple, list):
            tp = get_args(tp)[0] if get_args(tp) else None
        elif get_origin(tp) is dict:
            tp = get_args(tp)[-1] if get_args(tp) else None
        else:
            tp = None
    return path, tp


# ---- cross-field checks ---------------------------------------------------------------


def _listing(flow_indices: list[int]) -> str:
    if not flow_indices:
        return "none"
    return f"{len(flow_indices)} ({', '.join(f'flows[{i}]' for i in flow_indices)})"


#: Distributions each prior slot accepts.
_RATE = ("lognormal",)
_SD = ("halfnormal",)


class _Checker:
    """Collect every cross-field problem of a parsed spec as (key path, value, message)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.issues: list[tuple[str, object, str]] = []

    def add(self, path: str, value: object, message: str) -> None:
        self.issues.append((path, value, message))

    def run(self) -> list[tuple[str, object, str]]:
        kinds = self._compartments()
        self._cell_types()
        if kinds is not None:
            flows_ok = self._flows(kinds)
            self._priors(flows_ok)
            self._regions_and_transmission(kinds)
        self._slots()
        return self.issues

    # compartments, filter, cell types

    def _compartments(self) -> dict[str, str] | None:
        spec = self.spec
        kinds: dict[str, str] = {}
        for i, comp in enumerate(spec.compartments):
            if not _NAME.match(comp.name):
                self.add(
                    f"compartments[{i}].name",
                    comp.name,
                    _IDENTIFIER,
                )
            elif comp.name in kinds:
                self.add(f"compartments[{i}].name", comp.name, "duplicate compartment name")
            kinds.setdefault(comp.name, comp.kind)
        ok = True
        for kind in ("blood", "sink"):
            found = [c.name for c in spec.compartments if c.kind == kind]
            if len(found) != 1:
                ok = False
                self.add(
                    "compartments",
                    None,
                    f"exactly one compartment must have kind = {kind!r}; found {len(found)}"
                    + (f" ({', '.join(found)})" if found else ""),
                )
        organs = [n for n, k in kinds.items() if k == "organ"]
        if not organs:
            ok = False
            self.add("compartments", None, "at least one compartment must have kind = 'organ'")
        filt = spec.model.filter
        if kinds.get(filt) != "organ":
            ok = False
            what = (
                "is not a compartment" if filt not in kinds else f"is the {kinds[filt]} compartment"
            )
            self.add(
                "model.filter",
                filt,
                f"{filt!r} {what}; the filter must be an organ compartment"
                + did_you_mean(filt, organs)
                + f" (organs: {', '.join(organs)})",
            )
        return kinds if ok else None

    def _cell_types(self) -> None:
        seen: set[str] = set()
        for i, cell in enumerate(self.spec.model.cell_types):
            path = f"model.cell_types[{i}]"
            if cell == SHARED:
                self.add(path, cell, f"{SHARED!r} is reserved (a prior shared by all cell types)")
            elif not _NAME.match(cell):
                self.add(path, cell, _IDENTIFIER)
            elif cell in seen:
                self.add(path, cell, "duplicate cell type")
            seen.add(cell)

    # flows

    def _flows(self, kinds: dict[str, str]) -> bool:
        spec = self.spec
        filt = spec.model.filter
        rules = {
            "first_pass": (
                "blood",
                "organ",
                "first_pass flows go from the blood compartment to "
                "an organ (the remainder to the sink is implicit)",
            ),
            "release": (
                "organ",
                "blood",
                f"release flows go from the filter organ ({filt!r}) to the blood compartment",
            ),
            "loss": ("organ", "sink", "loss flows go from an organ to the sink compartment"),
        }
        start = len(self.issues)
        for i, flow in enumerate(spec.flows):
            bad_name = False
            for key, name in (("from", flow.from_), ("to", flow.to)):
                if name not in kinds:
                    bad_name = True
                    self.add(
                        f"flows[{i}].{key}",
                        name,
                        f"unknown compartment {name!r}"
                        + did_you_mean(name, kinds)
                        + f"; compartments: {', '.join(kinds)}",
                    )
            if bad_name:
                continue
            src, dst, rule = rules[flow.type]
            if kinds[flow.from_] != src or (flow.type == "release" and flow.from_ != filt):
                self.add(f"flows[{i}].from", flow.from_, f"{rule}; got from {flow.from_!r}")
            elif kinds[flow.to] != dst:
                self.add(f"flows[{i}].to", flow.to, f"{rule}; got to {flow.to!r}")
        if len(self.issues) > start:
            return False
        for kind, key in (("first_pass", "to"), ("loss", "from")):
            for organ in spec.organs:
                where = [
                    i
                    for i, f in enumerate(spec.flows)
                    if f.type == kind and (f.to if key == "to" else f.from_) == organ
                ]
                if len(where) != 1:
                    self.add(
                        "flows",
                        None,
                        f"organ {organ!r} must have exactly one {kind} flow "
                        f"({'from blood' if kind == 'first_pass' else 'to the sink'}); "
                        f"found {_listing(where)}",
                    )
        releases = [i for i, f in enumerate(spec.flows) if f.type == "release"]
        if len(releases) != 1:
            self.add(
                "flows",
                None,
                f"the filter {filt!r} must have exactly one release flow to blood; "
                f"found {_listing(releases)}",
            )
        return len(self.issues) == start

    # priors

    def _priors(self, flows_ok: bool) -> None:
        spec = self.spec
        cells = spec.model.cell_types
        for kind in FLOW_KINDS:
            table: dict[str, dict[str, Any]] = getattr(spec.priors, kind)
            if flows_ok:
                owners = [
                    f.to if kind == "first_pass" else f.from_ for f in spec.flows if f.type == kind
                ]
                for organ in table:
                    if organ not in owners:
                        self.add(
                            f"priors.{kind}.{organ}",
                            None,
                            f"no {kind} flow belongs to {organ!r}"
                            + did_you_mean(organ, owners)
                            + f"; {kind} flows belong to: {', '.join(owners)}",
                        )
                for organ in owners:
                    if organ not in table:
                        self.add(
                            f"priors.{kind}.{organ}",
                            None,
                            f"the {kind} flow of {organ!r} has no prior; add "
                            f"[priors.{kind}.{organ}] with one entry per cell type or 'all'",
                        )
            for organ, entries in table.items():
                self._cell_keys(f"priors.{kind}.{organ}", entries, cells)
                accept = ("logratio_normal",) if kind == "first_pass" else _RATE
                for key, prior in entries.items():
                    path = f"priors.{kind}.{organ}.{key}"
                    self._slot(path, prior, accept, rate=kind != "first_pass")
        self._first_pass_sums()
        efflux = spec.priors.blood_efflux
        if spec.explicit_blood and efflux is None:
            self.add(
                "priors.blood_efflux",
                None,
                "required when model.blood = 'explicit': a prior on the rate cells leave blood "
                "(1/day)",
            )
        elif not spec.explicit_blood and efflux is not None:
            self.add(
                "priors.blood_efflux",
                None,
                "only allowed when model.blood = 'explicit' (with fast blood, blood outflow "
                "is instantaneous)",
            )
        elif efflux is not None:
            self._slot("priors.blood_efflux", efflux, _RATE, rate=True)

    def _cell_keys(self, path: str, entries: Mapping[str, Any], cells: tuple[str, ...]) -> None:
        keys = list(entries)
        if SHARED in keys:
            if len(keys) > 1:
                others = [k for k in keys if k != SHARED]
                self.add(
                    path,
                    None,
                    f"a prior keyed {SHARED!r} is shared by every cell type and cannot be mixed "
                    f"with per-cell-type keys ({', '.join(others)})",
                )
            return
        hinted = set()
        for key in keys:
            if key not in cells:
                hinted.update(difflib.get_close_matches(key, cells, 1, 0.6))
                self.add(
                    f"{path}.{key}",
                    None,
                    f"{key!r} is not a declared cell type"
                    + did_you_mean(key, cells)
                    + f"; keys are the cell types ({', '.join(cells)}) or exactly one key "
                    f"{SHARED!r}",
                )
        missing = [c for c in cells if c not in keys]
        if missing and not set(missing) <= hinted:
            self.add(
                path,
                None,
                f"no prior for cell type(s) {', '.join(missing)}; give one per cell type "
                f"({', '.join(cells)}) or exactly one key {SHARED!r}",
            )

    def _first_pass_sums(self) -> None:
        spec = self.spec
        table = spec.priors.first_pass
        shared = {organ: set(entries) == {SHARED} for organ, entries in table.items()}
        if len(set(shared.values())) > 1:
            self.add(
                "priors.first_pass",
                None,
                "first-pass fractions form one simplex per cell type, so either every organ's "
                f"first_pass prior is keyed {SHARED!r} or none is; shared: "
                + ", ".join(o for o, s in shared.items() if s)
                + "; per cell type: "
                + ", ".join(o for o, s in shared.items() if not s),
            )
        for cell in spec.model.cell_types:
            parts = []
            for organ, entries in table.items():
                prior = entries.get(SHARED, entries.get(cell))
                if not isinstance(prior, LogRatioNormal):
                    return  # reported elsewhere
                parts.append((organ, prior.median))
            total = math.fsum(m for _, m in parts)
            if total >= 1.0:
                terms = " + ".join(f"{o} {m:g}" for o, m in parts)
                self.add(
                    "priors.first_pass",
                    round(total, 12),
                    f"first-pass fractions cannot sum to ≤ 1: the medians for cell type "
                    f"{cell!r} ({terms}) sum to {total:.4g}; lower them so that the 'other' "
                    "remainder (liver, spleen, death in blood) is positive",
                )

    # random effects and measurement

    def _slots(self) -> None:
        spec = self.spec
        for kind in FLOW_KINDS:
            self._slot(f"random_effects.{kind}", getattr(spec.random_effects, kind), _SD)
        m = spec.measurement
        self._slot("measurement.photons_per_cell", m.photons_per_cell, _RATE)
        self._slot("measurement.image_gain_sd", m.image_gain_sd, _SD)
        self._slot("measurement.residual_sd", m.residual_sd, _SD)
        self._slot("measurement.calibration_sd", m.calibration_sd, _SD)
        self._slot("measurement.background_lod_fraction", m.background_lod_fraction, _RATE)
        if m.background_lod_fraction.dist == "lognormal" and m.background_lod_fraction.median > 1:
            self.add("measurement.background_lod_fraction.median",
                     m.background_lod_fraction.median,
                     "the LOD is the background mean + k SD, so the background's median "
                     "fraction of it must be at most 1")
        for modality in MODALITIES:
            for organ, prior in getattr(m.transmission, modality).items():
                path = f"measurement.transmission.{modality}.{organ}"
                self._slot(path, prior, _RATE)
                if prior.dist == "lognormal" and prior.median > 1:
                    self.add(f"{path}.median", prior.median,
                             "a transmission is the fraction of emitted photons that reach "
                             "the camera: its median must be at most 1")

    def _slot(self, path: str, prior: Any, accept: tuple[str, ...], *, rate: bool = False) -> None:
        if prior.dist not in accept:
            self.add(
                f"{path}.dist",
                prior.dist,
                f"this parameter takes dist = {' or '.join(repr(a) for a in accept)}",
            )
        if rate and prior.units != RATE_UNITS:
            self.add(
                f"{path}.units",
                prior.units,
                f"rates must be given in {RATE_UNITS!r} (a half-life of t days is a rate of "
                "ln 2 / t per day)",
            )

    # regions and transmission

    def _regions_and_transmission(self, kinds: dict[str, str]) -> None:
        spec = self.spec
        organs = [n for n, k in kinds.items() if k == "organ"]
        trans = spec.measurement.transmission
        for modality in MODALITIES:
            for organ in getattr(trans, modality):
                if kinds.get(organ) != "organ":
                    what = (
                        f"unknown compartment {organ!r}"
                        if organ not in kinds
                        else f"{organ!r} is the {kinds[organ]}, not an organ"
                    )
                    self.add(
                        f"measurement.transmission.{modality}.{organ}",
                        None,
                        what
                        + did_you_mean(organ, organs)
                        + f"; transmissions are per organ ({', '.join(organs)})",
                    )
        for region, target in spec.regions.items():
            path = f"regions.{region}"
            if not _NAME.match(region):
                self.add(
                    path,
                    None,
                    "region names must be identifiers (a letter, then letters, digits or '_')",
                )
            if target == WHOLE_BODY:
                missing = [o for o in organs if o not in trans.in_vivo]
                if missing:
                    self.add(
                        path,
                        target,
                        f"{WHOLE_BODY!r} sums every organ through its in vivo transmission, but "
                        f"measurement.transmission.in_vivo has none for {', '.join(missing)}",
                    )
            elif kinds.get(target) != "organ":
                if target in kinds:
                    message = (
                        f"{target!r} is a {kinds[target]} compartment; regions map to "
                        f"an organ or {WHOLE_BODY!r}"
                    )
                else:
                    message = (
                        f"unknown compartment {target!r}"
                        + did_you_mean(target, organs)
                        + f"; regions map to an organ ({', '.join(organs)}) or "
                        f"{WHOLE_BODY!r}"
                    )
                self.add(path, target, message)
            elif target not in trans.in_vivo and target not in trans.ex_vivo:
                self.add(
                    path,
                    target,
                    f"organ {target!r} has no transmission prior; add it under "
                    "[measurement.transmission.in_vivo] or [measurement.transmission.ex_vivo]",
                )
