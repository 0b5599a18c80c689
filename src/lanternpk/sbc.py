"""`lanternpk sbc`: simulation-based calibration of a model spec on a study design, on Dask.

Steps (Talts et al. 2018):

1. **Design** (``--truth-design``): a design TOML (``data/designs/``: ``[study]``,
   ``[design]``, ``[detection]``) or a truth file (``data/truths/``: its ``[study]`` and
   ``[design]``, and backgrounds/LODs from its ``[measurement]``; its kinetic and measurement
   *parameters are ignored*: SBC draws them from the spec's priors). It fixes the observation
   rows: animals per cell type and sacrifice time, in vivo times and regions, ex vivo regions,
   dose, and per region × modality the background (photons/s, given to the model as the
   ``background`` column) and the LOD ``background × (1 + 3 background_cv)``.
2. **Datasets**: parameter sets drawn from the spec's priors (PyMC) and observation rows
   simulated from them with the JAX prior predictive (:mod:`lanternpk.predictive`), in
   blocks of :data:`BLOCK` datasets, block ``b`` seeded by ``(seed, b)``: dataset ``i`` depends
   only on the spec, the design, the seed and ``i`` (not on ``--n``), so a campaign can be
   extended. A simulated flux below the row's LOD is censored (its value is kept; the model
   only uses ``flux < lod``).
3. **Fits** (:func:`fit_task`, a pure function of its :class:`FitTask`): NUTS (numpyro, chains
   run sequentially in the worker), then the rank of every true quantity among ``L``
   (``--thin-to``) evenly thinned posterior draws.
4. **Dask**: a ``LocalCluster(n_workers=K, threads_per_worker=1)`` by default, or an existing
   scheduler (``--scheduler ADDRESS``). At most one task per worker thread is in flight; a
   task's clock runs while a worker executes it (:meth:`Backend.waiting`: not while it waits
   in a queue or is moved after its worker died). One that raises, or runs past
   ``--timeout``, is recorded and retried once with a new sampler seed (the worker of a
   timed-out task is restarted when it has a nanny). A fit that fails twice is written as a
   ``failed`` record and reported. Results are written by the client, atomically, to
   ``OUT/fits/NNNN.json`` as each fit arrives: a lost worker loses no finished fit, and
   re-running the same command skips indices with a finished record of the same run key
   (sha256 of spec, design, settings, block size and lanternpk version: a newer version may
   simulate or fit differently); failed records are retried.
5. **Summary**: ``OUT/ranks.csv``, ``OUT/sbc.json`` and ``OUT/sbc_ecdf.png`` (uniformity tests
   of :mod:`lanternpk.sbc_stats`).

Quantities ranked: every population parameter (``first_pass``, ``release``, ``loss``,
``photons_per_cell``, ``transmission_in_vivo``/``ex_vivo`` of organs with a prior,
``blood_efflux`` when explicit, the random-effect sds, ``image_gain_sd``, ``residual_sd``)
and every estimand of :func:`lanternpk.estimands.estimand_draws` (typical animal), the truth
computed from the prior draw with the same functions and the same design record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lanternpk import __version__, interrupt
from lanternpk.argtypes import (
    chain_count,
    draw_count,
    not_a_file,
    output_path,
    positive_int,
    random_seed,
    tune_count,
)
from lanternpk.data.schema import INDEX_NAME, OBSERVATION_COLUMNS
from lanternpk.data.simulate import Design, StudyInfo, animal_ids, image_id, load_truth
from lanternpk.digest import load_unchanged
from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_OK, DataError, Problem, UsageError
from lanternpk.io import atomic_path, is_interrupted_write, json_text, write_text_atomic
from lanternpk.run_records import SbcFitRecord, record_problems
from lanternpk.settings import MIN_DRAWS, SamplerSettings
from lanternpk.spec import ModelSpec, load_spec
from lanternpk.tomlfile import (
    KeyedProblems,
    load_toml_model,
    parse_toml,
    read_utf8,
    with_lines,
)

#: Datasets simulated per prior-predictive call; dataset i is in block i // BLOCK.
BLOCK = 50
FITS_DIR = "fits"
RUN_FILE = "sbc_run.json"
SUMMARY_FILE = "sbc.json"
RANKS_FILE = "ranks.csv"
#: Smallest family-wise level: the p-values are simulated, ~2 / (per-test threshold) rank
#: sets (sbc_stats.uniformity_tests); at 0.001 and 118 distinct rank sets, 472 000 sets (~8 s).
MIN_ALPHA = 1e-3
PLOT_FILE = "sbc_ecdf.png"
DEFAULT_OUT = Path("reports/sbc")
#: Population parameters ranked (variables of :func:`lanternpk.model.build_model`).
POPULATION = ("first_pass", "release", "loss", "photons_per_cell", "transmission_in_vivo",
              "transmission_ex_vivo", "blood_efflux", "sd_first_pass", "sd_release", "sd_loss",
              "image_gain_sd", "residual_sd")


# --- design -----------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Detection(_Strict):
    """Background per region (photons/s) by modality, and the LOD rule's background CV."""

    background_in_vivo: dict[str, float]
    background_ex_vivo: dict[str, float]
    background_cv: float = Field(ge=0)


class SbcDesign(_Strict):
    """A study design for SBC: which rows are observed, and their backgrounds and LODs."""

    study: StudyInfo
    design: Design
    detection: Detection

    @model_validator(mode="after")
    def _complete(self) -> SbcDesign:
        problems = []
        for modality, regions, backgrounds in (
                ("in_vivo", self.design.in_vivo_regions, self.detection.background_in_vivo),
                ("ex_vivo", self.design.ex_vivo_regions, self.detection.background_ex_vivo)):
            key = f"detection.background_{modality}"
            for region in regions:
                if region not in backgrounds:
                    problems.append((key, None, f"lacks region '{region}' of "
                                     f"design.{modality}_regions"))
                elif backgrounds[region] <= 0:
                    problems.append((f"{key}.{region}", backgrounds[region],
                                     "a background must be > 0 photons/s"))
        if problems:
            raise KeyedProblems(problems)
        return self


def load_design(path: str | Path) -> SbcDesign:
    """Read a design TOML, or the design part of a truth file (its parameters are ignored).

    Raises
    ------
    DataError
        Unreadable file or invalid keys, each naming the file and the dotted key.
    """
    path = Path(path)
    text = read_utf8(path, what="design")
    raw = parse_toml(text, file=str(path), what="cannot read design: not valid TOML")
    if "kinetics" not in raw:
        return load_toml_model(path, SbcDesign)
    truth = load_truth(path)
    m = truth.measurement
    return SbcDesign(study=truth.study, design=truth.design,
                     detection=Detection(background_in_vivo=m.background_in_vivo,
                                         background_ex_vivo=m.background_ex_vivo,
                                         background_cv=m.background_cv))


def check_design(spec: ModelSpec, obs: pd.DataFrame, path: str | Path) -> None:
    """Refuse a design the spec cannot model, naming the design file's keys (its rows are
    generated, so row numbers would mean nothing to the user).

    Raises
    ------
    DataError
        A cell type or region of ``path`` the spec does not have, or a region without a
        transmission for its modality; one problem per key and value.
    """
    from lanternpk.model import prepare_data

    try:
        prepare_data(spec, obs, source=str(path))
    except DataError as err:
        problems = {}
        for problem in err.problems:
            key = "design"
            if problem.row is not None and problem.column == "cell_type":
                key = "design.cell_types"
            elif problem.row is not None and problem.column == "region":
                key = f"design.{obs.loc[problem.row, 'modality']}_regions"
            problems.setdefault((key, str(problem.value), problem.message), Problem(
                str(path), problem.message, key=key, value=problem.value))
        text = Path(path).read_text(encoding="utf-8")
        raise DataError(with_lines(list(problems.values()), text)) from None


def design_observations(design: SbcDesign) -> pd.DataFrame:
    """Canonical observation rows of the design, flux set to twice the LOD (a placeholder).

    Per cell type, ``animals`` animals per sacrifice time; each is imaged in vivo at every
    time up to its sacrifice and ex vivo (excised organs) at sacrifice.
    """
    d, det, study = design.design, design.detection, design.study
    rows = []
    for ct in d.cell_types:
        ids = iter(animal_ids(d, ct))
        for group in d.sacrifice:
            for _ in range(group.animals):
                animal = next(ids)
                sessions = [("in_vivo", t) for t in d.in_vivo_times_h if t <= group.time_h]
                sessions.append(("ex_vivo", group.time_h))
                for modality, time_h in sessions:
                    regions, bg = ((d.in_vivo_regions, det.background_in_vivo)
                                   if modality == "in_vivo"
                                   else (d.ex_vivo_regions, det.background_ex_vivo))
                    for region in regions:
                        lod = bg[region] * (1.0 + 3.0 * det.background_cv)
                        rows.append({
                            "study": study.name, "animal": animal, "cell_type": ct,
                            "dose_cells": study.dose_cells, "time_h": float(time_h),
                            "region": region, "modality": modality,
                            "image": image_id(animal, modality, time_h),
                            "flux": 2.0 * lod, "lod": lod, "species": study.species,
                            "disease": study.disease, "background": bg[region]})
    table = pd.DataFrame(rows)
    for column, dtype in OBSERVATION_COLUMNS.items():
        table[column] = table[column].astype(dtype)
    for column in ("species", "disease"):
        table[column] = table[column].astype("string")
    table.index = pd.RangeIndex(2, 2 + len(table), name=INDEX_NAME)
    return table


# --- quantities ---------------------------------------------------------------------------

def _label(*parts) -> str:
    return ",".join(str(p) for p in parts if p is not None)


def quantities(group, spec: ModelSpec, design: dict) -> dict[str, np.ndarray]:
    """Every ranked quantity of a posterior or prior group, stacked draws: name → (S,).

    Names are ``parameter[cell_type,organ]`` for population parameters and
    ``estimand[cell_type,region(,time_d d)(,modality)]`` for estimands.
    """
    from lanternpk.estimands import estimand_draws, stacked_draws

    out: dict[str, np.ndarray] = {}
    organs, cell_types = list(spec.organs), list(spec.cell_types)
    for name in POPULATION:
        if name not in group:
            continue
        values = np.asarray(stacked_draws(group, name), dtype=float)
        if name in ("first_pass", "loss"):
            for c, ct in enumerate(cell_types):
                for j, organ in enumerate(organs):
                    out[f"{name}[{ct},{organ}]"] = values[:, c, j]
        elif name == "release":
            for c, ct in enumerate(cell_types):
                out[f"release[{ct}]"] = values[:, c]
        elif name.startswith("transmission_"):
            modality = name.removeprefix("transmission_")
            for j, organ in enumerate(organs):
                if spec.transmission(modality, organ) is not None:
                    out[f"{name}[{organ}]"] = values[:, j]
        else:
            out[name] = values
    for (name, ct, region, time_d, modality), values in estimand_draws(group, design).items():
        day = None if time_d is None else f"{time_d:g}d"
        out[f"{name}[{_label(ct, region, day, modality)}]"] = np.asarray(values, dtype=float)
    return out


# --- settings and datasets ----------------------------------------------------------------

@dataclass(frozen=True)
class SbcSettings:
    """How each SBC fit samples and ranks (part of the run key)."""

    seed: int = 20261125
    chains: int = 1
    tune: int = 400
    draws: int = 400
    thin_to: int = 99
    target_accept: float = 0.9
    chain_method: str = "sequential"

    def __post_init__(self) -> None:
        # each fit's sampler settings, checked here rather than as the first fit fails
        SamplerSettings(draws=self.draws, tune=self.tune, chains=self.chains,
                        target_accept=self.target_accept)
        if self.thin_to < 1:
            raise UsageError("--thin-to must be at least 1")
        if self.thin_to > self.chains * self.draws:
            raise UsageError(f"--thin-to {self.thin_to} exceeds the {self.chains * self.draws}"
                             " posterior draws (chains × draws)")
        if self.chain_method not in ("sequential", "vectorized", "parallel"):
            raise UsageError(f"unknown chain method {self.chain_method!r}")


def run_key(spec_sha256: str, design_sha256: str, settings: SbcSettings) -> str:
    """SHA-256 (hex) identifying a campaign: spec, design, settings, block size and version.

    ``spec_sha256`` and ``design_sha256`` are the hex digests of the files' bytes.
    """
    h = hashlib.sha256()
    h.update(bytes.fromhex(spec_sha256))
    h.update(bytes.fromhex(design_sha256))
    h.update(json.dumps({**asdict(settings), "block": BLOCK, "lanternpk": __version__},
                        sort_keys=True).encode())
    return h.hexdigest()


def _seeds(*entropy: int, n: int = 2) -> list[int]:
    return [int(s) for s in np.random.SeedSequence(list(entropy)).generate_state(n)]


def simulate_block(spec: ModelSpec, obs: pd.DataFrame, block: int, seed: int
                   ) -> dict[int, tuple[np.ndarray, dict[str, float]]]:
    """Datasets ``block × BLOCK … (block + 1) × BLOCK − 1``: simulated flux and true values.

    Parameters
    ----------
    spec : ModelSpec
    obs : DataFrame
        Design rows from :func:`design_observations`.
    block : int
    seed : int
        Campaign seed; the block's PyMC and JAX seeds derive from ``(seed, block)``.

    Returns
    -------
    dict
        Dataset index → (flux per row in photons/s, {quantity: true value}).
    """
    from lanternpk.fit import REPORTED_PARAMETERS, design_record
    from lanternpk.inference import sample_prior
    from lanternpk.model import build_model, prepare_data
    from lanternpk.predictive import parameter_draws, simulate, variable_names

    data = prepare_data(spec, obs, source="design")
    model = build_model(spec, data)
    pm_seed, jax_seed = _seeds(seed, block)
    names = variable_names(spec, data, "prior") + REPORTED_PARAMETERS
    names += ["blood_efflux"] if spec.explicit_blood else []
    prior = sample_prior(model, list(dict.fromkeys(names)), draws=BLOCK, seed=pm_seed).prior
    params = parameter_draws(prior, spec, data, mode="prior")
    sim = simulate(params, spec, data, mode="prior", seed=jax_seed, device="cpu",
                   with_observed=False)
    truth = quantities(prior, spec, design_record(spec, obs, data))
    out = {}
    for b in range(BLOCK):
        flux = np.exp(sim.log_flux[b])
        out[block * BLOCK + b] = (flux, {k: float(v[b]) for k, v in truth.items()})
    return out


def dataset_sha256(flux: np.ndarray) -> str:
    """sha256 of a simulated dataset's flux (float64 bytes)."""
    return hashlib.sha256(np.ascontiguousarray(flux, dtype=np.float64).tobytes()).hexdigest()


# --- one fit ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FitTask:
    """Everything one SBC fit needs (picklable; no file access on the worker)."""

    index: int
    key: str
    spec: ModelSpec
    obs: pd.DataFrame
    truth: dict[str, float]
    settings: SbcSettings
    dataset_sha256: str = ""


def fit_task(task: FitTask, attempt: int = 1) -> dict:
    """Fit one simulated dataset and rank every true quantity (pure; runs on a worker).

    The sampler seed derives from ``(seed, index, attempt)``; ties are broken with a
    generator seeded the same way.

    Returns
    -------
    dict
        ``index``, ``status`` ``"ok"``, ``ranks`` (quantity → rank in 0…L), ``n_draws`` (L),
        ``diagnostics`` (:func:`fit_diagnostics`), ``wall_s``, ``sampler_seed``, ``host``.
    """
    from lanternpk.fit import design_record
    from lanternpk.inference import sample
    from lanternpk.model import build_model, prepare_data
    from lanternpk.predictive import thin_indices
    from lanternpk.sbc_stats import rank

    start = time.perf_counter()
    s = task.settings
    sampler_seed, rank_seed = _seeds(s.seed, task.index, attempt)
    sampler_seed %= 2**31
    data = prepare_data(task.spec, task.obs, source=f"sbc dataset {task.index}")
    model = build_model(task.spec, data)
    idata = sample(model, SamplerSettings(draws=s.draws, tune=s.tune, chains=s.chains,
                                          seed=sampler_seed, target_accept=s.target_accept),
                   progressbar=False, chain_method=s.chain_method)
    post = quantities(idata.posterior, task.spec, design_record(task.spec, task.obs, data))
    keep = thin_indices(s.chains * s.draws, s.thin_to)
    rng = np.random.default_rng(rank_seed)
    ranks = {name: rank(task.truth[name], post[name][keep], rng) for name in task.truth}
    diagnostics = fit_diagnostics(idata)
    del model, idata, post
    _release_compiled()
    return {"index": task.index, "key": task.key, "dataset_sha256": task.dataset_sha256,
            "status": "ok", "ranks": ranks, "n_draws": len(keep), "diagnostics": diagnostics,
            "wall_s": round(time.perf_counter() - start, 2), "sampler_seed": sampler_seed,
            "host": platform.node(), "pid": os.getpid()}


def _release_compiled() -> None:
    """Drop this fit's compiled JAX programs: every dataset compiles its own model, and a
    long-lived worker would otherwise grow by ~0.1 GB per fit (measured) until its nanny
    restarts it."""
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


def fit_diagnostics(idata) -> dict:
    """Divergences, max R-hat and min bulk ESS over the population parameters of one fit.

    The same computation as ``lanternpk fit``'s checks
    (:func:`lanternpk.diagnostics.check_convergence`): a single chain's R-hat compares its
    halves (quarters, as split R-hat splits again), so the default one-chain campaign has
    one too; a value that cannot be computed is ``None``.
    """
    from lanternpk.diagnostics import check_convergence

    population = [v for v in POPULATION if v in idata.posterior]
    checked = check_convergence(idata, population)
    return {"divergences": checked["divergences"], "rhat_max": checked["rhat_max"],
            "ess_bulk_min": checked["ess_bulk_min"]}


# --- orchestration ------------------------------------------------------------------------

class Backend(ABC):
    """Where fits run: ``submit``, ``wait_any``, ``slots`` and ``abandon`` over futures."""

    @abstractmethod
    def submit(self, fn: Callable, task, attempt: int):
        """Start ``fn(task, attempt)``; return its future."""

    @abstractmethod
    def wait_any(self, futures: list, timeout: float) -> list:
        """The futures of ``futures`` that finish within ``timeout`` seconds."""

    @abstractmethod
    def slots(self) -> int:
        """How many tasks may be in flight at once."""

    def abandon(self, future) -> None:
        """Give up on a running future (timeout); by default, nothing to do."""
        return None

    def waiting(self, futures: list) -> set:
        """The futures of ``futures`` not running on a worker now (queued, or put back
        after their worker was lost); their timeout clock restarts. By default, none."""
        return set()

    def release(self, future) -> None:
        """Forget a finished future (its result is written); by default, nothing to do."""
        return None


class _CallStackRaceFilter(logging.Filter):
    """Drops the Dask scheduler's error log, with its traceback, for a ``call_stack`` that
    names a fit submitted moments before and not yet registered there (a race of the two
    messages; :meth:`DaskBackend.waiting` asks again at the next poll)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Exception while handling op call_stack")


_CALL_STACK_RACE = _CallStackRaceFilter()


class DaskBackend(Backend):
    """A ``distributed.Client``: one task per worker thread in flight."""

    def __init__(self, client):
        self.client = client
        # a local cluster's scheduler logs in this process (added once: a filter is a set)
        logging.getLogger("distributed.core").addFilter(_CALL_STACK_RACE)

    def submit(self, fn, task, attempt):
        return self.client.submit(fn, task, attempt, pure=False,
                                  key=f"sbc-fit-{task.index:05d}-{attempt}-{time.time_ns()}")

    def wait_any(self, futures, timeout):
        from distributed import wait

        try:
            done, _ = wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return list(done)

    def slots(self):
        return max(1, sum(self.client.nthreads().values()))

    def release(self, future):
        """Let the cluster drop the result, so a lost worker does not make it recompute it."""
        future.release()

    def waiting(self, futures):
        """Those no worker is executing. Dask moves a task whose worker died to another,
        perhaps busy, worker (a one-thread worker holds two tasks), or queues it; it gets a
        whole timeout once it runs. With no worker at all, none counts as waiting: the
        clocks run on, and the fits time out as before instead of waiting for ever."""
        try:
            if not futures or not self.client.scheduler_info().get("workers"):
                return set()
            stacks = self.client.call_stack(futures=futures)
        except Exception:  # a worker lost while asked (the case this is for): ask next poll
            return set()
        executing = {key for worker_stacks in stacks.values() for key in worker_stacks}
        return {future for future in futures if future.key not in executing}

    def abandon(self, future):
        """Cancel the future and restart the worker running it when it has a nanny; a worker
        without one runs on (``restart_workers`` would shut it down for good, shrinking an
        external cluster)."""
        workers = [w for w, keys in self.client.processing().items() if future.key in keys]
        future.cancel()
        info = self.client.scheduler_info().get("workers", {})
        restartable = [w for w in workers if info.get(w, {}).get("nanny")]
        if restartable:
            try:
                self.client.restart_workers(restartable, raise_for_error=False)
            except Exception:  # e.g. the worker left meanwhile: nothing to restart
                pass


class ExecutorBackend(Backend):
    """A ``concurrent.futures`` executor (tests, or no Dask)."""

    def __init__(self, executor, slots: int):
        self.executor, self._slots = executor, slots

    def submit(self, fn, task, attempt):
        return self.executor.submit(fn, task, attempt)

    def wait_any(self, futures, timeout):
        import concurrent.futures as cf

        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def slots(self):
        return self._slots

    def abandon(self, future):
        future.cancel()


@dataclass
class _Running:
    task: FitTask
    attempt: int
    started: float
    attempts: list = field(default_factory=list)


def _error_text(err: BaseException) -> str:
    lines = traceback.format_exception_only(type(err), err)
    return "".join(lines).strip()[-2000:]


def run_tasks(backend: Backend, fn: Callable, tasks: Iterable[FitTask], *, timeout_s: float,
              on_record: Callable[[dict], None], max_attempts: int = 2,
              poll_s: float = 1.0) -> None:
    """Run every task; each record (success or final failure) goes to ``on_record`` at once.

    A task that raises (including a Dask ``KilledWorker``) or runs longer than ``timeout_s``
    (counted while a worker runs it: :meth:`Backend.waiting`) is retried until
    ``max_attempts`` attempts; every attempt is recorded in the record's
    ``attempts``. A task that never succeeds gives a record with ``status`` ``"failed"``.
    """
    pending = list(tasks)[::-1]
    running: dict = {}
    while pending or running:
        while pending and len(running) < backend.slots():
            task = pending.pop()
            _launch(backend, fn, running, _Running(task, 1, 0.0))
        done = backend.wait_any(list(running), timeout=poll_s)
        interrupt.check()  # a Ctrl-C lost in a JAX callback stops here, not at the next record
        now = time.monotonic()
        for future in done:
            run = running.pop(future)
            wall = round(now - run.started, 2)
            try:
                record = future.result()
            except Exception as err:  # the fit (or its worker) failed: record, maybe retry
                backend.release(future)
                run.attempts.append({"attempt": run.attempt, "status": "error",
                                     "error": _error_text(err), "wall_s": wall})
                _retry_or_fail(backend, fn, running, run, max_attempts, on_record)
                continue
            backend.release(future)
            run.attempts.append({"attempt": run.attempt, "status": "ok", "wall_s": wall})
            record["attempts"] = run.attempts
            on_record(record)
        for future in backend.waiting([f for f in running if not f.done()]):
            running[future].started = now
        for future, run in list(running.items()):
            # (not one that finished since wait_any returned: its result is collected next)
            if future not in done and not future.done() and now - run.started > timeout_s:
                running.pop(future)
                backend.abandon(future)
                run.attempts.append({"attempt": run.attempt, "status": "timeout",
                                     "error": f"no result after {timeout_s:g} s",
                                     "wall_s": round(now - run.started, 2)})
                _retry_or_fail(backend, fn, running, run, max_attempts, on_record)


def _launch(backend, fn, running, run: _Running) -> None:
    run.started = time.monotonic()
    running[backend.submit(fn, run.task, run.attempt)] = run


def _retry_or_fail(backend, fn, running, run: _Running, max_attempts, on_record) -> None:
    if run.attempt < max_attempts:
        _launch(backend, fn, running, _Running(run.task, run.attempt + 1, 0.0, run.attempts))
        return
    on_record({"index": run.task.index, "key": run.task.key,
               "dataset_sha256": run.task.dataset_sha256, "status": "failed",
               "attempts": run.attempts})


# --- files ----------------------------------------------------------------------------------

def check_campaign_directory(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a non-empty directory other than a campaign's
    (its ``sbc_run.json``): the campaign writes ``ranks.csv``, ``sbc.json`` … over whatever
    has those names. A campaign directory is resumed, its other files left alone.

    Raises
    ------
    UsageError
        ``out`` is a file, or a directory holding files but no ``sbc_run.json``.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"refusing to write an SBC campaign into {out}: it is a file, not a "
                         "directory")
    if out.is_dir() and not (out / RUN_FILE).is_file():
        entries = sorted(p.name for p in out.iterdir()
                         if not is_interrupted_write(p, {RUN_FILE}))  # a killed first write
        if entries:
            raise UsageError(f"refusing to write an SBC campaign into {out}: it is not empty "
                             f"and holds no {RUN_FILE} (holds {', '.join(entries[:3])}"
                             f"{', …' if len(entries) > 3 else ''}); choose another --out")


def fit_path(out: Path, index: int) -> Path:
    return out / FITS_DIR / f"{index:04d}.json"


def read_record(out: Path, index: int, key: str) -> dict | None:
    """Fit record ``index`` of run key ``key``, or None: absent, of another run, or not a
    whole record (unreadable, half written, copied from another index, edited by hand:
    :class:`lanternpk.run_records.SbcFitRecord`), so that its fit is redone."""
    path = fit_path(out, index)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if record_problems("fit", SbcFitRecord, record):
        return None
    return record if record["key"] == key and record["index"] == index else None


def finished(out: Path, n: int, key: str) -> dict[int, dict]:
    """Finished (status ``ok``) records of this run key among indices ``0 … n − 1``."""
    records = {index: read_record(out, index, key) for index in range(n)}
    return {i: r for i, r in records.items() if r is not None and r["status"] == "ok"}


def _previous_attempts(out: Path, index: int, key: str) -> list:
    record = read_record(out, index, key)
    return record.get("attempts", []) if record is not None else []


def write_record(out: Path, record: dict) -> None:
    """Write one fit record to ``OUT/fits/NNNN.json`` atomically."""
    write_text_atomic(fit_path(out, record["index"]), json_text(record))


# --- campaign -------------------------------------------------------------------------------

@dataclass
class SbcResult:
    """What a campaign produced."""

    out: Path
    summary: dict
    wall_s: float
    files: list[Path] = field(default_factory=list)  # written (no figure without a fit)


def _open_client(scheduler: str | None, workers: int):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as err:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
        except (MemoryError, ValueError, TypeError) as err:  # read another protocol's bytes
            raise UsageError(f"{scheduler} does not answer as a Dask scheduler "
                             f"({type(err).__name__} reading its reply); check the address "
                             "and port") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0",
                           env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                "MKL_NUM_THREADS": "1"})
    return Client(cluster), cluster


def run_sbc(spec_path: Path, design_path: Path, out: Path, *, n: int, settings: SbcSettings,
            scheduler: str | None = None, workers: int = 2, timeout_s: float = 900.0,
            alpha: float = 0.01, bins: int = 10, progress: bool = True,
            command: list[str] | None = None, backend: Backend | None = None,
            task_fn: Callable = fit_task) -> SbcResult:
    """Run (or resume) an SBC campaign of ``n`` fits and write its summary.

    Parameters
    ----------
    spec_path, design_path : Path
        Model spec TOML; design TOML (or truth file).
    out : Path
        Campaign directory.
    n : int
        Number of simulated datasets (fits).
    settings : SbcSettings
        Sampling and ranking settings.
    scheduler : str, optional
        Address of an existing Dask scheduler; default a local cluster of ``workers``.
    workers : int
        Local cluster size (processes, one thread each).
    timeout_s : float
        Wall time after which a fit attempt is abandoned, seconds.
    alpha : float
        Family-wise level of the uniformity tests.
    bins : int
        Chi-square bins.
    progress : bool
        Show a progress bar (stderr).
    command : list of str, optional
        Command line, for the record.
    backend, task_fn
        Alternative execution backend and task (tests); default Dask and :func:`fit_task`.

    Returns
    -------
    SbcResult
    """
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if not MIN_ALPHA <= alpha < 1:
        raise UsageError(f"--alpha must be in [{MIN_ALPHA:g}, 1), got {alpha}: the p-values "
                         "are simulated, and a smaller family-wise level would need tens of "
                         "millions of simulated rank sets")
    if not timeout_s > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout_s}")
    start = time.perf_counter()
    out = Path(out)
    check_campaign_directory(out)
    (spec, design), (spec_sha256, design_sha256) = load_unchanged(
        lambda: (load_spec(spec_path), load_design(design_path)), [spec_path, design_path])
    obs = design_observations(design)
    check_design(spec, obs, design_path)
    key = run_key(spec_sha256, design_sha256, settings)
    manifest_path = out / RUN_FILE
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except RecursionError:
            raise UsageError(f"{manifest_path} is not an SBC campaign record (nested too "
                             "deeply); use another --out") from None
        except ValueError as err:
            raise UsageError(f"{manifest_path} is not an SBC campaign record ({err}); "
                             "use another --out") from None
        if not isinstance(old, dict):
            raise UsageError(f"{manifest_path} is not an SBC campaign record (not a JSON "
                             "object); use another --out")
        if old.get("key") != key:
            version = old.get("lanternpk")
            other = (f", or of lanternpk {version} (this is {__version__})"
                     if isinstance(version, str) and version != __version__ else "")
            raise UsageError(f"{out} holds an SBC campaign of another spec, design or settings"
                             f"{other} (run key {str(old.get('key', '?'))[:12]}…); use another "
                             "--out")
    manifest = {"key": key, "spec_file": str(spec_path), "design_file": str(design_path),
                "spec_sha256": spec_sha256, "design_sha256": design_sha256,
                "settings": asdict(settings), "block": BLOCK, "rows": len(obs),
                "animals": int(obs["animal"].nunique()), "lanternpk": __version__}
    done = finished(out, n, key)
    todo = [i for i in range(n) if i not in done]
    client = cluster = None
    if todo and backend is None:  # before writing or simulating: a bad address fails at once
        client, cluster = _open_client(scheduler, workers)
        backend = DaskBackend(client)
    wall_fits = 0.0
    try:
        write_text_atomic(manifest_path, json_text(manifest))
        if todo:
            tasks = _make_tasks(spec, obs, todo, key, settings)
            wall_fits = _execute(tasks, out, n=n, n_done=len(done), timeout_s=timeout_s,
                                 progress=progress, backend=backend, task_fn=task_fn)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    summary = summarize(out, n, key, alpha=alpha, bins=bins, seed=settings.seed)
    summary["campaign"] = {**manifest, "n": n, "command": command,
                           "scheduler": scheduler or f"LocalCluster({workers} workers)",
                           "resumed_fits": len(done), "this_call_wall_s":
                           round(time.perf_counter() - start, 1),
                           "this_call_fit_wall_s": round(wall_fits, 1),
                           "machine": {"platform": platform.platform(),
                                       "cpus": os.cpu_count()},
                           "versions": _versions(),
                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    files = write_outputs(out, summary)
    return SbcResult(out=out, summary=summary, wall_s=time.perf_counter() - start, files=files)


def _versions() -> dict:
    from lanternpk.fit import library_versions

    versions = library_versions()
    try:
        from importlib import metadata

        versions["distributed"] = metadata.version("distributed")
    except Exception:  # pragma: no cover - distributed is a dependency
        pass
    return versions


def _make_tasks(spec, obs, todo, key, settings) -> list[FitTask]:
    tasks = []
    for block in sorted({i // BLOCK for i in todo}):
        datasets = simulate_block(spec, obs, block, settings.seed)
        for index in todo:
            if index // BLOCK != block:
                continue
            flux, truth = datasets[index]
            data_obs = obs.copy()
            data_obs["flux"] = flux
            tasks.append(FitTask(index=index, key=key, spec=spec, obs=data_obs, truth=truth,
                                 settings=settings, dataset_sha256=dataset_sha256(flux)))
    return tasks


def _execute(tasks, out, *, n, n_done, timeout_s, progress, backend, task_fn) -> float:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    start = time.perf_counter()
    failed = 0
    bar = Progress(TextColumn("sbc fits"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                   TimeRemainingColumn(), disable=not progress, console=Console(stderr=True))
    history = {t.index: _previous_attempts(out, t.index, t.key) for t in tasks}

    def on_record(record):
        nonlocal failed
        record["attempts"] = history.get(record["index"], []) + record.get("attempts", [])
        write_record(out, record)
        failed += record["status"] != "ok"
        bar.update(bar_task, advance=1, failed=failed)

    with bar:
        bar_task = bar.add_task("fits", total=n, completed=n_done, failed=0)
        run_tasks(backend, task_fn, tasks, timeout_s=timeout_s, on_record=on_record)
    return time.perf_counter() - start


# --- summary ------------------------------------------------------------------------------

def summarize(out: Path, n: int, key: str, *, alpha: float, bins: int, seed: int) -> dict:
    """Ranks, uniformity tests and failures of the campaign's records (no fitting)."""
    from lanternpk.diagnostics import RHAT_MAX
    from lanternpk.sbc_stats import family_of, uniformity_tests

    records, failed, missing = {}, [], []
    for index in range(n):
        record = read_record(out, index, key)
        if record is None:
            missing.append(index)
        elif record["status"] == "ok":
            records[index] = record
        else:
            failed.append({"index": index, "attempts": record.get("attempts", [])})
    indices = sorted(records)
    names = list(records[indices[0]]["ranks"]) if indices else []
    n_draws = records[indices[0]]["n_draws"] if indices else 0
    for i in indices:  # every fit of one campaign ranks the same quantities against L draws
        if set(records[i]["ranks"]) != set(names) or records[i]["n_draws"] != n_draws:
            raise UsageError(f"{fit_path(out, i)} ranks other quantities or another number of "
                             f"draws than {fit_path(out, indices[0])}, though both carry this "
                             "campaign's key; delete the file that is wrong and run the same "
                             "command again to redo its fit")
    ranks = {name: np.array([records[i]["ranks"][name] for i in indices]) for name in names}
    tests = uniformity_tests(ranks, n_draws, alpha=alpha, bins=bins, seed=seed)
    diag = [records[i]["diagnostics"] for i in indices]
    walls = [records[i]["wall_s"] for i in indices]
    quantities_out = []
    for name in names:
        t = tests["quantities"][name]
        quantities_out.append({"name": name, "family": family_of(name),
                               "chi_square_p": t["chi_square"]["p_value"],
                               "chi_square_p_asymptotic": t["chi_square"]["p_value_asymptotic"],
                               "chi_square_statistic": t["chi_square"]["statistic"],
                               "chi_square_counts": t["chi_square"]["counts"],
                               "ecdf_p": t["ecdf"]["p_value"], "failed": t["failed"]})
    retried = sum(len(records[i].get("attempts", [])) > 1 for i in indices)
    return {
        "n_requested": n, "n_ok": len(indices), "n_failed": len(failed),
        "n_missing": len(missing), "n_draws": n_draws, "n_quantities": len(names),
        "n_distinct_rank_sets": tests["n_distinct"],
        "alpha": alpha, "per_test_threshold": tests["threshold"], "bins": bins,
        "tests": "chi-square on binned ranks and ECDF, both p-values from simulated uniform "
                 "ranks of the same N and L; Bonferroni over the distinct rank sets "
                 "(quantities with the same ranks counted once) and both tests",
        "calibration_failures": tests["failed"],
        "passed": bool(indices) and not tests["failed"] and not failed and not missing,
        "quantities": quantities_out,
        "band_95": tests["band_95"], "band_family": tests["band_family"],
        "failed_fits": failed, "missing_fits": missing, "retried_fits": retried,
        "fit_diagnostics": {
            "fits_with_divergences": sum(d["divergences"] > 0 for d in diag),
            "divergences_total": sum(d["divergences"] for d in diag),
            "fits_rhat_gt_1_01": sum(d["rhat_max"] is not None and d["rhat_max"] > RHAT_MAX
                                     for d in diag),
            "fits_rhat_not_computed": sum(d["rhat_max"] is None for d in diag),
            "fits_ess_below_L": sum((d["ess_bulk_min"] or 0.0) < n_draws for d in diag),
            "wall_s_median": float(np.median(walls)) if walls else None,
            "wall_s_total": float(np.sum(walls)) if walls else None,
        },
    }


def write_outputs(out: Path, summary: dict, dest: Path | None = None) -> list[Path]:
    """``ranks.csv``, ``sbc.json`` and ``sbc_ecdf.png`` from the records of ``out``.

    Written into ``dest`` (default ``out``), each file atomically; the figure only when a fit
    succeeded (an earlier one is removed otherwise, so that none describes other fits).
    Returns the files written.
    """
    import matplotlib.pyplot as plt

    from lanternpk.sbc_stats import plot_ecdf

    dest = Path(out if dest is None else dest)
    key = summary["campaign"]["key"]
    records = [read_record(out, i, key) for i in range(summary["n_requested"])]
    records = [r for r in records if r is not None and r["status"] == "ok"]
    table = pd.DataFrame([{"index": r["index"], **r["ranks"]} for r in records])
    with atomic_path(dest / RANKS_FILE) as tmp:
        table.to_csv(tmp, index=False)
    if records:
        ranks = {q["name"]: table[q["name"]].to_numpy() for q in summary["quantities"]}
        tests = {"failed": summary["calibration_failures"], "band_95": summary["band_95"],
                 "band_family": summary["band_family"], "n": summary["n_ok"],
                 "alpha": summary["alpha"]}
        fig, _ = plot_ecdf(ranks, summary["n_draws"], tests)
        with atomic_path(dest / PLOT_FILE) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
    else:
        (dest / PLOT_FILE).unlink(missing_ok=True)
    write_text_atomic(dest / SUMMARY_FILE, json_text(summary))  # non-finite numbers null
    return [dest / SUMMARY_FILE, dest / RANKS_FILE] + ([dest / PLOT_FILE] if records else [])


def format_summary(summary: dict) -> str:
    """A few lines: fits done/failed, tests, failing quantities."""
    from lanternpk.diagnostics import RHAT_MAX

    fd = summary["fit_diagnostics"]
    lines = [f"SBC: {summary['n_ok']} of {summary['n_requested']} fits ok, "
             f"{summary['n_failed']} failed, {summary['n_missing']} missing; "
             f"L = {summary['n_draws']} draws; {summary['n_quantities']} quantities",
             f"fits with divergences: {fd['fits_with_divergences']}; R-hat > {RHAT_MAX}: "
             f"{fd['fits_rhat_gt_1_01']}"
             + (f" (not computed for {fd['fits_rhat_not_computed']})"
                if fd.get("fits_rhat_not_computed") else "")
             + f"; bulk ESS < L: {fd['fits_ess_below_L']}"]
    if summary["n_ok"]:
        lines.append(f"uniformity (chi-square and ECDF, family-wise α = {summary['alpha']}, "
                     f"per test p < {summary['per_test_threshold']:.2g}): "
                     + ("no calibration failure" if not summary["calibration_failures"]
                        else "FAILED: " + ", ".join(summary["calibration_failures"])))
    for f in summary["failed_fits"]:
        last = f["attempts"][-1] if f["attempts"] else {}
        error = (last.get("error") or "").splitlines()
        lines.append(f"failed fit {f['index']}: {last.get('status')}: "
                     f"{error[-1] if error else 'no message'}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------


def scheduler_address(text: str) -> str:
    """A Dask scheduler address, ``[scheme://]host:port`` (``--scheduler``).

    Checked as :class:`distributed.Client` parses it, before any work: a ``Client`` that
    failed to parse its address hangs for 40 s at exit and prints a traceback.
    """
    from distributed.comm import get_address_host_port

    try:
        get_address_host_port(text)
    except (ValueError, ImportError) as err:
        raise argparse.ArgumentTypeError(f"not a Dask scheduler address such as "
                                         f"tcp://HOST:8786 ({err})") from None
    return text


def _cmd_sbc(args: argparse.Namespace) -> int:
    for path, what in ((args.spec, "spec"), (args.truth_design, "design")):
        if not Path(path).is_file():
            raise UsageError(not_a_file(path, f"{what} "))
    settings = SbcSettings(seed=args.seed, chains=args.chains, tune=args.tune,
                           draws=args.draws, thin_to=args.thin_to,
                           target_accept=args.target_accept)
    result = run_sbc(Path(args.spec), Path(args.truth_design), args.out, n=args.n,
                     settings=settings, scheduler=args.scheduler, workers=args.workers,
                     timeout_s=args.timeout, alpha=args.alpha, progress=not args.quiet,
                     command=getattr(args, "command_line", None))
    print(format_summary(result.summary))
    print(f"wrote {', '.join(map(str, result.files))} ({result.wall_s:.0f} s)")
    return EXIT_OK if result.summary["passed"] else EXIT_DIAGNOSTICS


def add_sbc_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lanternpk sbc`` on the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "sbc", help="simulation-based calibration of a model spec on a study design (Dask)",
        description="Draw N parameter sets from the spec's priors, simulate datasets with the "
        "design, fit each on Dask (a local cluster, or --scheduler ADDRESS), and test that "
        "the ranks of the true values are uniform. Writes OUT/fits/NNNN.json per fit "
        "(re-running resumes), OUT/ranks.csv, OUT/sbc.json and OUT/sbc_ecdf.png. A failed "
        "or timed-out fit is retried once and then recorded as failed. Exit status: 0 all "
        "fits done and no calibration failure; 1 invalid spec or design; 2 usage error; "
        "3 a fit failed or a quantity failed the uniformity tests.",
    )
    p.add_argument("spec", help="model spec TOML (e.g. models/muse_vs_msc.toml)")
    p.add_argument("--truth-design", required=True, metavar="DESIGN.toml",
                   help="study design TOML (data/designs/) or a truth file (its parameters "
                   "are ignored)")
    p.add_argument("--n", required=True, type=positive_int, help="number of fits")
    p.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address, default=None,
                   help="address of an existing Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="local cluster worker processes, one thread each (default: CPUs)")
    p.add_argument("--out", type=output_path, default=DEFAULT_OUT,
                   help=f"campaign directory (default: {DEFAULT_OUT})")
    p.add_argument("--seed", type=random_seed, default=SbcSettings.seed,
                   help="campaign seed; the prior draws, each fit and the tests derive "
                   "their seeds from it (default: %(default)s)")
    p.add_argument("--chains", type=chain_count, default=SbcSettings.chains,
                   help="chains per fit (default: %(default)s)")
    p.add_argument("--tune", type=tune_count, default=SbcSettings.tune,
                   help="tuning iterations per chain of each fit (default: %(default)s)")
    p.add_argument("--draws", type=draw_count, default=SbcSettings.draws,
                   help=f"posterior draws per chain of each fit, at least {MIN_DRAWS} "
                   "(default: %(default)s)")
    p.add_argument("--thin-to", type=positive_int, default=SbcSettings.thin_to,
                   help="L, posterior draws each rank is computed against (default: "
                   f"{SbcSettings.thin_to})")
    p.add_argument("--target-accept", type=float, default=SbcSettings.target_accept,
                   help="NUTS target acceptance probability, in [0.5, 1) "
                   "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds a worker may run one fit attempt before it is abandoned; "
                   "time queued is not counted (default: 900)")
    p.add_argument("--alpha", type=float, default=0.01,
                   help="family-wise level of the uniformity tests, at least 0.001 "
                   "(default: 0.01)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_sbc)
    return p

