"""The report in a real browser: headless Chromium driven by selenium and chromedriver.

Skipped only where Chromium is missing and ``CI`` is unset; in CI a missing browser fails.
In CI the report opened is the demo report, ``reports/demo/``, that ``.ci/run`` builds with
real sampling just before the tests (``lanternpk demo``); its absence fails the test. Outside
CI it is a report of a tiny fit with a stand-in PPC figure. The screenshot of the first screen
(1280 × 800) is saved as ``screenshot.png`` beside the report.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_OK
from lanternpk.report import run_report_command

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SCREEN = (1280, 800)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={SCREEN[0]},{SCREEN[1]}"]


def _chromedriver() -> str:
    if not CHROMIUM.exists():
        if not os.environ.get("CI"):
            pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)")
        pytest.fail(f"{CHROMIUM} is missing in CI: apt-get install chromium chromium-driver")
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver).exists():
        pytest.fail("chromedriver is missing: apt-get install chromium-driver")
    return driver


@pytest.fixture(scope="module")
def report(root, fit_bundled, tmp_path_factory) -> Path:
    """The demo report in CI; elsewhere a report of a tiny fit with a stand-in PPC figure."""
    if os.environ.get("CI"):
        demo = root / "reports" / "demo"
        if not (demo / "index.html").is_file():
            pytest.fail(f"{demo}/index.html is missing: CI runs `lanternpk demo` first "
                        "(see .ci/run)")
        return demo
    base = tmp_path_factory.mktemp("browser")
    run_dir = base / "run"
    rc = fit_bundled(run_dir, draws=60, tune=60)
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)
    (run_dir / "ppc").mkdir()
    fig = Figure(figsize=(4, 2))
    fig.subplots().plot([1, 2, 3], [3, 1, 2])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    (run_dir / "ppc/stand_in.png").write_bytes(buffer.getvalue())
    out = base / "report"
    assert run_report_command([run_dir], out=out) in (EXIT_OK, EXIT_DIAGNOSTICS)
    return out


def test_report_renders_in_chromium(report, root, tmp_path):
    chromedriver = _chromedriver()
    is_demo = report == root / "reports" / "demo"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.set_window_size(*SCREEN)
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        # make the viewport (not the window) 1280 × 800
        driver.set_window_size(2 * SCREEN[0] - inner[0], 2 * SCREEN[1] - inner[1])
        driver.get((report / "index.html").as_uri())
        assert driver.execute_script("return [window.innerWidth, window.innerHeight]") == list(
            SCREEN)
        driver.save_screenshot(str(report / "screenshot.png"))

        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({complete: i.complete, "
            "width: i.naturalWidth, src: i.src.slice(0, 22), alt: i.alt}))")
        assert len(images) >= 4  # answer, engraftment, data overview, PPC stand-in
        for image in images:
            assert image["complete"] and image["width"] > 0, image
            assert image["src"] == "data:image/png;base64,", image
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert [name for name in fetched if not name.startswith("data:")] == []

        for element in ("answer-table", "answer-figure"):
            box = driver.execute_script(
                f"const r = document.getElementById('{element}').getBoundingClientRect();"
                "return {top: r.top, bottom: r.bottom, left: r.left, right: r.right};")
            assert 0 <= box["top"] and box["bottom"] <= SCREEN[1], (element, box)
            assert 0 <= box["left"] and box["right"] <= SCREEN[0], (element, box)
        warning = driver.execute_script(
            "const b = document.querySelector('.banner.warn');"
            "return b && b.getBoundingClientRect().bottom;")
        if is_demo:  # default settings: full draws and passing checks, so no warning banner
            assert warning is None
            vpc = [i for i in images if "check: vpc_" in i["alt"]]
            assert vpc, "the demo report shows no VPC figure"
        else:  # 60 draws: reduced settings, shown in the first screen
            assert warning is not None and warning <= SCREEN[1]

        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], json.dumps(severe, indent=1)
    finally:
        driver.quit()
    assert (report / "screenshot.png").read_bytes().startswith(b"\x89PNG")
