"""Known-answer tests of the posterior predictive check calculations in :mod:`lanternpk.ppc`.

Failure budget. Every random input comes from a fixed seed, so outcomes are deterministic; the
budgets below say how often a *correct* implementation would fail on fresh seeds:

- ``test_pit_of_a_correctly_specified_censored_model_is_uniform``: three checks (50% and 90%
  coverage within ±3.29 binomial standard errors, KS p > 0.001), each with false-failure
  probability ≈ 0.001: ≤ 0.3% in all.
- ``test_loo_pit_matches_the_analytic_leave_one_out_of_a_normal_model``: the PSIS estimate
  with 4000 exact posterior draws has Monte Carlo standard error < 0.006 per row here; the
  tolerance 0.03 is > 5 standard errors (< 1e-6 per row, < 1e-4 over the 25 rows). Its
  in-sample average of the draws' CDF has standard error < 0.0013 per row; the tolerance
  0.01 is > 7 standard errors (< 1e-11 over the rows).
- ``test_loo_pit_uses_the_relative_efficiency_of_compare``: exact comparisons with arviz
  (rtol 1e-12) on fixed-seed draws, no failure budget; its AR(1) chains (ρ = 0.9) have
  r_eff ≈ (1 − ρ)/(1 + ρ) ≈ 0.05, far from the bound 0.5 it asserts.
- The misspecified (power) checks fail only if a shift of one residual sd went undetected in
  2000 rows: probability < 1e-12.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, kstest, norm

from lanternpk.compare_stats import relative_efficiency
from lanternpk.ppc import (
    binomial_outside,
    coverage_table,
    covered,
    format_table,
    loo_pit,
    plot_vpc,
    predictive_count_outside,
    randomized_pit,
)

COVERAGE_KEYS = {"region", "modality", "time_h", "n", "n_censored", "coverage_50",
                 "coverage_90", "below_lod_observed", "below_lod_predicted", "flagged",
                 "reasons"}


# --- randomised PIT -----------------------------------------------------------------------

def test_randomized_pit_is_the_cdf_for_detected_rows_and_v_times_cdf_for_censored():
    cdf = np.array([0.1, 0.7, 0.4, 0.8])
    censored = np.array([False, False, True, True])
    v = np.array([0.9, 0.9, 0.5, 0.25])
    pit = randomized_pit(cdf, censored, uniforms=v)
    np.testing.assert_array_equal(pit, [0.1, 0.7, 0.2, 0.2])


def test_randomized_pit_clips_probabilities_and_draws_censored_values_below_the_lod_cdf():
    cdf = np.array([-1e-12, 1.0 + 1e-12, 0.3, 0.3])
    censored = np.array([False, False, True, True])
    pit = randomized_pit(cdf, censored, np.random.default_rng(3))
    assert pit[0] == 0.0 and pit[1] == 1.0
    assert np.all((pit[2:] >= 0.0) & (pit[2:] <= 0.3)) and pit[2] != pit[3]
    again = randomized_pit(cdf, censored, np.random.default_rng(3))
    np.testing.assert_array_equal(pit, again)


def test_randomized_pit_needs_a_source_of_uniforms():
    with pytest.raises(ValueError, match="rng or uniforms"):
        randomized_pit(np.array([0.5]), np.array([True]))


def test_pit_of_a_correctly_specified_censored_model_is_uniform():
    """y ~ Normal(mu_i, 1), reported below LOD when y < lod_i (~35% of rows): the randomised
    PIT with the true predictive CDF is exactly Uniform(0, 1). Budget: module docstring."""
    rng = np.random.default_rng(20261125)
    n = 2000
    mu = rng.normal(0.0, 2.0, n)
    lod = mu + rng.normal(-0.4, 0.5, n)
    y = mu + rng.standard_normal(n)
    censored = y < lod
    assert 0.2 < censored.mean() < 0.5
    cdf = norm.cdf(np.where(censored, lod, y) - mu)
    pit = randomized_pit(cdf, censored, rng)
    for level in (0.5, 0.9):
        se = np.sqrt(level * (1 - level) / n)
        assert abs(covered(pit, level).mean() - level) < 3.29 * se
    assert kstest(pit, "uniform").pvalue > 0.001
    # power: predicting one residual sd too high is caught by both summaries
    bad = randomized_pit(norm.cdf(np.where(censored, lod, y) - mu - 1.0), censored, rng)
    assert covered(bad, 0.5).mean() < 0.5 - 10 * np.sqrt(0.25 / n)
    assert kstest(bad, "uniform").pvalue < 1e-12


# --- coverage and flags -------------------------------------------------------------------

def test_covered_uses_closed_central_intervals():
    pit = np.array([0.0, 0.05, 0.2499, 0.25, 0.5, 0.75, 0.7501, 0.95, 0.9501, 1.0])
    np.testing.assert_array_equal(covered(pit, 0.5), [0, 0, 0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(covered(pit, 0.9), [0, 1, 1, 1, 1, 1, 1, 1, 0, 0])


def test_binomial_outside_matches_exact_binomial_tails():
    # Binomial(10, 1/2): P(X <= 0) = 1/1024 < 0.005, P(X <= 1) = 11/1024 > 0.005
    assert binomial_outside(0, 10, 0.5) and binomial_outside(10, 10, 0.5)
    assert not binomial_outside(1, 10, 0.5) and not binomial_outside(9, 10, 0.5)
    assert not binomial_outside(5, 10, 0.5)
    # Binomial(40, 0.9): 31 covered has P(X <= 31) = 0.0155, 30 has 0.0054, 29 has 0.0017
    assert binom.cdf(29, 40, 0.9) < 0.005 < binom.cdf(30, 40, 0.9)
    assert binomial_outside(29, 40, 0.9) and not binomial_outside(30, 40, 0.9)
    assert not binomial_outside(40, 40, 0.9)  # P(X >= 40) = 0.9**40 = 0.0148
    assert binomial_outside(30, 40, 0.9, confidence=0.98)
    assert not binomial_outside(0, 0, 0.5)


def test_predictive_count_outside_uses_monte_carlo_p_values():
    counts = np.arange(1000)  # (#{K <= k} + 1)/1001 = (k + 2)/1001
    assert predictive_count_outside(3, counts)  # 5/1001 < 0.005
    assert not predictive_count_outside(4, counts)  # 6/1001
    assert predictive_count_outside(996, counts)  # (#{K >= 996} + 1)/1001 = 5/1001
    assert not predictive_count_outside(995, counts)  # 6/1001
    assert predictive_count_outside(7, np.full(300, 3))  # 1/301
    assert not predictive_count_outside(3, np.full(300, 3))
    # 50 draws cannot show a 0.5% tail: a count never seen in them is not evidence
    assert not predictive_count_outside(7, np.full(50, 3))


@pytest.mark.parametrize("n_draws", [30, 100, 400])
def test_predictive_count_flag_keeps_its_false_alarm_rate(n_draws):
    """Observed and predicted counts exchangeable (Binomial(12, 0.5)): flag rate ≤ 1%.

    Failure budget: the rule's exact rate is ≤ 1% for any number of draws; the bound adds
    3 binomial standard errors of the 20,000 replicates (0.0121), fixed seed, so the test is
    deterministic. The previous rule (plain fractions of draws) flagged 3–4% at 30 draws.
    """
    rng = np.random.default_rng(20261125)
    sims = rng.binomial(12, 0.5, size=(20_000, n_draws + 1))
    flags = [predictive_count_outside(row[0], row[1:]) for row in sims]
    assert np.mean(flags) <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / 20_000)


def _obs(groups: list[tuple[str, str, float, str, int]]) -> pd.DataFrame:
    """Canonical-looking observations: (region, modality, time_h, cell_type, rows) groups."""
    records = []
    for region, modality, time_h, cell_type, n in groups:
        for i in range(n):
            records.append({"region": region, "modality": modality, "time_h": time_h,
                            "cell_type": cell_type, "animal": f"{cell_type}{i}",
                            "flux": 100.0 * (i + 1), "lod": 150.0})
    obs = pd.DataFrame(records)
    for column in ("region", "modality", "cell_type", "animal"):
        obs[column] = obs[column].astype("string")
    obs.index = pd.RangeIndex(2, len(obs) + 2, name="row")
    return obs


def test_coverage_table_counts_per_region_modality_time_and_flags():
    obs = _obs([("lung", "in_vivo", 24.0, "muse", 4), ("femur", "in_vivo", 1.0, "muse", 20),
                ("lung", "in_vivo", 1.0, "muse", 4)])
    pit = np.concatenate([[0.1, 0.3, 0.6, 0.97], np.full(20, 0.99), [0.5, 0.5, 0.5, 0.5]])
    censored = np.zeros(28, dtype=bool)
    censored[[0, 1]] = True
    below = np.zeros((200, 28), dtype=bool)
    below[:, 0] = True  # lung 24 h: one row below LOD in every draw, two observed
    below[:100, 1] = True
    below[:, 4:24] = True  # femur: every simulated value below LOD, none observed
    table = coverage_table(obs, censored, pit, below)
    assert [(r["region"], r["time_h"]) for r in table] == [
        ("femur", 1.0), ("lung", 1.0), ("lung", 24.0)]
    assert all(set(r) == COVERAGE_KEYS for r in table)
    femur, lung1, lung24 = table
    assert lung24["n"] == 4 and lung24["n_censored"] == 2
    assert lung24["coverage_50"] == 0.5 and lung24["coverage_90"] == 0.75
    assert lung24["below_lod_observed"] == 0.5
    assert lung24["below_lod_predicted"] == pytest.approx(1.5 / 4)
    # counts below LOD per draw: 2 in half the draws, 1 in the rest; observed 2: inside
    assert not lung24["flagged"] and lung24["reasons"] == []
    assert lung1["coverage_50"] == 1.0 and lung1["coverage_90"] == 1.0 and not lung1["flagged"]
    assert femur["n"] == 20 and femur["coverage_50"] == 0.0 and femur["coverage_90"] == 0.0
    assert femur["below_lod_predicted"] == 1.0 and femur["flagged"]
    assert femur["reasons"] == ["50% interval covers 0/20", "90% interval covers 0/20",
                                "0/20 below LOD, predicted 20.0"]


def test_format_table_has_a_header_and_one_line_per_group():
    obs = _obs([("lung", "in_vivo", 24.0, "muse", 4), ("femur", "ex_vivo", 1.0, "msc", 20)])
    pit = np.concatenate([np.full(4, 0.5), np.full(20, 0.99)])
    table = coverage_table(obs, np.zeros(24, dtype=bool), pit, np.zeros((10, 24), bool))
    lines = format_table(table).splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["region", "modality", "time_h", "n", "cens", "cov50", "cov90",
                                "<LOD", "obs", "<LOD", "pred", "flag"]
    assert lines[1].startswith("femur") and "FLAG: 50% interval covers 0/20" in lines[1]
    assert lines[2].split() == ["lung", "in_vivo", "24", "4", "0", "1.00", "1.00", "0.00",
                                "0.00"]


# --- LOO-PIT ------------------------------------------------------------------------------

def test_loo_pit_with_equal_log_likelihoods_is_the_mean_cdf():
    rng = np.random.default_rng(1)
    cdf = rng.uniform(size=(400, 6))
    log_lik = np.tile(rng.normal(size=6), (400, 1))
    censored = np.array([False, False, False, True, True, False])
    v = np.linspace(0.1, 0.9, 6)
    pit, k, reff = loo_pit(log_lik, cdf, censored, uniforms=v)
    mean = cdf.mean(axis=0)
    np.testing.assert_allclose(pit, np.where(censored, v * mean, mean), rtol=1e-12)
    assert k.shape == (6,) and reff == 1.0  # one chain


def test_loo_pit_uses_importance_weights_proportional_to_the_inverse_likelihood():
    """Likelihood 1 on even draws, 2 on odd ones: the raw weights 1 and 1/2 have a constant
    upper tail, which Pareto smoothing leaves as it is, so the weights are analytic."""
    s = 1000
    odd = np.arange(s) % 2 == 1
    log_lik = np.where(odd, np.log(2.0), 0.0)[:, None] * np.ones((1, 3))
    cdf = np.stack([np.where(odd, 0.0, 1.0), np.where(odd, 1.0, 0.0),
                    np.where(odd, 0.8, 0.2)], axis=1)
    pit = loo_pit(log_lik, cdf, np.zeros(3, dtype=bool)).pit
    # weights 2/3 (even draws) and 1/3 (odd draws) in total
    np.testing.assert_allclose(pit, [2 / 3, 1 / 3, 2 / 3 * 0.2 + 1 / 3 * 0.8], rtol=1e-12)


def test_loo_pit_matches_the_analytic_leave_one_out_of_a_normal_model():
    """y_i ~ Normal(theta, 1), theta ~ Normal(0, 10²), exact posterior draws of theta. The
    leave-one-out predictive of y_i is Normal(m_-i, 1 + v_-i) in closed form. Budget: module
    docstring."""
    rng = np.random.default_rng(7)
    n, s = 25, 4000
    y = rng.normal(1.5, 1.0, n)
    prior_precision = 0.01
    v = 1.0 / (n + prior_precision)
    theta = rng.normal(v * y.sum(), np.sqrt(v), s)
    log_lik = norm.logpdf(y[None, :] - theta[:, None])
    cdf = norm.cdf(y[None, :] - theta[:, None])
    pit, k, _ = loo_pit(log_lik, cdf, np.zeros(n, dtype=bool))
    v_loo = 1.0 / (n - 1 + prior_precision)
    m_loo = v_loo * (y.sum() - y)
    exact = norm.cdf((y - m_loo) / np.sqrt(1.0 + v_loo))
    np.testing.assert_allclose(pit, exact, atol=0.03)
    assert np.all(k < 0.7)
    # the in-sample PIT, Normal(m, 1 + v) in closed form, is pulled towards 1/2 relative to
    # LOO, and the draws' in-sample average is that PIT
    in_sample = norm.cdf((y - v * y.sum()) / np.sqrt(1.0 + v))
    assert np.all(np.abs(in_sample - 0.5) < np.abs(exact - 0.5))
    np.testing.assert_allclose(cdf.mean(axis=0), in_sample, atol=0.01)


def test_loo_pit_uses_the_relative_efficiency_of_compare():
    """Four autocorrelated chains (AR(1), ρ = 0.9) of an exact normal posterior: LOO-PIT is
    PSIS with compare's r_eff estimate, which (≈ 0.05 here) lengthens the Pareto tail fitted
    from min(S/5, 3√S) = 134 to S/5 = 400 of the S = 2000 weights, so r_eff = 1 would give
    other Pareto k. Budget: module docstring."""
    import arviz as az

    rng = np.random.default_rng(11)
    n, chains, per_chain, rho = 8, 4, 500, 0.9
    y = rng.normal(1.5, 1.0, n)
    v = 1.0 / (n + 0.01)
    z = np.empty((chains, per_chain))
    z[:, 0] = rng.standard_normal(chains)
    for t in range(1, per_chain):  # stationary Normal(0, 1) AR(1) chains
        z[:, t] = rho * z[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(chains)
    theta = (v * y.sum() + np.sqrt(v) * z).reshape(-1)  # chain-major, like the run's draws
    log_lik = norm.logpdf(y[None, :] - theta[:, None])
    cdf = norm.cdf(y[None, :] - theta[:, None])
    censored = np.arange(n) % 3 == 0
    u = np.linspace(0.05, 0.95, n)

    result = loo_pit(log_lik, cdf, censored, n_chains=chains, uniforms=u)
    reff = relative_efficiency(log_lik, chains)
    assert result.reff == reff < 0.5
    log_w, k = az.psislw(-log_lik.T.copy(), reff=reff)
    f_loo = np.sum(np.exp(log_w) * cdf.T, axis=-1)
    np.testing.assert_allclose(result.pit, np.where(censored, u * f_loo, f_loo), rtol=1e-12)
    np.testing.assert_allclose(result.pareto_k, k, rtol=1e-12)
    _, k_at_1 = az.psislw(-log_lik.T.copy(), reff=1.0)
    assert np.max(np.abs(result.pareto_k - k_at_1)) > 1e-3  # the check above can tell
    # one chain (or thinned draws): PSIS with r_eff = 1
    single = loo_pit(log_lik, cdf, censored, uniforms=u)
    assert single.reff == 1.0
    np.testing.assert_allclose(single.pareto_k, k_at_1, rtol=1e-12)


# --- figures ------------------------------------------------------------------------------

def test_plot_vpc_returns_a_figure_and_two_rows_of_axes_per_cell_type():
    from matplotlib.figure import Figure

    obs = pd.concat([_obs([("lung", "in_vivo", t, ct, 3)]) for t in (1.0, 24.0, 168.0)
                     for ct in ("muse", "msc")] + [_obs([("femur", "ex_vivo", 24.0, "msc", 2)])])
    obs.index = pd.RangeIndex(2, len(obs) + 2, name="row")
    rng = np.random.default_rng(0)
    flux_draws = np.exp(rng.normal(5.0, 1.0, size=(50, len(obs))))
    fig, axes = plot_vpc(obs, flux_draws, flux_draws < 150.0, region="lung", modality="in_vivo")
    assert isinstance(fig, Figure) and axes.shape == (2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["lung, in vivo: muse", "lung, in vivo: msc"]
    assert axes[0, 0].get_yscale() == "log" and axes[1, 0].get_xscale() == "log"
    fig, axes = plot_vpc(obs, flux_draws, flux_draws < 150.0, region="femur", modality="ex_vivo")
    assert axes.shape == (2, 1)
    with pytest.raises(ValueError, match="no rows"):
        plot_vpc(obs, flux_draws, flux_draws < 150.0, region="femur", modality="in_vivo")


@pytest.mark.parametrize(("flags", "shown"), [([], True), (["--quiet"], False)])
def test_the_ppc_command_reports_its_draws_progress(monkeypatch, tmp_path, flags, shown):
    """DESIGN.md: a progress bar for long work. The command hands run_ppc a callback over the
    simulated draws, drawn as a bar on a terminal's stderr unless --quiet."""
    import rich.console
    import rich.progress

    import lanternpk.ppc as ppc
    from lanternpk.cli import main
    from lanternpk.errors import EXIT_USAGE, UsageError

    bars, updates = [], []

    class RecordingProgress(rich.progress.Progress):
        def __init__(self, *columns, **kwargs):
            super().__init__(*columns, **kwargs)
            bars.append(self)

        def update(self, task_id, **fields):
            updates.append((fields["completed"], fields["total"]))
            super().update(task_id, **fields)

    def fake_run_ppc(run_dir, **kwargs):
        kwargs["progress"](500, 1000)
        kwargs["progress"](1000, 1000)
        raise UsageError("stop here")

    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    monkeypatch.setattr(rich.progress, "Progress", RecordingProgress)
    monkeypatch.setattr(ppc, "run_ppc", fake_run_ppc)
    assert main(["ppc", str(tmp_path), *flags]) == EXIT_USAGE
    assert len(bars) == 1 and bars[0].disable is not shown
    assert updates == [(500, 1000), (1000, 1000)]


def test_progress_naming_the_run_escapes_its_control_characters(monkeypatch, tmp_path,
                                                                capsys):
    """'simulating the posterior predictive of RUN' went to stderr with the run's name raw:
    an escape sequence in a directory name reached the terminal."""
    import lanternpk.ppc as ppc
    from lanternpk.cli import main
    from lanternpk.errors import EXIT_USAGE, UsageError

    def fake_run_ppc(run_dir, **kwargs):
        kwargs["log"](f"simulating the posterior predictive of {run_dir} ...")
        raise UsageError("stop here")

    monkeypatch.setattr(ppc, "run_ppc", fake_run_ppc)
    assert main(["ppc", str(tmp_path / "run\x1b[2J"), "--quiet"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "\x1b" not in err and "run\\x1b[2J ..." in err


def test_a_ppc_file_in_the_way_is_refused_before_simulating(tmp_path, capsys):
    """RUN_DIR/ppc as a file: before, the whole simulation ran, then 'File exists'."""
    from lanternpk.cli import main
    from lanternpk.errors import EXIT_USAGE

    (tmp_path / "posterior.nc").write_bytes(b"not read: the check comes first")
    (tmp_path / "ppc").write_text("mine")
    assert main(["ppc", str(tmp_path)]) == EXIT_USAGE
    assert f"{tmp_path / 'ppc'} is not a directory" in capsys.readouterr().err
    assert (tmp_path / "ppc").read_text() == "mine"


@pytest.mark.parametrize(("given", "reason"), [
    ("", "an empty path is not a file"), ("DIR", "is a directory, not a file")])
def test_ppc_data_must_be_a_file(tmp_path, capsys, given, reason):
    """Before: 'no such file: .' for an empty path, 'no such file: /tmp' for a directory."""
    from lanternpk.cli import main
    from lanternpk.errors import EXIT_USAGE

    given = str(tmp_path) if given == "DIR" else given
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit for a bad argument
        main(["ppc", str(tmp_path), "--data", given])
    assert exit_.value.code == EXIT_USAGE and reason in capsys.readouterr().err


# --- RUN_DIR/ppc: refusals, strict JSON, whole-directory replacement -------------------------

def test_a_broken_symlink_at_ppc_is_refused_before_simulating(tmp_path, capsys):
    """Before: it passed the check (exists() is False), and writing failed after the whole
    simulation with 'File exists'."""
    from lanternpk.cli import main
    from lanternpk.errors import EXIT_USAGE

    (tmp_path / "posterior.nc").write_bytes(b"not read: the check comes first")
    (tmp_path / "ppc").symlink_to(tmp_path / "nonexistent" / "x")
    assert main(["ppc", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ppc'} is a symbolic link, not a directory" in err
    assert (tmp_path / "ppc").is_symlink()


def test_files_ppc_does_not_write_in_ppc_are_refused_before_simulating(tmp_path, capsys):
    """ppc/ is replaced as a whole, so a file of the user's there would be deleted."""
    from lanternpk.cli import main
    from lanternpk.errors import EXIT_USAGE

    (tmp_path / "posterior.nc").write_bytes(b"not read: the check comes first")
    (tmp_path / "ppc").mkdir()
    (tmp_path / "ppc" / "coverage.json").write_text("[]")
    (tmp_path / "ppc" / "notes.txt").write_text("mine")
    (tmp_path / "ppc" / "vpc_lung_in_vivo.png").mkdir()  # a directory, not a figure
    assert main(["ppc", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ppc'} holds notes.txt, vpc_lung_in_vivo.png, which ppc does not write" \
        in err
    assert (tmp_path / "ppc" / "notes.txt").read_text() == "mine"


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A run directory whose loading and simulation are replaced by small fixed arrays
    (6 rows, 40 draws, one row below LOD), so that :func:`run_ppc` runs in a second."""
    from types import SimpleNamespace

    import lanternpk.data.load
    import lanternpk.fit
    import lanternpk.model
    import lanternpk.predictive
    import lanternpk.spec

    obs = _obs([("lung", "in_vivo", 24.0, "muse", 3), ("femur", "in_vivo", 24.0, "muse", 3)])
    obs["study"] = "s"
    obs["image"] = [f"img{i}" for i in range(len(obs))]
    rng = np.random.default_rng(5)
    flux = np.exp(rng.normal(5.5, 1.0, size=(40, len(obs))))
    lod = obs["lod"].to_numpy()
    pred = SimpleNamespace(flux=flux, log_flux=np.log(flux), below_lod=flux < lod,
                           cdf=rng.uniform(size=flux.shape),
                           log_lik=rng.normal(-3.0, 0.5, size=flux.shape),
                           draw_index=np.arange(40), device="cpu")
    provenance = {"data_sha256": "d" * 64, "spec_sha256": "s" * 64}
    monkeypatch.setattr(lanternpk.predictive, "resolve_device", lambda device: "cpu")
    monkeypatch.setattr(lanternpk.fit, "load_run_with_inputs", lambda run_dir, **kw: (
        SimpleNamespace(posterior=SimpleNamespace(sizes={"chain": 1, "draw": 40},
                                                  data_vars={})), provenance,
        Path("spec.toml"), Path("obs.csv")))
    monkeypatch.setattr(lanternpk.spec, "load_spec", lambda path: None)
    monkeypatch.setattr(lanternpk.data.load, "load_observations", lambda path: obs)
    monkeypatch.setattr(lanternpk.model, "prepare_data", lambda spec, obs, source: (
        SimpleNamespace(censored=obs["flux"].to_numpy() < obs["lod"].to_numpy())))
    monkeypatch.setattr(lanternpk.predictive, "posterior_predictive",
                        lambda *args, **kwargs: pred)
    monkeypatch.setattr(lanternpk.predictive, "chains_kept", lambda group, index: 1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "posterior.nc").write_bytes(b"not read: loading is faked")
    return run


def _strict_json(text: str) -> object:
    """``json.loads`` that refuses NaN and Infinity, as parsers other than Python's do."""
    import json

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_ppc_writes_non_finite_numbers_as_null(fake_run, monkeypatch):
    """Before: ``"pareto_k_max": Infinity`` in loo_pit.json, which is not JSON."""
    import arviz as az

    import lanternpk.ppc as ppc

    def loo_with_a_dominant_draw(log_lik, cdf, censored, **kwargs):
        result = loo_pit(log_lik, cdf, censored, **kwargs)
        pareto_k = result.pareto_k.copy()
        pareto_k[2] = np.inf
        return result._replace(pareto_k=pareto_k)

    monkeypatch.setattr(ppc, "loo_pit", loo_with_a_dominant_draw)
    result = ppc.run_ppc(fake_run, write_figures=False)
    assert result.loo_pit["pareto_k_max"] == np.inf  # printed as inf
    loo = _strict_json((fake_run / "ppc" / "loo_pit.json").read_text())
    assert loo["pareto_k_max"] is None and loo["rows"][2]["pareto_k"] is None
    assert loo["n_pareto_k_above_0.7"] >= 1
    coverage = _strict_json((fake_run / "ppc" / "coverage.json").read_text())
    assert [r["region"] for r in coverage] == ["femur", "lung"]
    idata = az.from_netcdf(fake_run / "ppc" / "posterior_predictive.nc")
    assert _strict_json(idata.attrs["lanternpk_ppc"])["draws"] == 40


def _tree(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_an_interrupted_ppc_leaves_the_earlier_ppc_whole(fake_run, monkeypatch):
    """Ctrl-C while drawing the figures: before, ppc/ held the new .nc and JSON beside the
    earlier figures. Now the earlier ppc/ is untouched and nothing else is left behind."""
    import lanternpk.ppc as ppc

    ppc.run_ppc(fake_run, seed=1)
    (fake_run / "ppc" / "vpc_gone_in_vivo.png").write_bytes(b"an earlier check's figure")
    earlier = _tree(fake_run / "ppc")
    drawn = []

    def interrupted_plot(*args, **kwargs):
        if drawn:
            raise KeyboardInterrupt
        drawn.append(kwargs["region"])
        return plot_vpc(*args, **kwargs)

    monkeypatch.setattr(ppc, "plot_vpc", interrupted_plot)
    with pytest.raises(KeyboardInterrupt):
        ppc.run_ppc(fake_run, seed=2)
    assert drawn == ["femur"]
    assert _tree(fake_run / "ppc") == earlier
    assert sorted(p.name for p in fake_run.iterdir()) == ["posterior.nc", "ppc"]

    monkeypatch.setattr(ppc, "plot_vpc", plot_vpc)  # a complete check replaces it whole
    result = ppc.run_ppc(fake_run, seed=2)
    assert sorted(_tree(fake_run / "ppc")) == [
        "coverage.json", "loo_pit.json", "posterior_predictive.nc", "vpc_femur_in_vivo.png",
        "vpc_lung_in_vivo.png"]
    assert result.figures == [fake_run / "ppc" / "vpc_femur_in_vivo.png",
                              fake_run / "ppc" / "vpc_lung_in_vivo.png"]
    assert (fake_run / "ppc" / "loo_pit.json").read_bytes() != earlier["loo_pit.json"]
    assert sorted(p.name for p in fake_run.iterdir()) == ["posterior.nc", "ppc"]


def _run_that_opens_as(monkeypatch, run_dir, posterior) -> None:
    """Make ``run_dir`` a run whose posterior is ``posterior`` (no spec, data or files read)."""
    from types import SimpleNamespace

    import lanternpk.data.load
    import lanternpk.fit
    import lanternpk.model
    import lanternpk.predictive
    import lanternpk.spec

    (run_dir / "posterior.nc").write_bytes(b"not read")
    monkeypatch.setattr(lanternpk.predictive, "resolve_device", lambda device: "cpu")
    monkeypatch.setattr(lanternpk.fit, "load_run_with_inputs", lambda run_dir, **kw: (
        SimpleNamespace(posterior=posterior), {}, Path("spec.toml"), Path("obs.csv")))
    monkeypatch.setattr(lanternpk.spec, "load_spec", lambda path: None)
    monkeypatch.setattr(lanternpk.data.load, "load_observations", lambda path: None)
    monkeypatch.setattr(lanternpk.model, "prepare_data", lambda spec, obs, source: None)


def test_ppc_refuses_a_run_too_small_for_pareto_smoothing(monkeypatch, tmp_path, capsys):
    """ArviZ fits no Pareto tail of 4 draws or fewer: below 21 draws every LOO-PIT k was
    infinite. A run of 2 × 10 draws is refused before simulating (--draws cannot add any)."""
    from types import SimpleNamespace

    from lanternpk.cli import main
    from lanternpk.compare_stats import MIN_PSIS_DRAWS, psis_loo
    from lanternpk.errors import EXIT_USAGE

    loglik = np.random.default_rng(0).normal(size=(MIN_PSIS_DRAWS - 1, 3))
    assert np.isinf(psis_loo(loglik).pareto_k).all()  # why the floor is where it is
    assert np.isfinite(psis_loo(np.vstack([loglik, loglik[:1]])).pareto_k).all()
    _run_that_opens_as(monkeypatch, tmp_path,
                       SimpleNamespace(sizes={"chain": 2, "draw": 10}))
    assert main(["ppc", str(tmp_path), "--quiet"]) == EXIT_USAGE
    assert (f"{tmp_path} holds 20 posterior draws (chains × draws = 2 × 10); LOO-PIT needs "
            "at least 21 for Pareto smoothing") in capsys.readouterr().err


def test_ppc_refuses_a_run_with_non_finite_draws(monkeypatch, tmp_path, capsys):
    """A run with one NaN draw flagged 44 of 44 groups, gave KS D = nan and exited 0."""

    import xarray as xr

    from lanternpk.cli import main
    from lanternpk.errors import EXIT_USAGE

    sd = np.ones((2, 30))
    sd[0, 5] = np.nan
    posterior = xr.Dataset({"residual_sd": (("chain", "draw"), sd)})
    _run_that_opens_as(monkeypatch, tmp_path, posterior)
    assert main(["ppc", str(tmp_path), "--quiet"]) == EXIT_USAGE
    assert (f"{tmp_path} holds NaN or infinite posterior draws, in residual_sd (chain 0, draw "
            "5); ppc cannot use them") in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior.nc"]
