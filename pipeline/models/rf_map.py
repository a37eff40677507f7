"""Receptive-field centres mapped from the training trials, to start the readout's positions there.

The Gaussian readout reads each neuron's features at one position of the core's output. With the
winner's budget (12 epochs, about 160 optimiser steps at demo size) the positions learned by gradient
descent stay several pixels from the true receptive fields (``research/rf_positions.py``), while a
simple cell's phase, at the 6-12 px wavelengths of mouse V1 at the model's image scale, needs about one
pixel. Electrophysiology and imaging labs map receptive fields before they model them; this does the
same, from the recording's own training trials, in one pass:

1. a fixed bank of quadrature Gabor pairs (:func:`pipeline.models.gabor.gabor_bank`: orientations and
   spatial frequencies of mouse V1) filters every training image; the features at each pixel are the
   even and odd responses and each pair's energy (Adelson & Bergen 1985), so simple and complex cells
   both correlate with some of them;
2. each neuron's map is the sum over features of the squared correlation between its responses (log1p of
   the response over its mean, so a few large events do not dominate) and the feature at that pixel,
   smoothed with a Gaussian of ``smooth_px``; the centre is the map's peak;
3. single-neuron peaks are noisy (a weak neuron's peak can be anywhere), but retinotopy is smooth over
   cortex: a cubic polynomial (linear for fewer than 40 neurons) from the neurons' cortex coordinates to
   the peaks is fitted robustly (refitted without the peaks far from it), and every neuron starts at the
   fitted position.

It draws no random numbers, and on a CPU it is bit-identical run to run. Cost: one filtering of the
training images (8 Gabor pairs per convolution) and a (N, T) x (T, 6 H W) product per chunk of two
pairs, N the neurons mapped (memory: 16 T + 6 (T + N) rows of H W floats); a few seconds at demo size on
a CPU (``benchmarks/rf_map_cost.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pipeline.models.gabor import gabor_bank

#: Gabor pairs of the mapping bank: 24 pairs, orientations pi * j / 24 with the bank's 3 frequencies in
#: turn (8 orientations per frequency, 22.5 degrees apart, each frequency's set turned by 7.5 degrees)
MAP_PAIRS = 24
#: kernel of the mapping bank (pixels at the model's image scale)
MAP_KERNEL = 13
#: Gabor pairs filtered in one convolution (16 output channels: a fast size on CPUs; memory 2 T x this x H
#: x W floats, ``benchmarks/rf_map_cost.py``)
CONV_PAIRS = 8


@dataclass(frozen=True)
class RFMap:
    """Receptive-field centres of one scan.

    Attributes:
        centres: (N, 2) float64 (x, y) pixel positions used to start the readout (the retinotopic fit).
        peaks: (N, 2) float64 (x, y) each neuron's own map peak (NaN: not mapped, or silent).
        inliers: (N,) bool, peaks the retinotopic fit was made on.
        mapped: (N,) bool, the neurons whose maps were made (all, or the strided subset of
            ``max_neurons``).
    """

    centres: np.ndarray
    peaks: np.ndarray
    inliers: np.ndarray
    mapped: np.ndarray


def _filter(images: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(T, 1, H, W) images, (F, k, k) filters of odd k -> (T, F, H, W) float32 responses ('same' size)."""
    return F.conv2d(
        images.float(), bank.to(images.device, torch.float32)[:, None], padding=bank.shape[-1] // 2
    )


def _with_energy(linear: torch.Tensor) -> torch.Tensor:
    """(T, 2P, H, W) responses of quadrature pairs (2j even, 2j + 1 odd) -> (T, 3P, H, W): the 2P linear
    responses, then the P pairs' energies."""
    energy = torch.sqrt(linear[:, 0::2] ** 2 + linear[:, 1::2] ** 2)
    return torch.cat([linear, energy], dim=1)


def feature_maps(images: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Even, odd and energy responses of Gabor pairs at every pixel.

    Args:
        images: (T, 1, H, W) float images as the model sees them.
        bank: (2P, k, k) quadrature pairs (filter 2j even, 2j + 1 odd), odd k.

    Returns:
        (T, 3P, H, W) float32: the 2P linear responses, then the P pairs' energies.
    """
    return _with_energy(_filter(images, bank))


def correlation_maps(
    images: torch.Tensor, responses: torch.Tensor, pairs_per_chunk: int = 2, smooth_px: float = 1.0
) -> np.ndarray:
    """Sum over the mapping bank's features of the squared correlation of each neuron with the feature at
    each pixel.

    The images are filtered ``CONV_PAIRS`` pairs at a time (a convolution with a handful of outputs
    runs far below the CPU's speed: 16 filters at once take a third of the time of four chunks of 4), and
    the correlations are formed ``pairs_per_chunk`` pairs at a time. The features are never centred or
    scaled in place: the responses are centred, so the correlation is (r^T f - sum(r) mean(f)) / ((T - 1)
    std(f)), applied to the (N, features) product, which saves two passes over the (T, features) block.

    Args:
        images: (T, 1, H, W) training images.
        responses: (T, N) training responses (negative values count as 0).
        pairs_per_chunk: Gabor pairs correlated at a time.
        smooth_px: Gaussian smoothing of each map (0: none).

    Memory: (2 T x ``CONV_PAIRS`` + (T + N) x 3 x ``pairs_per_chunk``) x H x W float32.

    Returns:
        (N, H, W) float64 maps.
    """
    T, _, H, W = images.shape
    if T < 3:
        raise ValueError(f"receptive-field mapping needs at least 3 training trials, got {T}")
    r = responses.double().clamp_min(0)
    r = torch.log1p(r / r.mean(0).clamp_min(1e-12))
    r = ((r - r.mean(0)) / r.std(0).clamp_min(1e-12)).float()  # [T, N]; a silent neuron: a zero map
    r_sum = r.sum(0)  # [N]: about 0 (float32 rounding), kept so the centring stays exact
    bank = gabor_bank(2 * MAP_PAIRS, MAP_KERNEL)
    score = torch.zeros(responses.shape[1], H * W, dtype=torch.float64, device=images.device)
    for group in range(0, MAP_PAIRS, CONV_PAIRS):
        group_pairs = min(CONV_PAIRS, MAP_PAIRS - group)
        linear = _filter(images, bank[2 * group : 2 * (group + group_pairs)])  # [T, 2 x pairs, H, W]
        for start in range(0, group_pairs, pairs_per_chunk):
            feats = _with_energy(linear[:, 2 * start : 2 * (start + pairs_per_chunk)]).reshape(T, -1)
            mean = feats.mean(0)  # [features x H x W]
            sq = torch.linalg.vector_norm(feats, dim=0).double() ** 2
            # one-pass variance in float64 from float32 sums: features are O(1) with means of the order
            # of their spread, so the cancellation costs a few digits of float32's seven at most
            var = ((sq - T * mean.double() ** 2) / (T - 1)).clamp_min(0)
            scale = 1.0 / ((T - 1) * var.sqrt().clamp_min(1e-6)).float()
            # a feature (nearly) the same in every trial, e.g. where the images share a blank border: its
            # one-pass variance is rounding, and scaling r^T f's rounding by it would invent a peak there
            scale[var <= (1e-6 * mean.double() ** 2).clamp_min(1e-12)] = 0.0
            corr = (r.T @ feats).addr_(r_sum, mean, alpha=-1).mul_(scale)  # [N, features x H x W] float32
            # squared and summed over the chunk's features in float32; only the (N, H * W) sum is float64
            score += corr.reshape(corr.shape[0], -1, H * W).pow(2).sum(1).double()
    maps = score.reshape(-1, H, W).cpu().numpy()
    if smooth_px > 0:
        maps = ndimage.gaussian_filter(maps, (0, smooth_px, smooth_px), mode="nearest")
    return maps


def _peaks(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) maps -> (N, 2) (x, y) of each map's maximum, refined to sub-pixel by a parabola per axis;
    NaN for a map with nothing in it (a silent neuron), whose argmax would be an arbitrary corner."""
    N, H, W = maps.shape
    flat = maps.reshape(N, -1).argmax(1)
    y, x = np.divmod(flat, W)
    out = np.stack([x, y], axis=1).astype(np.float64)
    out[~(maps.reshape(N, -1).max(1) > 0)] = np.nan
    for n in np.flatnonzero(np.isfinite(out[:, 0])):
        for axis, (pos, size) in enumerate(((x[n], W), (y[n], H))):
            if 0 < pos < size - 1:
                line = maps[n, y[n], pos - 1 : pos + 2] if axis == 0 else maps[n, pos - 1 : pos + 2, x[n]]
                curve = line[0] - 2 * line[1] + line[2]
                if curve < 0:  # a true maximum: the vertex of the parabola through the three values
                    out[n, axis] += 0.5 * (line[0] - line[2]) / curve
    return out


#: peaks per polynomial term a retinotopic fit needs: fewer neurons get a lower degree (or the mean)
PEAKS_PER_TERM = 4


def _design(coords: np.ndarray, degree: int) -> np.ndarray:
    """(N, 2) cortex coordinates -> (N, terms): polynomial terms of their z-scores up to ``degree`` (1, 3)."""
    z = (coords - coords.mean(0)) / np.where(coords.std(0) > 0, coords.std(0), 1.0)
    a, b = z[:, 0], z[:, 1]
    terms = [np.ones_like(a), a, b]
    if degree == 3:
        terms += [a * a, a * b, b * b, a**3, a * a * b, a * b * b, b**3]
    return np.stack(terms, axis=1)


def retinotopic_fit(
    peaks: np.ndarray, coords: np.ndarray, rounds: int = 5, min_radius: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Robust least-squares polynomial map from cortex coordinates to the peaks.

    Cubic with at least ``PEAKS_PER_TERM`` peaks per term (40), linear with fewer (12), else the mean
    peak for every neuron. Each round refits on the peaks within max(``min_radius`` px, 2.5 x the median
    distance) of the last fit. NaN peaks (silent or unmapped neurons) are never fitted on, but get the
    fit's value.

    Args:
        peaks: (N, 2) pixel positions (NaN rows: no peak); coords: (N, 2) cortex coordinates.

    Returns:
        (fitted (N, 2), inliers (N,) bool: the peaks the returned fit was made on).

    Raises:
        ValueError: no finite peak at all.
    """
    keep = np.isfinite(peaks).all(1)
    n = int(keep.sum())
    if n == 0:
        raise ValueError("no neuron's responses correlate with the image anywhere: nothing to map")
    degree = next((d for d, terms in ((3, 10), (1, 3)) if n >= PEAKS_PER_TERM * terms), 0)
    if degree == 0:
        return np.repeat(peaks[keep].mean(0, keepdims=True), len(peaks), axis=0), keep
    X = _design(np.asarray(coords, dtype=np.float64), degree)
    for _ in range(rounds):
        coef, *_ = np.linalg.lstsq(X[keep], peaks[keep], rcond=None)
        fitted = X @ coef
        dist = np.linalg.norm(peaks - fitted, axis=1)  # NaN for NaN peaks: never within the radius
        new = dist <= max(min_radius, 2.5 * float(np.nanmedian(dist)))
        if new.sum() < PEAKS_PER_TERM * X.shape[1] or np.array_equal(new, keep):
            break
        keep = new
    else:  # the last round changed the set: fit once more on it, so `keep` is what the fit used
        coef, *_ = np.linalg.lstsq(X[keep], peaks[keep], rcond=None)
        fitted = X @ coef
    return fitted, keep


def mapped_subset(n_neurons: int, max_neurons: int | None) -> np.ndarray:
    """Indices of the neurons to map: all, or ``max_neurons`` spread evenly over the neuron index (no
    random numbers; recordings list neurons plane by plane, so a stride takes some from every plane).

    Args:
        n_neurons: N, the scan's neurons; max_neurons: the cap (None: no cap).

    Returns:
        (min(N, max_neurons),) int64 indices, ascending.
    """
    if max_neurons is None or max_neurons >= n_neurons:
        return np.arange(n_neurons)
    if max_neurons < 1:
        raise ValueError(f"max_neurons must be at least 1, got {max_neurons}")
    return np.unique(np.linspace(0, n_neurons - 1, max_neurons).round().astype(np.int64))


def map_receptive_fields(
    images: torch.Tensor,
    responses: torch.Tensor,
    cortex_xy: np.ndarray,
    max_neurons: int | None = None,
) -> RFMap:
    """Receptive-field centres of one scan from its training trials.

    Every neuron starts at the retinotopic fit, a 10-term polynomial of its cortex coordinates, so the
    fit needs a few hundred peaks, not all of them; the map's cost grows with every neuron mapped.
    ``max_neurons`` maps only that many (:func:`mapped_subset`) and places every neuron with the fit
    (``research/rf_map_subset.py`` measures what it changes).

    Args:
        images: (T, 1, H, W) training images as the model sees them.
        responses: (T, N) their responses.
        cortex_xy: (N, 2) the neurons' cortex coordinates.
        max_neurons: map at most this many neurons (None: all).

    Returns:
        The map (pixel positions on the (H, W) image).
    """
    cortex_xy = np.asarray(cortex_xy, dtype=np.float64)
    if responses.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {responses.shape[0]} response rows")
    if cortex_xy.ndim != 2 or cortex_xy.shape != (responses.shape[1], 2):
        raise ValueError(f"cortex_xy must be ({responses.shape[1]}, 2), got {cortex_xy.shape}")
    for name, values in (("responses", responses), ("images", images)):
        if not torch.isfinite(values).all():
            raise ValueError(f"{name} of the training trials must be finite")
    if not np.isfinite(cortex_xy).all():
        raise ValueError("cortex coordinates must be finite")
    subset = mapped_subset(responses.shape[1], max_neurons)
    mapped = np.zeros(responses.shape[1], dtype=bool)
    mapped[subset] = True
    if not mapped.all():  # no copy without a cap
        responses = responses.index_select(1, torch.from_numpy(subset).to(responses.device))
    peaks = np.full((len(mapped), 2), np.nan)  # an unmapped neuron's NaN peak: never fitted on
    peaks[subset] = _peaks(correlation_maps(images, responses))
    H, W = images.shape[-2:]
    fitted, inliers = retinotopic_fit(peaks, cortex_xy)
    centres = np.clip(fitted, 0.0, [W - 1.0, H - 1.0])
    return RFMap(centres=centres, peaks=peaks, inliers=inliers, mapped=mapped)


def readout_positions(
    centres: np.ndarray, map_size: tuple[int, int], origin: float = 0.0, stride: float = 1.0
) -> np.ndarray:
    """(N, 2) (x, y) pixel positions -> (N, 2) readout coordinates in [-1, 1] (``grid_sample`` with
    ``align_corners=True``: -1 and +1 are the centres of the map's first and last cells)."""
    h, w = map_size
    cells = (np.asarray(centres, dtype=np.float64) - origin) / stride
    norm = 2 * cells / np.maximum(np.array([w - 1, h - 1], dtype=np.float64), 1) - 1
    return np.clip(norm, -1.0, 1.0)
