"""Checks of the posterior draws :mod:`lanternpk.predictive` reads (no simulation, no fit).

The observations of ``tests/fixtures/observations/valid.csv`` have no ``background`` column,
so spec ``muse_vs_msc`` estimates one background per region × modality group: ``lung/ex_vivo``,
``lung/in_vivo``, ``spinal_cord/ex_vivo``, ``whole_body/in_vivo``. Deterministic: no random
numbers, so no failure budget.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from lanternpk.data.load import load_observations
from lanternpk.errors import UsageError
from lanternpk.model import build_model, prepare_data
from lanternpk.predictive import parameter_draws, variable_names
from lanternpk.spec import load_spec

GROUPS = ["lung/ex_vivo", "lung/in_vivo", "spinal_cord/ex_vivo", "whole_body/in_vivo"]
DIM = "background_group"  # build_model's dim of log_background
OLD_DIM = "log_background_dim_0"  # the name ArviZ gave it in runs fit before it was named


@pytest.fixture(scope="module")
def setting(root):
    spec = load_spec(root / "models/muse_vs_msc.toml")
    obs = load_observations(root / "tests/fixtures/observations/valid.csv")
    data = prepare_data(spec, obs, source="valid.csv")
    assert data.background is None and data.background_groups == GROUPS
    return spec, obs, data


def _posterior(spec, data, groups, dim=DIM) -> xr.Dataset:
    """A 1-chain, 3-draw posterior; backgrounds 0, 1, 2, … (log photons/s) along ``groups``."""
    variables = {name: (("chain", "draw"), np.ones((1, 3)))
                 for name in variable_names(spec, data) if name != "log_background"}
    log_bg = np.broadcast_to(np.arange(len(groups), dtype=float), (1, 3, len(groups)))
    variables["log_background"] = (("chain", "draw", dim), log_bg)
    return xr.Dataset(variables, coords={dim: groups})


def test_the_model_labels_estimated_backgrounds_by_region_and_modality(setting):
    spec, _, data = setting
    model = build_model(spec, data)
    assert model.named_vars_to_dims["log_background"] == (DIM,)
    assert list(model.coords[DIM]) == GROUPS


def test_backgrounds_labelled_with_the_data_groups_are_read_in_order(setting):
    spec, _, data = setting
    params = parameter_draws(_posterior(spec, data, GROUPS), spec, data)
    np.testing.assert_array_equal(params["log_bg"], np.tile(np.arange(4.0), (3, 1)))


def test_backgrounds_of_other_region_modality_groups_are_refused(setting):
    """Same number of groups, one of them another region: named in the error."""
    spec, _, data = setting
    other = ["femur/ex_vivo", *GROUPS[1:]]
    with pytest.raises(UsageError, match=r"groups \['femur/ex_vivo', .*not the data's "
                                         r"\['lung/ex_vivo', "):
        parameter_draws(_posterior(spec, data, other), spec, data)


def test_backgrounds_of_the_same_groups_in_another_order_are_refused(setting):
    spec, _, data = setting
    with pytest.raises(UsageError, match=r"groups \['whole_body/in_vivo', "):
        parameter_draws(_posterior(spec, data, GROUPS[::-1]), spec, data)


def test_backgrounds_of_runs_without_labels_are_checked_by_number(setting):
    spec, _, data = setting
    params = parameter_draws(_posterior(spec, data, np.arange(4), OLD_DIM), spec, data)
    assert params["log_bg"].shape == (3, 4)
    with pytest.raises(UsageError, match=r"groups \(3 of them, unlabelled\), not the data's"):
        parameter_draws(_posterior(spec, data, np.arange(3), OLD_DIM), spec, data)


def test_estimated_background_and_standard_curve_priors_follow_the_spec(setting, root):
    """The model's log_background prior is Normal(log(median LOD of the group × the spec's
    background_lod_fraction median), its sigma), and calibration_sd the spec's half-normal;
    with the defaults that is the LOD / 2 and HalfNormal(0.5) hard-coded before."""
    import pymc as pm
    from scipy.stats import halfnorm, norm

    from lanternpk.data.load import load_calibration
    from lanternpk.spec import HalfNormal, LogNormal

    spec, _, data = setting
    calibration = load_calibration(root / "data/als_mouse/calibration.csv")
    median_lod = np.array([np.median(np.exp(data.log_lod[data.background_group == g]))
                           for g in range(len(GROUPS))])
    x = np.log(median_lod) + np.array([-1.0, 0.0, 0.5, 2.0])
    own = spec.model_copy(update={"measurement": spec.measurement.model_copy(update={
        "calibration_sd": HalfNormal(dist="halfnormal", sigma=0.2, units="sd", source="t"),
        "background_lod_fraction": LogNormal(dist="lognormal", median=0.3, sigma=0.5,
                                             units="fraction", source="t")})})
    # PyMC's normal and half-normal log densities differ from SciPy's by a constant 1.9e-9
    # (a rounded log √(2π)); a wrong location or scale would be off by > 1e-2
    for s, fraction, sigma, cal_sigma in ((spec, 0.5, 1.0, 0.5), (own, 0.3, 0.5, 0.2)):
        model = build_model(s, data, calibration)
        np.testing.assert_allclose(pm.logp(model["log_background"], x).eval(),
                                   norm.logpdf(x, np.log(median_lod * fraction), sigma),
                                   rtol=0, atol=1e-8)
        np.testing.assert_allclose(pm.logp(model["calibration_sd"], 0.3).eval(),
                                   halfnorm.logpdf(0.3, scale=cal_sigma), rtol=0, atol=1e-8)
