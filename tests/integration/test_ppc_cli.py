"""`lanternpk ppc` end to end on a tiny fit: files, JSON contracts, usage errors, seeds."""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pytest

from lanternpk.cli import main
from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_OK, EXIT_USAGE

COVERAGE_KEYS = {"region", "modality", "time_h", "n", "n_censored", "coverage_50",
                 "coverage_90", "below_lod_observed", "below_lod_predicted", "flagged"}
VPC_GROUPS = {"femur_ex_vivo", "femur_in_vivo", "lung_ex_vivo", "lung_in_vivo",
              "spinal_cord_ex_vivo", "spinal_cord_in_vivo", "whole_body_in_vivo"}


@pytest.fixture(scope="module")
def tiny_run(fit_bundled, tmp_path_factory):
    out = tmp_path_factory.mktemp("ppc_runs") / "als"
    rc = fit_bundled(out, draws=100, tune=100)
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    return out


@pytest.fixture(scope="module")
def ppc_once(tiny_run):
    """Run ``ppc`` once (seed 1, 50 draws); return its exit status and coverage.json text."""
    rc = main(["ppc", str(tiny_run), "--draws", "50", "--seed", "1"])
    return rc, (tiny_run / "ppc" / "coverage.json").read_text()


def test_ppc_writes_the_documented_files(tiny_run, ppc_once, capsys):
    rc, coverage_text = ppc_once
    assert rc == EXIT_OK
    ppc = tiny_run / "ppc"
    for name in ("posterior_predictive.nc", "coverage.json", "loo_pit.json"):
        assert (ppc / name).is_file()
    assert {p.stem.removeprefix("vpc_") for p in ppc.glob("vpc_*.png")} == VPC_GROUPS
    coverage = json.loads(coverage_text)
    assert len(coverage) == 44  # region × modality × time groups of the ALS study
    assert all(COVERAGE_KEYS <= set(r) for r in coverage)
    assert sum(r["n"] for r in coverage) == 368
    for r in coverage:
        assert 0 <= r["coverage_50"] <= r["coverage_90"] <= 1
        assert r["below_lod_observed"] == r["n_censored"] / r["n"]
        assert 0 <= r["below_lod_predicted"] <= 1 and isinstance(r["flagged"], bool)
    loo = json.loads((ppc / "loo_pit.json").read_text())
    assert loo["n"] == 368 and loo["n_censored"] == sum(r["n_censored"] for r in coverage)
    assert len(loo["rows"]) == 368 and 0 <= loo["ks_pvalue"] <= 1
    assert all(0 <= r["loo_pit"] <= 1 and 0 <= r["pit"] <= 1 for r in loo["rows"])
    idata = az.from_netcdf(ppc / "posterior_predictive.nc")
    flux = idata.posterior_predictive["flux"]
    assert flux.shape == (1, 50, 368) and np.all(np.isfinite(flux.values))
    assert idata.log_likelihood["flux"].shape == (1, 50, 368)
    assert json.loads(idata.attrs["lanternpk_ppc"])["seed"] == 1


def test_ppc_same_seed_gives_identical_coverage(tiny_run, ppc_once, capsys):
    _, first = ppc_once
    coverage = tiny_run / "ppc" / "coverage.json"

    def simulated_flux():
        idata = az.from_netcdf(tiny_run / "ppc" / "posterior_predictive.nc")
        return idata.posterior_predictive["flux"].values.copy()

    flux_seed_1 = simulated_flux()
    assert main(["ppc", str(tiny_run), "--draws", "50", "--seed", "2"]) == EXIT_OK
    assert not np.array_equal(simulated_flux(), flux_seed_1)  # the simulation uses the seed
    assert main(["ppc", str(tiny_run), "--draws", "50", "--seed", "1"]) == EXIT_OK
    assert coverage.read_text() == first
    np.testing.assert_array_equal(simulated_flux(), flux_seed_1)
    out = capsys.readouterr().out
    assert "groups flagged" in out and "LOO-PIT (368 rows" in out


def test_ppc_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    rc = main(["ppc", str(tmp_path), "--draws", "50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_USAGE
    assert err[-1].startswith("lanternpk ppc: error:") and "not a lanternpk run" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_ppc_gpu_without_a_gpu_is_a_usage_error(tiny_run, capsys):
    import jax

    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present")
    rc = main(["ppc", str(tiny_run), "--draws", "50", "--device", "gpu"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "JAX sees no GPU" in err and "Traceback" not in err


def test_ppc_refuses_zero_draws(tiny_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ppc", str(tiny_run), "--draws", "0"])
    assert exit_info.value.code == EXIT_USAGE
    assert "must be at least 1" in capsys.readouterr().err


def test_ppc_refuses_too_few_draws_for_loo_pit(tiny_run, capsys):
    rc = main(["ppc", str(tiny_run), "--draws", "2"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "--draws must be at least 21" in err and "Traceback" not in err
