"""A CNN core whose output also carries a fixed quadrature Gabor bank's responses (``bank_pairs``).

Why: with the few hundred training images of a small recording, a learned core captures little of what
real V1 neurons compute. On the teacher world (neurons driven by a starter-kit model of real V1) the
winner's CNN with the receptive-field start reaches 0.51 validation correlation at 12 epochs, while the
same member with the planted image drive in place of its core, readout and shifter reaches 0.60
(``research.upper_bounds``); starting at the exact receptive-field positions or using the exact eye shift
adds nothing. So the gap is the features. Simple and complex cells are described well by quadrature
Gabor pairs and their energy (Adelson & Bergen 1985), a prior that costs no data: a bank built like the
receptive-field map's (:mod:`pipeline.models.rf_map`: pair j at orientation pi j / P and mouse V1's
three spatial frequencies in turn: with P a multiple of 3 each frequency gets P / 3 evenly spaced
orientations) filters the image channel, and its even, odd and energy responses at each cell of the
core's map are appended to the learned channels, each normalised by its own batch norm. The readout
chooses, per neuron, how much of either it reads; the bank's filters are fixed (no gradient, no weights
to learn).

Cost: one 13x13 convolution with ``2 * bank_pairs`` filters on the image channel per forward pass (no
backward through it), and ``3 * bank_pairs`` more readout features per neuron.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.core import Stacked2dCore
from pipeline.models.gabor import gabor_bank
from pipeline.models.rf_map import MAP_KERNEL, feature_maps


class BankedCore(nn.Module):
    """``core``'s channels, then the bank's ``2P`` linear and ``P`` energy channels on the same map.

    Args:
        core: the stacked CNN (its ``map_geometry()`` must have stride 1).
        pairs: P, quadrature Gabor pairs of the bank (:func:`pipeline.models.gabor.gabor_bank`).
        momentum: of the bank channels' batch norm (the core's own).
    """

    def __init__(self, core: Stacked2dCore, pairs: int, momentum: float = 0.1) -> None:
        super().__init__()
        origin, stride = core.map_geometry()
        if stride != 1 or 2 * origin != math.floor(2 * origin):
            raise ValueError(
                f"a Gabor bank needs a stride-1 core on whole or half pixels, got {origin}, {stride}"
            )
        self.core = core
        self.pairs = pairs
        self.register_buffer("bank", gabor_bank(2 * pairs, MAP_KERNEL), persistent=False)
        self.norm = nn.BatchNorm2d(3 * pairs, momentum=momentum)
        self._origin = origin

    def map_geometry(self) -> tuple[float, float]:
        """The core's (origin, stride): the bank is read on the same cells."""
        return self.core.map_geometry()

    def regularizer(self) -> torch.Tensor:
        """The core's penalty (the bank has nothing to learn but its norm's scale and shift)."""
        return self.core.regularizer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] (image channel first) -> [B, c + 3P, h, w] on the core's map."""
        learned = self.core(x)
        h, w = learned.shape[-2:]
        with torch.no_grad():  # fixed filters on the input: nothing upstream to differentiate
            # [B, 3P, H, W], centred on each input pixel
            bank = feature_maps(x[:, :1], self.get_buffer("bank"))
            if self._origin != math.floor(self._origin):
                bank = F.avg_pool2d(bank, kernel_size=2, stride=1)  # centred between pixels
            top = math.floor(self._origin)
            if top < 0 or top + h > bank.shape[-2] or top + w > bank.shape[-1]:
                raise ValueError(f"the core's {h}x{w} map from pixel {self._origin} leaves the image")
            bank = bank[..., top : top + h, top : top + w]
        return torch.cat([learned, self.norm(bank)], dim=1)
