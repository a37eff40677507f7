"""Core + readout (+ shifter) wrapped into one firing-rate model (see docs/model.md#baseline).

Submodules are named ``core``, ``readout`` and ``shifter`` as in neuralpredictors 0.3.0's
``FiringRateEncoder``, so starter-kit state_dict keys (``core.*``, ``readout.<key>.*``, ``shifter.<key>.*``)
line up.
"""

from __future__ import annotations

from typing import TypeAlias

import torch
from torch import nn

from .bank_core import BankedCore
from .core import Stacked2dCore
from .nonlinearity import EluPlusOne
from .readout import MultipleFullGaussian2d
from .shifter import MLPShifter
from .vit import ViTCore

#: the cores an encoder is built with (``pipeline.models.build.build_core``)
Core: TypeAlias = Stacked2dCore | ViTCore | BankedCore


class FiringRateEncoder(nn.Module):
    """images [B, C, H, W] -> positive rates [B, N_data_key] = f(readout + elu_offset), f = ELU + 1 unless
    another ``nonlinearity`` is given (``pipeline.models.nonlinearity``).

    Subclasses (e.g. a behaviour modulator) can reuse ``readout_drive`` and override ``output_nonlinearity``
    or ``forward``.
    """

    def __init__(
        self,
        core: Core,
        readout: MultipleFullGaussian2d,
        shifter: MLPShifter | None = None,
        elu_offset: float = 0.0,
        nonlinearity: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.core = core
        self.readout = readout
        self.shifter = shifter
        self.offset = elu_offset  # NP's attribute name
        self.nonlinearity = EluPlusOne() if nonlinearity is None else nonlinearity

    def readout_drive(
        self,
        images: torch.Tensor,
        data_key: str,
        pupil_center: torch.Tensor | None = None,
        detach_core: bool = False,
    ) -> torch.Tensor:
        """Linear drive of every neuron before the output nonlinearity, [B, N]."""
        x = self.core(images)
        if detach_core:
            x = x.detach()
        shift = None
        if self.shifter is not None:
            if pupil_center is None:
                raise ValueError("this model has a shifter: pass pupil_center ([B, 2], z-scored)")
            shift = self.shifter(pupil_center, data_key)
        return self.readout(x, data_key=data_key, shift=shift)

    def output_nonlinearity(self, drive: torch.Tensor) -> torch.Tensor:
        """f(drive + elu_offset) > 0, elementwise (f = ELU + 1 by default)."""
        return self.nonlinearity(drive + self.offset)

    def forward(
        self,
        images: torch.Tensor,
        data_key: str,
        pupil_center: torch.Tensor | None = None,
        detach_core: bool = False,
        **batch,
    ) -> torch.Tensor:
        """Predicted rates [B, N]; unknown batch fields (responses, behavior, trial_id, ...) are ignored."""
        return self.output_nonlinearity(self.readout_drive(images, data_key, pupil_center, detach_core))

    def regularizer(self, data_key: str, detach_core: bool = False) -> torch.Tensor:
        """Core + readout(data_key) + shifter(data_key) penalties (scalar tensor)."""
        core_reg = self.core.regularizer()
        reg = (core_reg.detach() if detach_core else core_reg) + self.readout.regularizer(data_key)
        if self.shifter is not None:
            reg = reg + self.shifter.regularizer(data_key)
        return reg
