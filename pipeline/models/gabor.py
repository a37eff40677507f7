"""A Gabor filter bank to initialise a core's first convolution (``input_init: gabor``).

Neurons of mouse V1 are, to first order, Gabor-like linear filters (simple cells) or phase-invariant
pairs of them (complex cells, the energy model of Adelson & Bergen 1985). A first layer that starts as a
bank of quadrature pairs at several orientations and spatial frequencies needs fewer training steps to
find such filters than one that starts from noise; the filters stay trainable.

The bank is deterministic (no random draw), so it adds nothing to a run's seed: filter ``2j`` and ``2j+1``
are the even and odd members of pair ``j``, pair ``j`` has orientation ``pi * j / n_pairs`` and one of
:data:`FREQUENCIES` in turn. The frequencies span the preferred spatial frequencies of mouse V1 (about
0.02-0.1 cycles per degree) at the model's image scale, where one pixel of the 36x64 view is roughly
2 degrees of the SENSORIUM screen.
"""

from __future__ import annotations

import math

import torch

#: spatial frequencies of the bank, cycles per pixel of the model's (downsampled) image
FREQUENCIES = (0.06, 0.1, 0.16)
#: envelope width as a fraction of the wavelength (about one and a half cycles under the envelope)
SIGMA_PER_WAVELENGTH = 0.4


def gabor_bank(n: int, kernel: int) -> torch.Tensor:
    """``n`` zero-mean, unit-norm Gabor filters, [n, kernel, kernel] (float32), centred in the kernel.

    Odd ``n``: the last filter is an even member without its odd partner.
    """
    if n < 1 or kernel < 1:
        raise ValueError(f"a Gabor bank needs n >= 1 and kernel >= 1, got n={n}, kernel={kernel}")
    n_pairs = (n + 1) // 2
    r = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    filters = []
    for j in range(n_pairs):
        theta = math.pi * j / n_pairs
        freq = FREQUENCIES[j % len(FREQUENCIES)]
        # a kernel too small for the envelope cuts it: keep at least two sigmas inside
        sigma = min(SIGMA_PER_WAVELENGTH / freq, max(kernel / 4, 0.5))
        u = xx * math.cos(theta) + yy * math.sin(theta)
        envelope = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        for phase in (0.0, math.pi / 2):
            g = envelope * torch.cos(2 * math.pi * freq * u + phase)
            g = g - g.mean()  # no response to uniform light: luminance is the core's bias's job
            norm = g.norm()
            filters.append(g / norm if norm > 0 else g)
    return torch.stack(filters[:n]).float()


@torch.no_grad()
def gabor_init_(weight: torch.Tensor, image_channels: int = 1) -> torch.Tensor:
    """Overwrite the image-channel filters of a conv weight [out, in, k, k] with a Gabor bank, in place.

    Every output channel gets one bank filter on each of the first ``image_channels`` input channels,
    scaled to the weight's current root-mean-square (so the layer's output scale matches its default
    initialisation); the other input channels (the constant behaviour channels) keep their weights.
    Non-square kernels use the bank at the smaller side, centred.
    """
    out, _, kh, kw = weight.shape
    k = min(kh, kw)
    bank = gabor_bank(out, k).to(weight.dtype)  # [out, k, k], unit norm
    rms = weight[:, :image_channels].pow(2).mean().sqrt()
    top, left = (kh - k) // 2, (kw - k) // 2
    region = weight[:, :image_channels]
    region.zero_()
    region[:, :, top : top + k, left : left + k] = bank[:, None] * (rms * math.sqrt(kh * kw))
    return weight
