"""Figures of the report. Each function takes plain data and returns ``(fig, axes)``.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so they
render with the Agg canvas whatever backend the user configured. Sizes are in inches at
:data:`CSS_DPI` CSS pixels per inch: a 12-inch figure fills a 1200 px column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter

from lanternpk.estimands import format_probability

#: CSS pixels per figure inch (the HTML shows figures at this scale).
CSS_DPI = 100
#: Okabe–Ito colours (colour-blind safe), one per cell type in design order.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
CONTRAST_TITLES = {"homing_fraction_ratio": "homing fraction ratio",
                   "half_life_ratio": "half-life ratio"}
_MARKERS = {"in_vivo": "o", "ex_vivo": "s"}


def cell_label(cell_type: str) -> str:
    """Display name of a cell-type label (``muse`` → ``Muse``, ``msc`` → ``MSC``)."""
    return {"muse": "Muse", "msc": "MSC"}.get(cell_type, cell_type)


def plain(label: object) -> str:
    """A label from the data as literal text (``$`` would start matplotlib mathtext)."""
    return str(label).replace("$", r"\$")


def colour(cell_types: Sequence[str], cell_type: str) -> str:
    """The colour of ``cell_type`` among ``cell_types``."""
    return PALETTE[list(cell_types).index(cell_type) % len(PALETTE)]


def ratio_forest(contrasts: Sequence[Mapping]) -> tuple[Figure, np.ndarray]:
    """Forest plot of the contrast ratios on a log scale, one panel per contrast.

    Parameters
    ----------
    contrasts : sequence of dict
        Contrast records of the summary contract (``name``, ``region``, ``numerator``,
        ``denominator``, ``median``, ``q05``, ``q95``, ``p_gt_1``); ratios are unitless.

    Returns
    -------
    fig, axes
        ``axes`` has one panel per contrast name; points are medians, lines 90% intervals,
        and the right-hand labels give P(ratio > 1).
    """
    names = list(dict.fromkeys(c["name"] for c in contrasts))
    if not names:
        raise ValueError("no contrasts to plot")
    fig = Figure(figsize=(12, 2.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names, strict=True):
        rows = [c for c in contrasts if c["name"] == name]
        y = np.arange(len(rows))[::-1]
        # a null statistic (not finite, DESIGN.md) is NaN here: no point or line is drawn
        med, lo, hi = (np.array([c[key] for c in rows], dtype=float)
                       for key in ("median", "q05", "q95"))
        ax.hlines(y, lo, hi, color="#333333", lw=2)
        ax.plot(med, y, "o", color="#333333", ms=6)
        ax.axvline(1.0, color="#888888", ls="--", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(LogFormatter())
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        ax.set_yticks(y, [plain(c["region"]) for c in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ratio = plain(f"{cell_label(rows[0]['numerator'])} / {cell_label(rows[0]['denominator'])}")
        ax.set_title(f"{plain(CONTRAST_TITLES.get(name, name))}: {ratio}", fontsize=11)
        ax.set_xlabel("ratio (log scale); point = median, line = 90% interval")
        right = ax.twinx()
        right.set_ylim(ax.get_ylim())
        right.set_yticks(y, [f"P(>1) {ratio_probability(c, short=True)}" for c in rows])
        right.tick_params(length=0)
        ax.grid(axis="x", which="major", color="#e5e5e5")
    return fig, axes


def ratio_probability(contrast: Mapping, *, short: bool = False) -> str:
    """P(ratio > 1) of a contrast record; ``n/a`` when the probability is null: the model
    fixes the ratio at 1 (every draw 1, so its interval is [1, 1]) or a draw is NaN
    (:func:`lanternpk.estimands._p_gt_1` decides; a narrow interval alone does not)."""
    if contrast["p_gt_1"] is None and contrast["q05"] == contrast["q95"] == 1.0 and not short:
        return "n/a (fixed by model)"
    return format_probability(contrast["p_gt_1"])


def engraftment_bands(days: np.ndarray, quantiles: np.ndarray, *, cell_types: Sequence[str],
                      organs: Sequence[str], floor: float) -> tuple[Figure, np.ndarray]:
    """Live cells per organ over time (fraction of dose) with 90% credible bands.

    Parameters
    ----------
    days : ndarray, shape (n_times,)
        Time since injection, days (> 0).
    quantiles : ndarray, shape (3, n_cell_types, n_times, n_organs)
        5%, 50% and 95% posterior quantiles of live cells / dose; NaN (from a non-finite
        draw) is drawn as a gap.
    cell_types, organs : sequence of str
        Labels of the second and last axes of ``quantiles``.
    floor : float
        Lower end of the y axis, fraction of dose (e.g. half a cell of the study dose).

    Returns
    -------
    fig, axes
        One panel per organ, shared log axes.
    """
    n = len(organs)
    fig = Figure(figsize=(12, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True))
    clipped = np.maximum(quantiles, floor * 1e-3)
    for j, (ax, organ) in enumerate(zip(axes, organs, strict=True)):
        for c, ct in enumerate(cell_types):
            col = colour(cell_types, ct)
            ax.fill_between(days, clipped[0, c, :, j], clipped[2, c, :, j], color=col,
                            alpha=0.25, lw=0)
            ax.plot(days, clipped[1, c, :, j], color=col, lw=1.8, label=plain(cell_label(ct)))
        ax.set_xscale("log")
        ax.set_yscale("log")
        # fixed limits: a panel whose bands are all gaps (non-finite draws) has no data
        # limits to scale to
        ax.set_xlim(days.min(), days.max())
        ax.set_ylim(floor, 1.0)
        ax.set_title(plain(organ), fontsize=11)
        ax.set_xlabel("days since injection")
        ax.grid(which="major", color="#e5e5e5")
    axes[0].set_ylabel("live cells / dose")
    axes[0].legend(frameon=False, fontsize=9, loc="lower left")
    return fig, axes


def data_overview(obs: pd.DataFrame, *, cell_types: Sequence[str]) -> tuple[Figure, np.ndarray]:
    """Measured flux against time per region, by cell type and modality, with LODs.

    Parameters
    ----------
    obs : pandas.DataFrame
        Canonical observations (``time_h`` hours, ``flux`` and ``lod`` photons/s).
    cell_types : sequence of str
        Cell-type labels in colour order.

    Returns
    -------
    fig, axes
        One panel per region; filled markers are detected ROIs, open down-triangles are
        left-censored ROIs (flux below LOD) drawn at their LOD; dashed lines are median LODs.
    """
    regions = list(dict.fromkeys(obs["region"]))
    ncols = min(4, len(regions))
    nrows = -(-len(regions) // ncols)
    fig = Figure(figsize=(12, 2.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    for ax, region in zip(axes, regions, strict=False):
        rows = obs[obs["region"] == region]
        for c, ct in enumerate(cell_types):
            col = colour(cell_types, ct)
            shift = 1.0 + 0.08 * c  # small horizontal offset per cell type
            for modality, marker in _MARKERS.items():
                sel = rows[(rows["cell_type"] == ct) & (rows["modality"] == modality)]
                t = sel["time_h"].to_numpy(float) / 24.0 * shift
                censored = (sel["flux"] < sel["lod"]).to_numpy()
                ax.plot(t[~censored], sel["flux"].to_numpy(float)[~censored], marker,
                        ls="none", color=col, ms=4, alpha=0.7)
                ax.plot(t[censored], sel["lod"].to_numpy(float)[censored], "v", ls="none",
                        mfc="none", color=col, ms=5, alpha=0.8)
        for modality, lod in rows.groupby("modality")["lod"].median().items():
            ax.axhline(lod, color="#555555" if modality == "in_vivo" else "#aaaaaa",
                       ls="--", lw=1)
        ax.set_xscale("log", nonpositive="mask")
        ax.set_yscale("log", nonpositive="mask")
        ax.set_title(plain(region), fontsize=11)
        ax.set_xlabel("days since injection")
        ax.grid(which="major", color="#e5e5e5")
    for ax in axes[len(regions):]:
        ax.set_visible(False)
    axes[0].set_ylabel("flux (photons/s)")
    handles = [Line2D([], [], color=colour(cell_types, ct), lw=3, label=plain(cell_label(ct)))
               for ct in cell_types]
    handles += [Line2D([], [], marker=m, ls="none", color="#333333", label=mod.replace("_", " "))
                for mod, m in _MARKERS.items()]
    handles += [Line2D([], [], marker="v", ls="none", mfc="none", color="#333333",
                       label="below LOD (at LOD)"),
                Line2D([], [], ls="--", color="#555555", label="median LOD in vivo"),
                Line2D([], [], ls="--", color="#aaaaaa", label="median LOD ex vivo")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False,
               fontsize=9)
    return fig, axes
