"""Score one tier of one scan: the three metrics per neuron and their means (see docs/model.md#metrics)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.scoring.metrics import (
    correlation_to_average,
    fev_and_feve,
    mean_feve,
    single_trial_correlation,
)


@dataclass(frozen=True)
class TierScore:
    """Scores of one tier. Per-neuron arrays are (N,); FEV / FEVE are None without repeated images."""

    n_trials: int
    single_trial_correlation: float
    correlation_to_average: float
    feve: float | None
    n_neurons_feve: int
    per_neuron_correlation: np.ndarray
    per_neuron_correlation_to_average: np.ndarray
    per_neuron_fev: np.ndarray | None
    per_neuron_feve: np.ndarray | None


def score_tier(targets: np.ndarray, predictions: np.ndarray, image_ids: np.ndarray) -> TierScore:
    """Score predictions (n, N) against targets (n, N) of one tier; ``image_ids`` (n,) group repeats."""
    if targets.shape != predictions.shape:
        raise ValueError(f"targets {targets.shape} and predictions {predictions.shape} differ in shape")
    if not np.all(np.isfinite(predictions)):
        raise ValueError(f"predictions contain {int((~np.isfinite(predictions)).sum())} non-finite values")
    st = single_trial_correlation(targets, predictions)
    ca = correlation_to_average(targets, predictions, image_ids)
    repeated = np.unique(image_ids, return_counts=True)[1].max(initial=0) >= 2
    fev = feve = None
    mean_fe, n_fe = None, 0
    if repeated:
        fev, feve = fev_and_feve(targets, predictions, image_ids)
        m, n_fe = mean_feve(fev, feve)
        mean_fe = None if np.isnan(m) else m
    return TierScore(
        n_trials=int(targets.shape[0]),
        single_trial_correlation=float(st.mean()),
        correlation_to_average=float(ca.mean()),
        feve=mean_fe,
        n_neurons_feve=n_fe,
        per_neuron_correlation=st,
        per_neuron_correlation_to_average=ca,
        per_neuron_fev=fev,
        per_neuron_feve=feve,
    )
