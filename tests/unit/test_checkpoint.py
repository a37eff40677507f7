"""Checkpoints: a run stopped after epoch k and resumed from its checkpoint equals an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.configs import BaselineModelConfig, DatasetConfig, TrainerConfig
from pipeline.data.synth import SynthConfig, synthesize
from pipeline.run import RunSpec, build_model, build_scans, scan_geometry, start_as_configured
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.trainer import TrainingInterruptedError, train

RECS = {}
for mouse in range(2):
    # different trial counts: the shorter scan's batch stream wraps mid-pass at epoch boundaries
    rec, _ = synthesize(SynthConfig(n_neurons=10, n_trials=150 + 40 * mouse, seed=4), mouse)
    RECS[rec.data_key] = rec
MODEL = BaselineModelConfig(layers=2, hidden_channels=4, input_kern=5, hidden_kern=3)
# a learning-rate decay round inside the run, so scheduler and early-stopping state must survive too
TRAINER = TrainerConfig(max_iter=12, patience=2, lr_decay_steps=3, lr_init=0.05)


def _run(
    checkpoint=None,
    stop_after: int | None = None,
    trainer: TrainerConfig = TRAINER,
    model_config: BaselineModelConfig = MODEL,
):
    spec = RunSpec(
        "sensorium.datasets.static_loaders",
        DatasetConfig(batch_size=32),
        "sensorium.models.stacked_core_full_gauss_readout",
        model_config,
        "sensorium.training.standard_trainer",
        trainer,
        5,
    )
    scans = build_scans(RECS, spec.dataset_config, torch.device("cpu"))
    model = build_model(spec, RECS, scans)
    start_as_configured(spec, model, scans, {k: scan_geometry(r) for k, r in RECS.items()})  # as training
    done = []

    def on_epoch(record):
        done.append(record.epoch)

    result = train(
        model,
        scans,
        trainer,
        batch_size=32,
        shuffle_seed=1,
        seed=5,
        progress=False,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
        should_stop=(lambda: stop_after is not None and len(done) >= stop_after),
    )
    return result, done


def _curve(result):
    return [(e.epoch, e.lr, e.train_loss, e.val_corr) for e in result.history]


# before and after the learning-rate decay at epoch 7; and with the channels_last layout of the demo presets
@pytest.mark.slow  # more than 10 s measured here (2 cores, shared)
@pytest.mark.parametrize(
    ("k", "trainer", "model"),
    [
        (4, TRAINER, MODEL),
        (8, TRAINER, MODEL),
        (4, TRAINER.model_copy(update={"channels_last": True}), MODEL),
        # issue-12 options: the per-step schedule's position and the weight average must survive too
        (
            5,
            TrainerConfig(
                max_iter=9,
                lr_init=0.05,
                optimizer="adamw",
                weight_decay=0.01,
                lr_schedule="cosine",
                warmup_epochs=2,
                ema_decay=0.9,
            ),
            MODEL,
        ),
        (3, TrainerConfig(max_iter=6, lr_init=0.05, lr_schedule="wsd", decay_epochs=3), MODEL),
        # two parameter groups: both groups' Adam moments and rates come back
        (4, TRAINER.model_copy(update={"readout_lr_scale": 3.0}), MODEL),
        # Muon's momentum buffers beside AdamW's moments, in three groups
        (4, TRAINER.model_copy(update={"optimizer": "muon", "readout_lr_scale": 3.0}), MODEL),
        # readout positions started at the receptive-field map: the learned positions come back over it
        (4, TRAINER, MODEL.model_copy(update={"grid_mean_predictor": None, "init_mu": "rf_map"})),
    ],
    ids=[
        "epoch4",
        "epoch8",
        "epoch4-channels_last",
        "epoch5-adamw-cosine-ema",
        "epoch3-wsd",
        "epoch4-readout_lr",
        "epoch4-muon",
        "epoch4-rf_map",
    ],
)
def test_stopped_and_resumed_run_is_bit_identical(tmp_path, k, trainer, model):
    reference, _ = _run(trainer=trainer, model_config=model)
    ckpt = Checkpointer(tmp_path / "run.pt", {"key": {"seed": 5}, "code": "x"})
    with pytest.raises(TrainingInterruptedError):
        _run(ckpt, stop_after=k, trainer=trainer, model_config=model)
    assert ckpt.exists() and ckpt.sidecar.exists()
    resumed, replayed = _run(ckpt, trainer=trainer, model_config=model)
    assert replayed[0] == k + 1, "training continued after the checkpointed epoch, not from scratch"
    assert _curve(resumed) == _curve(reference)
    assert len({lr for _, lr, _, _ in _curve(reference)}) > 1, "the run crossed a learning-rate decay"
    assert resumed.best_val_corr == reference.best_val_corr and resumed.epochs == reference.epochs
    for name, value in reference.state_dict.items():
        assert torch.equal(value, resumed.state_dict[name]), name


@pytest.mark.slow  # more than 10 s measured here (2 cores, shared)
def test_checkpoint_of_another_run_or_corrupt_file_is_not_used(tmp_path, caplog):
    path = tmp_path / "run.pt"
    with pytest.raises(TrainingInterruptedError):
        _run(Checkpointer(path, {"key": {"seed": 5}, "code": "v1"}), stop_after=2)
    # code "v2" finds v1's checkpoint: it starts at epoch 1 (the stop after it shows which epoch ran)
    with pytest.raises(TrainingInterruptedError, match="during epoch 2"):
        _run(Checkpointer(path, {"key": {"seed": 5}, "code": "v2"}), stop_after=1)
    assert "differs in: code" in caplog.text
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingInterruptedError, match="during epoch 2"):
        _run(Checkpointer(path, {"key": {"seed": 5}, "code": "v1"}), stop_after=1)
    assert "unreadable" in caplog.text


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    ckpt = Checkpointer(tmp_path / "a" / "run.pt", {"k": 1})
    ckpt.save({"x": torch.arange(3)}, {"epoch": 1})
    ckpt.save({"x": torch.arange(4)}, {"epoch": 2})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["run.json", "run.pt"]
    assert np.array_equal(ckpt.load()["x"].numpy(), np.arange(4))
    ckpt.delete()
    assert not any((tmp_path / "a").iterdir())
