"""Learning-rate schedule and weight averaging of the issue-12 trainer options (off by default).

- ``lr_schedule: cosine``: a linear warm-up over ``warmup_epochs`` epochs, then a cosine decay from
  ``lr_init`` to ``min_lr`` at the end of epoch ``max_iter``; the factor is a function of the number of
  optimiser steps taken, so a resumed run (the scheduler's step count is in the checkpoint) continues
  on the same curve.
- ``lr_schedule: wsd``: warm-up, stable, decay: the same warm-up, then ``lr_init`` held, then a linear
  decay to ``min_lr`` over the last ``decay_epochs`` epochs, also a function of the step count;
- ``ema_decay``: torch's :class:`~torch.optim.swa_utils.AveragedModel` with its EMA update, applied after
  every optimiser step to the parameters and the buffers (BatchNorm statistics), so the averaged copy
  is a complete model that validation and prediction can use as it is.
"""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline.configs import TrainerConfig


def cosine_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Multiplier of ``lr_init`` before optimiser step ``step`` (0-based) of ``total``.

    Warm-up: ``(step + 1) / warmup`` for the first ``warmup`` steps (never 0, so the first step moves);
    then ``floor + (1 - floor) * (1 + cos(pi * p)) / 2`` with ``p`` going from 0 to 1 over the rest.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd_factor(step: int, total: int, warmup: int, decay: int, floor: float) -> float:
    """Multiplier of ``lr_init`` before optimiser step ``step`` (0-based) of ``total``: warm-up as
    :func:`cosine_factor`, then 1, then over the last ``decay`` steps a straight line that reaches
    ``floor`` at the last step (and stays there after it)."""
    if step < warmup:
        return (step + 1) / warmup
    start = total - decay
    if step < start:
        return 1.0
    progress = min((step - start + 1) / max(decay, 1), 1.0)
    return 1.0 - (1.0 - floor) * progress


def is_stepped(cfg: TrainerConfig) -> bool:
    """True for the per-step schedules (cosine, wsd), which run all ``max_iter`` epochs."""
    return cfg.lr_schedule in ("cosine", "wsd")


def plateau_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainerConfig
) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """The winner's plateau rounds: every group's rate times ``lr_decay_factor`` after ``patience``
    epochs without a better validation score.

    Each group's floor is ``min_lr`` scaled like its rate (``min_lr x readout_lr_scale`` for the group
    outside the core), so the ratio of the two rates holds down to the floor, as in the per-step
    schedules; with one group it is ``min_lr`` itself.
    """
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max" if cfg.maximize else "min",
        factor=cfg.lr_decay_factor,
        patience=cfg.patience,
        threshold=cfg.tolerance,
        threshold_mode="abs",
        min_lr=group_floors(optimizer, cfg),
    )


def group_floors(optimizer: torch.optim.Optimizer, cfg: TrainerConfig) -> list[float]:
    """Each group's lowest rate: ``min_lr`` for the groups that start at ``lr_init`` (all of them when
    ``readout_lr_scale`` is 1; else the core's one or two, with ``optimizer: muon``), ``min_lr x
    readout_lr_scale`` for the group outside the core that starts at ``lr_init x readout_lr_scale``.

    Written out, not lr / lr_init x min_lr: the core's floor stays exactly min_lr (bit-identical runs).
    Call it before the first step (it reads the groups' starting rates).
    """
    return [
        cfg.min_lr if math.isclose(group["lr"], cfg.lr_init) else cfg.min_lr * cfg.readout_lr_scale
        for group in optimizer.param_groups
    ]


def step_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainerConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of ``cfg`` (``lr_schedule`` cosine or wsd) as a ``LambdaLR``."""
    if not is_stepped(cfg):
        raise ValueError(f"lr_schedule {cfg.lr_schedule!r} is not stepped per optimiser step")
    total = cfg.max_iter * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    floor = min(cfg.min_lr / cfg.lr_init, 1.0)
    if cfg.lr_schedule == "wsd":
        decay = cfg.decay_epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: wsd_factor(step, total, warmup, decay, floor)
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_factor(step, total, warmup, floor)
    )


def steps_per_epoch(n_batches: int, accumulate: int) -> int:
    """Optimiser steps in an epoch of ``n_batches`` batches, one step per ``accumulate`` (and one for a
    remainder), as :func:`pipeline.training.trainer.train_epoch` takes them."""
    return -(-n_batches // accumulate)


def weight_average(model: torch.nn.Module, cfg: TrainerConfig) -> AveragedModel | None:
    """An EMA copy of ``model`` (parameters and buffers) when ``cfg.ema_decay`` is set, else None."""
    if cfg.ema_decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
