"""When the trainer stops and how its learning rate moves: the winner's plateau rounds or a per-step schedule.

* :class:`PlateauRounds` (``plateau``, docs/model.md#trainer): after ``patience`` evaluations without
  improvement a round ends; the best weights are restored, and ``ReduceLROnPlateau`` has cut the rate;
  training stops after ``lr_decay_steps`` rounds or ``max_iter`` epochs.
* :class:`PerStepSchedule` (``lr_schedule: cosine`` or ``wsd``): the rate follows a curve over the
  optimiser steps of all ``max_iter`` epochs, which all run.

Both select the best weights by validation the same way (:func:`no_improvement`); the trainer asks
:meth:`StoppingPolicy.should_stop` only between evaluation intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pipeline.configs import TrainerConfig
from pipeline.training import schedule
from pipeline.training.state import LoopState


class StoppingPolicy:
    """The learning-rate scheduler of a run (checkpointed with it) and the rule that ends the run."""

    def __init__(self, scheduler: Any, cfg: TrainerConfig) -> None:
        self.scheduler, self.cfg = scheduler, cfg

    def after_step(self) -> None:
        """Called after every optimiser step."""

    def after_evaluation(self, score: float) -> None:
        """Called with the validation score at the end of every evaluation interval."""

    def should_stop(self, loop: LoopState, restore_best: Callable[[], None]) -> bool:
        """Between evaluation intervals: is training over? ``restore_best`` puts the best weights back."""
        raise NotImplementedError


class PlateauRounds(StoppingPolicy):
    """Rounds of early stopping with a learning-rate cut between them (the winner's trainer)."""

    def after_evaluation(self, score: float) -> None:
        self.scheduler.step(score)  # ReduceLROnPlateau counts its own patience from the same scores

    def should_stop(self, loop: LoopState, restore_best: Callable[[], None]) -> bool:
        """Stops after ``lr_decay_steps`` rounds; a round ends after ``patience`` evaluations without
        improvement or at ``max_iter``, and its end counts even when ``max_iter`` stops the run."""
        cfg = self.cfg
        if loop.decay_round >= cfg.lr_decay_steps:
            return True
        if loop.patience_counter < cfg.patience and loop.epoch < cfg.max_iter:
            return False
        if cfg.restore_best:  # the next round (or the end) starts from the best weights, not the last
            restore_best()
        loop.decay_round += 1
        loop.patience_counter = 0
        return loop.epoch >= cfg.max_iter or loop.decay_round >= cfg.lr_decay_steps


class PerStepSchedule(StoppingPolicy):
    """A ``LambdaLR`` stepped after every optimiser step over all ``max_iter`` epochs (cosine, wsd)."""

    def after_step(self) -> None:
        self.scheduler.step()

    def should_stop(self, loop: LoopState, restore_best: Callable[[], None]) -> bool:
        return loop.epoch >= self.cfg.max_iter  # the schedule is a function of the whole run's length


def stopping_policy(
    optimizer: torch.optim.Optimizer, cfg: TrainerConfig, n_rounds: int, n_scans: int
) -> StoppingPolicy:
    """The policy of ``cfg.lr_schedule`` for epochs of ``n_rounds`` rounds of one batch per scan."""
    if not schedule.is_stepped(cfg):
        return PlateauRounds(schedule.plateau_scheduler(optimizer, cfg), cfg)
    accumulate = cfg.loss_accum_batch_n or n_scans
    steps = schedule.steps_per_epoch(n_rounds * n_scans, accumulate)
    return PerStepSchedule(schedule.step_scheduler(optimizer, cfg, steps), cfg)


def no_improvement(score: float, best: float, cfg: TrainerConfig) -> bool:
    """True when ``score`` is worse than ``best`` by more than ``cfg.tolerance`` (in the direction of
    ``cfg.maximize``). Anything else, a score within the tolerance below ``best`` too, counts as an
    improvement: the trainer then takes it and its weights as the new best (the winner's rule)."""
    sign = 1.0 if cfg.maximize else -1.0
    return score * sign < best * sign - cfg.tolerance
