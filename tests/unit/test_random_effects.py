"""The sign-expanded random effects of :func:`lanternpk.model.build_model`.

Each scale × standardised-effect pair (``sd``, ``z``) is sampled as free variables
(``u``, ``v``) with ``sd = |u|``, ``z = sign(u)·v`` and effect ``u·v``. Checked here: the
names that are diagnosed, the map to ``sd`` and ``z``, and that the log density sees
``(u, v)`` only through the priors ``u ~ Normal(0, σ)``, ``v ~ Normal(0, 1)`` and the product
``u·v``, and so is unchanged by a joint sign flip. Together these make the posterior of
``(sd, z)`` that of the HalfNormal(σ) × Normal(0, 1) model. Deterministic: no random numbers
beyond a fixed-seed test point, so no failure budget.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from lanternpk.data.load import load_calibration, load_observations
from lanternpk.model import (
    RANDOM_EFFECTS,
    SIGNED_SUFFIX,
    build_model,
    parameter_names,
    prepare_data,
)
from lanternpk.spec import load_spec

#: scale name -> (effects name, the spec's prior of the scale)
PAIRS = {
    "sd_first_pass": ("z_first_pass", lambda spec: spec.random_effects.first_pass),
    "sd_release": ("z_release", lambda spec: spec.random_effects.release),
    "sd_loss": ("z_loss", lambda spec: spec.random_effects.loss),
    "image_gain_sd": ("z_gain", lambda spec: spec.measurement.image_gain_sd),
}


@pytest.fixture(scope="module")
def setting(root):
    spec = load_spec(root / "models/muse_vs_msc.toml")
    data = prepare_data(spec, load_observations(root / "data/als_mouse/observations.csv"))
    model = build_model(spec, data, load_calibration(root / "data/als_mouse/calibration.csv"))
    return spec, model


@pytest.fixture(scope="module")
def point(setting):
    """A test point away from the initial one: every free value drawn from Normal(0, 0.5)."""
    _, model = setting
    rng = np.random.default_rng(20261206)
    return {name: rng.normal(0.0, 0.5, np.shape(value))
            for name, value in model.initial_point().items()}


def test_diagnosed_names_are_the_identified_scale_and_effects(setting):
    _, model = setting
    names = parameter_names(model)
    free = [rv.name for rv in model.free_RVs]
    assert {sd: z for sd, (z, _) in PAIRS.items()} == RANDOM_EFFECTS
    for sd, (z, _) in PAIRS.items():
        assert sd + SIGNED_SUFFIX in free and z + SIGNED_SUFFIX in free
        assert sd in names and z in names
        assert model.named_vars_to_dims.get(z) == model.named_vars_to_dims[z + SIGNED_SUFFIX]
    assert not [n for n in names if n.endswith(SIGNED_SUFFIX)]
    assert len(names) == len(free)
    assert set(names) - set(PAIRS) - {z for z, _ in PAIRS.values()} <= set(free)


def test_chains_on_mirror_signs_converge_on_the_identified_names(setting):
    """Two chains that sample the same posterior on opposite signs of the pair (u, v): the
    names diagnosed (sd = |u|, z = sign(u)·v) pass every R-hat and ESS check, while the
    sampling coordinates themselves would fail R-hat."""
    import arviz as az

    from lanternpk.diagnostics import check_convergence

    rng = np.random.default_rng(7)
    u = np.abs(rng.normal(1.0, 0.1, (2, 500))) * np.array([[1.0], [-1.0]])
    v = rng.normal(0.5, 0.2, (2, 500)) * np.sign(u)
    posterior = {"sd_loss" + SIGNED_SUFFIX: u, "z_loss" + SIGNED_SUFFIX: v,
                 "sd_loss": np.abs(u), "z_loss": np.sign(u) * v}
    stats = {"diverging": np.zeros((2, 500), bool), "energy": rng.normal(size=(2, 500))}
    idata = az.from_dict(posterior=posterior, sample_stats=stats)
    identified = check_convergence(idata, ["sd_loss", "z_loss"])
    assert identified["checks"]["rhat"]["passed"] and identified["checks"]["ess_bulk"]["passed"]
    assert not check_convergence(idata, list(posterior)[:2])["checks"]["rhat"]["passed"]


def test_scale_is_the_magnitude_and_effects_carry_the_sign(setting, point):
    _, model = setting
    outputs = model.replace_rvs_by_values(
        [model[name] for sd, (z, _) in PAIRS.items() for name in (sd, z)])
    values = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore",
                              random_seed=False)(point)
    for (sd, (z, _)), sd_value, z_value in zip(PAIRS.items(), values[::2], values[1::2],
                                               strict=True):
        u, v = point[sd + SIGNED_SUFFIX], point[z + SIGNED_SUFFIX]
        assert sd_value == pytest.approx(abs(u), abs=0)
        np.testing.assert_array_equal(z_value, np.sign(u) * v)


@pytest.mark.parametrize("scale", list(PAIRS))
def test_density_is_unchanged_by_a_joint_sign_flip(setting, point, scale):
    _, model = setting
    logp = model.compile_logp()
    effects = PAIRS[scale][0] + SIGNED_SUFFIX
    flipped = {**point, scale + SIGNED_SUFFIX: -point[scale + SIGNED_SUFFIX],
               effects: -point[effects]}
    assert logp(flipped) == pytest.approx(logp(point), rel=1e-13)


@pytest.mark.parametrize("scale", list(PAIRS))
def test_density_sees_the_pair_through_its_priors_and_product_alone(setting, point, scale):
    """Scaling u by 3 and v by 1/3 keeps u·v: the log density moves by exactly the change of
    the priors Normal(0, σ) (σ the spec's) and Normal(0, 1)."""
    spec, model = setting
    logp = model.compile_logp()
    effects, prior = PAIRS[scale]
    u_name, v_name = scale + SIGNED_SUFFIX, effects + SIGNED_SUFFIX
    u, v = point[u_name], point[v_name]
    moved = {**point, u_name: 3.0 * u, v_name: v / 3.0}
    sigma = prior(spec).sigma
    expected = (norm.logpdf(3.0 * u, scale=sigma) - norm.logpdf(u, scale=sigma)
                + norm.logpdf(v / 3.0).sum() - norm.logpdf(v).sum())
    # the rest of the density (~1e3 in size) cancels to rounding: 1e-8 absolute
    assert logp(moved) - logp(point) == pytest.approx(expected, abs=1e-8)
