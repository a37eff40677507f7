"""State_dicts from elsewhere: strict key / shape comparison, source-grid check, file reading; the
``linear`` core of the starter kit's LN model; configuration hashes that new options leave unchanged."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.configs import BaselineModelConfig, config_hash
from pipeline.models.core import Stacked2dCore
from pipeline.models.import_state import (
    StateDictImportError,
    compare,
    read_state_dict,
    source_grid_problems,
)

FN = "sensorium.models.stacked_core_full_gauss_readout"


def test_compare_names_missing_unexpected_and_misshaped_keys():
    model = {"a": torch.zeros(2), "b": torch.zeros(3, 4), "c": torch.zeros(1)}
    file = {"b": torch.zeros(4, 3), "c": torch.zeros(1), "d": torch.zeros(5)}
    mismatch = compare(model, file)
    assert mismatch.missing == ["a"] and mismatch.unexpected == ["d"]
    assert mismatch.misshaped == [("b", (4, 3), (3, 4))]
    assert mismatch.describe() == (
        "missing keys (1): a; unexpected keys (1): d; mis-shaped keys (1): b (4, 3) in the file vs (3, 4) in "
        "the model"
    )
    assert not compare(model, dict(model))


def test_long_lists_are_cut_with_a_count():
    mismatch = compare({f"k{i}": torch.zeros(1) for i in range(20)}, {})
    assert (
        mismatch.describe().startswith("missing keys (20): k0, k1") and "... 12 more" in mismatch.describe()
    )


def test_source_grid_check_finds_moved_neurons():
    grid = torch.rand(10, 2) * 2 - 1
    model = {"readout.s1.source_grid": grid}
    assert source_grid_problems(model, {"readout.s1.source_grid": grid.clone()}) == []
    moved = grid.clone()
    moved[3] += 0.5
    (problem,) = source_grid_problems(model, {"readout.s1.source_grid": moved})
    assert "scan s1 for 1 of 10 neurons" in problem


def test_read_state_dict_refuses_foreign_files(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pth")
    state, sha = read_state_dict(tmp_path / "ok.pth")
    assert list(state) == ["w"] and len(sha) == 64
    torch.save({"w": 3}, tmp_path / "numbers.pth")
    (tmp_path / "text.pth").write_text("hello")
    for name, fragment in (("numbers.pth", "not named tensors"), ("text.pth", "not a PyTorch state_dict")):
        try:
            read_state_dict(tmp_path / name)
        except StateDictImportError as err:
            assert fragment in str(err) and "\n" not in str(err)
        else:
            raise AssertionError(f"{name} was accepted")


def test_linear_core_has_no_nonlinearity_and_the_same_parameters():
    kwargs = dict(
        input_channels=4, hidden_channels=8, input_kern=9, hidden_kern=7, layers=3, depth_separable=True
    )
    linear, nonlinear = Stacked2dCore(**kwargs, linear=True), Stacked2dCore(**kwargs)
    assert not any(isinstance(m, torch.nn.ELU) for m in linear.modules())
    assert sum(isinstance(m, torch.nn.ELU) for m in nonlinear.modules()) == 3
    assert list(linear.state_dict()) == list(nonlinear.state_dict())
    x = torch.randn(2, 4, 36, 64)
    linear.eval()
    # no nonlinearity: the response to a sum is the sum of the responses, up to the BatchNorm shift
    zero = linear(torch.zeros_like(x))
    assert torch.allclose(linear(2 * x) - zero, 2 * (linear(x) - zero), atol=1e-4)


def test_an_option_added_later_leaves_old_hashes_alone():
    from pipeline.experiments import load_experiment
    from pipeline.registry import resolve

    # experiments/demo.yaml's model hash before `linear` existed (computed at commit 91e7851): a database
    # made then still recognises the experiment
    spec = load_experiment(Path(__file__).parents[2] / "experiments" / "demo.yaml")
    assert config_hash(FN, resolve("model", FN, spec.model.config)) == "c4309704b25dd084ab6a1babe6b2b827"
    default = BaselineModelConfig()
    assert config_hash(FN, default) == config_hash(FN, BaselineModelConfig(linear=False))
    assert config_hash(FN, BaselineModelConfig(linear=True)) != config_hash(FN, default)
