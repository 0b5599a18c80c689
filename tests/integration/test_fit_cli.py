"""`lanternpk fit` and `summarize` end to end, with tiny sampler settings."""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pytest

from lanternpk.cli import main
from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_INVALID, EXIT_OK
from lanternpk.model import RANDOM_EFFECTS, SIGNED_SUFFIX

TINY = ["--chains", "2", "--draws", "60", "--tune", "60", "--quiet"]


def assert_identified_random_effects(posterior) -> None:
    """The posterior holds each random effect's scale and effects, and the sign-expanded pair
    (u, v) they were sampled as (model._random_effect; PyMC's workflows need every free
    variable), with sd = |u| and z = sign(u)·v; and no transformed value (nutpie kept them)."""
    for sd, z in RANDOM_EFFECTS.items():
        u, v = posterior[sd + SIGNED_SUFFIX], posterior[z + SIGNED_SUFFIX]
        np.testing.assert_array_equal(posterior[sd], np.abs(u))
        signed = v.where(u >= 0, -v).transpose(*posterior[z].dims)
        np.testing.assert_array_equal(posterior[z], signed)
    assert not [name for name in posterior.data_vars if name.endswith("__")]


@pytest.fixture(scope="module")
def tiny_run(fit_bundled, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "als"
    return fit_bundled(out, draws=60, tune=60), out


def test_fit_writes_a_complete_run(tiny_run):
    rc, out = tiny_run
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    for name in ("posterior.nc", "provenance.json", "diagnostics.json", "summary.json"):
        assert (out / name).is_file()
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    # a failed check is loud: exit status 3 and a marker file, and only then
    assert (rc == EXIT_DIAGNOSTICS) == (not diagnostics["passed"])
    assert (out / "DIAGNOSTICS_FAILED").exists() == (not diagnostics["passed"])
    provenance = json.loads((out / "provenance.json").read_text())
    assert len(provenance["data_sha256"]) == 64 and len(provenance["spec_sha256"]) == 64
    assert provenance["sampler"]["draws"] == 60 and provenance["seed"] == 20261125
    assert "pymc" in provenance["versions"] and provenance["command"][1] == "fit"
    assert_identified_random_effects(az.from_netcdf(out / "posterior.nc").posterior)


def test_summarize_json_follows_the_contract(tiny_run, capsys):
    _, out = tiny_run
    capsys.readouterr()
    rc = main(["summarize", str(out), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    assert set(summary) == {"estimands", "contrasts", "diagnostics", "provenance"}
    keys = {"name", "cell_type", "region", "time_d", "modality", "mean", "median", "q05", "q95"}
    assert all(keys <= set(e) for e in summary["estimands"])
    names = {e["name"] for e in summary["estimands"]}
    assert names == {"first_pass_fraction", "homing_fraction", "engrafted_fraction",
                     "half_life_d", "time_to_undetectable_d"}
    assert {e["time_d"] for e in summary["estimands"] if e["name"] == "engrafted_fraction"} == {
        1, 3, 7, 14, 28, 56}
    homing = [c for c in summary["contrasts"] if c["name"] == "homing_fraction_ratio"]
    assert {c["region"] for c in homing} >= {"lung", "femur", "spinal_cord"}
    assert all(c["numerator"] == "muse" and c["denominator"] == "msc" for c in homing)
    assert all(0 <= c["p_gt_1"] <= 1 and c["q05"] <= c["median"] <= c["q95"] for c in homing)
    assert set(summary["diagnostics"]) >= {"rhat_max", "ess_bulk_min", "divergences", "passed"}
    # the organ no region images on its own (only within whole_body) is flagged as
    # prior-driven, every one of its estimands
    damaged = [e for e in summary["estimands"] if e["region"] == "damaged_organ"]
    assert len(damaged) == 2 * (3 + 6) and all(e["barely_informed"] for e in damaged)
    damaged_ratio = [c for c in summary["contrasts"] if c["region"] == "damaged_organ"]
    assert damaged_ratio and all(c["barely_informed"] for c in damaged_ratio)


def test_summarize_refuses_other_spec_or_data(root, tiny_run, capsys):
    _, out = tiny_run
    rc = main(["summarize", str(out), "--model", str(root / "models/shared_homing.toml")])
    err = capsys.readouterr().err
    assert rc == EXIT_INVALID
    assert "shared_homing.toml: does not match the run" in err
    other_data = root / "data/heart_rabbit/observations.csv"
    rc = main(["summarize", str(out), "--data", str(other_data)])
    err = capsys.readouterr().err
    assert rc == EXIT_INVALID and "Traceback" not in err
    assert f"{other_data}: does not match the run in {out}" in err


def test_fit_rejects_bad_data_before_compiling(root, tmp_path, capsys, no_model_build):
    bad = tmp_path / "obs.csv"
    text = (root / "data/als_mouse/observations.csv").read_text()
    bad.write_text(text.replace(",muse01,muse,", ",muse01,neuron,"))
    rc = main(["fit", str(bad), "--model", str(root / "models/muse_vs_msc.toml"),
               "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert rc == EXIT_INVALID
    assert "row 2, column 'cell_type'" in err and "'neuron'" in err
    assert "cell type not in spec" in err
    assert not (tmp_path / "run").exists()


def test_explicit_blood_spec_fits_and_summarizes(root, tmp_path, capsys):
    """The explicit-blood spec has one more reported parameter (blood_efflux, 1/day)."""
    out = tmp_path / "blood"
    rc = main(["fit", str(root / "data/als_mouse/observations.csv"), "--model",
               str(root / "models/explicit_blood.toml"), "--out", str(out), *TINY])
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    capsys.readouterr()
    assert main(["summarize", str(out), "--json"]) == rc
    summary = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in summary["estimands"]} >= {"homing_fraction", "half_life_d"}
    idata = az.from_netcdf(out / "posterior.nc")
    for group in (idata.posterior, idata.prior):  # the prior: to judge what data informed
        efflux = group["blood_efflux"].values
        assert efflux.shape[:2] == group["chain"].shape + group["draw"].shape
        assert np.all(np.isfinite(efflux) & (efflux > 0))


def test_estimated_backgrounds_reach_the_detection_times(fit_bundled, root, tmp_path, capsys):
    """Data without a ``background`` column: the model estimates one per region × modality,
    the run's design leaves it open, and the prior draws carry it for the width ratios."""
    import arviz as az
    import pandas as pd

    data = tmp_path / "no_background.csv"
    pd.read_csv(root / "data/als_mouse/observations.csv").drop(columns="background").to_csv(
        data, index=False)
    out = tmp_path / "run"
    rc = fit_bundled(out, draws=60, tune=60, data=data)
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    idata = az.from_netcdf(out / "posterior.nc")
    design = json.loads(idata.attrs["lanternpk_design"])
    assert all(det["background"] is None for det in design["detection"])
    assert "log_background" in idata.posterior and "log_background" in idata.prior
    capsys.readouterr()
    assert main(["summarize", str(out), "--json"]) == rc
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((out / "summary.json").read_text())
    days = [e for e in summary["estimands"] if e["name"] == "time_to_undetectable_d"]
    # width ratios from prior draws of the background (null only where < 10 draws are finite)
    assert days and any(e["posterior_prior_width_ratio"] is not None for e in days)


@pytest.mark.parametrize("sampler", ["pymc", "nutpie"])
def test_the_samplers_through_pm_sample_give_a_complete_run(root, tmp_path, capsys, sampler):
    """`--sampler pymc` and `--sampler nutpie` go through pm.sample, not our drivers; no test
    ran them. A run from either has the settings' shape, every convergence check (E-BFMI
    needs the energy their sample stats name differently) and its sampler in provenance."""
    out = tmp_path / sampler
    rc = main(["fit", str(root / "data/als_mouse/observations.csv"), "--model",
               str(root / "models/muse_vs_msc.toml"), "--calibration",
               str(root / "data/als_mouse/calibration.csv"), "--out", str(out),
               "--sampler", sampler, "--chains", "2", "--draws", "30", "--tune", "30",
               "--quiet"])
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS), capsys.readouterr().err
    posterior = az.from_netcdf(out / "posterior.nc").posterior
    assert (posterior.sizes["chain"], posterior.sizes["draw"]) == (2, 30)
    assert_identified_random_effects(posterior)
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    for check in ("rhat_max", "ess_bulk_min", "ess_tail_min", "ebfmi_min"):
        assert np.isfinite(diagnostics[check]), (check, diagnostics)
    assert isinstance(diagnostics["divergences"], int)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["sampler"]["sampler"] == sampler
    assert main(["summarize", str(out)]) == rc


def test_pymc_chains_are_not_forked_from_a_process_running_jax(root, tmp_path):
    """pm.sample forks its chain processes on Linux; once JAX's threads ran in the process
    (any earlier JAX fit, as in this test session), JAX warns that fork can deadlock. The
    fit's own run: JAX started first, every RuntimeWarning an error."""
    import subprocess
    import sys

    code = ("import warnings, jax, sys\n"
            "if __name__ == '__main__':\n"
            "    jax.devices()\n"
            "    warnings.simplefilter('error', RuntimeWarning)\n"
            "    from lanternpk.cli import main\n"
            "    sys.exit(main(sys.argv[1:]))\n")
    script = tmp_path / "fit_after_jax.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), "fit", str(root / "data/als_mouse/observations.csv"),
         "--model", str(root / "models/muse_vs_msc.toml"), "--out", str(tmp_path / "run"),
         "--sampler", "pymc", "--chains", "2", "--draws", "20", "--tune", "20", "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode in (EXIT_OK, EXIT_DIAGNOSTICS), done.stderr[-2000:]
    assert "os.fork()" not in done.stderr


def test_a_failed_fit_of_mostly_censored_data_says_so(fit_bundled, root, tmp_path, capsys):
    """In SBC, nearly every fit with divergences was of data with more than 64% of rows below
    the LOD (bench/sbc.md); a failed fit of such data names the censoring beside the failed
    checks. The bundled study with every LOD after 24 h raised above its flux: 75%."""
    import pandas as pd

    obs = pd.read_csv(root / "data/als_mouse/observations.csv")
    later = obs["time_h"] > 24
    obs["lod"] = obs["lod"].astype(float)
    obs.loc[later, "lod"] = np.maximum(obs.loc[later, "lod"], 2.0 * obs.loc[later, "flux"])
    data = tmp_path / "censored.csv"
    obs.to_csv(data, index=False)
    capsys.readouterr()
    rc = fit_bundled(tmp_path / "run", draws=20, tune=20, data=data)
    err = capsys.readouterr().err
    assert rc == EXIT_DIAGNOSTICS  # 2 × 20 draws: the ESS checks fail
    assert "convergence checks FAILED" in err
    assert "276 of 368 rows (75%) are below the LOD" in err
