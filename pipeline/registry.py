"""Builder registries: the database stores these keys (``dataset_fn``, ``model_fn``, ``trainer_fn``).

One registry per kind maps a key to its :class:`Entry`: the typed config class, the builder and a
description. Nothing else looks builders up (``pipeline.run`` calls ``entry(...).build``). Keys
keep the dotted names nnfabrik users know from the competition's starter kit, but they are looked up
here, never imported dynamically: no import strings, no eval.

The builders import their modules when called, so that reading and validating experiment files (this
module) never imports torch.

Model keys: one per core kind (``pipeline.configs.CoreConfig``). Before the ViT had keys of its own, a
ViT was built under the stacked keys with ``core_type: vit``; such rows still validate and build the same
model under their old key, and :func:`current_form` gives their equivalent under the ViT keys
(``docs/config-evolution.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.configs import (
    BaselineModelConfig,
    ConfigError,
    DatasetConfig,
    FrozenConfig,
    ModulatedModelConfig,
    ModulatedViTModelConfig,
    TrainerConfig,
    ViTModelConfig,
    validate,
    vit_equivalent,
)

STATIC_LOADERS = "sensorium.datasets.static_loaders"
STACKED = "sensorium.models.stacked_core_full_gauss_readout"
MODULATED_STACKED = "sensorium.models.modulated_stacked_core_full_gauss_readout"
VIT = "sensorium.models.vit_core_full_gauss_readout"
MODULATED_VIT = "sensorium.models.modulated_vit_core_full_gauss_readout"
STANDARD_TRAINER = "sensorium.training.standard_trainer"


@dataclass(frozen=True)
class Entry:
    """A registered builder: its typed config class, the builder and a one-line description.

    ``build`` takes the validated config first: ``build_scan_tensors(recording, cfg, cache_dir,
    regressors)`` for datasets (one scan), ``(cfg, scans, *, input_channels, image_size, seed)`` for models,
    ``train(model, scans, cfg, ...)`` for trainers. ``vit_key``: for the old stacked keys, the key a legacy
    ``core_type: vit`` row of this one now belongs to.
    """

    config: type[FrozenConfig]
    build: Callable[..., Any]
    description: str
    vit_key: str | None = None


# the builders, imported when called (torch is heavy; pipeline.models and pipeline.training never
# import this module, so these imports make no cycle)


def _static_loaders(*args: Any, **kwargs: Any) -> Any:
    from pipeline.data.loaders import build_scan_tensors

    return build_scan_tensors(*args, **kwargs)


def _stacked(*args: Any, **kwargs: Any) -> Any:
    from pipeline.models.build import stacked_core_full_gauss_readout

    return stacked_core_full_gauss_readout(*args, **kwargs)


def _vit(*args: Any, **kwargs: Any) -> Any:
    from pipeline.models.build import vit_core_full_gauss_readout

    return vit_core_full_gauss_readout(*args, **kwargs)


def _modulated(*args: Any, **kwargs: Any) -> Any:
    # the base model of either core (pipeline.models.build.full_gauss_readout_model) plus the modulators
    from pipeline.models.modulated import modulated_stacked_core_full_gauss_readout

    return modulated_stacked_core_full_gauss_readout(*args, **kwargs)


def _standard_trainer(*args: Any, **kwargs: Any) -> Any:
    from pipeline.training.trainer import train

    return train(*args, **kwargs)


DATASETS: dict[str, Entry] = {
    STATIC_LOADERS: Entry(DatasetConfig, _static_loaders, "SENSORIUM static-image scans from the Scan table"),
}
MODELS: dict[str, Entry] = {
    STACKED: Entry(
        BaselineModelConfig,
        _stacked,
        "baseline: stacked 2-D core, full-Gaussian readout, MLP shifter (see docs/model.md#baseline)",
        vit_key=VIT,
    ),
    MODULATED_STACKED: Entry(
        ModulatedModelConfig,
        _modulated,
        "winner: the baseline + HistoryStateGain modulator (see docs/model.md#modulator)",
        vit_key=MODULATED_VIT,
    ),
    VIT: Entry(
        ViTModelConfig, _vit, "vision-transformer core, the baseline's full-Gaussian readout and shifter"
    ),
    MODULATED_VIT: Entry(
        ModulatedViTModelConfig, _modulated, "the ViT-core model + the winner's HistoryStateGain modulator"
    ),
}
TRAINERS: dict[str, Entry] = {
    STANDARD_TRAINER: Entry(
        TrainerConfig, _standard_trainer, "Poisson loss, Adam, early stopping (see docs/model.md#trainer)"
    ),
}
KINDS = {"dataset": DATASETS, "model": MODELS, "trainer": TRAINERS}


def entry(kind: str, fn: str) -> Entry:
    """The registered builder ``fn`` of ``kind`` (dataset | model | trainer).

    Raises:
        ConfigError: unknown builder (the message lists the registered ones).
    """
    registry = KINDS[kind]
    if fn not in registry:
        raise ConfigError(f"{kind}_fn: unknown builder {fn!r}; registered: {sorted(registry)}")
    return registry[fn]


def resolve(kind: str, fn: str, config: dict[str, Any], where: str | None = None) -> FrozenConfig:
    """Validate ``config`` for builder ``fn`` of ``kind`` (dataset | model | trainer).

    Raises:
        ConfigError: unknown builder, unknown key or wrong type (the message names it).
    """
    return validate(entry(kind, fn).config, config, where=where or f"{kind}_config")


def current_form(kind: str, fn: str, config: FrozenConfig) -> tuple[str, FrozenConfig]:
    """``(fn, config)`` as it is written today: a legacy ``core_type: vit`` model of an old stacked key
    becomes its equivalent under the ViT key (same model: ``vit_equivalent``, a new hash); anything
    else is returned as it is."""
    key = entry(kind, fn).vit_key
    if key is not None and isinstance(config, BaselineModelConfig) and config.core_type == "vit":
        return key, vit_equivalent(config)
    return fn, config
