"""Builder of the winning model ``modulated_stacked_core_full_gauss_readout`` (see docs/model.md#winner
and docs/model.md#modulator).

The baseline parts are built by ``stacked_core_full_gauss_readout`` itself, so a modulated model and a
baseline model built with the same seed and baseline hyperparameters start from identical core, readout and
shifter parameters. The modulators are created afterwards, in scan order, from the same (seeded) global
random stream, so the seed fixes them too.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.configs import ModulatedModelConfig

from .build import ScanGeometry, stacked_core_full_gauss_readout
from .modulator import HistoryStateGainModulator, ModulatedFiringRateEncoder


def modulated_stacked_core_full_gauss_readout(
    cfg: ModulatedModelConfig,
    scans: Mapping[str, ScanGeometry],
    *,
    input_channels: int,
    image_size: tuple[int, int],
    seed: int,
) -> ModulatedFiringRateEncoder:
    """Build the baseline model for ``scans`` plus one ``HistoryStateGain`` modulator per scan (CPU).

    Args:
        cfg: baseline hyperparameters + modulator settings.
        scans: data_key -> geometry (order kept); ``n_trials`` (all tiers) is required when the modulator
            has the learned gain.
        input_channels: image channels + behaviour channels given to the core.
        image_size: (H, W) of the input images.
        seed: seeds torch's global RNG before anything is created (as in the baseline builder).

    With ``cfg.with_modulator=False`` the model has no modulator and computes exactly the baseline output.
    """
    params = cfg.modulator_params
    if cfg.with_modulator:
        if cfg.modulator_type != "HistoryStateGain":
            raise ValueError(f"unknown modulator_type {cfg.modulator_type!r}")
        if params.include_gain:
            missing = [key for key, geom in scans.items() if geom.n_trials is None]
            if missing:
                raise ValueError(
                    "the modulator's learned gain needs ScanGeometry.n_trials (trials of the scan, all "
                    f"tiers) but it is None for scan(s) {missing}"
                )

    base = stacked_core_full_gauss_readout(
        cfg, scans, input_channels=input_channels, image_size=image_size, seed=seed
    )

    modulators = {}
    if cfg.with_modulator:
        # no reseeding: the global stream seeded by the baseline builder continues, so the modulators are
        # deterministic in ``seed`` and the baseline parts are untouched by their draws
        for key, geom in scans.items():
            modulators[key] = HistoryStateGainModulator(geom.n_neurons, geom.n_trials, params)

    return ModulatedFiringRateEncoder(
        base.core,
        base.readout,
        shifter=base.shifter,
        elu_offset=base.offset,
        modulator=modulators,
        nonlinearity=base.nonlinearity,
    )
