"""Rank statistics of simulation-based calibration: ranks, uniformity tests, ECDF bands, plot.

Pure numerics on arrays (no fitting, no I/O except the figure's ``savefig`` by the caller).

If the fits are calibrated, the rank of the true value among ``L`` posterior draws is
uniform on ``{0, …, L}`` (Talts et al. 2018). Two tests per quantity:

* **chi-square** on the ranks in ``bins`` near-equal bins of the ``L + 1`` rank values
  (expected counts proportional to bin widths);
* **ECDF** (Säilynoja, Bürkner & Vehtari 2022): the smallest two-sided pointwise binomial tail
  probability of the rank ECDF at ``K − 1`` interior evaluation points (on the rank grid).

Both p-values come from simulating uniform ranks with the same ``N`` and ``L``
(:func:`uniform_null`), as does the simultaneous confidence band of the ECDF-difference plot.
The chi-square statistic's asymptotic χ² distribution is too light-tailed at Bonferroni
levels with few fits (at N = 20, L = 99, 10 bins, 3× the nominal rate at 4e-5), so it gives
only the reported ``p_value_asymptotic``.

Ties (a discrete quantity such as ``time_to_undetectable_d``, or an infinite one) are broken
at random, so the rank stays exactly uniform under calibration.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from lanternpk.errors import UsageError

#: Default number of ECDF evaluation points (at most L + 1).
ECDF_POINTS = 100
#: Simulated uniform rank sets for the null distributions and bands (p-values resolve 1e-5,
#: below a Bonferroni threshold 0.01 / (2 × 150)); more when the threshold is lower.
ECDF_SIMULATIONS = 100_000
#: Most simulated rank sets (two float64 arrays of this length; ~10 s per million at N = 200).
MAX_SIMULATIONS = 10_000_000


def rank(truth: float, draws: np.ndarray, rng: np.random.Generator) -> int:
    """Rank of ``truth`` among posterior ``draws``: ``#(draws < truth)``, ties broken at random.

    Parameters
    ----------
    truth : float
        The value the data were simulated with (any units; may be ``inf``).
    draws : ndarray, shape (L,)
        Posterior draws of the same quantity, roughly independent (thinned).
    rng : numpy.random.Generator
        Source of the tie-breaking integer, uniform on ``{0, …, #(draws == truth)}``.

    Returns
    -------
    int
        In ``{0, …, L}``.
    """
    draws = np.asarray(draws, dtype=float)
    if math.isnan(truth) or np.isnan(draws).any():
        raise ValueError("cannot rank NaN values")
    below = int(np.sum(draws < truth))
    ties = int(np.sum(draws == truth))
    return below + (int(rng.integers(0, ties + 1)) if ties else 0)


def bin_edges(n_values: int, bins: int) -> np.ndarray:
    """Edges of ``bins`` near-equal bins over the integers ``0 … n_values − 1``.

    Returns
    -------
    ndarray of int, shape (bins + 1,)
        Bin ``b`` holds ranks ``edges[b] ≤ r < edges[b + 1]``.
    """
    bins = max(1, min(bins, n_values))
    sizes = np.full(bins, n_values // bins)
    sizes[: n_values % bins] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def _binned(ranks: np.ndarray, n_draws: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ranks per bin and their expectation under uniformity.

    Ranks (rows, N) → counts (rows, bins), and expected counts (bins,) ∝ bin widths.
    """
    ranks = np.atleast_2d(np.asarray(ranks, dtype=np.int64))
    rows, n = ranks.shape
    edges = bin_edges(n_draws + 1, bins)
    which = np.searchsorted(edges, ranks, side="right") - 1  # bin of each rank
    offsets = (np.arange(rows)[:, None] * (len(edges) - 1) + which).ravel()
    counts = np.bincount(offsets, minlength=rows * (len(edges) - 1)).reshape(rows, -1)
    return counts, n * np.diff(edges) / (n_draws + 1)


def _chi_square_statistics(ranks: np.ndarray, n_draws: int, bins: int) -> np.ndarray:
    """Pearson's statistic of binned ranks; ranks (rows, N) → (rows,)."""
    return _pearson(*_binned(ranks, n_draws, bins))


def _pearson(counts: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.sum((counts - expected) ** 2 / expected, axis=-1)


def simulated_upper_p(statistic, null: np.ndarray):
    """Monte Carlo p-value ``(#(null ≥ statistic) + 1) / (M + 1)`` against sorted ``null``.

    Valid (``P(p ≤ t) ≤ t``) under the null for exchangeable simulations; statistics within
    rounding of each other count as equal. Vectorised over ``statistic``.
    """
    below = np.searchsorted(null, np.asarray(statistic) * (1 - 1e-12), side="left")
    return (len(null) - below + 1) / (len(null) + 1)


def chi_square_test(ranks: np.ndarray, n_draws: int, bins: int = 10,
                    null: np.ndarray | None = None) -> dict:
    """Chi-square test that ``ranks`` are uniform on ``{0, …, n_draws}``.

    Parameters
    ----------
    ranks : ndarray of int, shape (N,)
    n_draws : int
        ``L``, the number of posterior draws each rank was computed against.
    bins : int
        Number of bins (near-equal widths; expected counts proportional to width).
    null : ndarray, optional
        Sorted statistics of simulated uniform rank sets with the same N, L and bins
        (:attr:`UniformNull.chi_square`): the p-value is then the fraction at least as large
        (never 0); without it, the asymptotic χ² p-value.

    Returns
    -------
    dict
        ``statistic``, ``dof``, ``p_value``, ``p_value_asymptotic``, ``counts`` and
        ``expected`` per bin.
    """
    counts, expected = _binned(ranks, n_draws, bins)
    statistic = float(_pearson(counts, expected)[0])
    counts = counts[0]
    dof = len(counts) - 1
    asymptotic = float(stats.chi2.sf(statistic, dof)) if dof > 0 else 1.0
    p = asymptotic if null is None else float(simulated_upper_p(statistic, null))
    return {"statistic": statistic, "dof": dof, "p_value": p,
            "p_value_asymptotic": asymptotic, "counts": counts.tolist(),
            "expected": expected.tolist()}


def ecdf_points(n_draws: int, points: int = ECDF_POINTS) -> np.ndarray:
    """Evaluation points ``z`` in (0, 1) of the rank ECDF (fractional rank ``(r + 1)/(L + 1)``).

    The ``points − 1`` interior points of an even grid, each moved down onto the rank grid
    ``m / (L + 1)``: there the ECDF of uniform ranks has expectation exactly ``z`` (between
    grid points it is a step below ``z``). When ``L + 1`` is a multiple of ``points`` (the
    default L = 99) the grid is unchanged, ``j / points``.
    """
    k = min(points, n_draws + 1)
    steps = np.unique(np.arange(1, k) * (n_draws + 1) // k)
    return steps[steps > 0] / (n_draws + 1)


def _ecdf_counts(ranks: np.ndarray, n_draws: int, z: np.ndarray) -> np.ndarray:
    """Number of fractional ranks ``(r + 1)/(L + 1) ≤ z``; ranks (rows, N) → (rows, len(z))."""
    ranks = np.atleast_2d(np.asarray(ranks, dtype=np.int64))
    rows = ranks.shape[0]
    offsets = (np.arange(rows)[:, None] * (n_draws + 1) + ranks).ravel()
    hist = np.bincount(offsets, minlength=rows * (n_draws + 1)).reshape(rows, n_draws + 1)
    cumulative = np.concatenate([np.zeros((rows, 1), dtype=np.int64), np.cumsum(hist, 1)], 1)
    # (r + 1)/(L + 1) ≤ z  ⇔  r ≤ z (L + 1) − 1: count of ranks 0 … floor(z (L + 1) − 1)
    upto = np.floor(z * (n_draws + 1) - 1 + 1e-9).astype(int) + 1
    return cumulative[:, np.clip(upto, 0, n_draws + 1)]


def _tail_table(n: int, z: np.ndarray) -> np.ndarray:
    """Two-sided pointwise binomial tail probability, (len(z), n + 1) over counts 0 … n."""
    counts = np.arange(n + 1)[None, :]
    lower = stats.binom.cdf(counts, n, z[:, None])
    upper = stats.binom.sf(counts - 1, n, z[:, None])
    return np.minimum(1.0, 2.0 * np.minimum(lower, upper))


def _min_tail(counts: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Smallest pointwise tail probability over z; counts (rows, K) → (rows,)."""
    return table[np.arange(table.shape[0])[None, :], counts].min(axis=-1)


class UniformNull(NamedTuple):
    """Both test statistics of the same simulated uniform rank sets, each sorted."""

    ecdf: np.ndarray  # minima of pointwise tail probabilities (small = extreme)
    chi_square: np.ndarray  # Pearson's statistic in ``bins`` bins (large = extreme)


def uniform_null(n: int, n_draws: int, *, points: int = ECDF_POINTS,
                 simulations: int = ECDF_SIMULATIONS, seed: int = 0, bins: int = 10
                 ) -> UniformNull:
    """Null distributions of both uniformity tests, from simulated uniform rank sets.

    Parameters
    ----------
    n : int
        Number of ranks per quantity (fits).
    n_draws : int
        ``L``.
    points, simulations, seed
        ECDF evaluation points, number of simulated uniform rank sets, and their seed.
    bins : int
        Chi-square bins.

    Returns
    -------
    UniformNull
        Arrays of shape (simulations,), sorted.
    """
    rng = np.random.default_rng(seed)
    z = ecdf_points(n_draws, points)
    table = _tail_table(n, z)
    ecdf, chi = np.empty(simulations), np.empty(simulations)
    for start in range(0, simulations, 5000):
        stop = min(start + 5000, simulations)
        ranks = rng.integers(0, n_draws + 1, size=(stop - start, n))
        ecdf[start:stop] = _min_tail(_ecdf_counts(ranks, n_draws, z), table)
        chi[start:stop] = _chi_square_statistics(ranks, n_draws, bins)
    return UniformNull(np.sort(ecdf), np.sort(chi))


def ecdf_test(ranks: np.ndarray, n_draws: int, null: np.ndarray, *,
              points: int = ECDF_POINTS) -> dict:
    """ECDF uniformity test of ``ranks`` against the simulated ``null`` (:attr:`UniformNull.ecdf`).

    Returns
    -------
    dict
        ``statistic`` (smallest pointwise tail probability) and ``p_value`` (fraction of
        simulated uniform rank sets with a statistic at most as large; never 0).
    """
    ranks = np.asarray(ranks)
    z = ecdf_points(n_draws, points)
    counts = _ecdf_counts(ranks, n_draws, z)
    statistic = float(_min_tail(counts, _tail_table(len(ranks), z))[0])
    p = (np.searchsorted(null, statistic, side="right") + 1) / (len(null) + 1)
    return {"statistic": statistic, "p_value": float(p)}


def simultaneous_band(n: int, n_draws: int, null: np.ndarray, level: float, *,
                      points: int = ECDF_POINTS) -> dict:
    """Simultaneous ``1 − level`` band for the ECDF difference ``F̂(z) − z`` of N uniform ranks.

    The pointwise level ``γ`` is the ``level`` quantile of the null statistic, so that a
    uniform rank ECDF stays inside the band at every point with probability ≈ ``1 − level``.

    Returns
    -------
    dict
        ``z``, ``lower`` and ``upper`` (ECDF − z), and ``gamma``.
    """
    z = ecdf_points(n_draws, points)
    gamma = float(np.quantile(null, level))
    lower = stats.binom.ppf(gamma / 2, n, z) / n - z
    upper = stats.binom.ppf(1 - gamma / 2, n, z) / n - z
    return {"z": z.tolist(), "lower": lower.tolist(), "upper": upper.tolist(), "gamma": gamma}


def ecdf_difference(ranks: np.ndarray, n_draws: int, *, points: int = ECDF_POINTS
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(z, F̂(z) − z)`` of the fractional ranks."""
    z = ecdf_points(n_draws, points)
    return z, _ecdf_counts(ranks, n_draws, z)[0] / len(ranks) - z


def uniformity_tests(ranks: dict[str, np.ndarray], n_draws: int, *, alpha: float,
                     bins: int = 10, seed: int = 0) -> dict:
    """Both tests for every quantity, with a Bonferroni family-wise level ``alpha``.

    A quantity fails when either test's p-value is below ``alpha / (2 Q)`` (Q distinct
    rank sets, two tests each), so that the chance of any failure under calibration is at
    most ``alpha``. Quantities with the same ranks in every fit are one test, counted once:
    a first-pass fraction is both a parameter and an estimand, and so is the homing fraction
    of the filter organ. Both p-values are simulated from uniform rank sets of the same N
    and L, at least ``2 / threshold`` of them so that a p-value can fall below the
    threshold.

    Parameters
    ----------
    ranks : dict
        Quantity name → ranks (N,), all with the same N.
    n_draws : int
        ``L``.
    alpha : float
        Family-wise level over all quantities and both tests.
    bins : int
        Chi-square bins.
    seed : int
        Seed of the ECDF null simulation.

    Returns
    -------
    dict
        ``alpha``, ``threshold`` (per-test), ``n`` (ranks per quantity), ``n_distinct``
        (Q), ``quantities`` (name → chi-square and ECDF results and ``failed``),
        ``failed`` (names), ``band_95`` and ``band_family`` (ECDF-difference bands).
    """
    names = list(ranks)
    if not names:
        return {"alpha": alpha, "threshold": None, "n": 0, "n_distinct": 0, "quantities": {},
                "failed": [], "band_95": None, "band_family": None}
    n = len(ranks[names[0]])
    n_distinct = len({np.asarray(r, dtype=np.int64).tobytes() for r in ranks.values()})
    threshold = alpha / (2 * n_distinct)
    # simulated p-values resolve 1/(M + 1): enough sets that the threshold is reachable
    simulations = max(ECDF_SIMULATIONS, math.ceil(2 / threshold))
    if simulations > MAX_SIMULATIONS:
        raise UsageError(f"{n_distinct} distinct quantities at a family-wise alpha of {alpha:g} "
                         f"give a per-test threshold of {threshold:.2g}, which needs "
                         f"{simulations} simulated rank sets, more than {MAX_SIMULATIONS}; "
                         "run again with a larger --alpha (the fits are kept)")
    nulls = uniform_null(n, n_draws, seed=seed, simulations=simulations, bins=bins)
    null = nulls.ecdf
    results = {}
    failed = []
    for name in names:
        chi = chi_square_test(ranks[name], n_draws, bins, null=nulls.chi_square)
        ecdf = ecdf_test(ranks[name], n_draws, null)
        bad = chi["p_value"] < threshold or ecdf["p_value"] < threshold
        results[name] = {"chi_square": chi, "ecdf": ecdf, "failed": bool(bad)}
        if bad:
            failed.append(name)
    family_level = max(threshold, 1.0 / len(null))
    return {"alpha": alpha, "threshold": threshold, "n": n, "n_distinct": n_distinct,
            "bins": bins, "quantities": results, "failed": failed,
            "band_95": simultaneous_band(n, n_draws, null, 0.05),
            "band_family": simultaneous_band(n, n_draws, null, family_level)}


def family_of(name: str) -> str:
    """Panel a quantity belongs to: its name before the bracket."""
    return name.split("[", 1)[0]


def plot_ecdf(ranks: dict[str, np.ndarray], n_draws: int, tests: dict):
    """ECDF-difference plot: one panel per parameter/estimand family, one line per quantity.

    The shaded region is the 95% simultaneous band of one quantity; the dashed lines the
    band at the per-quantity Bonferroni level (a line leaving it fails the ECDF test).
    Quantities that failed either test are drawn in red.

    Returns
    -------
    (matplotlib.figure.Figure, ndarray of Axes)
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    families: dict[str, list[str]] = {}
    for name in ranks:
        families.setdefault(family_of(name), []).append(name)
    n_panels = max(1, len(families))
    cols = min(4, n_panels)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False,
                             sharex=True)
    failed = set(tests.get("failed", []))
    for ax, (family, names) in zip(axes.flat, families.items(), strict=False):
        band, fam = tests.get("band_95"), tests.get("band_family")
        if band:
            ax.fill_between(band["z"], band["lower"], band["upper"], color="0.85", lw=0,
                            label="95% simultaneous band")
        if fam:
            ax.plot(fam["z"], fam["lower"], "k--", lw=0.7, label="Bonferroni band")
            ax.plot(fam["z"], fam["upper"], "k--", lw=0.7)
        for name in names:
            z, diff = ecdf_difference(ranks[name], n_draws)
            bad = name in failed
            ax.plot(z, diff, color="tab:red" if bad else "tab:blue", lw=1.4 if bad else 0.8,
                    alpha=1.0 if bad else 0.6, label=name if bad else None)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_title(f"{family} ({len(names)})", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("fractional rank", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("ECDF − uniform", fontsize=8)
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"SBC rank ECDF differences: N = {tests.get('n', 0)} fits, L = {n_draws} "
                 f"draws, {len(failed)} of {len(ranks)} quantities fail at family-wise "
                 f"α = {tests.get('alpha')}", fontsize=10)
    fig.tight_layout()
    return fig, axes
