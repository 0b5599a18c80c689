"""Estimands from parameter draws: cell-type lookup, fixed ratios, detection-grid blocks and
estimated backgrounds (deterministic)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from lanternpk.estimands import estimand_draws, summarize_estimands

ORGANS = ["lung", "femur"]


def _group(first_pass: dict[str, list[float]], loss: dict[str, list[float]],
           release: dict[str, float], draws: int = 20) -> xr.Dataset:
    """A posterior-like group (1 chain, ``draws`` identical draws) over the given cell types."""
    cell_types = list(first_pass)

    def tile(values):
        return np.broadcast_to(np.asarray(values, float), (1, draws, *np.shape(values))).copy()

    dims = ("chain", "draw", "cell_type", "organ")
    return xr.Dataset(
        {"first_pass": (dims, tile([first_pass[c] for c in cell_types])),
         "loss": (dims, tile([loss[c] for c in cell_types])),
         "release": (dims[:3], tile([release[c] for c in cell_types])),
         "photons_per_cell": (dims[:2], tile(800.0)),
         "transmission_in_vivo": (("chain", "draw", "organ"), tile([3e-3, 3e-2]))},
        coords={"cell_type": cell_types, "organ": ORGANS})


def _design(cell_types: list[str]) -> dict:
    return {"cell_types": cell_types, "organs": ORGANS, "filter_index": 0,
            "explicit_blood": False, "dose_cells": {ct: 5e4 for ct in cell_types},
            "detection": [{"region": "lung", "modality": "in_vivo", "organs": ["lung"],
                           "lod": 1e4, "background": 5e3, "group": 0}]}


def test_a_study_of_one_cell_type_takes_that_cell_types_parameters():
    """MSC-only data under a Muse-and-MSC spec: the MSC slice, not the first one."""
    group = _group({"muse": [0.70, 0.03], "msc": [0.92, 0.02]},
                   {"muse": [0.35, 0.03], "msc": [0.69, 0.35]}, {"muse": 1.0, "msc": 0.05})
    out = estimand_draws(group, _design(["msc"]))
    assert {key[1] for key in out} == {"msc"}
    np.testing.assert_allclose(out[("first_pass_fraction", "msc", "lung", None, None)], 0.92)
    np.testing.assert_allclose(out[("half_life_d", "msc", "femur", None, None)],
                               np.log(2) / 0.35)
    both = estimand_draws(group, _design(["muse", "msc"]))
    for key, values in out.items():
        np.testing.assert_array_equal(values, both[key])


def test_a_ratio_the_model_fixes_at_one_has_no_probability_of_exceeding_one():
    """Shared first-pass fractions: lung homing ratio ≡ 1, so P(>1) is null, not 0."""
    shared = [0.8, 0.03]
    group = _group({"muse": shared, "msc": shared}, {"muse": [0.35, 0.03],
                   "msc": [0.69, 0.35]}, {"muse": 1.0, "msc": 0.05})
    _, contrasts = summarize_estimands(group, None, _design(["muse", "msc"]))
    by_key = {(c["name"], c["region"]): c for c in contrasts}
    lung = by_key[("homing_fraction_ratio", "lung")]
    assert lung["median"] == 1.0 and lung["p_gt_1"] is None
    half_life = by_key[("half_life_ratio", "lung")]  # (0.69 / 0.35 > 1 in every draw)
    assert half_life["p_gt_1"] == 1.0


def test_detection_times_do_not_depend_on_the_block_size(monkeypatch):
    """The detection-grid kinetics run in blocks of draws (to bound memory); blocks that do
    not divide the number of draws give the same draws, in the same order, as one block."""
    group = _group({"muse": [0.70, 0.03], "msc": [0.92, 0.02]},
                   {"muse": [0.35, 0.03], "msc": [0.69, 0.35]}, {"muse": 1.0, "msc": 0.05})
    rng = np.random.default_rng(3)  # a different loss rate in every draw
    group["loss"] = group["loss"] * rng.lognormal(0.0, 1.0, size=group["loss"].shape)
    design = _design(["muse", "msc"])
    monkeypatch.setattr("lanternpk.estimands.GRID_BLOCK_DRAWS", 10_000)
    whole = estimand_draws(group, design)
    monkeypatch.setattr("lanternpk.estimands.GRID_BLOCK_DRAWS", 7)
    blocked = estimand_draws(group, design)
    assert whole.keys() == blocked.keys()
    for key, values in whole.items():
        np.testing.assert_array_equal(blocked[key], values, err_msg=str(key))
    days = whole[("time_to_undetectable_d", "msc", "lung", None, "in_vivo")]
    assert days.shape == (20,) and np.unique(days).size > 5  # the draws differ


def test_an_estimated_background_enters_each_draw_of_the_detection_time():
    """Without a background in the design, draw d uses exp(log_background[d]) of the region's
    group: the same day as a design that gives that draw's background as a number."""
    group = _group({"muse": [0.70, 0.03]}, {"muse": [0.35, 0.03]}, {"muse": 1.0})
    log_bg = np.log(np.linspace(1e3, 9.5e3, 20))  # up to just below the LOD of 1e4
    group["log_background"] = (("chain", "draw", "background_group"),
                               np.stack([np.full(20, 50.0), log_bg], axis=-1)[None])
    design = _design(["muse"])
    design["detection"][0].update(background=None, group=1)
    key = ("time_to_undetectable_d", "muse", "lung", None, "in_vivo")
    days = estimand_draws(group, design)[key]
    for d in range(20):
        fixed = _design(["muse"])
        fixed["detection"][0]["background"] = float(np.exp(log_bg[d]))
        one_draw = group.isel(draw=[d]).drop_vars("log_background")
        assert days[d] == estimand_draws(one_draw, fixed)[key][0], d
    assert np.all(np.diff(days) >= 0) and days[-1] > days[0]  # more background, seen longer


def test_a_design_without_background_needs_background_draws():
    group = _group({"muse": [0.70, 0.03]}, {"muse": [0.35, 0.03]}, {"muse": 1.0})
    design = _design(["muse"])
    design["detection"][0]["background"] = None
    with pytest.raises(ValueError, match=r"lung/in_vivo.*log_background"):
        estimand_draws(group, design)


def _summary_of(posterior_days, prior_days, name="time_to_undetectable_d"):
    """Width ratio and flag of one estimand from given draws (summarize_estimands' helpers)."""
    from lanternpk.estimands import _barely, _width_ratio

    on_grid = name == "time_to_undetectable_d"
    ratio = _width_ratio(np.asarray(posterior_days, float),
                         None if prior_days is None else np.asarray(prior_days, float),
                         log=not on_grid, on_grid=on_grid)
    return ratio, _barely(ratio)


def test_detection_days_beyond_the_grid_count_as_censored_in_width_ratios():
    """Before: the infinite draws ("still detectable on day 365") were dropped, so 16
    finite posterior draws out of 4000 were compared with the prior's finite ones."""
    rng = np.random.default_rng(5)
    prior = np.where(rng.random(4000) < 0.8, np.inf, rng.integers(0, 366, 4000))
    posterior = np.where(rng.random(4000) < 0.996, np.inf, rng.integers(0, 366, 4000))
    ratio, barely = _summary_of(posterior, prior)
    assert ratio == 0.0 and barely is False  # the data put it beyond the horizon
    ratio, barely = _summary_of(prior[::-1], prior)
    assert ratio == 1.0 and barely is True


def test_a_few_draws_that_underflowed_to_zero_leave_the_width_defined():
    rng = np.random.default_rng(6)
    prior = rng.lognormal(-5.0, 3.0, 4000)
    prior[:3] = 0.0  # e.g. engrafted fractions of very fast loss rates, below float64
    posterior = rng.lognormal(-5.0, 0.3, 4000)
    ratio, barely = _summary_of(posterior, prior, name="engrafted_fraction")
    # true ratio 0.3 / 3 = 0.1; each 90% width of 4000 draws has a relative SE of ~1.4%,
    # so the ratio ~2%: ±0.006 is 3 SE (a fresh seed fails with probability ~0.3%)
    assert abs(ratio - 0.1) < 0.006 and barely is False


def test_without_prior_draws_barely_informed_is_unknown_not_false():
    ratio, barely = _summary_of(np.linspace(1.0, 2.0, 100), None, name="half_life_d")
    assert np.isnan(ratio) and barely is None


def test_statistics_that_are_not_finite_are_null_so_the_summary_stays_valid_json():
    """No loss from the femur in either cell type: its half-lives are infinite and their
    ratio is inf / inf = NaN. Before: the summary held NaN and Infinity, which JSON has not."""
    import json

    group = _group({"muse": [0.70, 0.03], "msc": [0.92, 0.02]},
                   {"muse": [0.35, 0.0], "msc": [0.69, 0.0]}, {"muse": 1.0, "msc": 0.05})
    with np.errstate(divide="ignore", invalid="ignore"):
        estimands, contrasts = summarize_estimands(group, None, _design(["muse", "msc"]))
    femur = [e for e in estimands if e["name"] == "half_life_d" and e["region"] == "femur"]
    assert len(femur) == 2
    assert all(e[k] is None for e in femur for k in ("mean", "median", "q05", "q95"))
    ratio = next(c for c in contrasts if c["name"] == "half_life_ratio"
                 and c["region"] == "femur")
    assert all(ratio[k] is None for k in ("median", "q05", "q95", "p_gt_1"))
    json.dumps({"estimands": estimands, "contrasts": contrasts}, allow_nan=False)


def test_contrasts_are_muse_over_msc_whatever_the_specs_order():
    """DESIGN.md: contrasts are Muse / MSC ratios. Before, a spec listing MSC first flipped
    every ratio and its P(ratio > 1)."""
    group = _group({"msc": [0.92, 0.02], "muse": [0.70, 0.03]},
                   {"msc": [0.69, 0.35], "muse": [0.35, 0.03]}, {"msc": 0.05, "muse": 1.0})
    _, contrasts = summarize_estimands(group, None, _design(["msc", "muse"]))
    assert {(c["numerator"], c["denominator"]) for c in contrasts} == {("muse", "msc")}
    femur = next(c for c in contrasts if c["name"] == "half_life_ratio"
                 and c["region"] == "femur")
    assert femur["median"] == pytest.approx(0.35 / 0.03) and femur["p_gt_1"] == 1.0
    _, others = summarize_estimands(group.assign_coords(cell_type=["b", "a"]), None,
                                    _design(["b", "a"]))
    assert {(c["numerator"], c["denominator"]) for c in others} == {("b", "a")}


def test_detection_times_beyond_the_grid_say_why_their_statistics_are_null():
    """A background at or above the LOD keeps the expected flux above it for ever: every
    draw is beyond the grid and each statistic null; `p_beyond_grid` says why."""
    group = _group({"muse": [0.70, 0.03]}, {"muse": [0.35, 0.03]}, {"muse": 1.0})
    group["loss"] = group["loss"] * np.linspace(0.5, 2.0, 20)[None, :, None, None]
    design = _design(["muse"])
    (seen,) = [e for e in summarize_estimands(group, None, design)[0]
               if e["name"] == "time_to_undetectable_d"]
    assert seen["p_beyond_grid"] == 0.0 and seen["mean"] is not None
    design["detection"][0]["background"] = 2e4  # above the LOD of 1e4
    estimands, _ = summarize_estimands(group, None, design)
    (never,) = [e for e in estimands if e["name"] == "time_to_undetectable_d"]
    assert never["p_beyond_grid"] == 1.0
    assert all(never[k] is None for k in ("mean", "median", "q05", "q95"))
    assert all("p_beyond_grid" not in e for e in estimands
               if e["name"] != "time_to_undetectable_d")


def test_an_organ_no_roi_sees_on_its_own_is_barely_informed_whatever_its_width():
    """The issue's example of a prior mistaken for a finding is "an organ that was never
    imaged". On the ALS study the spec's damaged organ is seen only within whole_body, and
    its Muse first-pass fraction (posterior/prior width 0.69, narrowed by the other organs'
    shares of the simplex) was not flagged. Here the femur is seen only within whole_body."""
    group = _group({"muse": [0.70, 0.03], "msc": [0.92, 0.02]},
                   {"muse": [0.35, 0.03], "msc": [0.69, 0.35]}, {"muse": 1.0, "msc": 0.05})
    design = _design(["muse", "msc"])
    design["detection"].append({"region": "whole_body", "modality": "in_vivo",
                                "organs": ["lung", "femur"], "lod": 1e5, "background": 5e4,
                                "group": 1})
    estimands, contrasts = summarize_estimands(group, None, design)  # no prior: ratio unknown
    flags = {(e["name"], e["region"]) for e in estimands if e["barely_informed"]}
    assert {("first_pass_fraction", "femur"), ("homing_fraction", "femur"),
            ("half_life_d", "femur"), ("engrafted_fraction", "femur")} == flags
    assert all(e["barely_informed"] is None for e in estimands if e["region"] != "femur")
    assert {c["name"] for c in contrasts if c["barely_informed"]} == {
        "homing_fraction_ratio", "half_life_ratio"}
    assert all(c["region"] == "femur" for c in contrasts if c["barely_informed"])
