"""Eye-position shifter: pupil centre -> shift of all readout positions of an image
(see docs/model.md#shifter).

Names follow neuralpredictors 0.3.0 ``MLPShifter``: a ``ModuleDict`` keyed by data_key whose entries hold
their layers in a ``Sequential`` called ``mlp`` (Linear at even indices, Tanh at odd ones), giving keys
``shifter.<data_key>.mlp.0.weight`` ... ``shifter.<data_key>.mlp.<2 * (shift_layers - 1)>.bias``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class ShiftMLP(nn.Module):
    """Tanh MLP [B, input_features] -> [B, 2] with ``shift_layers`` Linear layers.

    With shift_layers = 3 and hidden_channels = 5: Linear(2, 5), Tanh, Linear(5, 5), Tanh, Linear(5, 2),
    Tanh. The final Tanh bounds the shift to the readout's [-1, 1] coordinate range. PyTorch's default
    Linear initialisation is kept (NP's xavier re-initialisation never matches any module, so it is a no-op).
    """

    def __init__(
        self, input_features: int = 2, hidden_channels: int = 10, shift_layers: int = 1, bias: bool = True
    ) -> None:
        super().__init__()
        if shift_layers < 1:
            raise ValueError(f"shift_layers must be >= 1, got {shift_layers}")
        layers: list[nn.Module] = []
        width = input_features
        for _ in range(shift_layers - 1):
            layers += [nn.Linear(width, hidden_channels, bias=bias), nn.Tanh()]
            width = hidden_channels
        layers += [nn.Linear(width, 2, bias=bias), nn.Tanh()]
        self.mlp = nn.Sequential(*layers)

    def forward(self, pupil_center: torch.Tensor) -> torch.Tensor:
        """pupil_center: [B, input_features] -> shift [B, 2]."""
        expected = self.mlp[0].in_features
        if pupil_center.ndim != 2 or pupil_center.shape[1] != expected:
            raise ValueError(f"shifter expects input [B, {expected}], got {tuple(pupil_center.shape)}")
        return self.mlp(pupil_center)

    def regularizer(self) -> float:
        """NP's MLP shifter has no penalty of its own."""
        return 0.0


class MLPShifter(nn.ModuleDict):
    """One ``ShiftMLP`` per data_key.

    ``bias`` is our extension: NP's MLP always has biases (sensorium's ``shifter_bias`` only reaches the
    StaticAffine shifter); with the default True the parameters and names are NP's.
    """

    def __init__(
        self,
        data_keys: Iterable[str],
        input_channels: int = 2,
        hidden_channels_shifter: int = 2,
        shift_layers: int = 1,
        gamma_shifter: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.gamma_shifter = gamma_shifter
        for key in data_keys:
            self.add_module(key, ShiftMLP(input_channels, hidden_channels_shifter, shift_layers, bias=bias))

    def __getitem__(self, data_key: str) -> ShiftMLP:
        """The MLP of scan ``data_key`` (``__init__`` adds nothing but ``ShiftMLP``s)."""
        mlp = super().__getitem__(data_key)
        assert isinstance(mlp, ShiftMLP)
        return mlp

    def forward(self, pupil_center: torch.Tensor, data_key: str) -> torch.Tensor:
        """pupil_center: [B, 2] (z-scored) -> shift [B, 2] for the scan ``data_key``."""
        return self[data_key](pupil_center)

    def regularizer(self, data_key: str) -> float:
        """gamma_shifter * the MLP's own penalty (0 for this shifter)."""
        return self.gamma_shifter * self[data_key].regularizer()
