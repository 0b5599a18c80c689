"""`lanternpk ppc`: posterior predictive checks of a fitted run.

What it computes, from the JAX posterior predictive of :mod:`lanternpk.predictive` (the
observed animals and images, ``same_animals`` mode):

Randomised PIT and interval coverage (censoring-aware)
    For row ``i`` let ``F_i`` be its posterior predictive CDF of the flux, estimated without
    extra noise as the draw average of the conditional CDF ``Φ((log y − mu_s) / σ_s)``. A
    detected value ``y_i`` (≥ LOD) has ``u_i = F_i(y_i)``; a censored value (known only to lie
    below the LOD) has ``u_i = V_i F_i(lod_i)`` with ``V_i ~ Uniform(0, 1)``: the randomised
    PIT, which is exactly Uniform(0, 1) under the model, censored or not. A row is *covered*
    by the central ``c`` predictive interval when ``(1 − c)/2 ≤ u_i ≤ (1 + c)/2``; for a
    detected value this is "``y_i`` lies between the predictive ``(1 ∓ c)/2`` quantiles", and a
    censored value counts as covered with probability
    ``|[(1 − c)/2, (1 + c)/2] ∩ [0, F_i(lod)]| / F_i(lod)``, the share of its possible values
    that the interval holds. Coverage is reported per region × modality × time (``time_h``)
    for ``c`` = 50% and 90%. The PIT is in-sample (the data also fit the posterior), which
    tends to make coverage a little conservative; LOO-PIT below removes that.

Flag rule
    Under the model the number of covered rows of a group of ``n`` is Binomial(n, c). A group
    is flagged when the observed count lies outside the central 99% binomial interval, i.e. when
    ``P(X ≤ k) < 0.005`` or ``P(X ≥ k) < 0.005`` (for either level), or when the observed
    number of censored rows lies outside the central 99% interval of its posterior predictive
    distribution (the per-draw count of simulated values below LOD; Monte Carlo p-values
    ``(#draws at least as extreme + 1)/(draws + 1)``, so fewer than ~200 draws cannot flag
    it). Each test has a ≤ 1%
    false-alarm rate under the model; with ~40 groups × 3 tests about one flag in a
    well-specified model is expected, so flags are warnings (exit status 0), not failures.

LOO-PIT
    The same randomised PIT with the leave-one-out predictive CDF
    ``F_i^loo = Σ_s w_is Φ((log y_i − mu_is) / σ_s)``, where ``w_is`` are Pareto-smoothed
    importance weights (``arviz.psislw``) from the pointwise log-likelihood computed in JAX
    from the same draws (log density of log flux for a detected value, ``log Φ`` for a
    censored one, as in the model). PSIS is given the relative efficiency ``r_eff`` of the
    draws estimated from the chains exactly as ``lanternpk compare`` does
    (:func:`lanternpk.compare_stats.relative_efficiency`: the mean over rows of
    ``ESS(p(y_i | θ)) / draws``); it sets how many of the largest weights the Pareto tail is
    fitted to, ``min(S/5, 3 √(S / r_eff))``. Draws thinned by ``--draws`` no longer form
    whole chains and, like those of a single chain, are taken as independent
    (``r_eff`` = 1). Uniformity is summarised by a Kolmogorov–Smirnov test; rows with
    Pareto ``k > 0.7`` have unreliable LOO values.

Outputs in ``RUN_DIR/ppc/``: ``posterior_predictive.nc`` (ArviZ: ``posterior_predictive``
flux and below_lod, ``log_likelihood``, ``observed_data``, ``constant_data``),
``coverage.json``, ``loo_pit.json`` (strict JSON: a number that is not finite, such as the
Pareto k of a draw that dominates, is ``null``) and one visual predictive check
``vpc_<region>_<modality>.png`` per region × modality. The directory is built beside
``ppc/`` and swapped in whole, so an interrupted check leaves the earlier one untouched;
a ``ppc`` that is not a directory (a file, a symbolic link) or that holds other files is
refused before anything is simulated.

Heavy libraries (JAX, PyMC, matplotlib, ArviZ) are imported inside the functions, so that
registering the command (:func:`add_ppc_parser`) does not import JAX before the CLI has set
up its devices.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from lanternpk.argtypes import existing_file, positive_int, random_seed, run_path
from lanternpk.compare_stats import (
    MIN_PSIS_DRAWS,
    PARETO_K_BAD,  # a LOO-PIT value with a larger Pareto k is unreliable
    relative_efficiency,
    require_finite_draws,
    require_psis_draws,
)
from lanternpk.errors import EXIT_OK, UsageError, notice

PPC_DIR = "ppc"
PREDICTIVE_FILE = "posterior_predictive.nc"
COVERAGE_FILE = "coverage.json"
LOO_PIT_FILE = "loo_pit.json"
DEFAULT_SEED = 20261125
#: Central predictive interval levels whose coverage is checked.
LEVELS = (0.5, 0.9)
#: Confidence of the binomial / predictive intervals behind a flag.
FLAG_CONFIDENCE = 0.99


# --- PIT, coverage and flags (pure functions) ----------------------------------------------

def randomized_pit(cdf_at_obs: np.ndarray, censored: np.ndarray,
                   rng: np.random.Generator | None = None, *,
                   uniforms: np.ndarray | None = None) -> np.ndarray:
    """Randomised probability integral transform of possibly left-censored observations.

    Parameters
    ----------
    cdf_at_obs : ndarray, shape (n,)
        Predictive CDF at the observed value for a detected row, at the LOD for a censored
        row (probabilities).
    censored : ndarray of bool, shape (n,)
        Whether the row is below its LOD.
    rng : numpy.random.Generator, optional
        Source of the uniforms for the censored rows (one per row is drawn when given).
    uniforms : ndarray, shape (n,), optional
        The uniforms themselves (instead of ``rng``). One of the two is required when any
        row is censored.

    Returns
    -------
    ndarray, shape (n,)
        ``F(y)`` for detected rows, ``V · F(lod)`` with ``V ~ Uniform(0, 1)`` for censored
        rows; Uniform(0, 1) under the model in both cases.
    """
    cdf_at_obs = np.clip(np.asarray(cdf_at_obs, dtype=float), 0.0, 1.0)
    censored = np.asarray(censored, dtype=bool)
    if uniforms is None:
        if rng is None:
            if censored.any():
                raise ValueError("randomized_pit needs rng or uniforms for censored rows")
            return cdf_at_obs
        uniforms = rng.uniform(size=cdf_at_obs.shape)
    return np.where(censored, np.asarray(uniforms) * cdf_at_obs, cdf_at_obs)


def covered(pit: np.ndarray, level: float) -> np.ndarray:
    """Whether each PIT value lies in the central ``level`` interval ``[(1-c)/2, (1+c)/2]``."""
    pit = np.asarray(pit, dtype=float)
    return (pit >= (1.0 - level) / 2.0) & (pit <= (1.0 + level) / 2.0)


def binomial_outside(k: int, n: int, p: float, *, confidence: float = FLAG_CONFIDENCE) -> bool:
    """Whether ``k`` successes of ``n`` lie outside the central binomial interval.

    True when ``P(X ≤ k) < (1 − confidence)/2`` or ``P(X ≥ k) < (1 − confidence)/2`` for
    ``X ~ Binomial(n, p)``: a two-sided test of level ≤ ``1 − confidence``.
    """
    from scipy.stats import binom

    if n == 0:
        return False
    tail = (1.0 - confidence) / 2.0
    return bool(binom.cdf(k, n, p) < tail or binom.sf(k - 1, n, p) < tail)


def predictive_count_outside(k: int, counts: np.ndarray, *,
                             confidence: float = FLAG_CONFIDENCE) -> bool:
    """Whether an observed count lies outside the central interval of predictive counts.

    Parameters
    ----------
    k : int
        Observed count (e.g. censored rows of a group).
    counts : ndarray, shape (draws,)
        The same count in each posterior predictive draw.
    confidence : float
        Two-sided: flagged when either Monte Carlo p-value ``(#{K_s ≤ k} + 1) / (S + 1)``
        or ``(#{K_s ≥ k} + 1) / (S + 1)`` over the ``S`` draws is below
        ``(1 − confidence)/2``. The + 1 counts the observation as one more draw, which keeps
        the false-alarm rate ≤ 1 − confidence for any ``S`` when the observation and the
        draws are exchangeable (a plain fraction of draws flags too often at small ``S``:
        never-seen-in-30-draws happens by chance with probability ~2/31).
    """
    counts = np.asarray(counts)
    tail = (1.0 - confidence) / 2.0
    draws = counts.size + 1
    return bool((np.sum(counts <= k) + 1) / draws < tail
                or (np.sum(counts >= k) + 1) / draws < tail)


class LooPit(NamedTuple):
    """LOO-PIT values of :func:`loo_pit` and their PSIS diagnostics."""

    pit: np.ndarray  # (n,) randomised LOO-PIT values
    pareto_k: np.ndarray  # (n,) PSIS shape estimates (> 0.7: unreliable)
    reff: float  # relative efficiency of the draws given to PSIS


def loo_pit(log_lik: np.ndarray, cdf: np.ndarray, censored: np.ndarray, *,
            n_chains: int = 1, rng: np.random.Generator | None = None,
            uniforms: np.ndarray | None = None) -> LooPit:
    """Randomised LOO-PIT with Pareto-smoothed importance weights.

    Parameters
    ----------
    log_lik : ndarray, shape (draws, n)
        Pointwise log-likelihood of the observed data (nats), draws stacked chain-major
        (chain 0's draws first).
    cdf : ndarray, shape (draws, n)
        Conditional CDF at the observed value (at the LOD for censored rows) per draw.
    censored : ndarray of bool, shape (n,)
        Left-censored rows.
    n_chains : int
        Number of equally long chains the draws are stacked from. PSIS's relative efficiency
        is estimated from them as in ``lanternpk compare``
        (:func:`~lanternpk.compare_stats.relative_efficiency`); 1 (one chain, or draws
        that no longer form chains) gives ``r_eff`` = 1.
    rng, uniforms
        Randomisation for censored rows, as in :func:`randomized_pit`.

    Returns
    -------
    LooPit
        ``pit``: ``Σ_s w_is cdf_is`` for detected rows, ``V_i Σ_s w_is cdf_is`` for censored
        rows; ``pareto_k``: PSIS shape estimates (``> 0.7``: unreliable); ``reff``: the
        relative efficiency used.
    """
    import arviz as az

    log_lik = np.asarray(log_lik, dtype=float)
    reff = relative_efficiency(log_lik, n_chains)
    log_w, pareto_k = az.psislw(-log_lik.T.copy(), reff=reff)
    f_loo = np.sum(np.exp(log_w) * np.asarray(cdf, dtype=float).T, axis=-1)
    return LooPit(randomized_pit(f_loo, censored, rng, uniforms=uniforms),
                  np.asarray(pareto_k), reff)


def coverage_table(obs: pd.DataFrame, censored: np.ndarray, pit: np.ndarray,
                   below_lod_draws: np.ndarray, *, levels: tuple[float, ...] = LEVELS,
                   confidence: float = FLAG_CONFIDENCE) -> list[dict]:
    """Coverage and below-LOD fractions per region × modality × time, with flags.

    Parameters
    ----------
    obs : DataFrame
        Canonical observations (``region``, ``modality``, ``time_h``), rows aligned with
        ``pit``.
    censored : ndarray of bool, shape (n,)
        Observed flux below LOD.
    pit : ndarray, shape (n,)
        Randomised PIT values (:func:`randomized_pit`).
    below_lod_draws : ndarray of bool, shape (draws, n)
        Simulated values below LOD.
    levels, confidence
        Interval levels checked and the confidence of the flag intervals.

    Returns
    -------
    list of dict
        Records with ``region``, ``modality``, ``time_h`` (h), ``n``, ``n_censored``,
        ``coverage_50``, ``coverage_90`` (fractions), ``below_lod_observed``,
        ``below_lod_predicted`` (fractions), ``flagged`` and ``reasons``.
    """
    keys = pd.DataFrame({"region": obs["region"].astype(str).to_numpy(),
                         "modality": obs["modality"].astype(str).to_numpy(),
                         "time_h": obs["time_h"].to_numpy(float)})
    records = []
    for (region, modality, time_h), rows in keys.groupby(["region", "modality", "time_h"],
                                                          sort=True):
        idx = rows.index.to_numpy()
        n = len(idx)
        record: dict = {"region": region, "modality": modality, "time_h": float(time_h),
                        "n": n, "n_censored": int(censored[idx].sum())}
        reasons = []
        for level in levels:
            k = int(covered(pit[idx], level).sum())
            record[f"coverage_{round(level * 100)}"] = k / n
            if binomial_outside(k, n, level, confidence=confidence):
                reasons.append(f"{round(level * 100)}% interval covers {k}/{n}")
        record["below_lod_observed"] = record["n_censored"] / n
        below = below_lod_draws[:, idx]
        record["below_lod_predicted"] = float(below.mean())
        if predictive_count_outside(record["n_censored"], below.sum(axis=1),
                                    confidence=confidence):
            reasons.append(f"{record['n_censored']}/{n} below LOD, predicted "
                           f"{record['below_lod_predicted'] * n:.1f}")
        record["flagged"] = bool(reasons)
        record["reasons"] = reasons
        records.append(record)
    return records


def format_table(records: list[dict]) -> str:
    """A fixed-width text table of :func:`coverage_table` records."""
    header = (f"{'region':<14}{'modality':<10}{'time_h':>8}{'n':>5}{'cens':>6}{'cov50':>7}"
              f"{'cov90':>7}{'<LOD obs':>10}{'<LOD pred':>11}  flag")
    lines = [header]
    for r in records:
        lines.append(
            f"{r['region']:<14}{r['modality']:<10}{r['time_h']:>8.4g}{r['n']:>5}"
            f"{r['n_censored']:>6}{r['coverage_50']:>7.2f}{r['coverage_90']:>7.2f}"
            f"{r['below_lod_observed']:>10.2f}{r['below_lod_predicted']:>11.2f}  "
            + ("FLAG: " + "; ".join(r["reasons"]) if r["flagged"] else ""))
    return "\n".join(lines)


# --- figures -------------------------------------------------------------------------------

def plot_vpc(obs: pd.DataFrame, flux_draws: np.ndarray, below_lod_draws: np.ndarray, *,
             region: str, modality: str):
    """Visual predictive check of one region × modality, one column per cell type.

    Parameters
    ----------
    obs : DataFrame
        Canonical observations (rows aligned with the draws' columns).
    flux_draws : ndarray, shape (draws, n)
        Simulated flux, photons/s.
    below_lod_draws : ndarray of bool, shape (draws, n)
        Simulated values below LOD.
    region, modality : str
        The group to plot.

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : ndarray of Axes, shape (2, n_cell_types)
        Top row: observed flux (photons/s) vs time (h), censored values as open triangles
        at their LOD, the LOD (median per time), the predictive median and central 50% and
        90% bands (pooled over the group's rows at each time). Bottom row: fraction below
        LOD per time, observed (points) vs predicted (median and 90% band over draws).
    """
    from matplotlib.figure import Figure

    in_group = ((obs["region"].astype(str) == region)
                & (obs["modality"].astype(str) == modality)).to_numpy()
    if not in_group.any():
        raise ValueError(f"no rows for region {region!r}, modality {modality!r}")
    cell_types = list(dict.fromkeys(obs.loc[in_group, "cell_type"].astype(str)))
    fig = Figure(figsize=(5.0 * len(cell_types), 7.0), layout="constrained")
    axes = fig.subplots(2, len(cell_types), squeeze=False, sharex=True,
                        height_ratios=(2.0, 1.0))
    time_h = obs["time_h"].to_numpy(float)
    flux = obs["flux"].to_numpy(float)
    lod = obs["lod"].to_numpy(float)
    censored = flux < lod
    cell = obs["cell_type"].astype(str).to_numpy()
    for col, ct in enumerate(cell_types):
        rows = in_group & (cell == ct)
        times = np.unique(time_h[rows])
        bands = np.empty((len(times), 5))
        frac = np.empty((len(times), 3))
        obs_frac = np.empty(len(times))
        lod_t = np.empty(len(times))
        for j, t in enumerate(times):
            sel = np.flatnonzero(rows & (time_h == t))
            bands[j] = np.quantile(flux_draws[:, sel], [0.05, 0.25, 0.5, 0.75, 0.95])
            frac[j] = np.quantile(below_lod_draws[:, sel].mean(axis=1), [0.05, 0.5, 0.95])
            obs_frac[j] = censored[sel].mean()
            lod_t[j] = np.median(lod[sel])
        ax = axes[0, col]
        ax.fill_between(times, bands[:, 0], bands[:, 4], color="C0", alpha=0.2,
                        label="predictive 90%")
        ax.fill_between(times, bands[:, 1], bands[:, 3], color="C0", alpha=0.35,
                        label="predictive 50%")
        ax.plot(times, bands[:, 2], color="C0", label="predictive median")
        ax.plot(times, lod_t, color="k", linestyle="--", linewidth=1, label="LOD")
        det = rows & ~censored
        cen = rows & censored
        ax.scatter(time_h[det], flux[det], s=14, color="C3", zorder=3, label="observed")
        ax.scatter(time_h[cen], lod[cen], s=24, marker="v", facecolors="none",
                   edgecolors="C3", zorder=3, label="below LOD (at LOD)")
        ax.set_yscale("log")
        ax.set_title(f"{region}, {modality.replace('_', ' ')}: {ct}")
        ax.set_ylabel("flux (photons/s)")
        ax = axes[1, col]
        ax.fill_between(times, frac[:, 0], frac[:, 2], color="C0", alpha=0.25,
                        label="fraction below LOD:\npredicted 90%")
        ax.plot(times, frac[:, 1], color="C0", linestyle=":",
                label="fraction below LOD:\npredicted median")
        ax.plot(times, obs_frac, "o", color="C3", label="fraction below LOD:\nobserved")
        ax.set_ylim(-0.03, 1.03)
        if time_h[in_group].min() > 0:
            ax.set_xscale("log")
        else:  # a time-0 ROI: linear around 0, logarithmic beyond 1 h
            ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("time since injection (h)")
        ax.set_ylabel("fraction below LOD")
    handles, labels = [], []
    for ax in axes[:, 0]:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return fig, axes


# --- orchestration -------------------------------------------------------------------------

@dataclass
class PpcResult:
    """What ``lanternpk ppc`` produced; files are in ``ppc_dir``."""

    ppc_dir: Path
    coverage: list[dict]
    loo_pit: dict
    figures: list[Path]
    device: str
    draws: int
    simulate_s: float  # simulation, compile included, s
    wall_s: float  # the whole check: loading, simulation, statistics, files and figures, s


def predictive_to_idata(pred, obs: pd.DataFrame, *, n_chains: int, attrs: dict):
    """The posterior predictive as ArviZ InferenceData (dims chain, draw, obs).

    Groups: ``posterior_predictive`` (``flux``, photons/s; ``below_lod``),
    ``log_likelihood`` (``flux``: pointwise M3 log-likelihood of the observed data),
    ``observed_data`` (``flux``), ``constant_data`` (``lod``, ``censored``, ``row``,
    ``study``, ``animal``, ``cell_type``, ``region``, ``modality``, ``image``, ``time_h``).
    """
    import arviz as az

    from lanternpk.io import json_text

    n_draws, n = pred.log_flux.shape
    shape = (n_chains, n_draws // n_chains, n)
    flux = obs["flux"].to_numpy(float)
    lod = obs["lod"].to_numpy(float)
    constant = {"lod": lod, "censored": flux < lod, "row": obs.index.to_numpy(),
                "time_h": obs["time_h"].to_numpy(float)}
    for column in ("study", "animal", "cell_type", "region", "modality", "image"):
        constant[column] = obs[column].astype(str).to_numpy().astype(str)
    dims = {name: ["obs"] for name in ("flux", "below_lod", *constant)}
    idata = az.from_dict(
        posterior_predictive={"flux": pred.flux.reshape(shape),
                              "below_lod": pred.below_lod.reshape(shape)},
        log_likelihood={"flux": pred.log_lik.reshape(shape)},
        observed_data={"flux": flux},
        constant_data=constant,
        coords={"obs": np.arange(n)},
        dims=dims,
    )
    idata.attrs["lanternpk_ppc"] = json_text(attrs)
    return idata


def run_ppc(run_dir: Path, *, draws: int | None = None, device: str = "auto",
            seed: int = DEFAULT_SEED, data_path: Path | None = None,
            write_figures: bool = True, log: Callable[[str], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> PpcResult:
    """Posterior predictive checks of a run; writes ``RUN_DIR/ppc/``.

    Parameters
    ----------
    run_dir : Path
        A run directory written by ``lanternpk fit``.
    draws : int, optional
        Number of evenly spaced posterior draws to simulate from (default all).
    device : {"auto", "cpu", "gpu"}
        Where JAX simulates.
    seed : int
        Seed of the simulation and of the PIT randomisation.
    data_path : Path, optional
        The observations file the run was fit to, when it is no longer at the recorded path
        (refused unless its sha256 matches the run's).
    write_figures : bool
        Also render the visual predictive check PNGs.
    log : callable, optional
        Told, once the run and its files have been checked, that simulation starts.
    progress : callable, optional
        Called as ``progress(done, total)`` (draws) after each simulated chunk.

    Raises
    ------
    UsageError
        Not a run, files not found, ``--draws`` or the run's draws fewer than
        :data:`~lanternpk.compare_stats.MIN_PSIS_DRAWS` (LOO-PIT's PSIS needs them), no GPU
        for ``--device gpu``, ``RUN_DIR/ppc`` not a directory or holding files ppc does
        not write (:func:`check_ppc_dir`).
    DataError
        The spec or data differ from those the run was fit to.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    if draws is not None and draws < MIN_PSIS_DRAWS:
        raise UsageError(f"--draws must be at least {MIN_PSIS_DRAWS} (LOO-PIT's Pareto "
                         f"smoothing needs them), got {draws}")
    from lanternpk import __version__
    from lanternpk.data.load import load_observations
    from lanternpk.fit import load_run_with_inputs, require_run
    from lanternpk.io import atomic_path, json_text, replacing_directory, write_text_atomic
    from lanternpk.model import prepare_data
    from lanternpk.predictive import chains_kept, posterior_predictive, resolve_device
    from lanternpk.spec import load_spec

    require_run(run_dir, writable=True)  # before JAX loads in resolve_device
    ppc_dir = run_dir / PPC_DIR
    check_ppc_dir(ppc_dir)
    dev = resolve_device(device)
    idata, provenance, spec_path, data_path = load_run_with_inputs(
        run_dir, command="ppc", data_path=data_path,
        data_hint=", or pass --data FILE (checked against the run's sha256)")
    spec = load_spec(spec_path)
    obs = load_observations(data_path)
    data = prepare_data(spec, obs, source=str(data_path))
    # what is simulated when --draws is not given or exceeds it
    require_psis_draws(idata.posterior, run_dir, user="LOO-PIT")
    require_finite_draws(idata.posterior, run_dir, user="ppc")

    if log is not None:
        log(f"simulating the posterior predictive of {run_dir} ...")
    simulate_start = time.perf_counter()
    pred = posterior_predictive(idata.posterior, spec, data, mode="same_animals",
                                draws=draws, seed=seed, device=dev, progress=progress)
    simulate_s = time.perf_counter() - simulate_start
    n_draws = pred.log_flux.shape[0]
    n_chains = chains_kept(idata.posterior, pred.draw_index)
    rng = np.random.default_rng(seed)
    uniforms = rng.uniform(size=data.censored.shape)
    pit = randomized_pit(pred.cdf.mean(axis=0), data.censored, uniforms=uniforms)
    coverage = coverage_table(obs, data.censored, pit, pred.below_lod)
    loo = loo_pit(pred.log_lik, pred.cdf, data.censored, n_chains=n_chains,
                  uniforms=uniforms)
    loo_record = _loo_record(obs, data.censored, loo, pit, seed, n_chains=n_chains)

    attrs = {"mode": "same_animals", "seed": seed, "device": pred.device, "draws": n_draws,
             "draw_index": pred.draw_index.tolist(), "run_dir": str(run_dir),
             "data_sha256": provenance["data_sha256"],
             "spec_sha256": provenance["spec_sha256"], "lanternpk": __version__,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = predictive_to_idata(pred, obs, n_chains=n_chains, attrs=attrs)
    figures = []
    with replacing_directory(ppc_dir) as staging:  # filled, then swapped in whole
        with atomic_path(staging / PREDICTIVE_FILE) as tmp:
            out.to_netcdf(str(tmp))
        write_text_atomic(staging / COVERAGE_FILE, json_text(coverage))
        write_text_atomic(staging / LOO_PIT_FILE, json_text(loo_record))
        if write_figures:
            groups = obs[["region", "modality"]].astype(str).drop_duplicates()
            for region, modality in sorted(groups.itertuples(index=False)):
                fig, _ = plot_vpc(obs, pred.flux, pred.below_lod, region=region,
                                  modality=modality)
                name = f"vpc_{region}_{modality}.png"
                with atomic_path(staging / name) as tmp:
                    fig.savefig(tmp, format="png", dpi=100)
                figures.append(ppc_dir / name)
        check_ppc_dir(ppc_dir)  # files put there while simulating are not deleted either
    return PpcResult(ppc_dir=ppc_dir, coverage=coverage, loo_pit=loo_record, figures=figures,
                     device=pred.device, draws=n_draws, simulate_s=simulate_s,
                     wall_s=time.perf_counter() - start)


def check_ppc_dir(ppc_dir: Path) -> None:
    """Refuse a ``RUN_DIR/ppc`` that replacing with a new check would lose anything of.

    Parameters
    ----------
    ppc_dir : Path
        ``RUN_DIR/ppc``: absent, or a directory holding nothing but files ppc writes
        (``posterior_predictive.nc``, ``coverage.json``, ``loo_pit.json``,
        ``vpc_*.png``), which the new check replaces as a whole.

    Raises
    ------
    UsageError
        ``ppc_dir`` is a file or a symbolic link (even a broken one), or holds other entries
        (named).
    """
    if ppc_dir.is_symlink() or (ppc_dir.exists() and not ppc_dir.is_dir()):
        kind = "a symbolic link, not a directory" if ppc_dir.is_symlink() else "not a directory"
        raise UsageError(f"{ppc_dir} is {kind}; ppc writes its results there, so move it away")
    if not ppc_dir.is_dir():
        return
    foreign = sorted(p.name for p in ppc_dir.iterdir() if not _is_ppc_output(p))
    if foreign:
        raise UsageError(f"{ppc_dir} holds {', '.join(foreign[:5])}"
                         f"{', …' if len(foreign) > 5 else ''}, which ppc does not write; it "
                         "replaces the directory as a whole, so move them away")


def _is_ppc_output(path: Path) -> bool:
    """Whether ``path`` is a file that ``lanternpk ppc`` writes into ``RUN_DIR/ppc``."""
    name = path.name
    return (path.is_file() and not path.is_symlink()
            and (name in (PREDICTIVE_FILE, COVERAGE_FILE, LOO_PIT_FILE)
                 or (name.startswith("vpc_") and name.endswith(".png"))))


def _loo_record(obs: pd.DataFrame, censored: np.ndarray, loo_result: LooPit,
                pit: np.ndarray, seed: int, *, n_chains: int) -> dict:
    from scipy.stats import kstest

    loo, pareto_k = loo_result.pit, loo_result.pareto_k
    ks = kstest(loo, "uniform")
    ks_in = kstest(pit, "uniform")
    rows = []
    for i, (row, rec) in enumerate(obs.iterrows()):
        rows.append({"row": int(row), "animal": str(rec["animal"]),
                     "cell_type": str(rec["cell_type"]), "region": str(rec["region"]),
                     "modality": str(rec["modality"]), "time_h": float(rec["time_h"]),
                     "censored": bool(censored[i]), "loo_pit": float(loo[i]),
                     "pit": float(pit[i]), "pareto_k": float(pareto_k[i])})
    return {
        "rule": "randomised PIT: u = F(y) for detected values, u = V F(lod), V ~ U(0, 1), "
                "for censored ones; F = PSIS-LOO predictive CDF (loo_pit) or in-sample "
                "posterior predictive CDF (pit)",
        "seed": seed, "n": len(loo), "n_censored": int(np.sum(censored)),
        "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
        "in_sample_ks_statistic": float(ks_in.statistic),
        "in_sample_ks_pvalue": float(ks_in.pvalue),
        "r_eff": loo_result.reff, "chains": n_chains,
        "pareto_k_max": float(np.max(pareto_k)),
        "n_pareto_k_above_0.7": int(np.sum(pareto_k > PARETO_K_BAD)),
        "rows": rows,
    }


def format_report(result: PpcResult) -> str:
    """The text printed by ``lanternpk ppc``."""
    loo = result.loo_pit
    flagged = sum(r["flagged"] for r in result.coverage)
    lines = [format_table(result.coverage), "",
             f"{flagged} of {len(result.coverage)} groups flagged. Rule: a group is flagged "
             "when its 50% or 90% interval coverage (randomised PIT, censored values "
             "included) lies outside the central 99% Binomial(n, level) interval, or its "
             "count of values below LOD lies outside the central 99% posterior predictive "
             "interval; ~1% false alarms per test under the model.",
             f"LOO-PIT ({loo['n']} rows, {loo['n_censored']} censored, randomised): "
             f"KS D = {loo['ks_statistic']:.3f}, p = {loo['ks_pvalue']:.3g}; Pareto k > 0.7 "
             f"for {loo['n_pareto_k_above_0.7']} rows (max {loo['pareto_k_max']:.2f}); "
             f"PSIS r_eff {loo['r_eff']:.2f} from {loo['chains']} chain(s).",
             "",
             f"simulated {result.draws} draws on {result.device} in {result.simulate_s:.1f} s "
             f"(compile included); whole check {result.wall_s:.1f} s; wrote "
             f"{result.ppc_dir}/"]
    return "\n".join(lines)


def run_ppc_command(run_dir: Path, *, draws: int | None, device: str, seed: int,
                    data_path: Path | None, progressbar: bool = True) -> int:
    """CLI handler of ``lanternpk ppc``: run the checks, print the table, return 0.

    Flags are warnings in the table, not failures; user errors raise
    :class:`~lanternpk.errors.UsageError` / :class:`~lanternpk.errors.DataError`.
    ``progressbar``: a bar over the simulated draws, on stderr when it is a terminal.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    bar = Progress(TextColumn("ppc draws"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console,
                   disable=not (progressbar and console.is_terminal))
    task = bar.add_task("ppc", total=None)
    with bar:
        result = run_ppc(run_dir, draws=draws, device=device, seed=seed, data_path=data_path,
                         log=lambda msg: notice("ppc", msg),
                         progress=lambda done, total: bar.update(task, completed=done,
                                                                 total=total))
    print(format_report(result))
    return EXIT_OK


def _cmd_ppc(args: argparse.Namespace) -> int:
    return run_ppc_command(args.run_dir, draws=args.draws, device=args.device, seed=args.seed,
                           data_path=args.data, progressbar=not args.quiet)


def add_ppc_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lanternpk ppc`` on the CLI's subparsers; returns its parser.

    The handler is stored as ``handler`` (``args.handler(args)`` returns the exit status).
    """
    p = subparsers.add_parser(
        "ppc", help="posterior predictive checks of a run: coverage, LOO-PIT, figures",
        description="Simulate the posterior predictive of the observed animals (JAX, on a GPU "
        "when present), then write RUN_DIR/ppc/: posterior_predictive.nc, coverage.json "
        "(50%/90% interval coverage and fraction below LOD per region × modality × time, "
        "censoring-aware), loo_pit.json and one figure per region × modality. Flagged "
        "groups are warnings. Exit status: 0 done (flags or not); 1 the spec or data differ "
        "from the run's; 2 usage error.",
    )
    p.add_argument("run_dir", type=run_path, help="run directory written by lanternpk fit")
    p.add_argument("--draws", type=positive_int, default=None,
                   help=f"posterior draws to simulate from, evenly spaced, at least "
                   f"{MIN_PSIS_DRAWS} (default: all)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where to simulate (auto: a GPU when JAX sees one, else CPU)")
    p.add_argument("--seed", type=random_seed, default=DEFAULT_SEED, help="random seed")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    p.add_argument("--data", type=existing_file, default=None,
                   help="the observations file the run was fit to, if it moved "
                   "(checked against the run's sha256)")
    p.set_defaults(handler=_cmd_ppc)
    return p
