"""``sensorium report``: the HTML page and its PNGs from real scores, rendered in headless Chromium.

Two tiny experiments are trained and scored on the session recordings (one with a three-member ensemble);
the report must show a summary table whose numbers are the stored scores, every figure (scores against
the oracles, training loss and validation curves, per-neuron distributions and scatters, model against
model, ensemble gain, readout positions against the planted receptive fields, example neurons) and a
provenance row for every model; Chromium (Debian's, driven by selenium) must load every image, lay the
page out without anything sticking out sideways, and log no error.
"""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from pipeline.experiments import parse_experiment
from pipeline.report.page import SECTIONS
from tests.factories import long_experiment, run_cli

REPO = Path(__file__).parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FIGURES = (
    "scores",
    "learning_curves",
    "neuron_distributions",
    "neurons",
    "model_vs_model",
    "ensemble_gain",
    "readout_positions",
    "example_neurons",
)
HEADINGS = tuple(s.heading for s in SECTIONS)


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


class _Tables(HTMLParser):
    """The cells of every HTML table of a page, as text: {table class: [(row class, [cell, ...])]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("class") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append((attrs.get("class") or "", []))
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None


def tables_of(text: str) -> dict[str, list[tuple[str, list[str]]]]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


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


def test_the_summary_table_holds_the_stored_scores_of_every_model_and_ensemble(report):
    """Every number of the table is the stored one (as ``sensorium scores`` gives it), and the fractions
    are the model over the oracle of the same trials."""
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel
    from usecases.queries import score_rows

    (header, *rows) = tables_of(report.read_text())["summary"]
    columns = header[1]
    assert columns == [
        "experiment",
        "seed / member",
        "test single-trial correlation",
        "fraction of planted oracle",
        "fraction of leave-one-out oracle",
        "correlation to average",
        "FEVE",
        "epochs trained",
        "training time",
    ]
    shown = {
        (cells[0], cells[1]): dict(zip(columns, cells, strict=True)) for kind, cells in rows if kind != "scan"
    }
    stored = [
        r
        for name in ("rep_ens", "rep_base")
        for r in score_rows(experiment=name) + score_rows(ensemble="rep_ens")
        if r["tier"] == "test"
    ]
    assert {r["data_key"] for r in stored} == {rows[0][1][0].split()[1].rstrip(":")}, "one scored scan"
    # each experiment's own models: other tests of the session may have trained the same seeds
    epochs = {
        (name, f"seed {r['seed']}"): (r["epochs"], r["duration_s"])
        for name in ("rep_ens", "rep_base")
        for r in (TrainedModel & experiment_models(name)).proj("epochs", "duration_s").to_dicts()
    }
    checked = set()
    for r in stored:
        row = shown[(r["model"], r["member"])]
        assert row["test single-trial correlation"] == f"{r['single_trial_correlation']:.3f}"
        assert row["correlation to average"] == f"{r['correlation_to_average']:.3f}"
        assert row["FEVE"] == (f"{r['feve']:.3f}" if r["feve"] is not None else "–")
        planted = r["single_trial_correlation"] / r["oracle_single_trial_correlation"]
        assert row["fraction of planted oracle"] == f"{100 * planted:.1f} %"
        loo = r["loo_oracle_single_trial_correlation"]
        assert row["fraction of leave-one-out oracle"] == (
            f"{100 * r['single_trial_correlation'] / loo:.1f} %" if loo > 0 else "–"
        )
        if r["model"].endswith("[ens]"):
            assert row["epochs trained"] == "–" and row["training time"].endswith(" s")
        else:
            n_epochs, seconds = epochs[(r["model"], r["member"])]
            assert row["epochs trained"] == str(n_epochs) and row["training time"] == f"{seconds:.1f} s"
        checked.add((r["model"], r["member"]))
    assert len(checked) == 6, "five models and one ensemble"
    means = {k: v for k, v in shown.items() if k[1].startswith("mean of")}
    assert sorted(means) == [("rep_base", "mean of 2 seeds"), ("rep_ens", "mean of 3 seeds")]
    base = [r["single_trial_correlation"] for r in stored if r["model"] == "rep_base"]
    assert means[("rep_base", "mean of 2 seeds")]["test single-trial correlation"] == (
        f"{np.mean(base):.3f} ± {np.std(base, ddof=1):.3f}"
    )


def test_readout_positions_of_every_model_on_every_scan_against_the_planted_centres(scored):
    from schemas.data import GroundTruth
    from schemas.evaluation import ModelScore
    from schemas.fabrik import experiment_models
    from usecases.report import gather

    data = gather(scored)
    panels = {(p.label, p.data_key) for p in data.positions}
    # the synthetic scans these models were scored on (other tests of the session ingest more scans)
    scored_scans = {r["data_key"] for r in (ModelScore & experiment_models(scored)).proj().to_dicts()}
    scans = {r["data_key"] for r in GroundTruth.proj().to_dicts()} & scored_scans
    assert scans
    models = [f"rep_base seed {s}" for s in (4, 5)] + [f"rep_ens seed {s}" for s in (1, 2, 3)]
    assert panels == {(m, k) for m in models for k in scans}
    for p in data.positions:
        h, w = p.frame.shape
        assert p.learned.shape == p.planted.shape == p.cortex.shape == (20, 2)
        assert (p.learned >= 0).all() and (p.learned <= [w - 1, h - 1]).all()
        assert 0 < p.affine_distance <= p.mean_distance and -1 <= p.corr_x <= 1 and p.retinotopy_r2 <= 1
    (example, *_) = data.examples
    best = max((r for r in data.summary if r.kind != "mean"), key=lambda r: r.single_trial_correlation)
    assert example.label.startswith(best.experiment) and example.data_key == best.data_key
    assert example.correlation == max(e.correlation for e in data.examples), "the best neuron first"
    assert (example.n_repeats > 1).all() and example.response_mean.shape == example.prediction_mean.shape
    assert [len(c.train_loss) for c in data.training if c.experiment == "rep_base"] == [2, 2]


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
    assert refused.returncode == 2 and refused.stdout.startswith("error: unknown experiment 'nope'")
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
        "--window-size=1400,900",  # a desktop browser
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
        assert sorted(alt for alt, *_ in images) == sorted(HEADINGS)
        assert all(complete and width > 100 and height > 100 for _, complete, width, height in images), images
        # the layout as drawn: no figure wider than its column, nothing pushes the page sideways, and the
        # summary table shows a row per model, mean and ensemble
        layout = driver.execute_script(
            "const body = document.body.getBoundingClientRect();"
            "return {page: document.documentElement.scrollWidth, view: window.innerWidth,"
            " wide: Array.from(document.images).filter(i => i.getBoundingClientRect().right > body.right + 1)"
            ".length, rows: document.querySelectorAll('table.summary tr.model, table.summary tr.mean,"
            " table.summary tr.ensemble').length}"
        )
        assert layout["page"] <= layout["view"] and layout["wide"] == 0, layout
        assert layout["rows"] == 5 + 2 + 1, layout
        assert driver.title.startswith("sensorium report")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 500 and np.std(pixels) > 0.02, "the screenshot shows the page, not a blank"
