"""Sampling: one entry point over NUTS implementations, with fixed seeds.

Default sampler: numpyro, driven directly by :func:`sample_numpyro` on PyMC's JAX log
density; blackjax is driven the same way (:func:`sample_blackjax`); nutpie and PyMC's own NUTS
go through ``pm.sample`` (see ARCHITECTURE.md for the measurements behind these choices).
JAX-based samplers run chains in parallel only when JAX sees at least as many devices as
chains; :func:`configure_jax_devices` sets that up and must run before JAX is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import arviz as az
import numpy as np
import pymc as pm
from pymc.backends.arviz import (
    coords_and_dims_for_inferencedata,
    find_constants,
    find_observations,
)
from pymc.initial_point import make_initial_point_fns_per_chain
from pymc.util import _get_seeds_per_chain, get_default_varnames, is_transformed_name

from lanternpk.errors import UsageError
from lanternpk.settings import SAMPLERS, SamplerSettings

_DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"


def configure_jax_devices(n_devices: int) -> None:
    """Let JAX's CPU backend expose ``n_devices`` devices (for parallel chains).

    Has effect only before JAX is first imported; later calls change nothing. A device
    count already in ``XLA_FLAGS`` (the user's) is kept.
    """
    if "jax" in sys.modules:
        return
    existing = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_COUNT_FLAG not in existing:
        os.environ["XLA_FLAGS"] = f"{existing} --{_DEVICE_COUNT_FLAG}={n_devices}".strip()


def _get_jaxified_graph():
    """``pymc.sampling.jax.get_jaxified_graph``, imported without losing a chosen device count.

    Importing ``pymc.sampling.jax`` (pymc 5.28) rewrites ``XLA_FLAGS``: it puts
    ``--xla_force_host_platform_device_count=100`` first and, when other flags follow a count
    already there, drops that count (its pattern runs to the last space), so a user's
    ``=2 --xla_other_flag`` became 100 devices. A count that was set (by the user or
    :func:`configure_jax_devices`) is put back with the flags around it; XLA reads them when
    JAX's backend starts, which is later.
    """
    before = os.environ.get("XLA_FLAGS", "")
    from pymc.sampling.jax import get_jaxified_graph

    if _DEVICE_COUNT_FLAG in before:
        os.environ["XLA_FLAGS"] = before
    return get_jaxified_graph


def sample(model: pm.Model, settings: SamplerSettings, *, progressbar: bool = True,
           chain_method: str = "parallel") -> az.InferenceData:
    """Draw posterior samples of ``model`` with ``settings``.

    Parameters
    ----------
    model : pymc.Model
        The model to sample (:func:`lanternpk.model.build_model`).
    settings : SamplerSettings
        Sampler (numpyro and blackjax driven directly, nutpie and pymc through
        ``pm.sample``), chains, draws, tuning iterations, seed and target acceptance.
        pymc runs its chains in processes started by a fork server, so a script that
        calls this with it needs the ``if __name__ == "__main__":`` guard.
    progressbar : bool
        Show a progress bar (blackjax has none).
    chain_method : {"parallel", "sequential", "vectorized"}
        How numpyro and blackjax run their chains (ignored by the other samplers);
        "parallel" needs a JAX device per chain (:func:`configure_jax_devices`) and runs
        them in turn otherwise.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` (constrained values of the free variables and Deterministics; no
        transformed value, a name ending in ``__``, whichever the sampler) and
        ``sample_stats`` groups, with ``observed_data`` and ``constant_data`` as the model
        has them.
    """
    if importlib.util.find_spec(settings.sampler) is None:
        raise UsageError(f"sampler '{settings.sampler}' is not installed; "
                         f"pip install 'lanternpk[samplers]' (or pip install {settings.sampler})")
    if settings.sampler == "numpyro":
        return sample_numpyro(model, settings, progressbar=progressbar,
                              chain_method=chain_method)
    if settings.sampler == "blackjax":
        return sample_blackjax(model, settings, chain_method=chain_method)
    # nutpie keeps no log-likelihood either, and warns that it ignores idata_kwargs. PyMC
    # starts its chain processes by os.fork on Linux, which can deadlock once JAX's threads
    # run in this process (JAX warns so): start them from a fork server instead.
    extra = ({"idata_kwargs": {"log_likelihood": False}, "mp_ctx": "forkserver"}
             if settings.sampler == "pymc" else {})
    with model:
        idata = pm.sample(
            draws=settings.draws,
            tune=settings.tune,
            chains=settings.chains,
            cores=min(settings.chains, os.cpu_count() or 1),
            nuts_sampler=SAMPLERS[settings.sampler],
            random_seed=settings.seed,
            target_accept=settings.target_accept,
            progressbar=progressbar,
            compute_convergence_checks=False,
            **extra,
        )
    # nutpie keeps the transformed values (names ending in "__") that PyMC leaves out
    coordinates = [name for name in idata.posterior.data_vars if is_transformed_name(name)]
    idata.posterior = idata.posterior.drop_vars(coordinates)
    return idata


def jax_log_density(model: pm.Model) -> Callable[[list], Any]:
    """The joint log density of ``model`` (Jacobians included) as a JAX function.

    Takes the list of value-variable arrays in ``model.value_vars`` order (unconstrained
    scale) and returns a scalar. Unlike ``pymc.sampling.jax.get_jaxified_logp``, whose
    ``negative_logp=True`` returns ``+logp``, the sign here is the one the name says.
    """
    graph = _get_jaxified_graph()(inputs=model.value_vars, outputs=[model.logp()])

    def logp(values):
        return graph(*values)[0]

    return logp


class StartingPoints(NamedTuple):
    """Jittered starting points, one per chain, with the log density and its gradient there.

    ``values`` and ``gradient`` hold one array per value variable, shaped ``(chains,
    *shape)`` (``model.value_vars`` order, unconstrained scale); ``log_density`` is
    ``(chains,)``.
    """

    values: list[np.ndarray]
    log_density: np.ndarray
    gradient: list[np.ndarray]


#: XLA options for a small program a fit runs once (the starting-point check): at XLA's
#: lowest optimisation level, without its fusion emitters, it compiles ~4× faster (ALS
#: study: the batched value and gradient in 0.31 instead of 1.21 s), and how fast it then
#: runs does not matter. The results agree with the default level's to rounding (gradient
#: 1.5e-13 relative). Not for the draws → posterior map: unfused, its intermediate arrays
#: grow with the number of draws (~0.05 s to gain there).
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                             "xla_cpu_use_fusion_emitters": False}


def compile_run_once(fn: Callable, *args):
    """``jax.jit(fn)`` compiled for ``args`` with :data:`RUN_ONCE_COMPILER_OPTIONS`.

    An XLA that no longer knows one of the options gets the default ones instead.
    """
    import jax

    lowered = jax.jit(fn).lower(*args)
    try:
        return lowered.compile(compiler_options=RUN_ONCE_COMPILER_OPTIONS)
    except jax.errors.JaxRuntimeError as err:
        if "compile option" not in str(err):
            raise
        return lowered.compile()


def jittered_initial_points(model: pm.Model, logp, *, chains: int, seed: int,
                            max_retries: int = 10) -> StartingPoints:
    """PyMC's starting points (uniform ±1 jitter on the unconstrained scale), one per chain.

    The same points as ``pm.sample`` (``pymc.sampling.mcmc._init_jitter``) draws for the same
    seed: per-chain seeds from ``pymc.util._get_seeds_per_chain`` (the seed itself for one
    chain, distinct seeds drawn from it for several), and a point drawn again, up to
    ``max_retries`` times, from a generator seeded with its chain's seed. ``pm.sample`` draws
    a point again where the log density is not finite; here also where its gradient is not,
    since NUTS cannot start there. The check is one program over all chains (``pm.sample``
    dispatches it op by op, ~2.5 s per chain here) compiled with
    :data:`RUN_ONCE_COMPILER_OPTIONS`, and hands the sampler the density and gradient at
    the starting points, so that its own program need not compute them (ALS study: 0.8 s
    less to compile).

    Parameters
    ----------
    model : pymc.Model
    logp : callable
        JAX function of the list of value-variable arrays (in ``model.value_vars`` order)
        returning the joint log density (:func:`jax_log_density`).
    chains : int
    seed : int
        Seeds the per-chain jitter.
    max_retries : int

    Returns
    -------
    StartingPoints

    Raises
    ------
    UsageError
        No starting point with a finite log density and gradient for some chain after
        ``max_retries`` new draws.
    """
    import jax

    fns = make_initial_point_fns_per_chain(model=model, overrides=None,
                                           jitter_rvs=set(model.free_RVs), chains=chains)
    names = [v.name for v in model.value_vars]
    seeds = [int(s) for s in _get_seeds_per_chain(seed, chains)]
    redraw = [np.random.default_rng(s) for s in seeds]  # as _init_jitter: one per chain
    points = [fn(s) for fn, s in zip(fns, seeds, strict=True)]
    values = _stack(points, names)
    value_and_gradient = compile_run_once(jax.vmap(jax.value_and_grad(logp)), values)
    for attempt in range(max_retries + 1):
        log_density, gradient = jax.tree.map(np.asarray, value_and_gradient(values))
        finite = np.isfinite(log_density)
        for g in gradient:
            finite &= np.isfinite(g).reshape(chains, -1).all(axis=1)
        if finite.all():
            return StartingPoints(values, log_density, gradient)
        if attempt < max_retries:
            points = [p if ok else fn(int(rng.integers(2**30, dtype=np.int64)))
                      for p, fn, rng, ok in zip(points, fns, redraw, finite, strict=True)]
            values = _stack(points, names)
    chain = int(np.flatnonzero(~finite)[0])
    raise UsageError(f"chain {chain}: no starting point with a finite log density and "
                     f"gradient after {max_retries} new jittered draws; the priors or data "
                     "give the model zero density near its initial point")


def _stack(points: list[dict], names: list[str]) -> list[np.ndarray]:
    return [np.stack([p[name] for p in points]) for name in names]


class _FlatProblem(NamedTuple):
    """The model as JAX samplers see it: one flat vector of unconstrained values."""

    log_density: Callable[[Any], Any]  # jitted, flat vector -> log density
    initial: Any  # (chains, d) jittered starting points
    unravel: Callable[[Any], list]  # flat vector -> value-variable arrays
    initial_log_density: Any  # (chains,) at the starting points
    initial_gradient: Any  # (chains, d) of the log density at the starting points


def _flat_problem(model: pm.Model, settings: SamplerSettings) -> _FlatProblem:
    """PyMC's JAX log density of one flat parameter vector, and the chains' starting points.

    One flat vector instead of PyMC's list of arrays makes a numpyro leapfrog step 54 → 32 µs
    (ALS study); the density is jitted because a sampler that evaluates it outside its own
    ``jit`` (numpyro at start-up) would otherwise compile each of ~450 operations separately.
    """
    import jax
    from jax.flatten_util import ravel_pytree

    logp = jax_log_density(model)
    start = jittered_initial_points(model, logp, chains=settings.chains, seed=settings.seed)
    unravel = ravel_pytree([x[0] for x in start.values])[1]

    def per_chain_flat(arrays):  # (chains, d)
        return jax.numpy.stack([ravel_pytree([x[c] for x in arrays])[0]
                                for c in range(settings.chains)])

    return _FlatProblem(jax.jit(lambda flat: logp(unravel(flat))),
                        per_chain_flat(start.values), unravel,
                        jax.numpy.asarray(start.log_density), per_chain_flat(start.gradient))


def _inference_data(model: pm.Model, flat_draws, unravel, sample_stats: dict, *,
                    sampling_s: float, settings: SamplerSettings, library: str
                    ) -> az.InferenceData:
    """What ``pm.sample`` returns, from flat unconstrained draws shaped (chain, draw, d)."""
    import jax

    outputs = list(get_default_varnames(model.unobserved_value_vars, include_transformed=False))
    constrain = _get_jaxified_graph()(inputs=model.value_vars, outputs=outputs)
    values = jax.jit(jax.vmap(jax.vmap(lambda flat: constrain(*unravel(flat)))))(flat_draws)
    coords, dims = coords_and_dims_for_inferencedata(model)
    attrs = {"sampling_time": sampling_s, "tuning_steps": settings.tune,
             "inference_library": library,
             "inference_library_version": importlib.metadata.version(library)}
    return az.from_dict(
        posterior={v.name: np.asarray(x) for v, x in zip(outputs, values, strict=True)},
        sample_stats=sample_stats, observed_data=find_observations(model),
        constant_data=find_constants(model), coords=coords, dims=dims, attrs=attrs)


def _chain_method(chain_method: str, chains: int) -> str:
    """``"parallel"`` needs a JAX device per chain; with fewer it runs chains in turn."""
    import jax

    if chain_method not in ("parallel", "sequential", "vectorized"):
        raise ValueError(f"unknown chain_method {chain_method!r}")
    if chain_method == "parallel" and (chains == 1 or jax.local_device_count() < chains):
        return "sequential"
    return chain_method


def sample_numpyro(model: pm.Model, settings: SamplerSettings, *, progressbar: bool = True,
                   chain_method: str = "parallel") -> az.InferenceData:
    """numpyro NUTS on PyMC's JAX log density, returning what ``pm.sample`` would.

    Same log density, jitter, NUTS settings and output as ``pm.sample(nuts_sampler=
    "numpyro")``, with less overhead (measured, ALS study, 2 cores; ARCHITECTURE.md, "Sampler
    choice"):
    ``pm.sample`` assigns PyMC step methods first (symbolic gradients, ~7 s) and checks the
    jittered starting points op by op (~10 s); numpyro here moves one flat parameter
    vector instead of PyMC's list of 16 arrays, which makes a leapfrog step 54 → 32 µs; and
    it starts from the log density and gradient that the starting-point check computed
    (:func:`jittered_initial_points`), so that its program holds one gradient, not two.

    Parameters
    ----------
    model : pymc.Model
    settings : SamplerSettings
        Chains, draws, tuning steps, seed and target acceptance rate.
    progressbar : bool
        numpyro's progress bar. With several chains it reports through host callbacks,
        and JAX keeps no program with host callbacks in its persistent compilation cache
        (:mod:`lanternpk.compile_cache`), so the NUTS program is then compiled every time.
    chain_method : {"parallel", "sequential", "vectorized"}
        numpyro's; "parallel" falls back to "sequential" with fewer JAX devices than chains.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` (constrained values and deterministics, with the model's dims),
        ``sample_stats`` (diverging, energy, lp, step_size, acceptance_rate, n_steps,
        tree_depth), ``observed_data`` and ``constant_data``.
    """
    import jax
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.util import ParamInfo

    problem = _flat_problem(model, settings)
    # the potential (−log density) and its gradient at the starting points, as checked there
    initial = ParamInfo(problem.initial, -problem.initial_log_density,
                        -problem.initial_gradient)
    potential = jax.jit(lambda flat: -problem.log_density(flat))
    mcmc = MCMC(NUTS(potential_fn=potential, target_accept_prob=settings.target_accept),
                num_warmup=settings.tune, num_samples=settings.draws,
                num_chains=settings.chains,
                chain_method=_chain_method(chain_method, settings.chains),
                progress_bar=progressbar)
    start = time.perf_counter()
    several = settings.chains > 1
    mcmc.run(jax.random.split(jax.random.PRNGKey(settings.seed), settings.chains)
             if several else jax.random.PRNGKey(settings.seed),
             init_params=initial if several else jax.tree.map(lambda x: x[0], initial),
             extra_fields=("num_steps", "potential_energy", "energy", "adapt_state.step_size",
                           "accept_prob", "diverging"))
    flat_draws = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))  # (chain, draw, .)
    sampling_s = time.perf_counter() - start
    return _inference_data(model, flat_draws, problem.unravel, _numpyro_stats(mcmc),
                           sampling_s=sampling_s, settings=settings, library="numpyro")


def _numpyro_stats(mcmc) -> dict[str, np.ndarray]:
    """numpyro's extra fields under ArviZ's sample_stats names (as PyMC names them)."""
    fields = mcmc.get_extra_fields(group_by_chain=True)
    n_steps = np.asarray(fields["num_steps"])
    return {"diverging": np.asarray(fields["diverging"]),
            "energy": np.asarray(fields["energy"]),
            "lp": -np.asarray(fields["potential_energy"]),
            "step_size": np.asarray(fields["adapt_state.step_size"]),
            "acceptance_rate": np.asarray(fields["accept_prob"]),
            "n_steps": n_steps,
            "tree_depth": np.log2(n_steps).astype(int) + 1}


def sample_blackjax(model: pm.Model, settings: SamplerSettings, *,
                    chain_method: str = "parallel") -> az.InferenceData:
    """blackjax NUTS (Stan's window adaptation, diagonal mass) on PyMC's JAX log density.

    Driven directly, as :func:`sample_numpyro` drives numpyro, from the same starting points
    (``pm.sample(nuts_sampler="blackjax")`` fails with blackjax 1.7.1: PyMC passes it an
    argument it no longer takes). Each chain runs ``settings.tune`` adaptation steps then
    ``settings.draws`` draws in one compiled program; chains run on one JAX device each
    (``"parallel"``), in turn, or batched (``"vectorized"``). No progress bar. With
    ``tune=0`` there is no adaptation at all: step size 1 and a unit mass matrix (numpyro
    would still search for a step size).

    Parameters
    ----------
    model : pymc.Model
    settings : SamplerSettings
        Chains, draws, tuning (adaptation) steps, seed and target acceptance rate.
    chain_method : {"parallel", "sequential", "vectorized"}
        "parallel" (``jax.pmap``) falls back to "sequential" with fewer JAX devices than
        chains.

    Returns
    -------
    arviz.InferenceData
        As :func:`sample_numpyro`; ``tree_depth`` is blackjax's number of trajectory
        doublings and ``step_size`` the adapted step size, constant within a chain.
    """
    import blackjax
    import jax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    problem = _flat_problem(model, settings)

    def one_chain(key, position):
        warm_key, draw_key = jax.random.split(key)
        if settings.tune > 0:
            warmup = blackjax.window_adaptation(
                blackjax.nuts, problem.log_density,
                target_acceptance_rate=settings.target_accept,
                adaptation_info_fn=get_filter_adapt_info_fn())  # keep no per-step warm-up trace
            (state, parameters), _ = warmup.run(warm_key, position, num_steps=settings.tune)
        else:  # no adaptation: unit step size and mass matrix
            parameters = {"step_size": 1.0,
                          "inverse_mass_matrix": jax.numpy.ones(position.shape[-1])}
            state = blackjax.nuts(problem.log_density, **parameters).init(position)
        step = blackjax.nuts(problem.log_density, **parameters).step

        def draw(state, key):
            state, info = step(key, state)
            return state, (state.position, state.logdensity, info.energy,
                           info.is_divergent, info.acceptance_rate,
                           info.num_integration_steps, info.num_trajectory_expansions)

        _, trace = jax.lax.scan(draw, state, jax.random.split(draw_key, settings.draws))
        return trace, jax.numpy.asarray(parameters["step_size"])

    keys = jax.random.split(jax.random.PRNGKey(settings.seed), settings.chains)
    method = _chain_method(chain_method, settings.chains)
    start = time.perf_counter()
    if method == "parallel":
        trace, step_size = jax.pmap(one_chain)(keys, problem.initial)
    elif method == "vectorized":
        trace, step_size = jax.jit(jax.vmap(one_chain))(keys, problem.initial)
    else:
        compiled = jax.jit(one_chain)
        per_chain = [compiled(k, x) for k, x in zip(keys, problem.initial, strict=True)]
        trace, step_size = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *per_chain)
    trace = jax.block_until_ready(trace)
    sampling_s = time.perf_counter() - start
    flat_draws, lp, energy, diverging, accept, n_steps, depth = (np.asarray(x) for x in trace)
    stats = {"diverging": diverging, "energy": energy, "lp": lp,
             "step_size": np.broadcast_to(np.asarray(step_size)[:, None], lp.shape).copy(),
             "acceptance_rate": accept, "n_steps": n_steps, "tree_depth": depth}
    return _inference_data(model, flat_draws, problem.unravel, stats, sampling_s=sampling_s,
                           settings=settings, library="blackjax")


def sample_prior(model: pm.Model, var_names: list[str], *, draws: int, seed: int
                 ) -> az.InferenceData:
    """Prior draws of ``var_names`` (used to tell findings from priors).

    The likelihood terms (including the censoring potential) play no part in a prior draw,
    so PyMC's warning that potentials are ignored does not apply and is silenced; so is its
    "Sampling: [first_pass_raw, ...]" notice, which names internal variables to the user.
    """
    forward = logging.getLogger("pymc.sampling.forward")
    level = forward.level
    forward.setLevel(logging.WARNING)
    try:
        with model, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The effect of Potentials",
                                    category=UserWarning)
            return pm.sample_prior_predictive(draws=draws, var_names=var_names,
                                              random_seed=seed)
    finally:
        forward.setLevel(level)
