"""Safe configuration evolution (issue 28, ``docs/config-evolution.md``).

* the full form is stored, the reduced form hashed: a config re-validated from its stored form is the
  same config with the same hash;
* one registry per kind gives a key's config class and builder;
* the ViT core has its own keys (no CNN field in its hash), and rows stored under the old stacked keys
  with ``core_type: vit`` still validate, keep their hash and build the same ViT model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from pipeline import registry
from pipeline.configs import (
    BaselineModelConfig,
    ConfigError,
    ModelConfigBase,
    ModulatedModelConfig,
    ModulatedViTModelConfig,
    StackedCoreConfig,
    ViTConfig,
    ViTModelConfig,
    canonical_json,
    config_hash,
    hash_neutral_fields,
    stored_form,
    vit_equivalent,
)
from pipeline.experiments import load_experiment
from pipeline.models.build import ScanGeometry
from pipeline.models.vit import ViTCore
from pipeline.registry import MODELS, MODULATED_STACKED, MODULATED_VIT, STACKED, VIT, current_form, resolve
from pipeline.run import RunSpec, build_model
from tests.stored_hashes import STORED, VIT_BEFORE_ISSUE_28

EXPERIMENTS = Path(__file__).parents[2] / "experiments"
LEGACY = json.loads(Path(__file__).with_name("legacy_vit_rows.json").read_text())["rows"]
PRESETS = sorted(EXPERIMENTS.glob("*.yaml"))


def _configs(path: Path):
    """(kind, fn, validated config) of every hashed part of an experiment file."""
    spec = load_experiment(path)
    out = [(kind, getattr(spec, kind).fn, getattr(spec, kind).config) for kind in ("model", "trainer")]
    out += [("dataset", spec.dataset.fn, c) for c, _ in spec.member_list()]
    return [(kind, fn, resolve(kind, fn, config)) for kind, fn, config in out]


def _assert_full(config: BaseModel, data: dict, where: str = "") -> None:
    """``data`` holds every field of ``config``, at every level of nesting."""
    assert set(data) == set(type(config).model_fields), where
    for name in data:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            _assert_full(value, data[name], f"{where}.{name}")


# ---- stored form / hashed form ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_the_full_form_is_stored_and_rehashes_the_same(path):
    for kind, fn, config in _configs(path):
        stored = stored_form(config)
        _assert_full(config, stored, kind)
        json.dumps(stored)  # JSON-able as it is
        again = resolve(kind, fn, json.loads(json.dumps(stored)))
        assert again == config and config_hash(fn, again) == config_hash(fn, config), kind
        # the hash is taken from the validated config: the reduced form drops hash-neutral defaults
        reduced = json.loads(canonical_json(config))
        for name in hash_neutral_fields(type(config)):
            if getattr(config, name) == type(config).model_fields[name].get_default(
                call_default_factory=True
            ):
                assert name not in reduced and name in stored, (kind, name)


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_old_stored_rows_revalidate_from_either_form_with_their_hash(name):
    row = LEGACY[name]
    old = resolve("model", row["model_fn"], row["model_config"])
    assert config_hash(row["model_fn"], old) == row["model_hash"]
    again = resolve("model", row["model_fn"], stored_form(old))
    assert again == old and config_hash(row["model_fn"], again) == row["model_hash"]


# ---- one registry per kind -----------------------------------------------------------------------------


def test_each_registry_entry_has_its_config_class_and_builder():
    for kind, entries in registry.KINDS.items():
        assert entries, kind
        for fn, entry in entries.items():
            assert issubclass(entry.config, BaseModel) and callable(entry.build) and entry.description, fn
    assert MODELS[STACKED].config is BaselineModelConfig and MODELS[VIT].config is ViTModelConfig
    assert MODELS[MODULATED_STACKED].config is ModulatedModelConfig
    assert MODELS[MODULATED_VIT].config is ModulatedViTModelConfig
    with pytest.raises(ConfigError, match="unknown builder"):
        registry.entry("model", "sensorium.models.nope")


def test_training_builds_models_through_the_registry(monkeypatch):
    calls = []

    def fake(cfg, scans, **kw):
        calls.append((cfg, list(scans), kw))
        return "model"

    monkeypatch.setitem(MODELS, "test.fake", registry.Entry(BaselineModelConfig, fake, "a test double"))
    spec = RunSpec("d", None, "test.fake", BaselineModelConfig(), "t", None, 7)
    assert build_model(spec, _GEOMETRY, _SCANS) == "model"
    assert calls == [
        (spec.model_config, ["a", "b"], {"input_channels": 4, "image_size": (36, 64), "seed": 7})
    ]


# ---- the ViT key ---------------------------------------------------------------------------------------

_RNG = np.random.default_rng(0)
_GEOMETRY = {
    "a": ScanGeometry(7, _RNG.normal(size=(7, 2)), n_trials=50),
    "b": ScanGeometry(5, _RNG.normal(size=(5, 2)), n_trials=40),
}
_SCAN = SimpleNamespace(input_channels=4, images=torch.zeros(1, 4, 36, 64))
_SCANS = {"a": _SCAN, "b": _SCAN}


def _build(fn: str, config) -> torch.nn.Module:
    return build_model(RunSpec("d", None, fn, config, "t", None, 3), _GEOMETRY, _SCANS)


def test_the_vit_key_has_no_cnn_field_and_the_stacked_key_keeps_its_fields():
    cnn = set(StackedCoreConfig.model_fields)
    assert not cnn & set(ViTModelConfig.model_fields)
    assert "core_type" not in ModulatedViTModelConfig.model_fields
    assert set(BaselineModelConfig.model_fields) == cnn | set(ModelConfigBase.model_fields) | {
        "core_type",
        "vit",
    }
    for key in ("hidden_channels", "layers", "core_type", "input_init"):
        with pytest.raises(ConfigError, match=f"model.config.{key}: unknown key"):
            resolve("model", VIT, {key: 3}, "model.config")
    # the stacked configs hash as before issue 28: the defaults (the presets: test_config_hashes.py)
    assert config_hash(STACKED, BaselineModelConfig()) == "0f2d86623d9e4e1707c6f99ee8d9c89b"
    assert config_hash(MODULATED_STACKED, ModulatedModelConfig()) == "b872a5730724c058f51b58ba90dc5eb3"
    # the core is a union of two kinds, each with its own keys
    assert BaselineModelConfig().core().kind == "stacked" and ViTModelConfig().core().kind == "vit"
    assert BaselineModelConfig(core_type="vit").core() == ViTConfig()


def test_no_preset_builds_a_vit_under_a_stacked_key():
    for path in PRESETS:
        spec = load_experiment(path)
        assert "core_type" not in spec.model.config, path.name
        model = resolve("model", spec.model.fn, spec.model.config)
        if isinstance(model, ViTModelConfig):
            assert spec.model.fn in (VIT, MODULATED_VIT), path.name


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_old_vit_rows_build_the_same_model_as_their_vit_key_equivalent(name):
    row = LEGACY[name]
    old = resolve("model", row["model_fn"], row["model_config"])
    model = _build(row["model_fn"], old)
    assert isinstance(model.core, ViTCore)
    new_fn, new = current_form("model", row["model_fn"], old)
    assert new_fn == MODELS[row["model_fn"]].vit_key and type(new) is MODELS[new_fn].config
    assert new.vit == (old.vit or ViTConfig()) and new == vit_equivalent(old)
    if name in VIT_BEFORE_ISSUE_28:  # a preset of that time: today's file is its equivalent
        assert row["model_hash"] == VIT_BEFORE_ISSUE_28[name]
        assert config_hash(new_fn, new) == STORED[name]["model"]
        preset = load_experiment(EXPERIMENTS / f"{name}.yaml").model
        assert (preset.fn, resolve("model", preset.fn, preset.config)) == (new_fn, new)
    fresh = _build(new_fn, new)
    assert isinstance(fresh.core, ViTCore) and type(fresh) is type(model)
    old_state, new_state = model.state_dict(), fresh.state_dict()
    assert list(old_state) == list(new_state)
    for key, value in old_state.items():
        assert value.shape == new_state[key].shape, key
        assert torch.equal(value, new_state[key]), key  # the same seed: the same initial weights


def test_stacked_keys_still_build_cnns_and_the_modulated_vit_key_a_modulated_vit():
    assert type(_build(STACKED, BaselineModelConfig(hidden_channels=4, layers=2)).core).__name__ == (
        "Stacked2dCore"
    )
    vit = ViTConfig(dim=8, heads=2, layers=1)
    model = _build(MODULATED_VIT, ModulatedViTModelConfig(vit=vit))
    assert isinstance(model.core, ViTCore) and set(model.modulator) == {"a", "b"}
    assert not hasattr(_build(VIT, ViTModelConfig(vit=vit)), "modulator")
    with pytest.raises(ValueError, match="core_type: vit"):
        vit_equivalent(BaselineModelConfig())
    assert current_form("model", STACKED, BaselineModelConfig()) == (STACKED, BaselineModelConfig())
