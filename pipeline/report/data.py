"""What a report shows, as plain data (no database, no drawing)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ScoreBar:
    """Test-tier single-trial correlation of one experiment (its seeds) or ensemble on one scan."""

    label: str
    data_key: str
    values: list[float]  # one per seed / member model (an ensemble: its one score)
    oracle: float | None  # the planted expected response's score on the same trials (synthetic scans)
    repeat_oracle: float | None = None  # the leave-one-out oracle of the same trials (repeated images)


@dataclass(frozen=True)
class Curve:
    """Learning curve of one trained model: validation correlation per epoch."""

    label: str
    seed: int
    epochs: list[int]
    val_corr: list[float]


@dataclass(frozen=True)
class NeuronScatter:
    """Per-neuron test correlations of a model next to the oracles', on one scan (at least one oracle)."""

    label: str
    data_key: str
    model: np.ndarray  # (N,)
    oracle: np.ndarray | None  # (N,) the planted oracle (synthetic scans)
    repeat_oracle: np.ndarray | None = None  # (N,) the leave-one-out oracle


@dataclass(frozen=True)
class EnsembleGain:
    """Test correlation of the mean of the first k members (k = 1..n, members ordered by seed)."""

    name: str
    data_key: str
    n_members: list[int]
    corr: list[float]
    oracle: float | None  # planted
    repeat_oracle: float | None = None  # leave-one-out


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows; ``provenance`` rows are {column: text} for every model shown."""

    title: str
    tier: str
    bars: list[ScoreBar] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    scatters: list[NeuronScatter] = field(default_factory=list)
    gains: list[EnsembleGain] = field(default_factory=list)
    provenance: list[dict[str, str]] = field(default_factory=list)
