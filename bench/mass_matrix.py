"""Would a better mass matrix make the default fit cheaper? An oracle experiment.

NUTS takes 63 leapfrog steps on every draw of the default fit (bench/results/fit.md). If
that came from correlations a diagonal mass matrix cannot express, a dense (or low-rank)
adaptation such as nutpie's would cut it. This bench gives NUTS the best mass matrix any
adaptation could find, the posterior's own covariance, and measures what it buys:

1. ``diagonal, adapted``: the default fit (numpyro NUTS, diagonal mass adapted in 1000
   tuning steps, 4 chains × 1000 draws, ALS-like study); its 4000 draws (unconstrained
   scale) estimate the posterior covariance;
2. ``diagonal, oracle``: the same chains, mass fixed to those posterior variances (only the
   step size adapted);
3. ``dense, oracle``: mass fixed to the full posterior covariance.

The figure that does not depend on the machine's speed is **min bulk ESS per 1000 gradient
evaluations of the sampling phase** (an oracle's warm-up is not comparable: no adaptation
could start from the posterior covariance); seconds of the whole run (compile, tuning,
sampling) are reported too. Also printed: the eigenvalue range of the posterior correlation matrix.

Each seed (``--seeds N``, default 3: min bulk ESS varies by about ±20% with the seed) runs
all three; the arms are compared on their medians over the seeds.

Run: ``python bench/mass_matrix.py [--seeds N]``; writes ``bench/results/mass_matrix.md``
and ``.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse
import time
from pathlib import Path

import arviz as az
import jax
import numpy as np
from fit import STUDY, _environment, _write_results  # bench/fit.py, beside this script
from numpyro.infer import MCMC, NUTS

from lanternpk.data.load import load_calibration, load_observations
from lanternpk.inference import SamplerSettings, _flat_problem
from lanternpk.model import RANDOM_EFFECTS, SIGNED_SUFFIX, build_model, prepare_data
from lanternpk.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _pair_positions(model, problem, n: int) -> list[tuple[int, np.ndarray]]:
    """Flat positions of each sign-expanded random effect's (u, v) (model._random_effect)."""
    positions = problem.unravel(jax.numpy.arange(n, dtype=float))
    index = {v.name: np.asarray(p, dtype=int) for v, p in zip(model.value_vars, positions,
                                                               strict=True)}
    return [(int(index[sd + SIGNED_SUFFIX]), index[z + SIGNED_SUFFIX].ravel())
            for sd, z in RANDOM_EFFECTS.items()]


def _turned(draws: np.ndarray, model, problem, sign_of) -> np.ndarray:
    """(chain, draw, d) draws with each pair (u, v) multiplied by ``sign_of(u)`` (±1, shaped
    to broadcast against u's (chain, draw) draws)."""
    turned = draws.copy()
    for u, v in _pair_positions(model, problem, draws.shape[-1]):
        sign = sign_of(turned[..., u])
        turned[..., u] *= sign
        turned[..., v] *= sign[..., None]
    return turned


def sign_folded(draws: np.ndarray, model, problem) -> np.ndarray:
    """Flat draws (chain, draw, parameters) with each pair (u, v) replaced by the identified
    (|u|, sign(u)·v), draw by draw, as the model's Deterministics (v at u = 0): what ESS is
    taken on (chains may keep either sign)."""
    return _turned(draws, model, problem, lambda u: np.where(u < 0, -1.0, 1.0))


def within_chain_covariance(draws: np.ndarray, model, problem) -> np.ndarray:
    """The posterior covariance in the coordinates NUTS moves in, from (chain, draw, d).

    Each chain is first turned, pair by pair, to the sign of u where its median u is
    positive (a chain that crosses 0 keeps its crossings; without this, chains on mirror
    signs would add the distance between the modes to the variances), then the chains'
    own covariances are averaged, as a windowed adaptation estimates them within a chain.
    """
    aligned = _turned(draws, model, problem,
                      lambda u: np.where(np.median(u, axis=1, keepdims=True) < 0, -1.0, 1.0))
    return np.mean([np.cov(chain.T) for chain in aligned], axis=0)


def run_nuts(model, problem, settings: SamplerSettings, label: str, **nuts_options) -> dict:
    """One numpyro NUTS run from the default starting points; draws and cost (ESS of the
    sign-folded draws)."""
    potential = jax.jit(lambda flat: -problem.log_density(flat))
    mcmc = MCMC(NUTS(potential_fn=potential, target_accept_prob=settings.target_accept,
                     **nuts_options),
                num_warmup=settings.tune, num_samples=settings.draws,
                num_chains=settings.chains, chain_method="parallel", progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.split(jax.random.PRNGKey(settings.seed), settings.chains),
             init_params=problem.initial, extra_fields=("num_steps", "diverging"))
    fields = mcmc.get_extra_fields(group_by_chain=True)
    draws = np.asarray(mcmc.get_samples(group_by_chain=True))
    seconds = time.perf_counter() - start
    steps = np.asarray(fields["num_steps"])
    folded = sign_folded(draws, model, problem)
    ess = az.ess(az.convert_to_dataset(folded[..., None, :]), method="bulk")["x"].values
    ess_min = float(ess.min())
    return {"mass_matrix": label, "seconds_incl_compile": seconds,
            "steps_per_draw": float(steps.mean()),
            "gradient_evaluations_sampling": int(steps.sum()),
            "ess_bulk_min": ess_min,
            "ess_bulk_min_per_1000_gradients": 1000 * ess_min / float(steps.sum()),
            "divergences": int(np.asarray(fields["diverging"]).sum()),
            "draws": draws}


def _oracle_runs(model, problem, settings: SamplerSettings
                 ) -> tuple[list[dict], np.ndarray, int]:
    """The three arms with ``settings.seed``; the posterior correlation's eigenvalues.

    The covariance is :func:`within_chain_covariance`; an oracle chain that settles on the
    other sign of a random effect's scale sees that effect's covariances with the rest of
    the parameters reversed in sign (variances, and so the diagonal oracle, are unchanged)."""
    runs = [run_nuts(model, problem, settings, "diagonal, adapted")]
    covariance = within_chain_covariance(runs[0]["draws"], model, problem)
    runs.append(run_nuts(model, problem, settings, "diagonal, oracle", adapt_mass_matrix=False,
                         inverse_mass_matrix=jax.numpy.asarray(np.diag(covariance))))
    runs.append(run_nuts(model, problem, settings, "dense, oracle", adapt_mass_matrix=False,
                         dense_mass=True, inverse_mass_matrix=jax.numpy.asarray(covariance)))
    sd = np.sqrt(np.diag(covariance))
    eigenvalues = np.linalg.eigvalsh(covariance / np.outer(sd, sd))
    for run in runs:
        del run["draws"]
        run["seed"] = settings.seed
    return runs, eigenvalues, int(covariance.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    jax.config.update("jax_enable_x64", True)
    spec = load_spec(STUDY.spec)
    data = prepare_data(spec, load_observations(STUDY.observations))
    model = build_model(spec, data, load_calibration(STUDY.calibration))
    load_start = os.getloadavg()
    runs, eigenvalues = [], []
    for i in range(args.seeds):
        settings = SamplerSettings(seed=SamplerSettings.seed + i)
        seed_runs, seed_eigenvalues, n_parameters = _oracle_runs(
            model, _flat_problem(model, settings), settings)
        runs += seed_runs
        eigenvalues.append([float(seed_eigenvalues[0]), float(seed_eigenvalues[-1])])
    arms = list(dict.fromkeys(r["mass_matrix"] for r in runs))
    medians = {arm: {key: float(np.median([r[key] for r in runs if r["mass_matrix"] == arm]))
                     for key in ("steps_per_draw", "ess_bulk_min",
                                 "ess_bulk_min_per_1000_gradients")} for arm in arms}
    record = {**_environment(),
              "settings": {**settings.as_dict(), "seed": None}, "seeds": args.seeds,
              "parameters": n_parameters, "correlation_eigenvalues": eigenvalues,
              "runs": runs, "medians": medians,
              "load_average_start_end": [load_start, os.getloadavg()]}
    lines = ["# Mass-matrix oracle experiment", "",
             f"`python bench/mass_matrix.py --seeds {args.seeds}` on "
             f"{record['machine']['cpu']} ({record['machine']['cores']} cores), "
             f"{record['date']}; default settings ({settings.chains} chains × "
             f"{settings.draws} draws, {settings.tune} tune, numpyro NUTS), ALS-like study, "
             f"{n_parameters} parameters, seeds {SamplerSettings.seed} to "
             f"{SamplerSettings.seed + args.seeds - 1}. Oracle = mass fixed to the posterior "
             "covariance of the same seed's adapted run (4000 draws; only the step size "
             "adapted).", "",
             "| mass matrix | seed | steps/draw | gradients (sampling) | min bulk ESS | "
             "ESS per 1000 gradients | divergences | s (whole run) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mass_matrix']} | {r['seed']} | {r['steps_per_draw']:.1f} | "
              f"{r['gradient_evaluations_sampling']} | {r['ess_bulk_min']:.0f} | "
              f"{r['ess_bulk_min_per_1000_gradients']:.2f} | {r['divergences']} | "
              f"{r['seconds_incl_compile']:.1f} |" for r in runs]
    lines += ["", f"Medians over the {args.seeds} seeds:", "",
              "| mass matrix | steps/draw | min bulk ESS | ESS per 1000 gradients |",
              "|---|---|---|---|"]
    lines += [f"| {arm} | {m['steps_per_draw']:.1f} | {m['ess_bulk_min']:.0f} | "
              f"{m['ess_bulk_min_per_1000_gradients']:.2f} |" for arm, m in medians.items()]
    lines += ["", "Posterior correlation matrix eigenvalues, per seed: "
              + "; ".join(f"{lo:.3f} to {hi:.2f}" for lo, hi in eigenvalues) + "."]
    _write_results(RESULTS, "mass_matrix", record, lines)


if __name__ == "__main__":
    main()
