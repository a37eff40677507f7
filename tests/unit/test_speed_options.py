"""The trainer's throughput options (bf16 autocast, channels_last, fused Adam, compile): recorded in the
config without changing stored hashes, real training with each one on the CPU, same parameters."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from pipeline.configs import (
    BaselineModelConfig,
    DatasetConfig,
    TrainerConfig,
    canonical_json,
    config_hash,
    hash_neutral_fields,
)
from pipeline.data.synth import SynthConfig, synthesize
from pipeline.run import RunSpec, build_model, build_scans
from pipeline.training.trainer import train

RECS = {}
for mouse in range(2):
    rec, _ = synthesize(SynthConfig(n_neurons=12, n_trials=160, seed=9), mouse)
    RECS[rec.data_key] = rec
MODEL = BaselineModelConfig(layers=2, hidden_channels=4, input_kern=5, hidden_kern=3)
OPTIONS = {"autocast": "bf16", "channels_last": True, "fused_adam": True, "compile_core": True}


def _train(**options):
    cfg = TrainerConfig(max_iter=3, patience=2, lr_decay_steps=1, **options)
    spec = RunSpec(
        "sensorium.datasets.static_loaders",
        DatasetConfig(batch_size=32),
        "sensorium.models.stacked_core_full_gauss_readout",
        MODEL,
        "sensorium.training.standard_trainer",
        cfg,
        5,
    )
    scans = build_scans(RECS, spec.dataset_config, torch.device("cpu"))
    model = build_model(spec, RECS, scans)
    result = train(model, scans, cfg, batch_size=32, shuffle_seed=1, seed=5, progress=False)
    return model, result


def test_options_off_keep_every_stored_hash():
    plain = TrainerConfig(max_iter=20)
    assert not any(name in canonical_json(plain) for name in OPTIONS)
    # the stored form of the baseline trainer before the options existed
    assert config_hash("sensorium.training.standard_trainer", plain) == config_hash(
        "sensorium.training.standard_trainer", json_of(plain)
    )
    for name, value in OPTIONS.items():
        on = TrainerConfig(max_iter=20, **{name: value})
        assert name in canonical_json(on)
        assert config_hash("t", on) != config_hash("t", plain), name


def json_of(cfg: TrainerConfig) -> dict:
    data = cfg.model_dump(mode="json")
    for name in hash_neutral_fields(TrainerConfig):  # every field added after trainers were first stored
        data.pop(name)
    return data


def test_unknown_autocast_value_is_refused():
    with pytest.raises(ValueError, match="autocast"):
        TrainerConfig(autocast="fp8")


@pytest.fixture(scope="module")
def reference():
    return _train()


@pytest.mark.parametrize("name", ["autocast", "channels_last", "fused_adam"])
def test_each_option_trains_the_same_model(reference, name):
    ref_model, ref = reference
    model, result = _train(**{name: OPTIONS[name]})
    assert result.epochs == ref.epochs
    assert result.state_dict.keys() == ref.state_dict.keys()
    for h in result.history:
        assert np.isfinite(h.train_loss) and np.isfinite(h.val_corr)
    if name == "channels_last":  # a memory layout only: the same numbers up to summation order
        assert result.best_val_corr == pytest.approx(ref.best_val_corr, abs=1e-4)
        assert model.core.features[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    else:  # same training, a different rounding: close, not equal
        assert result.best_val_corr == pytest.approx(ref.best_val_corr, abs=0.05)


@pytest.mark.slow  # more than 10 s measured here (2 cores, shared)
def test_compile_core_trains_and_keeps_state_dict_names(reference):
    _, ref = reference
    model, result = _train(compile_core=True)
    assert list(result.state_dict) == list(ref.state_dict)  # no `_orig_mod.` prefixes: checkpoints load
    assert result.best_val_corr == pytest.approx(ref.best_val_corr, abs=1e-3)
    fresh, _ = _train()
    fresh.load_state_dict(result.state_dict)


@pytest.mark.slow  # more than 10 s measured here (2 cores, shared)
def test_channels_last_is_bit_reproducible():
    """The demo presets train channels_last on the CPU: same config + seed must give the same bits."""
    _, a = _train(channels_last=True)
    _, b = _train(channels_last=True)
    assert [h.val_corr for h in a.history] == [h.val_corr for h in b.history]
    for k, v in a.state_dict.items():
        assert torch.equal(v, b.state_dict[k]), k


def test_device_validation_correlation_equals_the_scoring_code():
    """The accelerator path of validation_correlation (reduced on the device, used on CUDA) computes the
    same number as the CPU path through pipeline.scoring; run here on CPU tensors so it is checked
    without a GPU."""
    from pipeline.training.trainer import _device_validation_correlation, validation_correlation

    model, _ = _train()
    scans = build_scans(RECS, DatasetConfig(batch_size=32), torch.device("cpu"))
    for tier in ("validation", "train"):
        expected = validation_correlation(model, scans, tier)
        got = _device_validation_correlation(model, scans, tier, contextlib.nullcontext)
        assert np.isfinite(expected) and abs(expected) > 1e-3
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), tier
    assert model.training, "the model is back in training mode"
