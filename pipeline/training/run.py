"""One training run from its parts: recordings + dataset / model / trainer configs + seed.

Used by the ``TrainedModel`` table and by the benchmarks; nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.configs import BaselineModelConfig, DatasetConfig, TrainerConfig
from pipeline.data.loaders import ScanTensors, build_scan_tensors
from pipeline.data.recording import Recording
from pipeline.registry import resolve
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.trainer import EpochRecord, TrainResult, train


@dataclass(frozen=True)
class RunSpec:
    """What a run is made of: builder keys, their validated configs and the seed."""

    dataset_fn: str
    dataset_config: DatasetConfig
    model_fn: str
    model_config: BaselineModelConfig  # or its subclass ModulatedModelConfig
    trainer_fn: str
    trainer_config: TrainerConfig
    seed: int

    @classmethod
    def from_dicts(cls, dataset_fn, dataset_config, model_fn, model_config, trainer_fn, trainer_config, seed):
        return cls(
            dataset_fn,
            resolve("dataset", dataset_fn, dataset_config),
            model_fn,
            resolve("model", model_fn, model_config),
            trainer_fn,
            resolve("trainer", trainer_fn, trainer_config),
            int(seed),
        )


def build_scans(
    recordings: Mapping[str, Recording],
    cfg: DatasetConfig,
    device: torch.device,
    cache_dir: Path | None = None,
    regressors: Mapping[str, dict] | None = None,
) -> dict[str, ScanTensors]:
    """Tensors of every scan, in the order given, on ``device`` (with each scan's regressors, if given)."""
    regressors = regressors or {}
    return {
        k: build_scan_tensors(rec, cfg, cache_dir, regressors.get(k)).to(device)
        for k, rec in recordings.items()
    }


def build_model(spec: RunSpec, recordings: Mapping[str, Recording], scans: Mapping[str, ScanTensors]):
    """The model of ``spec`` for these scans, initialised from ``spec.seed`` (on the CPU)."""
    from pipeline.models.build import ScanGeometry, stacked_core_full_gauss_readout
    from pipeline.models.modulated import modulated_stacked_core_full_gauss_readout as modulated_builder

    builders = {
        "sensorium.models.stacked_core_full_gauss_readout": stacked_core_full_gauss_readout,
        "sensorium.models.modulated_stacked_core_full_gauss_readout": modulated_builder,
    }
    geometry = {
        k: ScanGeometry(
            n_neurons=rec.n_neurons,
            cortex_xy=np.asarray(rec.neurons["cell_motor_coordinates"], dtype=np.float64)[:, :2],
            n_trials=rec.n_trials,
        )
        for k, rec in recordings.items()
    }
    first = next(iter(scans.values()))
    return builders[spec.model_fn](
        spec.model_config,
        geometry,
        input_channels=first.input_channels,
        image_size=tuple(first.images.shape[-2:]),
        seed=spec.seed,
    )


def run_training(
    spec: RunSpec,
    recordings: Mapping[str, Recording],
    device: torch.device,
    *,
    cache_dir: Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
    regressors: Mapping[str, dict] | None = None,
    checkpoint: Checkpointer | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.nn.Module, dict[str, ScanTensors], TrainResult]:
    """Build tensors and model, train, and return (model with best weights, scan tensors, result).

    ``checkpoint`` and ``should_stop`` are passed to :func:`pipeline.training.trainer.train` (resume
    from / save after every epoch; stop between batches).
    """
    scans = build_scans(recordings, spec.dataset_config, device, cache_dir, regressors)
    model = build_model(spec, recordings, scans).to(device)
    result = train(
        model,
        scans,
        spec.trainer_config,
        batch_size=spec.dataset_config.batch_size,
        shuffle_seed=spec.dataset_config.shuffle_seed,
        seed=spec.seed,
        on_epoch=on_epoch,
        progress=progress,
        checkpoint=checkpoint,
        should_stop=should_stop,
    )
    return model, scans, result
