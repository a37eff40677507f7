"""Progress lines of a training run: their wording, the time-left estimate, and a real tiny run's lines
(one per epoch, named by its label; one more when it resumes from a checkpoint)."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from pipeline.configs import TrainerConfig, config_hash
from pipeline.run import run_label, run_training
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.progress import (
    PROGRESS_LOGGER,
    EpochReporter,
    epoch_line,
    format_duration,
    member_label,
    model_label,
    resume_line,
    time_left,
)
from pipeline.training.state import EpochRecord
from pipeline.training.trainer import TrainingInterruptedError
from tests.factories import RECS, trainer_spec

#: an epoch line: label, epoch k/N, loss, validation correlation, seconds, time left
LINE = re.compile(
    r"(?P<label>.+): epoch (?P<k>\d+)/(?P<n>\d+)  loss \S+  val corr -?\d\.\d{4}  "
    r"[\d.]+ s/epoch  (up to .+ left|about .+ left|last epoch)"
)


def _record(epoch: int, seconds: float = 2.0) -> EpochRecord:
    return EpochRecord(epoch=epoch, lr=0.005, train_loss=0.41213, val_corr=0.21374, seconds=seconds)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0 s"), (8.26, "8.3 s"), (42.4, "42 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")],
)
def test_durations_read_as_people_write_them(seconds, text):
    assert format_duration(seconds) == text


def test_time_left_is_the_remaining_epochs_at_the_mean_epoch_time():
    assert time_left(3, 20, [4.0, 5.0, 6.0]) == pytest.approx(17 * 5.0)
    assert time_left(20, 20, [4.0]) == 0.0  # nothing left
    assert time_left(25, 20, [4.0]) == 0.0  # never negative
    assert time_left(1, 20, []) == 0.0  # nothing timed yet (no estimate rather than a guess)


def test_epoch_line_has_every_field():
    line = epoch_line("tiny (seed 1)", _record(3, 4.2), 20, 71.4)
    assert (
        line == "tiny (seed 1): epoch 3/20  loss 0.4121  val corr 0.2137  4.2 s/epoch  up to 1 min 11 s left"
    )
    assert LINE.fullmatch(line)
    # a per-step schedule runs every epoch: an estimate, not a bound
    assert epoch_line("x", _record(3), 20, 71.4, may_stop_early=False).endswith("about 1 min 11 s left")
    assert epoch_line("x", _record(20), 20, 0.0).endswith("last epoch")


def test_labels_name_experiment_and_seed_else_the_model_hash():
    assert member_label(["tiny"], "0123456789abcdef", 1) == "tiny (seed 1)"
    assert member_label(["a", "b"], "0123456789abcdef", 7) == "a, b (seed 7)"
    assert (
        member_label([], "0123456789abcdef", 7)
        == model_label("0123456789abcdef", 7)
        == "model 01234567 (seed 7)"
    )
    assert (
        resume_line("tiny (seed 1)", 4, 20)
        == "tiny (seed 1): resuming at epoch 5/20 (checkpoint saved after epoch 4)"
    )


def test_reporter_times_only_its_own_epochs_and_logs_at_info_unless_quiet(caplog):
    reporter = EpochReporter("tiny (seed 1)", 10)
    with caplog.at_level(logging.DEBUG, logger=PROGRESS_LOGGER):
        reporter.resumed(4)
        line = reporter.epoch(_record(5, 2.0))
        reporter.epoch(_record(6, 4.0))
        EpochReporter("quiet", 10, report=False).epoch(_record(1))
    records = [r for r in caplog.records if r.name == PROGRESS_LOGGER]
    assert [r.levelno for r in records] == [logging.INFO] * 3 + [logging.DEBUG]
    assert records[0].getMessage() == resume_line("tiny (seed 1)", 4, 10)
    assert line.endswith("up to 10 s left")  # 5 epochs left at 2.0 s
    assert records[2].getMessage().endswith("up to 12 s left")  # 4 left at the mean of 2.0 and 4.0


def test_a_real_run_logs_one_line_per_epoch_and_a_resume_line(tmp_path, caplog):
    spec = trainer_spec(TrainerConfig(max_iter=3, patience=3, lr_decay_steps=1), seed=3)
    checkpoint = Checkpointer(tmp_path / "run.pt", {"run": "progress"})
    done: list[int] = []
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        with pytest.raises(TrainingInterruptedError):  # stopped after its first epoch, as a worker is
            run_training(
                spec,
                RECS,
                torch.device("cpu"),
                on_epoch=lambda r: done.append(r.epoch),
                checkpoint=checkpoint,
                should_stop=lambda: len(done) >= 1,
            )
        first = [r.getMessage() for r in caplog.records if r.name == PROGRESS_LOGGER]
        caplog.clear()
        _, _, result = run_training(
            spec, RECS, torch.device("cpu"), checkpoint=checkpoint, label="tiny (seed 3)"
        )
        second = [r.getMessage() for r in caplog.records if r.name == PROGRESS_LOGGER]

    # without a label: the model's short hash, as stored in the model_hash column, and the seed
    default = run_label(spec)
    assert default == f"model {config_hash(spec.model_fn, spec.model_config)[:8]} (seed 3)"
    # a fresh run first says where it starts (the untrained model is the best so far until beaten)
    assert len(first) == 2 and re.fullmatch(
        rf"{re.escape(default)}: before training  val corr -?\d\.\d{{4}}", first[0]
    )
    assert LINE.fullmatch(first[1]) and first[1].startswith(f"{default}: epoch 1/3")
    assert second[0] == resume_line("tiny (seed 3)", 1, 3)
    epochs = [LINE.fullmatch(m) for m in second[1:]]
    assert all(epochs), second
    assert [(m["label"], int(m["k"]), int(m["n"])) for m in epochs if m] == [
        ("tiny (seed 3)", 2, 3),
        ("tiny (seed 3)", 3, 3),
    ]
    assert result.resumed_from == 1 and result.epochs == 3
