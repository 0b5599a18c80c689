"""Where a leapfrog step of the default fit spends its time (the ≥ 80 ESS/s target of issue 4).

The default fit takes 63 leapfrog steps on every draw (bench/results/mass_matrix.md), so its
sampling time is gradients × seconds per gradient. This bench measures, on the ALS-like study
(PyMC's JAX log density of one flat vector, as ``inference.sample_numpyro`` samples it):

1. one log density + gradient in a jitted loop of ``--steps`` evaluations, one device (the
   floor of a leapfrog step's cost), and the operations of its optimised program that run
   as kernels of the CPU runtime (fusions, copies...; not parameters, constants, tuples);
2. the same loop on 4 chains at once, the way the default fit runs them on 2 cores: ``pmap``
   over 4 JAX CPU devices (numpyro's ``chain_method="parallel"``) against 4 Python threads,
   each running the jitted loop on its own device;
3. the same loop with the XLA CPU optimisation presets (``--xla_cpu_opt_preset``), each in a
   fresh process;
4. numpyro's NUTS, default settings (4 chains × 1000 draws, 1000 tuning steps), with its
   default PRNG (threefry) and with ``rbg`` keys (NUTS draws random numbers at every tree
   doubling): whole-run seconds, compile included.

Seconds vary with the machine's load: each comparison runs in one invocation, and the load
average is recorded. Run: ``python bench/gradient.py [--steps N]``; writes
``bench/results/gradient.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PRESETS = ("CPU_OPT_PRESET_DEFAULT", "CPU_OPT_PRESET_FAST_RUNTIME",
           "CPU_OPT_PRESET_FAST_COMPILE")


def _problem(chains: int):
    """The ALS study's flat log density and starting points (``inference._flat_problem``)."""
    from fit import STUDY, _study  # bench/fit.py, beside this script

    from lanternpk.inference import SamplerSettings, _flat_problem
    from lanternpk.model import build_model, prepare_data
    from lanternpk.spec import load_spec

    spec = load_spec(STUDY.spec)
    obs, calibration = _study(16)
    model = build_model(spec, prepare_data(spec, obs), calibration)
    return _flat_problem(model, SamplerSettings(chains=chains))


def _loop(log_density, steps: int):
    """``steps`` value-and-gradient evaluations, each depending on the last (not hoisted);
    the values are summed into the loop's state, so XLA cannot drop their computation."""
    import jax

    value_and_grad = jax.value_and_grad(log_density)

    def run(x):
        def body(_, carry):
            value, grad = value_and_grad(carry[0] + 1e-12 * carry[1])
            return carry[0], grad, carry[2] + value
        return jax.lax.fori_loop(0, steps, body, (x, jax.numpy.zeros_like(x), 0.0 * x[0]))
    return run


def _best_of(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` timed calls (the first, compiling call not counted), seconds."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def measure_gradient(steps: int) -> dict:
    """Part 1 and 2: one device, then 4 chains by ``pmap`` and by threads (µs per gradient)."""
    import collections
    import re
    import threading

    import jax

    problem = _problem(chains=4)
    loop = _loop(problem.log_density, steps)
    one = jax.jit(loop)
    x0 = problem.initial[0]
    single = _best_of(lambda: one(x0)) / steps
    hlo = jax.jit(jax.value_and_grad(problem.log_density)).lower(x0).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    shape = r"(?:\((?:[^()]|\([^()]*\))*\)|\S+)"  # f64[273]{0}, or a tuple of shapes
    ops = collections.Counter(re.findall(rf"=\s*{shape}\s+([a-z][\w-]*)\(", entry))
    free = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}  # no kernel
    kernels = {op: n for op, n in ops.items() if op not in free}
    parallel = jax.pmap(loop)
    pmap_s = _best_of(lambda: parallel(problem.initial)) / steps
    devices = jax.devices()[:4]
    starts = [jax.device_put(problem.initial[i], d) for i, d in enumerate(devices)]
    for x in starts:  # compile for each device outside the timing
        jax.block_until_ready(one(x))

    def threaded():
        out = [None] * len(starts)

        def run(i):
            out[i] = jax.block_until_ready(one(starts[i]))
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(starts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out
    threads_s = _best_of(threaded) / steps
    cores = min(len(os.sched_getaffinity(0)), 4)
    return {"us_per_gradient_one_device": single * 1e6,
            "xla_kernels_in_value_and_grad": dict(kernels),
            "us_per_4_chain_step_pmap": pmap_s * 1e6,
            "us_per_4_chain_step_threads": threads_s * 1e6,
            "us_per_gradient_per_core_pmap": pmap_s * 1e6 * cores / 4,
            "us_per_gradient_per_core_threads": threads_s * 1e6 * cores / 4}


def measure_nuts(prng: str) -> dict:
    """Part 4: the default numpyro fit's NUTS run with ``prng`` keys (compile included)."""
    import jax
    import numpy as np
    from numpyro.infer import MCMC, NUTS

    problem = _problem(chains=4)
    potential = jax.jit(lambda flat: -problem.log_density(flat))
    mcmc = MCMC(NUTS(potential_fn=potential, target_accept_prob=0.9), num_warmup=1000,
                num_samples=1000, num_chains=4, chain_method="parallel", progress_bar=False)
    keys = jax.random.split(jax.random.key(20261125, impl=prng), 4)
    start = time.perf_counter()
    mcmc.run(keys, init_params=problem.initial, extra_fields=("num_steps",))
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start
    sampling = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    return {"prng": prng, "nuts_s": seconds, "gradients_sampling": sampling}


def _in_fresh_process(part: str, xla_flags: str, steps: int) -> dict:
    env = {**os.environ,
           "XLA_FLAGS": f"--xla_force_host_platform_device_count=4 {xla_flags}".strip()}
    done = subprocess.run([sys.executable, __file__, "--part", part, "--steps", str(steps)],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(results: dict) -> str:
    base = results["presets"]["CPU_OPT_PRESET_DEFAULT"]
    kernels = base["xla_kernels_in_value_and_grad"]
    lines = [
        "# Where a leapfrog step's time goes",
        "",
        f"`python bench/gradient.py --steps {results['steps']}` on {results['machine']}, "
        f"{results['date']}; ALS-like study (16 animals, 273 unconstrained parameters).",
        "",
        "## One log density + gradient (jitted loop, µs)",
        "",
        "| XLA preset | one device | 4 chains, pmap, per core | 4 chains, threads, per core |",
        "|---|---|---|---|",
    ]
    for name, r in results["presets"].items():
        lines.append(f"| {name} | {r['us_per_gradient_one_device']:.1f} | "
                     f"{r['us_per_gradient_per_core_pmap']:.1f} | "
                     f"{r['us_per_gradient_per_core_threads']:.1f} |")
    lines += ["", "Kernels of the optimised value + gradient program (default preset): "
              + ", ".join(f"{k} {v}" for k, v in sorted(kernels.items())) + ".", "",
              "## numpyro NUTS, default fit (4 × 1000, tune 1000; compile included)", "",
              "| PRNG | NUTS run s | gradients of the sampling phase (4 chains) |",
              "|---|---|---|"]
    for r in results["nuts"]:
        lines.append(f"| {r['prng']} | {r['nuts_s']:.1f} | {r['gradients_sampling']} |")
    lines += ["", f"Load average before: {results['load_before']}; after: "
              f"{results['load_after']}.", "", f"Versions: {results['versions']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--part", choices=["gradient", "nuts-threefry2x32", "nuts-rbg"],
                        help=argparse.SUPPRESS)  # one measurement, in this process
    args = parser.parse_args()
    if args.part is not None:
        import jax

        jax.config.update("jax_enable_x64", True)
        result = (measure_gradient(args.steps) if args.part == "gradient"
                  else measure_nuts(args.part.removeprefix("nuts-")))
        print(json.dumps(result))
        return
    from fit import cpu_name

    from lanternpk.fit import library_versions

    results = {"steps": args.steps,
               "machine": f"{cpu_name()} ({len(os.sched_getaffinity(0))} cores)",
               "platform": platform.platform(),
               "date": time.strftime("%Y-%m-%d"), "load_before": os.getloadavg(),
               "presets": {p: _in_fresh_process("gradient", f"--xla_cpu_opt_preset={p}",
                                                args.steps) for p in PRESETS},
               "nuts": [_in_fresh_process(f"nuts-{prng}", "", args.steps)
                        for prng in ("threefry2x32", "rbg")],
               "load_after": os.getloadavg(), "versions": library_versions()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gradient.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "gradient.md").write_text(_report(results))
    print(_report(results))


if __name__ == "__main__":
    main()
