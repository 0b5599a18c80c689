"""lanternpk.inference.sample_numpyro: the same draws as pm.sample's numpyro path, less overhead."""

import warnings

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest

from lanternpk.inference import SamplerSettings, jittered_initial_points, sample_numpyro


def _hierarchical_model() -> pm.Model:
    """A small hierarchical normal model with a transformed (log) variable and dims."""
    rng = np.random.default_rng(0)
    y = rng.normal(1.0, 0.5, size=(3, 4))
    with pm.Model(coords={"group": ["a", "b", "c"]}) as model:
        mu = pm.Normal("mu", 0.0, 2.0)
        tau = pm.HalfNormal("tau", 1.0)
        z = pm.Normal("z", 0.0, 1.0, dims="group")
        theta = pm.Deterministic("theta", mu + tau * z, dims="group")
        pm.Normal("y", theta[:, None], 0.5, observed=y)
    return model


def test_same_draws_as_pm_sample_numpyro():
    model = _hierarchical_model()
    settings = SamplerSettings(chains=2, draws=60, tune=60, seed=11, target_accept=0.85)
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpyro: fewer devices than chains
        expected = pm.sample(draws=60, tune=60, chains=2, nuts_sampler="numpyro",
                             random_seed=11, target_accept=0.85, progressbar=False,
                             compute_convergence_checks=False,
                             nuts_sampler_kwargs={"chain_method": "sequential"})
        got = sample_numpyro(model, settings, progressbar=False, chain_method="sequential")
    for name in ("mu", "tau", "z", "theta"):
        np.testing.assert_allclose(got.posterior[name].values,
                                   expected.posterior[name].values, rtol=1e-12, atol=1e-12)
    assert got.posterior["theta"].dims == ("chain", "draw", "group")
    assert list(got.posterior["group"].values) == ["a", "b", "c"]
    for stat in ("diverging", "n_steps", "tree_depth", "energy", "step_size"):
        np.testing.assert_array_equal(got.sample_stats[stat].values,
                                      expected.sample_stats[stat].values)
    np.testing.assert_allclose(got.sample_stats["lp"].values,
                               [[model.compile_logp()({"mu": m, "tau_log__": np.log(t), "z": z})
                                 for m, t, z in zip(*(got.posterior[v].values[c]
                                                      for v in ("mu", "tau", "z")), strict=True)]
                                for c in range(2)], rtol=1e-10)


def test_jittered_points_with_infinite_density_are_drawn_again():
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, 1.0, shape=3)
        # zero density where any coordinate of the jittered point exceeds 0.5
        pm.Potential("cut", pt.switch(pt.all(x < 0.5), 0.0, -np.inf))
    from pymc.sampling.jax import get_jaxified_graph

    log_density = get_jaxified_graph(inputs=model.value_vars, outputs=[model.logp()])

    def logp(values):
        return log_density(*values)[0]

    (points,) = jittered_initial_points(model, logp, chains=8, seed=5, max_retries=50)
    assert points.shape == (8, 3)
    assert (points < 0.5).all()
    assert len({tuple(p) for p in points}) == 8  # every chain starts elsewhere


@pytest.mark.parametrize("chains", [1, 2])
def test_chain_counts(chains):
    settings = SamplerSettings(chains=chains, draws=20, tune=20, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = sample_numpyro(_hierarchical_model(), settings, progressbar=False,
                               chain_method="sequential")
    assert idata.posterior.sizes["chain"] == chains
    assert idata.posterior.sizes["draw"] == 20
    assert idata.sample_stats["diverging"].shape == (chains, 20)
