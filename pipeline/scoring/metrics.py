"""The competition's metrics (see docs/model.md#metrics), vectorised over neurons.

All functions take ``responses`` and ``predictions`` shaped (trials, neurons) in the same units (the
normalised responses the model sees) and return one value per neuron; average with :func:`mean_score`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEV_THRESHOLD = 0.15  # neurons with a smaller fraction of explainable variance are left out of FEVE


def corr(y1: np.ndarray, y2: np.ndarray, axis: int = 0, eps: float = 1e-8) -> np.ndarray:
    """Pearson correlation along ``axis`` as the competition computes it.

    z = (y - mean) / (std_ddof0 + eps); corr = mean(z1 * z2). A constant column gives 0, not NaN.

    Args:
        y1, y2: arrays of the same shape, e.g. (trials, neurons).

    Returns:
        Correlations with ``axis`` removed, e.g. (neurons,).
    """
    y1 = np.asarray(y1, dtype=np.float64)
    y2 = np.asarray(y2, dtype=np.float64)
    z1 = (y1 - y1.mean(axis=axis, keepdims=True)) / (y1.std(axis=axis, ddof=0, keepdims=True) + eps)
    z2 = (y2 - y2.mean(axis=axis, keepdims=True)) / (y2.std(axis=axis, ddof=0, keepdims=True) + eps)
    return (z1 * z2).mean(axis=axis)


def single_trial_correlation(responses: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(N,) correlation over all trials, repeats kept separate."""
    return np.nan_to_num(corr(responses, predictions, axis=0))


def _image_means(values: np.ndarray, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image mean over repeats: (n_images, N), plus the inverse index and counts."""
    ids, inverse, counts = np.unique(np.asarray(image_ids), return_inverse=True, return_counts=True)
    sums = np.zeros((len(ids), values.shape[1]))
    np.add.at(sums, inverse, values)
    return sums / counts[:, None], inverse, counts


def correlation_to_average(
    responses: np.ndarray, predictions: np.ndarray, image_ids: np.ndarray
) -> np.ndarray:
    """(N,) correlation across images of the repeat-averaged responses and predictions."""
    mean_resp, _, _ = _image_means(np.asarray(responses, dtype=np.float64), image_ids)
    mean_pred, _, _ = _image_means(np.asarray(predictions, dtype=np.float64), image_ids)
    return np.nan_to_num(corr(mean_resp, mean_pred, axis=0))


def fev_and_feve(
    responses: np.ndarray, predictions: np.ndarray, image_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of explainable variance (FEV) and fraction of it explained (FEVE), each (N,).

    total_var = variance over all trials (ddof 1); noise_var = mean over images of the variance over
    repeats (ddof 1, images with at least 2 repeats); FEV = (total_var - noise_var) / total_var;
    FEVE = 1 - (mean squared error - noise_var) / (total_var - noise_var).
    """
    y = np.asarray(responses, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    means, inverse, counts = _image_means(y, image_ids)
    repeated = counts >= 2
    if not repeated.any():
        raise ValueError("FEVE needs images shown at least twice; every image here was shown once")
    sq = (y - means[inverse]) ** 2
    per_image_ss = np.zeros_like(means)
    np.add.at(per_image_ss, inverse, sq)
    noise_var = (per_image_ss[repeated] / (counts[repeated, None] - 1)).mean(axis=0)
    keep = repeated[inverse]  # trials of repeated images define the variance budget
    total_var = y[keep].var(axis=0, ddof=1)
    mse = ((y[keep] - p[keep]) ** 2).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fev = (total_var - noise_var) / total_var
        feve = 1 - (mse - noise_var) / (total_var - noise_var)
    return fev, feve


def mean_feve(fev: np.ndarray, feve: np.ndarray, threshold: float = FEV_THRESHOLD) -> tuple[float, int]:
    """Mean FEVE over neurons with FEV >= threshold, and how many there are (NaN, 0 if none)."""
    keep = np.nan_to_num(fev, nan=-np.inf) >= threshold
    return (float(np.mean(feve[keep])) if keep.any() else float("nan")), int(keep.sum())


# ------------------------------------------------------------------------------------------------------
# the leave-one-out oracle: the data-derived ceiling of a stimulus-only model (docs/model.md#oracle)
# ------------------------------------------------------------------------------------------------------


def repeated_trials(image_ids: np.ndarray) -> np.ndarray:
    """(T,) True for the trials of an image shown at least twice (the trials the oracle can use)."""
    _, inverse, counts = np.unique(np.asarray(image_ids), return_inverse=True, return_counts=True)
    return np.asarray(counts[inverse.reshape(-1)] >= 2)


def leave_one_out_means(responses: np.ndarray, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The leave-one-out predictor: for each trial of a repeated image, the mean of the OTHER repeats.

    Returns:
        ``(mask, others)``: ``mask`` (T,) the trials of images shown at least twice, ``others``
        (mask.sum(), N) the mean response of the other repeats of each such trial's image.
    """
    y = np.asarray(responses, dtype=np.float64)
    means, inverse, counts = _image_means(y, image_ids)
    inverse = inverse.reshape(-1)
    mask = counts[inverse] >= 2
    n = counts[inverse[mask]][:, None].astype(np.float64)
    others = (means[inverse[mask]] * n - y[mask]) / (n - 1)
    return mask, others


def leave_one_out_oracle(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """(N,) the competition's oracle correlation: each trial of an image shown at least twice against the
    mean of the other repeats of that image, correlated per neuron over those trials (:func:`corr`; a
    neuron constant on those trials gives 0). Images shown once are left out.

    Raises:
        ValueError: no image is shown at least twice.
    """
    mask, others = leave_one_out_means(responses, image_ids)
    if not mask.any():
        raise ValueError(
            "the leave-one-out oracle needs images shown at least twice; every image here was shown once"
        )
    y = np.asarray(responses, dtype=np.float64)[mask]
    return np.nan_to_num(corr(y, others, axis=0))


def explainable_variance(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """(N,) fraction of explainable variance (FEV, as :func:`fev_and_feve` computes it) over the trials of
    repeated images; NaN for a neuron that is constant on them.

    Raises:
        ValueError: no image is shown at least twice.
    """
    y = np.asarray(responses, dtype=np.float64)
    fev, _ = fev_and_feve(y, y, image_ids)
    return fev


@dataclass(frozen=True)
class LeaveOneOutOracle:
    """The leave-one-out oracle of one tier: per-neuron arrays are (N,) over the trials of repeated images."""

    n_trials: int  # trials of images shown at least twice (the trials correlated)
    n_images: int  # images shown at least twice
    per_neuron_correlation: np.ndarray  # leave-one-out correlation (0 for a constant neuron)
    per_neuron_fev: np.ndarray  # fraction of explainable variance (NaN for a constant neuron)

    @property
    def correlation(self) -> float:
        """Mean over neurons of the leave-one-out correlation."""
        return float(self.per_neuron_correlation.mean())

    @property
    def fev(self) -> float | None:
        """Mean FEV over the neurons that have one (None: none has)."""
        finite = self.per_neuron_fev[np.isfinite(self.per_neuron_fev)]
        return float(finite.mean()) if finite.size else None

    @property
    def n_neurons_fev(self) -> int:
        """Neurons with FEV >= :data:`FEV_THRESHOLD` (those that FEVE averages over)."""
        return int((np.nan_to_num(self.per_neuron_fev, nan=-np.inf) >= FEV_THRESHOLD).sum())


def leave_one_out_score(responses: np.ndarray, image_ids: np.ndarray) -> LeaveOneOutOracle:
    """The leave-one-out oracle of one tier's responses (T, N) with their image ids (T,).

    Raises:
        ValueError: no image is shown at least twice.
    """
    mask = repeated_trials(image_ids)
    return LeaveOneOutOracle(
        n_trials=int(mask.sum()),
        n_images=len(np.unique(np.asarray(image_ids)[mask])),
        per_neuron_correlation=leave_one_out_oracle(responses, image_ids),
        per_neuron_fev=explainable_variance(responses, image_ids),
    )
