"""Issue-12 trainer options: AdamW, warm-up + cosine schedule, EMA of the weights (all off by default)."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.configs import ConfigError, TrainerConfig, canonical_json, config_hash, validate
from pipeline.run import build_model, build_scans
from pipeline.training import speed
from pipeline.training.losses import poisson_loss
from pipeline.training.schedule import cosine_factor, plateau_scheduler, wsd_factor
from pipeline.training.trainer import validation_correlation
from tests.factories import RECS, train_tiny, trainer_spec

FAST = dict(max_iter=6, lr_init=0.02, max_batches_per_epoch=2)


def test_cosine_factor_warms_up_then_decays_to_the_floor():
    total, warmup, floor = 100, 10, 0.01
    factors = [cosine_factor(s, total, warmup, floor) for s in range(total)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1 :], strict=False))
    assert cosine_factor(total, total, warmup, floor) == pytest.approx(floor)
    assert factors[warmup + (total - warmup) // 2] == pytest.approx(floor + (1 - floor) / 2, abs=1e-2)


def test_defaults_keep_the_stored_hash_and_bad_combinations_are_refused():
    plain = TrainerConfig()
    assert "ema_decay" not in canonical_json(plain) and "lr_schedule" not in canonical_json(plain)
    explicit = TrainerConfig(optimizer="adam", lr_schedule="plateau", warmup_epochs=0, ema_decay=None)
    assert config_hash("t", explicit) == config_hash("t", plain)
    with pytest.raises(ConfigError, match="weight_decay needs optimizer: adamw or muon"):
        validate(TrainerConfig, {"weight_decay": 0.01}, "trainer.config")
    with pytest.raises(ConfigError, match="warmup_epochs needs lr_schedule: cosine or wsd"):
        validate(TrainerConfig, {"warmup_epochs": 2}, "trainer.config")
    with pytest.raises(ConfigError, match="wsd and decay_epochs > 0 go together"):
        validate(TrainerConfig, {"lr_schedule": "wsd"}, "trainer.config")
    with pytest.raises(ConfigError, match="wsd and decay_epochs > 0 go together"):
        validate(TrainerConfig, {"decay_epochs": 3}, "trainer.config")
    with pytest.raises(ConfigError, match=r"exceed max_iter \(12\)"):
        validate(
            TrainerConfig,
            {"max_iter": 12, "lr_schedule": "wsd", "warmup_epochs": 4, "decay_epochs": 9},
            "trainer.config",
        )
    assert "decay_epochs" not in canonical_json(plain)
    with pytest.raises(ConfigError, match="ema_decay"):
        validate(TrainerConfig, {"ema_decay": 1.0}, "trainer.config")


def test_cosine_runs_every_epoch_on_the_schedule():
    cfg = TrainerConfig(**FAST, lr_schedule="cosine", warmup_epochs=1, min_lr=0.0002, patience=1)
    _, _, result, records = train_tiny(cfg)
    # all max_iter epochs (patience 1 would have ended plateau rounds earlier); 2 scans x 2 rounds per
    # epoch = 2 optimiser steps: epoch 1 starts at 1/2 of lr_init (warm-up), epoch 2 at the peak
    assert [r.epoch for r in records] == list(range(1, 7))
    lrs = [r.lr for r in records]
    assert lrs[0] == pytest.approx(0.01) and lrs[1] == pytest.approx(0.02)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    steps_done, total, warmup = 10, 12, 2  # before epoch 6
    floor = 0.0002 / 0.02
    expected = 0.02 * (
        floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (steps_done - warmup) / (total - warmup)))
    )
    assert lrs[-1] == pytest.approx(expected)
    assert result.epochs == 6


def test_wsd_factor_holds_then_falls_in_a_straight_line_to_the_floor():
    total, warmup, decay, floor = 100, 10, 25, 0.01
    factors = [wsd_factor(s, total, warmup, decay, floor) for s in range(total)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup : total - decay] == pytest.approx([1.0] * (total - decay - warmup))
    tail = factors[total - decay :]
    steps = [a - b for a, b in zip(tail, tail[1:], strict=False)]
    assert steps == pytest.approx([(1 - floor) / decay] * (decay - 1)), "a straight line"
    assert factors[-1] == pytest.approx(floor)
    assert wsd_factor(total + 5, total, warmup, decay, floor) == pytest.approx(floor)


def test_wsd_runs_every_epoch_and_anneals_in_the_last_ones():
    cfg = TrainerConfig(**FAST, lr_schedule="wsd", decay_epochs=2, min_lr=0.0002, patience=1)
    _, _, result, records = train_tiny(cfg)
    # 2 optimiser steps per epoch (2 scans x 2 rounds): epochs 1-4 at lr_init, then 4 decay steps
    assert [r.epoch for r in records] == list(range(1, 7)) and result.epochs == 6
    lrs = [r.lr for r in records]  # the rate of each epoch's first step
    floor = 0.0002 / 0.02
    assert lrs[:4] == pytest.approx([0.02] * 4)
    assert lrs[4] == pytest.approx(0.02 * (1 - (1 - floor) / 4))
    assert lrs[5] == pytest.approx(0.02 * (1 - 3 * (1 - floor) / 4))
    again = train_tiny(cfg)[2]
    for k, v in result.state_dict.items():
        assert torch.equal(v, again.state_dict[k]), f"wsd run not reproducible at {k}"


def test_ema_weights_are_validated_selected_and_returned():
    cfg = TrainerConfig(**FAST, ema_decay=0.8)
    model, scans, result, records = train_tiny(cfg)
    # the model handed back carries the weights whose validation score was the best one
    assert validation_correlation(model, scans) == pytest.approx(result.best_val_corr, abs=1e-12)
    assert result.best_val_corr >= max(r.val_corr for r in records)
    plain = train_tiny(TrainerConfig(**FAST))[2]
    differs = [
        not torch.equal(v, plain.state_dict[k]) for k, v in result.state_dict.items() if v.is_floating_point()
    ]
    assert any(differs), "the averaged weights equal the plain run's"
    again = train_tiny(cfg)[2]
    for k, v in result.state_dict.items():
        assert torch.equal(v, again.state_dict[k]), f"EMA run not reproducible at {k}"


def test_adamw_weight_decay_shrinks_the_weights():
    # the final weights (restore_best off): decoupled decay pulls every weight towards 0 at each step
    decayed = train_tiny(TrainerConfig(**FAST, optimizer="adamw", weight_decay=5.0, restore_best=False))[0]
    plain = train_tiny(TrainerConfig(**FAST, optimizer="adamw", weight_decay=0.0, restore_best=False))[0]
    name = "core.features.layer0.conv.weight"
    assert decayed.state_dict()[name].norm() < 0.9 * plain.state_dict()[name].norm()


def test_readout_lr_scale_steps_the_parts_outside_the_core_faster():
    cfg = TrainerConfig(lr_init=0.01, readout_lr_scale=4.0)
    spec = trainer_spec(cfg, 3)
    scans = build_scans(RECS, spec.dataset_config, torch.device("cpu"))
    model = build_model(spec, RECS, scans)
    groups = speed.parameter_groups(model, cfg)
    core_ids = {id(p) for p in model.core.parameters()}
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in model.core.parameters()]
    assert groups[1]["lr"] == pytest.approx(0.04) and all(id(p) not in core_ids for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = speed.optimizer(groups, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    key = next(iter(scans))
    batch = scans[key].batch(torch.arange(16))
    poisson_loss(model(**batch, data_key=key), batch["responses"]).backward()
    optimizer.step()
    # Adam's first step moves every parameter with a gradient by about its group's rate
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert moved["core.features.layer0.conv.weight"] == pytest.approx(0.01, rel=0.01)
    readout = next(n for n in moved if n.endswith("_features"))
    assert moved[readout] == pytest.approx(0.04, rel=0.01)
    # at its default the option is one group at lr_init, as before, and stays out of the stored hash
    plain = TrainerConfig(lr_init=0.01)
    assert len(speed.parameter_groups(model, plain)) == 1
    assert "readout_lr_scale" not in canonical_json(plain)
    with pytest.raises(ConfigError, match="readout_lr_scale"):
        validate(TrainerConfig, {"readout_lr_scale": 0}, "trainer.config")


def test_plateau_rounds_keep_the_ratio_of_the_two_rates_down_to_the_floor():
    cfg = TrainerConfig(lr_init=0.01, readout_lr_scale=0.5, patience=1, lr_decay_factor=0.3, min_lr=0.002)
    core, rest = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [core]}, {"params": [rest], "lr": 0.005}], lr=0.01)
    scheduler = plateau_scheduler(optimizer, cfg)
    for _ in range(8):  # no improvement: a cut every other epoch until both groups sit on their floors
        scheduler.step(0.0)
    core_lr, rest_lr = (g["lr"] for g in optimizer.param_groups)
    assert core_lr == pytest.approx(0.002) and rest_lr == pytest.approx(0.001)
    # one group: the floor is min_lr itself, exactly
    single = torch.optim.Adam([core], lr=0.009)
    assert plateau_scheduler(single, TrainerConfig()).min_lrs == [TrainerConfig().min_lr]
