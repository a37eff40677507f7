"""The competition's metrics (SPEC section 4), vectorised over neurons.

All functions take ``responses`` and ``predictions`` shaped (trials, neurons) in the same units (the
normalised responses the model sees) and return one value per neuron; average with :func:`mean_score`.
"""

from __future__ import annotations

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
