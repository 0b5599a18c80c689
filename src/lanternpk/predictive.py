"""Posterior and prior predictive simulation of the whole generative model, in JAX.

One function of one parameter draw simulates every observation row of a study (the rows of a
:class:`~lanternpk.model.ModelData`: animals × times × regions × modalities as the data give
them), exactly as :func:`lanternpk.model.build_model` defines the model:

* kinetics: animal parameters from the population values and the non-centred random effects
  (first-pass log-ratios ``eta + sd_first_pass z``, ``log r + sd_release z``,
  ``log k + sd_loss z``), live cells per organ at each imaging session from the exact closed
  form (:func:`lanternpk.solver.closed_form.organ_cells` with ``xp=jax.numpy``) times the dose;
* measurement: ``mu = log(photons_per_cell × Σ_j w_j T_j × cells_j × image gain + background)``
  (photons/s), with the image gain ``exp(image_gain_sd × z_gain)`` shared by an image's ROIs;
* residual: ``log flux = mu + residual_sd × ε``, ``ε ~ Normal(0, 1)``;
* censoring: a simulated value is *below LOD* when ``flux < lod`` of its row.

The simulator is two ``jax.jit``-compiled programs run one after the other on each chunk
(:func:`_session_cells`, live cells per imaging session, then :func:`_measure`, every row),
vectorised over posterior draws (batched by hand, draws as the minor axis of the row-level
work; random numbers ``jax.vmap``-ed over one key per draw); draws are processed in chunks
(the last padded to the same chunk size, so each program is compiled once) to bound device
memory. Everything runs in float64 (x64 is enabled locally, around each call), on
the device chosen by :func:`resolve_device` (a GPU when JAX sees one under ``"auto"``). Random
numbers come from one key per draw, split from ``seed``: results do not depend on the chunk
size.

Modes
-----
``"same_animals"``
    posterior predictive of the observed animals and images: each draw uses its own
    random effects ``z_*`` and image gains ``z_gain``.
``"new_animals"``
    posterior predictive of new animals imaged in new images with the same design: the random
    effects and image gains are drawn afresh from ``Normal(0, 1)`` (scaled by each draw's sds).
``"prior"``
    prior predictive: parameters drawn from the spec's priors with PyMC
    (``pm.sample_prior_predictive`` on :func:`~lanternpk.model.build_model`), then pushed
    through the same simulator (for simulation-based calibration).

With ``with_observed=True`` (default in ``"same_animals"`` mode) each draw also gives, for
the observed data, the pointwise log-likelihood of the model (``log Normal(log flux | mu,
residual_sd)`` for a detected value, ``log Φ((log lod − mu) / residual_sd)`` for a censored
one: the M3 likelihood of :func:`~lanternpk.model.build_model`) and the conditional CDF
``Φ((log y − mu) / residual_sd)`` at the observed value (at the LOD for a censored row), from
which :mod:`lanternpk.ppc` computes PIT values and LOO-PIT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc, log_ndtr

from lanternpk.errors import UsageError
from lanternpk.model import ModelData
from lanternpk.solver.closed_form import organ_cells
from lanternpk.spec import ModelSpec

#: Simulation modes (see the module docstring).
MODES = ("same_animals", "new_animals", "prior")
#: Values of ``--device``.
DEVICES = ("auto", "cpu", "gpu")
#: Default bound on draws × max(rows, sessions) × organs per chunk (float64 elements; 64 MiB
#: per intermediate array).
DEFAULT_CHUNK_ELEMENTS = 2**23

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)

#: Posterior/prior variables the simulator reads: name -> (key, take the log?).
_POPULATION = {
    "first_pass_logratio": ("eta", False),
    "release": ("log_release", True),
    "loss": ("log_loss", True),
    "sd_first_pass": ("sd_fp", False),
    "sd_release": ("sd_rel", False),
    "sd_loss": ("sd_loss", False),
    "log_photons_per_cell": ("log_ppc", False),
    "transmission_in_vivo": ("log_t_in", True),
    "transmission_ex_vivo": ("log_t_ex", True),
    "image_gain_sd": ("sd_gain", False),
    "residual_sd": ("sigma", False),
}
#: Standardised random effects and image gains (used unless drawn afresh).
_EFFECTS = {"z_first_pass": "z_fp", "z_release": "z_rel", "z_loss": "z_loss", "z_gain": "z_gain"}


# --- devices ----------------------------------------------------------------------------------

def resolve_device(device: str = "auto") -> jax.Device:
    """The JAX device to simulate on.

    Parameters
    ----------
    device : {"auto", "cpu", "gpu"}
        ``"auto"``: the first GPU if ``jax.devices("gpu")`` finds one, else the CPU.

    Raises
    ------
    UsageError
        An unknown name, or ``"gpu"`` when JAX sees no GPU.
    """
    if device not in DEVICES:
        raise UsageError(f"--device must be one of {list(DEVICES)}, got {device!r}")
    if device == "cpu":
        return jax.devices("cpu")[0]
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if gpus:
        return gpus[0]
    if device == "gpu":
        raise UsageError(
            "--device gpu: JAX sees no GPU (default backend: "
            f"{jax.default_backend()}); install a CUDA build of JAX "
            "(pip install 'lanternpk[gpu]') or use --device auto or cpu")
    return jax.devices("cpu")[0]


# --- parameters -------------------------------------------------------------------------------

def variable_names(spec: ModelSpec, data: ModelData, mode: str = "same_animals") -> list[str]:
    """Names of the posterior (or prior) variables the simulator needs.

    Parameters
    ----------
    spec : ModelSpec
        The model spec of the run.
    data : ModelData
        The prepared observations.
    mode : str
        One of :data:`MODES`; ``"new_animals"`` needs no ``z_*`` effects.
    """
    _check_mode(mode)
    names = list(_POPULATION)
    if spec.explicit_blood:
        names.append("blood_efflux")
    if data.background is None:
        names.append("log_background")
    if mode != "new_animals":
        names += list(_EFFECTS)
    return names


def thin_indices(n_total: int, draws: int | None) -> np.ndarray:
    """Evenly spaced indices of ``draws`` out of ``n_total`` stacked draws (all when None).

    Raises
    ------
    UsageError
        ``draws`` < 1.
    """
    if draws is None or draws >= n_total:
        return np.arange(n_total)
    if draws < 1:
        raise UsageError(f"--draws must be at least 1, got {draws}")
    return np.unique(np.round(np.linspace(0, n_total - 1, draws)).astype(int))


def chains_kept(group, draw_index: np.ndarray) -> int:
    """How many chains the kept draws still form, for relative efficiencies: all of the
    group's chains when every draw was kept (stacked chain-major), else 1 (thinned draws)."""
    chains, per_chain = (int(group.sizes[d]) for d in ("chain", "draw"))
    return chains if np.array_equal(draw_index, np.arange(chains * per_chain)) else 1


def parameter_draws(group, spec: ModelSpec, data: ModelData, *, mode: str = "same_animals",
                    draws: int | None = None) -> dict[str, np.ndarray]:
    """Stacked parameter draws, ready for :func:`simulate`.

    Parameters
    ----------
    group : xarray.Dataset
        A posterior (or prior) group with dims ``(chain, draw, ...)``.
    spec, data
        The run's spec and prepared observations.
    mode : str
        One of :data:`MODES`.
    draws : int, optional
        Keep this many evenly spaced draws of the stacked chains (default: all).

    Returns
    -------
    dict
        Arrays with a leading draw axis: ``eta`` (log-ratios), ``log_release``,
        ``log_loss`` (log 1/day), ``sd_*``, ``log_ppc`` (log photons/s per cell),
        ``log_t_in``/``log_t_ex`` (log transmission), ``sd_gain``, ``sigma`` (sd of log
        flux), optionally ``log_q`` (log 1/day), ``log_bg`` (log photons/s) and the
        standardised effects ``z_fp``, ``z_rel``, ``z_loss``, ``z_gain``; and
        ``draw_index`` (the kept indices into the stacked draws).

    Raises
    ------
    UsageError
        A variable is missing, (``same_animals``) the group's animals or images are not
        those of ``data``, or its estimated backgrounds are not those of ``data``'s region ×
        modality groups (by label, or by number for runs without the ``background_group``
        coordinate).
    """
    names = variable_names(spec, data, mode)
    missing = [n for n in names if n not in group]
    if missing:
        raise UsageError(f"the posterior lacks {missing}; was it fit with spec {spec.name}?")
    first = group[names[0]]
    n_total = int(np.prod(first.shape[:2]))
    index = thin_indices(n_total, draws)
    if mode != "new_animals":
        _check_coordinate(group["z_first_pass"], "animal", data.animals)
        _check_coordinate(group["z_gain"], "image", data.images)
    if "log_background" in names:
        _check_background_groups(group["log_background"], data.background_groups)
    out: dict[str, np.ndarray] = {"draw_index": index}
    for name in names:
        values = np.asarray(group[name].values, dtype=float)
        values = values.reshape(n_total, *values.shape[2:])[index]
        if name in _POPULATION:
            key, take_log = _POPULATION[name]
            out[key] = np.log(values) if take_log else values
        elif name in _EFFECTS:
            out[_EFFECTS[name]] = values
        elif name == "blood_efflux":
            out["log_q"] = np.log(values)
        else:
            out["log_bg"] = values
    return out


def _check_coordinate(variable, dim: str, expected: list[str]) -> None:
    if dim not in variable.coords:
        return
    found = [str(v) for v in variable.coords[dim].values]
    if found != list(expected):
        raise UsageError(f"the posterior's {dim}s ({len(found)}) are not those of the data "
                         f"({len(expected)}); 'same animals' needs the data the run was fit to")


def _check_background_groups(variable, expected: list[str]) -> None:
    """Refuse backgrounds estimated for other region × modality groups than the data's.

    By label where the posterior has them (dim ``background_group``, runs fit since
    2026-12-02), else by number.
    """
    dim = variable.dims[-1]
    found = ([str(v) for v in variable.coords[dim].values] if dim == "background_group"
             else None)
    if found == list(expected) or (found is None and variable.shape[-1] == len(expected)):
        return
    what = found if found is not None else f"({variable.shape[-1]} of them, unlabelled)"
    raise UsageError(f"the posterior's estimated backgrounds are for region × modality "
                     f"groups {what}, not the data's {list(expected)}; was the run fit to "
                     "these data?")


# --- the simulator ----------------------------------------------------------------------------

class _Static(NamedTuple):
    """Shapes and switches fixed at compile time."""

    filter_index: int
    n_organs: int
    n_animals: int
    n_images: int
    explicit_blood: bool
    estimated_background: bool
    fresh_effects: bool
    with_observed: bool


def _constants(data: ModelData) -> dict[str, np.ndarray]:
    consts = {
        "cell_type_of_animal": np.asarray(data.cell_type_of_animal, dtype=np.int32),
        "session_animal": np.asarray(data.session_animal, dtype=np.int32),
        "session_time_d": np.asarray(data.session_time_d, dtype=float),
        "dose_cells": np.asarray(data.dose_cells, dtype=float),
        "row_session": np.asarray(data.row_session, dtype=np.int32),
        "row_image": np.asarray(data.row_image, dtype=np.int32),
        "in_vivo_weights": np.asarray(data.in_vivo_weights, dtype=float),
        "ex_vivo_weights": np.asarray(data.ex_vivo_weights, dtype=float),
        "log_lod": np.asarray(data.log_lod, dtype=float),
        "log_flux": np.asarray(data.log_flux, dtype=float),
        "censored": np.asarray(data.censored, dtype=bool),
        "censored_rows": np.flatnonzero(data.censored).astype(np.int32),
    }
    if data.background is not None:
        consts["background"] = np.asarray(data.background, dtype=float)
    else:
        consts["background_group"] = np.asarray(data.background_group, dtype=np.int32)
    return consts


def _normal(keys, shape: tuple[int, ...]):
    """One standard normal array of ``shape`` per key: (len(keys), *shape)."""
    return jax.vmap(lambda k: jax.random.normal(k, shape))(keys)


def _simulate_chunk(p: dict, keys, c: dict, static: _Static) -> dict:
    """A chunk of parameter draws → every row: log flux, below LOD (and observed-data terms).

    Two compiled programs, so that the live cells are computed once per imaging session and
    stored: in one program XLA fused the kinetics into the per-row gather and recomputed
    them for every ROI and organ (5× the sessions), which took ~70% of the time (2-core CPU;
    bench/results/ppc.md). Each draw's random numbers come from its own key, so results do
    not depend on the chunk size.
    """
    cells, z_gain, k_noise = _session_cells(p, keys, c, static)
    return _measure(p, cells, z_gain, k_noise, c, static)


@partial(jax.jit, static_argnames=("static",))
def _session_cells(p: dict, keys, c: dict, static: _Static):
    """Live cells per organ and imaging session, and the image gains' effects.

    Returns
    -------
    cells : (organs, sessions, draws)
        Live cells (the dose times the fraction of :func:`organ_cells`).
    z_gain : (draws, images)
        Standardised image gains (the posterior's, or fresh ones for new animals).
    k_noise : (draws,) keys
        Keys of the residual noise.
    """
    split = jax.vmap(lambda k: jax.random.split(k, 5))(keys)
    k_noise, k_fp, k_rel, k_loss, k_gain = (split[:, i] for i in range(5))
    n_a, n_o = static.n_animals, static.n_organs
    if static.fresh_effects:
        z_fp = _normal(k_fp, (n_a, n_o))
        z_rel = _normal(k_rel, (n_a,))
        z_loss = _normal(k_loss, (n_a, n_o))
        z_gain = _normal(k_gain, (static.n_images,))
    else:
        z_fp, z_rel, z_loss, z_gain = p["z_fp"], p["z_rel"], p["z_loss"], p["z_gain"]
    ct = c["cell_type_of_animal"]
    expo = jnp.exp(p["eta"][:, ct] + p["sd_fp"][:, None, None] * z_fp)
    f_a = expo / (1.0 + expo.sum(-1, keepdims=True))
    r_a = jnp.exp(p["log_release"][:, ct] + p["sd_rel"][:, None] * z_rel)
    k_a = jnp.exp(p["log_loss"][:, ct] + p["sd_loss"][:, None, None] * z_loss)
    sa = c["session_animal"]
    q = jnp.exp(p["log_q"])[:, None] * jnp.ones((1, sa.shape[0])) if static.explicit_blood \
        else None
    cells = organ_cells(f_a[:, sa], r_a[:, sa], k_a[:, sa], c["session_time_d"][:, None],
                        filter_index=static.filter_index, n_organs=n_o, blood_efflux=q,
                        xp=jnp)[:, :, 0, :] * c["dose_cells"][sa][None, :, None]
    return jnp.transpose(cells, (2, 1, 0)), z_gain, k_noise


@partial(jax.jit, static_argnames=("static",))
def _measure(p: dict, cells, z_gain, k_noise, c: dict, static: _Static) -> dict:
    """Every row's simulated log flux from the session cells (see :func:`_session_cells`).

    Written batched by hand rather than with ``vmap``: the row-level work (gathering each
    row's session and image, the sum over organs, the log) runs with draws as the minor
    axis, ``(rows, draws)``, one organ at a time, so that gathers move contiguous blocks
    (gathering ``(…, sessions, organs)`` blocks with organs minor, as ``vmap`` does, was ~20×
    slower on a 2-core CPU).
    """
    t_in = jnp.exp(p["log_t_in"])
    t_ex = jnp.exp(p["log_t_ex"])
    rs = c["row_session"]
    light = 0.0
    for o in range(static.n_organs):
        seen = (c["in_vivo_weights"][:, o, None] * t_in[None, :, o]
                + c["ex_vivo_weights"][:, o, None] * t_ex[None, :, o])
        light = light + seen * cells[o][rs]
    gain = jnp.exp(p["log_ppc"][None, :] + p["sd_gain"][None, :] * z_gain.T)  # (images, draws)
    light = light * gain[c["row_image"]]
    if static.estimated_background:
        background = jnp.exp(p["log_bg"]).T[c["background_group"]]
    else:
        background = c["background"][:, None]
    mu = jnp.log(light + background).T  # (draws, rows)
    sigma = p["sigma"][:, None]
    log_flux = mu + sigma * _normal(k_noise, (mu.shape[1],))
    out = {"log_flux": log_flux, "below_lod": log_flux < c["log_lod"][None, :]}
    if static.with_observed:
        target = jnp.where(c["censored"], c["log_lod"], c["log_flux"])[None, :]
        z = (target - mu) / sigma
        # Φ(z) as erfc: the same values as jax.scipy.special.ndtr (max abs difference from
        # scipy's ndtr 2.2e-16 on |z| ≤ 40, as ndtr's), at a sixth of its cost on CPU
        out["cdf"] = 0.5 * erfc(-z * _SQRT_HALF)
        log_lik = -0.5 * z * z - jnp.log(sigma) - _HALF_LOG_2PI
        censored = c["censored_rows"]  # log Φ only where needed: it costs 15× the density
        if censored.size:
            log_lik = log_lik.at[:, censored].set(log_ndtr(z[:, censored]))
        out["log_lik"] = log_lik
    return out


@dataclass(frozen=True)
class PredictiveDraws:
    """Simulated observations, one row per parameter draw.

    Attributes
    ----------
    mode : str
        One of :data:`MODES`.
    log_flux : ndarray, shape (draws, rows)
        Simulated log flux, log photons/s, before censoring.
    below_lod : ndarray of bool, shape (draws, rows)
        Whether the simulated flux is below the row's LOD (would be reported as censored).
    log_lik : ndarray, shape (draws, rows), or None
        Pointwise log-likelihood of the observed data (log density of log flux for a
        detected value, log P(below LOD) for a censored one).
    cdf : ndarray, shape (draws, rows), or None
        Conditional CDF of the observed value (of the LOD for a censored row) given the draw.
    draw_index : ndarray of int, shape (draws,)
        Indices of the parameter draws used, into the stacked (chain × draw) source.
    seed : int
        Seed of the simulation's random numbers.
    device : str
        The JAX device it ran on.
    """

    mode: str
    log_flux: np.ndarray
    below_lod: np.ndarray
    log_lik: np.ndarray | None
    cdf: np.ndarray | None
    draw_index: np.ndarray
    seed: int
    device: str

    @property
    def flux(self) -> np.ndarray:
        """Simulated flux, photons/s, shape (draws, rows)."""
        return np.exp(self.log_flux)


def chunk_size(data: ModelData, spec: ModelSpec, *,
               max_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Draws per chunk so that draws × max(rows, sessions) × organs ≤ ``max_elements``."""
    width = max(data.log_flux.size, len(data.session_time_d), 1) * len(spec.organs)
    return max(1, max_elements // width)


def iter_simulate(params: dict[str, np.ndarray], spec: ModelSpec, data: ModelData, *,
                  mode: str, seed: int, device: str | jax.Device = "auto",
                  chunk_draws: int | None = None, with_observed: bool | None = None
                  ) -> Iterator[tuple[slice, dict]]:
    """Simulate chunk by chunk; yield ``(draw slice, device arrays)``.

    The arrays (``log_flux``, ``below_lod`` and, with ``with_observed``, ``log_lik``,
    ``cdf``; shape (chunk, rows)) stay on the device, so a caller can reduce them there
    (or copy them with ``numpy.asarray``). Parameters are those of :func:`simulate`.
    """
    _check_mode(mode)
    if with_observed is None:
        with_observed = mode == "same_animals"
    dev = resolve_device(device) if isinstance(device, str) else device
    n_draws = len(params["sigma"])
    chunk = chunk_draws or chunk_size(data, spec)
    chunk = max(1, min(chunk, n_draws))
    static = _Static(
        filter_index=spec.filter_index, n_organs=len(spec.organs),
        n_animals=len(data.cell_type_of_animal), n_images=len(data.images),
        explicit_blood=bool(spec.explicit_blood),
        estimated_background=data.background is None,
        fresh_effects=mode == "new_animals", with_observed=bool(with_observed))
    wanted = [key for _, (key, _) in _POPULATION.items()]
    if static.explicit_blood:
        wanted.append("log_q")
    if static.estimated_background:
        wanted.append("log_bg")
    if not static.fresh_effects:
        wanted += list(_EFFECTS.values())
    with jax.enable_x64(True):
        consts = jax.device_put(_constants(data), dev)
        keys = jax.random.split(jax.random.key(seed), n_draws)
    for start in range(0, n_draws, chunk):
        stop = min(start + chunk, n_draws)
        take = np.minimum(np.arange(start, start + chunk), stop - 1)  # pad with the last draw
        with jax.enable_x64(True):
            chunk_params = jax.device_put(
                {k: np.asarray(params[k], dtype=float)[take] for k in wanted}, dev)
            chunk_keys = jax.device_put(keys[take], dev)
            out = _simulate_chunk(chunk_params, chunk_keys, consts, static)
        n = stop - start
        yield slice(start, stop), {k: v[:n] if n < chunk else v for k, v in out.items()}


def simulate(params: dict[str, np.ndarray], spec: ModelSpec, data: ModelData, *,
             mode: str, seed: int, device: str | jax.Device = "auto",
             chunk_draws: int | None = None, with_observed: bool | None = None,
             progress: Callable[[int, int], None] | None = None) -> PredictiveDraws:
    """Simulate every row of ``data`` for every parameter draw.

    Parameters
    ----------
    params : dict
        From :func:`parameter_draws` (or :func:`prior_parameter_draws`).
    spec : ModelSpec
        The model spec.
    data : ModelData
        The rows to simulate (the observed design, or any design for ``new_animals``).
    mode : str
        One of :data:`MODES`.
    seed : int
        Seed of the residual noise (and of fresh random effects).
    device : str or jax.Device
        ``"auto"``, ``"cpu"``, ``"gpu"`` or a device.
    chunk_draws : int, optional
        Draws per chunk (default from :data:`DEFAULT_CHUNK_ELEMENTS`).
    with_observed : bool, optional
        Also compute the observed-data log-likelihood and CDF (default: ``same_animals``).
    progress : callable, optional
        Called as ``progress(done, total)`` after each chunk (draws).

    Returns
    -------
    PredictiveDraws
    """
    n_draws = len(params["sigma"])
    n_rows = data.log_flux.size
    dev = resolve_device(device) if isinstance(device, str) else device
    out: dict[str, np.ndarray] = {}
    for sl, chunk in iter_simulate(params, spec, data, mode=mode, seed=seed, device=dev,
                                   chunk_draws=chunk_draws, with_observed=with_observed):
        for key, value in chunk.items():
            host = np.asarray(value)
            if key not in out:
                out[key] = np.empty((n_draws, n_rows), dtype=host.dtype)
            out[key][sl] = host
        if progress is not None:
            progress(sl.stop, n_draws)
    return PredictiveDraws(mode=mode, log_flux=out["log_flux"], below_lod=out["below_lod"],
                           log_lik=out.get("log_lik"), cdf=out.get("cdf"),
                           draw_index=np.asarray(params.get("draw_index", np.arange(n_draws))),
                           seed=seed, device=str(dev))


def posterior_predictive(posterior, spec: ModelSpec, data: ModelData, *,
                         mode: str = "same_animals", draws: int | None = None, seed: int = 0,
                         device: str = "auto", chunk_draws: int | None = None,
                         with_observed: bool | None = None,
                         progress: Callable[[int, int], None] | None = None
                         ) -> PredictiveDraws:
    """Posterior predictive draws of every row of ``data``.

    Parameters
    ----------
    posterior : xarray.Dataset
        The run's posterior group (``idata.posterior``).
    spec, data
        The run's spec and prepared observations (for ``same_animals``, exactly the data the
        run was fit to).
    mode : {"same_animals", "new_animals"}
    draws : int, optional
        Number of evenly spaced posterior draws to use (default all).
    seed, device, chunk_draws, with_observed, progress
        As in :func:`simulate`.
    """
    if mode == "prior":
        raise UsageError("use prior_predictive() for prior draws")
    params = parameter_draws(posterior, spec, data, mode=mode, draws=draws)
    return simulate(params, spec, data, mode=mode, seed=seed, device=device,
                    chunk_draws=chunk_draws, with_observed=with_observed, progress=progress)


def prior_parameter_draws(spec: ModelSpec, data: ModelData, *, draws: int, seed: int,
                          calibration=None) -> dict[str, np.ndarray]:
    """Parameter draws from the spec's priors, via ``pm.sample_prior_predictive``.

    Parameters
    ----------
    spec, data
        Model spec and the design to simulate.
    draws : int
        Number of prior draws.
    seed : int
        PyMC's random seed.
    calibration : DataFrame, optional
        Standard curve (it adds a likelihood only; it does not change the priors).
    """
    from lanternpk.inference import sample_prior
    from lanternpk.model import build_model

    model = build_model(spec, data, calibration)
    prior = sample_prior(model, variable_names(spec, data, "prior"), draws=draws, seed=seed)
    return parameter_draws(prior.prior, spec, data, mode="prior")


def prior_predictive(spec: ModelSpec, data: ModelData, *, draws: int, seed: int,
                     device: str = "auto", calibration=None, chunk_draws: int | None = None,
                     with_observed: bool = False) -> PredictiveDraws:
    """Prior predictive draws of every row of ``data`` (parameters from PyMC, noise in JAX).

    ``seed`` seeds both PyMC's parameter draws and JAX's noise (independent streams).
    """
    pm_seed, jax_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    params = prior_parameter_draws(spec, data, draws=draws, seed=pm_seed,
                                   calibration=calibration)
    return simulate(params, spec, data, mode="prior", seed=jax_seed, device=device,
                    chunk_draws=chunk_draws, with_observed=with_observed)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"mode must be one of {list(MODES)}, got {mode!r}")
