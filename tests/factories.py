"""Shared test factories: test modules import their common helpers from here, never from one another.

- the command line: ``CLI_MODULE`` (the one place that names the module ``python -m`` runs),
  ``cli_argv`` and ``run_cli``;
- in-memory training (unit tests): ``RECS``, ``MODEL``, ``trainer_spec``, ``train_tiny``, ``vit_spec``,
  ``train_twice``;
- experiments for the tables (integration tests): ``TINY_MODEL``, ``tiny_experiment``,
  ``long_experiment``, and ``add``, ``checkpoint_epoch``, ``job_status``, ``assert_one_clean_run``
  (these need the ``db`` fixture; their database imports are inside the functions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from pipeline.configs import BaselineModelConfig, DatasetConfig, TrainerConfig
from pipeline.data.synth import SynthConfig, synthesize
from pipeline.experiments import parse_experiment
from pipeline.run import RunSpec, build_model, build_scans
from pipeline.training.trainer import train

REPO = Path(__file__).parents[1]

# -- the command line -------------------------------------------------------------------------------------

CLI_MODULE = "cli"  # what `python -m` runs: the `sensorium` command line (formerly pipeline.cli)


def cli_argv(*args: str) -> list[str]:
    """``python -m <CLI_MODULE> args...`` with this interpreter."""
    return [sys.executable, "-m", CLI_MODULE, *args]


def run_cli(*args: str, env: dict | None = None, cwd: Path | str | None = REPO, **kwargs):
    """The command line as a finished process, its output captured as text (``env`` None: inherited).

    Further keyword arguments go to ``subprocess.run`` (``input``, ``timeout``, ``check``, ...).
    """
    return subprocess.run(cli_argv(*args), cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


# -- in-memory training (unit tests) ----------------------------------------------------------------------

RECS = {}  # two tiny synthetic recordings by data key
for _mouse in range(2):
    _rec, _ = synthesize(SynthConfig(n_neurons=10, n_trials=120, seed=4), _mouse)
    RECS[_rec.data_key] = _rec
del _mouse, _rec
MODEL = BaselineModelConfig(layers=2, hidden_channels=4, input_kern=5, hidden_kern=3)


def trainer_spec(trainer: TrainerConfig, seed: int) -> RunSpec:
    """The tiny baseline ``MODEL`` trained with ``trainer``."""
    return RunSpec(
        "sensorium.datasets.static_loaders",
        DatasetConfig(batch_size=32),
        "sensorium.models.stacked_core_full_gauss_readout",
        MODEL,
        "sensorium.training.standard_trainer",
        trainer,
        seed,
    )


def train_tiny(trainer: TrainerConfig, seed: int = 3):
    """Train ``trainer_spec(trainer, seed)`` on ``RECS``; returns (model, scans, result, epoch records)."""
    spec = trainer_spec(trainer, seed)
    scans = build_scans(RECS, spec.dataset_config, torch.device("cpu"))
    model = build_model(spec, RECS, scans)
    records = []
    result = train(
        model,
        scans,
        trainer,
        batch_size=32,
        shuffle_seed=1,
        seed=seed,
        on_epoch=records.append,
        progress=False,
    )
    return model, scans, result, records


def vit_spec(model_fn: str, cfg) -> RunSpec:
    """``model_fn`` with model config ``cfg``, three quick epochs, seed 3."""
    trainer = TrainerConfig(max_iter=3, patience=3, lr_decay_steps=1, lr_init=0.005)
    return RunSpec(
        "sensorium.datasets.static_loaders",
        DatasetConfig(batch_size=32),
        model_fn,
        cfg,
        "sensorium.training.standard_trainer",
        trainer,
        3,
    )


def train_twice(spec: RunSpec) -> list[dict[str, torch.Tensor]]:
    """Train ``spec`` twice from scratch; each run's training loss must fall. Returns both state dicts."""
    states = []
    for _ in range(2):
        scans = build_scans(RECS, spec.dataset_config, torch.device("cpu"))
        model = build_model(spec, RECS, scans)
        result = train(
            model, scans, spec.trainer_config, batch_size=32, shuffle_seed=1, seed=3, progress=False
        )
        losses = [e.train_loss for e in result.history]
        assert losses[-1] < losses[0], losses
        states.append(result.state_dict)
    return states


# -- experiments for the tables (integration tests) -------------------------------------------------------

TINY_MODEL = {
    "layers": 2,
    "hidden_channels": 4,
    "input_kern": 5,
    "hidden_kern": 3,
    "grid_mean_predictor": {"hidden_layers": 1, "hidden_features": 8},
}


def tiny_experiment(name: str, seeds=(1,), *, scans: list[str] | str = "all", **trainer) -> dict:
    """A tiny model that stops early (patience 2, three epochs unless ``trainer`` says otherwise)."""
    return {
        "name": name,
        "dataset": {
            "fn": "sensorium.datasets.static_loaders",
            "config": {"scans": scans, "batch_size": 32},
        },
        "model": {"fn": "sensorium.models.stacked_core_full_gauss_readout", "config": dict(TINY_MODEL)},
        "trainer": {
            "fn": "sensorium.training.standard_trainer",
            "config": {"max_iter": 3, "patience": 2, "lr_decay_steps": 1, **trainer},
        },
        "seeds": list(seeds),
    }


def long_experiment(name: str, scans: list[str], seeds=(1,), max_iter: int = 20, **trainer) -> dict:
    """A tiny model that trains for ``max_iter`` epochs (no early stop), a few tenths of a second each."""
    return {
        "name": name,
        "dataset": {"fn": "sensorium.datasets.static_loaders", "config": {"scans": scans, "batch_size": 32}},
        "model": {"fn": "sensorium.models.stacked_core_full_gauss_readout", "config": dict(TINY_MODEL)},
        "trainer": {
            "fn": "sensorium.training.standard_trainer",
            "config": {"max_iter": max_iter, "patience": max_iter, "lr_decay_steps": 1, **trainer},
        },
        "seeds": list(seeds),
    }


def add(spec: dict) -> list[dict]:
    """Insert the experiment; return its TrainedModel keys."""
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    add_experiment(parse_experiment(spec), "tester")
    return (TrainedModel.key_source & experiment_models(spec["name"])).keys()


def checkpoint_epoch(key: dict) -> int:
    """Epoch of the key's checkpoint on disk (0: none)."""
    from schemas.training import TrainedModel, key_hash

    pk = {k: key[k] for k in TrainedModel.primary_key}
    sidecar = TrainedModel.checkpoint_dir() / f"{key_hash(pk)}.json"
    try:
        return int(json.loads(sidecar.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def job_status(key: dict) -> str | None:
    from jobs.queues import jobs_of
    from schemas.training import TrainedModel

    rows = (jobs_of(TrainedModel) & {k: key[k] for k in TrainedModel.primary_key}).to_dicts()
    return rows[0]["status"] if rows else None


def assert_one_clean_run(key: dict) -> dict:
    """Exactly one row, an unbroken 1..n curve, no job left, no checkpoint left."""
    from schemas.training import TrainedModel

    assert len(TrainedModel & key) == 1
    row = (TrainedModel & key).fetch1()
    epochs = [e["epoch"] for e in (TrainedModel.Epoch & key).to_dicts(order_by="epoch")]
    assert epochs == list(range(1, row["epochs"] + 1))
    assert job_status(key) is None, "the finished job is removed from the queue"
    assert checkpoint_epoch(key) == 0 and not list(TrainedModel.checkpoint_dir().glob("*.pt.*tmp"))
    return row


# -- the competition's starter-kit checkpoints (the team's shared fixtures) -------------------------------

#: where the starter kit's files are looked for: $SENSORIUM_STARTER_KIT, else a shared fixtures folder
KIT_PLACES = [
    Path(p)
    for p in (os.environ.get("SENSORIUM_STARTER_KIT"), REPO.parent / "shared" / "fixtures" / "starter_kit")
    if p
] + [Path("/work/shared/fixtures/starter_kit")]
#: the first place holding the SOTA checkpoint (else the first place: the tests that need it skip)
KIT = next((p for p in KIT_PLACES if (p / "sensorium_p_sota_model.pth").exists()), KIT_PLACES[0])
SOTA, LN = KIT / "sensorium_p_sota_model.pth", KIT / "sensorium_p_ln_model.pth"
