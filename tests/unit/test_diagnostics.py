"""Convergence checks on synthetic draws with a known answer (deterministic, fixed seeds).

Failure budget on fresh seeds: for 4 × 1000 independent normal draws, rank-normalised split
R-hat had sd 0.00053 and maximum 1.0031, and bulk/tail ESS minimum 3105, over 2000 seeds
(2026-12-06); the bounds 0.99 < R-hat < 1.01 and ESS ≥ 400 are > 18 sds away (< 1e-9).
The failing cases (drift, a stuck chain, divergences) are far from their thresholds.
"""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pytest

from lanternpk.diagnostics import MIN_DRAWS, check_convergence
from lanternpk.estimands import _quantiles


def _idata(chains: int, draws: int, seed: int = 1, **extra: np.ndarray) -> az.InferenceData:
    rng = np.random.default_rng(seed)
    posterior = {"a": rng.normal(size=(chains, draws)), **extra}
    stats = {"diverging": np.zeros((chains, draws), bool),
             "energy": rng.normal(size=(chains, draws))}
    return az.from_dict(posterior=posterior, sample_stats=stats)


def test_independent_draws_pass():
    diag = check_convergence(_idata(4, 1000), ["a"])
    assert diag["passed"], diag
    assert 0.99 < diag["rhat_max"] < 1.01


def test_one_chain_gets_split_rhat_and_can_pass():
    """R-hat of one chain compares its halves: well mixed passes, a drifting chain fails."""
    diag = check_convergence(_idata(1, 2000), ["a"])
    assert diag["passed"], diag
    assert diag["rhat_max"] is not None
    drift = np.linspace(0.0, 5.0, 2000)[None, :] + np.random.default_rng(2).normal(size=(1, 2000))
    drifting = check_convergence(_idata(1, 2000, b=drift), ["a", "b"])
    assert drifting["rhat_max"] > 1.1
    assert not drifting["passed"] and not drifting["checks"]["rhat"]["passed"]


def test_non_finite_draw_fails_and_is_named():
    b = np.random.default_rng(3).normal(size=(4, 1000))
    b[2, 17] = np.nan
    diag = check_convergence(_idata(4, 1000, b=b), ["a", "b"])
    assert not diag["passed"]
    assert diag["nonfinite_parameters"] == ["b"]
    assert diag["checks"]["finite_draws"] == {"value": 1, "threshold": "== 0", "passed": False}


def test_constant_parameter_is_skipped_and_output_is_strict_json():
    diag = check_convergence(_idata(4, 1000, c=np.full((4, 1000), 2.5)), ["a", "c"])
    assert diag["passed"]
    json.dumps(diag, allow_nan=False)  # raises on NaN or inf


def test_uncomputable_value_is_none_and_fails():
    diag = check_convergence(_idata(4, 1000, c=np.full((4, 1000), 2.5)), ["c"])
    assert diag["rhat_max"] is None and not diag["checks"]["rhat"]["passed"]
    json.dumps(diag, allow_nan=False)


def test_too_few_draws_is_refused():
    with pytest.raises(ValueError, match=f"at least {MIN_DRAWS} draws"):
        check_convergence(_idata(2, MIN_DRAWS - 1), ["a"])


def test_grid_quantiles_are_grid_values_with_or_without_infinite_draws():
    days = np.arange(100.0)
    with_inf = np.append(days, np.inf)
    for draws in (days, with_inf):
        q = _quantiles(draws, on_grid=True)
        assert all(float(q[k]).is_integer() for k in ("q05", "median", "q95"))
    assert _quantiles(days, on_grid=True)["mean"] == pytest.approx(49.5)
    assert _quantiles(with_inf, on_grid=True)["mean"] is None
    assert _quantiles(np.full(100, np.inf), on_grid=True)["q05"] is None


@pytest.mark.parametrize(("check", "value", "shown"), [
    ("rhat", 1.0104, "1.011"), ("rhat", 1.01, "1.010"), ("rhat", 1.0067148, "1.007"),
    ("ess_bulk", 399.6, "399"), ("ess_bulk", 400.0, "400"), ("ess_tail", 1032.54, "1032"),
    ("ebfmi", 0.29996, "0.29"), ("ebfmi", 0.3, "0.30"), ("ebfmi", 0.57, "0.57"),
    ("divergences", 3, "3"), ("rhat", None, None)])
def test_a_shown_check_value_never_contradicts_its_verdict(check, value, shown):
    """Rounded to the nearest, R-hat 1.0104 read "1.010" next to FAIL (≤ 1.01) and a bulk
    ESS of 399.6 read "400" next to FAIL (≥ 400); values are now rounded away from the
    threshold."""
    from lanternpk.diagnostics import format_check_value

    assert format_check_value(check, value) == shown
