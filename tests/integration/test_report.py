"""``sensorium report``: the HTML page and its PNGs from real scores, rendered in headless Chromium.

Two tiny experiments are trained and scored on the session recordings (one with a three-member ensemble);
the report must show their bars against the oracle, learning curves, per-neuron scatters, the ensemble
gain and a provenance row for every model; Chromium (Debian's, driven by selenium) must load every image
and log no error.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from pipeline.experiments import parse_experiment
from tests.factories import long_experiment, run_cli

REPO = Path(__file__).parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FIGURES = ("scores", "learning_curves", "neurons", "ensemble_gain")


@pytest.fixture(scope="module")
def scored(db, session_scans):
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.fabrik import Experiment
    from usecases.experiments import add_experiment

    ens = long_experiment("rep_ens", session_scans, max_iter=3)
    ens.pop("seeds")
    ens["members"] = [{"seed": s} for s in (1, 2, 3)]
    ens["ensemble"] = {"comment": "report test"}
    base = long_experiment("rep_base", session_scans, seeds=(4, 5), max_iter=2)
    for spec in (ens, base):
        add_experiment(parse_experiment(spec), "tester")
        populate(
            "all",
            (Experiment & {"experiment_name": spec["name"]}) * Experiment.Member,
            settings=bound_settings(),
        )
    return ["rep_ens", "rep_base"]


@pytest.fixture(scope="module")
def report(scored, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    made = run_cli("report", "--experiment", "rep_ens", "--experiment", "rep_base", "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    path = out / "report.html"
    assert made.stdout.strip() == f"report of 2 experiment(s), 5 model(s): {path.resolve()}"
    return path


def test_report_has_every_figure_and_a_provenance_row_per_model(report):
    text = report.read_text()
    for stem in FIGURES:
        png = mpimg.imread(report.parent / f"{stem}.png")
        assert png.shape[0] > 200 and png.shape[1] > 300 and np.std(png) > 0.01, stem
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', text)) == len(FIGURES)
    assert "http" not in text.replace("http-equiv", ""), "self-contained: nothing fetched"
    rows = re.findall(r"<tr><td>(rep_\w+)</td><td>(\d+)</td>", text)
    assert sorted(rows) == sorted([("rep_ens", s) for s in "123"] + [("rep_base", s) for s in "45"])
    assert text.count("trained, 3 epochs") == 3 and text.count("trained, 2 epochs") == 2


def test_ensemble_gain_ends_at_the_stored_ensemble_score(scored):
    from schemas.evaluation import EnsembleScore
    from usecases.report import gather

    data = gather(["rep_ens"])
    (gain,) = [g for g in data.gains if g.data_key == sorted({g.data_key for g in data.gains})[0]]
    stored = (EnsembleScore & {"ensemble_name": "rep_ens", "data_key": gain.data_key, "tier": "test"}).fetch1(
        "single_trial_correlation"
    )
    assert gain.n_members == [1, 2, 3] and gain.corr[-1] == pytest.approx(stored, abs=1e-6)
    assert {b.label for b in data.bars} == {"rep_ens", "rep_ens [ens]"}
    assert all(b.oracle is not None for b in data.bars), "synthetic scans have an oracle"


def test_unknown_experiment_is_one_line(scored, tmp_path):
    refused = run_cli("report", "--experiment", "nope", "--out", str(tmp_path))
    assert refused.returncode == 2 and refused.stdout.startswith("error: no experiment named 'nope'")
    assert refused.stdout.count("\n") == 1 and not list(tmp_path.iterdir())


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium not installed (apt-get install chromium chromium-driver; .ci/run does)",
)
def test_report_renders_in_headless_chromium_with_every_image_and_no_error(report, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(report.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images)"
            ".map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(images) == len(FIGURES)
        assert all(complete and width > 100 and height > 100 for _, complete, width, height in images), images
        assert driver.title.startswith("sensorium report")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 500 and np.std(pixels) > 0.02, "the screenshot shows the page, not a blank"
