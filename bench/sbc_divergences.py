"""Which prior draws give an SBC fit divergences or a low effective sample size?

An SBC campaign (``lanternpk sbc``) keeps each fit's diagnostics but not the true values it
was simulated from. This script draws them again, from the campaign's own spec, design, seed
and block size (dataset i depends only on those and i; the flux of every redrawn dataset is
checked against the sha256 its fit record holds), and relates each true population
parameter to the fit's diagnostics over all fits:

- Spearman's rank correlation between the true value and the fit's min bulk ESS;
- a Mann–Whitney test of the true values of fits with divergences against those without
  (two-sided; with one test per parameter, the Bonferroni threshold for α = 0.01 is printed);
- for the parameter most associated with divergences, the fits in bins of its true value.

Run: ``python bench/sbc_divergences.py --campaign OUT`` where ``OUT`` is the ``--out`` of a
finished ``lanternpk sbc`` (its ``fits/`` directory is needed: ``bench/results/sbc`` holds
only the summary). Writes ``bench/results/sbc_divergences.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from fit import RESULTS, ROOT, _environment, _write_results  # bench/fit.py, beside this script
from scipy.stats import mannwhitneyu, spearmanr

from lanternpk import sbc
from lanternpk.spec import load_spec

ALPHA = 0.01
#: Not a parameter but a property of the simulated dataset, tested beside them.
CENSORED = "fraction of rows below LOD"


def campaign_truths(out: Path) -> tuple[dict, pd.DataFrame]:
    """The campaign's run record and, per finished fit, its true values and diagnostics."""
    run = json.loads((out / sbc.RUN_FILE).read_text(encoding="utf-8"))
    if run["block"] != sbc.BLOCK:
        raise SystemExit(f"{out}: block size {run['block']}, this lanternpk uses {sbc.BLOCK}")
    spec = load_spec(ROOT / run["spec_file"])
    obs = sbc.design_observations(sbc.load_design(ROOT / run["design_file"]))
    n = max(int(p.stem) for p in (out / sbc.FITS_DIR).glob("*.json")) + 1
    records = sbc.finished(out, n, run["key"])
    rows = {}
    for block in sorted({i // sbc.BLOCK for i in records}):
        for index, (flux, truth) in sbc.simulate_block(spec, obs, block,
                                                       run["settings"]["seed"]).items():
            if index not in records:
                continue
            record = records[index]
            if sbc.dataset_sha256(flux) != record["dataset_sha256"]:
                raise SystemExit(f"dataset {index}: redrawn flux differs from the campaign's "
                                 "(another lanternpk or library version?)")
            rows[index] = {**truth, CENSORED: float(np.mean(flux < obs["lod"].to_numpy())),
                           **{f"fit_{k}": v for k, v in record["diagnostics"].items()}}
    return run, pd.DataFrame.from_dict(rows, orient="index").sort_index()


def associations(table: pd.DataFrame) -> pd.DataFrame:
    """Per true population parameter, and the dataset's fraction of rows below the LOD:
    Spearman ρ with min bulk ESS, Mann–Whitney p (fits with divergences against the rest)."""
    divergent = table["fit_divergences"].to_numpy() > 0
    rows = []
    for name in table.columns:
        if ((name.split("[")[0] not in sbc.POPULATION and name != CENSORED)
                or table[name].nunique() < 2):
            continue
        x = table[name].to_numpy()
        rows.append({"parameter": name,
                     "spearman_ess": float(spearmanr(x, table["fit_ess_bulk_min"]).statistic),
                     "mannwhitney_p": (float(mannwhitneyu(x[divergent], x[~divergent]).pvalue)
                                       if 0 < divergent.sum() < divergent.size else np.nan),
                     "median_divergent": float(np.median(x[divergent])),
                     "median_other": float(np.median(x[~divergent]))})
    return pd.DataFrame(rows).sort_values("mannwhitney_p", ignore_index=True)


def binned(table: pd.DataFrame, name: str, edges: list[float]) -> pd.DataFrame:
    """Fits, fits with divergences, divergences and median min bulk ESS by bins of ``name``."""
    groups = table.groupby(pd.cut(table[name], edges), observed=False)
    return pd.DataFrame({"fits": groups.size(),
                         "with_divergences": groups["fit_divergences"].apply(
                             lambda d: int((d > 0).sum())),
                         "divergences": groups["fit_divergences"].sum().astype(int),
                         "median_min_bulk_ess": groups["fit_ess_bulk_min"].median()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", type=Path, required=True,
                        help="a finished lanternpk sbc --out directory (with fits/)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args()
    load_start = os.getloadavg()
    run, table = campaign_truths(args.campaign)
    found = associations(table)
    threshold = ALPHA / len(found)
    tops = list(dict.fromkeys([found["parameter"][0],
                               found["parameter"][found["spearman_ess"].abs().idxmax()]]))
    bins = {top: binned(table, top, [-np.inf, *np.quantile(table[top], [0.2, 0.4, 0.6, 0.8]),
                                     np.inf]) for top in tops}
    worst = table.nlargest(4, "fit_divergences")
    record = {**_environment(), "campaign": {k: run[k] for k in ("key", "lanternpk",
                                                                  "settings", "block")},
              "fits": len(table), "alpha": ALPHA, "per_test_threshold": threshold,
              "associations": found.to_dict("records"),
              "bins": {top: b.reset_index(drop=True).assign(bin=[str(i) for i in b.index])
                       .to_dict("records") for top, b in bins.items()},
              "worst_fits": worst[["fit_divergences", "fit_ess_bulk_min", *found["parameter"][:3]]]
              .reset_index(names="index").to_dict("records"),
              "load_average_start_end": [load_start, os.getloadavg()]}
    fmt = lambda x: f"{x:.3g}"  # noqa: E731
    lines = ["# SBC: which true values go with divergences and low ESS", "",
             f"`python bench/sbc_divergences.py --campaign {args.campaign}` on "
             f"{record['machine']['cpu']}, {record['date']}; campaign of lanternpk "
             f"{run['lanternpk']} (key {run['key'][:12]}…), {len(table)} fits, "
             f"{int((table['fit_divergences'] > 0).sum())} with divergences "
             f"({int(table['fit_divergences'].sum())} in all). Every dataset redrawn and "
             "checked against its record's sha256.", "",
             f"Per true population parameter, and the dataset's {CENSORED} ({len(found)} "
             "tests; Bonferroni threshold "
             f"{threshold:.1e} for α = {ALPHA}), the ten smallest Mann–Whitney p:", "",
             "| parameter | Spearman ρ with min bulk ESS | Mann–Whitney p (divergent vs not) "
             "| median, fits with divergences | median, others |", "|---|---|---|---|---|"]
    lines += [f"| {r.parameter} | {r.spearman_ess:+.2f} | {r.mannwhitney_p:.1e} | "
              f"{fmt(r.median_divergent)} | {fmt(r.median_other)} |"
              for r in found.head(10).itertuples()]
    for top, table_of in bins.items():
        lines += ["", f"Fits by quintile of `{top}` (the one most associated with "
                  + ("divergences" if top == found["parameter"][0] else "min bulk ESS") + "):",
                  "", f"| {top} | fits | with divergences | divergences | median min bulk ESS |",
                  "|---|---|---|---|---|"]
        lines += [f"| {interval.left:.3g} to {interval.right:.3g} | {r.fits} | "
                  f"{r.with_divergences} | {r.divergences} | {r.median_min_bulk_ess:.0f} |"
                  for interval, r in zip(table_of.index, table_of.itertuples(), strict=True)]
    lines += ["", "The four fits with the most divergences:", "",
              "| dataset | divergences | min bulk ESS | "
              + " | ".join(found["parameter"][:3]) + " |",
              "|---|---|---|" + "---|" * 3]
    lines += [f"| {i} | {int(r['fit_divergences'])} | {r['fit_ess_bulk_min']:.0f} | "
              + " | ".join(fmt(r[p]) for p in found["parameter"][:3]) + " |"
              for i, r in worst.iterrows()]
    _write_results(args.out, "sbc_divergences", record, lines)


if __name__ == "__main__":
    main()
