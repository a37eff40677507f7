"""Builder registries: the database stores these keys (``dataset_fn``, ``model_fn``, ``trainer_fn``).

Keys keep the dotted names nnfabrik users know from the competition's starter kit, but they are looked
up here, never imported dynamically: no import strings, no eval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.configs import (
    BaselineModelConfig,
    ConfigError,
    DatasetConfig,
    FrozenConfig,
    ModulatedModelConfig,
    TrainerConfig,
    validate,
)


@dataclass(frozen=True)
class Entry:
    """A registered builder: its typed config class and a one-line description."""

    config: type[FrozenConfig]
    description: str


DATASETS: dict[str, Entry] = {
    "sensorium.datasets.static_loaders": Entry(
        DatasetConfig, "SENSORIUM static-image scans from the Scan table"
    ),
}
MODELS: dict[str, Entry] = {
    "sensorium.models.stacked_core_full_gauss_readout": Entry(
        BaselineModelConfig, "baseline: stacked 2-D core, full-Gaussian readout, MLP shifter (SPEC 2)"
    ),
    "sensorium.models.modulated_stacked_core_full_gauss_readout": Entry(
        ModulatedModelConfig, "winner: the baseline + HistoryStateGain modulator (SPEC 3e-3f)"
    ),
}
TRAINERS: dict[str, Entry] = {
    "sensorium.training.standard_trainer": Entry(
        TrainerConfig, "Poisson loss, Adam, early stopping (SPEC 2.6)"
    ),
}
KINDS = {"dataset": DATASETS, "model": MODELS, "trainer": TRAINERS}


def resolve(kind: str, fn: str, config: dict[str, Any], where: str | None = None) -> FrozenConfig:
    """Validate ``config`` for builder ``fn`` of ``kind`` (dataset | model | trainer).

    Raises:
        ConfigError: unknown builder, unknown key or wrong type (the message names it).
    """
    registry = KINDS[kind]
    if fn not in registry:
        raise ConfigError(f"{kind}_fn: unknown builder {fn!r}; registered: {sorted(registry)}")
    return validate(registry[fn].config, config, where=where or f"{kind}_config")
