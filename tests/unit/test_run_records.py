"""A run's records (provenance, design, diagnostics) checked when the run is opened.

Hand-edited or foreign records are refused with what is wrong, before any command uses them
(each of the edits below made ``summarize`` fail with a traceback, or give the estimands of
other organs, before these checks). Deterministic: no random numbers.
"""

from __future__ import annotations

import copy
import json

import arviz as az
import numpy as np
import pytest

from lanternpk.cli import main
from lanternpk.errors import EXIT_OK, EXIT_USAGE
from lanternpk.run_records import MAX_LISTED, run_record_problems

CELL_TYPES = ["muse", "msc"]
ORGANS = ["lung", "femur"]
PROVENANCE = {"data_file": "obs.csv", "data_sha256": "a" * 64, "spec_file": "spec.toml",
              "spec_sha256": "b" * 64, "calibration_file": None, "calibration_sha256": None,
              "sampler": {"sampler": "numpyro", "chains": 1, "draws": 20, "tune": 20}}
DESIGN = {"spec": "tiny", "cell_types": CELL_TYPES, "organs": ORGANS, "filter_index": 0,
          "explicit_blood": False, "dose_cells": {"muse": 5e4, "msc": 5e4},
          "detection": [{"region": "lung", "modality": "in_vivo", "organs": ["lung"],
                         "lod": 1e4, "background": 5e3, "group": 0}]}
DIAGNOSTICS = {"passed": True, "rhat_max": 1.0, "ess_bulk_min": 500.0, "ess_tail_min": 500.0,
               "ebfmi_min": 0.9, "divergences": 0, "nonfinite_parameters": [],
               "checks": {"rhat": {"value": 1.0, "threshold": "<= 1.01", "passed": True}}}


def _posterior(draws: int = 20) -> az.InferenceData:
    def tile(values):
        return np.broadcast_to(np.asarray(values, float), (1, draws, *np.shape(values))).copy()

    return az.from_dict(
        posterior={"first_pass": tile([[0.7, 0.03], [0.9, 0.02]]),
                   "loss": tile([[0.35, 0.03], [0.69, 0.35]]), "release": tile([1.0, 0.05]),
                   "photons_per_cell": tile(800.0), "transmission_in_vivo": tile([3e-3, 3e-2])},
        coords={"cell_type": CELL_TYPES, "organ": ORGANS},
        dims={"first_pass": ["cell_type", "organ"], "loss": ["cell_type", "organ"],
              "release": ["cell_type"], "transmission_in_vivo": ["organ"]})


def _problems(part: str, edit) -> list[str]:
    records = {"provenance": copy.deepcopy(PROVENANCE), "design": copy.deepcopy(DESIGN),
               "diagnostics": copy.deepcopy(DIAGNOSTICS)}
    records[part] = edit(records[part]) or records[part]  # edit in place, or a new record
    return run_record_problems(_posterior(), records["provenance"], records["design"],
                               records["diagnostics"])


def test_records_that_fit_writes_pass():
    assert _problems("design", lambda d: None) == []


@pytest.mark.parametrize(("part", "edit", "expected"), [
    ("design", lambda d: d.update(organs=["lung"]),
     "the design record's organs ['lung'] are not those of first_pass in the posterior "
     "(['lung', 'femur'])"),
    ("design", lambda d: d.update(cell_types="muse"), "'cell_types': must be an array (found "
     "'muse')"),
    ("design", lambda d: d.update(cell_types=["muse", "msc", "x"]),
     "dose_cells has no dose for cell types ['x']"),
    ("design", lambda d: d.update(cell_types=["muse", "x"], dose_cells={"muse": 1, "x": 1}),
     "the design record's cell_types ['muse', 'x'] are not those of first_pass"),
    ("design", lambda d: d.update(filter_index=99), "filter_index 99 is not a position in "
     "organs (it has 2)"),
    ("design", lambda d: d.update(dose_cells={}), "dose_cells has no dose for cell types "
     "['muse', 'msc']"),
    ("design", lambda d: d.update(detection=[{"x": 1}]), "its design record lacks "
     "'detection[0].region', 'detection[0].modality'"),
    ("design", lambda d: d["detection"][0].update(organs=["heart"]),
     "detection[0] sees organs ['heart'] that are not in organs"),
    ("design", lambda d: d["detection"][0].update(modality="ex_vivo"),
     "its posterior lacks the variables ['transmission_ex_vivo']"),
    ("design", lambda d: d["detection"][0].update(background=None),
     "its posterior lacks the variables ['log_background']"),
    ("design", lambda d: d["detection"][0].update(lod=-1.0),
     "'detection[0].lod': must be greater than 0 (found -1.0)"),
    ("diagnostics", lambda d: d.__delitem__("rhat_max"), "its diagnostics record lacks 'rhat_max'"),
    ("diagnostics", lambda d: d.update(rhat_max=float("nan")),
     "its diagnostics record 'rhat_max': must be a finite number (found nan)"),
    ("diagnostics", lambda d: d["checks"]["rhat"].update(value=float("inf")),
     "its diagnostics record 'checks.rhat.value': must be a finite number (found inf)"),
    ("diagnostics", lambda d: d.update(passed="false"),
     "its diagnostics record 'passed': must be a valid boolean (found 'false')"),
    ("provenance", lambda d: d.update(spec_file=None),
     "'spec_file': must be a string (found None)"),
    ("provenance", lambda d: [1, 2], "its provenance record is not a JSON object (found list)"),
])
def test_an_edited_record_is_named_with_what_is_wrong(part, edit, expected):
    problems = _problems(part, edit)
    assert any(expected in p for p in problems), problems


def test_a_prior_group_without_a_variable_the_design_needs_is_refused():
    """The prior draws give the width ratios: an estimated background must be there too."""
    idata = _posterior()
    idata.add_groups(prior=idata.posterior.copy())
    design = copy.deepcopy(DESIGN)
    design["detection"][0].update(background=None)
    idata.posterior["log_background"] = idata.posterior["photons_per_cell"].expand_dims(
        background_group=1, axis=-1)
    assert run_record_problems(idata, PROVENANCE, design, DIAGNOSTICS) == [
        "its prior group lacks log_background"]


def test_a_posterior_without_a_variable_the_design_needs_is_refused():
    idata = _posterior()
    del idata.posterior["loss"]
    problems = run_record_problems(idata, PROVENANCE, DESIGN, DIAGNOSTICS)
    assert problems == ["its posterior lacks the variables ['loss'] that the design record "
                        "needs"]


def test_a_posterior_without_draws_is_refused():
    """summarize raised IndexError, ppc and compare KeyError, on a run with no draws."""
    idata = _posterior()
    idata.posterior = idata.posterior.isel(draw=slice(0, 0))
    problems = run_record_problems(idata, PROVENANCE, DESIGN, DIAGNOSTICS)
    assert problems[0] == "its posterior holds no draws"


def test_a_long_list_of_problems_is_cut_short():
    problems = run_record_problems(_posterior(), {}, {}, {})
    assert len(problems) == 3  # one "lacks" sentence per record
    many = run_record_problems(_posterior(), PROVENANCE, {**DESIGN, "organs": 1,
                               "cell_types": 1, "filter_index": "0", "explicit_blood": 1,
                               "dose_cells": 1, "detection": 1, "spec": 1}, DIAGNOSTICS)
    assert len(many) == MAX_LISTED + 1 and many[-1] == "and 1 more problem"


def test_summarize_refuses_a_run_with_an_edited_design_without_a_traceback(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    idata = _posterior()
    for part, record in (("provenance", PROVENANCE), ("design", DESIGN),
                         ("diagnostics", DIAGNOSTICS)):
        idata.attrs[f"lanternpk_{part}"] = json.dumps(record)
    idata.to_netcdf(run / "posterior.nc")
    assert main(["summarize", str(run)]) == EXIT_OK  # the unedited run is read
    idata.attrs["lanternpk_design"] = json.dumps({**DESIGN, "organs": ["lung"]})
    idata.to_netcdf(run / "posterior.nc")
    capsys.readouterr()
    assert main(["summarize", str(run)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and "is not a readable lanternpk run" in err
    assert "organs ['lung'] are not those of first_pass" in err


def test_the_records_fit_writes_for_the_bundled_study_pass(root):
    """Design and diagnostics records made by fit's own functions, stored as JSON."""
    from lanternpk.data.load import load_observations
    from lanternpk.diagnostics import check_convergence
    from lanternpk.fit import design_record
    from lanternpk.model import prepare_data
    from lanternpk.spec import load_spec

    spec = load_spec(root / "models/muse_vs_msc.toml")
    obs = load_observations(root / "data/als_mouse/observations.csv")
    design = json.loads(json.dumps(design_record(spec, obs, prepare_data(spec, obs))))
    rng = np.random.default_rng(0)
    n_ct, n_organ = len(spec.cell_types), len(spec.organs)
    idata = az.from_dict(
        posterior={"first_pass": rng.dirichlet(np.ones(n_organ + 1), (4, 50, n_ct))[..., :-1],
                   "loss": rng.lognormal(-1.0, 0.5, (4, 50, n_ct, n_organ)),
                   "release": rng.lognormal(-1.0, 0.5, (4, 50, n_ct)),
                   "photons_per_cell": rng.lognormal(7.0, 0.1, (4, 50)),
                   "transmission_in_vivo": rng.uniform(1e-3, 1e-2, (4, 50, n_organ)),
                   "transmission_ex_vivo": rng.uniform(0.1, 0.5, (4, 50, n_organ))},
        sample_stats={"diverging": np.zeros((4, 50), bool),
                      "energy": rng.normal(size=(4, 50))},
        coords={"cell_type": list(spec.cell_types), "organ": list(spec.organs)},
        dims={"first_pass": ["cell_type", "organ"], "loss": ["cell_type", "organ"],
              "release": ["cell_type"], "transmission_in_vivo": ["organ"],
              "transmission_ex_vivo": ["organ"]})
    diagnostics = json.loads(json.dumps(check_convergence(idata, ["photons_per_cell"])))
    assert run_record_problems(idata, PROVENANCE, design, diagnostics) == []
