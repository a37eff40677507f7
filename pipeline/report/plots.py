"""Every figure of the report page, drawn with matplotlib's object API (no pyplot state, no display).

One visual code runs through all of them: a colour per experiment (ensembles and oracles have their
own), a marker and a line style per seed within it, every legend outside the data (below the figure
or beside the axes), and axes shared wherever panels are to be compared. Each function returns a
``Figure`` or None when there is nothing to draw; :func:`png` turns a figure into PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import combinations, groupby

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.report.content import ExampleNeuron, NeuronScores, PositionPanel, TrainingCurve
from pipeline.report.data import EnsembleGain, ScoreBar

DPI = 110
#: width of a full-width figure (inches): about the page's 1100 px at DPI
WIDTH = 9.8
PLANTED = "planted oracle"
REPEAT = "leave-one-out oracle"
ORACLE_COLOURS = {PLANTED: "0.35", REPEAT: "tab:red"}
ORACLE_LINES = {PLANTED: "--", REPEAT: ":"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
#: panels of the model-against-model figure at most (pairs of the best model of each experiment)
MAX_PAIRS = 6


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


class Style:
    """Colour per group (experiment, ensemble), marker and line style per member within its group; the
    same object is used by every figure, so a model looks the same everywhere."""

    def __init__(self, groups: Sequence[str], members: Sequence[tuple[str, str]]):
        self.colours = dict(ORACLE_COLOURS)
        for group in groups:
            if group not in self.colours:
                self.colours[group] = f"C{(len(self.colours) - len(ORACLE_COLOURS)) % 10}"
        self._index: dict[str, int] = {}
        for group, label in members:
            if label not in self._index:
                self._index[label] = sum(1 for g, _ in members[: members.index((group, label))] if g == group)

    def colour(self, group: str) -> str:
        return self.colours.get(group, "0.2")

    def marker(self, label: str) -> str:
        return "*" if label.endswith("[ens]") else MARKERS[self._index.get(label, 0) % len(MARKERS)]

    def linestyle(self, label: str):
        return LINESTYLES[self._index.get(label, 0) % len(LINESTYLES)]


def style_of(neurons: Sequence[NeuronScores], curves: Sequence[TrainingCurve] = ()) -> Style:
    """The report's style: groups in order of appearance (curves first, then per-neuron scores)."""
    members = [(c.experiment, curve_label(c)) for c in curves]
    members += [(s.group, s.label) for s in neurons if s.kind in ("model", "ensemble")]
    unique = list(dict.fromkeys(members))
    return Style(list(dict.fromkeys(g for g, _ in unique)), unique)


def curve_label(curve: TrainingCurve) -> str:
    return f"{curve.experiment} seed {curve.seed}"


def _legend_below(fig: Figure, handles, labels, ncol: int | None = None) -> None:
    """One legend for the whole figure, below every panel (never over the data)."""
    if handles:
        ncol = ncol or min(4, len(handles))
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def _unique_handles(axes) -> tuple[list, list[str]]:
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def _by_scan(items, key=lambda x: x.data_key) -> list[tuple[str, list]]:
    return [(k, list(g)) for k, g in groupby(sorted(items, key=key), key=key)]


# -- scores ----------------------------------------------------------------------------------------------


def score_bars(bars: list[ScoreBar], tier: str, style: Style) -> Figure | None:
    """One panel per scan: each experiment's mean over seeds as a bar (its value written above it), each
    seed a dot, the range of seeds as an error bar; the oracles as horizontal lines, legend beside."""
    if not bars:
        return None
    scans = _by_scan(bars)
    fig = Figure(figsize=(WIDTH, 3.2 * len(scans) + 0.6), layout="constrained")
    axes = fig.subplots(len(scans), 1, squeeze=False)[:, 0]
    for ax, (data_key, group) in zip(axes, scans, strict=True):
        x = np.arange(len(group))
        means = np.array([np.mean(b.values) for b in group])
        for i, b in enumerate(group):
            colour = style.colour(b.label)
            ax.bar(i, means[i], color=colour, alpha=0.55, width=0.6)
            if len(b.values) > 1:
                ax.errorbar(
                    i,
                    means[i],
                    yerr=[[means[i] - min(b.values)], [max(b.values) - means[i]]],
                    color="black",
                    capsize=4,
                    linewidth=1,
                )
            ax.plot(
                [i] * len(b.values),
                b.values,
                "o",
                color="black",
                markersize=3.5,
                label="one model (seed)" if i == 0 else None,
            )
            top = max(max(b.values), means[i])
            ax.annotate(
                f"{means[i]:.3f}",
                (i, top),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        planted = next((b.oracle for b in group if b.oracle is not None), None)
        repeat = next((b.repeat_oracle for b in group if b.repeat_oracle is not None), None)
        for kind, value in ((PLANTED, planted), (REPEAT, repeat)):
            if value is not None:
                ax.axhline(
                    value,
                    color=ORACLE_COLOURS[kind],
                    linestyle=ORACLE_LINES[kind],
                    linewidth=1.3,
                    label=f"{kind} {value:.3f}",
                )
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.set_xticks(x, [b.label for b in group], rotation=20, ha="right")
        ax.set_xlim(-0.6, len(group) - 0.4)
        ax.set_ylabel(f"{tier} single-trial\ncorrelation")
        ax.set_title(f"scan {data_key}: bar = mean over seeds, error bar = range of seeds", fontsize=10)
        ax.margins(y=0.15)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    return fig


def learning_curves(curves: list[TrainingCurve], style: Style) -> Figure | None:
    """Training loss and validation correlation per epoch, side by side: colour per experiment, line
    style and marker per seed, one legend entry per model below both panels."""
    if not curves:
        return None
    fig = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    loss_ax, corr_ax = fig.subplots(1, 2)
    for curve in curves:
        label = curve_label(curve)
        shown = label if sum(curve_label(c) == label for c in curves) == 1 else f"{label} ({curve.dataset})"
        kw = dict(
            color=style.colour(curve.experiment),
            linestyle=style.linestyle(label),
            marker=style.marker(label),
            markersize=4,
            linewidth=1.3,
        )
        loss_ax.plot(curve.epochs, curve.train_loss, label=shown, **kw)
        corr_ax.plot(curve.epochs, curve.val_corr, **kw)
    loss_ax.set_ylabel("training loss (mean over batches)")
    loss_ax.set_title("training loss", fontsize=10)
    corr_ax.set_ylabel("validation single-trial correlation")
    corr_ax.set_title("validation correlation (early stopping watches this)", fontsize=10)
    for ax in (loss_ax, corr_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = loss_ax.get_legend_handles_labels()
    _legend_below(fig, handles, labels, ncol=min(5, len(handles)))
    return fig


def ensemble_gains(gains: list[EnsembleGain], tier: str, style: Style) -> Figure | None:
    """Correlation of the mean of the first k members against k, with the oracles; legend beside."""
    if not gains:
        return None
    fig = Figure(figsize=(WIDTH * 0.75, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for g in gains:
        ax.plot(
            g.n_members,
            g.corr,
            "*-",
            markersize=9,
            color=style.colour(f"{g.name} [ens]"),
            label=f"{g.name} (scan {g.data_key})",
        )
        ax.annotate(
            f"{g.corr[-1]:.3f}",
            (g.n_members[-1], g.corr[-1]),
            xytext=(5, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    for kind, values in ((PLANTED, {g.oracle for g in gains}), (REPEAT, {g.repeat_oracle for g in gains})):
        for value in sorted(v for v in values if v is not None):
            ax.axhline(
                value,
                color=ORACLE_COLOURS[kind],
                linestyle=ORACLE_LINES[kind],
                linewidth=1.3,
                label=f"{kind} {value:.3f}",
            )
    ax.set_xlabel("members averaged")
    ax.set_ylabel(f"{tier} single-trial correlation")
    ax.set_xticks(sorted({k for g in gains for k in g.n_members}))
    ax.set_title("ensemble gain against the number of members", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    return fig


# -- per neuron ------------------------------------------------------------------------------------------


def neuron_distributions(neurons: list[NeuronScores], tier: str, style: Style) -> Figure | None:
    """One panel per scan: a violin of the per-neuron correlations of every model, ensemble and oracle,
    its median as a white dot and its mean (the headline number) written below it."""
    if not neurons:
        return None
    scans = _by_scan(neurons)
    most = max(len(group) for _, group in scans)
    fig = Figure(figsize=(WIDTH, 3.4 * len(scans) + 0.3), layout="constrained")
    axes = fig.subplots(len(scans), 1, squeeze=False, sharey=True)[:, 0]
    for ax, (data_key, group) in zip(axes, scans, strict=True):
        values = [s.values[np.isfinite(s.values)] for s in group]
        drawable = [i for i, v in enumerate(values) if len(v) > 1]
        if drawable:
            parts = ax.violinplot(
                [values[i] for i in drawable], positions=drawable, widths=0.75, showextrema=False
            )
            for body, i in zip(parts["bodies"], drawable, strict=True):
                body.set_facecolor(style.colour(group[i].group))
                body.set_edgecolor("black")
                body.set_alpha(0.6)
        ticks = []
        for i, (s, v) in enumerate(zip(group, values, strict=True)):
            if len(v):
                ax.plot(i, np.median(v), "o", color="white", markeredgecolor="black", markersize=5)
            mean = s.mean if s.mean is not None else (float(v.mean()) if len(v) else float("nan"))
            ticks.append(f"{s.label}\nmean {mean:.3f}")
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.set_xticks(range(len(group)), ticks, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.6, most - 0.4)
        ax.set_ylabel(f"{tier} correlation\nper neuron")
        ax.set_title(f"scan {data_key}: distribution over neurons (white dot: median)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    return fig


def _oracle_of(neurons: list[NeuronScores], data_key: str) -> NeuronScores | None:
    """The planted oracle of a scan where there is one, else its leave-one-out oracle."""
    for kind in (PLANTED, REPEAT):
        for s in neurons:
            if s.kind == kind and s.data_key == data_key:
                return s
    return None


def _limits(arrays) -> tuple[float, float]:
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays] + [np.zeros(1)])
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.05 * max(hi - lo, 0.1)
    return lo - pad, hi + pad


def neurons_vs_oracle(neurons: list[NeuronScores], tier: str, style: Style) -> Figure | None:
    """Per neuron, every model's correlation against the oracle's (the planted one where it exists,
    else the leave-one-out one): one panel per experiment or ensemble and scan, every seed in it (colour
    of the experiment, marker per seed), the identity line, the same axes in every panel."""
    panels = []
    for data_key, group in _by_scan([s for s in neurons if s.kind in ("model", "ensemble")]):
        oracle = _oracle_of(neurons, data_key)
        if oracle is None:
            continue
        for name, in_group in groupby(group, key=lambda s: s.group):
            panels.append((data_key, name, oracle, list(in_group)))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    lo, hi = _limits([s.values for *_, o, m in panels for s in [o, *m]])
    fig = Figure(figsize=(WIDTH, 3.1 * rows + 0.7), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, (data_key, name, oracle, members) in zip(axes, panels, strict=False):
        ax.plot([lo, hi], [lo, hi], color="0.4", linewidth=0.9, linestyle="--", label="model = oracle")
        for s in members:
            ax.scatter(
                oracle.values,
                s.values,
                s=40 if s.kind == "ensemble" else 16,
                alpha=0.75,
                color=style.colour(s.group),
                marker=style.marker(s.label),
                label=s.label,
                edgecolors="none",
            )
        ax.set_title(f"{name}\nscan {data_key}", fontsize=9)
        ax.set_xlabel(f"{oracle.kind} (per neuron)", fontsize=8)
        ax.set_ylabel(f"model {tier} correlation", fontsize=8)
        ax.tick_params(labelleft=True, labelbottom=True)
        ax.set_aspect("equal", adjustable="box")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    ax = axes[0]
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    _legend_below(fig, *_unique_handles(axes[: len(panels)]))
    return fig


def _representatives(group: list[NeuronScores]) -> list[NeuronScores]:
    """The best model (highest mean) of each experiment and every ensemble; with fewer than two, the two
    best models."""
    models = [s for s in group if s.kind in ("model", "ensemble")]

    def score(s: NeuronScores) -> float:
        return s.mean if s.mean is not None else float(np.nanmean(s.values))

    best = [max(members, key=score) for _, members in groupby(models, key=lambda s: s.group)]
    return best if len(best) >= 2 else sorted(models, key=score, reverse=True)[:2]


def model_vs_model(neurons: list[NeuronScores], tier: str, style: Style) -> Figure | None:
    """Per neuron, one model's correlation against another's (the best model of each experiment and each
    ensemble, pairwise; per scan), with the identity line; each panel says on how many neurons the
    model on the y axis is better. Same axes in every panel."""
    pairs = []
    for data_key, group in _by_scan([s for s in neurons if s.kind in ("model", "ensemble")]):
        pairs += [(data_key, a, b) for a, b in combinations(_representatives(group), 2)]
    pairs = pairs[:MAX_PAIRS]
    if not pairs:
        return None
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    lo, hi = _limits([s.values for _, a, b in pairs for s in (a, b)])
    fig = Figure(figsize=(WIDTH, 3.2 * rows + 0.2), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, (data_key, a, b) in zip(axes, pairs, strict=False):
        ax.plot([lo, hi], [lo, hi], color="0.4", linewidth=0.9, linestyle="--")
        ax.scatter(a.values, b.values, s=14, alpha=0.75, color=style.colour(b.group), edgecolors="none")
        better = int(np.sum(b.values > a.values))
        ax.set_title(f"scan {data_key}\n{b.label} better on {better} of {len(a.values)}", fontsize=9)
        ax.set_xlabel(f"{a.label}", fontsize=8)
        ax.set_ylabel(f"{b.label}", fontsize=8)
        ax.tick_params(labelleft=True, labelbottom=True)
        ax.set_aspect("equal", adjustable="box")
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    axes[0].set_xlim(lo, hi)
    axes[0].set_ylim(lo, hi)
    fig.suptitle(f"{tier} correlation per neuron, model against model (dashed: equal)", fontsize=10)
    return fig


def example_neurons(examples: list[ExampleNeuron], tier: str) -> Figure | None:
    """Per example neuron: the mean ± sd of its responses over the repeats of each repeated image (black)
    and of the model's predictions for the same trials (colour), images ordered by mean response."""
    if not examples:
        return None
    cols = min(2, len(examples))
    rows = -(-len(examples) // cols)
    fig = Figure(figsize=(WIDTH, 3.0 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, e in zip(axes, examples, strict=False):
        x = np.arange(len(e.image_ids))
        # side by side at each image (images are categories: no line between them)
        ax.errorbar(
            x - 0.12,
            e.response_mean,
            yerr=e.response_sd,
            fmt="o",
            color="black",
            markersize=3.5,
            capsize=2,
            linewidth=0.9,
            label="response: mean ± sd over repeats",
        )
        ax.errorbar(
            x + 0.12,
            e.prediction_mean,
            yerr=e.prediction_sd,
            fmt="D",
            color="tab:orange",
            markersize=3.5,
            capsize=2,
            linewidth=0.9,
            label="prediction: mean ± sd over the same trials",
        )
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_title(
            f"unit {e.unit_id} (neuron {e.neuron_idx}), scan {e.data_key}: "
            f"single-trial r = {e.correlation:.3f}",
            fontsize=9,
        )
        ax.set_xlabel(
            f"repeated {tier} images, by mean response ({len(x)} images, "
            f"{int(np.median(e.n_repeats))} repeats each)",
            fontsize=8,
        )
        ax.set_ylabel("response (normalised)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(examples) :]:
        ax.set_visible(False)
    fig.suptitle(f"example neurons of {examples[0].label} (best {tier} correlation)", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    _legend_below(fig, handles, labels, ncol=2)
    return fig


# -- readout positions -----------------------------------------------------------------------------------


def readout_positions(panels: list[PositionPanel]) -> Figure | None:
    """Per model and scan, the readout positions over an image of the scan: each neuron a dot coloured by
    its cortical x position (a smooth colour gradient across the image is retinotopy), the planted
    receptive-field centres as open circles joined to the learned positions where the scan is
    synthetic."""
    if not panels:
        return None
    cells = _position_cells(panels)
    rows = 1 + max(r for r, _ in cells)
    cols = 1 + max(c for _, c in cells)
    h, w = panels[0].frame.shape
    panel_w = WIDTH / 3
    # the image at its aspect (less the y labels), plus the title and the x labels
    panel_h = (panel_w - 0.45) * h / w + 0.7
    fig = Figure(figsize=(max(panel_w * cols, 5.0), panel_h * rows + 1.2), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    axes = [grid[r, c] for r, c in cells]
    for ax in grid.ravel():
        ax.set_visible(False)
    cmap = colormaps["viridis"]
    for ax, p in zip(axes, panels, strict=True):
        ax.set_visible(True)
        fh, fw = p.frame.shape
        lo, hi = float(np.min(p.frame)), float(np.max(p.frame))
        ax.imshow(  # pale (the lower part of the grey scale is left unused), so the dots stand out
            p.frame,
            cmap="gray",
            vmin=lo - 0.8 * (hi - lo),
            vmax=hi,
            extent=(-0.5, fw - 0.5, fh - 0.5, -0.5),
            interpolation="nearest",
        )
        span = np.ptp(p.cortex[:, 0]) if len(p.cortex) else 0.0
        shade = (p.cortex[:, 0] - p.cortex[:, 0].min()) / span if span > 0 else np.full(len(p.cortex), 0.5)
        if p.planted is not None:
            segments = list(np.stack([p.planted, p.learned], axis=1))  # N segments: (2 ends, xy) each
            ax.add_collection(LineCollection(segments, colors="white", linewidths=0.7, alpha=0.9))
            ax.scatter(
                p.planted[:, 0],
                p.planted[:, 1],
                s=22,
                facecolors="none",
                edgecolors="black",
                linewidths=0.9,
                label="planted receptive-field centre",
            )
        ax.scatter(
            p.learned[:, 0],
            p.learned[:, 1],
            s=20,
            c=cmap(shade),
            edgecolors="black",
            linewidths=0.3,
            label="readout position",
        )
        ax.set_xlim(-0.5, fw - 0.5)
        ax.set_ylim(fh - 0.5, -0.5)
        line = f"retinotopy R² {p.retinotopy_r2:.2f}"
        if p.mean_distance is not None:
            line = f"{p.mean_distance:.1f} px to planted ({p.affine_distance:.1f} after affine) · " + line
        ax.set_title(f"{p.label} · scan {p.data_key}\n{line}", fontsize=8)
        ax.set_xlabel("x (pixels)", fontsize=8)
        ax.set_ylabel("y (pixels)", fontsize=8)
        ax.tick_params(labelsize=7)
    colourbar = fig.colorbar(
        _mappable(cmap), ax=list(grid.ravel()), location="bottom", shrink=0.45, aspect=40, pad=0.02
    )
    colourbar.set_label(
        "readout position colour: cortex x of the neuron (per scan: 0 lowest, 1 highest)", fontsize=8
    )
    colourbar.ax.tick_params(labelsize=7)
    handles, labels = _unique_handles(axes)
    _legend_below(fig, handles, labels, ncol=2)
    return fig


def _position_cells(panels: list[PositionPanel]) -> list[tuple[int, int]]:
    """(row, column) of each panel: a row per model and a column per scan for two or three scans (a
    model's scans side by side, a scan's models one above the other), else three per row in order."""
    scans = list(dict.fromkeys(p.data_key for p in panels))
    if len(scans) > 3 or len(scans) == 1:
        return [divmod(i, 3) for i in range(len(panels))]
    models = list(dict.fromkeys(p.label for p in panels))
    return [(models.index(p.label), scans.index(p.data_key)) for p in panels]


def _mappable(cmap):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
