"""Where a trained model reads each neuron: its Gaussian readout positions in input-image pixels.

The full-Gaussian readout (:mod:`pipeline.models.readout`) reads neuron n at ``mu_n`` in [-1, 1]^2 of
the core's output map (``grid_sample`` with ``align_corners=True``: -1 and +1 are the centres of the map's
first and last cells), plus the shifter's eye-position shift when the model has one. The core's map
geometry (``origin + stride * cell``) turns map cells into input pixels, so the positions can be drawn
over the image and set against the receptive-field centres a synthetic recording planted (``rf_center``
of its ground truth, in normalised [-1, 1] image coordinates).

:func:`position_fit` compares two sets of positions two ways: the plain mean distance (are the
positions where the receptive fields are?) and the distance left after the best affine map from one to
the other (is the layout right up to a shift, a scale or a mirror?), and :func:`retinotopy_r2` says how
much of the learned layout an affine map of the cortex coordinates explains (retinotopy is smooth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def map_to_pixels(
    mu: np.ndarray, map_size: tuple[int, int], origin: float = 0.0, stride: float = 1.0
) -> np.ndarray:
    """(N, 2) readout coordinates (x, y) in [-1, 1] -> (N, 2) input pixels (x, y); the inverse of
    :func:`pipeline.models.rf_map.readout_positions` (values outside [-1, 1] are clamped, as the readout
    clamps them)."""
    h, w = map_size
    norm = np.clip(np.asarray(mu, dtype=np.float64).reshape(-1, 2), -1.0, 1.0)
    cells = (norm + 1.0) / 2.0 * np.array([w - 1, h - 1], dtype=np.float64)
    return origin + stride * cells


def normalised_to_pixels(positions: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, 2) (x, y) in normalised [-1, 1] image coordinates (the generator's ``rf_center``) -> pixels
    of an image of ``image_size`` (h, w)."""
    h, w = image_size
    xy = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    return (xy + 1.0) / 2.0 * np.array([w - 1, h - 1], dtype=np.float64)


def model_readout_pixels(
    model: torch.nn.Module, data_key: str, pupil_center: torch.Tensor | None = None
) -> np.ndarray | None:
    """(N, 2) input pixels (x, y) where ``model`` reads the neurons of scan ``data_key``, or None when
    the model has no Gaussian readout with a core map geometry.

    With a shifter and ``pupil_center`` (T, 2) the shifter's mean shift over those trials is added to
    the positions (the readout reads at position + shift), so the result is where it reads on average.
    """
    core, readouts = getattr(model, "core", None), getattr(model, "readout", None)
    if core is None or readouts is None or not hasattr(core, "map_geometry"):
        return None
    try:
        readout = readouts[data_key]
    except KeyError:
        return None
    if not hasattr(readout, "mu") or not hasattr(readout, "in_shape"):
        return None
    with torch.no_grad():
        mu = torch.clamp(readout.mu.detach(), -1.0, 1.0).reshape(-1, 2)
        shifter = getattr(model, "shifter", None)
        if shifter is not None and pupil_center is not None and len(pupil_center):
            mu = mu + shifter(pupil_center, data_key).mean(0)
    _, map_h, map_w = readout.in_shape
    origin, stride = core.map_geometry()
    return map_to_pixels(mu.double().cpu().numpy(), (map_h, map_w), origin, stride)


@dataclass(frozen=True)
class PositionFit:
    """How close learned positions are to reference ones (pixels), and how alike their layouts are."""

    mean_distance: float  # mean Euclidean distance, as they are
    affine_distance: float  # mean distance after the best affine map of the learned onto the reference
    corr_x: float  # correlation over neurons of the x coordinates (NaN: one of them constant)
    corr_y: float  # the same for y


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a**2).sum() * (b**2).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def _affine_residual(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``target`` less its least-squares affine prediction from ``source`` (both (N, k))."""
    design = np.c_[source, np.ones(len(source))]
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return target - design @ coef


def position_fit(learned: np.ndarray, reference: np.ndarray) -> PositionFit:
    """Compare (N, 2) learned positions with (N, 2) reference positions of the same neurons.

    Raises:
        ValueError: the two do not have the same (N, 2) shape, or N is zero.
    """
    learned = np.asarray(learned, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if learned.shape != reference.shape or learned.ndim != 2 or learned.shape[1:] != (2,) or not len(learned):
        raise ValueError(
            f"positions must both be (N, 2) with N > 0, got {learned.shape} and {reference.shape}"
        )
    residual = _affine_residual(learned, reference)
    return PositionFit(
        mean_distance=float(np.linalg.norm(learned - reference, axis=1).mean()),
        affine_distance=float(np.linalg.norm(residual, axis=1).mean()),
        corr_x=_corr(learned[:, 0], reference[:, 0]),
        corr_y=_corr(learned[:, 1], reference[:, 1]),
    )


def retinotopy_r2(positions: np.ndarray, cortex_xy: np.ndarray) -> float:
    """Share of the variance of (N, 2) positions that an affine map of the (N, 2) cortex coordinates
    explains (1: a perfectly smooth, planar retinotopic layout; NaN: the positions do not vary)."""
    positions = np.asarray(positions, dtype=np.float64)
    total = float(((positions - positions.mean(0)) ** 2).sum())
    if total <= 0 or len(positions) < 4:
        return float("nan")
    residual = _affine_residual(np.asarray(cortex_xy, dtype=np.float64), positions)
    return 1.0 - float((residual**2).sum()) / total
