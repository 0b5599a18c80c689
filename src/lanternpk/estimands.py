"""Estimands of DESIGN.md, computed from kinetic (and measurement) parameters.

Every function accepts NumPy arrays with any leading dimensions (posterior draws, cell
types), so the same code serves the truth file of a simulation and a posterior.
Times in days, rates in 1/day, amounts as fractions of the injected dose.
"""

from __future__ import annotations

import numpy as np

from lanternpk.solver.closed_form import homing_fraction, organ_cells

#: Days at which `engrafted_fraction` is reported (DESIGN.md).
ENGRAFTED_DAYS = (1.0, 3.0, 7.0, 14.0, 28.0, 56.0)
#: Daily grid on which `time_to_undetectable_d` is searched, days.
DETECTION_GRID_D = np.arange(0.0, 366.0)
#: Where interval widths are compared, a detection time beyond the grid (inf: still
#: detectable on its last day) counts as the day after it: censored at the horizon.
BEYOND_GRID_D = float(DETECTION_GRID_D[-1] + 1)
#: Draws per block of the kinetics on :data:`DETECTION_GRID_D`: each intermediate array is
#: then at most 256 × cell types × 366 days × organs float64 (~6 MB for 2 × 4), however many
#: draws a posterior has (all at once, 4000 draws took ~660 MiB and 2.6 s).
GRID_BLOCK_DRAWS = 256


def kinetic_estimands(
    first_pass: np.ndarray,
    release: np.ndarray,
    loss: np.ndarray,
    *,
    filter_index: int,
    blood_efflux: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """First-pass, homing and engrafted fractions and half-lives of the typical animal.

    Parameters
    ----------
    first_pass : ndarray, shape (..., n_organs)
        First-pass fractions of blood outflow.
    release : ndarray, shape (...)
        Filter-to-blood release rate, 1/day.
    loss : ndarray, shape (..., n_organs)
        Loss rates, 1/day.
    filter_index : int
        Index of the filter organ (lung).
    blood_efflux : ndarray, shape (...), optional
        Blood efflux rate, 1/day; ``None`` for the fast-blood model.

    Returns
    -------
    dict
        ``first_pass_fraction`` and ``homing_fraction`` (..., n_organs);
        ``engrafted_fraction`` (..., n_days, n_organs) at :data:`ENGRAFTED_DAYS`;
        ``half_life_d`` (..., n_organs), days.
    """
    n_organs = first_pass.shape[-1]
    days = np.broadcast_to(np.asarray(ENGRAFTED_DAYS), (*release.shape, len(ENGRAFTED_DAYS)))
    return {
        "first_pass_fraction": first_pass,
        "homing_fraction": homing_fraction(first_pass, release, loss, filter_index=filter_index),
        "engrafted_fraction": organ_cells(
            first_pass, release, loss, days,
            filter_index=filter_index, n_organs=n_organs, blood_efflux=blood_efflux,
        ),
        "half_life_d": np.log(2.0) / loss,
    }


def first_undetectable_day(signal: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """First grid day from which the expected signal stays below the LOD.

    Parameters
    ----------
    signal : ndarray, shape (..., n_grid)
        Expected flux on :data:`DETECTION_GRID_D`, photons/s.
    lod : ndarray, broadcastable to (...)
        Limit of detection, photons/s.

    Returns
    -------
    ndarray, shape (...)
        Days; ``inf`` when the signal is still detectable on the last grid day.
    """
    below = signal < np.asarray(lod)[..., None]
    # stays below from day d on: reverse cumulative AND
    stays_below = np.flip(np.logical_and.accumulate(np.flip(below, -1), axis=-1), -1)
    any_below = stays_below.any(axis=-1)
    first = np.argmax(stays_below, axis=-1)
    return np.where(any_below, DETECTION_GRID_D[first], np.inf)


# --- from a posterior -----------------------------------------------------------------------

#: A posterior/prior 90%-interval width ratio above this marks an estimand as barely
#: informed by the data: the data shrank the prior interval by less than 30%.
BARELY_INFORMED_RATIO = 0.7


def stacked_draws(group, name: str) -> np.ndarray:
    """``group[name]`` with chains and draws stacked chain-major: (chains × draws, ...)."""
    values = group[name].values
    return values.reshape(-1, *values.shape[2:])


def cell_type_positions(group, design: dict) -> list[tuple[int, str]]:
    """(position on the parameters' cell-type axis, label) of each cell type of the design.

    The design lists only the cell types present in the data, the parameters every cell
    type of the spec: a study of MSCs alone under a Muse-and-MSC spec must take the MSC
    slice, not the first one.
    """
    variable = group["first_pass"]
    if "cell_type" in variable.coords:
        on_axis = [str(ct) for ct in variable.coords["cell_type"].values]
        missing = [ct for ct in design["cell_types"] if ct not in on_axis]
        if missing:
            raise ValueError(f"cell types {missing} of the design are not in the "
                             f"parameters (cell_type coordinate {on_axis})")
        return [(on_axis.index(ct), ct) for ct in design["cell_types"]]
    if variable.shape[2] != len(design["cell_types"]):
        raise ValueError("parameters without a cell_type coordinate must have one entry "
                         f"per cell type of the design {design['cell_types']}, not "
                         f"{variable.shape[2]}")
    return list(enumerate(design["cell_types"]))


def estimand_draws(group, design: dict) -> dict[tuple, np.ndarray]:
    """Draws of every estimand, keyed by (name, cell_type, region, time_d, modality).

    Parameters
    ----------
    group : xarray.Dataset
        A posterior or prior group with ``first_pass``, ``release``, ``loss``,
        ``photons_per_cell``, ``transmission_in_vivo``, ``transmission_ex_vivo`` (and
        ``blood_efflux`` for the explicit-blood model).
    design : dict
        The run's design record (see :func:`lanternpk.fit.design_record`): cell types
        (those in the data; parameters are taken by the group's ``cell_type`` coordinate),
        organs, filter index, dose per cell type, and per region × modality the organs it
        sees, its LOD and background (photons/s; ``None`` where the model estimates it, and
        then each draw uses its own ``log_background`` of the region × modality's group).
    """
    f = stacked_draws(group, "first_pass")
    r = stacked_draws(group, "release")
    k = stacked_draws(group, "loss")
    q = stacked_draws(group, "blood_efflux") if design["explicit_blood"] else None
    q_ct = None if q is None else np.broadcast_to(q[:, None], r.shape)
    kin = kinetic_estimands(f, r, k, filter_index=design["filter_index"], blood_efflux=q_ct)
    cell_types = cell_type_positions(group, design)
    out: dict[tuple, np.ndarray] = {}
    for c, ct in cell_types:
        for j, organ in enumerate(design["organs"]):
            for name in ("first_pass_fraction", "homing_fraction", "half_life_d"):
                out[(name, ct, organ, None, None)] = kin[name][:, c, j]
            for d, day in enumerate(ENGRAFTED_DAYS):
                out[("engrafted_fraction", ct, organ, day, None)] = kin["engrafted_fraction"][
                    :, c, d, j]
    out.update(_undetectable_days(group, design, cell_types, f, r, k, q_ct))
    return out


def _undetectable_days(group, design: dict, cell_types: list[tuple[int, str]], f, r, k,
                       q_ct) -> dict[tuple, np.ndarray]:
    """``time_to_undetectable_d`` draws of each cell type × detection region × modality.

    The "expected signal" of DESIGN.md is read as the model's mean structure for the
    typical animal: live cells × photons per cell × transmission + background, with random
    effects at zero, image gain 1 and no residual, i.e. the median of the log-normal
    measurement (its mean is larger: the residual and the image gains are log-normal).
    Truth files and posteriors use the same definition.

    The kinetics on :data:`DETECTION_GRID_D` run in blocks of :data:`GRID_BLOCK_DRAWS`
    draws; ``f``, ``r``, ``k`` and ``q_ct`` are the stacked draws of :func:`estimand_draws`.
    """
    ppc = stacked_draws(group, "photons_per_cell")
    weights = [stacked_draws(group, f"transmission_{det['modality']}")
               * np.isin(design["organs"], det["organs"])[None, :]
               for det in design["detection"]]  # (draws, organ): 0 outside the region
    backgrounds = [_background_draws(group, det, r.shape[0]) for det in design["detection"]]
    days: dict[tuple, list[np.ndarray]] = {}
    for block in range(0, r.shape[0], GRID_BLOCK_DRAWS):
        rows = slice(block, block + GRID_BLOCK_DRAWS)
        grid = np.broadcast_to(DETECTION_GRID_D, (*r[rows].shape, DETECTION_GRID_D.size))
        cells = organ_cells(f[rows], r[rows], k[rows], grid,
                            filter_index=design["filter_index"], n_organs=len(design["organs"]),
                            blood_efflux=None if q_ct is None else q_ct[rows]
                            )  # (draws, cell type, grid day, organ)
        for det, region_weights, background in zip(design["detection"], weights, backgrounds,
                                                   strict=True):
            for c, ct in cell_types:
                signal = (ppc[rows, None] * design["dose_cells"][ct]
                          * np.einsum("sgo,so->sg", cells[:, c], region_weights[rows])
                          + background[rows])
                key = ("time_to_undetectable_d", ct, det["region"], None, det["modality"])
                days.setdefault(key, []).append(first_undetectable_day(signal, det["lod"]))
    return {key: np.concatenate(blocks) for key, blocks in days.items()}


def _background_draws(group, detection: dict, n_draws: int) -> np.ndarray:
    """Background of one region × modality, photons/s, shaped (draws, 1).

    The design's number where the data gave one; otherwise the draws of the model's
    ``log_background`` for the region × modality's group, so that the uncertainty of an
    estimated background reaches ``time_to_undetectable_d``.
    """
    if detection["background"] is not None:
        return np.full((n_draws, 1), float(detection["background"]))
    if "log_background" not in group:
        raise ValueError(f"{detection['region']}/{detection['modality']}: the design has no "
                         "background and the draws have no log_background")
    return np.exp(stacked_draws(group, "log_background")[:, detection["group"], None])


def _width(x: np.ndarray, *, log: bool, on_grid: bool = False) -> float:
    """Width of the equal-tailed 90% interval of draws, of their logs when ``log``.

    ``on_grid`` (detection days): an infinite draw counts as :data:`BEYOND_GRID_D`, censored
    at the horizon as the reported quantiles treat it, and quantiles are draws. NaN where
    the width is undefined: fewer than 10 draws, a NaN or (off the grid) infinite draw, or on
    the log scale an interval reaching 0. Quantiles are taken before the log, so that a few
    draws that underflowed to 0 leave the width defined.
    """
    x = np.asarray(x, dtype=float)
    if on_grid:
        x = np.where(np.isposinf(x), BEYOND_GRID_D, x)
    if x.size < 10 or not np.isfinite(x).all():
        return float("nan")
    lo, hi = np.quantile(x, [0.05, 0.95], method="inverted_cdf" if on_grid else "linear")
    if not log:
        return float(hi - lo)
    return float(np.log(hi) - np.log(lo)) if lo > 0 else float("nan")


def _width_ratio(posterior: np.ndarray, prior: np.ndarray | None, *, log: bool,
                 on_grid: bool = False) -> float:
    """Posterior over prior 90%-interval width; 1 when both are a point (the data changed
    nothing); NaN without prior draws or where a width is undefined."""
    if prior is None:
        return float("nan")
    prior_width = _width(prior, log=log, on_grid=on_grid)
    posterior_width = _width(posterior, log=log, on_grid=on_grid)
    if prior_width > 0:
        return posterior_width / prior_width
    if prior_width == 0 and posterior_width == 0:
        return 1.0
    return float("nan")


def organs_imaged_alone(design: dict) -> set[str]:
    """Organs some ROI of the data sees on its own (its region maps to that organ alone).

    An organ seen only within a larger region (``whole_body``) or by no ROI at all cannot
    be told apart from the others by the data: its estimands rest on the prior and on the
    other organs' shares, whatever their width ratio says.
    """
    return {det["organs"][0] for det in design["detection"] if len(det["organs"]) == 1}


def _barely(width_ratio: float) -> bool | None:
    """Barely informed (ratio above :data:`BARELY_INFORMED_RATIO`); ``None``: cannot tell."""
    return bool(width_ratio > BARELY_INFORMED_RATIO) if np.isfinite(width_ratio) else None


def _quantiles(x: np.ndarray, *, on_grid: bool = False) -> dict:
    """Mean, median and equal-tailed 90% interval of draws.

    ``on_grid``: the draws take values on a grid (whole days, and inf = "still detectable
    on the last grid day"), so quantiles are draws (no interpolation between grid days);
    the mean is ``None`` when a draw is infinite, as is any infinite quantile. Otherwise
    too, a statistic that is not finite (from a NaN or infinite draw) is ``None``, so that
    the summary stays valid JSON.
    """
    if on_grid:
        q05, q50, q95 = np.quantile(x, [0.05, 0.5, 0.95], method="inverted_cdf")
        mean = float(np.mean(x)) if np.isfinite(x).all() else None
        return {"mean": mean, "median": _num(q50), "q05": _num(q05), "q95": _num(q95)}
    return {"mean": _num(np.mean(x)), "median": _num(np.median(x)),
            "q05": _num(np.quantile(x, 0.05)), "q95": _num(np.quantile(x, 0.95))}


def _num(value: float) -> float | None:
    """``value`` as a float, or ``None`` (JSON null) when it is NaN or infinite."""
    return float(value) if np.isfinite(value) else None


def _p_gt_1(ratio: np.ndarray) -> float | None:
    """P(ratio > 1) from draws; ``None`` when every draw is exactly 1 or some draw is NaN.

    A ratio fixed at 1 by the model (a parameter the spec shares between the cell types)
    has P(ratio > 1) = 0, which would read as certainty that the numerator is not larger.
    A NaN draw (0/0) is neither above nor below 1, so no probability is given.
    """
    if np.all(ratio == 1.0) or np.isnan(ratio).any():
        return None
    return float(np.mean(ratio > 1))


def format_probability(p: float | None, decimals: int = 2) -> str:
    """A probability (P(ratio > 1)) to ``decimals`` decimals, as the report and the fit
    summary show it: one that would round to 1 or 0 reads ``> 0.99`` / ``< 0.01`` (at two
    decimals; an estimate from a few thousand draws is not a certainty), None (null in the
    summary) ``n/a``."""
    if p is None:
        return "n/a"
    step = 10.0 ** -decimals
    if p > 1 - step / 2:
        return f"> {1 - step:.{decimals}f}"
    if p < step / 2:
        return f"< {step:.{decimals}f}"
    return f"{p:.{decimals}f}"


def contrast_pair(cell_types: list[str]) -> tuple[str, str]:
    """Numerator and denominator of the contrasts: Muse / MSC (DESIGN.md) when the study
    holds both, whatever order the spec lists them in; else the first listed cell type over
    the second."""
    if "muse" in cell_types and "msc" in cell_types:
        return "muse", "msc"
    return cell_types[0], cell_types[1]


# Non-finite draws (a loss rate that underflowed to 0, a NaN draw) are handled explicitly:
# their statistics become null, and the convergence checks name non-finite parameters.
@np.errstate(divide="ignore", invalid="ignore", over="ignore")
def summarize_estimands(posterior, prior, design: dict) -> tuple[list[dict], list[dict]]:
    """Estimand and contrast records of the summary JSON contract (DESIGN.md).

    Each estimand also carries ``posterior_prior_width_ratio`` and ``barely_informed``
    (ratio > :data:`BARELY_INFORMED_RATIO`; widths of 90% intervals, on the log scale for
    positive quantities; both ``None`` where the ratio is undefined, e.g. without prior
    draws). The kinetic estimands of an organ no ROI sees on its own
    (:func:`organs_imaged_alone`) are barely informed whatever their ratio: on the ALS study
    the spec's damaged organ, seen only within ``whole_body``, had a first-pass fraction
    with ratio 0.69, narrowed by the other organs' shares of the same simplex.
    ``time_to_undetectable_d`` records carry ``p_beyond_grid``: the fraction of
    draws still detectable on the last day of :data:`DETECTION_GRID_D` (infinite draws),
    which make the mean null and every quantile above ``1 − p_beyond_grid`` null.
    Contrasts (:func:`contrast_pair`): Muse over MSC for homing fractions and
    half-lives, with P(ratio > 1) (``None`` for a ratio the model fixes at 1), and the same
    two fields (the prior's ratio of the two estimands' prior draws as reference); a ratio
    is also marked barely informed when its numerator or denominator is, since it then
    rests on a prior.
    """
    post = estimand_draws(posterior, design)
    pri = estimand_draws(prior, design) if prior is not None else {}
    unseen = set(design["organs"]) - organs_imaged_alone(design)
    estimands = []
    for key, draws in post.items():
        name, ct, region, time_d, modality = key
        on_grid = name == "time_to_undetectable_d"  # (its region is a data region, imaged)
        ratio = _width_ratio(draws, pri.get(key), log=not on_grid, on_grid=on_grid)
        record = {"name": name, "cell_type": ct, "region": region, "time_d": time_d,
                  "modality": modality, **_quantiles(draws, on_grid=on_grid),
                  "posterior_prior_width_ratio": _num(ratio),
                  "barely_informed": True if not on_grid and region in unseen
                  else _barely(ratio)}
        if on_grid:  # says why the mean, and quantiles above 1 − this, are null
            record["p_beyond_grid"] = float(np.mean(np.isposinf(draws)))
        estimands.append(record)
    barely = {(e["name"], e["cell_type"], e["region"], e["time_d"], e["modality"]):
              e["barely_informed"] for e in estimands}
    contrasts = []
    cell_types = design["cell_types"]
    if len(cell_types) >= 2:
        num, den = contrast_pair(cell_types)
        for name, contrast in (("homing_fraction", "homing_fraction_ratio"),
                               ("half_life_d", "half_life_ratio")):
            for organ in design["organs"]:
                keys = (name, num, organ, None, None), (name, den, organ, None, None)
                ratio = post[keys[0]] / post[keys[1]]
                prior_ratio = (pri[keys[0]] / pri[keys[1]] if all(key in pri for key in keys)
                               else None)
                width_ratio = _width_ratio(ratio, prior_ratio, log=True)
                contrasts.append({"name": contrast, "region": organ, "numerator": num,
                                  "denominator": den, "median": _num(np.median(ratio)),
                                  "q05": _num(np.quantile(ratio, 0.05)),
                                  "q95": _num(np.quantile(ratio, 0.95)),
                                  "p_gt_1": _p_gt_1(ratio),
                                  "posterior_prior_width_ratio": _num(width_ratio),
                                  "barely_informed": True if any(barely.get(key) for key in keys)
                                  else _barely(width_ratio)})
    return estimands, contrasts
