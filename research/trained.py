"""Shared by the diagnostics of one trained model (``research.shifter_check``, ``research.rf_positions``):
the command line (--home, --experiment, --seed) and the model rebuilt from the database with its best
weights."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


def model_arguments(description: str) -> argparse.Namespace:
    """Parse --home, --experiment and --seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--seed", type=int, required=True)
    return parser.parse_args()


def load_model(home: Path, experiment: str, seed: int) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on the CPU, its scans' tensors) of ``experiment``'s member ``seed`` in ``home``.

    Sets SENSORIUM_HOME before the database is first touched; exits with one line when there is no such
    trained model.
    """
    os.environ["SENSORIUM_HOME"] = str(home)
    import schemas  # the database only now: SENSORIUM_HOME must be set first
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel, load_trained_model

    schemas.activate()
    keys = (TrainedModel & (experiment_models(experiment) & {"seed": seed})).keys()
    if not keys:
        raise SystemExit(f"no trained model of experiment {experiment!r} with seed {seed}")
    return load_trained_model(keys[0], torch.device("cpu"))
