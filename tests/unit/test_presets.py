"""The experiment presets: valid, and the *_demo ablations differ from demo.yaml only in their addition."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.experiments import load_experiment

EXPERIMENTS = Path(__file__).parents[2] / "experiments"
MODULATED = "sensorium.models.modulated_stacked_core_full_gauss_readout"


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_validates(path):
    spec = load_experiment(path)
    assert spec.name == path.stem


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# what each demo ablation may change relative to demo.yaml (besides name and comment)
ALLOWED = {
    "only_adjnorm_demo": {"dataset.config.behavior_normalization"},
    "only_history_demo": {
        "dataset.config.regressors.",
        "model.fn",
        "model.config.with_modulator",
        "model.config.modulator_type",
        "model.config.modulator_params.",
    },
    "only_state_demo": {
        "dataset.config.regressors.",
        "model.fn",
        "model.config.with_modulator",
        "model.config.modulator_type",
        "model.config.modulator_params.",
    },
    "only_gain_demo": {
        "dataset.config.regressors.",
        "model.fn",
        "model.config.with_modulator",
        "model.config.modulator_type",
        "model.config.modulator_params.",
    },
    "new_hyperparams_demo": {
        "model.config.gamma_input",
        "model.config.gamma_readout",
        "model.config.hidden_kern",
        "model.config.init_sigma",
        "model.config.init_mu_range",
        "model.config.grid_mean_predictor.",
    },
}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_demo_ablations_differ_only_in_their_addition(name):
    demo = _flat(yaml.safe_load((EXPERIMENTS / "demo.yaml").read_text()))
    other = _flat(yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text()))
    changed = {k for k in demo.keys() | other.keys() if demo.get(k) != other.get(k)} - {"name", "comment"}
    assert changed, "an ablation must change something"
    allowed = ALLOWED[name]
    stray = {k for k in changed if not any(k == a or (a.endswith(".") and k.startswith(a)) for a in allowed)}
    assert not stray, f"{name} differs from demo.yaml in {sorted(stray)}"


def test_winner_has_five_members_over_splits_and_seeds():
    spec = load_experiment(EXPERIMENTS / "winner.yaml")
    members = spec.member_list()
    assert [seed for _, seed in members] == [100, 101, 102, 103, 104]
    assert [cfg["split"]["index"] for cfg, _ in members] == [0, 1, 2, 3, 4]
    assert spec.model.fn == MODULATED
    assert spec.ensemble is not None and spec.ensemble.name == "winner"
    params = spec.model.config["modulator_params"]
    assert params["gain_adjust_alpha"] == params["alpha_hist"] == params["alpha_behav"] == 0.3
