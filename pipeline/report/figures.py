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


ORACLE_STYLE = _LineStyle(color="0.3", linestyle="--", linewidth=1.2)  # the planted oracle
REPEAT_ORACLE_STYLE = _LineStyle(color="tab:red", linestyle=":", linewidth=1.4)  # the leave-one-out oracle
PLANTED_LABEL = "planted oracle"
REPEAT_LABEL = "leave-one-out oracle"


def _oracle_lines(ax, planted: float | None, repeat: float | None) -> None:
    """The oracles of one panel as horizontal lines, each labelled with its kind and value."""
    if planted is not None:
        ax.axhline(planted, **ORACLE_STYLE, label=f"{PLANTED_LABEL} {planted:.3f}")
    if repeat is not None:
        ax.axhline(repeat, **REPEAT_ORACLE_STYLE, label=f"{REPEAT_LABEL} {repeat:.3f}")


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _by_scan(items, key=lambda x: x.data_key) -> list[tuple[str, list]]:
    return [(k, list(g)) for k, g in groupby(sorted(items, key=key), key=key)]


def score_bars(bars: list[ScoreBar], tier: str) -> Figure | None:
    """One panel per scan: mean over seeds as a bar, the range of seeds as an error bar, each seed a dot,
    the planted oracle as a dashed line and the leave-one-out oracle as a dotted one (each where it
    exists)."""
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
        _oracle_lines(
            ax,
            next((b.oracle for b in group if b.oracle is not None), None),
            next((b.repeat_oracle for b in group if b.repeat_oracle is not None), None),
        )
        ax.set_xticks(x, [b.label for b in group], rotation=30, ha="right")
        ax.set_ylabel(f"{tier} single-trial correlation")
        ax.set_title(f"scan {data_key}: models against the oracle")
        ax.legend(loc="best", fontsize=8)
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
    """Per neuron: the model's correlation against each oracle's (planted and leave-one-out, in two
    colours, each where it exists), with the diagonal (model = oracle)."""
    if not scatters:
        return None
    n = len(scatters)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.6 * cols, 3.5 * rows), layout="constrained")
    for i, s in enumerate(scatters):
        ax = fig.add_subplot(rows, cols, i + 1)
        shown = [
            (values, label, colour)
            for values, label, colour in (
                (s.oracle, PLANTED_LABEL, "tab:blue"),
                (s.repeat_oracle, REPEAT_LABEL, "tab:red"),
            )
            if values is not None
        ]
        for values, label, colour in shown:
            ax.scatter(values, s.model, s=6, alpha=0.6, color=colour, label=label)
        lo = float(np.nanmin([np.nanmin(s.model), 0.0, *(np.nanmin(v) for v, _, _ in shown)]))
        hi = float(np.nanmax([np.nanmax(s.model), *(np.nanmax(v) for v, _, _ in shown)]))
        ax.plot([lo, hi], [lo, hi], **ORACLE_STYLE)
        ax.legend(loc="lower right", fontsize=7)
        ax.set_xlabel(f"oracle {tier} correlation (per neuron)")
        ax.set_ylabel(f"model {tier} correlation")
        ax.set_title(f"{s.label}\nscan {s.data_key}", fontsize=9)
    return fig


def ensemble_gains(gains: list[EnsembleGain], tier: str) -> Figure | None:
    """Test correlation of the mean of the first k members against k, the planted oracle as a dashed
    line, the leave-one-out oracle as a dotted one."""
    if not gains:
        return None
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for g in gains:
        ax.plot(g.n_members, g.corr, "o-", label=f"{g.name} (scan {g.data_key})")
    for value in sorted({g.oracle for g in gains if g.oracle is not None}):
        ax.axhline(value, **ORACLE_STYLE, label=f"{PLANTED_LABEL} {value:.3f}")
    for value in sorted({g.repeat_oracle for g in gains if g.repeat_oracle is not None}):
        ax.axhline(value, **REPEAT_ORACLE_STYLE, label=f"{REPEAT_LABEL} {value:.3f}")
    ax.set_xlabel("members averaged")
    ax.set_ylabel(f"{tier} single-trial correlation")
    ax.set_xticks(sorted({k for g in gains for k in g.n_members}))
    ax.set_title("ensemble gain against the number of members")
    ax.legend(fontsize=8)
    return fig
