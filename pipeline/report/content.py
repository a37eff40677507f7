"""What the full report shows beyond :class:`pipeline.report.data.ReportData`, as plain data (no
database, no drawing): the summary table, the learning curves with their training loss, per-neuron
scores of every model, readout positions and example neurons."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.report.data import ReportData


@dataclass(frozen=True)
class SummaryRow:
    """One line of the summary table: a trained model, an ensemble, or the mean over an experiment's
    seeds, on one scan (every number as stored; the fractions are ratios of stored numbers)."""

    experiment: str  # experiment name, or "<name> [ens]" for an ensemble
    member: str  # "seed 1", "3 members", "mean of 3 seeds"
    data_key: str
    single_trial_correlation: float
    correlation_to_average: float
    feve: float | None  # None: no neuron passes the FEV threshold, or no repeats
    planted_oracle: float | None  # the planted oracle's correlation on the same trials
    repeat_oracle: float | None  # the leave-one-out oracle's correlation on the same trials
    epochs: int | None = None  # None: an ensemble or a mean row
    duration_s: float | None = None  # training time (an ensemble: the sum over its members)
    kind: str = "model"  # "model", "ensemble" or "mean"
    contaminated: bool = False  # the model (or a member) trained on some of these trials
    spread: float | None = None  # a mean row: the standard deviation over its seeds

    @property
    def fraction_planted(self) -> float | None:
        """Correlation over the planted oracle's (None without a planted oracle)."""
        return _ratio(self.single_trial_correlation, self.planted_oracle)

    @property
    def fraction_repeat(self) -> float | None:
        """Correlation over the leave-one-out oracle's (None without one)."""
        return _ratio(self.single_trial_correlation, self.repeat_oracle)


def _ratio(value: float, oracle: float | None) -> float | None:
    return None if oracle is None or oracle <= 0 else value / oracle


@dataclass(frozen=True)
class TrainingCurve:
    """The stored per-epoch record of one trained model."""

    experiment: str
    seed: int
    dataset: str  # short dataset hash (members on different splits may share a seed)
    epochs: list[int]
    train_loss: list[float]  # mean training loss of the epoch (the objective, regularisers included)
    val_corr: list[float]  # validation single-trial correlation after the epoch


@dataclass(frozen=True)
class NeuronScores:
    """Per-neuron single-trial correlations of one model, ensemble or oracle on one scan."""

    label: str  # e.g. "rep_base seed 4", "rep_ens [ens]", "planted oracle"
    group: str  # experiment (or ensemble / oracle) the label belongs to: one colour per group
    data_key: str
    values: np.ndarray  # (N,)
    kind: str = "model"  # "model", "ensemble", "planted oracle" or "leave-one-out oracle"
    mean: float | None = None  # the stored mean over neurons (the headline number)


@dataclass(frozen=True)
class PositionPanel:
    """A model's readout positions on one scan over an image of the scan (pixels at the model's input
    scale), with the planted receptive-field centres where the recording is synthetic."""

    label: str  # "rep_base seed 4"
    data_key: str
    frame: np.ndarray  # (H, W) an image of the scan as the model sees it
    learned: np.ndarray  # (N, 2) x, y pixels
    cortex: np.ndarray  # (N, 2) cortex coordinates (um), for the retinotopy colouring
    planted: np.ndarray | None  # (N, 2) x, y pixels of the planted centres
    mean_distance: float | None  # mean distance to the planted centres (px)
    affine_distance: float | None  # the same after the best affine map
    corr_x: float | None
    corr_y: float | None
    retinotopy_r2: float  # variance of the learned positions an affine map of cortex explains


@dataclass(frozen=True)
class ExampleNeuron:
    """One neuron of the best model on the repeated images of a tier: responses and predictions."""

    label: str  # the model
    data_key: str
    neuron_idx: int
    unit_id: int
    correlation: float  # its stored single-trial correlation
    image_ids: np.ndarray  # (K,) images shown at least twice, ordered by mean response
    response_mean: np.ndarray  # (K,)
    response_sd: np.ndarray  # (K,)
    prediction_mean: np.ndarray  # (K,)
    prediction_sd: np.ndarray  # (K,) predictions vary over repeats with behaviour and history
    n_repeats: np.ndarray  # (K,)


@dataclass(frozen=True)
class ReportContent(ReportData):
    """Everything the report page shows (``ReportData`` plus the summary table and the new figures);
    ``notes`` are sentences the page shows as they are (e.g. what was left out and why)."""

    summary: list[SummaryRow] = field(default_factory=list)
    training: list[TrainingCurve] = field(default_factory=list)
    neurons: list[NeuronScores] = field(default_factory=list)
    positions: list[PositionPanel] = field(default_factory=list)
    examples: list[ExampleNeuron] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
