"""`lanternpk compare` prefers the data-generating model on the bundled ALS-like study.

The bundled study (data/als_mouse) was simulated from the ``muse_vs_msc`` structure: Muse
cells home to the spinal cord, MSCs do not. The null ``shared_homing`` forces both cell types
to share first-pass fractions.

Failure budget. Fits and importance draws use fixed seeds, so the outcome is deterministic
on a given platform. The check is ``elpd_loao(muse_vs_msc) > elpd_loao(shared_homing)``
(leave one animal out: the new-animal question the null is about). With these settings the
difference was measured at 7.9 nats with a paired SE of 3.2 (≈ 2.5 SE); read as a normal
sampling distribution over fresh datasets of this design, a correct method would rank the
null first with probability ≈ Φ(−2.5) ≈ 0.6%. Per-row PSIS-LOO barely separates the models
(1.5 ± 3.4 nats: the animals' random effects absorb much of the difference once their own
data are seen), so it is reported but not asserted.

Time: two fits of 2 chains × 300 draws, scoring both runs, two refits of one animal each and a
tiny fit on altered data: 6 min in all on a shared 2-core machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lanternpk.cli import main
from lanternpk.compare import COMPARE_FILE, compare_runs
from lanternpk.compare_stats import PARETO_K_BAD
from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_OK, EXIT_USAGE

pytestmark = [pytest.mark.slow, pytest.mark.statistical,
              # refits sample 2 chains; when JAX was loaded (by another test) with one CPU
              # device, numpyro says it draws them one after the other
              pytest.mark.filterwarnings("ignore:There are not enough devices:UserWarning")]

SETTINGS = ["--chains", "2", "--draws", "300", "--tune", "300", "--quiet"]


def _fit(root, data, spec, out, settings=SETTINGS):
    rc = main(["fit", str(data), "--model", str(root / f"models/{spec}.toml"), "--calibration",
               str(root / "data/als_mouse/calibration.csv"), "--out", str(out), *settings])
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    return out


@pytest.fixture(scope="module")
def runs(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    data = root / "data/als_mouse/observations.csv"
    return {spec: _fit(root, data, spec, out / spec) for spec in ("muse_vs_msc", "shared_homing")}


def test_compare_prefers_the_data_generating_model(runs, capsys):
    rc = main(["compare", str(runs["muse_vs_msc"]), str(runs["shared_homing"]), "--no-refit"])
    out = capsys.readouterr().out
    assert rc == EXIT_OK
    assert "elpd_loao" in out
    records = json.loads((runs["muse_vs_msc"] / COMPARE_FILE).read_text())
    by_model = {r["model"]: r for r in records}
    assert set(by_model) == {"muse_vs_msc", "shared_homing"}
    truth, null = by_model["muse_vs_msc"], by_model["shared_homing"]
    print(json.dumps(records, indent=1))
    assert truth["elpd_loao"] > null["elpd_loao"]
    assert truth["elpd_loao_diff"] == 0 and null["elpd_loao_diff"] > 0
    assert null["se_loao_diff"] > 0 and truth["n_animals"] == 16 and truth["n_rows"] == 368
    assert truth["n_animals_refit"] == 0
    for record in records:  # an animal with k > 0.7 is named in a warning, and only then
        n_bad = record["n_animals_unreliable"]
        assert n_bad == record["n_animals_k_above_0.7"]  # --no-refit: none is refit
        warning = (f"{n_bad} of 16 animals keep a PSIS leave-one-animal-out value with "
                   "Pareto k > 0.7 (--no-refit); elpd_loao is unreliable")
        assert (warning in record["warnings"]) is (n_bad > 0), record
    assert all(not isinstance(v, dict | list) for r in records for v in r.values())
    animals = json.loads((runs["muse_vs_msc"] / "compare_animals.json").read_text())
    assert len(animals) == 32 and all(np.isfinite(a["elpd_loao"]) for a in animals)


def test_refit_replaces_the_worst_animal(runs):
    result = compare_runs([runs["muse_vs_msc"], runs["shared_homing"]], max_refits=1,
                          refit_draws=150, write=False)
    # measured: both runs hold animals with k > 0.7; without one, nothing here is tested
    assert any(score.loao_psis.n_bad for score in result.scores)
    for score in result.scores:
        refit = [a for a, m in enumerate(score.method) if m == "refit"]
        if score.loao_psis.n_bad == 0:
            assert refit == []
            continue
        (a,) = refit
        assert a == int(np.argmax(score.loao_psis.pareto_k))  # the worst k goes first
        assert np.isfinite(score.loao_i[a])
        # The refit's importance sampling is reliable (Pareto k < 0.7) or the result says it
        # is not. Until 2026-11-25 this asserted k < 0.7 outright; with the draws of the
        # flat-vector numpyro driver, muse_vs_msc's worst animal has k = 0.78 with 32 inner
        # draws and 0.80 with 128, while its estimate moves by 0.07 nats (-13.17 → -13.25):
        # a heavy tail of this proposal for that animal, not Monte Carlo noise, so the user
        # must be told, and that is what is checked.
        label = score.loao_psis.labels[a]
        warned = any(w.startswith(f"refit of {label}: importance sampling of its new random "
                                  "effects has Pareto k") for w in score.warnings)
        assert warned == (score.refit_k[a] > PARETO_K_BAD)  # told if and only if unreliable
        # the exact value is a log density of ~20 ROIs: a few nats per ROI at most
        assert -10 * 23 < score.loao_i[a] < 0
        other = np.arange(len(score.loao_i)) != a
        np.testing.assert_array_equal(score.loao_i[other], score.loao_psis.elpd_i[other])
    assert result.files == []


def test_compare_refuses_runs_fit_to_different_data(root, runs, tmp_path, capsys):
    data = tmp_path / "observations.csv"
    text = (root / "data/als_mouse/observations.csv").read_text().splitlines()
    data.write_text("\n".join(text[:-1]) + "\n")  # one row fewer
    other = _fit(root, data, "muse_vs_msc", tmp_path / "other",
                 settings=["--chains", "2", "--draws", "20", "--tune", "20", "--quiet"])
    capsys.readouterr()
    rc = main(["compare", str(runs["muse_vs_msc"]), str(other), "--no-refit"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "compare needs runs fit to the same data" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
