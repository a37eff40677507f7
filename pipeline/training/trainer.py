"""The standard trainer (docs/model.md#trainer): Poisson loss, Adam, early stopping with learning-rate decay.

One optimiser step per round of one batch from every scan (shorter loaders restart); early stopping on
the validation single-trial correlation averaged over all neurons of all scans; after ``patience``
epochs without improvement the best weights are restored and the learning rate is cut (``lr_decay_steps``
rounds); at most ``max_iter`` epochs; the best weights are restored at the end.

Options beyond the winner (``pipeline.training.schedule``): AdamW, a per-step schedule over all
``max_iter`` epochs (warm-up + cosine, or warm-up, stable, decay) instead of the plateau rounds, and an
EMA of the weights, which is then the model that is validated, selected and returned.

The parts live beside this module: the batch streams in :mod:`pipeline.training.streams`, the stopping
policy (plateau rounds or a per-step schedule) in :mod:`pipeline.training.stopping`, the loop state and
the checkpoint snapshot in :mod:`pipeline.training.state`; their public names are importable from here
as before.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from pipeline import lifecycle
from pipeline.configs import TrainerConfig
from pipeline.data.loaders import ScanTensors
from pipeline.models.encoder import FiringRateEncoder
from pipeline.scoring.metrics import single_trial_correlation
from pipeline.scoring.predict import predict_tier
from pipeline.training import schedule, speed
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.losses import LOSSES, loss_scale
from pipeline.training.progress import EpochReporter
from pipeline.training.seeding import set_seed
from pipeline.training.state import EpochRecord, LoopState, cpu_state, restore, snapshot
from pipeline.training.stopping import PlateauRounds, StoppingPolicy, no_improvement, stopping_policy
from pipeline.training.streams import BatchStream, batch_streams, rounds_per_epoch

# moved out of this module; still importable from here (run.py, the runner, benchmarks and tests do)
__all__ = [
    "BatchStream",
    "EpochRecord",
    "LoopState",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingInterruptedError",
    "train",
    "validation_correlation",
]

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


class TrainingInterruptedError(Exception):
    """Training stopped because ``should_stop`` asked (a worker got SIGTERM / SIGINT)."""


@dataclass
class TrainResult:
    best_val_corr: float
    epochs: int
    history: list[EpochRecord] = field(default_factory=list)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    resumed_from: int = 0  # epoch of the checkpoint this run continued from (0: from scratch)
    pruned_at: int = 0  # epoch after which ``should_prune`` stopped the run (0: not pruned)


def validation_correlation(
    model: torch.nn.Module,
    scans: dict[str, ScanTensors],
    tier: str = "validation",
    precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> float:
    """Mean single-trial correlation over the neurons of all scans (concatenated), NaN -> 0.

    On the CPU through NumPy (float64, the scoring code); on an accelerator on the device (float64 too),
    so that only one number per scan crosses to the host instead of every prediction.
    """
    device = next(model.parameters()).device
    if device.type != "cpu":
        return _device_validation_correlation(model, scans, tier, precision)
    per_neuron = []
    for scan in scans.values():
        pred, target, _ = predict_tier(model, scan, tier, precision=precision)
        if len(pred) > 1:
            per_neuron.append(single_trial_correlation(target, pred))
    return float(np.concatenate(per_neuron).mean()) if per_neuron else float("nan")


@torch.no_grad()
def _device_validation_correlation(model, scans, tier, precision) -> float:
    """:func:`validation_correlation` computed where the tensors live (same definition as ``corr``)."""
    sums: torch.Tensor | None = None
    count = 0
    was_training = model.training
    model.eval()
    try:
        for scan in scans.values():
            idx = torch.as_tensor(scan.tier_indices(tier), dtype=torch.long, device=scan.responses.device)
            if len(idx) <= 1:
                continue
            preds = []
            for start in range(0, len(idx), 128):
                batch = scan.batch(idx[start : start + 128])
                with precision():
                    preds.append(model(**batch, data_key=scan.data_key).double())
            p = torch.cat(preds)
            y = scan.responses[idx].double()
            p = p - p.mean(0)
            y = y - y.mean(0)
            r = (p * y).mean(0) / (p.std(0, unbiased=False) * y.std(0, unbiased=False))
            r = torch.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
            total = r.sum()
            sums = total if sums is None else sums + total
            count += r.numel()
    finally:
        model.train(was_training)
    # sums is set whenever count is: both grow together
    return float(sums / count) if sums is not None and count else float("nan")


@dataclass
class _Run:
    """One training run: its parts (built once by :func:`_assemble`) and its best weights so far."""

    model: FiringRateEncoder
    scans: dict[str, ScanTensors]
    cfg: TrainerConfig
    optimizer: torch.optim.Optimizer
    policy: StoppingPolicy
    streams: dict[str, BatchStream]
    n_rounds: int  # rounds of one batch per scan in an epoch
    ema: AveragedModel | None
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # on the CPU

    @property
    def evaluated(self) -> torch.nn.Module:
        """The model that is validated, selected and returned: the weight average when there is one."""
        return self.model if self.ema is None else self.ema.module

    def precision(self) -> contextlib.AbstractContextManager:
        """The forward pass's precision context (bf16 autocast or none)."""
        return speed.autocast(self.cfg, next(self.model.parameters()).device)

    def after_step(self) -> None:
        """After every optimiser step: the per-step schedule moves, the weight average follows."""
        self.policy.after_step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def restore_best(self) -> None:
        """Back to the best weights; the weight average restarts from them too."""
        self.model.load_state_dict(self.best_state)
        if self.ema is not None:
            self.ema.module.load_state_dict(self.best_state)


def train(
    model: FiringRateEncoder,
    scans: dict[str, ScanTensors],
    cfg: TrainerConfig,
    *,
    batch_size: int,
    shuffle_seed: int,
    seed: int,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
    should_stop: Callable[[], bool] | None = None,
    should_prune: Callable[[EpochRecord], bool] | None = None,
    label: str = "training",
) -> TrainResult:
    """Train ``model`` on the ``train`` tier of ``scans`` (tensors already on the model's device).

    Args:
        model: an encoder: ``model(**batch, data_key=k)`` -> [B, N] rates; ``model.regularizer(k)``.
        scans: data key -> tensors.
        cfg: trainer configuration.
        batch_size: training batch size.
        shuffle_seed: seed of every scan's shuffling generator.
        seed: seeds Python / NumPy / torch before training (sampling in the readout, dropout, ...).
        on_epoch: called after every epoch with its record (epochs restored from a checkpoint are not
            replayed).
        progress: log one line per epoch (and one on resuming) on the ``pipeline.progress`` logger at
            INFO (:mod:`pipeline.training.progress`); False: at DEBUG.
        checkpoint: where the state is saved after every epoch and resumed from when it exists; the
            result is then bit-identical (on CPU) to a run that was never stopped.
        should_stop: polled after every batch; when it returns True the partial epoch is dropped and
            :class:`TrainingInterruptedError` is raised (the last epoch's checkpoint is what survives).
        should_prune: called after every epoch (once its checkpoint is saved) with its record; True ends
            training there, like early stopping (a sweep's pruner: the trial is clearly worse).
        label: names the run in the progress lines (its experiment and seed, where the caller knows them).

    Raises:
        TrainingDivergedError: the loss became non-finite.
        TrainingInterruptedError: ``should_stop`` asked for it.
    """
    set_seed(seed)
    _check_tiers(scans)
    run = _assemble(model, scans, cfg, batch_size, shuffle_seed)
    model.train()
    loop = _start_or_resume(run, checkpoint)
    resumed_from, pruned_at = loop.epoch, 0
    # plateau rounds and a sweep's pruner may end the run before max_iter: the estimate is then a bound
    may_stop_early = isinstance(run.policy, PlateauRounds) or should_prune is not None
    reporter = EpochReporter(label, cfg.max_iter, may_stop_early=may_stop_early, report=progress)
    untrained = None if resumed_from else float(loop.best)
    if resumed_from:
        reporter.resumed(resumed_from)
    else:
        reporter.started(float(loop.best))
    # while the loop runs, a stop signal only sets the flag polled between batches (no exception from
    # the signal handler in the middle of an optimiser step or a checkpoint write)
    guard = lifecycle.polled() if should_stop is not None else contextlib.nullcontext()
    with guard:
        # the policy is asked between evaluation intervals only (it may restore the best weights)
        while not (loop.in_block == 0 and run.policy.should_stop(loop, run.restore_best)):
            record = _run_epoch(run, loop, should_stop)
            _report(reporter, record, cfg.max_iter)
            if on_epoch is not None:
                on_epoch(record)
            _close_interval(run, loop, record.val_corr)
            if checkpoint is not None:
                _save(checkpoint, run, loop)
            # called after the last epoch too (a sweep records the whole curve), but stopping there
            # saves nothing: not a pruned run
            if should_prune is not None and should_prune(record) and loop.epoch < cfg.max_iter:
                pruned_at = loop.epoch
                break
    if untrained is not None and loop.history and max(h.val_corr for h in loop.history) < untrained:
        reporter.kept_untrained(untrained)
    _final_weights(run)
    return TrainResult(
        resumed_from=resumed_from,
        pruned_at=pruned_at,
        best_val_corr=float(loop.best),
        epochs=loop.epoch,
        history=list(loop.history),
        state_dict=copy.copy(run.best_state),
    )


def _check_tiers(scans: dict[str, ScanTensors]) -> None:
    """Every scan has training trials and some scan has validation trials (else a one-line error)."""
    for key, scan in scans.items():
        if len(scan.tier_indices("train")) == 0:
            raise ValueError(f"scan {key} has no trials in tier 'train'")
    if not any(len(s.tier_indices("validation")) > 1 for s in scans.values()):
        raise ValueError(
            f"no scan has validation trials ({sorted(scans)}); early stopping needs a validation tier"
        )


def _assemble(
    model: FiringRateEncoder,
    scans: dict[str, ScanTensors],
    cfg: TrainerConfig,
    batch_size: int,
    shuffle_seed: int,
) -> _Run:
    """Prepare ``model`` (layout, compile) and build its optimiser, streams, stopping policy and EMA."""
    speed.prepare_model(model, cfg)
    optimizer = speed.optimizer(speed.parameter_groups(model, cfg), cfg)
    streams = batch_streams(scans, batch_size, shuffle_seed)
    n_rounds = rounds_per_epoch(scans, batch_size, cfg.max_batches_per_epoch)
    policy = stopping_policy(optimizer, cfg, n_rounds, len(scans))
    ema = schedule.weight_average(model, cfg)
    return _Run(model, scans, cfg, optimizer, policy, streams, n_rounds, ema)


def _start_or_resume(run: _Run, checkpoint: Checkpointer | None) -> LoopState:
    """The loop state to start from: the checkpoint's when there is a usable one (everything restored),
    else epoch 0 with the untrained model's validation score and weights as the best so far."""
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is None:
        loop = LoopState(best=validation_correlation(run.evaluated, run.scans, precision=run.precision))
        run.best_state = cpu_state(run.evaluated)
        return loop
    loop, run.best_state = restore(
        saved, run.model, run.optimizer, run.policy.scheduler, run.streams, run.ema
    )
    assert checkpoint is not None  # saved came from it
    log.info("resuming from %s after epoch %d", checkpoint.path, loop.epoch)
    return loop


def _run_epoch(run: _Run, loop: LoopState, should_stop: Callable[[], bool] | None) -> EpochRecord:
    """Train one epoch and validate; its record is appended to the learning curve and returned."""
    loop.epoch += 1
    lr = run.optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    loss, data_s = train_epoch(
        run.model,
        run.scans,
        run.streams,
        run.optimizer,
        run.cfg,
        run.n_rounds,
        loop.epoch,
        should_stop,
        run.after_step,
    )
    current = validation_correlation(run.evaluated, run.scans, precision=run.precision)
    record = EpochRecord(loop.epoch, lr, loss, current, time.perf_counter() - start, data_s)
    loop.history.append(record)
    return record


def _report(reporter: EpochReporter, record: EpochRecord, max_iter: int) -> None:
    """The epoch as a progress line for the user (``pipeline.progress``) and as this module's log line
    (learning rate included, for debugging)."""
    reporter.epoch(record)
    log.info(
        "epoch %d/%d: val_corr %.4f, lr %.2g, loss %.4g, %.1f s",
        record.epoch,
        max_iter,
        record.val_corr,
        record.lr,
        record.train_loss,
        record.seconds,
    )


def _close_interval(run: _Run, loop: LoopState, current: float) -> None:
    """Count the epoch into its evaluation interval; at the interval's end (or at ``max_iter``) the
    score ``current`` goes to the stopping policy, then it either takes the best or costs patience.

    Raises:
        TrainingDivergedError: the score is not finite.
    """
    loop.in_block += 1
    if loop.in_block < run.cfg.interval and loop.epoch < run.cfg.max_iter:
        return
    loop.in_block = 0
    run.policy.after_evaluation(current)
    if not np.isfinite(current):
        raise TrainingDivergedError(f"validation correlation is {current} after epoch {loop.epoch}")
    if no_improvement(current, loop.best, run.cfg):
        loop.patience_counter += 1
    else:
        loop.best, run.best_state, loop.patience_counter = current, cpu_state(run.evaluated), 0


def _save(checkpoint: Checkpointer, run: _Run, loop: LoopState) -> None:
    """Checkpoint the run after an epoch (the sidecar says which epoch and its best score)."""
    state = snapshot(
        loop, run.model, run.best_state, run.optimizer, run.policy.scheduler, run.streams, run.ema
    )
    checkpoint.save(state, {"epoch": loop.epoch, "best_val_corr": loop.best})


def _final_weights(run: _Run) -> None:
    """Leave the model with the best weights (``restore_best``), else the average's or the last ones."""
    if run.cfg.restore_best:
        run.model.load_state_dict(run.best_state)
    elif run.ema is not None:
        run.model.load_state_dict(run.ema.module.state_dict())


def train_epoch(
    model: FiringRateEncoder,
    scans: dict[str, ScanTensors],
    streams: dict[str, BatchStream],
    optimizer: torch.optim.Optimizer,
    cfg: TrainerConfig,
    n_rounds: int,
    epoch: int,
    should_stop: Callable[[], bool] | None = None,
    after_step: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """One epoch of rounds; returns (mean objective per batch, seconds spent assembling batches).

    ``after_step`` runs after every optimiser step (the per-step schedule, the weight average).

    On the CPU every batch's loss is read (and checked) at once. On an accelerator reading it would make
    the host wait for the device after every batch, so the losses are summed on the device and read,
    and checked, once at the end of the epoch (a non-finite loss is then reported for the epoch).
    """
    device = next(model.parameters()).device
    read_each = device.type == "cpu"
    total, n_batches, data_seconds = 0.0, 0, 0.0
    total_device = torch.zeros((), dtype=torch.float64, device=device)
    accumulate = cfg.loss_accum_batch_n or len(scans)
    optimizer.zero_grad(set_to_none=True)
    for round_idx in range(n_rounds):
        for key in scans:
            t0 = time.perf_counter()
            batch = _next_batch(streams[key], cfg, epoch, should_stop)
            data_seconds += time.perf_counter() - t0
            loss = _objective(model, key, scans[key], batch, cfg, device)
            loss.backward()
            if read_each:
                total += _checked(
                    float(loss.detach()), f"at epoch {epoch}, round {round_idx + 1}/{n_rounds}, scan {key}"
                )
            else:
                total_device += loss.detach()
            n_batches += 1
            if n_batches % accumulate == 0:
                _step(optimizer, after_step)
    if n_batches % accumulate:  # the remainder of an accumulation that the epoch's end cut short
        _step(optimizer, after_step)
    if not read_each:
        total = _checked(float(total_device), f"in epoch {epoch} (summed over its {n_batches} batches)")
    return total / max(n_batches, 1), data_seconds


def _next_batch(
    stream: BatchStream, cfg: TrainerConfig, epoch: int, should_stop: Callable[[], bool] | None
) -> dict[str, torch.Tensor]:
    """The stream's next batch (``images`` [B, C, h, w] in the model's layout, ``responses`` [B, N], ...);
    first the stop flag is polled, so a stop drops the partial epoch before another batch is drawn.

    Raises:
        TrainingInterruptedError: ``should_stop`` returned True.
    """
    if should_stop is not None and should_stop():
        raise TrainingInterruptedError(f"stop requested during epoch {epoch}; the partial epoch is dropped")
    batch = stream.next()
    batch["images"] = speed.prepare_images(batch["images"], cfg)
    return batch


def _objective(
    model: FiringRateEncoder,
    key: str,
    scan: ScanTensors,
    batch: dict[str, torch.Tensor],
    cfg: TrainerConfig,
    device: torch.device,
) -> torch.Tensor:
    """The scalar objective of one batch of scan ``key``: the loss of the [B, N] prediction against the
    [B, N] responses (scaled to the scan's size) plus the model's regularisers."""
    with speed.autocast(cfg, device):
        pred = model(**batch, data_key=key, detach_core=cfg.detach_core)
    target = batch["responses"]
    # the loss in float32 whatever the forward pass's precision (a no-op without autocast)
    loss = LOSSES[cfg.loss_function](pred.float(), target, avg=cfg.avg_loss)
    if cfg.scale_loss:
        loss = loss * loss_scale(scan.n_trials, target.shape[0])
    return loss + model.regularizer(key, detach_core=cfg.detach_core)


def _checked(value: float, where: str) -> float:
    """``value`` when finite.

    Raises:
        TrainingDivergedError: it is NaN or infinite (the message says ``where``).
    """
    if not np.isfinite(value):
        raise TrainingDivergedError(f"loss is {value} {where}")
    return value


def _step(optimizer: torch.optim.Optimizer, after_step: Callable[[], None] | None) -> None:
    """One optimiser step over the accumulated gradients, which are then cleared."""
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if after_step is not None:
        after_step()
