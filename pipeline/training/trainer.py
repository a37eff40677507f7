"""The standard trainer (SPEC 2.5-2.6): Poisson loss, Adam, early stopping with learning-rate decay.

One optimiser step per round of one batch from every scan (shorter loaders restart); early stopping on
the validation single-trial correlation averaged over all neurons of all scans; after ``patience``
epochs without improvement the best weights are restored and the learning rate is cut (``lr_decay_steps``
rounds); at most ``max_iter`` epochs; the best weights are restored at the end.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.configs import TrainerConfig
from pipeline.data.loaders import ScanTensors
from pipeline.scoring.metrics import single_trial_correlation
from pipeline.scoring.predict import predict_tier
from pipeline.training.losses import loss_scale, poisson_loss
from pipeline.training.seeding import set_seed

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of the learning curve."""

    epoch: int
    lr: float  # learning rate used for this epoch's updates
    train_loss: float  # mean per-batch objective (scaled loss + regularisers)
    val_corr: float  # validation single-trial correlation after the epoch
    seconds: float  # wall time of the epoch including validation
    data_seconds: float = 0.0  # part of it spent assembling batches


@dataclass
class TrainResult:
    best_val_corr: float
    epochs: int
    history: list[EpochRecord] = field(default_factory=list)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)


def validation_correlation(
    model: torch.nn.Module, scans: dict[str, ScanTensors], tier: str = "validation"
) -> float:
    """Mean single-trial correlation over the neurons of all scans (concatenated), NaN -> 0."""
    per_neuron = []
    for scan in scans.values():
        pred, target, _ = predict_tier(model, scan, tier)
        if len(pred) > 1:
            per_neuron.append(single_trial_correlation(target, pred))
    return float(np.concatenate(per_neuron).mean()) if per_neuron else float("nan")


def _cycle(
    scan: ScanTensors, batch_size: int, generator: torch.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled training batches (a new permutation after each pass)."""
    while True:
        yield from scan.batches("train", batch_size, generator)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train(
    model: torch.nn.Module,
    scans: dict[str, ScanTensors],
    cfg: TrainerConfig,
    *,
    batch_size: int,
    shuffle_seed: int,
    seed: int,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on the ``train`` tier of ``scans`` (tensors already on the model's device).

    Args:
        model: an encoder: ``model(**batch, data_key=k)`` -> [B, N] rates; ``model.regularizer(k)``.
        scans: data key -> tensors.
        cfg: trainer configuration.
        batch_size: training batch size.
        shuffle_seed: seed of every scan's shuffling generator.
        seed: seeds Python / NumPy / torch before training (sampling in the readout, dropout, ...).
        on_epoch: called after every epoch with its record.
        progress: show a tqdm bar over epochs.

    Raises:
        TrainingDivergedError: the loss became non-finite.
    """
    set_seed(seed)
    for key, scan in scans.items():
        if len(scan.tier_indices("train")) == 0:
            raise ValueError(f"scan {key} has no trials in tier 'train'")
    if not any(len(s.tier_indices("validation")) > 1 for s in scans.values()):
        raise ValueError(
            f"no scan has validation trials ({sorted(scans)}); early stopping needs a validation tier"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr_init)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max" if cfg.maximize else "min",
        factor=cfg.lr_decay_factor,
        patience=cfg.patience,
        threshold=cfg.tolerance,
        threshold_mode="abs",
        min_lr=cfg.min_lr,
    )
    generators = {k: torch.Generator().manual_seed(shuffle_seed) for k in scans}
    streams = {k: _cycle(s, batch_size, generators[k]) for k, s in scans.items()}
    n_rounds = max(int(np.ceil(len(s.tier_indices("train")) / batch_size)) for s in scans.values())
    if cfg.max_batches_per_epoch is not None:
        n_rounds = min(n_rounds, cfg.max_batches_per_epoch)
    sign = 1.0 if cfg.maximize else -1.0

    model.train()
    best = validation_correlation(model, scans)
    best_state = _cpu_state(model)
    history: list[EpochRecord] = []
    epoch = 0
    bar = tqdm(total=cfg.max_iter, desc="training", unit="epoch", disable=not progress)
    try:
        for _round in range(cfg.lr_decay_steps):
            patience_counter = 0
            while patience_counter < cfg.patience and epoch < cfg.max_iter:
                for _ in range(cfg.interval):
                    epoch += 1
                    lr = optimizer.param_groups[0]["lr"]
                    start = time.perf_counter()
                    loss, data_s = _train_epoch(model, scans, streams, optimizer, cfg, n_rounds, epoch)
                    current = validation_correlation(model, scans)
                    record = EpochRecord(epoch, lr, loss, current, time.perf_counter() - start, data_s)
                    history.append(record)
                    bar.update(1)
                    bar.set_postfix(val_corr=f"{current:.4f}", lr=f"{lr:.2g}", loss=f"{loss:.4g}")
                    if on_epoch is not None:
                        on_epoch(record)
                    if epoch >= cfg.max_iter:
                        break
                scheduler.step(current)
                if not np.isfinite(current):
                    raise TrainingDivergedError(f"validation correlation is {current} after epoch {epoch}")
                if current * sign < best * sign - cfg.tolerance:
                    patience_counter += 1
                else:
                    best, best_state, patience_counter = current, _cpu_state(model), 0
            if cfg.restore_best:
                model.load_state_dict(best_state)
            if epoch >= cfg.max_iter:
                break
    finally:
        bar.close()
    if cfg.restore_best:
        model.load_state_dict(best_state)
    return TrainResult(
        best_val_corr=float(best), epochs=epoch, history=history, state_dict=copy.copy(best_state)
    )


def _train_epoch(
    model: torch.nn.Module,
    scans: dict[str, ScanTensors],
    streams: dict[str, Iterator[dict[str, torch.Tensor]]],
    optimizer: torch.optim.Optimizer,
    cfg: TrainerConfig,
    n_rounds: int,
    epoch: int,
) -> tuple[float, float]:
    """One epoch of rounds; returns (mean objective per batch, seconds spent assembling batches)."""
    total, n_batches, data_seconds = 0.0, 0, 0.0
    accumulate = cfg.loss_accum_batch_n or len(scans)
    optimizer.zero_grad(set_to_none=True)
    for round_idx in range(n_rounds):
        for key in scans:
            t0 = time.perf_counter()
            batch = next(streams[key])
            data_seconds += time.perf_counter() - t0
            pred = model(**batch, data_key=key, detach_core=cfg.detach_core)
            target = batch["responses"]
            loss = poisson_loss(pred, target, avg=cfg.avg_loss)
            if cfg.scale_loss:
                loss = loss * loss_scale(scans[key].n_trials, target.shape[0])
            loss = loss + model.regularizer(key, detach_core=cfg.detach_core)
            loss.backward()
            value = float(loss.detach())
            if not np.isfinite(value):
                raise TrainingDivergedError(
                    f"loss is {value} at epoch {epoch}, round {round_idx + 1}/{n_rounds}, scan {key}"
                )
            total += value
            n_batches += 1
            if n_batches % accumulate == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    if n_batches % accumulate:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return total / max(n_batches, 1), data_seconds
