"""The design constants that turn parameters into estimands (deterministic)."""

from __future__ import annotations

from lanternpk.data.load import load_observations
from lanternpk.fit import design_record
from lanternpk.model import prepare_data
from lanternpk.spec import load_spec


def test_dose_is_the_median_over_animals_not_over_rows(root):
    """Animals killed later have more rows; each animal counts once in the study dose."""
    spec = load_spec(root / "models/muse_vs_msc.toml")
    obs = load_observations(root / "data/als_mouse/observations.csv")
    muse = obs[obs["cell_type"] == "muse"]
    rows_per_animal = muse.groupby("animal").size().sort_values()
    few_rows = list(rows_per_animal.index[:5])  # 5 of 8 animals, the fewest rows
    assert rows_per_animal[few_rows].sum() < len(muse) / 2  # a row median would miss them
    obs.loc[obs["animal"].isin(few_rows), "dose_cells"] = 2e5
    design = design_record(spec, obs, prepare_data(spec, obs))
    assert design["dose_cells"]["muse"] == 2e5
    assert design["dose_cells"]["msc"] == 5e4
