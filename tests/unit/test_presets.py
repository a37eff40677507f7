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


VIT_MODULATED = "sensorium.models.modulated_vit_core_full_gauss_readout"


def test_beyond_full_is_the_winner_with_beyonds_changes():
    """Same data, members, readout, modulator and trainer budget as winner.yaml; only what `beyond`
    changes differs (ViT core, log1p history, receptive-field start without a grid-mean predictor,
    channels_last)."""
    winner = yaml.safe_load((EXPERIMENTS / "winner.yaml").read_text())
    full = yaml.safe_load((EXPERIMENTS / "beyond_full.yaml").read_text())
    assert full["members"] == winner["members"]
    assert full["dataset"]["fn"] == winner["dataset"]["fn"]
    expected_data = _flat(winner["dataset"]["config"]) | {"regressors.history.transform": "log1p"}
    assert _flat(full["dataset"]["config"]) == expected_data
    assert full["trainer"] == {
        **winner["trainer"],
        "config": {**winner["trainer"]["config"], "channels_last": True},
    }
    model, cnn = full["model"]["config"], winner["model"]["config"]
    assert full["model"]["fn"] == VIT_MODULATED
    assert model["init_mu"] == "rf_map" and model["grid_mean_predictor"] is None
    shared = {
        "gamma_input",
        "gamma_readout",
        "init_sigma",
        "init_mu_range",
        "gauss_type",
        "shifter",
        "with_modulator",
        "modulator_type",
        "modulator_params",
    }
    assert {k: model[k] for k in shared} == {k: cnn[k] for k in shared}
    assert set(model) == shared | {"vit", "init_mu", "grid_mean_predictor"}
    spec = load_experiment(EXPERIMENTS / "beyond_full.yaml")
    assert [seed for _, seed in spec.member_list()] == [100, 101, 102, 103, 104]
    assert [cfg["split"]["index"] for cfg, _ in spec.member_list()] == [0, 1, 2, 3, 4]
    assert spec.ensemble is not None and spec.ensemble.name == "beyond_full"


def test_beyond_full_builds_at_full_size_and_predicts():
    """The model of beyond_full.yaml for the six full-size recordings (neurons, trials and 144 x 256
    images as `sensorium synth --scale full` makes them), on the CPU, one forward pass of two trials
    per scan: 11 x 20 tokens of width 64 reach every readout."""
    import torch

    from benchmarks import flops
    from pipeline.models.build import ScanGeometry
    from pipeline.run import build_model

    spec, members, _ = flops.preset_spec(EXPERIMENTS / "beyond_full.yaml", batch_size=2)
    assert members == 5
    sizes = flops.scan_sizes("full")
    gen = torch.Generator().manual_seed(0)
    scans = {
        f"s{i}": flops.stand_in_scan(f"s{i}", s, spec.dataset_config, 2, gen) for i, s in enumerate(sizes)
    }
    geometry = {
        k: ScanGeometry(s.n_neurons, torch.rand(s.n_neurons, 2, generator=gen).numpy() * 800, s.n_trials)
        for k, s in zip(scans, sizes, strict=True)
    }
    model = build_model(spec, geometry, scans)
    model.eval()
    with torch.no_grad():
        for key, scan in scans.items():
            assert tuple(model.readout[key].in_shape) == (64, 11, 20)
            pred = model(**scan.batch(torch.arange(2)), data_key=key)
            assert pred.shape == (2, geometry[key].n_neurons) and bool(torch.isfinite(pred).all())
