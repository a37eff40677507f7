"""The report page: one HTML file with its figures embedded as data URIs (no network, no scripts)."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from pipeline.report import figures
from pipeline.report.data import ReportData

# (file stem, heading, drawing function, what an empty section says)
SECTIONS = (
    (
        "scores",
        "Models and ensembles against the oracle",
        "score_bars",
        "no scores yet: run `sensorium populate`",
    ),
    (
        "learning_curves",
        "Learning curves",
        "learning_curves",
        "no learning curves (imported models have none)",
    ),
    ("neurons", "Model against oracle, per neuron", "neuron_scatters", "no per-neuron scores with an oracle"),
    ("ensemble_gain", "Ensemble gain", "ensemble_gains", "no ensemble with scored members"),
)

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f0f0f0; }
.empty { color: #777; font-style: italic; }
"""


def draw(data: ReportData) -> dict[str, bytes]:
    """{file stem: PNG bytes} of every figure that has something to show."""
    args = {
        "score_bars": (data.bars, data.tier),
        "learning_curves": (data.curves,),
        "neuron_scatters": (data.scatters, data.tier),
        "ensemble_gains": (data.gains, data.tier),
    }
    images = {}
    for stem, _, function, _ in SECTIONS:
        fig = getattr(figures, function)(*args[function])
        if fig is not None:
            images[stem] = figures.png(fig)
    return images


def page(data: ReportData, images: dict[str, bytes]) -> str:
    """The HTML text: headings, embedded figures and the provenance table."""
    e = html.escape
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(data.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(data.title)}</h1>",
        f"<p>Written {now} by <code>sensorium report</code>; headline tier: <b>{e(data.tier)}</b>.</p>",
    ]
    for stem, heading, _, empty in SECTIONS:
        parts.append(f"<h2>{e(heading)}</h2>")
        if stem in images:
            encoded = base64.b64encode(images[stem]).decode()
            parts.append(f'<img alt="{e(heading)}" src="data:image/png;base64,{encoded}">')
        else:
            parts.append(f'<p class="empty">{e(empty)}</p>')
    parts.append("<h2>Provenance of every model shown</h2>")
    if data.provenance:
        columns = list(data.provenance[0])
        parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr>")
        for row in data.provenance:
            parts.append("<tr>" + "".join(f"<td>{e(str(row.get(c, '')))}</td>" for c in columns) + "</tr>")
        parts.append("</table>")
    else:
        parts.append('<p class="empty">no models</p>')
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
