"""The hierarchical Bayesian model: ``build_model(spec, data, calibration) -> pm.Model``.

Kinetics (per cell type, animal-level non-centred random effects):
    log(f_aj / f_a,other) = eta_cj + sd_fp z_aj        first-pass fractions (additive log-ratio)
    log r_a = log r_c + sd_release z_a                  filter → blood release, 1/day
    log k_aj = log k_cj + sd_loss z_aj                  organ loss rates, 1/day
live cells per organ are the exact closed form of :mod:`lanternpk.solver.closed_form`.
Each scale × effect pair (``sd_fp z``, ``sd_release z``, ``sd_loss z`` and the image gains'
``image_gain_sd z``) is sampled in a sign-expanded form with the same posterior (see
:func:`_random_effect`); diagnose the names :func:`parameter_names` gives.

Measurement (DESIGN.md), per ROI ``i`` of image ``m``:
    mu_i = log(photons_per_cell × Σ_j w_ij T_j × cells_ij × gain_m + background_i)
    log flux_i ~ Normal(mu_i, residual_sd)              flux_i ≥ lod_i (observed)
    P(log flux_i < log lod_i) = Φ((log lod_i − mu_i) / residual_sd)   flux_i < lod_i (M3)
where ``w_ij`` selects the organ a region sees (all organs for ``whole_body``) and ``T_j`` is
the transmission of that organ in the ROI's modality. Image gains are log-normal with median
1, shared by the ROIs of an image. Background is the ``background`` column when given; else
one background per region × modality is estimated, its prior a fraction of the group's
median LOD (the spec's ``measurement.background_lod_fraction``; by default median 0.5, a
factor of ~5 either way).
The standard curve, when given, informs photons per cell (``in_vitro`` rows) and
photons per cell × ex vivo transmission (``ex_vivo`` spike-in rows).

The censored term uses a log-CDF that is finite with finite gradients on every backend
(``pm.Censored`` gave NaN gradients under JAX).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from lanternpk.errors import DataError, Problem, did_you_mean
from lanternpk.solver.closed_form import organ_cells
from lanternpk.spec import ModelSpec

HOURS_PER_DAY = 24.0
_LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class ModelData:
    """Index arrays and constants derived from canonical observations for one spec.

    Attributes (n = rows, s = imaging sessions = unique animal × time, a = animals,
    i = images, g = region × modality groups)
    ----------
    animals : (a,) list of str
        ``study/animal`` labels in order of first appearance (the model's ``animal``
        coords).
    images : (i,) list of str
        ``study/image`` labels, likewise (the ``image`` coords).
    sessions : DataFrame, s rows
        ``animal`` (index into ``animals``) and ``time_h`` (hours after injection).
    cell_type_of_animal : (a,) int, index into the spec's cell types
    session_animal : (s,) int
    session_time_d : (s,) float, days
    row_session, row_image : (n,) int
    in_vivo_weights, ex_vivo_weights : (n, organs) float, 0/1 organ selection per ROI
    log_flux, log_lod : (n,) float, log photons/s
    censored : (n,) bool, flux below lod
    background : (n,) float or None, photons/s
    background_groups : (g,) list of str, ``"region/modality"``, sorted
    background_group : (n,) int, index into ``background_groups`` (for estimated backgrounds)
    dose_cells : (a,) float, cells injected per animal
    """

    animals: list[str]
    images: list[str]
    sessions: pd.DataFrame
    cell_type_of_animal: np.ndarray
    session_animal: np.ndarray
    session_time_d: np.ndarray
    row_session: np.ndarray
    row_image: np.ndarray
    in_vivo_weights: np.ndarray
    ex_vivo_weights: np.ndarray
    log_flux: np.ndarray
    log_lod: np.ndarray
    censored: np.ndarray
    background: np.ndarray | None
    background_groups: list[str]
    background_group: np.ndarray
    dose_cells: np.ndarray


def prepare_data(spec: ModelSpec, obs: pd.DataFrame, *, source: str = "data") -> ModelData:
    """Check the observations against the spec and derive the model's index arrays.

    Raises
    ------
    DataError
        A cell type, region or modality the spec cannot model (naming the row and value).
    """
    problems = []
    regions = spec.region_compartments
    for row, value in obs["cell_type"].items():
        if value not in spec.cell_types:
            problems.append(Problem(source, f"cell type not in spec {spec.name} "
                                    f"(expected one of {list(spec.cell_types)})"
                                    + did_you_mean(str(value), spec.cell_types),
                                    row=row, column="cell_type", value=value))
    for row, value in obs["region"].items():
        if value not in regions:
            problems.append(Problem(source, f"region not in spec {spec.name} "
                                    f"(expected one of {sorted(regions)})"
                                    + did_you_mean(str(value), regions),
                                    row=row, column="region", value=value))
    if problems:
        raise DataError(problems)

    organ_index = {o: i for i, o in enumerate(spec.organs)}
    animal_key = _study_key(obs, "animal", source)
    image_key = _study_key(obs, "image", source)
    animals = list(dict.fromkeys(animal_key))
    animal_codes = pd.Categorical(animal_key, categories=animals).codes
    first_rows = obs.groupby(animal_key, sort=False).head(1)
    cell_type_of_animal = np.array(
        [spec.cell_types.index(first_rows.loc[animal_key[first_rows.index] == a, "cell_type"]
                               .iloc[0]) for a in animals]
    )
    sessions = pd.DataFrame({"animal": animal_codes, "time_h": obs["time_h"].to_numpy()})
    sessions = sessions.drop_duplicates().reset_index(drop=True)
    session_lookup = {(a, t): i for i, (a, t) in enumerate(sessions.itertuples(index=False))}
    row_session = np.array([session_lookup[(a, t)] for a, t in
                            zip(animal_codes, obs["time_h"].to_numpy(), strict=True)])
    images = list(dict.fromkeys(image_key))
    row_image = pd.Categorical(image_key, categories=images).codes

    n, n_organs = len(obs), len(spec.organs)
    weights = {"in_vivo": np.zeros((n, n_organs)), "ex_vivo": np.zeros((n, n_organs))}
    for i, (region, modality) in enumerate(zip(obs["region"], obs["modality"], strict=True)):
        for organ in regions[region]:
            if spec.transmission(modality, organ) is not None:
                weights[modality][i, organ_index[organ]] = 1.0
        if not weights[modality][i].any():
            problems.append(Problem(source, f"spec {spec.name} has no {modality} transmission "
                                    f"for region '{region}'", row=obs.index[i],
                                    column="region", value=region))
    if problems:
        raise DataError(problems)

    group_key = obs["region"].astype(str) + "/" + obs["modality"].astype(str)
    groups = sorted(set(group_key))
    has_background = "background" in obs and obs["background"].notna().all()
    return ModelData(
        animals=animals,
        images=images,
        sessions=sessions,
        cell_type_of_animal=cell_type_of_animal,
        session_animal=sessions["animal"].to_numpy(),
        session_time_d=sessions["time_h"].to_numpy() / HOURS_PER_DAY,
        row_session=row_session,
        row_image=np.asarray(row_image),
        in_vivo_weights=weights["in_vivo"],
        ex_vivo_weights=weights["ex_vivo"],
        log_flux=np.log(np.maximum(obs["flux"].to_numpy(float), 1e-300)),
        log_lod=np.log(obs["lod"].to_numpy(float)),
        censored=(obs["flux"] < obs["lod"]).to_numpy(),
        background=obs["background"].to_numpy(float) if has_background else None,
        background_groups=groups,
        background_group=np.array([groups.index(g) for g in group_key]),
        dose_cells=obs.groupby(animal_key, sort=False)["dose_cells"].first()
        .reindex(animals).to_numpy(float),
    )


def _study_key(obs: pd.DataFrame, column: str, source: str) -> pd.Series:
    """``study/<column>`` labels, one per distinct (study, value) pair.

    Raises
    ------
    DataError
        Two different pairs that join to the same label (``a/b`` + ``c`` and ``a`` + ``b/c``),
        which would merge two animals or images into one.
    """
    key = obs["study"].astype(str) + "/" + obs[column].astype(str)
    pairs = obs.assign(_key=key).drop_duplicates(["study", column])
    clash = pairs[pairs["_key"].duplicated(keep=False)]
    if len(clash):
        raise DataError([Problem(source, f"study and {column} join to '{k}', as do another "
                                 f"row's study and {column}; rename one ('/' separates them)",
                                 row=row, column=column, value=obs.at[row, column])
                         for row, k in clash["_key"].items()])
    return key


#: Below this z, ``log Φ(z)`` is the asymptotic series (``erfc`` underflows near z = −37.5).
_LOG_CDF_SWITCH = -20.0


def log_normal_cdf(z):
    """log Φ(z), finite with finite gradients for every z (PyTensor, all backends).

    For z ≥ −20 it is ``log(erfc(−z/√2) / 2)``: within 1.2e-13 absolute of
    ``scipy.special.log_ndtr`` on [−20, 8] (measured on a grid of 200 001 points; ~6e-16
    relative near −20, where log Φ ≈ −200), gradient within 3e-14 relative, on the C and JAX
    backends. Below, the asymptotic series
    ``−z²/2 − log(−z) − log(2π)/2 + log(1 − 1/z² + 3/z⁴ − 15/z⁶)``, whose error is 4e-9 at
    z = −20 (the first omitted term, 105/z⁸) and shrinks as z decreases, so the log density
    jumps by at most that much where the branches meet. Each branch is
    evaluated on a clamped z.
    """
    z_mid = pt.maximum(z, _LOG_CDF_SWITCH)
    direct = pt.log(0.5 * pt.erfc(-z_mid / np.sqrt(2.0)))
    z_tail = pt.minimum(z, _LOG_CDF_SWITCH)
    inv2 = 1.0 / (z_tail * z_tail)
    tail = (-0.5 * z_tail * z_tail - pt.log(-z_tail) - 0.5 * _LOG_2PI
            + pt.log(1.0 - inv2 + 3.0 * inv2**2 - 15.0 * inv2**3))
    return pt.switch(z >= _LOG_CDF_SWITCH, direct, tail)


def _lognormal(name: str, prior, *, dims=None, shape=None):
    """Log-parameter with a Normal(log median, sigma) prior; returns the log value."""
    return pm.Normal(f"log_{name}", mu=np.log(prior.median), sigma=prior.sigma,
                     dims=dims, shape=shape)


def _halfnormal(name: str, prior):
    return pm.HalfNormal(name, sigma=prior.sigma)


#: Suffix of the two free variables that sample a random effect (see :func:`_random_effect`).
#: Not PyMC's ``__`` of a transformed value: the posterior keeps them, as PyMC's own
#: workflows (``pm.compute_log_likelihood``, ``pm.sample_posterior_predictive``) need every
#: free variable.
SIGNED_SUFFIX = "_signed"
#: The random effects: name of the scale -> name of its standardised effects.
RANDOM_EFFECTS = {"sd_first_pass": "z_first_pass", "sd_release": "z_release",
                  "sd_loss": "z_loss", "image_gain_sd": "z_gain"}


def _random_effect(sd_name: str, prior, dims):
    """A non-centred random effect ``sd × z``, sampled in a sign-expanded form.

    ``sd ~ HalfNormal(σ)`` (named ``sd_name``) and ``z ~ Normal(0, 1)`` (named as
    :data:`RANDOM_EFFECTS` pairs it) are the Deterministics ``|u|`` and ``sign(u)·v`` of the
    free variables ``u ~ Normal(0, σ)`` (``{sd_name}_signed``) and ``v ~ Normal(0, 1)``
    (``{z_name}_signed``), and the effect is ``u·v = sd·z``. The map (u, v) → (|u|,
    sign(u)·v) carries Normal(0, σ) × Normal(0, 1) onto exactly HalfNormal(σ) ×
    Normal(0, 1), so the model and the posterior of every named quantity are unchanged; only
    the coordinates NUTS moves in change. A HalfNormal is sampled on ``log sd``, where a
    weakly informed scale (posterior mass near 0) becomes a long exponential tail that mixes
    slowly; ``u`` crosses 0 smoothly instead. This is parameter expansion with a redundant
    sign (Gelman, van Dyk, Huang & Boscardin 2008, J. Comput. Graph. Stat. 17:95–122).

    ``u`` and ``v`` are identified only up to a joint sign: a chain whose scale stays away
    from 0 keeps one sign throughout, and chains may differ. The two signs are mirror images
    with the same ``sd`` and ``z``, so diagnostics use those (:func:`parameter_names`); read
    the posterior's ``sd`` and ``z``, not ``u`` and ``v`` (whose R-hat across chains on
    mirror signs is meaningless). There are 2⁴ mirror modes in the sampling coordinates:
    methods that assume one mode there (a Laplace approximation, ADVI) do not apply.

    Returns
    -------
    TensorVariable
        The effect ``sd·z`` (dims ``dims``; units of the scale's prior).
    """
    z_name = RANDOM_EFFECTS[sd_name]
    u = pm.Normal(sd_name + SIGNED_SUFFIX, 0.0, prior.sigma)
    v = pm.Normal(z_name + SIGNED_SUFFIX, 0.0, 1.0, dims=dims)
    pm.Deterministic(sd_name, pt.abs(u))
    pm.Deterministic(z_name, pt.switch(u >= 0, v, -v), dims=dims)  # z = v at u = 0
    return u * v


def parameter_names(model: pm.Model) -> list[str]:
    """Names of the model's parameters as diagnosed and reported.

    Every free variable, except that the sign-expanded pair of a random effect
    (``sd_loss_signed``, ``z_loss_signed``) is named by its identified ``sd_loss`` and
    ``z_loss`` (:func:`_random_effect`): the pair itself is identified only up to a joint
    sign, which chains need not agree on.
    """
    identified = {name + SIGNED_SUFFIX: name for pair in RANDOM_EFFECTS.items()
                  for name in pair}
    return [identified.get(rv.name, rv.name) for rv in model.free_RVs]


def _per_cell_type(spec: ModelSpec, kind: str, organs: tuple[str, ...]):
    """Prior locations and scales (cell_type, organ) and whether each organ is shared."""
    loc = np.empty((len(spec.cell_types), len(organs)))
    scale = np.empty_like(loc)
    for c, ct in enumerate(spec.cell_types):
        if kind == "first_pass":
            loc[c] = spec.first_pass_logratio_loc(ct)
        for j, organ in enumerate(organs):
            prior = spec.prior(kind, organ, ct)
            if kind != "first_pass":
                loc[c, j] = np.log(prior.median)
            scale[c, j] = prior.sigma
    shared = np.array([spec.is_shared(kind, o) for o in organs])
    return loc, scale, shared


def _population(name: str, loc: np.ndarray, scale: np.ndarray, shared: np.ndarray):
    """Population parameters (cell_type, organ); shared organs use one value for all types.

    Non-centred: ``value = loc + scale × raw`` with ``raw ~ Normal(0, 1)``.
    """
    n_types, n_organs = loc.shape
    raw = pm.Normal(f"{name}_raw", 0.0, 1.0, shape=(n_types, n_organs))
    # a shared organ takes the first cell type's raw value for every cell type
    pick = np.where(shared[None, :], 0, np.arange(n_types)[:, None])
    raw_used = raw[pick, np.arange(n_organs)[None, :]]
    return loc + scale * raw_used


def build_model(spec: ModelSpec, data: ModelData, calibration: pd.DataFrame | None = None
                ) -> pm.Model:
    """Build the PyMC model of ``spec`` for prepared data (pure: no sampling, no I/O).

    Parameters
    ----------
    spec : ModelSpec
        Validated model spec.
    data : ModelData
        From :func:`prepare_data`.
    calibration : DataFrame, optional
        Canonical standard curve (cells, flux in photons/s, setting, region).

    Returns
    -------
    pymc.Model
        With named dims ``cell_type``, ``organ``, ``animal``, ``image``, ``obs`` and, when
        backgrounds are estimated, ``background_group`` (``"region/modality"``).
    """
    organs = spec.organs
    coords = {"cell_type": list(spec.cell_types), "organ": list(organs),
              "animal": data.animals, "image": data.images,
              "obs": np.arange(data.log_flux.size)}
    n_organs = len(organs)
    with pm.Model(coords=coords) as model:
        # --- population kinetics (typical animal) -------------------------------------------
        fp_loc, fp_scale, fp_shared = _per_cell_type(spec, "first_pass", organs)
        eta = pm.Deterministic("first_pass_logratio",
                               _population("first_pass", fp_loc, fp_scale, fp_shared),
                               dims=("cell_type", "organ"))
        release_organ = organs[spec.filter_index]
        rel_prior = [spec.prior("release", release_organ, ct) for ct in spec.cell_types]
        rel_shared = spec.is_shared("release", release_organ)
        rel_raw = pm.Normal("release_raw", 0.0, 1.0, shape=len(spec.cell_types))
        rel_raw_used = rel_raw[np.zeros(len(spec.cell_types), int)] if rel_shared else rel_raw
        log_release = (np.log([p.median for p in rel_prior])
                       + np.array([p.sigma for p in rel_prior]) * rel_raw_used)
        loss_loc, loss_scale, loss_shared = _per_cell_type(spec, "loss", organs)
        log_loss = _population("loss", loss_loc, loss_scale, loss_shared)

        expo = pt.exp(eta)
        pm.Deterministic("first_pass", expo / (1.0 + expo.sum(-1, keepdims=True)),
                         dims=("cell_type", "organ"))
        pm.Deterministic("release", pt.exp(log_release), dims="cell_type")
        pm.Deterministic("loss", pt.exp(log_loss), dims=("cell_type", "organ"))
        blood_efflux = None
        if spec.explicit_blood:
            log_q = _lognormal("blood_efflux", spec.priors.blood_efflux)
            blood_efflux = pm.Deterministic("blood_efflux", pt.exp(log_q))

        # --- animal-level random effects (non-centred) --------------------------------------
        re = spec.random_effects
        fp_effect = _random_effect("sd_first_pass", re.first_pass, ("animal", "organ"))
        rel_effect = _random_effect("sd_release", re.release, "animal")
        loss_effect = _random_effect("sd_loss", re.loss, ("animal", "organ"))
        ct = data.cell_type_of_animal
        eta_a = eta[ct] + fp_effect
        expo_a = pt.exp(eta_a)
        f_a = expo_a / (1.0 + expo_a.sum(-1, keepdims=True))
        r_a = pt.exp(log_release[ct] + rel_effect)
        k_a = pt.exp(log_loss[ct] + loss_effect)

        # --- live cells per imaging session, (sessions, organs) -----------------------------
        s_animal = data.session_animal
        cells = organ_cells(
            f_a[s_animal], r_a[s_animal], k_a[s_animal], data.session_time_d[:, None],
            filter_index=spec.filter_index, n_organs=n_organs,
            blood_efflux=None if blood_efflux is None else pt.ones(len(s_animal)) * blood_efflux,
            xp=pt,
        )[:, 0, :] * data.dose_cells[s_animal][:, None]

        # --- measurement ----------------------------------------------------------------
        meas = spec.measurement
        log_ppc = _lognormal("photons_per_cell", meas.photons_per_cell)
        pm.Deterministic("photons_per_cell", pt.exp(log_ppc))
        log_t = {}
        for modality in ("in_vivo", "ex_vivo"):
            priors = [spec.transmission(modality, o) for o in organs]
            loc = np.array([np.log(p.median) if p else 0.0 for p in priors])
            scale = np.array([p.sigma if p else 1.0 for p in priors])
            raw = pm.Normal(f"transmission_{modality}_raw", 0.0, 1.0, dims="organ")
            log_t[modality] = loc + scale * raw
            pm.Deterministic(f"transmission_{modality}", pt.exp(log_t[modality]), dims="organ")
        log_gain = _random_effect("image_gain_sd", meas.image_gain_sd, "image")
        # photons/s per live cell × image gain: one exp per image, gathered to its ROIs
        # (an exp per ROI made the gradient ~7% slower on the ALS study)
        image_scale = pt.exp(log_ppc + log_gain)
        sigma = _halfnormal("residual_sd", meas.residual_sd)

        seen = (data.in_vivo_weights * pt.exp(log_t["in_vivo"])[None, :]
                + data.ex_vivo_weights * pt.exp(log_t["ex_vivo"])[None, :])
        light = pt.sum(seen * cells[data.row_session], axis=-1) * image_scale[data.row_image]
        if data.background is not None:
            background = data.background
        else:
            fraction = meas.background_lod_fraction  # of the group's median LOD
            median_bg = np.array([np.median(np.exp(data.log_lod[data.background_group == g]))
                                  * fraction.median for g in range(len(data.background_groups))])
            model.add_coord("background_group", data.background_groups)
            log_bg = pm.Normal("log_background", mu=np.log(median_bg), sigma=fraction.sigma,
                               dims="background_group")
            background = pt.exp(log_bg)[data.background_group]
        mu = pt.log(light + background)  # log expected flux, (obs,)

        observed = ~data.censored
        pm.Normal("log_flux", mu=mu[observed], sigma=sigma,
                  observed=data.log_flux[observed])
        if data.censored.any():
            z = (data.log_lod[data.censored] - mu[data.censored]) / sigma
            pm.Potential("censored_below_lod", pt.sum(log_normal_cdf(z)))

        if calibration is not None and len(calibration):
            _standard_curve(calibration, log_ppc, log_t["ex_vivo"], spec)
    return model


def _spike_in(calibration: pd.DataFrame) -> np.ndarray:
    """Which standard-curve rows are ex vivo spike-ins (an empty setting means in vitro)."""
    setting = calibration.get("setting", pd.Series("in_vitro", index=calibration.index))
    return (setting.fillna("in_vitro").astype(str) == "ex_vivo").to_numpy()


def calibration_problems(calibration: pd.DataFrame, spec: ModelSpec, *,
                         source: str = "calibration") -> list[Problem]:
    """Ex vivo spike-in rows the spec cannot model (one problem per row).

    A spike-in measures photons per cell × the ex vivo transmission of its region, so the
    region must be an organ of the spec with an ex vivo transmission prior.
    """
    ex_vivo = _spike_in(calibration)
    if not ex_vivo.any():  # (the region column is optional without spike-in rows)
        return []
    organs = list(spec.organs)
    problems = []
    for row, region in calibration["region"][ex_vivo].astype(str).items():
        if region not in organs:
            problems.append(Problem(
                source, "ex vivo spike-in region is not an organ of the spec (expected one "
                f"of {organs})" + did_you_mean(region, organs), row=row, column="region",
                value=region))
        elif spec.transmission("ex_vivo", region) is None:
            problems.append(Problem(
                source, "the spec has no ex vivo transmission prior for this organ, which a "
                "spike-in measures (photons per cell × ex vivo transmission); add one under "
                "[measurement.transmission.ex_vivo] or leave the row out", row=row,
                column="region", value=region))
    return problems


def _standard_curve(calibration: pd.DataFrame, log_ppc, log_t_ex_vivo, spec: ModelSpec
                    ) -> None:
    """Likelihood of the standard curve: log flux = log(photons/cell × [T_ex] × cells) + ε.

    ε ~ Normal(0, calibration_sd), its prior the spec's ``measurement.calibration_sd``. The
    flux is taken as the cells' light alone: a dish's background (~10² p/s) is small next to
    the ≥ 10⁴ p/s of a standard curve's cells. ``lanternpk simulate`` does add its truth's
    calibration background, which biases photons per cell upward by at most 0.25% on the
    bundled studies (200 p/s on 100 cells × 800 p/s), well inside its posterior sd.
    """
    organ_index = {o: i for i, o in enumerate(spec.organs)}
    log_mean = np.log(calibration["cells"].to_numpy(float)) + log_ppc
    ex_vivo = _spike_in(calibration)
    if ex_vivo.any():
        problems = calibration_problems(calibration, spec)
        if problems:
            raise DataError(problems)
        regions = calibration["region"].astype(str).to_numpy()[ex_vivo]
        shift = np.zeros(len(calibration), dtype=int)
        shift[ex_vivo] = [organ_index[r] for r in regions]
        log_mean = log_mean + pt.switch(ex_vivo, log_t_ex_vivo[shift], 0.0)
    sd = _halfnormal("calibration_sd", spec.measurement.calibration_sd)
    pm.Normal("calibration_log_flux", mu=log_mean, sigma=sd,
              observed=np.log(calibration["flux"].to_numpy(float)))
