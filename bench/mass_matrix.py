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

Run: ``python bench/mass_matrix.py``; writes ``bench/results/mass_matrix.md`` and ``.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import json
import time
from pathlib import Path

import arviz as az
import jax
import numpy as np
from fit import STUDY, cpu_name  # bench/fit.py, beside this script
from numpyro.infer import MCMC, NUTS

from lanternpk.data.load import load_calibration, load_observations
from lanternpk.fit import library_versions
from lanternpk.inference import SamplerSettings, _flat_problem
from lanternpk.model import build_model, prepare_data
from lanternpk.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def run_nuts(problem, settings: SamplerSettings, label: str, **nuts_options) -> dict:
    """One numpyro NUTS run from the default starting points; draws and cost."""
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
    ess = az.ess(az.convert_to_dataset(draws[..., None, :]), method="bulk")["x"].values
    ess_min = float(ess.min())
    return {"mass_matrix": label, "seconds_incl_compile": seconds,
            "steps_per_draw": float(steps.mean()),
            "gradient_evaluations_sampling": int(steps.sum()),
            "ess_bulk_min": ess_min,
            "ess_bulk_min_per_1000_gradients": 1000 * ess_min / float(steps.sum()),
            "divergences": int(np.asarray(fields["diverging"]).sum()),
            "draws": draws}


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    spec = load_spec(STUDY.spec)
    data = prepare_data(spec, load_observations(STUDY.observations))
    model = build_model(spec, data, load_calibration(STUDY.calibration))
    settings = SamplerSettings()
    problem = _flat_problem(model, settings)

    runs = [run_nuts(problem, settings, "diagonal, adapted")]
    flat = runs[0]["draws"].reshape(-1, runs[0]["draws"].shape[-1])
    covariance = np.cov(flat.T)
    runs.append(run_nuts(problem, settings, "diagonal, oracle", adapt_mass_matrix=False,
                         inverse_mass_matrix=jax.numpy.asarray(np.diag(covariance))))
    runs.append(run_nuts(problem, settings, "dense, oracle", adapt_mass_matrix=False,
                         dense_mass=True, inverse_mass_matrix=jax.numpy.asarray(covariance)))
    sd = np.sqrt(np.diag(covariance))
    eigenvalues = np.linalg.eigvalsh(covariance / np.outer(sd, sd))
    for run in runs:
        del run["draws"]

    record = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
              "date": time.strftime("%Y-%m-%d"), "versions": library_versions(),
              "settings": settings.as_dict(), "parameters": int(flat.shape[1]),
              "correlation_eigenvalues": [float(eigenvalues[0]), float(eigenvalues[-1])],
              "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mass_matrix.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# Mass-matrix oracle experiment", "",
             f"`python bench/mass_matrix.py` on {record['machine']['cpu']} "
             f"({record['machine']['cores']} cores), {record['date']}; default settings "
             f"({settings.chains} chains × {settings.draws} draws, {settings.tune} tune, "
             f"numpyro NUTS), ALS-like study, {flat.shape[1]} "
             "parameters. Oracle = mass fixed to the posterior covariance of the first run's "
             "4000 draws (only the step size adapted).", "",
             "| mass matrix | steps/draw | gradients (sampling) | min bulk ESS | "
             "ESS per 1000 gradients | divergences | s (whole run) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mass_matrix']} | {r['steps_per_draw']:.1f} | "
              f"{r['gradient_evaluations_sampling']} | {r['ess_bulk_min']:.0f} | "
              f"{r['ess_bulk_min_per_1000_gradients']:.2f} | {r['divergences']} | "
              f"{r['seconds_incl_compile']:.1f} |" for r in runs]
    lines += ["", f"Posterior correlation matrix eigenvalues: {eigenvalues[0]:.3f} to "
              f"{eigenvalues[-1]:.2f}.", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items())]
    (RESULTS / "mass_matrix.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
