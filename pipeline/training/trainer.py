"""The standard trainer (SPEC 2.5-2.6): Poisson loss, Adam, early stopping with learning-rate decay.

One optimiser step per round of one batch from every scan (shorter loaders restart); early stopping on
the validation single-trial correlation averaged over all neurons of all scans; after ``patience``
epochs without improvement the best weights are restored and the learning rate is cut (``lr_decay_steps``
rounds); at most ``max_iter`` epochs; the best weights are restored at the end.

Options beyond the winner (``pipeline.training.schedule``): AdamW, a per-step schedule over all
``max_iter`` epochs (warm-up + cosine, or warm-up, stable, decay) instead of the plateau rounds, and an
EMA of the weights, which is then the model that is validated, selected and returned.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline import lifecycle
from pipeline.configs import TrainerConfig
from pipeline.data.loaders import ScanTensors
from pipeline.scoring.metrics import single_trial_correlation
from pipeline.scoring.predict import predict_tier
from pipeline.training import schedule, speed
from pipeline.training.checkpoint import Checkpointer, rng_state, set_rng_state
from pipeline.training.losses import LOSSES, loss_scale
from pipeline.training.seeding import set_seed

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


class TrainingInterruptedError(Exception):
    """Training stopped because ``should_stop`` asked (a worker got SIGTERM / SIGINT)."""


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
    sums, count = None, 0
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
    return float(sums / count) if count else float("nan")


class BatchStream:
    """Endless shuffled training batches of one scan (a new permutation after each pass), resumable.

    The same sequence as drawing ``torch.randperm(n, generator)`` at the start of each pass and cutting
    it into ``batch_size`` slices (the last one shorter); :meth:`state` / :meth:`load_state` capture the
    generator, the current permutation and the position in it, so a resumed run continues mid-pass.
    """

    def __init__(self, scan: ScanTensors, batch_size: int, generator: torch.Generator):
        self.scan, self.batch_size, self.generator = scan, batch_size, generator
        self._idx = scan.tier_indices("train")
        self._perm: np.ndarray | None = None
        self._perm_device: torch.Tensor | None = None  # the permutation where the data lives
        self._pos = 0

    def next(self) -> dict[str, torch.Tensor]:
        if self._perm is None or self._pos >= len(self._perm):
            self._set_perm(self._idx[torch.randperm(len(self._idx), generator=self.generator).numpy()])
            self._pos = 0
        # a slice of a device tensor: no host-to-device copy per batch (one per pass over the data)
        chunk = self._perm_device[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.scan.batch(chunk)

    def _set_perm(self, perm: np.ndarray | None) -> None:
        self._perm = perm
        device = self.scan.responses.device
        self._perm_device = None if perm is None else torch.as_tensor(perm, dtype=torch.long, device=device)

    def state(self) -> dict:
        perm = None if self._perm is None else torch.from_numpy(np.asarray(self._perm, dtype=np.int64))
        return {"generator": self.generator.get_state(), "perm": perm, "pos": self._pos}

    def load_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._set_perm(None if state["perm"] is None else state["perm"].numpy().astype(self._idx.dtype))
        self._pos = int(state["pos"])


@dataclass
class LoopState:
    """Where the early-stopping loop stands after an epoch (all of it goes into a checkpoint)."""

    best: float  # best validation score so far
    epoch: int = 0  # epochs run
    decay_round: int = 0  # learning-rate decay rounds completed
    patience_counter: int = 0  # evaluations without improvement in this round
    in_block: int = 0  # epochs run in the current evaluation interval
    history: list[EpochRecord] = field(default_factory=list)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _snapshot(loop, model, best_state, optimizer, scheduler, streams, ema=None) -> dict:
    """Everything :func:`train` needs to continue after this epoch exactly as if never stopped."""
    return {
        "ema": None if ema is None else _cpu_state(ema),
        "loop": {
            **{k: v for k, v in vars(loop).items() if k != "history"},
            "history": [asdict(r) for r in loop.history],
        },
        "model": _cpu_state(model),
        "best_state": best_state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "streams": {k: s.state() for k, s in streams.items()},
        "rng": rng_state(next(model.parameters()).device),
    }


def _restore(
    saved, model, optimizer, scheduler, streams, ema=None
) -> tuple[LoopState, dict[str, torch.Tensor]]:
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in saved["model"].items()})
    if ema is not None:
        ema.load_state_dict({k: v.to(device) for k, v in saved["ema"].items()})
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    for k, s in streams.items():
        s.load_state(saved["streams"][k])
    set_rng_state(saved["rng"], device)
    fields = dict(saved["loop"])
    fields["history"] = [EpochRecord(**r) for r in fields["history"]]
    return LoopState(**fields), saved["best_state"]


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
    checkpoint: Checkpointer | None = None,
    should_stop: Callable[[], bool] | None = None,
    should_prune: Callable[[EpochRecord], bool] | None = None,
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
        progress: show a tqdm bar over epochs.
        checkpoint: where the state is saved after every epoch and resumed from when it exists; the
            result is then bit-identical (on CPU) to a run that was never stopped.
        should_stop: polled after every batch; when it returns True the partial epoch is dropped and
            :class:`TrainingInterruptedError` is raised (the last epoch's checkpoint is what survives).
        should_prune: called after every epoch (once its checkpoint is saved) with its record; True ends
            training there, like early stopping (a sweep's pruner: the trial is clearly worse).

    Raises:
        TrainingDivergedError: the loss became non-finite.
        TrainingInterruptedError: ``should_stop`` asked for it.
    """
    set_seed(seed)
    for key, scan in scans.items():
        if len(scan.tier_indices("train")) == 0:
            raise ValueError(f"scan {key} has no trials in tier 'train'")
    if not any(len(s.tier_indices("validation")) > 1 for s in scans.values()):
        raise ValueError(
            f"no scan has validation trials ({sorted(scans)}); early stopping needs a validation tier"
        )
    speed.prepare_model(model, cfg)
    optimizer = speed.optimizer(speed.parameter_groups(model, cfg), cfg)
    device = next(model.parameters()).device

    def precision() -> contextlib.AbstractContextManager:
        return speed.autocast(cfg, device)

    streams = {
        k: BatchStream(s, batch_size, torch.Generator().manual_seed(shuffle_seed)) for k, s in scans.items()
    }
    n_rounds = max(int(np.ceil(len(s.tier_indices("train")) / batch_size)) for s in scans.values())
    if cfg.max_batches_per_epoch is not None:
        n_rounds = min(n_rounds, cfg.max_batches_per_epoch)
    sign = 1.0 if cfg.maximize else -1.0
    stepped = schedule.is_stepped(cfg)  # cosine / wsd: per-step rates over all max_iter epochs
    if stepped:
        accumulate = cfg.loss_accum_batch_n or len(scans)
        scheduler = schedule.step_scheduler(
            optimizer, cfg, schedule.steps_per_epoch(n_rounds * len(scans), accumulate)
        )
    else:
        scheduler = schedule.plateau_scheduler(optimizer, cfg)
    ema = schedule.weight_average(model, cfg)
    # the model that is validated, selected and returned: the weight average when there is one
    evaluated = model if ema is None else ema.module

    def after_step() -> None:
        if stepped:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(model)

    model.train()
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is None:
        loop = LoopState(best=validation_correlation(evaluated, scans, precision=precision))
        best_state = _cpu_state(evaluated)
    else:
        loop, best_state = _restore(saved, model, optimizer, scheduler, streams, ema)
        log.info("resuming from %s after epoch %d", checkpoint.path, loop.epoch)
    resumed_from, pruned_at = loop.epoch, 0
    # while the loop runs, a stop signal only sets the flag polled between batches (no exception from
    # the signal handler in the middle of an optimiser step or a checkpoint write)
    guard = lifecycle.polled() if should_stop is not None else contextlib.nullcontext()
    # the bar only on a terminal (disable=None); unattended workers log one line per epoch instead
    bar = tqdm(
        total=cfg.max_iter,
        initial=loop.epoch,
        desc="training",
        unit="epoch",
        disable=None if progress else True,
    )
    try:
        with guard:
            while True:
                if loop.in_block == 0 and stepped:  # the schedule runs all max_iter epochs
                    if loop.epoch >= cfg.max_iter:
                        break
                elif loop.in_block == 0:  # between evaluation intervals: is this decay round over?
                    if loop.decay_round >= cfg.lr_decay_steps:
                        break
                    if loop.patience_counter >= cfg.patience or loop.epoch >= cfg.max_iter:
                        if cfg.restore_best:
                            model.load_state_dict(best_state)
                            if ema is not None:  # the average restarts from the restored weights
                                ema.module.load_state_dict(best_state)
                        loop.decay_round += 1
                        loop.patience_counter = 0
                        if loop.epoch >= cfg.max_iter:
                            break
                        continue
                loop.epoch += 1
                lr = optimizer.param_groups[0]["lr"]
                start = time.perf_counter()
                loss, data_s = _train_epoch(
                    model, scans, streams, optimizer, cfg, n_rounds, loop.epoch, should_stop, after_step
                )
                current = validation_correlation(evaluated, scans, precision=precision)
                record = EpochRecord(loop.epoch, lr, loss, current, time.perf_counter() - start, data_s)
                loop.history.append(record)
                bar.update(1)
                bar.set_postfix(val_corr=f"{current:.4f}", lr=f"{lr:.2g}", loss=f"{loss:.4g}")
                log.info(
                    "epoch %d/%d: val_corr %.4f, lr %.2g, loss %.4g, %.1f s",
                    loop.epoch,
                    cfg.max_iter,
                    current,
                    lr,
                    loss,
                    record.seconds,
                )
                if on_epoch is not None:
                    on_epoch(record)
                loop.in_block += 1
                if loop.in_block >= cfg.interval or loop.epoch >= cfg.max_iter:
                    loop.in_block = 0
                    if not stepped:
                        scheduler.step(current)
                    if not np.isfinite(current):
                        raise TrainingDivergedError(
                            f"validation correlation is {current} after epoch {loop.epoch}"
                        )
                    if current * sign < loop.best * sign - cfg.tolerance:
                        loop.patience_counter += 1
                    else:
                        loop.best, best_state, loop.patience_counter = current, _cpu_state(evaluated), 0
                if checkpoint is not None:
                    checkpoint.save(
                        _snapshot(loop, model, best_state, optimizer, scheduler, streams, ema),
                        {"epoch": loop.epoch, "best_val_corr": loop.best},
                    )
                # called after the last epoch too (a sweep records the whole curve), but stopping there
                # saves nothing: not a pruned run
                if should_prune is not None and should_prune(record) and loop.epoch < cfg.max_iter:
                    pruned_at = loop.epoch
                    break
    finally:
        bar.close()
    if cfg.restore_best:
        model.load_state_dict(best_state)
    elif ema is not None:
        model.load_state_dict(ema.module.state_dict())
    return TrainResult(
        resumed_from=resumed_from,
        pruned_at=pruned_at,
        best_val_corr=float(loop.best),
        epochs=loop.epoch,
        history=list(loop.history),
        state_dict=copy.copy(best_state),
    )


def _train_epoch(
    model: torch.nn.Module,
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
    criterion = LOSSES[cfg.loss_function]
    optimizer.zero_grad(set_to_none=True)
    for round_idx in range(n_rounds):
        for key in scans:
            t0 = time.perf_counter()
            if should_stop is not None and should_stop():
                raise TrainingInterruptedError(
                    f"stop requested during epoch {epoch}; the partial epoch is dropped"
                )
            batch = streams[key].next()
            batch["images"] = speed.prepare_images(batch["images"], cfg)
            data_seconds += time.perf_counter() - t0
            with speed.autocast(cfg, device):
                pred = model(**batch, data_key=key, detach_core=cfg.detach_core)
            target = batch["responses"]
            # the loss in float32 whatever the forward pass's precision (a no-op without autocast)
            loss = criterion(pred.float(), target, avg=cfg.avg_loss)
            if cfg.scale_loss:
                loss = loss * loss_scale(scans[key].n_trials, target.shape[0])
            loss = loss + model.regularizer(key, detach_core=cfg.detach_core)
            loss.backward()
            if read_each:
                value = float(loss.detach())
                if not np.isfinite(value):
                    raise TrainingDivergedError(
                        f"loss is {value} at epoch {epoch}, round {round_idx + 1}/{n_rounds}, scan {key}"
                    )
                total += value
            else:
                total_device += loss.detach()
            n_batches += 1
            if n_batches % accumulate == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if after_step is not None:
                    after_step()
    if n_batches % accumulate:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()
    if not read_each:
        total = float(total_device)
        if not np.isfinite(total):
            raise TrainingDivergedError(
                f"loss is {total} in epoch {epoch} (summed over its {n_batches} batches)"
            )
    return total / max(n_batches, 1), data_seconds
