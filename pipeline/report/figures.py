"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display needed).

Each function takes report data and returns a ``Figure`` or None when there is nothing to draw; every
axis is labelled. ``png`` turns a figure into PNG bytes.
"""

from __future__ import annotations

import io
from itertools import groupby
from typing import TypedDict

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.report.data import Curve, EnsembleGain, NeuronScatter, ScoreBar

DPI = 110


class _LineStyle(TypedDict):
    color: str
    linestyle: str
    linewidth: float


ORACLE_STYLE = _LineStyle(color="0.3", linestyle="--", linewidth=1.2)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _by_scan(items, key=lambda x: x.data_key) -> list[tuple[str, list]]:
    return [(k, list(g)) for k, g in groupby(sorted(items, key=key), key=key)]


def score_bars(bars: list[ScoreBar], tier: str) -> Figure | None:
    """One panel per scan: mean over seeds as a bar, the range of seeds as an error bar, each seed a dot,
    the oracle as a dashed line."""
    if not bars:
        return None
    scans = _by_scan(bars)
    width = max(5.0, 0.9 * max(len(b) for _, b in scans) + 1.5)
    fig = Figure(figsize=(width, 3.6 * len(scans)), layout="constrained")
    for row, (data_key, group) in enumerate(scans):
        ax = fig.add_subplot(len(scans), 1, row + 1)
        x = np.arange(len(group))
        means = np.array([np.mean(b.values) for b in group])
        low = means - np.array([min(b.values) for b in group])
        high = np.array([max(b.values) for b in group]) - means
        ax.bar(
            x,
            means,
            color="tab:blue",
            alpha=0.75,
            yerr=[low, high],
            capsize=4,
            label="mean (bar: seed range)",
        )
        for i, b in enumerate(group):
            ax.plot([i] * len(b.values), b.values, "o", color="black", markersize=3)
        oracle = next((b.oracle for b in group if b.oracle is not None), None)
        if oracle is not None:
            ax.axhline(oracle, **ORACLE_STYLE, label=f"oracle {oracle:.3f}")
        ax.set_xticks(x, [b.label for b in group], rotation=30, ha="right")
        ax.set_ylabel(f"{tier} single-trial correlation")
        ax.set_title(f"scan {data_key}: models against the oracle")
        ax.legend(loc="lower right", fontsize=8)
    return fig


def learning_curves(curves: list[Curve]) -> Figure | None:
    """Validation correlation per epoch, one colour per experiment, one line per seed."""
    if not curves:
        return None
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    colours: dict[str, str] = {}
    for curve in curves:
        colour = colours.setdefault(curve.label, f"C{len(colours) % 10}")
        first = sum(c.label == curve.label for c in curves[: curves.index(curve)]) == 0
        ax.plot(
            curve.epochs, curve.val_corr, color=colour, linewidth=1.2, label=curve.label if first else None
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation single-trial correlation")
    ax.set_title("learning curves (one line per seed)")
    ax.legend(fontsize=8)
    return fig


def neuron_scatters(scatters: list[NeuronScatter], tier: str) -> Figure | None:
    """Per neuron: the model's correlation against the oracle's, with the diagonal (model = oracle)."""
    if not scatters:
        return None
    n = len(scatters)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.6 * cols, 3.5 * rows), layout="constrained")
    for i, s in enumerate(scatters):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.scatter(s.oracle, s.model, s=6, alpha=0.6)
        lo = float(np.nanmin([np.nanmin(s.oracle), np.nanmin(s.model), 0.0]))
        hi = float(np.nanmax([np.nanmax(s.oracle), np.nanmax(s.model)]))
        ax.plot([lo, hi], [lo, hi], **ORACLE_STYLE)
        ax.set_xlabel(f"oracle {tier} correlation (per neuron)")
        ax.set_ylabel(f"model {tier} correlation")
        ax.set_title(f"{s.label}\nscan {s.data_key}", fontsize=9)
    return fig


def ensemble_gains(gains: list[EnsembleGain], tier: str) -> Figure | None:
    """Test correlation of the mean of the first k members against k, the oracle as a dashed line."""
    if not gains:
        return None
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for g in gains:
        ax.plot(g.n_members, g.corr, "o-", label=f"{g.name} (scan {g.data_key})")
    oracles = {g.oracle for g in gains if g.oracle is not None}
    for value in sorted(oracles):
        ax.axhline(value, **ORACLE_STYLE, label=f"oracle {value:.3f}")
    ax.set_xlabel("members averaged")
    ax.set_ylabel(f"{tier} single-trial correlation")
    ax.set_xticks(sorted({k for g in gains for k in g.n_members}))
    ax.set_title("ensemble gain against the number of members")
    ax.legend(fontsize=8)
    return fig
