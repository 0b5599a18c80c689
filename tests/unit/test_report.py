"""`lanternpk report`: three files, self-contained HTML, escaping, failing figures, sections.

One tiny fit (2 chains × 60 draws) serves every test. Its study is named like a script tag,
so every test also checks that data labels reach the HTML escaped.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lanternpk.data.load import load_observations
from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_OK, UsageError
from lanternpk.fit import summary_from_run
from lanternpk.report import add_report_parser, run_report_command
from lanternpk.report import figures as report_figures
from lanternpk.report.render import (
    REPORT_FILES,
    FigureError,
    _environment,
    _observations,
    fmt,
    load_run_report,
    load_sbc,
    render_report,
)

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(root, fit_bundled, tmp_path_factory) -> Path:
    """A tiny fit of the bundled ALS-like study, renamed to a script tag."""
    base = tmp_path_factory.mktemp("report_run")
    data = base / "observations.csv"
    text = (root / "data/als_mouse/observations.csv").read_text(encoding="utf-8")
    data.write_text(text.replace("als_mouse_synthetic", EVIL), encoding="utf-8")
    out = base / "run"
    rc = fit_bundled(out, draws=60, tune=60, data=data)
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    return out


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run_report(run_dir)


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reports") / "tiny"
    rc = run_report_command([run_dir], out=out)
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    return out


class _Resources(HTMLParser):
    """Every tag with its attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict]]:
    parser = _Resources()
    parser.feed(html)
    return parser.tags


def _pngs(html: str) -> list[bytes]:
    prefix = "data:image/png;base64,"
    srcs = [attrs["src"] for tag, attrs in _tags(html) if tag == "img"]
    assert all(s.startswith(prefix) for s in srcs), [s[:40] for s in srcs]
    return [base64.b64decode(s[len(prefix):], validate=True) for s in srcs]


def _png_bytes() -> bytes:
    import io

    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# --- files and self-containment ------------------------------------------------------------

def test_report_writes_the_three_files_atomically(report, run_dir):
    assert sorted(p.name for p in report.iterdir()) == sorted(REPORT_FILES)
    assert json.loads((report / "summary.json").read_text()) == summary_from_run(run_dir)
    leftovers = [p.name for p in report.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_html_is_self_contained_and_every_image_is_a_png(report):
    html = (report / "index.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    for tag, attrs in _tags(html):
        assert tag not in ("script", "iframe", "object", "embed"), tag
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value[:60])
    assert "@import" not in html and "url(" not in html
    images = _pngs(html)
    assert len(images) >= 3  # answer, engraftment, data overview
    for data in images:
        assert data.startswith(PNG)
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 0 and height > 0


def test_sections_in_order_with_the_answer_first(report):
    html = (report / "index.html").read_text(encoding="utf-8")
    ids = ["answer", "engraftment", "data", "diagnostics", "ppc", "comparison", "barely",
           "provenance"]
    positions = [html.index(f'<section id="{i}">') for i in ids]
    assert positions == sorted(positions)
    answer = html[positions[0]:positions[1]]
    assert 'id="answer-table"' in answer and "P(ratio&nbsp;&gt;&nbsp;1)" in answer
    for region in ("lung", "femur", "damaged_organ", "spinal_cord"):
        assert f"<th>{region}</th>" in answer
    # reduced settings (60 draws) are announced before the answer
    assert html.index("Reduced sampler settings") < positions[0]
    assert "not run for this run" in html[positions[4]:positions[5]]
    assert "One run given" in html[positions[5]:positions[6]]
    assert "half_life_d" in html[positions[6]:positions[7]]  # damaged organ: prior-driven
    assert "20261125" in html[positions[7]:]


def test_markdown_summary_has_answer_and_diagnostics(report, run):
    md = (report / "summary.md").read_text(encoding="utf-8")
    assert "| region | homing Muse | homing MSC | homing ratio | P(>1) |" in md
    assert md.count("\n| lung |") == 1 and "\n| spinal_cord |" in md
    assert "## Diagnostics: " + ("passed" if run.diagnostics["passed"] else "FAILED") in md
    assert "| R-hat max |" in md and "Reduced sampler settings" in md


# --- escaping ------------------------------------------------------------------------------

def test_study_name_from_the_data_is_escaped(report):
    for name in ("index.html", "summary.md"):
        text = (report / name).read_text(encoding="utf-8")
        assert ESCAPED in text, name
        assert EVIL not in text and "<script" not in text, name


def test_region_labels_are_escaped(run, tmp_path):
    organs = [EVIL if o == "lung" else o for o in run.design["organs"]]
    summary = json.loads(json.dumps(run.summary).replace('"lung"', json.dumps(EVIL)))
    evil = dataclasses.replace(run, design={**run.design, "organs": organs}, summary=summary)
    out = render_report([evil], out=tmp_path / "evil")
    html = (out / "index.html").read_text(encoding="utf-8")
    assert html.count(ESCAPED) >= 3  # title, answer table, barely-informed or figure alt
    assert f"<th>{ESCAPED}</th>" in html
    assert EVIL not in html and "<script" not in html
    assert EVIL not in (out / "summary.md").read_text(encoding="utf-8")


def test_user_text_is_plain_text_in_markdown_and_visible_in_html(run, tmp_path):
    """A study named with Markdown became a live link and a remote image in summary.md (a CI
    job summary), a backtick in the run's name ended its code span early, and a terminal
    escape in the command line reached index.html as a raw control byte."""
    study = "[click](http://evil.example) ![i](http://evil.example/t.png) `x` *b* ~~s~~"
    observations = run.observations.assign(study=study)
    provenance = {**run.provenance, "command": ["lanternpk", "fit", "\x1b]0;pwn\x07"]}
    odd = dataclasses.replace(run, observations=observations, provenance=provenance,
                              run_dir=tmp_path / "run`name")
    out = render_report([odd], out=tmp_path / "odd")
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert ("\\[click\\](http\\://evil.example) !\\[i\\](http\\://evil.example/t.png) "
            "\\`x\\` \\*b\\* \\~\\~s\\~\\~") in md
    assert "](http://" not in md and "run\\`name" in md
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "\x1b" not in html and "\x07" not in html and "\\x1b]0;pwn\\x07" in html


def test_templates_autoescape():
    env = _environment()
    assert env.autoescape("report.html.j2") and env.autoescape("summary.md.j2")


# --- failures ------------------------------------------------------------------------------

def test_a_failing_figure_fails_the_report_and_keeps_the_old_one(run, tmp_path, monkeypatch):
    out = render_report([run], out=tmp_path / "r")
    before = (out / "index.html").read_bytes()

    def broken(*args, **kwargs):
        raise ValueError("no axes today")

    monkeypatch.setattr(report_figures, "engraftment_bands", broken)
    with pytest.raises(FigureError, match=r"'engrafted fraction over time'.*no axes today"):
        render_report([run], out=out)
    assert (out / "index.html").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_non_finite_draws_are_gaps_in_the_engraftment_figure_not_a_failed_report(
        run, run_dir, tmp_path):
    """Infinite release draws (a fit gone wrong, which the convergence checks name): every
    band was NaN, the log-scaled panels had no data limits, and the report failed with
    'Data cannot be log-scaled because all values are <= 0'."""
    import arviz as az
    import numpy as np

    from lanternpk.report.render import engraftment_quantiles

    posterior = az.from_netcdf(run_dir / "posterior.nc").posterior
    posterior["release"] = posterior["release"] * np.inf
    quantiles = engraftment_quantiles(posterior, run.design)  # no RuntimeWarning either
    lung = run.design["filter_index"]  # emptied at once: 0; every other organ: NaN
    assert np.all(quantiles[..., lung] == 0)
    assert np.isnan(np.delete(quantiles, lung, axis=-1)).all()
    out = render_report([dataclasses.replace(run, engraftment=quantiles)], out=tmp_path / "r")
    assert len(_pngs((out / "index.html").read_text(encoding="utf-8"))) >= 3


def test_refuses_to_replace_a_directory_that_is_not_a_report(run, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"not hold a lanternpk report \(found notes\.txt\)"):
        render_report([run], out=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_refuses_a_directory_of_other_directories(tmp_path):
    """`demo --out data` of a checkout: its study directories were written beside. Only the
    run that `lanternpk demo` fits into a report directory may be there."""
    from lanternpk.report.render import check_report_directory

    (tmp_path / "als_mouse").mkdir()
    with pytest.raises(UsageError, match=r"not hold a lanternpk report \(found als_mouse/\)"):
        check_report_directory(tmp_path)
    (tmp_path / "als_mouse").rmdir()
    (tmp_path / "run").mkdir()
    check_report_directory(tmp_path)  # a report written by `lanternpk demo`


def test_what_a_killed_demo_left_does_not_block_the_next_one(tmp_path):
    """A demo killed outright (SIGKILL, a CI timeout) left reports/demo/.run.XXXXXXXX and
    .index.html.XXXXXXXX.tmp; every later `lanternpk demo` refused the directory."""
    import tempfile

    from lanternpk.report.render import check_report_directory

    tempfile.mkdtemp(prefix=".run.", dir=tmp_path)  # the fit's staging directory
    tempfile.mkstemp(prefix=".index.html.", suffix=".tmp", dir=tmp_path)
    check_report_directory(tmp_path)
    (tmp_path / ".notes.abcd1234.tmp").write_text("not the temporary file of a report's")
    with pytest.raises(UsageError, match=r"\(found \.notes\.abcd1234\.tmp\)"):
        check_report_directory(tmp_path)


def test_the_report_takes_the_data_from_the_run_not_from_the_data_file(run_dir, tmp_path):
    """DESIGN.md: reports are rendered from the saved posterior alone. Before, the data
    figure, counts and study name were dropped once the data file had moved."""
    data = Path(json.loads((run_dir / "provenance.json").read_text())["data_file"])
    moved = data.rename(tmp_path / "moved.csv")
    try:
        report = load_run_report(run_dir)
    finally:
        moved.rename(data)
    assert report.data_note is None and report.observations is not None
    pd.testing.assert_frame_equal(report.observations.reset_index(drop=True),
                                  load_observations(data).reset_index(drop=True))
    html = (render_report([report], out=tmp_path / "r") / "index.html").read_text()
    assert ESCAPED in html and len(_pngs(html)) == 3  # the data overview is back


def test_unreadable_or_changed_data_is_reported_not_fatal(run, tmp_path):
    """Runs written before runs kept a copy of their data read the data file."""
    before = SimpleNamespace(attrs={})
    missing = {"data_file": str(tmp_path / "gone.csv"), "data_sha256": "0" * 64}
    obs, note = _observations(before, missing, tmp_path / "posterior.nc")
    assert obs is None and "gone.csv" in note and "not readable" in note
    changed = tmp_path / "obs.csv"
    changed.write_text("study\n")
    obs, note = _observations(before, {"data_file": str(changed), "data_sha256": "0" * 64},
                              tmp_path / "posterior.nc")
    assert obs is None and "changed since the fit" in note
    broken = SimpleNamespace(attrs={"lanternpk_observations": "study,animal\nS1\n"})
    obs, broken_note = _observations(broken, missing, tmp_path / "posterior.nc")
    assert obs is None and "data saved with the run could not be read" in broken_note
    blind = dataclasses.replace(run, observations=None, data_note=note)
    html = (render_report([blind], out=tmp_path / "r") / "index.html").read_text()
    assert "changed since the fit" in html and len(_pngs(html)) == 2


# --- PPC and comparison --------------------------------------------------------------------

def test_ppc_figures_coverage_and_compare_json_are_shown(run_dir, tmp_path):
    copy = tmp_path / "run_copy"
    shutil.copytree(run_dir, copy)
    (copy / "ppc").mkdir()
    coverage = [
        {"region": "lung", "modality": "in_vivo", "time_h": 24, "n": 10, "n_censored": 2,
         "coverage_50": 0.5, "coverage_90": 0.9, "below_lod_observed": 2,
         "below_lod_predicted": 1.8, "flagged": False},
        {"region": "femur", "modality": "ex_vivo", "time_h": 672, "n": 4, "n_censored": 0,
         "coverage_50": 0.123, "coverage_90": 0.25, "below_lod_observed": 0,
         "below_lod_predicted": 0.4, "flagged": True},
    ]
    (copy / "ppc/coverage.json").write_text(json.dumps(coverage))
    (copy / "ppc/intervals.png").write_bytes(_png_bytes())
    (copy / "compare.json").write_text(json.dumps([{"spec": "muse_vs_msc", "elpd": -12.5,
                                                    "max_k_rows": None},
                                                   {"spec": "shared_homing", "elpd": -30.25,
                                                    "max_k_rows": 0.4}]))
    out = tmp_path / "report"
    rc = run_report_command([copy, run_dir], out=out)
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    html = (out / "index.html").read_text(encoding="utf-8")
    ppc = html[html.index('<section id="ppc">'):html.index('<section id="comparison">')]
    assert "0.123" in ppc and 'class="flag"' in ppc and "intervals" in ppc
    assert len(_pngs(ppc)) == 1
    comparison = html[html.index('<section id="comparison">'):html.index('<section id="barely">')]
    assert "run_copy" in comparison and "shared_homing" in comparison and "-30.25" in comparison
    assert "<td>—</td>" in comparison and "null" not in comparison  # an infinite Pareto k
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Runs compared" in md and "| run_copy |" in md


def test_engraftment_curves_follow_the_design_cell_types_not_the_axis_order(run, run_dir):
    """A study of MSCs alone under the Muse-and-MSC spec took the first slice of the
    parameters' cell-type axis (Muse) and labelled it MSC: at day 56 in the femur the
    'MSC' median was Muse's (7.1e-3 against 2.2e-8 on the demo run)."""
    import arviz as az
    import numpy as np

    from lanternpk.report.render import engraftment_quantiles

    posterior = az.from_netcdf(run_dir / "posterior.nc").posterior
    both = engraftment_quantiles(posterior, run.design)
    assert run.design["cell_types"] == ["muse", "msc"]
    for order in (["msc"], ["msc", "muse"]):
        design = {**run.design, "cell_types": order}
        got = engraftment_quantiles(posterior, design)
        expected = both[:, [run.design["cell_types"].index(ct) for ct in order]]
        np.testing.assert_array_equal(got, expected)
    assert not np.allclose(both[:, 0], both[:, 1])  # the two cell types differ here


def test_an_undecided_barely_informed_flag_is_not_read_as_informed(run, tmp_path):
    """A null flag (no prior draws, a non-finite draw) was skipped, and with no flag set
    section 7 said every posterior was markedly narrower than its prior."""
    estimands = [{**e, "barely_informed": False} for e in run.summary["estimands"]]
    estimands[0] = {**estimands[0], "barely_informed": None,
                    "posterior_prior_width_ratio": None}
    undecided = dataclasses.replace(run, summary={**run.summary, "estimands": estimands})
    out = render_report([undecided], out=tmp_path / "r")
    html = (out / "index.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="barely">'):html.index('<section id="provenance">')]
    assert "cannot tell" in section and estimands[0]["name"] in section
    assert "Every estimand" not in section


def test_a_provenance_without_seed_or_with_a_text_command_is_shown(run, tmp_path):
    """`seed` is not part of the provenance schema: a record without it passed the checks
    and the report failed with a KeyError traceback; a command given as text was split
    into one quoted character per word."""
    provenance = {k: v for k, v in run.provenance.items() if k != "seed"}
    out = render_report([dataclasses.replace(run, provenance={**provenance,
                                                              "command": "lanternpk fit x"})],
                        out=tmp_path / "r")
    html = (out / "index.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="provenance">'):]
    assert f"<dt>seed</dt><dd>{run.provenance['sampler']['seed']}</dd>" in section
    assert "<dt>command line</dt><dd>—</dd>" in section  # a command that is not a list


def test_two_runs_in_directories_of_one_name_are_told_apart(run, tmp_path):
    """`report a/run b/run` named both runs 'run' in the comparison and provenance."""
    other = dataclasses.replace(run, run_dir=tmp_path / "b" / run.run_dir.name)
    out = render_report([run, other], out=tmp_path / "r")
    html = (out / "index.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="provenance">'):]
    assert f"<h3>{run.run_dir.resolve()}</h3>" in section
    assert f"<h3>{other.run_dir.resolve()}</h3>" in section


def test_a_contrast_flagged_on_its_own_is_listed_where_its_dagger_points(run, tmp_path):
    """The answer table marks a flagged ratio with † and points to section 7, which listed
    estimands only: a ratio flagged by its own width (numerator and denominator informed)
    was in neither list."""
    estimands = [{**e, "barely_informed": False} for e in run.summary["estimands"]]
    contrasts = [{**c, "barely_informed": False} for c in run.summary["contrasts"]]
    contrasts[0] = {**contrasts[0], "barely_informed": True,
                    "posterior_prior_width_ratio": 1.074}
    flagged = dataclasses.replace(run, summary={**run.summary, "estimands": estimands,
                                                "contrasts": contrasts})
    out = render_report([flagged], out=tmp_path / "r")
    html = (out / "index.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="barely">'):html.index('<section id="provenance">')]
    assert contrasts[0]["name"] in section and "1.07" in section
    assert section.count("<tr>") == 1 + 1  # the header and the one flagged contrast


def test_a_non_png_in_ppc_is_refused(run_dir, tmp_path):
    copy = tmp_path / "run_copy"
    shutil.copytree(run_dir, copy)
    (copy / "ppc").mkdir()
    (copy / "ppc/fake.png").write_text("not an image")
    with pytest.raises(UsageError, match=r"fake\.png: not a PNG"):
        load_run_report(copy)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda data: data[:-30], r"a PNG file cut short \(\d+ bytes, its chunk at byte \d+ needs"),
    (lambda data: data[:8], r"a PNG file cut short \(8 bytes, no end chunk\)"),
    (lambda data: data[:40] + bytes([data[40] ^ 1]) + data[41:], r"a damaged PNG file \(the "
     r"chunk at byte \d+ fails its CRC\)"),
])
def test_a_cut_short_or_damaged_png_is_refused(run_dir, tmp_path, damage, message):
    """A figure with a PNG signature but cut short (a copy interrupted, a full disk) was
    embedded as it was, and showed as a broken image in the report."""
    copy = tmp_path / "run_copy"
    shutil.copytree(run_dir, copy)
    (copy / "ppc").mkdir()
    whole = _png_bytes()
    (copy / "ppc/intervals.png").write_bytes(whole)
    assert load_run_report(copy).ppc_figures == [("intervals", whole)]
    (copy / "ppc/intervals.png").write_bytes(damage(whole))
    with pytest.raises(UsageError, match=r"intervals\.png: " + message):
        load_run_report(copy)


@pytest.mark.parametrize("content", ["[1, 2]", "[null]", '{"groups": 5}', "42",
                                     '[{"a": 1}]'])
def test_a_coverage_file_of_the_wrong_shape_is_a_usage_error(run_dir, tmp_path, content):
    """Valid JSON that is not a list of records raised AttributeError/TypeError; records
    without the coverage keys were shown as a table of dashes."""
    copy = tmp_path / "run_copy"
    shutil.copytree(run_dir, copy)
    (copy / "ppc").mkdir()
    (copy / "ppc/coverage.json").write_text(content)
    with pytest.raises(UsageError, match=r"coverage\.json: not a coverage table"):
        load_run_report(copy)


# --- command line and formatting -----------------------------------------------------------

def test_report_parser_runs_the_command(run_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="lanternpk")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(run_dir), "--out", str(tmp_path / "cli")])
    rc = args.handler(args)
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    assert "index.html" in capsys.readouterr().out
    assert (tmp_path / "cli/index.html").is_file()


def test_a_run_given_twice_is_refused_before_anything_is_loaded(tmp_path):
    """`report RUN RUN` compared the run with itself and exited 0."""
    run = tmp_path / "run"  # not even a run: the repeat is found first
    (tmp_path / "sub").mkdir()
    with pytest.raises(UsageError, match="a run directory is given twice"):
        run_report_command([run, tmp_path / "sub" / ".." / "run"], out=tmp_path / "r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_not_a_run_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a lanternpk run"):
        run_report_command([tmp_path / "empty"], out=tmp_path / "out")


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"), (0.0, "0"), (0.6654, "0.665"), (0.0038512, "0.00385"), (306.17, "306"),
    (1726.18, "1726"), (3.98e-5, "3.98e-05"), (2.5e6, "2.50e+06"), (12.0, "12.0"),
    (12, "12"), (np.int64(3), "3")])
def test_fmt(value, text):
    """Counts (divergences, ROIs) are whole: the report showed "divergences 3.00"."""
    assert fmt(value) == text


@pytest.mark.parametrize(("value", "text"), [
    ([1], "[1]"), ({"a": 1}, "{'a': 1}"), ("n/a", "n/a"), (True, "True"),
    (10**400, str(10**400))])
def test_fmt_shows_what_is_not_a_float_as_text(value, text):
    """Values from a hand-edited coverage.json or sbc.json: before, TypeError/OverflowError."""
    assert fmt(value) == text


def test_probability_format():
    assert report_figures.format_probability(1.0) == "> 0.99"
    assert report_figures.format_probability(0.0) == "< 0.01"
    assert report_figures.format_probability(0.9775) == "0.98"
    fixed = {"q05": 1.0, "q95": 1.0, "p_gt_1": None}  # as summarize_estimands writes it
    assert report_figures.ratio_probability(fixed) == "n/a (fixed by model)"
    assert report_figures.ratio_probability(fixed, short=True) == "n/a"
    # a narrow interval is not a fixed ratio: its probability is shown (was "n/a")
    assert report_figures.ratio_probability({"q05": 1.0, "q95": 1.0, "p_gt_1": 0.04}) == "0.04"


def test_null_statistics_are_drawn_and_printed_as_n_a():
    """A ratio with a non-finite draw has null statistics (DESIGN.md); the forest plot and
    P(>1) raised TypeError on them, and the report was not written."""
    contrasts = [{"name": "half_life_ratio", "region": "lung", "numerator": "muse",
                  "denominator": "msc", "median": 1.9, "q05": 1.1, "q95": None,
                  "p_gt_1": None},
                 {"name": "half_life_ratio", "region": "femur", "numerator": "muse",
                  "denominator": "msc", "median": 6.3, "q05": 3.9, "q95": 10.3,
                  "p_gt_1": 1.0}]
    assert report_figures.ratio_probability(contrasts[0]) == "n/a"
    assert report_figures.format_probability(None) == "n/a"
    fig, _ = report_figures.ratio_forest(contrasts)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert "P(>1) n/a" in labels and "P(>1) > 0.99" in labels


def test_a_figure_that_cannot_be_drawn_is_an_error_without_traceback(run_dir, tmp_path,
                                                                      monkeypatch, capsys):
    """A run whose draws cannot be drawn (all NaN, say): exit 1 naming the figure, no
    report written; before, a FigureError traceback."""
    def broken(*args, **kwargs):
        raise ValueError("Data cannot be log-scaled because all values are <= 0.")

    monkeypatch.setattr(report_figures, "engraftment_bands", broken)
    out = tmp_path / "report"
    from lanternpk.cli import main

    assert main(["report", str(run_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("error: figure 'engrafted fraction over time' failed to render: ValueError: Data "
            "cannot be log-scaled") in err and err.rstrip().endswith("; no report written")
    assert not out.exists() or not any(out.iterdir())


def test_sbc_section_shows_tests_and_figure_escaped(run, tmp_path):
    sbc_dir = tmp_path / "sbc"
    sbc_dir.mkdir()
    summary = {"n_requested": 3, "n_ok": 2, "n_failed": 1, "n_missing": 0, "n_draws": 99,
               "alpha": 0.01, "tests": "chi-square", "passed": False,
               "quantities": [
                   {"name": "loss[<script>alert(1)</script>]", "chi_square_p": 0.5,
                    "ecdf_p": 0.4, "failed": False},
                   {"name": "release[muse]", "chi_square_p": 1e-6, "ecdf_p": 1e-5,
                    "failed": True}]}
    (sbc_dir / "sbc.json").write_text(json.dumps(summary))
    (sbc_dir / "sbc_ecdf.png").write_bytes(_png_bytes())
    out = render_report([run], out=tmp_path / "r", sbc=load_sbc(sbc_dir))
    html = (out / "index.html").read_text()
    section = html[html.index('id="sbc"'):html.index('id="barely"')]
    assert "2 of 3 fits finished, 1 failed" in section
    assert "Calibration FAILED" in section
    assert "&lt;script&gt;" in section and "<script>alert" not in html
    assert section.index("release[muse]") < section.index("loss[")  # rejections first
    assert 'src="data:image/png;base64,' in section
    markdown = (out / "summary.md").read_text()
    assert "Simulation-based calibration: **FAILED or incomplete**" in markdown
    assert "rejected: release\\[muse\\]" in markdown  # brackets escaped: not a link


def _report_texts_beside_campaign(run, tmp_path, campaign: dict, label: str) -> list[str]:
    """index.html and summary.md of a report of ``run`` with an SBC summary of ``campaign``."""
    summary = {"n_requested": 1, "n_ok": 1, "n_failed": 0, "n_missing": 0, "n_draws": 99,
               "alpha": 0.01, "tests": "t", "passed": True, "quantities": [],
               "campaign": campaign}
    sbc_dir = tmp_path / f"sbc-{label}"
    sbc_dir.mkdir()
    (sbc_dir / "sbc.json").write_text(json.dumps(summary))
    out = render_report([run], out=tmp_path / f"report-{label}", sbc=load_sbc(sbc_dir))
    return [(out / name).read_text(encoding="utf-8") for name in ("index.html", "summary.md")]


def test_an_sbc_campaign_of_another_spec_is_announced(run, tmp_path):
    """report --sbc showed a campaign's calibration beside a run of another model without a
    word; the campaign records the sha256 of the spec it checked."""
    for sha, same_spec in (("e" * 64, False), (run.provenance["spec_sha256"], True)):
        campaign = {"spec_file": "models/other.toml", "spec_sha256": sha}
        for text in _report_texts_beside_campaign(run, tmp_path, campaign, sha[:4]):
            assert ("Calibration of another model" in text) is not same_spec
            if not same_spec:
                assert "checked spec models/other.toml (sha256 eeeeeeeeeeee)" in text


def test_an_sbc_campaign_of_another_lanternpk_version_is_announced(run, tmp_path):
    """The campaign key includes the version, so a campaign of another version calibrated
    other sampling code (0.2.0 changed the random effects' sampling coordinates)."""
    this = run.provenance["versions"]["lanternpk"]
    for version, other in (("0.0.1", True), (this, False)):
        campaign = {"spec_file": "s", "spec_sha256": run.provenance["spec_sha256"],
                    "lanternpk": version}
        for text in _report_texts_beside_campaign(run, tmp_path, campaign, version):
            assert ("Calibration by another version" in text) is other
            if other:
                assert f"ran lanternpk 0.0.1, this run lanternpk {this}" in text


def test_sbc_directory_without_summary_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a lanternpk sbc directory"):
        load_sbc(tmp_path)


@pytest.mark.parametrize(("content", "message"), [
    ('{"quantities": 5}', "'quantities' is not a list of records"),
    ('{"quantities": [1]}', "'quantities' is not a list of records"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"quantities": [], "n": 1' + "0" * 5000 + "}", "not valid JSON"),
    # read as passed (bool("false")) beside a rejected quantity, and "None of None fits"
    ('{"passed": "false", "n_requested": 1, "n_ok": 1, "n_failed": 0, "n_missing": 0, '
     '"n_draws": 99, "alpha": 0.01, "tests": "t", "quantities": []}',
     r"its sbc.json record 'passed': must be a valid boolean \(found 'false'\)"),
    ('{"quantities": []}', r"its sbc.json record lacks 'passed', 'n_requested'"),
    ('{"passed": true, "n_requested": 1, "n_ok": "**bold**", "n_failed": 0, "n_missing": 0, '
     '"n_draws": 99, "alpha": "[x](http://e)", "tests": "t", "quantities": []}',
     r"'n_ok': must be a valid integer.*'alpha': must be a number")])
def test_a_malformed_sbc_summary_is_a_usage_error(tmp_path, content, message):
    """Before: AttributeError, TypeError, RecursionError and ValueError tracebacks."""
    (tmp_path / "sbc.json").write_text(content)
    with pytest.raises(UsageError, match=message):
        load_sbc(tmp_path)


def test_a_report_inside_an_input_is_refused(tmp_path, capsys):
    """`report RUN --out RUN/rep` wrote into the run, which fit --overwrite then refused to
    replace ("it holds rep"); the run is checked before anything is loaded."""
    from lanternpk.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "posterior.nc").write_bytes(b"not read")
    sbc = tmp_path / "sbc"
    sbc.mkdir()
    for out, extra in ((run / "rep", []), (sbc / "rep", ["--sbc", str(sbc)])):
        assert main(["report", str(run), "--out", str(out), *extra]) == 2
        assert "an input of the report; choose another --out" in capsys.readouterr().err
        assert not out.exists()
