"""The SENSORIUM 2022 baseline model, with neuralpredictors-0.3.0-compatible parameter names."""

from .build import ScanGeometry, core_output_shape, stacked_core_full_gauss_readout
from .core import DepthSeparableConv2d, Laplace, LaplaceL2norm, Stacked2dCore
from .encoder import FiringRateEncoder
from .readout import FullGaussian2d, MultipleFullGaussian2d, grid_mean_mlp, normalize_source_grid
from .shifter import MLPShifter, ShiftMLP

__all__ = [
    "DepthSeparableConv2d",
    "FiringRateEncoder",
    "FullGaussian2d",
    "Laplace",
    "LaplaceL2norm",
    "MLPShifter",
    "MultipleFullGaussian2d",
    "ScanGeometry",
    "ShiftMLP",
    "Stacked2dCore",
    "core_output_shape",
    "grid_mean_mlp",
    "normalize_source_grid",
    "stacked_core_full_gauss_readout",
]
