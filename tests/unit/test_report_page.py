"""The report page from plain data (pipeline.report.page and plots), no database: the summary table's
numbers and columns, the figures of awkward inputs (no oracle, NaN neurons, many scans) and the page."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.report import page, plots
from pipeline.report.content import (
    ExampleNeuron,
    NeuronScores,
    PositionPanel,
    ReportContent,
    SummaryRow,
    TrainingCurve,
)


def row(member: str, corr: float, planted: float | None, repeat: float | None, **kw) -> SummaryRow:
    return SummaryRow(
        experiment=kw.pop("experiment", "exp"),
        member=member,
        data_key=kw.pop("data_key", "1-1-1"),
        single_trial_correlation=corr,
        correlation_to_average=0.5,
        feve=kw.pop("feve", None),
        planted_oracle=planted,
        repeat_oracle=repeat,
        **kw,
    )


def test_durations_read_like_a_person_writes_them():
    assert [page.duration(s) for s in (None, 4.04, 59.96, 61, 3599, 3600, 7500)] == [
        "–",
        "4.0 s",
        "60.0 s",
        "1 min 01 s",
        "59 min 59 s",
        "1 h 00 min",
        "2 h 05 min",
    ]


def test_the_summary_shows_a_fraction_column_per_oracle_that_exists():
    rows = [
        row("seed 1", 0.3, 0.6, -0.1, epochs=4, duration_s=75.0, feve=0.25),
        row("seed 2", 0.2, 0.6, -0.1, epochs=5, duration_s=80.0, contaminated=True),
    ]
    both = page.summary_table(rows, "test")
    assert "fraction of planted oracle" in both and "fraction of leave-one-out oracle" in both
    assert '<td class="num">50.0 %</td>' in both, "0.3 of a 0.6 oracle"
    assert both.count('<td class="num">–</td>') == 3, "a negative oracle gives no fraction; one FEVE is null"
    assert "1 min 15 s" in both and "0.200 †" in both and 'class="model best"' in both
    planted_only = page.summary_table([row("seed 1", 0.3, 0.6, None)], "validation")
    assert (
        "fraction of planted oracle" in planted_only and "leave-one-out" not in planted_only.split("</tr>")[0]
    )
    assert "validation single-trial correlation" in planted_only
    none = page.summary_table([row("seed 1", 0.3, None, None)], "test")
    assert "fraction" not in none and "no oracle" in none


def content(n_scans: int = 1, oracle: bool = True) -> ReportContent:
    """A small report with NaN neurons, two experiments and an ensemble on ``n_scans`` scans."""
    rng = np.random.default_rng(0)
    neurons, panels, summary = [], [], []
    for k in range(n_scans):
        key = f"{k}-1-1"
        for label, group, kind in (
            ("a seed 1", "a", "model"),
            ("a seed 2", "a", "model"),
            ("b seed 1", "b", "model"),
            ("e [ens]", "e [ens]", "ensemble"),
        ):
            values = rng.uniform(-0.1, 0.6, 12)
            values[0] = np.nan  # a neuron that never fired in the tier
            neurons.append(NeuronScores(label, group, key, values, kind, float(np.nanmean(values))))
            summary.append(
                row(label.split(" ", 1)[-1], float(np.nanmean(values)), 0.7, None, experiment=group)
            )
        if oracle:
            neurons.append(
                NeuronScores(
                    "planted oracle", "planted oracle", key, rng.uniform(0.3, 0.8, 12), "planted oracle", 0.55
                )
            )
        for label in ("a seed 1", "b seed 1"):
            panels.append(
                PositionPanel(
                    label,
                    key,
                    rng.uniform(0, 255, (36, 64)),
                    rng.uniform(0, 63, (12, 2)),
                    rng.normal(size=(12, 2)),
                    None,
                    None,
                    None,
                    None,
                    None,
                    0.4,
                )
            )
    curve = TrainingCurve("a", 1, "abc123", [1, 2, 3], [3.0, 2.0, 1.5], [0.1, 0.2, 0.25])
    example = ExampleNeuron(
        "a seed 1",
        "0-1-1",
        3,
        17,
        0.4,
        np.arange(5),
        np.arange(5.0),
        np.ones(5),
        np.arange(5.0) + 0.3,
        np.full(5, 0.2),
        np.full(5, 10),
    )
    return ReportContent(
        title="t",
        tier="test",
        summary=summary,
        training=[curve],
        neurons=neurons,
        positions=panels,
        examples=[example],
    )


@pytest.mark.parametrize("n_scans", [1, 4])
def test_every_figure_of_awkward_data_is_drawn(n_scans):
    data = content(n_scans)
    style = plots.style_of(data.neurons, data.training)
    assert style.colour("a") != style.colour("b") and style.marker("a seed 1") != style.marker("a seed 2")
    for section in page.SECTIONS:
        fig = section.draw(data, style)
        if section.stem in ("scores", "ensemble_gain"):  # no bars or gains in this data
            assert fig is None
            continue
        assert fig is not None, section.stem
        if section.stem == "readout_positions":
            visible = [ax for ax in fig.axes if ax.get_visible() and ax.images]
            assert len(visible) == 2 * n_scans
        if section.stem in ("neurons", "model_vs_model"):  # shared axes: every panel the same limits
            panels = [ax for ax in fig.axes if ax.get_visible()]
            assert len({ax.get_xlim() for ax in panels}) == 1 and len({ax.get_ylim() for ax in panels}) == 1


def test_without_an_oracle_there_is_no_oracle_scatter_and_the_page_says_so(tmp_path):
    data = content(1, oracle=False)
    assert plots.neurons_vs_oracle(data.neurons, "test", plots.style_of(data.neurons)) is None
    path = page.write_report(data, tmp_path)
    text = path.read_text()
    assert "no per-neuron scores with an oracle" in text and '<table class="summary">' in text
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        f"{s}.png"
        for s in (
            "learning_curves",
            "neuron_distributions",
            "model_vs_model",
            "readout_positions",
            "example_neurons",
        )
    )
