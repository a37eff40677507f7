"""Image resampling shared by the synthetic generator and the data path."""

from __future__ import annotations

import numpy as np


def _axis_weights(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """(n_out, n_in) bilinear interpolation matrix for one axis.

    Output pixel ``o`` samples input coordinate ``(o + 0.5) / scale - 0.5`` (pixel centres aligned, as
    ``skimage.transform.rescale(order=1, anti_aliasing=False)`` and ``torch`` ``align_corners=False``),
    with edge values repeated beyond the border.
    """
    coords = (np.arange(n_out) + 0.5) / scale - 0.5
    coords = np.clip(coords, 0, n_in - 1)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = coords - lo
    w = np.zeros((n_out, n_in))
    w[np.arange(n_out), lo] += 1 - frac
    w[np.arange(n_out), hi] += frac
    return w


_CHUNK = 256  # images per step of rescale_bilinear


def rescale_bilinear(images: np.ndarray, scale: float) -> np.ndarray:
    """Rescale the last two axes of ``images`` by ``scale`` with bilinear interpolation, no anti-aliasing.

    This is what the competition's ``ScaleInputs`` does (docs/model.md#input-pipeline): at ``scale=0.25``
    a 144x256 image becomes 36x64, each output pixel the mean of the 2x2 input block at its centre.

    Args:
        images: (..., H, W) array.
        scale: factor, e.g. 0.25.

    Returns:
        (..., round(H*scale), round(W*scale)) float32 array.
    """
    H, W = images.shape[-2:]
    h, w = int(round(H * scale)), int(round(W * scale))
    rows = _axis_weights(H, h, scale)
    cols = _axis_weights(W, w, scale)
    flat = images.reshape(-1, H, W)
    out = np.empty((flat.shape[0], h, w), dtype=np.float32)
    # a chunk of images at a time: the float64 copy and einsum's intermediates of all 6,000 full-size
    # images of a recording would be ~3.5 GB; per chunk they are a few MB, with the same arithmetic per
    # image
    for start in range(0, flat.shape[0], _CHUNK):
        chunk = flat[start : start + _CHUNK].astype(np.float64, copy=False)
        out[start : start + _CHUNK] = np.einsum("hH,nHW,wW->nhw", rows, chunk, cols, optimize=True)
    return out.reshape(*images.shape[:-2], h, w)
