"""The SENSORIUM 2022 baseline model, with neuralpredictors-0.3.0-compatible parameter names."""

from .build import ScanGeometry, core_output_shape, stacked_core_full_gauss_readout
from .core import DepthSeparableConv2d, Laplace, LaplaceL2norm, Stacked2dCore
from .encoder import FiringRateEncoder
from .modulated import modulated_stacked_core_full_gauss_readout
from .modulator import HistoryStateGainModulator, ModulatedFiringRateEncoder, causal_gaussian_kernel
from .readout import FullGaussian2d, MultipleFullGaussian2d, grid_mean_mlp, normalize_source_grid
from .shifter import MLPShifter, ShiftMLP

__all__ = [
    "DepthSeparableConv2d",
    "FiringRateEncoder",
    "FullGaussian2d",
    "HistoryStateGainModulator",
    "Laplace",
    "LaplaceL2norm",
    "MLPShifter",
    "ModulatedFiringRateEncoder",
    "MultipleFullGaussian2d",
    "ScanGeometry",
    "ShiftMLP",
    "Stacked2dCore",
    "causal_gaussian_kernel",
    "core_output_shape",
    "grid_mean_mlp",
    "modulated_stacked_core_full_gauss_readout",
    "normalize_source_grid",
    "stacked_core_full_gauss_readout",
]
