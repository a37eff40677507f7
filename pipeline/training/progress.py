"""What a training run tells the person waiting for it: one line per epoch, and where a resumed run starts.

The lines go to the logger named ``pipeline.progress`` at INFO (the command line shows that logger's
lines plainly on stdout unless asked to be quiet); a run that was asked not to report logs them at DEBUG
instead. Each line names the run (its experiment and seed when the caller knows them, else a short model
hash), the epoch out of the most the run may take, the training loss, the validation correlation, the
epoch's seconds and an estimate of the time left: the epochs still allowed at the mean epoch time of this
process. Early stopping (the plateau rounds) may end the run before the last allowed epoch, so there the
estimate is an upper bound and the line says "up to"; a per-step schedule always runs every epoch.

Everything here only formats and logs: nothing changes what the trainer computes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is not needed to name a model in a log line (the CLI's light commands)
    from pipeline.training.state import EpochRecord

#: the logger of the progress lines; the command line decides where (and whether) they appear
PROGRESS_LOGGER = "pipeline.progress"

log = logging.getLogger(PROGRESS_LOGGER)


def format_duration(seconds: float) -> str:
    """A duration for a person: ``8.3 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    total = round(seconds)
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(total, 3600)
    return f"{hours} h {rest // 60:02d} min"


def time_left(epoch: int, max_epochs: int, epoch_seconds: Sequence[float]) -> float:
    """Seconds the ``max_epochs - epoch`` epochs still allowed take at the mean of ``epoch_seconds``
    (the epochs timed so far; 0 when none was, or none is left)."""
    remaining = max(max_epochs - epoch, 0)
    if not remaining or not epoch_seconds:
        return 0.0
    return remaining * (sum(epoch_seconds) / len(epoch_seconds))


def epoch_line(
    label: str, record: EpochRecord, max_epochs: int, left_s: float, *, may_stop_early: bool = True
) -> str:
    """The progress line of one epoch, e.g.
    ``tiny (seed 1): epoch 3/20  loss 0.4121  val corr 0.2137  4.2 s/epoch  up to 1 min 11 s left``.

    ``may_stop_early``: the run ends by early stopping, so the estimate is an upper bound ("up to").
    """
    if record.epoch >= max_epochs:
        left = "last epoch"
    else:
        left = ("up to " if may_stop_early else "about ") + f"{format_duration(left_s)} left"
    return (
        f"{label}: epoch {record.epoch}/{max_epochs}  loss {record.train_loss:.4g}  "
        f"val corr {record.val_corr:.4f}  {format_duration(record.seconds)}/epoch  {left}"
    )


def resume_line(label: str, done: int, max_epochs: int) -> str:
    """The line of a run that continues from the checkpoint saved after epoch ``done``."""
    return f"{label}: resuming at epoch {done + 1}/{max_epochs} (checkpoint saved after epoch {done})"


def model_label(model_hash: str, seed: int) -> str:
    """The label of a run whose experiment is not known: a short model hash and the seed."""
    return f"model {model_hash[:8]} (seed {seed})"


def member_label(experiments: Sequence[str], model_hash: str, seed: int) -> str:
    """The label of a trained model: its experiment(s) and seed, e.g. ``tiny (seed 1)``; the short model
    hash instead when no experiment declares it (``experiments`` empty)."""
    if not experiments:
        return model_label(model_hash, seed)
    return f"{', '.join(experiments)} (seed {seed})"


@dataclass
class EpochReporter:
    """Logs the progress lines of one run (``report=False``: at DEBUG, so that they are normally hidden).

    Only epochs run in this process are timed: a resumed run's estimate does not count the epochs of the
    process that ran before it.
    """

    label: str
    max_epochs: int
    may_stop_early: bool = True
    report: bool = True
    seconds: list[float] = field(default_factory=list)

    @property
    def level(self) -> int:
        return logging.INFO if self.report else logging.DEBUG

    def started(self, val_corr: float) -> None:
        """A fresh run: the untrained model's validation correlation, the best so far until an epoch
        beats it (the trainer keeps the best weights, these included)."""
        log.log(self.level, "%s: before training  val corr %.4f", self.label, val_corr)

    def kept_untrained(self, val_corr: float) -> None:
        """No epoch beat the untrained model: its weights are the ones kept."""
        log.warning(
            "%s: no epoch beat the untrained model's validation correlation %.4f: its weights are kept "
            "(train longer, or look at the learning rate)",
            self.label,
            val_corr,
        )

    def resumed(self, done: int) -> None:
        """The run continues from the checkpoint of epoch ``done``."""
        log.log(self.level, "%s", resume_line(self.label, done, self.max_epochs))

    def epoch(self, record: EpochRecord) -> str:
        """Log the line of ``record`` (an epoch just run); returns it."""
        self.seconds.append(record.seconds)
        line = epoch_line(
            self.label,
            record,
            self.max_epochs,
            time_left(record.epoch, self.max_epochs, self.seconds),
            may_stop_early=self.may_stop_early,
        )
        log.log(self.level, "%s", line)
        return line
