"""Training, prediction and resume on CUDA, with the throughput options, against the same run on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.configs import DatasetConfig, ModulatedModelConfig, TrainerConfig
from pipeline.data.synth import SynthConfig, synthesize
from pipeline.regressors.compute import compute_regressors
from pipeline.run import RunSpec, build_model, build_scans
from pipeline.scoring.predict import predict_all
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.trainer import TrainingInterruptedError, train

CUDA = torch.device("cuda")
RECS = {}
for mouse in range(2):
    rec, _ = synthesize(SynthConfig(n_neurons=30, n_trials=300, seed=21, competition=mouse == 1), mouse)
    RECS[rec.data_key] = rec
DATASET = DatasetConfig(
    batch_size=32,
    behavior_normalization="minmax01",
    regressors={
        "history": {"lags": [1, 2, 5]},
        "state": {"n_pca": 20, "rank": 5, "n_components": 3},
        "rank": True,
    },
)
MODEL = ModulatedModelConfig(layers=2, hidden_channels=8, input_kern=5, hidden_kern=3)
REGS = {k: compute_regressors(r, DATASET) for k, r in RECS.items()}
OPTIONS = {"autocast": "bf16", "channels_last": True, "fused_adam": True, "compile_core": True}


def _spec(trainer: TrainerConfig) -> RunSpec:
    return RunSpec(
        "sensorium.datasets.static_loaders",
        DATASET,
        "sensorium.models.modulated_stacked_core_full_gauss_readout",
        MODEL,
        "sensorium.training.standard_trainer",
        trainer,
        7,
    )


def _train(device, trainer, checkpoint=None, should_stop=None):
    spec = _spec(trainer)
    scans = build_scans(RECS, DATASET, device, regressors=REGS)
    model = build_model(spec, RECS, scans).to(device)
    result = train(
        model,
        scans,
        trainer,
        batch_size=32,
        shuffle_seed=1,
        seed=7,
        progress=False,
        checkpoint=checkpoint,
        should_stop=should_stop,
    )
    return model, scans, result


@pytest.mark.parametrize("options", [{}, {"autocast": "bf16"}, {"channels_last": True}, OPTIONS], ids=str)
def test_cuda_training_agrees_with_cpu(options):
    trainer = TrainerConfig(max_iter=4, patience=5, lr_decay_steps=1, **options)
    _, _, cpu = _train(torch.device("cpu"), TrainerConfig(max_iter=4, patience=5, lr_decay_steps=1))
    model, scans, gpu = _train(CUDA, trainer)
    assert next(model.parameters()).device.type == "cuda"
    assert all(np.isfinite(h.train_loss) for h in gpu.history)
    # same data, seed and model; different kernels and rounding: close, not equal
    assert gpu.best_val_corr == pytest.approx(cpu.best_val_corr, abs=0.03)


def test_cuda_predictions_match_cpu_with_the_same_weights():
    model, scans, _ = _train(CUDA, TrainerConfig(max_iter=2, patience=5, lr_decay_steps=1))
    cpu_model = build_model(_spec(TrainerConfig()), RECS, build_scans(RECS, DATASET, "cpu", regressors=REGS))
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    cpu_scans = build_scans(RECS, DATASET, torch.device("cpu"), regressors=REGS)
    for key in RECS:
        on_gpu = predict_all(model, scans[key])
        on_cpu = predict_all(cpu_model, cpu_scans[key])
        np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)


def test_cuda_stop_and_resume_continues_the_run(tmp_path):
    trainer = TrainerConfig(max_iter=6, patience=5, lr_decay_steps=1, channels_last=True, fused_adam=True)
    _, _, reference = _train(CUDA, trainer)
    ckpt = Checkpointer(tmp_path / "run.pt", {"key": {"seed": 7}, "code": "gpu"})
    epochs = []
    with pytest.raises(TrainingInterruptedError):
        spec = _spec(trainer)
        scans = build_scans(RECS, DATASET, CUDA, regressors=REGS)
        model = build_model(spec, RECS, scans).to(CUDA)
        train(
            model,
            scans,
            trainer,
            batch_size=32,
            shuffle_seed=1,
            seed=7,
            progress=False,
            checkpoint=ckpt,
            on_epoch=lambda r: epochs.append(r.epoch),
            should_stop=lambda: len(epochs) >= 3,
        )
    _, _, resumed = _train(CUDA, trainer, checkpoint=ckpt)
    assert resumed.resumed_from == 3 and resumed.epochs == reference.epochs
    # cuDNN may pick other kernels in a new process: the continued run is close to the uninterrupted one
    assert resumed.best_val_corr == pytest.approx(reference.best_val_corr, abs=1e-3)
