"""The trainer's ``optimizer: muon``: Muon on the core's filters, AdamW on the rest."""

from __future__ import annotations

import pytest
import torch

from pipeline.configs import ConfigError, TrainerConfig, canonical_json, validate
from pipeline.run import build_model, build_scans
from pipeline.training import speed
from pipeline.training.muon import MuonAdamW, orthogonalise, split_muon_groups
from tests.factories import RECS, train_tiny, trainer_spec

FAST = dict(max_iter=4, lr_init=0.02, max_batches_per_epoch=2)


def test_orthogonalise_brings_every_singular_value_near_one_in_both_orientations():
    gen = torch.Generator().manual_seed(0)
    # a badly conditioned matrix: singular values spread over two decades
    u, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(81, 16, generator=gen))
    matrix = u @ torch.diag(torch.logspace(-2, 0, 16)) @ v.T  # (16, 81)
    wide = orthogonalise(matrix)
    sv = torch.linalg.svdvals(wide)
    # five steps do not reach 1 exactly (by design): a condition number of 100 becomes one under 3
    assert sv.min() > 0.45 and sv.max() < 1.25, sv
    # the directions are the matrix's own: U V^T up to the per-direction scale
    assert torch.nn.functional.cosine_similarity(wide.flatten(), (u @ v.T).flatten(), dim=0) > 0.97
    torch.testing.assert_close(orthogonalise(matrix.T), wide.T)
    with pytest.raises(ValueError, match="takes a matrix"):
        orthogonalise(torch.zeros(2, 3, 4))


def _model(cfg: TrainerConfig):
    spec = trainer_spec(cfg, 3)
    scans = build_scans(RECS, spec.dataset_config, torch.device("cpu"))
    return build_model(spec, RECS, scans), scans


def test_core_filters_get_a_muon_group_and_the_rest_stays_with_adamw():
    cfg = TrainerConfig(lr_init=0.01, optimizer="muon", readout_lr_scale=2.0)
    model, _ = _model(cfg)
    groups = speed.parameter_groups(model, cfg)
    filters = {id(p) for p in model.core.parameters() if p.ndim >= 2}  # the CNN's: all conv kernels
    assert [bool(g.get("muon")) for g in groups] == [False, True, False]
    assert {id(p) for p in groups[1]["params"]} == filters
    assert all(id(p) not in filters for g in (groups[0], groups[2]) for p in g["params"])
    assert groups[2]["lr"] == pytest.approx(0.02)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="needs a core with convolution or linear layers"):
        split_muon_groups([{"params": [torch.nn.Parameter(torch.zeros(3))]}], torch.nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(3))], "muon": True}], lr=0.1)


def test_the_adamw_part_is_torchs_adamw():
    gen = torch.Generator().manual_seed(1)
    mine, theirs = (torch.nn.Parameter(torch.randn(5, 3, generator=gen)) for _ in range(2))
    with torch.no_grad():
        theirs.copy_(mine)
    ours = MuonAdamW([mine], lr=0.05, weight_decay=0.1)
    reference = torch.optim.AdamW([theirs], lr=0.05, weight_decay=0.1)
    for step in range(4):
        grad = torch.randn(5, 3, generator=gen)
        mine.grad, theirs.grad = grad.clone(), grad.clone()
        ours.step()
        reference.step()
        torch.testing.assert_close(mine, theirs, msg=f"step {step}")


def test_a_muon_step_moves_a_filter_by_the_adamw_sized_orthogonal_update():
    weight = torch.nn.Parameter(torch.zeros(8, 2, 3, 3))
    optimizer = MuonAdamW([{"params": [weight], "muon": True}], lr=0.01, momentum=0.0)
    weight.grad = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    optimizer.step()
    step = weight.detach().reshape(8, 18)
    # zero momentum: the step is -lr x 0.2 x sqrt(18) x orthogonalise(grad); RMS about 0.2 x lr
    torch.testing.assert_close(step, -0.01 * 0.2 * 18**0.5 * orthogonalise(weight.grad.reshape(8, 18)))
    assert 0.1 * 0.01 < step.pow(2).mean().sqrt() < 0.3 * 0.01


def test_training_with_muon_learns_is_reproducible_and_differs_from_adamw():
    cfg = TrainerConfig(**FAST, optimizer="muon", weight_decay=0.01, channels_last=True)
    _, _, result, records = train_tiny(cfg)
    assert records[-1].train_loss < records[0].train_loss
    again = train_tiny(cfg)[2]
    for name, value in result.state_dict.items():
        assert torch.equal(value, again.state_dict[name]), f"muon run not reproducible at {name}"
    adamw = train_tiny(TrainerConfig(**FAST, optimizer="adamw", weight_decay=0.01, channels_last=True))[2]
    name = "core.features.layer0.conv.weight"
    assert not torch.equal(result.state_dict[name], adamw.state_dict[name])


def test_config_takes_muon_with_weight_decay_and_refuses_the_fused_adam_kernel():
    assert "optimizer" not in canonical_json(TrainerConfig())
    assert TrainerConfig(optimizer="muon", weight_decay=0.05).weight_decay == 0.05
    with pytest.raises(ConfigError, match="fused_adam is an Adam kernel"):
        validate(TrainerConfig, {"optimizer": "muon", "fused_adam": True}, "trainer.config")
    with pytest.raises(ConfigError, match="weight_decay needs optimizer: adamw or muon"):
        validate(TrainerConfig, {"weight_decay": 0.01}, "trainer.config")


def test_muon_refuses_plain_parameters_that_mark_no_filters():
    cfg = TrainerConfig(optimizer="muon")
    model, _ = _model(cfg)
    with pytest.raises(ValueError, match="takes parameter_groups"):
        speed.optimizer(model.parameters(), cfg)
    assert isinstance(speed.optimizer(speed.parameter_groups(model, cfg), cfg), MuonAdamW)


def test_only_layer_weights_go_to_muon_not_other_matrices_of_the_core():
    core = torch.nn.Module()
    core.conv = torch.nn.Conv2d(2, 4, 3)
    core.position = torch.nn.Parameter(torch.zeros(1, 5, 4))  # a ViT-like embedding: AdamW's
    groups = split_muon_groups([{"params": list(core.parameters())}], core)
    assert [p is core.conv.weight for p in groups[1]["params"]] == [True]
    assert any(p is core.position for p in groups[0]["params"])
