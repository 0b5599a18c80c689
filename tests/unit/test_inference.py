"""lanternpk.inference: numpyro and blackjax driven directly on PyMC's JAX log density.

sample_numpyro gives the same draws as pm.sample's numpyro path with less overhead; both
drivers sample a known posterior correctly and return what pm.sample returns.
"""

import inspect
import os
import subprocess
import sys
import warnings

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest

from lanternpk.errors import UsageError
from lanternpk.inference import (
    SamplerSettings,
    jax_log_density,
    jittered_initial_points,
    sample_blackjax,
    sample_numpyro,
)


def _numpyro(model, settings, chain_method="sequential"):
    return sample_numpyro(model, settings, progressbar=False, chain_method=chain_method)


def _blackjax(model, settings, chain_method="sequential"):
    return sample_blackjax(model, settings, chain_method=chain_method)


DRIVERS = pytest.mark.parametrize("driver", [_numpyro, _blackjax], ids=["numpyro", "blackjax"])


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
    """Same starting points, kernel and post-processing as pm.sample's numpyro path.

    Over a few draws the two agree to rounding; a longer run drifts apart (the flat
    parameter vector changes the order of floating-point operations, and NUTS trajectories
    amplify such differences), which the statistical test below covers instead.
    """
    model = _hierarchical_model()
    settings = SamplerSettings(chains=2, draws=6, tune=4, seed=11, target_accept=0.85)
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpyro: fewer devices than chains
        expected = pm.sample(draws=6, tune=4, chains=2, nuts_sampler="numpyro",
                             random_seed=11, target_accept=0.85, progressbar=False,
                             compute_convergence_checks=False,
                             nuts_sampler_kwargs={"chain_method": "sequential"})
        got = sample_numpyro(model, settings, progressbar=False, chain_method="sequential")
    for name in ("mu", "tau", "z", "theta"):
        np.testing.assert_allclose(got.posterior[name].values,
                                   expected.posterior[name].values, rtol=1e-9, atol=1e-9)
    assert got.posterior["theta"].dims == ("chain", "draw", "group")
    assert set(got.groups()) == set(expected.groups())
    np.testing.assert_array_equal(got.observed_data["y"], expected.observed_data["y"])
    assert list(got.posterior["group"].values) == ["a", "b", "c"]
    for stat in ("diverging", "n_steps", "tree_depth"):
        np.testing.assert_array_equal(got.sample_stats[stat].values,
                                      expected.sample_stats[stat].values)
    for stat in ("energy", "step_size"):
        np.testing.assert_allclose(got.sample_stats[stat].values,
                                   expected.sample_stats[stat].values, rtol=1e-9)
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
    (points,) = jittered_initial_points(model, jax_log_density(model), chains=8, seed=5,
                                       max_retries=50).values
    assert points.shape == (8, 3)
    assert (points < 0.5).all()
    assert len({tuple(p) for p in points}) == 8  # every chain starts elsewhere


def test_jittered_points_with_a_gradient_that_is_not_finite_are_drawn_again():
    """The density is finite everywhere; its gradient is NaN where a coordinate is < 0.3
    (∞ · 0 through the square root's kink), where NUTS could not start."""
    import jax

    with pm.Model() as model:
        x = pm.Normal("x", 0.0, 1.0, shape=3)
        pm.Potential("kink", pt.sum(pt.sqrt(pt.maximum(x - 0.3, 0.0))))
    logp = jax_log_density(model)
    assert not np.isfinite(jax.grad(logp)([np.array([0.1, 0.5, 0.6])])[0]).all()
    start = jittered_initial_points(model, logp, chains=4, seed=5, max_retries=200)
    (points,), (gradient,) = start.values, start.gradient
    assert (points > 0.3).all()
    assert np.isfinite(gradient).all() and np.isfinite(start.log_density).all()


def test_starting_points_carry_their_log_density_and_gradient():
    """What the sampler is handed at its start: the density and gradient at each chain's
    point, as the default-compiled JAX function gives them (to rounding: the check is
    compiled with RUN_ONCE_COMPILER_OPTIONS)."""
    import jax

    model = _hierarchical_model()
    logp = jax_log_density(model)
    start = jittered_initial_points(model, logp, chains=3, seed=2)
    for c in range(3):
        value, gradient = jax.jit(jax.value_and_grad(logp))([x[c] for x in start.values])
        np.testing.assert_allclose(start.log_density[c], value, rtol=1e-12)
        for got, expected in zip(start.gradient, gradient, strict=True):
            np.testing.assert_allclose(got[c], expected, rtol=1e-10, atol=1e-12)


def test_a_compile_option_xla_does_not_know_falls_back_to_the_defaults(monkeypatch):
    import jax

    import lanternpk.inference as inference

    unknown = {"xla_no_such_option": 0}
    with pytest.raises(jax.errors.JaxRuntimeError, match="compile option"):
        jax.jit(lambda x: 2.0 * x).lower(np.ones(3)).compile(compiler_options=unknown)
    monkeypatch.setattr(inference, "RUN_ONCE_COMPILER_OPTIONS", unknown)
    compiled = inference.compile_run_once(lambda x: 2.0 * x, np.ones(3))
    np.testing.assert_array_equal(compiled(np.arange(3.0)), [0.0, 2.0, 4.0])


@pytest.mark.parametrize("chains", [1, 3])
def test_starting_points_are_pm_samples(chains):
    """The jitter pm.sample draws for the same seed, one chain included (its seed is the
    seed itself; the driver drew a chain seed from it), and redraws of a point with zero
    density from that chain's own generator, as pymc.sampling.mcmc._init_jitter does."""
    from pymc.sampling.jax import _get_batched_jittered_initial_points

    with pm.Model() as model:
        x = pm.Normal("x", 0.0, 1.0, shape=3)
        pm.HalfNormal("s", 1.0)
        pm.Potential("cut", pt.switch(pt.all(x < 0.3), 0.0, -np.inf))  # forces redraws
    logp = jax_log_density(model)
    ours = jittered_initial_points(model, logp, chains=chains, seed=17, max_retries=50).values
    theirs = _get_batched_jittered_initial_points(model, chains, None, 17, logp_fn=logp,
                                                  jitter_max_retries=50)
    for got, expected in zip(ours, theirs, strict=True):  # theirs: no chain axis for one
        np.testing.assert_array_equal(got, np.reshape(expected, got.shape))


@DRIVERS
@pytest.mark.parametrize(("chains", "tune"), [(1, 20), (2, 20), (2, 0)])
def test_chain_counts(driver, chains, tune):
    settings = SamplerSettings(chains=chains, draws=20, tune=tune, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = driver(_hierarchical_model(), settings)
    assert idata.posterior.sizes["chain"] == chains
    assert idata.posterior.sizes["draw"] == 20
    assert idata.posterior["theta"].dims == ("chain", "draw", "group")
    for stat in ("diverging", "energy", "lp", "step_size", "acceptance_rate", "n_steps",
                 "tree_depth"):
        assert idata.sample_stats[stat].shape == (chains, 20), stat
    stats = idata.sample_stats
    # lp is the model's log density (Jacobian included) at the draw
    logp = _hierarchical_model().compile_logp()
    post = idata.posterior
    for c, d in [(0, 0), (chains - 1, 19)]:
        point = {"mu": post["mu"].values[c, d], "tau_log__": np.log(post["tau"].values[c, d]),
                 "z": post["z"].values[c, d]}
        np.testing.assert_allclose(stats["lp"].values[c, d], logp(point), rtol=1e-9)
    # a tree of depth j has 2**(j-1) to 2**j - 1 leapfrog steps
    depth, n_steps = stats["tree_depth"].values, stats["n_steps"].values
    assert ((2 ** (depth - 1) <= n_steps) & (n_steps <= 2**depth - 1)).all()
    step = stats["step_size"].values
    assert (step == step[:, :1]).all() and (step > 0).all()  # no adaptation while drawing


def test_blackjax_without_tuning_uses_unit_step_size():
    settings = SamplerSettings(chains=1, draws=5, tune=0, seed=2)
    idata = sample_blackjax(_hierarchical_model(), settings, chain_method="sequential")
    assert (idata.sample_stats["step_size"].values == 1.0).all()


_PARALLEL_SCRIPT = """
import numpy as np, jax, pymc as pm
from lanternpk.inference import SamplerSettings, sample_blackjax
{model_source}
assert jax.local_device_count() == 2, jax.local_device_count()
settings = SamplerSettings(chains=2, draws=30, tune=30, seed=5)
runs = [sample_blackjax(_hierarchical_model(), settings, chain_method=m).posterior["theta"].values
        for m in ("parallel", "sequential")]
np.testing.assert_allclose(runs[0], runs[1], rtol=1e-8, atol=1e-10)
print("same draws")
"""


def test_blackjax_parallel_chains_on_two_devices_give_the_sequential_draws(root):
    """pmap over two (forced) CPU devices: needs its own process, as XLA's device count is
    fixed when JAX starts."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    script = _PARALLEL_SCRIPT.format(model_source=inspect.getsource(_hierarchical_model))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "same draws" in done.stdout


_DEVICE_COUNT_SCRIPT = """
import jax, numpy as np, pymc as pm
from lanternpk.inference import jax_log_density
{model_source}
jax_log_density(_hierarchical_model())  # imports pymc.sampling.jax, which rewrites XLA_FLAGS
print("devices", jax.local_device_count())
"""


def test_a_chosen_device_count_survives_pymc_sampling_jax(root):
    """pymc.sampling.jax, on import, dropped a device count followed by other flags and forced
    100 devices; the count the user chose must be the one JAX starts with."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
           "--xla_cpu_enable_fast_math=false"}
    script = _DEVICE_COUNT_SCRIPT.format(model_source=inspect.getsource(_hierarchical_model))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "devices 2" in done.stdout, done.stdout


def test_blackjax_chains_do_not_depend_on_how_they_run():
    """Each chain has its own key: sequential and batched runs give the same draws (to
    rounding; parallel runs are checked in their own process above)."""
    model = _hierarchical_model()
    settings = SamplerSettings(chains=2, draws=30, tune=30, seed=5)
    runs = [sample_blackjax(model, settings, chain_method=method).posterior["theta"].values
            for method in ("sequential", "vectorized")]
    for other in runs[1:]:
        np.testing.assert_allclose(other, runs[0], rtol=1e-8, atol=1e-10)


@DRIVERS
def test_posterior_moments_match_a_known_posterior(driver):
    """Conjugate normal mean plus a HalfNormal with no data (posterior = prior, log transform).

    Failure budget: each posterior mean must lie within 4 Monte Carlo standard errors of the
    exact value (two-sided p ≈ 6e-5 per check, ≈ 1.3e-4 for both), and the posterior sd of
    mu within 10% (≈ 5 standard errors of an sd estimated from ~1000 effective draws);
    fixed seed; checked for each driver.
    """
    rng = np.random.default_rng(1)
    y = rng.normal(2.0, 1.0, size=20)
    prior_sd = 10.0
    post_var = 1.0 / (1.0 / prior_sd**2 + y.size)
    exact = {"mu": post_var * y.sum(), "x": np.sqrt(2.0 / np.pi)}
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, prior_sd)
        pm.HalfNormal("x", 1.0)
        pm.Normal("y", mu, 1.0, observed=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = driver(model, SamplerSettings(chains=2, draws=1000, tune=500, seed=7))
    mcse = az.mcse(idata, var_names=["mu", "x"])
    for name, value in exact.items():
        estimate = float(idata.posterior[name].mean())
        assert abs(estimate - value) < 4 * float(mcse[name]), (name, estimate, value)
    assert abs(float(idata.posterior["mu"].std()) - np.sqrt(post_var)) < 0.1 * np.sqrt(post_var)


def test_no_finite_starting_point_is_a_clear_error():
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, 1.0)
        pm.Potential("nowhere", pt.switch(x > 1e9, 0.0, -np.inf))
    with pytest.raises(UsageError, match="chain 0: no starting point with a finite log density"):
        jittered_initial_points(model, jax_log_density(model), chains=2, seed=1, max_retries=2)


def test_prior_draws_name_no_internal_variables_to_the_user(caplog):
    """`fit` printed PyMC's "Sampling: [first_pass_raw, loss_raw, ...]" after its summary."""
    import logging

    from lanternpk.inference import sample_prior

    with pm.Model() as model:
        raw = pm.Normal("raw", 0.0, 1.0)
        pm.Deterministic("scale", pt.exp(raw))
    caplog.set_level(logging.INFO, logger="pymc")
    prior = sample_prior(model, ["scale"], draws=20, seed=1)
    assert prior.prior["scale"].shape == (1, 20)
    assert not [r for r in caplog.records if r.getMessage().startswith("Sampling:")]
    assert logging.getLogger("pymc.sampling.forward").level == logging.NOTSET  # restored
