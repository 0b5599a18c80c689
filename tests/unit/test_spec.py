"""Model specs: shipped specs load, bad specs give exact messages, rate structure = flows."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.linalg import expm

from lanternpk.errors import DataError, UsageError
from lanternpk.solver import closed_form, reference
from lanternpk.spec import (
    LogNormal,
    LogRatioNormal,
    ModelSpec,
    RateStructure,
    load_spec,
    parse_spec,
    spec_hash,
)

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SPECS = ROOT / "tests" / "fixtures" / "specs"
SHIPPED = ("muse_vs_msc", "shared_homing", "explicit_blood")
ORGANS = ("lung", "femur", "damaged_organ", "spinal_cord")


def problems_of(path: Path) -> list[str]:
    with pytest.raises(DataError) as info:
        load_spec(path)
    return [str(p) for p in info.value.problems]


# ---- shipped specs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_loads(name: str) -> None:
    spec = load_spec(MODELS / f"{name}.toml")
    assert spec.name == name
    assert spec.cell_types == ("muse", "msc")
    assert spec.organs == ORGANS
    assert spec.filter_index == 0
    assert spec.blood == "blood"
    assert spec.sink == "sink"
    assert spec.region_compartments == {
        "lung": ("lung",),
        "femur": ("femur",),
        "damaged_organ": ("damaged_organ",),
        "spinal_cord": ("spinal_cord",),
        "whole_body": ORGANS,
    }
    assert spec.explicit_blood == (name == "explicit_blood")
    assert (spec.priors.blood_efflux is not None) == spec.explicit_blood


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_priors_cite_science_md(name: str) -> None:
    spec = load_spec(MODELS / f"{name}.toml")
    priors = [
        spec.prior(kind, organ, cell)
        for kind, organs in (("first_pass", ORGANS), ("release", ("lung",)), ("loss", ORGANS))
        for organ in organs
        for cell in spec.cell_types
    ]
    priors += [spec.random_effects.first_pass, spec.random_effects.release]
    priors += [spec.random_effects.loss, spec.measurement.photons_per_cell]
    priors += [spec.measurement.image_gain_sd, spec.measurement.residual_sd]
    priors += [spec.transmission(m, o) for m in ("in_vivo", "ex_vivo") for o in ORGANS]
    if spec.priors.blood_efflux is not None:
        priors.append(spec.priors.blood_efflux)
    for prior in priors:
        assert prior is not None
        assert prior.source.startswith("SCIENCE.md: "), prior
        assert prior.units


def test_default_priors_follow_the_parameter_table() -> None:
    spec = load_spec(MODELS / "muse_vs_msc.toml")
    assert not any(spec.is_shared(k, o) for k in ("first_pass", "loss") for o in ORGANS)
    lung = spec.prior("first_pass", "lung", "msc")
    assert isinstance(lung, LogRatioNormal)
    assert lung.median == 0.92
    # Muse damaged-tissue half-life ~120 d (60-180 d as a 90% interval)
    loss = spec.prior("loss", "spinal_cord", "muse")
    assert isinstance(loss, LogNormal)
    assert math.log(2) / loss.median == pytest.approx(120, rel=0.01)
    assert loss.sigma == pytest.approx(math.log(180 / 60) / 3.29, abs=0.01)
    # the "other" remainder and the log-ratio means that go with it
    assert spec.first_pass_other_median("muse") == pytest.approx(1 - (0.70 + 0.03 + 0.08 + 0.004))
    assert spec.first_pass_other_median("msc") == pytest.approx(1 - (0.92 + 0.016 + 0.005 + 1e-4))
    other = spec.first_pass_other_median("muse")
    np.testing.assert_allclose(
        spec.first_pass_logratio_loc("muse"), np.log(np.array([0.70, 0.03, 0.08, 0.004]) / other)
    )


def test_shared_homing_shares_first_pass_only() -> None:
    spec = load_spec(MODELS / "shared_homing.toml")
    assert all(spec.is_shared("first_pass", o) for o in ORGANS)
    assert not any(spec.is_shared("loss", o) for o in ORGANS)
    assert not spec.is_shared("release", "lung")
    for organ in ORGANS:
        assert spec.prior("first_pass", organ, "muse") is spec.prior("first_pass", organ, "msc")
    assert spec.first_pass_other_median("muse") == spec.first_pass_other_median("msc")


def test_variants_differ_from_the_default_only_where_they_should() -> None:
    default = load_spec(MODELS / "muse_vs_msc.toml")
    explicit = load_spec(MODELS / "explicit_blood.toml")
    shared = load_spec(MODELS / "shared_homing.toml")
    assert explicit.priors.first_pass == default.priors.first_pass
    assert explicit.priors.loss == default.priors.loss
    assert explicit.measurement == default.measurement
    assert shared.priors.loss == default.priors.loss
    assert shared.priors.release == default.priors.release
    assert shared.flows == default.flows == explicit.flows


def test_prior_lookup_rejects_unknown_names() -> None:
    spec = load_spec(MODELS / "muse_vs_msc.toml")
    with pytest.raises(KeyError, match="unknown cell type"):
        spec.prior("loss", "lung", "hsc")
    with pytest.raises(KeyError, match="unknown flow kind"):
        spec.prior("death", "lung", "muse")
    with pytest.raises(KeyError, match="no release prior for organ 'femur'"):
        spec.prior("release", "femur", "muse")
    with pytest.raises(KeyError, match="unknown modality"):
        spec.transmission("in_vitro", "lung")


def test_spec_is_frozen() -> None:
    spec = load_spec(MODELS / "muse_vs_msc.toml")
    with pytest.raises(ValidationError):
        spec.model = spec.model  # type: ignore[misc]


def test_spec_hash_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = MODELS / "muse_vs_msc.toml"
    assert spec_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    copy = tmp_path / "copy.toml"
    copy.write_bytes(path.read_bytes() + b"\n")
    assert spec_hash(copy) != spec_hash(path)


# ---- rate structure -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_rate_structure_matches_declared_flows(name: str) -> None:
    spec = load_spec(MODELS / f"{name}.toml")
    rs = spec.rate_structure()
    assert isinstance(rs, RateStructure)
    declared = [(f.from_, f.to, f.type) for f in spec.flows]
    derived = [
        (rs.compartment_names[i], rs.compartment_names[j], kind)
        for i, j, kind in zip(rs.flow_from, rs.flow_to, rs.flow_types, strict=True)
    ]
    assert derived == declared
    assert rs.organs == spec.organs
    assert rs.filter_index == rs.release_organ == spec.filter_index
    np.testing.assert_array_equal(rs.first_pass_organs, [0, 1, 2, 3])
    np.testing.assert_array_equal(rs.loss_organs, [0, 1, 2, 3])
    expected_state = (*ORGANS, "blood", "sink") if spec.explicit_blood else (*ORGANS, "sink")
    assert rs.compartments == expected_state
    assert not rs.flow_from.flags.writeable


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float, np.ndarray]:
    f = rng.dirichlet(np.ones(n + 1))[:n]
    return f, float(rng.lognormal(0.0, 1.0)), rng.lognormal(-1.0, 1.0, n)


@pytest.mark.parametrize("name", SHIPPED)
def test_rate_matrix_from_flows_equals_the_reference_solver(name: str) -> None:
    spec = load_spec(MODELS / f"{name}.toml")
    rs = spec.rate_structure()
    rng = np.random.default_rng(20240601)
    for _ in range(5):
        f, r, k = _draw(rng, rs.n_organs)
        q = 2e4 if spec.explicit_blood else None
        a, x0 = rs.rate_matrix(f, r, k, blood_efflux=q)
        a_ref, x0_ref = reference.rate_matrix(f, r, k, filter_index=rs.filter_index, blood_efflux=q)
        np.testing.assert_allclose(a, a_ref, rtol=1e-14, atol=1e-12)
        np.testing.assert_allclose(x0, x0_ref, rtol=1e-14, atol=1e-15)
        # mass balance: every column of a rate matrix sums to zero; the dose is 1
        np.testing.assert_allclose(a.sum(axis=0), 0.0, atol=1e-9)
        assert x0.sum() == pytest.approx(1.0)


def test_rate_structure_follows_declaration_order_and_feeds_the_solver() -> None:
    """Organs in declaration order, with the filter not first, and flows shuffled."""
    text = (SPECS / "minimal.toml").read_text()
    lung = '[[compartments]]\nname = "lung"\nkind = "organ"\n\n'
    text = text.replace(lung, "").replace("[[flows]]", lung + "[[flows]]", 1)
    spec = parse_spec(text, file="reordered.toml")
    assert spec.organs == ("femur", "lung")
    assert spec.filter_index == 1
    rs = spec.rate_structure()
    np.testing.assert_array_equal(rs.first_pass_organs, [1, 0])  # flows name lung first
    assert rs.release_organ == 1
    f, r, k = np.array([0.02, 0.9]), 0.05, np.array([0.35, 0.69])
    a, x0 = rs.rate_matrix(f, r, k)
    times = np.array([0.0, 0.5, 3.0, 14.0])
    by_expm = np.stack([expm(a * t) @ x0 for t in times])[:, : rs.n_organs]
    by_closed_form = closed_form.organ_cells(
        f, np.asarray(r), k, times, filter_index=spec.filter_index, n_organs=rs.n_organs
    )
    np.testing.assert_allclose(by_closed_form, by_expm, rtol=1e-10, atol=1e-14)


def test_rate_matrix_checks_its_inputs() -> None:
    rs = load_spec(SPECS / "minimal.toml").rate_structure()
    with pytest.raises(ValueError, match="shape"):
        rs.rate_matrix(np.ones(3), 1.0, np.ones(2))
    with pytest.raises(ValueError, match="blood_efflux"):
        rs.rate_matrix(np.full(2, 0.1), 1.0, np.ones(2), blood_efflux=1e4)


# ---- bad specs: exact messages --------------------------------------------------------------

BAD_SPECS: dict[str, list[str]] = {
    "unknown_key.toml": [
        "line 63, key 'priors.loss.lung.muse.sigmma', value 1.0: unknown key 'sigmma' (did you "
        "mean "
        "'sigma'?); allowed keys: dist, median, sigma, units, source"
    ],
    "unknown_flow_key.toml": [
        "line 46, key 'flows[4].form', value 'femur': unknown key 'form' (did you mean "
        "'from'?); "
        "allowed keys: from, to, type"
    ],
    "unknown_section.toml": [
        "line 69, key 'random_efects': unknown key 'random_efects' (did you mean "
        "'random_effects'?); "
        "allowed keys: model, compartments, flows, priors, random_effects, measurement, regions"
    ],
    "flow_unknown_compartment.toml": [
        "line 32, key 'flows[1].to', value 'femr': unknown compartment 'femr' (did you mean "
        "'femur'?);"
        " compartments: blood, lung, femur, sink"
    ],
    "first_pass_sum.toml": [
        "line 50, key 'priors.first_pass', value 1.01: first-pass fractions cannot sum to ≤ 1: "
        "the "
        "medians for cell type 'muse' (lung 0.98 + femur 0.03) sum to 1.01; lower them so that "
        "the 'other' remainder (liver, spleen, death in blood) is positive"
    ],
    "negative_sigma.toml": [
        "line 59, key 'priors.release.lung.muse.sigma', value -1: must be at least 1e-100 "
        "(a standard deviation is positive, and a smaller one underflows in the sampler's "
        "arithmetic: a NaN log density)"
    ],
    "subnormal_sigma.toml": [
        "line 59, key 'priors.release.lung.muse.sigma', value 1e-320: must be at least "
        "1e-100 (a standard deviation is positive, and a smaller one underflows in the "
        "sampler's arithmetic: a NaN log density)"
    ],
    "huge_sigma.toml": [
        "line 59, key 'priors.release.lung.muse.sigma', value 1e+300: must be less than or "
        "equal to "
        "10 (the sd of a log: 10 is already a 90% prior range of a factor 1.4e7 either way, "
        "and prior draws beyond it overflow)"
    ],
    "zero_median.toml": [
        "line 75, key 'measurement.photons_per_cell.median', value 0: must be greater than 0"
    ],
    "region_missing_compartment.toml": [
        "line 88, key 'regions.femur', value 'femurr': unknown compartment 'femurr' (did you "
        "mean "
        "'femur'?); regions map to an organ (lung, femur) or '*'"
    ],
    "region_without_transmission.toml": [
        "line 87, key 'regions.femur', value 'femur': organ 'femur' has no transmission prior; "
        "add it "
        "under [measurement.transmission.in_vivo] or [measurement.transmission.ex_vivo]"
    ],
    "transmission_unknown_compartment.toml": [
        "line 84, key 'measurement.transmission.ex_vivo.lungs': unknown compartment 'lungs' "
        "(did you "
        "mean 'lung'?); transmissions are per organ (lung, femur)"
    ],
    "unknown_dist.toml": [
        "line 60, key 'priors.release.lung.msc.dist', value 'lognorml': unknown distribution "
        "'lognorml' (did you mean 'lognormal'?); one of lognormal, logratio_normal, halfnormal, "
        "normal"
    ],
    "wrong_dist_for_slot.toml": [
        "line 56, key 'priors.first_pass.femur.msc.dist', value 'lognormal': this parameter "
        "takes "
        "dist = 'logratio_normal'"
    ],
    "release_not_from_filter.toml": [
        "line 36, key 'flows[2].from', value 'femur': release flows go from the filter organ "
        "('lung') "
        "to the blood compartment; got from 'femur'"
    ],
    "missing_loss_flow.toml": [
        "line 25, key 'flows': organ 'femur' must have exactly one loss flow (to the sink); "
        "found none"
    ],
    "prior_without_flow.toml": [
        "line 62, key 'priors.release.femur': no release flow belongs to 'femur'; release flows "
        "belong to: lung"
    ],
    "unknown_cell_type.toml": [
        "line 64, key 'priors.loss.lung.mcs': 'mcs' is not a declared cell type (did you mean "
        "'msc'?);"
        " keys are the cell types (muse, msc) or exactly one key 'all'"
    ],
    "shared_mixed.toml": [
        "line 66, key 'priors.loss.femur': a prior keyed 'all' is shared by every cell type and "
        "cannot"
        " be mixed with per-cell-type keys (muse)"
    ],
    "explicit_without_efflux.toml": [
        "line 50, key 'priors.blood_efflux': required when model.blood = 'explicit': a prior on "
        "the "
        "rate cells leave blood (1/day)"
    ],
    "rate_units.toml": [
        "line 63, key 'priors.loss.lung.muse.units', value '1/h': rates must be given in "
        "'1/day' (a "
        "half-life of t days is a rate of ln 2 / t per day)"
    ],
    "missing_source.toml": [
        "line 75, key 'measurement.photons_per_cell.source': required key is missing"
    ],
    "filter_not_organ.toml": [
        "line 7, key 'model.filter', value 'blood': 'blood' is the blood compartment; the "
        "filter must "
        "be an organ compartment (organs: lung, femur)"
    ],
    "number_as_string.toml": [
        "line 60, key 'priors.release.lung.msc.median', value '0.05': must be a number (write "
        "it "
        "without quotes)"
    ],
    "bad_blood_model.toml": [
        "line 6, key 'model.blood', value 'fats': must be 'fast' or 'explicit' (did you mean "
        "'fast'?)"
    ],
    "toml_syntax.toml": ["not valid TOML: Invalid value (at line 6, column 9)"],
}


@pytest.mark.parametrize("fixture", sorted(BAD_SPECS))
def test_bad_spec_gives_exact_problems(fixture: str) -> None:
    path = SPECS / fixture
    assert problems_of(path) == [
        f"{path}, {m}" if m.startswith("line") else f"{path}: {m}" for m in BAD_SPECS[fixture]
    ]


def test_every_bad_fixture_is_tested() -> None:
    on_disk = {p.name for p in SPECS.glob("*.toml")} - {"minimal.toml"}
    assert on_disk == set(BAD_SPECS)


def test_minimal_fixture_is_valid() -> None:
    spec = load_spec(SPECS / "minimal.toml")
    assert spec.is_shared("loss", "femur")
    assert spec.prior("loss", "femur", "muse") is spec.prior("loss", "femur", "msc")
    assert spec.region_compartments["whole_body"] == ("lung", "femur")


def test_problem_file_is_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(SPECS / "negative_sigma.toml", tmp_path / "neg.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        load_spec("neg.toml")
    assert [p.file for p in info.value.problems] == ["neg.toml"]
    assert info.value.exit_code == 1


def test_every_problem_is_reported_at_once() -> None:
    text = (SPECS / "minimal.toml").read_text()
    text = text.replace('femur = "femur"\nwhole_body', 'femur = "femurr"\nwhole_body')
    text = text.replace('from = "blood"\nto = "femur"', 'from = "blood"\nto = "femr"')
    with pytest.raises(DataError) as info:
        parse_spec(text, file="two.toml")
    assert [p.key for p in info.value.problems] == ["flows[1].to", "regions.femur"]


def test_misspelt_key_is_not_also_reported_missing() -> None:
    problems = problems_of(SPECS / "unknown_key.toml")
    assert len(problems) == 1
    assert "required key is missing" not in problems[0]


@pytest.mark.parametrize(
    ("old", "new", "column", "message"),
    [
        (
            'blood = "fast"',
            'blood = "fast"\n[priors.blood_efflux]\ndist = "lognormal"\nmedian = 2e4\nsigma = 1.0\n'
            'units = "1/day"\nsource = "test"\n[model2]',
            "model2",
            "unknown key 'model2' (did you mean 'model'?); allowed keys: model, compartments, "
            "flows, priors, random_effects, measurement, regions",
        ),
        (
            'muse = { dist = "lognormal", median = 1.0,',
            "muse = { median = 1.0,",
            "priors.release.lung.muse.dist",
            "required key is missing (one of lognormal, logratio_normal, halfnormal, normal)",
        ),
        (
            "median = 1.0, sigma = 0.7",
            "median = inf, sigma = 0.7",
            "priors.release.lung.muse.median",
            "must be a finite number",
        ),
        (
            "median = 0.7, sigma = 0.8",
            "median = 1.2, sigma = 0.8",
            "priors.first_pass.lung.muse.median",
            "must be less than 1",
        ),
        (
            'lung = { dist = "lognormal", median = 3e-3,',
            'lung = { dist = "lognormal", median = 3.0,',
            "measurement.transmission.in_vivo.lung.median",
            "a transmission is the fraction of emitted photons that reach the camera: its "
            "median must be at most 1",
        ),
        (
            'cell_types = ["muse", "msc"]',
            'cell_types = ["muse", "msc", "all"]',
            "model.cell_types[2]",
            "'all' is reserved (a prior shared by all cell types)",
        ),
        (
            'name = "sink"\nkind = "sink"',
            'name = "sink"\nkind = "organ"',
            "compartments",
            "exactly one compartment must have kind = 'sink'; found 0",
        ),
        (
            'whole_body = "*"',
            'whole_body = "*"\nblood = "blood"',
            "regions.blood",
            "'blood' is a blood compartment; regions map to an organ or '*'",
        ),
        (
            'all = { dist = "lognormal", median = 0.1,',
            'muse = { dist = "lognormal", median = 0.1,',
            "priors.loss.femur",
            "no prior for cell type(s) msc; give one per cell type (muse, msc) or exactly one "
            "key 'all'",
        ),
        (
            'first_pass = { dist = "halfnormal"',
            'first_pass = { dist = "lognormal", median = 0.3',
            "random_effects.first_pass.dist",
            "this parameter takes dist = 'halfnormal'",
        ),
        (
            '[priors.first_pass.femur]\nmuse = { dist = "logratio_normal", median = 0.03, '
            'sigma = 0.5, units = "fraction", source = "test" }\nmsc = { dist = '
            '"logratio_normal", median = 0.02, sigma = 0.5, units = "fraction", source = "test" }',
            '[priors.first_pass.femur]\nall = { dist = "logratio_normal", median = 0.03, sigma = '
            '0.5, units = "fraction", source = "test" }',
            "priors.first_pass",
            "first-pass fractions form one simplex per cell type, so either every organ's "
            "first_pass prior is keyed 'all' or none is; shared: femur; per cell type: lung",
        ),
        (
            'from = "blood"\nto = "femur"',
            'from = "blood"\nto = "sink"',
            "flows[1].to",
            "first_pass flows go from the blood compartment to an organ (the remainder to the "
            "sink is implicit); got to 'sink'",
        ),
        (
            '[[compartments]]\nname = "femur"',
            '[[compartments]]\nname = "lung"',
            "compartments[2].name",
            "duplicate compartment name",
        ),
        (
            'source = "test" }\n\n[measurement.transmission.ex_vivo]',
            'source = "   " }\n\n[measurement.transmission.ex_vivo]',
            "measurement.transmission.in_vivo.femur.source",
            "must not be empty",
        ),
    ],
)
def test_more_bad_specs(old: str, new: str, column: str, message: str) -> None:
    text = (SPECS / "minimal.toml").read_text()
    assert text.count(old) >= 1
    with pytest.raises(DataError) as info:
        parse_spec(text.replace(old, new, 1), file="x.toml")
    found = [(p.key, p.message) for p in info.value.problems]
    assert (column, message) in found, found


@pytest.mark.parametrize(("dist", "shown"), [("true", "true"), ("0", "0")])
def test_a_distribution_name_that_is_not_text_is_shown_as_written(dist, shown) -> None:
    """`dist = true` was reported as "value 'True': unknown distribution 'True'" (pydantic
    turns the tag into Python's text of it)."""
    text = (SPECS / "minimal.toml").read_text()
    with pytest.raises(DataError) as info:
        parse_spec(text.replace('dist = "lognormal"', f"dist = {dist}", 1), file="x.toml")
    (problem,) = info.value.problems
    assert problem.key.endswith(".dist") and problem.value is not None
    assert str(problem).endswith(f"value {shown}: must be the name of a distribution, in "
                                 "quotes; one of lognormal, logratio_normal, halfnormal, normal")


def test_whole_body_needs_every_organ_in_vivo() -> None:
    text = (SPECS / "minimal.toml").read_text()
    text = text.replace(
        'femur = { dist = "lognormal", median = 3e-2, sigma = 1.4, units = "fraction", '
        'source = "test" }\n',
        "",
    ).replace(
        "[measurement.transmission.ex_vivo]\n",
        "[measurement.transmission.ex_vivo]\n"
        'femur = { dist = "lognormal", median = 0.3, sigma = 0.6, units = "f", source = "t" }\n',
    )
    with pytest.raises(DataError) as info:
        parse_spec(text, file="wb.toml")
    assert [str(p) for p in info.value.problems] == [
        "wb.toml, line 89, key 'regions.whole_body', value '*': '*' sums every organ through "
        "its in "
        "vivo transmission, but measurement.transmission.in_vivo has none for femur"
    ]


def test_explicit_efflux_only_with_explicit_blood() -> None:
    text = (
        (MODELS / "explicit_blood.toml").read_text().replace('blood = "explicit"', 'blood = "fast"')
    )
    with pytest.raises(DataError, match=re.escape("key 'priors.blood_efflux': only allowed")):
        parse_spec(text, file="e.toml")


def test_cross_field_rules_apply_to_programmatic_construction() -> None:
    spec = load_spec(SPECS / "minimal.toml")
    data = spec.model_dump(by_alias=True)
    data["regions"]["femur"] = "liver"
    with pytest.raises(
        ValidationError, match=re.escape("regions.femur: unknown compartment 'liver'")
    ):
        ModelSpec.model_validate(data)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such spec file") as info:
        load_spec(tmp_path / "nope.toml")
    assert info.value.exit_code == 2


def test_non_utf8_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes((SPECS / "minimal.toml").read_bytes().replace(b"minimal", b"m\xefnimal"))
    assert problems_of(path) == [f"{path}: not UTF-8 text (line 4); save it as UTF-8"]


def test_nothing_in_a_spec_is_executed() -> None:
    text = (
        (SPECS / "minimal.toml")
        .read_text()
        .replace('name = "minimal"', "name = \"__import__('os').system('false')\"")
    )
    assert parse_spec(text, file="x.toml").name == "__import__('os').system('false')"


@settings(max_examples=60, deadline=None)
@given(
    lung=st.floats(min_value=1e-4, max_value=0.9999),
    femur=st.floats(min_value=1e-4, max_value=0.9999),
)
def test_first_pass_medians_must_leave_a_remainder(lung: float, femur: float) -> None:
    text = (
        (SPECS / "minimal.toml")
        .read_text()
        .replace("median = 0.7, sigma = 0.8", f"median = {lung!r}, sigma = 0.8")
        .replace("median = 0.03, sigma = 0.5", f"median = {femur!r}, sigma = 0.5")
    )
    if math.fsum([lung, femur]) < 1.0:
        spec = parse_spec(text, file="h.toml")
        assert spec.first_pass_other_median("muse") == pytest.approx(1.0 - lung - femur)
    else:
        with pytest.raises(DataError, match="first-pass fractions cannot sum to ≤ 1"):
            parse_spec(text, file="h.toml")


@pytest.mark.parametrize(("old", "new", "key"), [
    ('name = "muse_vs_msc"', 'name = "x\\u001b[2J\\u001b[Hfake\\nall good"', "model.name"),
    ('description = "Cell-type', 'description = "\\u001b[31mCell-type', "model.description"),
])
def test_spec_text_that_is_printed_holds_no_control_characters(old, new, key):
    """A terminal escape in a spec's name would clear the screen of whoever validates it."""
    text = (MODELS / "muse_vs_msc.toml").read_text()
    assert old in text
    with pytest.raises(DataError) as err:
        parse_spec(text.replace(old, new, 1), file="spec.toml")
    (problem,) = err.value.problems
    assert problem.key == key and "control character" in problem.message
    assert "\x1b" not in str(problem)


def test_spec_text_may_span_lines_and_hold_any_printable_character():
    """Line breaks in a description and a non-breaking space in a source stay allowed (a
    spec accepted before keeps its runs); a name is one line."""
    text = (MODELS / "muse_vs_msc.toml").read_text()
    old = 'description = "Cell-type-specific first-pass fractions'
    multi = text.replace(old, 'description = """Line one.\nCell-type-specific first-pass'
                         ' fractions', 1).replace('; fast blood."', '; fast blood."""', 1)
    multi = multi.replace("Lee 2009", "Lee\u00a02009", 1)
    assert parse_spec(multi).model.description.startswith("Line one.\n")
    with pytest.raises(DataError, match="must be one line"):
        parse_spec(text.replace('name = "muse_vs_msc"', 'name = "muse\\nvs"', 1))


@pytest.mark.parametrize("median", ["1e300", "1e-320"])
def test_a_prior_median_whose_draws_would_overflow_is_refused(median):
    """sigma is capped at 10 so that exponentiated prior draws stay finite; the median too."""
    text = (MODELS / "muse_vs_msc.toml").read_text()
    assert text.count("median = 0.35,") >= 1
    with pytest.raises(DataError) as err:
        parse_spec(text.replace("median = 0.35,", f"median = {median},", 1), file="spec.toml")
    (problem,) = err.value.problems
    assert problem.key == "priors.loss.lung.muse.median"
    assert problem.message.startswith("must be within [1e-100, 1e+100]")


def test_an_empty_cell_type_list_is_refused_in_plain_words():
    text = (MODELS / "muse_vs_msc.toml").read_text()
    with pytest.raises(DataError) as err:
        parse_spec(text.replace('cell_types = ["muse", "msc"]', "cell_types = []", 1))
    assert str(err.value.problems[0]).endswith("key 'model.cell_types': must hold at least 1 item")


def _minimal_with(tmp_path: Path, lines: str) -> Path:
    """The minimal fixture with ``lines`` added to its [measurement] table."""
    text = (SPECS / "minimal.toml").read_text()
    anchor = next(line for line in text.splitlines() if line.startswith("residual_sd = "))
    path = tmp_path / "spec.toml"
    path.write_text(text.replace(anchor, f"{anchor}\n{lines}"))
    return path


def test_the_standard_curve_and_background_priors_come_from_the_spec(tmp_path: Path) -> None:
    """Two priors were hard-coded in the model (calibration_sd ~ HalfNormal(0.5), an
    estimated background ~ LogNormal(LOD / 2, 1)); a spec may now set them, and one that
    does not gets those defaults, so the shipped specs' models are unchanged."""
    from lanternpk.spec import DEFAULT_BACKGROUND_LOD_FRACTION, DEFAULT_CALIBRATION_SD

    default = load_spec(SPECS / "minimal.toml").measurement
    assert default.calibration_sd == DEFAULT_CALIBRATION_SD
    assert (DEFAULT_CALIBRATION_SD.sigma, DEFAULT_BACKGROUND_LOD_FRACTION.median,
            DEFAULT_BACKGROUND_LOD_FRACTION.sigma) == (0.5, 0.5, 1.0)
    assert default.background_lod_fraction == DEFAULT_BACKGROUND_LOD_FRACTION
    own = load_spec(_minimal_with(tmp_path, (
        'calibration_sd = { dist = "halfnormal", sigma = 0.2, units = "sd", source = "test" }\n'
        'background_lod_fraction = { dist = "lognormal", median = 0.3, sigma = 0.5, '
        'units = "fraction", source = "test" }'))).measurement
    assert own.calibration_sd.sigma == 0.2
    assert (own.background_lod_fraction.median, own.background_lod_fraction.sigma) == (0.3, 0.5)


def test_a_bad_standard_curve_or_background_prior_is_named(tmp_path: Path) -> None:
    path = _minimal_with(tmp_path, (
        'calibration_sd = { dist = "lognormal", median = 0.2, sigma = 1, units = "sd", '
        'source = "test" }\n'
        'background_lod_fraction = { dist = "lognormal", median = 2, sigma = 0.5, '
        'units = "fraction", source = "test" }'))
    assert problems_of(path) == [
        f"{path}, line 78, key 'measurement.calibration_sd.dist', value 'lognormal': this "
        "parameter takes dist = 'halfnormal'",
        f"{path}, line 79, key 'measurement.background_lod_fraction.median', value 2.0: the LOD "
        "is the background mean + k SD, so the background's median fraction of it must be at "
        "most 1"]
