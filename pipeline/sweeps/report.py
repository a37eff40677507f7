"""``sensorium sweep report``: trials ranked by validation score, and score against each swept parameter."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.sweeps.spec import SweepSpec, base_values


@dataclass
class TrialState:
    """Where one trial stands (from the pipeline's tables and the study)."""

    number: int
    experiment: str
    params: dict[str, Any]
    status: str  # pending, training, complete, pruned, error
    score: float | None = None  # mean validation correlation of its members' best weights
    epochs: int | None = None  # most epochs any member ran
    members: int = 0
    trained: int = 0
    pruned_at: int | None = None  # epoch after which the pruner stopped it
    errors: list[str] = field(default_factory=list)


def ranked(trials: list[TrialState]) -> list[TrialState]:
    """Complete trials by score (best first), then pruned ones by score, then the rest by number."""
    order = {"complete": 0, "pruned": 1}

    def key(t: TrialState):
        scored = t.status in order and t.score is not None
        return (order.get(t.status, 2) if scored else 2, -(t.score or 0.0) if scored else 0.0, t.number)

    return sorted(trials, key=key)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def difference(spec: SweepSpec, params: dict[str, Any]) -> str:
    """``path=value`` for every swept value that differs from the base (``(base)`` when none does)."""
    base = base_values(spec)
    parts = [f"{path}={_short(v)}" for path, v in params.items() if v != base.get(path)]
    return ", ".join(parts) if parts else "(base)"


def table(spec: SweepSpec, trials: list[TrialState], top: int | None = None) -> list[str]:
    """The ranking as text lines: rank, trial, status, validation correlation, epochs, difference."""
    lines = [
        f"sweep {spec.name}: {len(trials)}/{spec.budget} trials, sampler {spec.sampler}; ranked by "
        "validation single-trial correlation (mean over members; the test tier is never used)",
        f"{'rank':>4}  {'trial':<22} {'status':<9} {'val corr':>8} {'epochs':>6}  difference from the base",
    ]
    for rank, t in enumerate(ranked(trials)[:top] if top else ranked(trials), start=1):
        score = f"{t.score:.4f}" if t.score is not None else "-"
        epochs = str(t.epochs) if t.epochs is not None else "-"
        status = t.status if t.status != "pruned" else f"pruned@{t.pruned_at}"
        lines.append(
            f"{rank:>4}  {t.experiment:<22} {status:<9} {score:>8} {epochs:>6}  {difference(spec, t.params)}"
        )
        if t.errors:
            lines.append(f"{'':>6}error: {t.errors[0]}")
    return lines


def figure(spec: SweepSpec, trials: list[TrialState], path: Path) -> Path:
    """One panel per swept parameter: validation correlation of every scored trial against its value
    (filled: complete, hollow: pruned; log axis for log ranges; lists as categories). Writes ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter

    scored = [t for t in trials if t.score is not None and t.status in ("complete", "pruned")]
    paths = list(spec.space)
    cols = min(3, len(paths))
    rows = math.ceil(len(paths) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    best = max((t.score for t in scored if t.status == "complete" and t.score is not None), default=None)
    for ax, param_path in zip(axes.flat, paths, strict=False):
        param = spec.space[param_path]
        categorical = isinstance(param, list)
        labels = [_short(c) for c in param] if categorical else []
        for status, face in (("complete", "C0"), ("pruned", "none")):
            pts = [t for t in scored if t.status == status and param_path in t.params]
            xs = [
                labels.index(_short(t.params[param_path])) if categorical else t.params[param_path]
                for t in pts
            ]
            ax.scatter(xs, [t.score for t in pts], facecolors=face, edgecolors="C0", s=28, label=status)
        if isinstance(param, list):  # categorical
            ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 6 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            kind = next(iter(param))
            if kind.startswith("log"):
                ax.set_xscale("log")
                # a range within about a decade gets overlapping minor-tick labels: label 4 points of
                # the swept range instead
                lo, hi = param[kind]
                ticks = sorted({lo * (hi / lo) ** (i / 3) for i in range(4)})
                if kind == "log_int":
                    ticks = sorted({round(v) for v in ticks})
                ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
                ax.xaxis.set_minor_formatter(NullFormatter())
            elif kind == "int":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best is not None:
            ax.axhline(best, color="0.7", lw=0.8, ls="--")
        ax.set_xlabel(param_path.split(".", 2)[-1], fontsize=8)
        ax.set_ylabel("validation correlation")
    for ax in list(axes.flat)[len(paths) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"sweep {spec.name} ({spec.sampler}, {len(scored)} scored trials)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
