"""End-to-end fit benchmark: wall time (including compile) and minimum bulk ESS per second.

What is measured, on the bundled ALS-like study (16 animals, 368 ROIs) with the default
spec, 4 chains × 1000 draws after 1000 tuning steps:
- each sampler of the dispatch table (numpyro, nutpie, pymc, blackjax), and numpyro through
  ``pm.sample(nuts_sampler="numpyro")`` (what a PyMC user would run instead of our driver):
  wall time of model building + sampling (graph compile included; imports, data loading and
  the summary are not, see the `lanternpk fit` line for the whole command), min bulk ESS
  over the model's parameters (``lanternpk.model.parameter_names``: the free variables, a
  sign-expanded random effect by its scale and effects), min bulk ESS / wall second,
  divergences;
- the default fit (numpyro) with several seeds (``--seeds``, default 5): the min bulk ESS
  of one run varies by about ±20% with the seed, so the issue's targets are judged on the
  medians;
- every fit runs in a fresh process (its clock starts after the imports), so that none
  skips the one-time start-up costs an earlier fit in the same process paid; JAX's
  compilation cache is off, but PyTensor's C cache and numba's cache persist on disk between
  processes, so the pymc and nutpie rows may compile warm (in their favour);
- scaling of the default sampler with the number of animals (16, 32, 64, 128; studies
  simulated from the ALS truth with more animals per sacrifice group);
- the command a user runs, `lanternpk fit` on the bundled study with default settings, timed
  as a fresh process (imports, validation, compile, sampling, prior draws, diagnostics,
  summary, writing the run directory), first with an empty JAX compilation cache, then with
  the cache that first run filled (lanternpk.compile_cache; on by default for the command);
- the default fit with a warm compilation cache (filled by one fit of the study, then every
  seed again); every other fit here runs with the cache off, so its wall time includes
  compiling;
- the same model with the kinetics solved by `pymc.ode.DifferentialEquation`: one
  log-density + gradient evaluation is timed and the fit time is extrapolated from the
  gradient evaluations numpyro used (said so in the output; not sampled, it would take hours).

Run: ``python bench/fit.py [--quick] [--seeds N] [--out DIR] [--name NAME]``; writes
``DIR/NAME.md`` and ``NAME.json`` (default ``bench/results/fit.md`` and ``fit.json``).
``--compare-samplers S1,S2`` fits only those samplers on the same seeds (``--baseline
CHECKOUT`` adds the default sampler of another checkout, for a before/after); ``--ode-only
FIT_JSON`` times only the pm.ode model.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np

from lanternpk.compile_cache import ENV_VAR as CACHE_ENV
from lanternpk.compile_cache import enable_compile_cache
from lanternpk.data.load import load_calibration, load_observations
from lanternpk.data.simulate import Sacrifice, load_truth, simulate_study
from lanternpk.demo import demo_files
from lanternpk.fit import library_versions
from lanternpk.inference import SamplerSettings, sample
from lanternpk.model import build_model, parameter_names, prepare_data
from lanternpk.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
#: The bundled ALS-like study and the default spec (the demo's files).
STUDY = demo_files(ROOT)
RESULTS = ROOT / "bench" / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _study(n_animals: int):
    """Observations and standard curve of the ALS design with ``n_animals`` animals."""
    if n_animals == 16:
        return (load_observations(STUDY.observations), load_calibration(STUDY.calibration))
    truth = load_truth(STUDY.truth)
    per_group = n_animals // (2 * len(truth.design.sacrifice))
    design = truth.design.model_copy(update={"sacrifice": [
        Sacrifice(time_h=g.time_h, animals=per_group) for g in truth.design.sacrifice]})
    study = simulate_study(truth.model_copy(update={"design": design}), seed=n_animals)
    obs = study.observations.copy()
    obs.index = np.arange(2, len(obs) + 2)
    return obs, study.calibration.assign(setting="in_vitro")


def run_fit(sampler: str, n_animals: int, *, draws: int, tune: int,
            seed: int = SamplerSettings.seed, cache: Path | None = None,
            checkout: Path | None = None) -> dict:
    """One fit in a fresh Python process, so that every fit pays the same one-time costs
    (PyTensor's first graph rewrite, JAX and sampler start-up: ~2 s that a second fit in the
    same process would skip). The clock starts after the imports, as in :func:`_one_fit`.
    JAX's persistent compilation cache is off unless ``cache`` names its directory.
    ``checkout`` runs another checkout of lanternpk instead (its ``bench/fit.py`` with its
    ``src`` first on the path), for a before/after comparison in one run."""
    script, env = Path(__file__), {**os.environ, CACHE_ENV: str(cache) if cache else "off"}
    if checkout is not None:
        script, env = checkout / "bench" / "fit.py", _checkout_environment(checkout, env)
    done = subprocess.run([sys.executable, str(script), "--one", sampler, str(n_animals),
                           str(seed), "--draws", str(draws), "--tune", str(tune)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:  # record a crash instead of stopping the bench
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"sampler": sampler, "animals": n_animals, "seed": seed,
                "error": f"exit {done.returncode}: {last[:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


#: numpyro as a PyMC user runs it, without our driver (inference.sample_numpyro).
PM_SAMPLE_NUMPYRO = "pm.sample-numpyro"


def _pm_sample_numpyro(model, *, draws: int, tune: int, seed: int):
    """``pm.sample(nuts_sampler="numpyro")`` with the default fit's other settings."""
    import pymc as pm

    settings = SamplerSettings(draws=draws, tune=tune, seed=seed)
    with model:
        return pm.sample(draws=draws, tune=tune, chains=settings.chains,
                         nuts_sampler="numpyro", random_seed=seed,
                         target_accept=settings.target_accept, progressbar=False,
                         compute_convergence_checks=False,
                         idata_kwargs={"log_likelihood": False})


def _one_fit(sampler: str, n_animals: int, *, draws: int, tune: int, seed: int) -> dict:
    spec = load_spec(STUDY.spec)
    obs, cal = _study(n_animals)
    start = time.perf_counter()
    model = build_model(spec, prepare_data(spec, obs), cal)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if sampler == PM_SAMPLE_NUMPYRO:
                idata = _pm_sample_numpyro(model, draws=draws, tune=tune, seed=seed)
            else:
                idata = sample(model, SamplerSettings(sampler=sampler, draws=draws, tune=tune,
                                                      seed=seed), progressbar=False)
    except Exception as err:  # record a sampler that fails instead of stopping the bench
        return {"sampler": sampler, "animals": n_animals, "seed": seed,
                "error": f"{type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}"}
    wall = time.perf_counter() - start
    ess = az.ess(idata.posterior[parameter_names(model)], method="bulk")
    stats = idata.sample_stats
    grad_evals = int(stats["n_steps"].sum()) if "n_steps" in stats else None
    lowest = min(ess.data_vars, key=lambda name: float(np.nanmin(ess[name].values)))
    ess_min = float(np.nanmin(ess[lowest].values))
    return {"sampler": sampler, "animals": n_animals, "rows": len(obs), "seed": seed,
            "wall_s": wall, "ess_bulk_min": ess_min, "ess_bulk_min_parameter": lowest,
            "ess_bulk_min_per_s": ess_min / wall,
            "divergences": int(stats["diverging"].sum()),
            "gradient_evaluations_sampling": grad_evals}


def cli_fit_seconds(cache: Path) -> float:
    """Wall seconds of ``lanternpk fit`` on the bundled ALS study (defaults, fresh process),
    with JAX's compilation cache in ``cache`` (cold when empty)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lanternpk.cli", "fit",
                        str(STUDY.observations), "--model", str(STUDY.spec),
                        "--calibration", str(STUDY.calibration),
                        "--out", str(Path(tmp) / "run")],
                       check=True, capture_output=True,
                       env={**os.environ, "XLA_FLAGS": "", CACHE_ENV: str(cache)})
        return time.perf_counter() - start


#: The pm.ode model's study size and timed calls.
ODE_ANIMALS, ODE_REPEATS = 16, 5


def ode_gradient_seconds(n_animals: int = ODE_ANIMALS, *, repeats: int = ODE_REPEATS
                         ) -> tuple[float, float]:
    """Median seconds of one log-density + gradient with pm.ode.DifferentialEquation kinetics
    (``repeats`` calls after a first, untimed one), and the absolute difference of its log
    density from the closed-form model's at the initial point (the same model, or the
    timing compares different things).

    One ODE solve per animal (its parameters are the animal's), over every imaging time of
    the study, read at each of its sessions' times: as a user would write it.
    """
    import pymc as pm
    import pytensor.tensor as pt

    import lanternpk.model as model_module

    spec = load_spec(STUDY.spec)
    obs, cal = _study(n_animals)
    data = prepare_data(spec, obs)
    session_animal = data.session_animal

    def ode_cells(first_pass, release, loss, t, *, filter_index, n_organs, blood_efflux=None,
                  xp=None):
        times = np.unique(t.ravel())

        def rhs(y, _t, p):
            f = p[:n_organs]
            k = p[n_organs:2 * n_organs]
            r = p[2 * n_organs]
            lung = y[filter_index]
            out = [-k[j] * y[j] + r * f[j] * lung for j in range(n_organs)]
            out[filter_index] = out[filter_index] - r * lung
            return out

        ode = pm.ode.DifferentialEquation(func=rhs, times=times, n_states=n_organs,
                                          n_theta=2 * n_organs + 1, t0=0)
        rows = [None] * len(session_animal)
        for animal in np.unique(session_animal):
            sessions = np.flatnonzero(session_animal == animal)
            s = sessions[0]  # the animal's parameters, as every one of its sessions has them
            theta = pt.concatenate([first_pass[s], loss[s], release[s][None]])
            sol = ode(y0=first_pass[s], theta=theta)  # (times, organs)
            for session in sessions:
                rows[session] = sol[int(np.searchsorted(times, t[session, 0]))]
        return pt.stack(rows)[:, None, :]

    original = model_module.organ_cells
    model_module.organ_cells = ode_cells
    try:
        model = build_model(spec, data, cal)
    finally:
        model_module.organ_cells = original
    point = model.initial_point()
    dlogp = model.compile_dlogp()
    dlogp(point)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        dlogp(point)
        seconds.append(time.perf_counter() - start)
    closed_form = build_model(spec, data, cal)
    logp_difference = abs(float(model.compile_logp()(point))
                          - float(closed_form.compile_logp()(point)))
    return float(np.median(seconds)), logp_difference


def ode_fit_seconds(gradient_s: float, sampling_gradients: float, cores: int, *,
                    chains: int = 4) -> float:
    """Extrapolated ``pm.sample`` wall time of the pm.ode model: the gradient evaluations of
    numpyro's sampling phase (all chains), doubled for as many tuning steps (a lower bound:
    warm-up takes more steps per iteration), run on ``min(chains, cores)`` cores at once."""
    return gradient_s * sampling_gradients * 2 / min(chains, cores)


def _ode_lines(gradient_s: float, logp_difference: float, sampling_gradients: float | None,
               extrapolated_s: float | None) -> list[str]:
    lines = [f"pm.ode.DifferentialEquation (one solve per animal): one log-density + gradient "
             f"takes {gradient_s:.2f} s ({ODE_ANIMALS} animals; median of {ODE_REPEATS} calls); "
             f"its log density differs from the closed-form model's by {logp_difference:.1e} "
             "at the initial point."]
    if extrapolated_s:
        lines.append(f"Extrapolated fit time with pm.ode (× the {round(sampling_gradients)} "
                     "gradient evaluations numpyro's sampling phase used, ×2 for tuning, a "
                     f"lower bound; chains on {min(4, os.cpu_count() or 1)} cores at once): "
                     f"{extrapolated_s / 3600:.1f} h — extrapolated, not run.")
    return lines


def _environment() -> dict:
    """Machine, library versions and date, recorded with every result."""
    return {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                        "platform": platform.platform()},
            "versions": library_versions(), "date": time.strftime("%Y-%m-%d")}


def _write_results(out: Path, name: str, record: dict, lines: list[str]) -> None:
    """``NAME.json`` (the record) and ``NAME.md`` (``lines``, then load and versions)."""
    lines = [*lines, "", "Load average (1, 5, 15 min) before and after: "
             + "; ".join(", ".join(f"{x:.1f}" for x in la)
                         for la in record["load_average_start_end"]) + ".", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items())]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _ode_only(fit_json: Path, out: Path, name: str) -> None:
    """Time the pm.ode model alone; extrapolate with the gradient count in ``fit_json``."""
    earlier = json.loads(fit_json.read_text(encoding="utf-8"))
    gradients = earlier["default_fit_median"]["gradient_evaluations_sampling"]
    load_start = os.getloadavg()
    ode_s, logp_difference = ode_gradient_seconds()
    extrapolated = ode_fit_seconds(ode_s, gradients, os.cpu_count() or 1)
    record = {**_environment(), "gradient_count_from": str(fit_json),
              "gradient_evaluations_sampling": gradients, "pm_ode_gradient_s": ode_s,
              "pm_ode_logp_difference": logp_difference,
              "pm_ode_fit_s_extrapolated": extrapolated,
              "load_average_start_end": [load_start, os.getloadavg()]}
    _write_results(out, name, record, [
        "# pm.ode fit-time extrapolation", "",
        f"`python bench/fit.py --ode-only {fit_json} --name {name}` on "
        f"{record['machine']['cpu']} ({record['machine']['cores']} cores), {record['date']}; "
        f"gradient count of the default fit's sampling phase from `{fit_json}` (median over "
        "its seeds).", "",
        *_ode_lines(ode_s, logp_difference, gradients, extrapolated)])


def _checkout_environment(checkout: Path, env: dict) -> dict:
    """``env`` with ``checkout``'s ``src`` first on the path; checks that Python then
    imports lanternpk from there (not from this checkout's editable install)."""
    env = {**env, "PYTHONPATH": os.pathsep.join(
        [str(checkout / "src"), *filter(None, [env.get("PYTHONPATH")])])}
    found = subprocess.run([sys.executable, "-c", "import lanternpk; print(lanternpk.__file__)"],
                           capture_output=True, text=True, env=env).stdout.strip()
    if not found or not Path(found).resolve().is_relative_to((checkout / "src").resolve()):
        raise SystemExit(f"--baseline {checkout}: Python imports lanternpk from {found or '?'}, "
                         f"not from {checkout / 'src'}")
    return env


def _git_revision(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty",
                           "--abbrev=7"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown revision"


def _compare_samplers(samplers: list[str], n_seeds: int, out: Path, name: str,
                      baseline: Path | None = None) -> None:
    """Each sampler on the same seeds (default fit, 16 animals, 4 × 1000), fits interleaved
    seed by seed so that a drift of the machine's speed hits every sampler alike. With
    ``baseline`` (another checkout), its default sampler is one more arm."""
    seeds = [SamplerSettings.seed + i for i in range(n_seeds)]
    load_start = os.getloadavg()
    arms = {sampler: (sampler, None) for sampler in samplers}
    if baseline is not None:
        arms[f"numpyro, baseline {_git_revision(baseline)}"] = ("numpyro", baseline)
    runs = {label: [] for label in arms}
    for seed in seeds:
        for label, (sampler, checkout) in arms.items():
            runs[label].append(run_fit(sampler, 16, draws=1000, tune=1000, seed=seed,
                                       checkout=checkout))
    record = {**_environment(), "seeds": seeds, "runs": runs,
              "revision": _git_revision(ROOT),
              "medians": {s: _median_run(r) for s, r in runs.items()},
              "load_average_start_end": [load_start, os.getloadavg()]}
    command = (f"python bench/fit.py --compare-samplers {','.join(samplers)} --seeds {n_seeds}"
               + (f" --baseline {baseline}" if baseline else "") + f" --name {name}")
    lines = ["# Sampler comparison over seeds", "",
             f"`{command}` at {record['revision']} on {record['machine']['cpu']} "
             f"({record['machine']['cores']} cores), {record['date']}: the default fit "
             "(ALS-like study, 16 animals, 4 chains × 1000 draws after 1000 tuning steps, JAX "
             "compilation cache off), every fit in a fresh process, the arms taking turns seed "
             "by seed.", "",
             "| sampler | seed | wall s | min bulk ESS | lowest-ESS parameter | ESS/s | "
             "divergences |", "|---|---|---|---|---|---|---|"]
    for sampler, sampler_runs in runs.items():
        for r in sampler_runs:
            lines.append(f"| {sampler} | {r['seed']} | failed: {r['error']} | | | | |"
                         if "error" in r else
                         f"| {sampler} | {r['seed']} | {r['wall_s']:.1f} | "
                         f"{r['ess_bulk_min']:.0f} | {r['ess_bulk_min_parameter']} | "
                         f"{r['ess_bulk_min_per_s']:.1f} | {r['divergences']} |")
    lines += ["", "| sampler | median wall s | median min bulk ESS | median ESS/s | "
              "ESS/s range | max divergences |", "|---|---|---|---|---|---|"]
    for sampler, sampler_runs in runs.items():
        ok = [r for r in sampler_runs if "error" not in r]
        if not ok:
            lines.append(f"| {sampler} | all failed | | | | |")
            continue
        m = record["medians"][sampler]
        lines.append(f"| {sampler} | {m['wall_s']:.1f} | {m['ess_bulk_min']:.0f} | "
                     f"{m['ess_bulk_min_per_s']:.1f} | "
                     f"{min(r['ess_bulk_min_per_s'] for r in ok):.1f}–"
                     f"{max(r['ess_bulk_min_per_s'] for r in ok):.1f} | {m['divergences']} |")
    _write_results(out, name, record, lines)


def _median_run(runs: list[dict]) -> dict:
    """Median wall time, min bulk ESS, ESS/s and gradient count over seeded runs."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    keys = ("wall_s", "ess_bulk_min", "ess_bulk_min_per_s", "gradient_evaluations_sampling")
    return {"sampler": ok[0]["sampler"], "animals": ok[0]["animals"], "seed": "median",
            "divergences": max(r["divergences"] for r in ok),
            **{k: float(np.median([r[k] for r in ok])) for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 draws, 300 tune")
    parser.add_argument("--seeds", type=int, default=5,
                        help="seeds of the default fit (16 animals, numpyro); min bulk ESS "
                        "varies by ±20%% from seed to seed, so its targets are judged on the "
                        "median (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--name", default="fit", help="file stem of the results (NAME.md/.json)")
    parser.add_argument("--ode-only", type=Path, metavar="FIT_JSON",
                        help="time only the pm.ode model, extrapolating with the gradient "
                        "count of the default fit recorded in FIT_JSON (an earlier NAME.json)")
    parser.add_argument("--compare-samplers", metavar="S1,S2,...",
                        help="only fit these samplers (of numpyro, nutpie, pymc, blackjax, "
                        f"{PM_SAMPLE_NUMPYRO}) on the same --seeds, in one run, and compare "
                        "their medians")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="with --compare-samplers: also fit the default sampler of another "
                        "checkout of lanternpk (e.g. a `git worktree` of an earlier commit)")
    parser.add_argument("--one", nargs=3, metavar=("SAMPLER", "ANIMALS", "SEED"),
                        help=argparse.SUPPRESS)  # one fit, printed as JSON (run_fit)
    parser.add_argument("--draws", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tune", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sampler, animals, seed = args.one
        enable_compile_cache()  # off unless run_fit named a directory in CACHE_ENV
        print(json.dumps(_one_fit(sampler, int(animals), draws=args.draws, tune=args.tune,
                                  seed=int(seed))))
        return
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.baseline and not args.compare_samplers:
        parser.error("--baseline needs --compare-samplers")
    if args.ode_only:
        _ode_only(args.ode_only, args.out, args.name)
        return
    if args.compare_samplers:
        _compare_samplers(args.compare_samplers.split(","), args.seeds, args.out, args.name,
                          args.baseline)
        return
    draws = tune = 300 if args.quick else 1000
    load_start = os.getloadavg()
    seeds = [SamplerSettings.seed + i for i in range(args.seeds)]
    with tempfile.TemporaryDirectory() as cache:  # cold (empty), then warm
        cli_s, cli_warm_s = (cli_fit_seconds(Path(cache) / "cli") for _ in range(2))
        fit_cache = Path(cache) / "fit"
        run_fit("numpyro", 16, draws=draws, tune=tune, cache=fit_cache)  # fills the cache
        warm_runs = [run_fit("numpyro", 16, draws=draws, tune=tune, seed=s, cache=fit_cache)
                     for s in seeds]
    default_runs = [run_fit("numpyro", 16, draws=draws, tune=tune, seed=s) for s in seeds]
    rows = [default_runs[0]] + [run_fit(s, 16, draws=draws, tune=tune)
                                for s in ("nutpie", "pymc", "blackjax", PM_SAMPLE_NUMPYRO)]
    scaling = [default_runs[0]] + [run_fit("numpyro", n, draws=draws, tune=tune)
                                   for n in (32, 64, 128)]
    ode_s, ode_logp_diff = ode_gradient_seconds()
    numpyro = _median_run(default_runs)
    ode_extrapolated = (ode_fit_seconds(ode_s, numpyro["gradient_evaluations_sampling"],
                                        os.cpu_count() or 1)
                        if numpyro.get("gradient_evaluations_sampling") else None)
    record = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                          "platform": platform.platform()},
              "versions": library_versions(), "draws": draws, "tune": tune, "chains": 4,
              "samplers": rows, "default_fit_seeds": default_runs,
              "default_fit_median": numpyro, "default_fit_warm_cache_seeds": warm_runs,
              "default_fit_warm_cache_median": _median_run(warm_runs),
              "scaling": scaling, "cli_fit_s": cli_s, "cli_fit_s_warm_cache": cli_warm_s,
              "pm_ode_gradient_s": ode_s, "pm_ode_logp_difference": ode_logp_diff,
              "pm_ode_fit_s_extrapolated": ode_extrapolated,
              "load_average_start_end": [load_start, os.getloadavg()],
              "date": time.strftime("%Y-%m-%d")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# Fit benchmark", "", f"`python bench/fit.py{' --quick' if args.quick else ''}"
             f" --seeds {args.seeds}` on {record['machine']['cpu']} "
             f"({record['machine']['cores']} cores), {record['date']}; 4 chains × {draws} "
             f"draws, {tune} tune; ALS-like study. Rows at 16 animals use the default seed "
             f"{seeds[0]}.", "",
             "| sampler | animals | wall s (incl. compile) | min bulk ESS | ESS/s | divergences |",
             "|---|---|---|---|---|---|"]
    for r in rows + scaling[1:]:
        if "error" in r:
            lines.append(f"| {r['sampler']} | {r['animals']} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['sampler']} | {r['animals']} | {r['wall_s']:.1f} | "
                         f"{r['ess_bulk_min']:.0f} | {r['ess_bulk_min_per_s']:.1f} | "
                         f"{r['divergences']} |")
    ok = [r for r in default_runs if "error" not in r]
    lines += ["", f"Default fit (numpyro, 16 animals) with {len(seeds)} seeds:", "",
              "| seed | wall s | min bulk ESS | lowest-ESS parameter | ESS/s | divergences |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['wall_s']:.1f} | {r['ess_bulk_min']:.0f} | "
              f"{r['ess_bulk_min_parameter']} | {r['ess_bulk_min_per_s']:.1f} | "
              f"{r['divergences']} |" if "error" not in r else
              f"| {r['seed']} | failed: {r['error']} | | | | |" for r in default_runs]
    if ok and (len(ok) < 5 or args.quick):
        lines += ["", f"Targets of the issue: not judged here ({len(ok)} seeds of 4 × {draws}; "
                  "they are judged on the medians of at least 5 seeds of 4 × 1000)."]
    elif ok:
        met = {True: "met", False: "**NOT met**"}
        divergences = sum(r["divergences"] for r in ok)
        lines += ["", f"Targets of the issue (default sampler, 16 animals, 4 × {draws}; "
                  f"medians over the {len(ok)} seeds): wall ≤ 20 s "
                  f"{met[numpyro['wall_s'] <= 20]} ({numpyro['wall_s']:.1f} s); "
                  f"min bulk ESS/s ≥ 80 {met[numpyro['ess_bulk_min_per_s'] >= 80]} "
                  f"({numpyro['ess_bulk_min_per_s']:.1f}; range "
                  f"{min(r['ess_bulk_min_per_s'] for r in ok):.1f}–"
                  f"{max(r['ess_bulk_min_per_s'] for r in ok):.1f}); zero divergences "
                  f"{met[divergences == 0]} ({divergences} in all)."]
    lines += ["", "Load average (1, 5, 15 min) before the run: "
              + ", ".join(f"{x:.1f}" for x in load_start)
              + " (work already on the machine); after it: "
              + ", ".join(f"{x:.1f}" for x in record["load_average_start_end"][1])
              + f" (includes the benchmark's own threads); {os.cpu_count()} cores."]
    lines += ["", f"`lanternpk fit` on the bundled ALS study, default settings (4 × 1000, "
              f"numpyro), as a fresh process from start to exit: {cli_s:.1f} s with an empty "
              f"JAX compilation cache, {cli_warm_s:.1f} s when a first fit has filled it."]
    warm = record["default_fit_warm_cache_median"]
    lines += ["", "Default fit with a warm compilation cache (filled by one fit of the same "
              "study, then each seed in a fresh process; the targets above are judged "
              "without it):", "", "| seed | wall s | min bulk ESS | ESS/s |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['wall_s']:.1f} | {r['ess_bulk_min']:.0f} | "
              f"{r['ess_bulk_min_per_s']:.1f} |" if "error" not in r else
              f"| {r['seed']} | failed: {r['error']} | | |" for r in [*warm_runs, warm]]
    lines += ["", *_ode_lines(ode_s, ode_logp_diff, numpyro.get("gradient_evaluations_sampling"),
                              ode_extrapolated)]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items())]
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
