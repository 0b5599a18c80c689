"""`lanternpk compare`: cross-validated comparison of runs fit to the same data.

Two predictive scores per run, both as expected log predictive densities (elpd, in nats;
higher is better), from the pointwise M3 log-likelihood of the observed rows computed in JAX
by :func:`lanternpk.predictive.posterior_predictive` (log density of log flux for a detected
ROI, ``log Φ((log lod − mu) / σ)`` for a censored one):

PSIS-LOO per observation (``elpd_loo``)
    ``Σ_i log p(y_i | y_−i)`` over the ROI rows, each term estimated by Pareto-smoothed
    importance sampling (Vehtari, Gelman & Gabry 2017, *Stat. Comput.* 27:1413; ``arviz.psislw``)
    with the relative efficiency of the draws estimated from the chains. It asks how well the
    model predicts one more ROI of an animal it has seen.

Leave-one-animal-out (``elpd_loao``)
    ``Σ_a log p(y_a | y_−a)``, where ``y_a`` are all rows of animal ``a`` (its in vivo and
    ex vivo images) and the held-out animal's random effects and image gains are *not*
    known: the predictive density integrates them over their population distribution. It asks
    how well the model predicts a new animal, which is the question behind "Muse cells home,
    MSCs do not" (``muse_vs_msc`` against the null ``shared_homing``).

    PSIS on the summed *conditional* log-likelihood ``Σ_{i∈a} log p(y_i | θ, b_a)`` of the
    saved draws of ``(θ, b_a)`` (the usual leave-one-group-out PSIS) targets the same
    new-animal quantity: the ratios ``1 / p(y_a | θ, b_a)`` turn the posterior into
    ``p(θ, b_a | y_−a)``, where ``b_a`` follows its prior, so the conditioning on the animal's
    posterior random effects is undone by the weights. But the weights are very uneven
    whenever the animal's own data move its effects far from their prior, which is the rule
    with ~20 ROIs per animal (on the bundled study 13 of 16 animals had ``k > 0.7``). It is
    computed and kept in ``compare_animals.json`` (``elpd_loao_conditional``) for reference.

    The estimate used is PSIS on the *marginal* likelihood ``log p(y_a | θ_s)`` of each
    posterior draw, the animal's effects integrated out (integrated importance sampling;
    Merkle, Furr & Rabe-Hesketh 2019, *Psychometrika* 84:802): the weights then only
    reflect how much the population parameters move without the animal. The inner integral
    is done per draw by importance sampling (:func:`marginal_animal_log_lik`, ``--is-draws``
    draws per posterior draw; the proposal is described below; its Pareto k is reported as
    ``inner_k``). Its Monte Carlo noise biases each ``log p(y_a | θ_s)`` slightly downwards
    (Jensen); with the proposal below the relative error is small (``inner_k`` < 0.2 on the
    bundled study).

    Exact refit for every animal whose marginal PSIS has ``k > 0.7`` (unless
    ``--no-refit``): the model is fit again without that animal's rows (same spec, standard
    curve and sampler settings; ``--refit-draws`` changes the draws per chain), and
    ``log p(y_a | y_−a)`` is estimated by the same importance sampling over fresh random
    effects ``b`` (all of the animal's ``z_first_pass``, ``z_release``, ``z_loss`` and its
    images' ``z_gain``, standard normal a priori):

        ``p̂ = 1/(S M) Σ_s Σ_m p(y_a | θ_s, b_sm) N(b_sm; 0, I) / q(b_sm)``,
        ``θ_s ~ p(θ | y_−a)`` (the refit), ``b_sm ~ q``,

    with the defensive mixture proposal ``q = 0.9 t_5(m, C) + 0.1 N(0, I)``, where ``m`` and
    ``C`` are the mean and covariance of the animal's effects in the original (all-data)
    posterior. Plain Monte Carlo over new effects drawn from the prior would be unbiased too,
    but hopeless in ~20 dimensions against ~20 informative ROIs; this proposal sits where the
    integrand is, and its prior component bounds the ratios. The estimate uses Pareto-smoothed
    ratios; their own Pareto ``k`` is reported (``refit_k``) and a warning is given when it
    exceeds 0.7.

Differences and standard errors
    For models A (the best by that score) and B, ``elpd_diff = Σ_i (elpd_A,i − elpd_B,i)``
    with ``se = sqrt(n · var_i(elpd_A,i − elpd_B,i))`` (sample variance, ``ddof=1``, as in
    Vehtari et al. 2017 eq. 24; ``arviz.compare`` uses ``ddof=0``), over rows for LOO and
    over animals for LOAO. Pairing makes the SE of a difference much smaller than the SEs of
    the two elpds. With 16 animals the LOAO SE is itself rough.

Pareto-k warnings
    ``k > 0.7``: the PSIS estimate of that term is unreliable (rows for LOO; animals for LOAO,
    where a refit replaces it unless ``--no-refit`` or ``--max-refits`` stops that).

Outputs: the table is printed, and written as a list of flat records (one per run, sorted by
``elpd_loo``) to ``compare.json`` in the *first* run directory given (the report shows it
there), with the per-animal scores in ``compare_animals.json`` beside it.

Heavy libraries (JAX, PyMC, ArviZ) are imported inside the functions, so that registering the
command does not import JAX before the CLI has set up its devices.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from lanternpk.argtypes import (
    bounded_int,
    draw_count,
    existing_file,
    non_negative_int,
    positive_int,
    random_seed,
    run_path,
)
from lanternpk.compare_stats import (
    MIN_PSIS_DRAWS,
    PARETO_K_BAD,
    LooResult,
    elpd_difference,
    elpd_se,
    importance_log_mean,
    log_mean_exp,
    psis_loao,
    psis_loo,
    relative_efficiency,
    require_finite_draws,
    require_psis_draws,
)
from lanternpk.errors import EXIT_OK, UsageError, notice

COMPARE_FILE = "compare.json"
ANIMALS_FILE = "compare_animals.json"
DEFAULT_SEED = 20261125
#: Importance draws of an animal's new random effects per posterior draw, for every animal's
#: marginal likelihood (all-data posterior) and for each refit's held-out animal.
DEFAULT_IS_DRAWS = 32
#: Most importance draws per posterior draw: the proposal holds posterior draws × this many
#: values of each animal's effects (~30 kB per importance draw on the ALS study's 4000 draws,
#: so 0.3 GB at the bound; 10 million asked for 286 GB).
MAX_IS_DRAWS = 10_000


def importance_draw_count(text: str) -> int:
    """``--is-draws``: an integer in [1, MAX_IS_DRAWS]."""
    return bounded_int(text, 1, MAX_IS_DRAWS)
#: Defensive weight of the standard-normal prior in the refit proposal mixture.
DEFENSIVE_WEIGHT = 0.1
#: Degrees of freedom of the Student-t component of the refit proposal.
PROPOSAL_DF = 5.0


# --- the table ------------------------------------------------------------------------------

@dataclass
class ModelScores:
    """The scores of one run.

    Attributes
    ----------
    name : str
        The run's spec name.
    run_dir : str
        The run directory.
    loo : LooResult
        PSIS-LOO per row.
    loao_psis : LooResult
        PSIS leave-one-animal-out per animal on the marginal likelihood ``log p(y_a | θ_s)``
        (new random effects integrated out, :func:`marginal_animal_log_lik`).
    loao_conditional : LooResult
        PSIS leave-one-animal-out on the summed conditional log-likelihood (for reference).
    inner_k : ndarray, shape (animals,)
        Pareto k of the importance sampling of each animal's new random effects.
    loao_i : ndarray, shape (animals,)
        The leave-one-animal-out elpd used (refit values where refit, else PSIS), nats.
    method : list of str
        Per animal: ``"psis"`` or ``"refit"``.
    refit_k : list of float or None
        Per animal: Pareto k of the refit's importance ratios (None where not refit).
    refit_mc_se : list of float or None
        Per animal: Monte Carlo SE of the refit estimate (nats; None where not refit).
    refit_converged : list of bool or None
        Per animal: whether the refit passed the convergence checks.
    warnings : list of str
        Warnings about this run's scores.
    """

    name: str
    run_dir: str
    loo: LooResult
    loao_psis: LooResult
    loao_conditional: LooResult
    inner_k: np.ndarray
    loao_i: np.ndarray
    method: list[str]
    refit_k: list[float | None]
    refit_mc_se: list[float | None]
    refit_converged: list[bool | None]
    warnings: list[str] = field(default_factory=list)

    @property
    def n_unreliable_animals(self) -> int:
        """Animals whose LOAO value still rests on PSIS with ``k > 0.7``."""
        return int(sum(m == "psis" and k > PARETO_K_BAD
                       for m, k in zip(self.method, self.loao_psis.pareto_k, strict=True)))


def comparison_table(scores: Sequence[ModelScores]) -> list[dict]:
    """Flat records, one per run, sorted by ``elpd_loo`` (best first).

    Differences are taken from the best run by each score (so ``elpd_loo_diff`` and
    ``elpd_loao_diff`` are ≥ 0, and 0 for the best), with paired standard errors
    (:func:`elpd_difference`).

    Returns
    -------
    list of dict
        Keys: ``rank``, ``model``, ``run_dir``, ``elpd_loo``, ``se_loo``, ``p_loo``,
        ``elpd_loo_diff``, ``se_loo_diff``, ``n_rows``, ``n_rows_k_above_0.7``,
        ``max_k_rows``, ``elpd_loao``, ``se_loao``, ``elpd_loao_diff``, ``se_loao_diff``,
        ``n_animals``, ``n_animals_k_above_0.7`` (PSIS, before refits), ``n_animals_refit``,
        ``n_animals_unreliable`` (PSIS k > 0.7 and not refit), ``warnings`` (one string).
    """
    if not scores:
        return []
    animals = scores[0].loao_psis.labels
    for s in scores[1:]:
        if s.loao_psis.labels != animals or s.loo.elpd_i.shape != scores[0].loo.elpd_i.shape:
            raise UsageError("the runs do not score the same rows and animals")
    order = sorted(range(len(scores)), key=lambda j: -scores[j].loo.elpd)
    best_loo = scores[order[0]]
    best_loao = max(scores, key=lambda s: float(np.sum(s.loao_i)))
    records = []
    for rank, j in enumerate(order, start=1):
        s = scores[j]
        d_loo, se_d_loo = elpd_difference(best_loo.loo.elpd_i, s.loo.elpd_i)
        d_loao, se_d_loao = elpd_difference(best_loao.loao_i, s.loao_i)
        records.append({
            "rank": rank, "model": s.name, "run_dir": s.run_dir,
            "elpd_loo": round(s.loo.elpd, 3), "se_loo": round(s.loo.se, 3),
            "p_loo": round(s.loo.p_eff, 3),
            "elpd_loo_diff": round(d_loo, 3), "se_loo_diff": round(se_d_loo, 3),
            "n_rows": int(s.loo.elpd_i.size), "n_rows_k_above_0.7": s.loo.n_bad,
            "max_k_rows": round(float(np.max(s.loo.pareto_k)), 3),
            "elpd_loao": round(float(np.sum(s.loao_i)), 3),
            "se_loao": round(elpd_se(s.loao_i), 3),
            "elpd_loao_diff": round(d_loao, 3), "se_loao_diff": round(se_d_loao, 3),
            "n_animals": int(s.loao_i.size),
            "n_animals_k_above_0.7": s.loao_psis.n_bad,
            "n_animals_refit": int(sum(m == "refit" for m in s.method)),
            "n_animals_unreliable": s.n_unreliable_animals,
            "warnings": "; ".join(s.warnings),
        })
    return records


def animal_records(scores: Sequence[ModelScores]) -> list[dict]:
    """Per animal × run: PSIS and used LOAO elpd (nats), Pareto k, method, refit checks."""
    records = []
    for s in scores:
        for a, label in enumerate(s.loao_psis.labels):
            records.append({
                "model": s.name, "run_dir": s.run_dir, "animal": label,
                "elpd_loao": round(float(s.loao_i[a]), 4),
                "elpd_loao_psis": round(float(s.loao_psis.elpd_i[a]), 4),
                "pareto_k": round(float(s.loao_psis.pareto_k[a]), 3),
                "inner_k": round(float(s.inner_k[a]), 3),
                "elpd_loao_conditional": round(float(s.loao_conditional.elpd_i[a]), 4),
                "pareto_k_conditional": round(float(s.loao_conditional.pareto_k[a]), 3),
                "method": s.method[a],
                "refit_k": None if s.refit_k[a] is None else round(s.refit_k[a], 3),
                "refit_mc_se": None if s.refit_mc_se[a] is None else round(s.refit_mc_se[a], 4),
                "refit_converged": s.refit_converged[a],
            })
    return records


def run_labels(records: list[dict]) -> list[str]:
    """How the text output names each run: its spec name, with the run directory added
    where two runs share a spec name (two seeds or samplers of one spec)."""
    counts = Counter(r["model"] for r in records)
    return [r["model"] if counts[r["model"]] == 1 else f"{r['model']} ({r['run_dir']})"
            for r in records]


def format_table(records: list[dict]) -> str:
    """A fixed-width text table of :func:`comparison_table` records."""
    labels = run_labels(records)
    width = max([16, *(len(label) + 2 for label in labels)])
    header = (f"{'rank':>4}  {'model':<{width}}{'elpd_loo':>10}{'se':>7}{'diff':>8}"
              f"{'se_diff':>8}{'k>0.7':>7}{'elpd_loao':>11}{'se':>7}{'diff':>8}{'se_diff':>8}"
              f"{'k>0.7':>7}{'refit':>6}")
    lines = [header]
    for r, label in zip(records, labels, strict=True):
        lines.append(
            f"{r['rank']:>4}  {label:<{width}}{r['elpd_loo']:>10.1f}{r['se_loo']:>7.1f}"
            f"{r['elpd_loo_diff']:>8.1f}{r['se_loo_diff']:>8.1f}"
            f"{r['n_rows_k_above_0.7']:>7}{r['elpd_loao']:>11.1f}{r['se_loao']:>7.1f}"
            f"{r['elpd_loao_diff']:>8.1f}{r['se_loao_diff']:>8.1f}"
            f"{r['n_animals_k_above_0.7']:>7}{r['n_animals_refit']:>6}")
    return "\n".join(lines)


# --- refit of one held-out animal -----------------------------------------------------------

def _effect_matrix(params: dict[str, np.ndarray], animal: int, images: np.ndarray
                   ) -> np.ndarray:
    """Stack one animal's standardised effects and its images' gains: (draws, d)."""
    return np.concatenate([params["z_fp"][:, animal, :], params["z_rel"][:, animal, None],
                           params["z_loss"][:, animal, :], params["z_gain"][:, images]],
                          axis=1)


def proposal(effects: np.ndarray):
    """The refit proposal ``0.9 t_5(m, C) + 0.1 N(0, I)`` from posterior effect draws.

    Parameters
    ----------
    effects : ndarray, shape (draws, d)
        The animal's standardised effects in the all-data posterior.

    Returns
    -------
    sample : callable
        ``sample(n, rng) -> (n, d)`` draws.
    logpdf : callable
        ``logpdf(x) -> (n,)`` log density of the mixture.
    """
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal, multivariate_t

    d = effects.shape[1]
    mean = effects.mean(axis=0)
    cov = np.atleast_2d(np.cov(effects, rowvar=False)) + 1e-6 * np.eye(d)
    shape = cov * (PROPOSAL_DF - 2.0) / PROPOSAL_DF  # the t's covariance equals cov
    t_dist = multivariate_t(loc=mean, shape=shape, df=PROPOSAL_DF)
    prior = multivariate_normal(mean=np.zeros(d), cov=np.eye(d))

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        from_prior = rng.uniform(size=n) < DEFENSIVE_WEIGHT
        x = np.asarray(t_dist.rvs(size=n, random_state=rng)).reshape(n, d)
        x[from_prior] = rng.standard_normal((int(from_prior.sum()), d))
        return x

    def logpdf(x: np.ndarray) -> np.ndarray:
        parts = np.stack([np.log1p(-DEFENSIVE_WEIGHT) + np.atleast_1d(t_dist.logpdf(x)),
                          np.log(DEFENSIVE_WEIGHT) + np.atleast_1d(prior.logpdf(x))])
        return logsumexp(parts, axis=0)

    return sample, logpdf


def held_out_log_density(population: dict[str, np.ndarray], effects: np.ndarray, spec,
                         data_a, *, is_draws: int, seed: int, n_chains: int = 1,
                         device="cpu") -> tuple[float, float, float]:
    """``log p(y_a | y_−a)`` of a held-out animal by importance sampling of new effects.

    Parameters
    ----------
    population : dict
        Population parameter draws of the refit (:func:`lanternpk.predictive.parameter_draws`
        in ``new_animals`` mode, backgrounds matched to ``data_a``).
    effects : ndarray, shape (draws, d)
        The animal's effects in the all-data posterior (for the proposal), ordered as
        ``z_first_pass`` (organs), ``z_release``, ``z_loss`` (organs), ``z_gain`` (its images).
    spec : ModelSpec
        The run's spec.
    data_a : ModelData
        The held-out animal's rows alone.
    is_draws : int
        Proposal draws per population draw.
    seed : int
        Seed of the proposal draws.
    n_chains : int
        Chains the population draws were stacked from (chain-major), for the MC error.
    device : str or jax.Device
        Where JAX evaluates the likelihood.

    Returns
    -------
    value, pareto_k, mc_se
        As :func:`importance_log_mean` (nats); the MC error counts each population draw's
        ``is_draws`` ratios as one group.
    """
    from scipy.stats import multivariate_normal

    from lanternpk.predictive import simulate

    n_o = len(spec.organs)
    n_img = len(data_a.images)
    sample, logpdf = proposal(effects)
    rng = np.random.default_rng(seed)
    n_pop = len(population["sigma"])
    n = n_pop * is_draws
    b = sample(n, rng)
    log_ratio = multivariate_normal(np.zeros(b.shape[1]), np.eye(b.shape[1])).logpdf(b) \
        - logpdf(b)
    params = {k: np.repeat(v, is_draws, axis=0) for k, v in population.items()
              if k != "draw_index"}
    params["z_fp"] = b[:, None, :n_o]
    params["z_rel"] = b[:, n_o:n_o + 1]
    params["z_loss"] = b[:, None, n_o + 1:2 * n_o + 1]
    params["z_gain"] = b[:, 2 * n_o + 1:2 * n_o + 1 + n_img]
    pred = simulate(params, spec, data_a, mode="same_animals", seed=seed, device=device,
                    with_observed=True)
    log_ratio = log_ratio + pred.log_lik.sum(axis=1)
    return importance_log_mean(log_ratio, group_size=is_draws, n_chains=n_chains)


def marginal_animal_log_lik(params: dict[str, np.ndarray], spec, data, *, is_draws: int,
                            seed: int, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """``log p(y_a | θ_s)`` per posterior draw and animal, new random effects integrated out.

    For each draw ``θ_s`` and animal ``a``, the animal's standardised effects ``b`` (its
    ``z_first_pass``, ``z_release``, ``z_loss`` and its images' ``z_gain``) are integrated
    over their ``N(0, I)`` prior by importance sampling with ``is_draws`` draws from the
    proposal of :func:`proposal` built from the animal's own posterior draws:
    ``p̂(y_a | θ_s) = 1/M Σ_m p(y_a | θ_s, b_m) N(b_m; 0, I) / q_a(b_m)``.

    Parameters
    ----------
    params : dict
        All-data posterior draws (:func:`lanternpk.predictive.parameter_draws`,
        ``same_animals`` mode, with the effects).
    spec, data
        The run's spec and prepared observations (images must not be shared by animals).
    is_draws : int
        Importance draws ``M`` per posterior draw.
    seed : int
        Seed of the importance draws.
    device : str or jax.Device
        Where JAX evaluates the likelihood.

    Returns
    -------
    log_marginal : ndarray, shape (draws, animals)
        ``log p̂(y_a | θ_s)``, nats.
    pareto_k : ndarray, shape (animals,)
        Pareto k of each animal's importance ratios relative to their per-draw means
        (``> 0.7``: the inner integral is unreliable).
    """
    import arviz as az
    from scipy.stats import multivariate_normal

    from lanternpk.predictive import iter_simulate

    n_s, n_a = len(params["sigma"]), len(data.animals)
    n_o = len(spec.organs)
    m = is_draws
    row_animal = np.asarray(data.session_animal)[np.asarray(data.row_session)]
    image_animals = pd.Series(row_animal).groupby(np.asarray(data.row_image)).nunique()
    if (image_animals > 1).any():
        raise UsageError("some images hold ROIs of several animals; leave-one-animal-out "
                         "needs each image to belong to one animal")
    rng = np.random.default_rng(seed)
    z_fp = np.empty((n_s * m, n_a, n_o))
    z_rel = np.empty((n_s * m, n_a))
    z_loss = np.empty((n_s * m, n_a, n_o))
    z_gain = np.empty((n_s * m, len(data.images)))
    log_w = np.empty((n_s * m, n_a))  # log N(b) − log q(b)
    for a in range(n_a):
        images = np.unique(np.asarray(data.row_image)[row_animal == a])
        sample, logpdf = proposal(_effect_matrix(params, a, images))
        b = sample(n_s * m, rng)
        log_w[:, a] = multivariate_normal(np.zeros(b.shape[1]), np.eye(b.shape[1])).logpdf(b) \
            - logpdf(b)
        z_fp[:, a] = b[:, :n_o]
        z_rel[:, a] = b[:, n_o]
        z_loss[:, a] = b[:, n_o + 1:2 * n_o + 1]
        z_gain[:, images] = b[:, 2 * n_o + 1:]
    tiled = {k: np.repeat(v, m, axis=0) for k, v in params.items()
             if k not in ("draw_index", "z_fp", "z_rel", "z_loss", "z_gain")}
    tiled.update(z_fp=z_fp, z_rel=z_rel, z_loss=z_loss, z_gain=z_gain)
    per_animal = np.zeros((n_s * m, n_a))
    for sl, chunk in iter_simulate(tiled, spec, data, mode="same_animals", seed=seed,
                                   device=device, with_observed=True):
        log_lik = np.asarray(chunk["log_lik"], dtype=float)
        part = np.zeros((log_lik.shape[0], n_a))
        np.add.at(part.T, row_animal, log_lik.T)
        per_animal[sl] = part
    log_ratio = (per_animal + log_w).reshape(n_s, m, n_a)
    log_marginal = log_mean_exp(log_ratio, axis=1)
    relative = (log_ratio - log_marginal[:, None, :]).reshape(n_s * m, n_a)
    _, k = az.psislw(relative.T.copy())
    return log_marginal, np.asarray(k, dtype=float).reshape(n_a)


# --- orchestration --------------------------------------------------------------------------

@dataclass
class _Run:
    run_dir: Path
    idata: object
    provenance: dict
    spec_path: Path
    data_path: Path
    spec: object
    obs: pd.DataFrame
    data: object


def _open_run(run_dir: Path, data_path: Path | None = None):
    from lanternpk.data.load import load_observations
    from lanternpk.fit import load_run_with_inputs
    from lanternpk.model import prepare_data
    from lanternpk.spec import load_spec

    run_dir = Path(run_dir)
    idata, provenance, spec_path, data_path = load_run_with_inputs(
        run_dir, command="compare", data_path=data_path,
        data_hint=", or pass --data FILE (checked against each run's sha256)")
    spec = load_spec(spec_path)
    obs = load_observations(data_path)
    data = prepare_data(spec, obs, source=str(data_path))
    return _Run(run_dir, idata, provenance, spec_path, data_path, spec, obs, data)


def _refit_settings(run: _Run, refit_draws: int | None):
    """The sampler settings of a run's refits: its provenance ``sampler`` record.

    Only the fields of :class:`~lanternpk.settings.SamplerSettings` are read (the record
    may hold more keys); ``refit_draws`` replaces the draws per chain when given.

    Returns
    -------
    lanternpk.settings.SamplerSettings

    Raises
    ------
    UsageError
        The record's values are not valid settings.
    """
    from lanternpk.settings import SamplerSettings

    known = {f.name for f in fields(SamplerSettings)}
    record = {k: v for k, v in run.provenance["sampler"].items() if k in known}
    if refit_draws is not None:
        record["draws"] = refit_draws
    try:
        return SamplerSettings(**record)
    except (TypeError, UsageError) as err:
        raise UsageError(f"{run.run_dir}: the sampler settings in its provenance cannot be "
                         f"used to refit ({err}); pass --no-refit") from None


def write_outputs(run_dir: Path, records: list[dict], animals: list[dict]) -> list[Path]:
    """Write ``compare.json`` and ``compare_animals.json`` into ``run_dir``, atomically.

    Non-finite numbers (a Pareto k of a dominating draw is infinite) are written as
    ``null`` (:func:`lanternpk.io.json_text`), so that the files are valid JSON.

    Returns
    -------
    list of Path
        The files written.
    """
    from lanternpk.io import json_text, write_text_atomic

    files = []
    for name, content in ((COMPARE_FILE, records), (ANIMALS_FILE, animals)):
        path = Path(run_dir) / name
        write_text_atomic(path, json_text(content))
        files.append(path)
    return files


def _row_animals(data) -> np.ndarray:
    """The animal label of every row of a :class:`lanternpk.model.ModelData` (its
    ``animals``, ``study/animal``), so that rows are grouped as the model groups them."""
    return np.asarray(data.animals)[data.session_animal[data.row_session]]


def _refit_animal(run: _Run, animal: str, full_params: dict, *, refit_draws: int | None,
                  is_draws: int, seed: int, device, workdir: Path, progressbar: bool = False
                  ) -> tuple[float, float, float, bool]:
    """Fit without ``animal`` and estimate ``log p(y_animal | y_−animal)``."""
    from lanternpk.digest import file_sha256
    from lanternpk.fit import fit, load_run
    from lanternpk.model import prepare_data
    from lanternpk.predictive import parameter_draws

    keys = _row_animals(run.data)
    held = keys == animal
    obs_minus, obs_a = run.obs.loc[~held], run.obs.loc[held]
    calibration = run.provenance.get("calibration_file")
    if calibration is not None:
        calibration = Path(calibration)
        if not calibration.is_file() or \
                file_sha256(calibration) != run.provenance["calibration_sha256"]:
            raise UsageError(f"{run.run_dir} was fit with standard curve {calibration}, which "
                             "is missing or changed; refits need it (or pass --no-refit)")
    settings = _refit_settings(run, refit_draws)
    safe = "".join(c if c.isalnum() else "_" for c in animal)
    csv = workdir / f"without_{safe}.csv"
    obs_minus.to_csv(csv, index=False)
    out = workdir / f"run_without_{safe}"
    result = fit(csv, run.spec_path, out, calibration_path=calibration, settings=settings,
                 command=["lanternpk", "compare", "(refit)", str(run.run_dir), animal],
                 overwrite=True, progressbar=progressbar)
    converged = bool(result.summary["diagnostics"]["passed"])
    refit, _, _ = load_run(out)
    data_minus = prepare_data(run.spec, obs_minus, source=str(csv))
    data_a = prepare_data(run.spec, obs_a, source=str(run.data_path))
    population = parameter_draws(refit.posterior, run.spec, data_minus, mode="new_animals")
    if "log_bg" in population:
        missing = [g for g in data_a.background_groups if g not in data_minus.background_groups]
        if missing:
            raise UsageError(f"animal {animal} is the only one imaged in {missing}; its "
                             "background cannot be predicted without it (use --no-refit)")
        cols = [data_minus.background_groups.index(g) for g in data_a.background_groups]
        population["log_bg"] = population["log_bg"][:, cols]
    a = run.data.animals.index(animal)
    images = np.array([run.data.images.index(i) for i in data_a.images])
    effects = _effect_matrix(full_params, a, images)
    value, k, mc_se = held_out_log_density(population, effects, run.spec, data_a,
                                           is_draws=is_draws, seed=seed,
                                           n_chains=refit.posterior.sizes["chain"],
                                           device=device)
    return value, k, mc_se, converged


@dataclass
class CompareResult:
    """What ``lanternpk compare`` produced."""

    records: list[dict]
    animals: list[dict]
    scores: list[ModelScores]
    files: list[Path]
    wall_s: float


def compare_runs(run_dirs: Sequence[Path], *, refit: bool = True,
                 refit_draws: int | None = None, max_refits: int | None = None,
                 draws: int | None = None, is_draws: int = DEFAULT_IS_DRAWS,
                 device: str = "auto", seed: int = DEFAULT_SEED, write: bool = True,
                 log: Callable[[str], None] | None = None,
                 progressbar: bool = False, data_path: Path | None = None) -> CompareResult:
    """Score and compare runs fit to the same data; write ``compare.json`` in the first.

    Parameters
    ----------
    run_dirs : sequence of Path
        At least two run directories written by ``lanternpk fit`` on the same data file.
    refit : bool
        Refit animals whose PSIS leave-one-animal-out Pareto ``k`` exceeds 0.7.
    refit_draws : int, optional
        Draws per chain of the refits (default: the run's own).
    max_refits : int, optional
        At most this many refits per run (the animals with the largest ``k`` first); the
        others keep their PSIS values and are counted as unreliable.
    draws : int, optional
        Evenly spaced posterior draws used for the log-likelihood (default all).
    is_draws : int
        Importance draws of an animal's new random effects per posterior draw: for every
        animal's marginal likelihood (all-data posterior) and for each exact refit.
    device : {"auto", "cpu", "gpu"}
        Where JAX evaluates the likelihood.
    seed : int
        Seed of the importance draws.
    write : bool
        Write ``compare.json`` and ``compare_animals.json`` into the first run directory.
    log : callable, optional
        Progress messages.
    progressbar : bool
        Show the sampler's progress bar during each refit (as ``lanternpk fit`` does: only
        when stderr is a terminal).
    data_path : Path, optional
        The observations the runs were fit to, when that file has moved since (each run
        checks it against its recorded sha256); default: the file each run recorded.

    Raises
    ------
    UsageError
        Fewer than two runs, a directory that is not a run, missing spec/data files, runs
        fit to different data, a run with fewer than :data:`MIN_PSIS_DRAWS` draws, a
        sampler record that cannot be refit.
    DataError
        A run's spec or data file changed since the fit.
    """
    start = time.perf_counter()
    log = log or (lambda _msg: None)
    run_dirs = [Path(r) for r in run_dirs]
    if len(run_dirs) < 2:
        raise UsageError("compare needs at least two run directories")
    if len({r.resolve() for r in run_dirs}) < len(run_dirs):
        raise UsageError("a run directory is given twice")
    if not refit:
        ignored = [name for name, value in (("--max-refits", max_refits),
                                            ("--refit-draws", refit_draws)) if value is not None]
        if ignored:
            raise UsageError(f"{' and '.join(ignored)} set how animals are refit, and "
                             "--no-refit refits none; drop one or the other")
    for name, value, minimum in (("--draws", draws, MIN_PSIS_DRAWS),
                                 ("--refit-draws", refit_draws, MIN_PSIS_DRAWS),
                                 ("--is-draws", is_draws, 1)):
        if value is not None and value < minimum:
            raise UsageError(f"{name} must be at least {minimum}, got {value}")
    from lanternpk.fit import require_run

    for i, r in enumerate(run_dirs):  # cheap check first, before anything heavy is loaded
        require_run(r, writable=write and i == 0)  # the scores go into the first run
    if write:  # both files or neither: one that cannot be written is found before the work
        for name in (COMPARE_FILE, ANIMALS_FILE):
            path = run_dirs[0] / name
            if path.exists() and not path.is_file():
                raise UsageError(f"cannot write {path}: it is not a file; move it away")
    runs = [_open_run(r, data_path) for r in run_dirs]
    for run in runs:
        require_psis_draws(run.idata.posterior, run.run_dir, user="compare")
        require_finite_draws(run.idata.posterior, run.run_dir, user="compare")
    first = runs[0].provenance
    for run in runs[1:]:
        if run.provenance["data_sha256"] != first["data_sha256"]:
            raise UsageError(f"{run.run_dir} was fit to {run.provenance['data_file']} and "
                             f"{runs[0].run_dir} to {first['data_file']} (different sha256); "
                             "compare needs runs fit to the same data")

    from lanternpk.predictive import (
        chains_kept,
        parameter_draws,
        posterior_predictive,
        resolve_device,
    )

    dev = resolve_device(device)
    scores = []
    for run in runs:
        log(f"scoring {run.run_dir} ({run.spec.name}) ...")
        pred = posterior_predictive(run.idata.posterior, run.spec, run.data, draws=draws,
                                    seed=seed, device=dev, with_observed=True)
        log_lik = np.asarray(pred.log_lik, dtype=float)
        n_chains = chains_kept(run.idata.posterior, pred.draw_index)
        reff = relative_efficiency(log_lik, n_chains)
        loo = psis_loo(log_lik, reff=reff, labels=[str(i) for i in run.obs.index])
        loao_cond = psis_loao(log_lik, _row_animals(run.data), reff=reff)
        full_params = parameter_draws(run.idata.posterior, run.spec, run.data,
                                      mode="same_animals", draws=draws)
        marginal, inner_k = marginal_animal_log_lik(full_params, run.spec, run.data,
                                                    is_draws=is_draws, seed=seed, device=dev)
        loao = psis_loo(marginal, reff=relative_efficiency(marginal, n_chains),
                        labels=run.data.animals)
        if loao.labels != loao_cond.labels:
            raise RuntimeError("animal order differs between the model data and the rows")
        n_animals = len(loao.labels)
        score = ModelScores(name=run.spec.name, run_dir=str(run.run_dir), loo=loo,
                            loao_psis=loao, loao_conditional=loao_cond, inner_k=inner_k,
                            loao_i=loao.elpd_i.copy(),
                            method=["psis"] * n_animals, refit_k=[None] * n_animals,
                            refit_mc_se=[None] * n_animals, refit_converged=[None] * n_animals)
        inner_bad = [loao.labels[a] for a in np.flatnonzero(inner_k > PARETO_K_BAD)]
        if inner_bad:
            score.warnings.append(f"integrating the new random effects of {inner_bad} has "
                                  f"Pareto k > {PARETO_K_BAD}; raise --is-draws")
        if loo.n_bad:
            score.warnings.append(f"{loo.n_bad} of {loo.elpd_i.size} rows have Pareto k > "
                                  f"{PARETO_K_BAD} (max {np.max(loo.pareto_k):.2f}); "
                                  "elpd_loo is optimistic")
        bad = [a for a in np.argsort(-loao.pareto_k) if loao.pareto_k[a] > PARETO_K_BAD]
        todo = bad if refit else []
        if max_refits is not None:
            todo = todo[:max_refits]
        if todo:
            with tempfile.TemporaryDirectory(prefix="lanternpk-compare-") as tmp:
                for count, a in enumerate(todo, start=1):
                    animal = loao.labels[a]
                    log(f"  refit {count}/{len(todo)}: {run.spec.name} without {animal} "
                        f"(PSIS k = {loao.pareto_k[a]:.2f}) ...")
                    value, k, mc_se, converged = _refit_animal(
                        run, animal, full_params, refit_draws=refit_draws, is_draws=is_draws,
                        seed=seed + count, device=dev, workdir=Path(tmp),
                        progressbar=progressbar)
                    score.loao_i[a] = value
                    score.method[a] = "refit"
                    score.refit_k[a], score.refit_mc_se[a] = k, mc_se
                    score.refit_converged[a] = converged
                    if k > PARETO_K_BAD:
                        score.warnings.append(f"refit of {animal}: importance sampling of its "
                                              f"new random effects has Pareto k = {k:.2f}")
                    if not converged:
                        score.warnings.append(f"refit without {animal} failed a convergence "
                                              "check")
        if score.n_unreliable_animals:
            why = "--no-refit" if not refit else "--max-refits"
            score.warnings.append(
                f"{score.n_unreliable_animals} of {n_animals} animals keep a PSIS "
                f"leave-one-animal-out value with Pareto k > {PARETO_K_BAD} ({why}); "
                "elpd_loao is unreliable")
        scores.append(score)
    records = comparison_table(scores)
    animals = animal_records(scores)
    files = write_outputs(runs[0].run_dir, records, animals) if write else []
    return CompareResult(records=records, animals=animals, scores=scores, files=files,
                         wall_s=time.perf_counter() - start)


def format_report(result: CompareResult) -> str:
    """The text printed by ``lanternpk compare``."""
    lines = [format_table(result.records), "",
             "elpd in nats (higher is better); diff = best − this model, with the paired SE; "
             "loo: per ROI row (PSIS); loao: leave one animal out (new-animal predictive; "
             "PSIS, exact refits where Pareto k > 0.7); k>0.7: rows / animals with "
             "unreliable PSIS."]
    for r, label in zip(result.records, run_labels(result.records), strict=True):
        if r["warnings"]:
            lines.append(f"warning ({label}): {r['warnings']}")
    written = ", ".join(str(p) for p in result.files) or "nothing (not written)"
    lines += ["", f"compared {len(result.records)} runs in {result.wall_s:.1f} s; "
              f"wrote {written}"]
    return "\n".join(lines)


def run_compare_command(run_dirs: Sequence[Path], *, refit: bool, refit_draws: int | None,
                        max_refits: int | None, draws: int | None, is_draws: int,
                        device: str, seed: int, progressbar: bool = True,
                        data_path: Path | None = None) -> int:
    """CLI handler of ``lanternpk compare``: compare, print the table, return 0.

    Pareto-k problems are warnings, not failures; user errors raise
    :class:`~lanternpk.errors.UsageError` / :class:`~lanternpk.errors.DataError`.
    """
    if refit:  # parallel chains for the refits, when JAX is not loaded yet
        from lanternpk.inference import configure_jax_devices

        configure_jax_devices(max(4, os.cpu_count() or 1))

    def log(msg: str) -> None:
        notice("compare", msg)

    result = compare_runs(run_dirs, refit=refit, refit_draws=refit_draws, max_refits=max_refits,
                          draws=draws, is_draws=is_draws, device=device, seed=seed, log=log,
                          progressbar=progressbar, data_path=data_path)
    print(format_report(result))
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    return run_compare_command(args.run_dirs, refit=not args.no_refit,
                               refit_draws=args.refit_draws, max_refits=args.max_refits,
                               draws=args.draws, is_draws=args.is_draws, device=args.device,
                               seed=args.seed, progressbar=not args.quiet,
                               data_path=args.data)


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lanternpk compare`` on the CLI's subparsers; returns its parser.

    The handler is stored as ``handler`` (``args.handler(args)`` returns the exit status).
    """
    p = subparsers.add_parser(
        "compare", help="compare runs by PSIS-LOO and leave-one-animal-out cross-validation",
        description="Score runs fit to the same data: PSIS-LOO per ROI row and "
        "leave-one-animal-out (PSIS on each animal's marginal likelihood, its random effects "
        "integrated out by importance sampling; exact refits without the animal where "
        "Pareto k > 0.7, integrating over the held-out animal's new random effects). "
        "Prints a table of elpd differences with paired standard errors and "
        "Pareto-k warnings, and writes it to compare.json (and per-animal scores to "
        "compare_animals.json) in the FIRST run directory, where lanternpk report shows it. "
        "Exit status: 0 done (warnings or not); 1 a spec or data file differs from a run's; "
        "2 usage error (not a run, runs fit to different data).",
    )
    p.add_argument("run_dirs", nargs="+", type=run_path, metavar="RUN_DIR",
                   help="run directories written by lanternpk fit (two or more)")
    p.add_argument("--no-refit", action="store_true",
                   help="never refit; animals with Pareto k > 0.7 only give a warning")
    p.add_argument("--refit-draws", type=draw_count, default=None,
                   help=f"draws per chain of each refit, at least {MIN_PSIS_DRAWS} (default: "
                   "the run's own settings)")
    p.add_argument("--max-refits", type=non_negative_int, default=None,
                   help="at most this many refits per run, worst Pareto k first "
                   "(default: every animal with k > 0.7)")
    p.add_argument("--draws", type=positive_int, default=None,
                   help="posterior draws used for the log-likelihood, evenly spaced, at least "
                   f"{MIN_PSIS_DRAWS} (default: all)")
    p.add_argument("--is-draws", type=importance_draw_count, default=DEFAULT_IS_DRAWS,
                   help="importance draws of an animal's new random effects per posterior draw, "
                   "for every animal's marginal likelihood and for each refit "
                   f"(default {DEFAULT_IS_DRAWS})")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where JAX evaluates the likelihood (auto: a GPU when present)")
    p.add_argument("--seed", type=random_seed, default=DEFAULT_SEED, help="random seed")
    p.add_argument("--data", type=existing_file, default=None,
                   help="the observations file the runs were fit to, if it moved "
                   "(checked against each run's sha256)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar during refits (there is none either when stderr is "
                   "not a terminal)")
    p.set_defaults(handler=_cmd_compare)
    return p
