"""The report page: one HTML file, its figures embedded as data URIs (no network, no scripts), the
summary, readout-position and provenance tables as HTML tables, and a sentence under every heading that
says how to read what follows. ``write_report`` also writes every figure as a PNG beside the page."""

from __future__ import annotations

import base64
import datetime
import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from matplotlib.figure import Figure

from pipeline.report import plots
from pipeline.report.content import PositionPanel, ReportContent, SummaryRow
from pipeline.report.data import ReportData

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; }
img { max-width: 100%; box-sizing: border-box; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
tr.scan th { background: #e4ecf7; text-align: left; }
table.summary td:nth-child(-n+2), table.positions td:nth-child(-n+2) { white-space: nowrap; }
tr.mean td { font-style: italic; color: #444; }
tr.ensemble td { font-weight: bold; }
tr.best td { background: #fff6d5; }
p.how { color: #444; max-width: 60em; }
p.small { font-size: 0.85em; }
.empty { color: #777; font-style: italic; }
"""


@dataclass(frozen=True)
class Section:
    """A figure of the page: its file stem, heading, how to read it, and what an empty one says."""

    stem: str
    heading: str
    how: str
    empty: str
    draw: Callable[[ReportContent, plots.Style], Figure | None]


SECTIONS = (
    Section(
        "scores",
        "Models and ensembles against the oracle",
        "Each bar is the mean over an experiment's seeds (its value above it), each black dot one seed, the "
        "error bar the range of the seeds. The dashed line is the planted oracle (the generator's expected "
        "response: the best any model can do), the dotted red line the leave-one-out oracle (each repeat "
        "against the mean of the other repeats of its image).",
        "no scores yet: run `sensorium populate`",
        lambda d, s: plots.score_bars(d.bars, d.tier, s),
    ),
    Section(
        "learning_curves",
        "Learning curves",
        "Left: the training loss of each epoch (the objective the optimiser minimises, regularisers "
        "included); right: the validation correlation after each epoch, which early stopping and the "
        "learning-rate schedule watch. Colour: experiment; line style and marker: seed.",
        "no learning curves (imported models have none)",
        lambda d, s: plots.learning_curves(d.training, s),
    ),
    Section(
        "neuron_distributions",
        "Per-neuron correlations",
        "How the single-trial correlation is spread over neurons, for every model, ensemble and oracle. "
        "A model whose mean rises because a few neurons improve looks different here from one that "
        "improves every neuron a little.",
        "no per-neuron scores",
        lambda d, s: plots.neuron_distributions(d.neurons, d.tier, s),
    ),
    Section(
        "neurons",
        "Model against oracle, per neuron",
        "Each dot is a neuron: the oracle's correlation (x) against the model's (y), every seed of an "
        "experiment in one panel. Dots near the dashed line are neurons the model explains as well as "
        "the oracle; far below it, neurons with explainable signal the model misses. All panels share "
        "their axes.",
        "no per-neuron scores with an oracle",
        lambda d, s: plots.neurons_vs_oracle(d.neurons, d.tier, s),
    ),
    Section(
        "model_vs_model",
        "Model against model, per neuron",
        "The best model of each experiment (and each ensemble) against the others, neuron by neuron: dots "
        "above the dashed line are neurons the model on the y axis predicts better. All panels share their "
        "axes.",
        "fewer than two scored models",
        lambda d, s: plots.model_vs_model(d.neurons, d.tier, s),
    ),
    Section(
        "ensemble_gain",
        "Ensemble gain",
        "The correlation of the mean prediction of the first k members (members in seed order), against "
        "k. The last point is the ensemble's stored score.",
        "no ensemble with scored members",
        lambda d, s: plots.ensemble_gains(d.gains, d.tier, s),
    ),
    Section(
        "readout_positions",
        "Readout positions on the image",
        "Where each model reads each neuron from the core's feature map, in pixels of the image as the "
        "model sees it (the Gaussian readout's mean position, plus the shifter's mean eye-position shift "
        "where the model has a shifter). Colour follows the neuron's position along the cortex: a smooth "
        "gradient across the image is retinotopy. On synthetic scans the open circles are the planted "
        "receptive-field centres, each joined to its neuron's learned position.",
        "no model with a Gaussian readout",
        lambda d, s: plots.readout_positions(d.positions),
    ),
    Section(
        "example_neurons",
        "Example neurons",
        "A few neurons of the best model (the neurons at the top, upper quartile, median and lower "
        "quartile of its per-neuron correlation): for every image shown several times, the mean and "
        "spread of the recorded responses (black) and of the model's predictions for the same trials "
        "(orange; predictions vary over repeats with behaviour, eye position and history).",
        "no scan repeats images in this tier",
        lambda d, s: plots.example_neurons(d.examples, d.tier),
    ),
)


def content_of(data: ReportData) -> ReportContent:
    """``data`` as :class:`ReportContent` (a plain ``ReportData`` has none of the new parts)."""
    if isinstance(data, ReportContent):
        return data
    return ReportContent(
        title=data.title,
        tier=data.tier,
        bars=data.bars,
        curves=data.curves,
        scatters=data.scatters,
        gains=data.gains,
        provenance=data.provenance,
    )


def draw(data: ReportData) -> dict[str, bytes]:
    """{file stem: PNG bytes} of every figure that has something to show."""
    content = content_of(data)
    style = plots.style_of(content.neurons, content.training)
    images = {}
    for section in SECTIONS:
        fig = section.draw(content, style)
        if fig is not None:
            images[section.stem] = plots.png(fig)
    return images


# -- tables ----------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def duration(seconds: float | None) -> str:
    """``12.3 s``, ``4 min 03 s``, ``2 h 05 min`` (``–`` for None)."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def summary_table(rows: list[SummaryRow], tier: str) -> str:
    """The summary as an HTML table: one block per scan, headed by its oracles; the best single-trial
    correlation of each scan highlighted. A fraction column appears for each oracle that exists."""
    e = html.escape
    planted = any(r.planted_oracle is not None for r in rows)
    repeat = any(r.repeat_oracle is not None for r in rows)
    head = ["experiment", "seed / member", f"{tier} single-trial correlation"]
    if planted:
        head.append("fraction of planted oracle")
    if repeat:
        head.append("fraction of leave-one-out oracle")
    head += ["correlation to average", "FEVE", "epochs trained", "training time"]
    parts = ['<table class="summary">', "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for data_key, group in groupby(rows, key=lambda r: r.data_key):
        block = list(group)
        oracles = [
            f"planted oracle {_number(block[0].planted_oracle)}"
            if block[0].planted_oracle is not None
            else "",
            f"leave-one-out oracle {_number(block[0].repeat_oracle)}"
            if block[0].repeat_oracle is not None
            else "",
        ]
        shown = "; ".join(o for o in oracles if o) or "no oracle"
        parts.append(f'<tr class="scan"><th colspan="{len(head)}">scan {e(data_key)}: {e(shown)}</th></tr>')
        best = max((r.single_trial_correlation for r in block if r.kind != "mean"), default=None)
        for r in block:
            corr = _number(r.single_trial_correlation)
            if r.spread is not None:
                corr += f" ± {r.spread:.3f}"
            if r.contaminated:
                corr += " †"
            cells = [(r.experiment, ""), (r.member, ""), (corr, "num")]
            if planted:
                cells.append((_percent(r.fraction_planted), "num"))
            if repeat:
                cells.append((_percent(r.fraction_repeat), "num"))
            cells += [
                (_number(r.correlation_to_average), "num"),
                (_number(r.feve), "num"),
                ("–" if r.epochs is None else str(r.epochs), "num"),
                (duration(r.duration_s), "num"),
            ]
            kind = r.kind + (" best" if r.kind != "mean" and r.single_trial_correlation == best else "")
            parts.append(
                f'<tr class="{kind}" data-scan="{e(data_key)}">'
                + "".join(f'<td class="{c}">{e(v)}</td>' if c else f"<td>{e(v)}</td>" for v, c in cells)
                + "</tr>"
            )
    parts.append("</table>")
    return "\n".join(parts)


SUMMARY_HOW = (
    "Every trained model, the mean over each experiment's seeds (± their standard deviation) and every "
    "ensemble, on each scan's {tier} tier, as stored by <code>sensorium populate</code> (the numbers of "
    "<code>sensorium scores</code>). Fraction of the oracle: the model's single-trial correlation over the "
    "oracle's on the same trials (planted oracle: synthetic scans; leave-one-out oracle: scans that repeat "
    "images, the ceiling of a stimulus-only model, which a model using behaviour and history may pass; "
    "– where the oracle is missing or not positive). Correlation to average: correlation of the "
    "repeat-averaged prediction with the repeat-averaged response. FEVE: fraction of explainable variance "
    "explained, over the neurons with FEV ≥ 0.15. Training time: wall clock of the run (an ensemble: the "
    "sum over its members; a mean row: the mean). The best correlation of each scan is highlighted; † marks "
    "a model that trained on some of these trials."
)


def positions_table(panels: list[PositionPanel]) -> str:
    """The numbers of the readout-position figure as an HTML table."""
    e = html.escape
    planted = any(p.planted is not None for p in panels)
    head = ["model", "scan", "neurons"]
    if planted:
        head += ["distance to planted (px)", "after affine map (px)", "corr x", "corr y"]
    head.append("retinotopy R²")
    parts = ['<table class="positions">', "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for p in panels:
        cells = [(p.label, ""), (p.data_key, ""), (str(len(p.learned)), "num")]
        if planted:
            cells += [
                (_number(p.mean_distance, 2), "num"),
                (_number(p.affine_distance, 2), "num"),
                (_number(p.corr_x), "num"),
                (_number(p.corr_y), "num"),
            ]
        cells.append((_number(p.retinotopy_r2, 2), "num"))
        parts.append(
            "<tr>"
            + "".join(f'<td class="{c}">{e(v)}</td>' if c else f"<td>{e(v)}</td>" for v, c in cells)
            + "</tr>"
        )
    parts.append("</table>")
    return "\n".join(parts)


POSITIONS_HOW = (
    "Distance to planted: mean distance between each neuron's readout position and its planted "
    "receptive-field centre; after affine map: the same once the best shift, scale, shear or mirror of "
    "all positions together is taken out (a small value here and a large one before means the layout is "
    "right but the frame is off); corr x / y: correlation over neurons of each coordinate. Retinotopy "
    "R²: the share of the variance of the readout positions that an affine map of the neurons' cortex "
    "coordinates explains."
)


def _table(rows: list[dict[str, str]]) -> str:
    e = html.escape
    columns = list(rows[0])
    parts = ["<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr>"]
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{e(str(row.get(c, '')))}</td>" for c in columns) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def page(data: ReportData, images: dict[str, bytes]) -> str:
    """The HTML text: title, summary table, figures with how to read them, position and provenance
    tables."""
    content = content_of(data)
    e = html.escape
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(content.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(content.title)}</h1>",
        f"<p>Written {now} by <code>sensorium report</code>; headline tier: <b>{e(content.tier)}</b>.</p>",
        "<h2>Summary</h2>",
    ]
    if content.summary:
        parts.append(summary_table(content.summary, content.tier))  # the numbers first, then how to read them
        parts.append(f'<p class="how small">{SUMMARY_HOW.format(tier=e(content.tier))}</p>')
    else:
        parts.append('<p class="empty">no scores yet: run `sensorium populate`</p>')
    for note in content.notes:
        parts.append(f'<p class="how">{e(note)}</p>')
    for section in SECTIONS:
        parts.append(f'<h2 id="{section.stem}">{e(section.heading)}</h2>')
        if section.stem in images:
            parts.append(f'<p class="how">{e(section.how)}</p>')
            encoded = base64.b64encode(images[section.stem]).decode()
            parts.append(f'<img alt="{e(section.heading)}" src="data:image/png;base64,{encoded}">')
            if section.stem == "readout_positions":
                parts.append(f'<p class="how">{e(POSITIONS_HOW)}</p>')
                parts.append(positions_table(content.positions))
        else:
            parts.append(f'<p class="empty">{e(section.empty)}</p>')
    parts.append("<h2>Provenance of every model shown</h2>")
    parts.append(_table(content.provenance) if content.provenance else '<p class="empty">no models</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(data: ReportData, out: Path) -> Path:
    """Write ``out/report.html`` and ``out/<figure>.png``; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    images = draw(data)
    for stem, content in images.items():
        (out / f"{stem}.png").write_bytes(content)
    path = out / "report.html"
    path.write_text(page(data, images), encoding="utf-8")
    return path
