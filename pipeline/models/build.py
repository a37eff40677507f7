"""Builders of the full-Gaussian-readout models: the SENSORIUM baseline ``stacked_core_full_gauss_readout``
(``BaselineModelConfig``) and ``vit_core_full_gauss_readout`` (``ViTModelConfig``). Both are the model
of :func:`full_gauss_readout_model`: the config's core (``cfg.core()``), then the shared parts.

Construction order (core, then readouts in scan order, then shifters) and the initialisation calls follow
sensorium/neuralpredictors, so one seed fixes every initial parameter. The builder keys are looked up in
``pipeline.registry.MODELS`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.configs import (
    BaselineModelConfig,
    CoreConfig,
    ModelConfigBase,
    StackedCoreConfig,
    ViTConfig,
    ViTModelConfig,
)

from .bank_core import BankedCore
from .core import Stacked2dCore
from .encoder import Core, FiringRateEncoder
from .nonlinearity import output_nonlinearity
from .readout import MultipleFullGaussian2d
from .shifter import MLPShifter
from .vit import ViTCore


@dataclass(frozen=True)
class ScanGeometry:
    """What the model needs to know about one scan."""

    n_neurons: int
    cortex_xy: np.ndarray  # (N, 2) float, meta/neurons/cell_motor_coordinates[:, :2]
    n_trials: int | None = None  # trials of the scan, all tiers (the modulator's learned gain needs it)

    def __post_init__(self) -> None:
        xy = np.asarray(self.cortex_xy)
        if xy.ndim != 2 or xy.shape[0] != self.n_neurons:
            raise ValueError(f"cortex_xy must be ({self.n_neurons}, 2+), got {xy.shape}")
        if self.n_trials is not None and self.n_trials <= 0:
            raise ValueError(f"n_trials must be > 0 or None, got {self.n_trials}")


def core_output_shape(core: torch.nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(c, h, w) of ``core`` for one zero image of ``input_shape`` = (C, H, W), evaluated in eval mode.

    Runs on the device the core already lives on and restores its train/eval state.
    """
    was_training = core.training
    device = next(core.parameters()).device
    core.eval()
    try:
        with torch.no_grad():
            out = core(torch.zeros(1, *input_shape, device=device))
    finally:
        core.train(was_training)
    c, h, w = (int(s) for s in out.shape[1:])  # out is [1, c, h, w]
    return c, h, w


def stacked_core_full_gauss_readout(
    cfg: BaselineModelConfig,
    scans: Mapping[str, ScanGeometry],
    *,
    input_channels: int,
    image_size: tuple[int, int],
    seed: int,
) -> FiringRateEncoder:
    """The baseline model (``sensorium.models.stacked_core_full_gauss_readout``): see
    :func:`full_gauss_readout_model`. A legacy row with ``core_type: vit`` gets its ViT core; the
    modulated builders (``pipeline.models.modulated``) build their base model here, whatever its core."""
    return full_gauss_readout_model(
        cfg, scans, input_channels=input_channels, image_size=image_size, seed=seed
    )


def vit_core_full_gauss_readout(
    cfg: ViTModelConfig,
    scans: Mapping[str, ScanGeometry],
    *,
    input_channels: int,
    image_size: tuple[int, int],
    seed: int,
) -> FiringRateEncoder:
    """The ViT-core model (``sensorium.models.vit_core_full_gauss_readout``): see
    :func:`full_gauss_readout_model`."""
    if not isinstance(cfg, ViTModelConfig):
        raise TypeError(f"vit_core_full_gauss_readout takes a ViTModelConfig, not {type(cfg).__name__}")
    return full_gauss_readout_model(
        cfg, scans, input_channels=input_channels, image_size=image_size, seed=seed
    )


def full_gauss_readout_model(
    cfg: ModelConfigBase,
    scans: Mapping[str, ScanGeometry],
    *,
    input_channels: int,
    image_size: tuple[int, int],
    seed: int,
) -> FiringRateEncoder:
    """Build the model of ``cfg`` for ``scans`` (data_key -> geometry; order kept) on the CPU: its core
    (``cfg.core()``: the stacked CNN or a vision transformer), the full-Gaussian readouts and the shifters.

    Args:
        cfg: every hyperparameter.
        scans: one readout (and shifter) per entry.
        input_channels: image channels + behaviour channels given to the core.
        image_size: (H, W) of the input images.
        seed: seeds torch's global RNG before anything is created.
    """
    if not scans:
        raise ValueError("at least one scan is needed")
    if cfg.gauss_type != "full":
        raise ValueError(f"only gauss_type='full' is implemented, got {cfg.gauss_type!r}")
    torch.manual_seed(seed)

    core = build_core(cfg.core(), input_channels, image_size, gamma_input=cfg.gamma_input)
    in_shape = core_output_shape(core, (input_channels, *image_size))

    gmp = cfg.grid_mean_predictor
    source_grids = None
    if gmp is not None:
        source_grids = {}
        for key, geom in scans.items():
            xy = np.asarray(geom.cortex_xy, dtype=np.float64)
            if xy.shape[1] < gmp.input_dimensions:
                raise ValueError(f"scan {key}: cortex_xy has {xy.shape[1]} < {gmp.input_dimensions} columns")
            source_grids[key] = xy[:, : gmp.input_dimensions]

    readout = MultipleFullGaussian2d(
        in_shape_dict=dict.fromkeys(scans, in_shape),
        n_neurons_dict={key: geom.n_neurons for key, geom in scans.items()},
        source_grids=source_grids,
        bias=cfg.readout_bias,
        init_mu_range=cfg.init_mu_range,
        init_sigma=cfg.init_sigma,
        gamma_readout=cfg.gamma_readout,
        grid_mean_predictor=gmp,
    )

    shifter = None
    if cfg.shifter:
        shifter = MLPShifter(
            data_keys=list(scans),
            input_channels=cfg.input_channels_shifter,
            hidden_channels_shifter=cfg.hidden_channels_shifter,
            shift_layers=cfg.shift_layers,
            gamma_shifter=cfg.gamma_shifter,
            bias=cfg.shifter_bias,
        )

    return FiringRateEncoder(
        core, readout, shifter=shifter, elu_offset=cfg.elu_offset, nonlinearity=output_nonlinearity(cfg)
    )


def build_core(
    core: CoreConfig, input_channels: int, image_size: tuple[int, int], *, gamma_input: float
) -> Core:
    """The core ``core`` describes (a ``ViTConfig`` or a ``StackedCoreConfig``: the two ``kind``s); the
    image is channel 0, the loaders append the behaviour as constant channels after it
    (``pipeline.data.loaders``)."""
    if isinstance(core, ViTConfig):
        return ViTCore(
            core, input_channels, image_size, behavior_channels=input_channels - 1, gamma_input=gamma_input
        )
    stacked = _stacked_core(core, input_channels, gamma_input)
    if core.bank_pairs:
        return BankedCore(stacked, core.bank_pairs, momentum=core.momentum)
    return stacked


def _stacked_core(cfg: StackedCoreConfig, input_channels: int, gamma_input: float) -> Stacked2dCore:
    """The SENSORIUM+ CNN core of ``cfg``."""
    return Stacked2dCore(
        input_channels=input_channels,
        hidden_channels=cfg.hidden_channels,
        input_kern=cfg.input_kern,
        hidden_kern=cfg.hidden_kern,
        layers=cfg.layers,
        gamma_input=gamma_input,
        skip=cfg.skip,
        final_nonlinearity=cfg.final_nonlinearity,
        bias=cfg.core_bias,
        momentum=cfg.momentum,
        pad_input=cfg.pad_input,
        batch_norm=cfg.batch_norm,
        hidden_dilation=cfg.hidden_dilation,
        laplace_padding=cfg.laplace_padding,
        stack=cfg.stack,
        use_avg_reg=cfg.use_avg_reg,
        depth_separable=cfg.depth_separable,
        linear=cfg.linear,
        input_init=cfg.input_init,
        # the image is channel 0; the loaders append the behaviour as constant channels after it
        image_channels=1,
    )
