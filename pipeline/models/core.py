"""Convolutional core of the SENSORIUM baseline: ``Stacked2dCore`` (see docs/model.md#core).

Module and parameter names deliberately mirror neuralpredictors 0.3.0 (``features.layer0.conv``,
``features.layer<l>.ds_conv.spatial_conv``, ``features.layer<l>.norm``, and the persistent Laplace buffer
``_input_weights_regularizer.laplace.filter``) so that a starter-kit ``state_dict`` loads without renaming.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .gabor import gabor_init_

# 3x3 discrete Laplacian used by the smoothness regulariser of the input filters.
_LAPLACE_3X3 = ((0.0, -1.0, 0.0), (-1.0, 4.0, -1.0), (0.0, -1.0, 0.0))


class Laplace(nn.Module):
    """Convolves a stack of single-channel maps with the 3x3 Laplacian.

    The kernel is a *persistent* buffer called ``filter`` because neuralpredictors stores it in the
    state_dict; keeping it persistent is what makes starter-kit checkpoints load with ``strict=True``.
    """

    filter: torch.Tensor  # the registered buffer

    def __init__(self, padding: int | None = None) -> None:
        super().__init__()
        self.register_buffer("filter", torch.tensor(_LAPLACE_3X3, dtype=torch.float32)[None, None])
        # None means "half the Laplace kernel", i.e. 1: no artefacts at the filter border.
        self.padding_size = self.filter.shape[-1] // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [M, 1, k, k] -> [M, 1, k', k'] (k' = k when padding is 1)."""
        return F.conv2d(x, self.filter.to(x.dtype), padding=self.padding_size)


class LaplaceL2norm(nn.Module):
    """Normalised Laplace penalty ``agg((L * w)^2) / agg(w^2)`` of a conv weight, agg = sum or mean."""

    def __init__(self, padding: int | None = None) -> None:
        super().__init__()
        self.laplace = Laplace(padding=padding)

    def forward(self, weight: torch.Tensor, avg: bool = False) -> torch.Tensor:
        """weight: [out, in, k1, k2] -> scalar. Every (out, in) filter is treated as one 2d image."""
        agg = torch.mean if avg else torch.sum
        flat = weight.reshape(-1, 1, *weight.shape[-2:])
        return agg(self.laplace(flat).pow(2)) / agg(flat.pow(2))


class DepthSeparableConv2d(nn.Sequential):
    """1x1 conv -> depthwise k x k conv -> 1x1 conv; child names as in neuralpredictors."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.add_module("in_depth_conv", nn.Conv2d(in_channels, out_channels, 1, bias=bias))
        self.add_module(
            "spatial_conv",
            nn.Conv2d(
                out_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=bias,
                groups=out_channels,
            ),
        )
        self.add_module("out_depth_conv", nn.Conv2d(out_channels, out_channels, 1, bias=bias))


class Stacked2dCore(nn.Module):
    """Stack of conv -> BatchNorm -> ELU layers shared by all scans.

    Layer 0 is a plain ``input_kern`` conv (no padding unless ``pad_input``); layers 1.. are depth-separable
    (or plain) ``hidden_kern`` convs padded to keep the size for odd kernels. The output concatenates, along
    channels, the layers selected by ``stack`` (-1: last layer only; None: all layers). ``linear=True``
    drops every ELU (neuralpredictors' ``linear`` flag: the core of the starter kit's LN model).
    ``input_init="gabor"`` starts the layer-0 filters of the first ``image_channels`` inputs as a Gabor
    bank (the default "xavier" is neuralpredictors').

    Shapes: forward [B, input_channels, H, W] -> [B, len(stack) * hidden_channels, H', W'].
    """

    def __init__(
        self,
        input_channels: int,
        hidden_channels: int,
        input_kern: int,
        hidden_kern: int,
        layers: int = 3,
        gamma_hidden: float = 0.0,
        gamma_input: float = 0.0,
        skip: int = 0,
        final_nonlinearity: bool = True,
        bias: bool = False,
        momentum: float = 0.1,
        pad_input: bool = True,
        batch_norm: bool = True,
        hidden_dilation: int = 1,
        laplace_padding: int | None = None,
        stack: int | None = None,
        use_avg_reg: bool = False,
        depth_separable: bool = False,
        linear: bool = False,
        input_init: str = "xavier",
        image_channels: int = 1,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if stack is not None and not isinstance(stack, int):
            raise ValueError(f"stack must be an int (layers[stack:]) or None (all layers), got {stack!r}")
        # Registered first, as in neuralpredictors, so the state_dict lists the Laplace buffer first.
        self._input_weights_regularizer = LaplaceL2norm(padding=laplace_padding)
        self.num_layers = layers
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.gamma_input = gamma_input
        self.gamma_hidden = gamma_hidden
        self.skip = skip
        self.use_avg_reg = use_avg_reg
        self.final_nonlinearity = final_nonlinearity
        self.linear = linear
        self.batch_norm = batch_norm
        self.momentum = momentum
        self.bias = bias
        self.depth_separable = depth_separable
        if input_init not in ("xavier", "gabor"):
            raise ValueError(f"input_init must be 'xavier' or 'gabor', got {input_init!r}")
        self.input_init = input_init
        self.image_channels = image_channels
        self.stack = list(range(layers)) if stack is None else list(range(layers)[stack:])
        if not self.stack:
            raise ValueError(f"stack={stack} selects no layer of a {layers}-layer core")

        self.features = nn.Sequential()
        # With batch norm the conv bias is redundant (BN's own affine shift replaces it), as in NP.
        first: OrderedDict[str, nn.Module] = OrderedDict()
        first["conv"] = nn.Conv2d(
            input_channels,
            hidden_channels,
            input_kern,
            padding=input_kern // 2 if pad_input else 0,
            bias=bias and not batch_norm,
        )
        self._add_norm_and_nonlin(first, layer_index=0)
        self.features.add_module("layer0", nn.Sequential(first))

        # NP computes one padding for all hidden layers: floor(((k - 1) * d + 1) / 2). For even kernels
        # this over-pads by one, so every hidden layer grows the map by one pixel (e.g. k=10).
        hidden_padding = ((hidden_kern - 1) * hidden_dilation + 1) // 2
        conv_name = "ds_conv" if depth_separable else "conv"
        for index in range(1, layers):
            layer: OrderedDict[str, nn.Module] = OrderedDict()
            in_ch = hidden_channels * (min(skip, index) if skip > 1 else 1)
            # NP hands the core bias flag to the hidden convs unchanged (even with batch norm).
            if depth_separable:
                layer[conv_name] = DepthSeparableConv2d(
                    in_ch,
                    hidden_channels,
                    hidden_kern,
                    stride=1,
                    padding=hidden_padding,
                    dilation=hidden_dilation,
                    bias=bias,
                )
            else:
                layer[conv_name] = nn.Conv2d(
                    in_ch,
                    hidden_channels,
                    hidden_kern,
                    stride=1,
                    padding=hidden_padding,
                    dilation=hidden_dilation,
                    bias=bias,
                )
            self._add_norm_and_nonlin(layer, layer_index=index)
            self.features.add_module(f"layer{index}", nn.Sequential(layer))

        # where cell (0, 0) of the output map sits in input pixels (stride 1): half the kernel a valid
        # input conv eats, minus the half pixel each over-padded even hidden kernel adds in front
        input_shift = (input_kern - 1) / 2 - (input_kern // 2 if pad_input else 0)
        hidden_shift = (hidden_kern - 1) * hidden_dilation / 2 - hidden_padding
        self._map_origin = input_shift + hidden_shift * self.stack[-1]

        self.initialize()

    def map_geometry(self) -> tuple[float, float]:
        """(origin, stride): output cell i's centre lies at input pixel ``origin + stride * i`` (both axes;
        the map of the last stacked layer, which the stacked maps share whenever they can be stacked)."""
        return self._map_origin, 1.0

    def _add_norm_and_nonlin(self, layer: OrderedDict[str, nn.Module], layer_index: int) -> None:
        if self.batch_norm:
            # Affine BN named "norm" (NP's independent_bn_bias=True branch, the one sensorium uses).
            layer["norm"] = nn.BatchNorm2d(self.hidden_channels, momentum=self.momentum)
        if not self.linear and (layer_index < self.num_layers - 1 or self.final_nonlinearity):
            layer["nonlin"] = nn.ELU(inplace=True)

    def initialize(self) -> None:
        """Xavier-normal conv weights and zero conv biases (the NP core initialisation); with
        ``input_init="gabor"`` the layer-0 image filters then become a Gabor bank (same scale)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.input_init == "gabor":
            gabor_init_(self._conv(0).weight, image_channels=self.image_channels)

    def _conv(self, index: int) -> nn.Conv2d:
        """The plain conv of layer ``index`` (layer 0's always; a hidden layer's unless depth-separable)."""
        conv = self.features[index].conv
        assert isinstance(conv, nn.Conv2d), f"layer {index} has no plain conv"
        return conv

    @property
    def outchannels(self) -> int:
        """Channels of the core output."""
        return len(self.stack) * self.hidden_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, len(stack) * hidden_channels, H', W']."""
        outputs: list[torch.Tensor] = []
        for index, layer in enumerate(self.features):
            if index >= 1 and self.skip > 1:
                x = torch.cat(outputs[-min(self.skip, index) :], dim=1)
            x = layer(x)
            outputs.append(x)
        if len(self.stack) == 1:
            return outputs[self.stack[0]]
        return torch.cat([outputs[i] for i in self.stack], dim=1)

    def laplace(self) -> torch.Tensor:
        """Normalised Laplace smoothness penalty of the layer-0 filters (scalar)."""
        return self._input_weights_regularizer(self._conv(0).weight, avg=self.use_avg_reg)

    def group_sparsity(self) -> torch.Tensor | float:
        """Mean L2 norm of hidden conv filters; 0 for depth-separable convs (NP ignores it there)."""
        if self.depth_separable or self.num_layers < 2:
            return 0.0
        total: torch.Tensor | float = 0.0
        for index in range(1, self.num_layers):  # the hidden layers, features[1:]
            total = total + self._conv(index).weight.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().mean()
        return total / (self.num_layers - 1)

    def regularizer(self) -> torch.Tensor:
        """gamma_hidden * group sparsity + gamma_input * Laplace penalty (scalar tensor)."""
        reg = self.gamma_input * self.laplace()
        if self.gamma_hidden:
            reg = reg + self.gamma_hidden * self.group_sparsity()
        return reg
