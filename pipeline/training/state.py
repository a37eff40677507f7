"""The trainer's state between epochs: the learning curve, where early stopping stands, and the snapshot
of everything a checkpoint needs so that a resumed run continues exactly as if it had never stopped.

:func:`snapshot` and :func:`restore` are each other's inverse; the snapshot's keys are the checkpoint
format (``ema``, ``loop``, ``model``, ``best_state``, ``optimizer``, ``scheduler``, ``streams``, ``rng``).
Only plain containers, numbers and tensors go in, so the checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pipeline.training.checkpoint import rng_state, set_rng_state

if TYPE_CHECKING:
    from torch.optim.swa_utils import AveragedModel

    from pipeline.training.streams import BatchStream


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
class LoopState:
    """Where the early-stopping loop stands after an epoch (all of it goes into a checkpoint)."""

    best: float  # best validation score so far
    epoch: int = 0  # epochs run
    decay_round: int = 0  # learning-rate decay rounds completed
    patience_counter: int = 0  # evaluations without improvement in this round
    in_block: int = 0  # epochs run in the current evaluation interval
    history: list[EpochRecord] = field(default_factory=list)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state dict on the CPU (the device's tensors are changed by later steps)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def snapshot(
    loop: LoopState,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    streams: dict[str, BatchStream],
    ema: AveragedModel | None = None,
) -> dict[str, Any]:
    """Everything :func:`pipeline.training.trainer.train` needs to continue after this epoch exactly as
    if never stopped (``scheduler``: the stopping policy's learning-rate scheduler)."""
    return {
        "ema": None if ema is None else cpu_state(ema),
        "loop": {
            **{k: v for k, v in vars(loop).items() if k != "history"},
            "history": [asdict(r) for r in loop.history],
        },
        "model": cpu_state(model),
        "best_state": best_state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "streams": {k: s.state() for k, s in streams.items()},
        "rng": rng_state(next(model.parameters()).device),
    }


def restore(
    saved: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    streams: dict[str, BatchStream],
    ema: AveragedModel | None = None,
) -> tuple[LoopState, dict[str, torch.Tensor]]:
    """Put what :func:`snapshot` saved back in place (weights onto the model's device, the global RNGs
    last); returns the loop state and the best weights so far."""
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
