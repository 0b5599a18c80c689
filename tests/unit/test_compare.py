"""Known-answer tests of the scores behind `lanternpk compare` (no fits, no JAX).

Monte Carlo tolerances: every check below uses a fixed seed; each tolerance is a multiple (≥ 4)
of the Monte Carlo standard error computed from the same draws, plus a small allowance for
the O(1/S) bias of a ratio estimator, so a correct implementation fails with probability
well under 1e-3 per check on fresh seeds.
"""

from __future__ import annotations

from dataclasses import replace

import arviz as az
import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from lanternpk.cli import main
from lanternpk.compare import (
    ModelScores,
    animal_records,
    comparison_table,
    format_table,
    proposal,
    run_labels,
)
from lanternpk.compare_stats import (
    PARETO_K_BAD,
    LooResult,
    elpd_difference,
    group_log_lik,
    importance_log_mean,
    log_mean_exp,
    psis_loao,
    psis_loo,
)
from lanternpk.errors import EXIT_USAGE

SIGMA, TAU, S0 = 1.0, 0.3, 2.0  # residual sd, group sd, prior sd of the mean
N_GROUPS, PER_GROUP = 8, 3


def _random_intercept_data(seed: int = 1):
    rng = np.random.default_rng(seed)
    b = TAU * rng.standard_normal(N_GROUPS)
    y = 0.7 + b[:, None] + SIGMA * rng.standard_normal((N_GROUPS, PER_GROUP))
    return y


def _exact_posterior(y: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Exact draws of (mu, b_1..b_G) of the conjugate Gaussian random-intercept model."""
    g, j = y.shape
    precision = np.zeros((g + 1, g + 1))
    rhs = np.zeros(g + 1)
    precision[0, 0] = 1 / S0**2 + g * j / SIGMA**2
    rhs[0] = y.sum() / SIGMA**2
    for a in range(g):
        precision[0, a + 1] = precision[a + 1, 0] = j / SIGMA**2
        precision[a + 1, a + 1] = j / SIGMA**2 + 1 / TAU**2
        rhs[a + 1] = y[a].sum() / SIGMA**2
    cov = np.linalg.inv(precision)
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(cov @ rhs, cov, size=draws)


def _group_cov(j: int) -> np.ndarray:
    return SIGMA**2 * np.eye(j) + TAU**2 * np.ones((j, j))


def _exact_logo(y: np.ndarray, g: int) -> float:
    """log p(y_g | y_−g) with the held-out group's intercept integrated out (analytic)."""
    j = y.shape[1]
    cov = _group_cov(j)
    inv = np.linalg.inv(cov)
    ones = np.ones(j)
    rest = np.delete(y, g, axis=0)
    precision = 1 / S0**2 + len(rest) * ones @ inv @ ones
    mean = sum(ones @ inv @ r for r in rest) / precision
    return float(multivariate_normal(mean * ones, cov + np.ones((j, j)) / precision).logpdf(y[g]))


def test_psis_loao_matches_the_analytic_leave_one_group_out_density():
    y = _random_intercept_data()
    draws = _exact_posterior(y, 8000, seed=2)
    mu, b = draws[:, 0], draws[:, 1:]
    # pointwise conditional log-likelihood (draws, rows), rows grouped by group
    log_lik = norm.logpdf(y.ravel()[None, :], (mu[:, None] + np.repeat(b, PER_GROUP, axis=1)),
                          SIGMA)
    groups = np.repeat([f"g{a}" for a in range(N_GROUPS)], PER_GROUP)
    result = psis_loao(log_lik, groups)
    assert result.labels == [f"g{a}" for a in range(N_GROUPS)]
    assert np.all(result.pareto_k < PARETO_K_BAD)
    summed, _ = group_log_lik(log_lik, groups)
    for g in range(N_GROUPS):
        exact = _exact_logo(y, g)
        # MC SE of -log mean(1/p) by the delta method, from the same draws
        inv = np.exp(-summed[:, g] - np.max(-summed[:, g]))
        mc_se = np.std(inv, ddof=1) / np.sqrt(len(inv)) / np.mean(inv)
        assert abs(result.elpd_i[g] - exact) < 5 * mc_se + 0.01, (g, result.elpd_i[g], exact)


def test_psis_on_the_marginal_likelihood_matches_the_analytic_density():
    """What compare does per animal: PSIS over θ of log p(y_g | θ) with b_g integrated out."""
    y = _random_intercept_data()
    mu = _exact_posterior(y, 8000, seed=6)[:, 0]
    cov = _group_cov(PER_GROUP)
    marginal = np.column_stack([
        multivariate_normal(np.zeros(PER_GROUP), cov).logpdf(y[g][None, :] - mu[:, None])
        for g in range(N_GROUPS)])
    result = psis_loo(marginal)
    assert np.all(result.pareto_k < 0.5)
    for g in range(N_GROUPS):
        inv = np.exp(-marginal[:, g] - np.max(-marginal[:, g]))
        mc_se = np.std(inv, ddof=1) / np.sqrt(len(inv)) / np.mean(inv)
        assert abs(result.elpd_i[g] - _exact_logo(y, g)) < 5 * mc_se + 0.01


def test_importance_sampling_of_new_effects_matches_the_marginal_likelihood():
    """The refit's integral over a new animal's effects, on a case with a known answer."""
    y = _random_intercept_data()[0]
    mu = 0.3
    exact = multivariate_normal(mu * np.ones(PER_GROUP), _group_cov(PER_GROUP)).logpdf(y)
    # "posterior" draws of the standardised effect z = b / tau given (y, mu), for the proposal
    post_prec = PER_GROUP * TAU**2 / SIGMA**2 + 1
    post_mean = TAU * (y - mu).sum() / SIGMA**2 / post_prec
    rng = np.random.default_rng(3)
    effects = post_mean + rng.standard_normal((2000, 1)) / np.sqrt(post_prec)
    sample, logpdf = proposal(effects)
    z = sample(20000, rng)
    log_ratio = (norm.logpdf(y[None, :], mu + TAU * z, SIGMA).sum(axis=1)
                 + norm.logpdf(z[:, 0]) - logpdf(z))
    value, k, mc_se = importance_log_mean(log_ratio)
    assert k < 0.5
    assert abs(value - exact) < 5 * mc_se + 1e-3


def test_mc_error_of_grouped_ratios_matches_their_spread_over_seeds():
    """The refit estimate repeats each of S posterior draws for M proposal draws; its MC error
    treated the S·M ratios as independent, ~sqrt(M) too small when the ratios vary mostly
    with the posterior draw. Here log ratio = u_s + small noise over S = 400 draws (4 AR(1)
    chains, ρ = 0.5) × M = 32: the reported error must match the sd of the estimate over 300
    seeds. Failure budget: that sd's relative error is ~1/sqrt(2·299) = 4%, the tolerance
    (25%) ~6 of those, < 1e-6 per run; the old error was ~6× too small."""
    s, m, chains, rho = 400, 32, 4, 0.5
    values, errors, naive = [], [], []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        u = np.empty((chains, s // chains))
        u[:, 0] = rng.standard_normal(chains)
        for t in range(1, s // chains):
            u[:, t] = rho * u[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(chains)
        log_ratio = 0.5 * np.repeat(u.ravel(), m) + 0.05 * rng.standard_normal(s * m)
        value, _, mc_se = importance_log_mean(log_ratio, group_size=m, n_chains=chains)
        values.append(value)
        errors.append(mc_se)
        naive.append(importance_log_mean(log_ratio)[2])
    spread = np.std(values, ddof=1)
    assert np.mean(errors) == pytest.approx(spread, rel=0.25)
    assert np.mean(naive) < spread / 4  # what was reported before


def test_grouped_ratios_must_split_evenly():
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        importance_log_mean(np.zeros(10), group_size=3)


def test_psis_loo_agrees_with_arviz():
    rng = np.random.default_rng(4)
    mu = 0.5 + 0.1 * rng.standard_normal(2000)
    y = rng.normal(0.5, 1.0, size=30)
    log_lik = norm.logpdf(y[None, :], mu[:, None], 1.0)
    ours = psis_loo(log_lik)
    idata = az.from_dict(posterior={"mu": mu[None]}, log_likelihood={"y": log_lik[None]})
    theirs = az.loo(idata, pointwise=True)
    np.testing.assert_allclose(ours.elpd_i, theirs.loo_i.values, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.pareto_k, theirs.pareto_k.values, rtol=0, atol=1e-8)
    assert ours.elpd == pytest.approx(float(theirs.elpd_loo), abs=1e-8)
    # SE with the sample variance (ddof=1); arviz uses ddof=0
    assert ours.se == pytest.approx(float(theirs.se) * np.sqrt(30 / 29), rel=1e-8)
    assert ours.p_eff == pytest.approx(float(theirs.p_loo), abs=1e-8)


def test_elpd_difference_by_hand():
    diff, se = elpd_difference(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 1.0]))
    # d = (1, 0, 2): sum 3; sample variance 1; se = sqrt(3 · 1)
    assert diff == pytest.approx(3.0)
    assert se == pytest.approx(np.sqrt(3.0))
    with pytest.raises(ValueError, match="differ in shape"):
        elpd_difference(np.zeros(2), np.zeros(3))


def test_group_log_lik_sums_in_order_of_first_appearance():
    log_lik = np.arange(12.0).reshape(2, 6)
    summed, labels = group_log_lik(log_lik, ["b", "a", "b", "c", "a", "b"])
    assert labels == ["b", "a", "c"]
    np.testing.assert_allclose(summed, [[0 + 2 + 5, 1 + 4, 3], [6 + 8 + 11, 7 + 10, 9]])


def test_pareto_k_warns_for_an_influential_observation():
    rng = np.random.default_rng(5)
    z = rng.standard_normal(4000)
    log_lik = np.column_stack([norm.logpdf(0.1 * z), -5.0 * z**2])  # 1/p = exp(5 z²): heavy
    result = psis_loo(log_lik, labels=["12", "13"])
    assert result.pareto_k[0] < 0.5 and result.pareto_k[1] > PARETO_K_BAD
    assert result.n_bad == 1


def _scores(name: str, loo_i, loao_i, k_animals) -> ModelScores:
    loo_i, loao_i = np.asarray(loo_i, float), np.asarray(loao_i, float)
    animals = [f"s/a{i}" for i in range(len(loao_i))]
    loo = LooResult(loo_i, loo_i + 0.1, np.zeros(len(loo_i)), [str(i) for i in range(len(loo_i))])
    loao = LooResult(loao_i, loao_i + 1.0, np.asarray(k_animals, float), animals)
    n = len(animals)
    return ModelScores(name=name, run_dir=f"runs/{name}", loo=loo, loao_psis=loao,
                       loao_conditional=loao, inner_k=np.zeros(n), loao_i=loao_i.copy(),
                       method=["psis"] * n, refit_k=[None] * n, refit_mc_se=[None] * n,
                       refit_converged=[None] * n)


def test_comparison_table_ranks_and_differences():
    a = _scores("a", [-1.0, -2.0, -1.0, -2.0], [-3.0, -4.0], [0.2, 0.9])
    b = _scores("b", [-1.5, -2.0, -1.0, -3.0], [-2.0, -4.5], [0.1, 0.3])
    records = comparison_table([b, a])
    assert [r["model"] for r in records] == ["a", "b"]  # sorted by elpd_loo
    ra, rb = records
    assert ra["elpd_loo"] == -6.0 and ra["elpd_loo_diff"] == 0.0 and ra["se_loo_diff"] == 0.0
    assert rb["elpd_loo_diff"] == pytest.approx(1.5)
    # d = (0.5, 0, 0, 1): mean 0.375, sample variance 0.6875 / 3 → se = sqrt(4 · 0.6875 / 3)
    assert rb["se_loo_diff"] == pytest.approx(np.sqrt(4 * 0.6875 / 3), abs=1e-3)
    # LOAO: b is best (-6.5 > -7.0); a's difference from b: d = (-1, 0.5)
    assert rb["elpd_loao_diff"] == 0.0 and ra["elpd_loao_diff"] == pytest.approx(0.5)
    assert ra["se_loao_diff"] == pytest.approx(np.sqrt(2 * np.var([-1.0, 0.5], ddof=1)),
                                               abs=1e-3)
    assert ra["n_animals_k_above_0.7"] == 1 and ra["n_animals_unreliable"] == 1
    assert rb["n_animals_unreliable"] == 0
    assert all(not isinstance(v, dict | list) for r in records for v in r.values())


def test_two_runs_of_one_spec_are_told_apart():
    """Two fits of one spec (two seeds, say) share a spec name: the text table and the
    per-animal records name their run directories, so their rows can be told apart."""
    a = _scores("als", [-1.0, -2.0], [-3.0, -4.0], [0.2, 0.3])
    b = replace(_scores("als", [-1.5, -2.0], [-2.0, -4.5], [0.1, 0.3]), run_dir="runs/seed2")
    other = _scores("shared_homing", [-9.0, -9.0], [-9.0, -9.0], [0.1, 0.1])
    records = comparison_table([a, b, other])
    assert run_labels(records) == ["als (runs/als)", "als (runs/seed2)", "shared_homing"]
    lines = format_table(records).splitlines()
    assert "als (runs/als)" in lines[1] and "als (runs/seed2)" in lines[2]
    assert len({len(line) for line in lines}) == 1  # the columns stay aligned
    assert {r["run_dir"] for r in animal_records([a, b])} == {"runs/als", "runs/seed2"}


def test_log_mean_exp_is_stable():
    assert log_mean_exp(np.array([1000.0, 1000.0])) == pytest.approx(1000.0)


def test_compare_cli_refuses_non_runs(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rc = main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--no-refit"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "is not a lanternpk run" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    rc = main(["compare", str(tmp_path / "a")])
    assert rc == EXIT_USAGE
    assert "at least two run directories" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "expected"), [([], True), (["--quiet"], False)])
def test_compare_shows_the_refits_progress_unless_quiet(monkeypatch, tmp_path, flags,
                                                        expected):
    """DESIGN.md: a progress bar for long work; refits are whole fits (fit's own bar, shown
    only when stderr is a terminal)."""
    import lanternpk.compare as compare

    seen = {}

    def fake_compare_runs(run_dirs, **kwargs):
        seen.update(kwargs)
        raise compare.UsageError("stop here")

    monkeypatch.setattr(compare, "compare_runs", fake_compare_runs)
    rc = main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), *flags])
    assert rc == EXIT_USAGE and seen["progressbar"] is expected


def test_refit_options_with_no_refit_are_a_usage_error(tmp_path, capsys):
    """--max-refits and --refit-draws were accepted with --no-refit and silently ignored."""
    rc = main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--no-refit",
               "--max-refits", "3", "--refit-draws", "50"])
    assert rc == EXIT_USAGE
    assert "--max-refits and --refit-draws set how animals are refit" in capsys.readouterr().err


def test_all_draws_kept_keep_their_chains():
    """`compare --draws 4000` of a 4 × 1000 run kept every draw but scored them as one chain,
    which changed the relative efficiencies and so elpd_loo and elpd_loao."""
    import xarray as xr

    from lanternpk.predictive import chains_kept, thin_indices

    group = xr.Dataset({"x": (("chain", "draw"), np.zeros((4, 1000)))})
    assert chains_kept(group, thin_indices(4000, None)) == 4
    assert chains_kept(group, thin_indices(4000, 4000)) == 4
    assert chains_kept(group, thin_indices(4000, 100000)) == 4
    assert chains_kept(group, thin_indices(4000, 1000)) == 1


def _strict_json(path):
    """Parse ``path`` as JSON, refusing NaN and Infinity (which JSON does not have)."""
    import json

    def refuse(constant):
        raise ValueError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_compare_files_are_valid_json_when_pareto_k_is_infinite(tmp_path):
    """With few draws (`--draws 10`) every Pareto k is infinite, and compare.json held
    `"max_k_rows": Infinity` (compare_animals.json more), which JSON parsers refuse."""
    from lanternpk.compare import ANIMALS_FILE, COMPARE_FILE, write_outputs

    a = _scores("a", [-1.0, -2.0], [-3.0, -4.0], [np.inf, 0.3])
    a.loo = LooResult(a.loo.elpd_i, a.loo.lppd_i, np.array([np.inf, 0.2]), a.loo.labels)
    b = _scores("b", [-1.5, -2.0], [-2.0, -4.5], [0.1, np.nan])
    files = write_outputs(tmp_path, comparison_table([a, b]), animal_records([a, b]))
    assert files == [tmp_path / COMPARE_FILE, tmp_path / ANIMALS_FILE]
    records, animals = (_strict_json(f) for f in files)
    assert next(r for r in records if r["model"] == "a")["max_k_rows"] is None
    assert [r["pareto_k"] for r in animals] == [None, 0.3, 0.1, None]


def _fake_run(run_dir, chains: int, draws: int, sampler: dict | None = None):
    """What compare reads of an opened run before scoring it (no spec, data or JAX)."""
    from types import SimpleNamespace

    import xarray as xr

    posterior = xr.Dataset({"sigma": (("chain", "draw"), np.ones((chains, draws)))})
    provenance = {"data_sha256": "0" * 64, "data_file": "obs.csv",
                  "sampler": sampler or {"sampler": "numpyro", "chains": chains,
                                         "draws": max(draws, 1), "tune": 10}}
    return SimpleNamespace(run_dir=run_dir, idata=SimpleNamespace(posterior=posterior),
                           provenance=provenance)


def _compare_fakes(monkeypatch, *runs) -> int:
    """``lanternpk compare --no-refit`` of runs made by :func:`_fake_run`; the exit status."""
    import lanternpk.compare as compare
    import lanternpk.fit

    opened = {run.run_dir: run for run in runs}
    monkeypatch.setattr(lanternpk.fit, "require_run", lambda run_dir, writable=False: None)
    monkeypatch.setattr(compare, "_open_run", lambda run_dir, data_path=None: opened[run_dir])
    return main(["compare", *(str(run.run_dir) for run in runs), "--no-refit"])


@pytest.mark.parametrize(("chains", "draws"), [(1, 4), (4, 2), (4, 0)])
def test_compare_refuses_a_run_with_too_few_draws(monkeypatch, tmp_path, capsys, chains,
                                                  draws):
    """`--draws` had to be ≥ 10 (PSIS), but a run of fewer draws was scored in full (a run of
    no draws failed with KeyError: 'log_flux')."""
    small, full = tmp_path / "small", tmp_path / "full"
    rc = _compare_fakes(monkeypatch, _fake_run(full, 4, 100), _fake_run(small, chains, draws))
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "Traceback" not in err
    assert (f"{small} holds {chains * draws} posterior draws (chains × draws = {chains} × "
            f"{draws}); compare needs at least 21 for Pareto smoothing") in err


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_compare_refuses_a_run_with_non_finite_draws(monkeypatch, tmp_path, capsys, bad):
    """A run with one NaN draw of residual_sd was ranked first (elpd NaN) and compare exited
    0; a NaN in every variable failed with a traceback from the importance proposal."""
    broken, full = tmp_path / "broken", tmp_path / "full"
    bad_run = _fake_run(broken, 4, 100)
    bad_run.idata.posterior["residual_sd"] = (("chain", "draw"), np.ones((4, 100)))
    bad_run.idata.posterior["residual_sd"][1, 7] = bad
    rc = _compare_fakes(monkeypatch, _fake_run(full, 4, 100), bad_run)
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "Traceback" not in err
    assert (f"{broken} holds NaN or infinite posterior draws, in residual_sd (chain 1, draw "
            "7); compare cannot use them") in err


@pytest.mark.parametrize("name", ["compare.json", "compare_animals.json"])
def test_an_output_in_the_way_is_refused_before_scoring(tmp_path, capsys, name):
    """A directory named compare_animals.json: compare.json was already rewritten when the
    second file failed, after all the scoring."""
    first, second = tmp_path / "a", tmp_path / "b"
    for run in (first, second):
        run.mkdir()
        (run / "posterior.nc").write_bytes(b"not read: refused before")
    (first / name).mkdir()
    assert main(["compare", str(first), str(second), "--no-refit"]) == EXIT_USAGE
    assert f"cannot write {first / name}: it is not a file" in capsys.readouterr().err
    assert sorted(p.name for p in first.iterdir()) == sorted([name, "posterior.nc"])


def test_refit_settings_read_only_the_sampler_fields(tmp_path):
    """A sampler record with a key SamplerSettings does not know (the record schema keeps
    extra keys) made `compare --max-refits 1` fail with a TypeError traceback."""
    from lanternpk.compare import _refit_settings
    from lanternpk.errors import UsageError

    record = {"sampler": "numpyro", "chains": 2, "draws": 50, "tune": 20, "seed": 7,
              "target_accept": 0.8, "foo": "hand-written"}
    run = _fake_run(tmp_path, 2, 50, sampler=record)
    settings = _refit_settings(run, None)
    assert (settings.sampler, settings.chains, settings.draws, settings.tune, settings.seed,
            settings.target_accept) == ("numpyro", 2, 50, 20, 7, 0.8)
    assert _refit_settings(run, 30).draws == 30
    run.provenance["sampler"] = {**record, "target_accept": "high"}
    with pytest.raises(UsageError, match=r"cannot be used to refit .*; pass --no-refit"):
        _refit_settings(run, None)
