"""A vision-transformer core (the ``*_vit_core_*`` builder keys), an alternative to the stacked CNN.

In the spirit of V1T (Li et al., TMLR 2023): the image is cut into (possibly overlapping) patches by a
strided convolution, a learned position embedding is added, and a few pre-norm transformer blocks
(torch's ``TransformerEncoderLayer``) mix the tokens. The behaviour reaches every block: an MLP per
block maps the trial's behaviour to a vector added to all tokens before that block. The tokens are then
laid out again as a feature map [B, dim, h', w'], so the same Gaussian readout, shifter and modulator
read it as they read the CNN's.

An optional convolutional stem (``stem_channels`` > 0: conv -> BatchNorm -> ELU at full resolution, its
filters optionally starting as a Gabor bank) sits before the patches; the patches then read its maps.

Two options reach beyond V1T: ``local_kernel`` adds, before every block, a depthwise convolution of
the tokens laid out on their grid (a position signal from the neighbourhood and local linear mixing,
the "positional encoding generator" of CPVT, Chu et al. 2023); ``readout_blocks: all`` hands the
readout every block's output, not only the last, so it can also read the earlier, more linear features.

``pixel_channels`` > 0 adds a pathway the tokens lack: a bank of linear filters applied at full
resolution (Gabor-initialised, trainable, batch-normed, no nonlinearity), optionally with the energy of
each filter pair. The tokens sit 3-4 pixels apart, about half the wavelength of a V1 receptive field at
this scale, so a neuron whose response follows the phase of a grating (a simple cell) is read from
interpolated tokens with a blurred phase; the linear bank gives the readout one-pixel precision. The
tokens are then resampled to full resolution (bilinear, at each pixel's true position on the token
grid) and the readout reads both at the same point.

Behaviour comes in the way the loaders already deliver it to the CNN: as constant image channels after
the image (``include_behavior``), so the core needs no new input; it takes their spatial mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.configs import ViTConfig

from .core import LaplaceL2norm
from .gabor import gabor_init_


class ViTCore(nn.Module):
    """images [B, C, H, W] (C = image channels + behaviour channels) -> features [B, outchannels, h', w']
    on the token grid, or [B, outchannels, H, W] at full resolution with the pixel pathway."""

    token_grid: torch.Tensor  # a buffer, registered with the pixel pathway

    def __init__(
        self,
        cfg: ViTConfig,
        input_channels: int,
        image_size: tuple[int, int],
        behavior_channels: int,
        gamma_input: float = 0.0,
    ) -> None:
        super().__init__()
        if behavior_channels >= input_channels:
            raise ValueError(
                f"{behavior_channels} behaviour channels leave no image channel of {input_channels}"
            )
        self.image_channels = input_channels - behavior_channels
        self.behavior_channels = behavior_channels if cfg.behavior_injection else 0
        self.gamma_input = gamma_input
        self.stem: nn.Sequential | None = None
        patch_in = self.image_channels
        input_size = (image_size[0], image_size[1])
        # where token (0, 0)'s centre lies in input pixels: an even stem kernel shifts its map by half a pixel
        first_centre = (cfg.patch_size - 1) / 2
        if cfg.stem_channels:
            first_centre += (cfg.stem_kernel - 1) / 2 - cfg.stem_kernel // 2
            conv = _image_filters(self.image_channels, cfg.stem_channels, cfg.stem_kernel)
            nn.init.xavier_normal_(conv.weight)
            if cfg.stem_init == "gabor":
                gabor_init_(conv.weight, image_channels=self.image_channels)
            # odd kernels keep the size; an even one grows it by one pixel (the grid below follows)
            self.stem = nn.Sequential(conv, nn.BatchNorm2d(cfg.stem_channels), nn.ELU())
            patch_in = cfg.stem_channels
            image_size = (
                image_size[0] + 2 * (cfg.stem_kernel // 2) - cfg.stem_kernel + 1,
                image_size[1] + 2 * (cfg.stem_kernel // 2) - cfg.stem_kernel + 1,
            )
        self.patch = nn.Conv2d(
            patch_in, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_stride, bias=True
        )
        h, w = image_size
        self.grid = (
            (h - cfg.patch_size) // cfg.patch_stride + 1,
            (w - cfg.patch_size) // cfg.patch_stride + 1,
        )
        if min(self.grid) < 1:
            raise ValueError(f"patch_size {cfg.patch_size} does not fit images of {image_size}")
        # token i's centre in input pixels is first_centre + patch_stride * i (both axes)
        self._token_geometry = (first_centre, float(cfg.patch_stride))
        self.position = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], cfg.dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                cfg.dim,
                cfg.heads,
                dim_feedforward=cfg.dim * cfg.mlp_ratio,
                dropout=cfg.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.layers)
        )
        self.behavior = nn.ModuleList(
            nn.Sequential(nn.Linear(self.behavior_channels, cfg.dim), nn.Tanh(), nn.Linear(cfg.dim, cfg.dim))
            for _ in range(cfg.layers if self.behavior_channels else 0)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self._laplace = LaplaceL2norm()
        self.dim = cfg.dim
        # created after everything above, so that with these options off (or on) the modules above draw
        # the same initial weights from the seeded RNG
        self.local = nn.ModuleList(
            nn.Conv2d(cfg.dim, cfg.dim, cfg.local_kernel, padding=cfg.local_kernel // 2, groups=cfg.dim)
            for _ in range(cfg.layers if cfg.local_kernel else 0)
        )
        self.read_all = cfg.readout_blocks == "all"
        # one LayerNorm per earlier block (the last block keeps ``self.norm``)
        self.block_norms = nn.ModuleList(
            nn.LayerNorm(cfg.dim) for _ in range(cfg.layers - 1 if self.read_all else 0)
        )
        self.pixel: nn.Sequential | None = None
        self.pixel_energy = cfg.pixel_energy
        self.pixel_channels = cfg.pixel_channels + (cfg.pixel_channels // 2 if cfg.pixel_energy else 0)
        if cfg.pixel_channels:
            conv = _image_filters(self.image_channels, cfg.pixel_channels, cfg.pixel_kernel)
            # quadrature pairs (2j, 2j + 1) at several orientations and frequencies: the energy option
            # pairs the same channels, so it starts as a phase-invariant (complex-cell) response
            gabor_init_(conv.weight, image_channels=self.image_channels)
            # batch norm is affine at prediction time, so the pathway stays linear in the image
            self.pixel = nn.Sequential(conv, nn.BatchNorm2d(cfg.pixel_channels))
            self.register_buffer(
                "token_grid",
                token_sampling_grid(input_size, self.grid, first_centre, cfg.patch_stride),
                persistent=False,
            )

    def map_geometry(self) -> tuple[float, float]:
        """(origin, stride): output cell i's centre lies at input pixel ``origin + stride * i`` (both axes):
        the tokens', or the image's own pixels with the pixel pathway."""
        return (0.0, 1.0) if self.pixel is not None else self._token_geometry

    @property
    def outchannels(self) -> int:
        return self.dim * (len(self.blocks) if self.read_all else 1) + self.pixel_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, outchannels, h', w'] with (h', w') = ``self.grid``; outchannels is dim,
        or dim x layers with ``readout_blocks: all`` (block 1's features first).

        With the pixel pathway the map is [B, outchannels, H, W] instead: the token features resampled
        to full resolution, then the linear filters' outputs, then (``pixel_energy``) their pair energies.
        """
        tokens = self._token_features(x)
        if self.pixel is None:
            return tokens
        image = x[:, : self.image_channels]
        linear = self.pixel(image)  # [B, P, H, W]
        grid = self.token_grid.to(tokens.dtype).expand(x.shape[0], -1, -1, -1)
        parts = [F.grid_sample(tokens, grid, align_corners=True, padding_mode="border"), linear]
        if self.pixel_energy:
            # taken after the batch norm, whose learned shift makes the pair's energy phase-invariant
            # only at the start; the small constant keeps the gradient finite where both outputs are zero
            parts.append((linear[:, 0::2].pow(2) + linear[:, 1::2].pow(2) + 1e-6).sqrt())
        return torch.cat(parts, dim=1)

    def _token_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> the transformer's features [B, dim (x layers), h', w']."""
        image = x[:, : self.image_channels]
        if self.stem is not None:
            image = self.stem(image)  # [B, stem_channels, H, W]
        tokens = self.patch(image).flatten(2).transpose(1, 2) + self.position  # [B, h'w', dim]
        behavior = x[:, self.image_channels : self.image_channels + self.behavior_channels].mean(dim=(2, 3))
        outputs = []
        for i, block in enumerate(self.blocks):
            if self.local:
                tokens = tokens + self.local[i](self._to_map(tokens)).flatten(2).transpose(1, 2)
            if self.behavior_channels:
                tokens = tokens + self.behavior[i](behavior)[:, None, :]
            tokens = block(tokens)
            if i < len(self.block_norms):
                outputs.append(self.block_norms[i](tokens))
        outputs.append(self.norm(tokens))
        return self._to_map(torch.cat(outputs, dim=2))

    def _to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, h'w', D] -> [B, D, h', w']."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)

    def regularizer(self) -> torch.Tensor:
        """Laplace smoothness of the first filters the image meets (the stem's, else the patches'; and the
        pixel pathway's), weighted by ``gamma_input`` (as the CNN's first layer)."""
        first = _opening_conv(self.stem).weight if self.stem is not None else self.patch.weight
        filters = [first] + ([_opening_conv(self.pixel).weight] if self.pixel is not None else [])
        penalty = first.new_zeros(())
        if self.gamma_input == 0:
            return penalty
        for weight in filters:
            if min(weight.shape[-2:]) >= 3:
                penalty = penalty + self.gamma_input * self._laplace(weight)
        return penalty


def _opening_conv(pathway: nn.Sequential) -> nn.Conv2d:
    """The conv of :func:`_image_filters` that opens the stem or the pixel pathway."""
    conv = pathway[0]
    assert isinstance(conv, nn.Conv2d)
    return conv


def _image_filters(image_channels: int, filters: int, kernel: int) -> nn.Conv2d:
    """A bias-free bank of ``filters`` kernel x kernel filters of the image, padded to keep its size
    (odd kernels; an even one grows the map by a pixel)."""
    return nn.Conv2d(image_channels, filters, kernel, padding=kernel // 2, bias=False)


def token_sampling_grid(
    image_size: tuple[int, int], grid: tuple[int, int], first_centre: float, stride: int
) -> torch.Tensor:
    """Where each input pixel lies on the token map, as a ``grid_sample`` grid [1, H, W, 2] (x, y).

    Token i's centre is at input pixel ``first_centre + stride * i`` along each axis; with
    ``align_corners=True`` the normalised coordinate -1 is token 0's centre and +1 the last token's.
    Pixels beyond the outer tokens' centres fall outside [-1, 1] (read with border padding).
    """

    def axis(pixels: int, tokens: int) -> torch.Tensor:
        position = (torch.arange(pixels, dtype=torch.float64) - first_centre) / stride  # in tokens
        return 2 * position / max(tokens - 1, 1) - 1

    ys, xs = axis(image_size[0], grid[0]), axis(image_size[1], grid[1])
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1)[None].float()
