"""One experiment member built outside the database from the recordings of a home's ``data/`` folder:
shared by ``research.upper_bounds`` and ``research.transfer``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from pipeline.data.format import read_recording
from pipeline.data.loaders import ScanTensors
from pipeline.data.recording import Recording
from pipeline.models.build import ScanGeometry
from pipeline.regressors.compute import compute_regressors
from pipeline.run import RunSpec, build_model, load_scans


def home_zips(home: Path) -> list[Path]:
    """The recordings' zip files in ``home``/data, in name order (none: one-line exit)."""
    paths = sorted((home / "data").glob("*.zip"))
    if not paths:
        raise SystemExit(f"no recordings in {home / 'data'}")
    return paths


def read_recordings(paths: list[Path]) -> dict[str, Recording]:
    """{data key: recording} of these zip files, in their order (two files of one scan: one-line exit)."""
    recordings: dict[str, Recording] = {}
    for path in paths:
        rec = read_recording(path, progress=False)
        if rec.data_key in recordings:
            raise SystemExit(f"{path.name}: scan {rec.data_key} is in another file of this folder too")
        recordings[rec.data_key] = rec
    return recordings


def build_member(
    spec: RunSpec, recordings: Mapping[str, Recording]
) -> tuple[torch.nn.Module, dict[str, ScanTensors], dict[str, ScanGeometry]]:
    """(model initialised from ``spec.seed``, scans' tensors, scans' geometry) on the CPU, the regressors
    computed in memory as ``spec``'s dataset config asks."""
    regressors = {k: compute_regressors(r, spec.dataset_config) for k, r in recordings.items()}
    scans, geometry = load_scans(
        recordings, spec.dataset_config, torch.device("cpu"), None, regressors, dataset_fn=spec.dataset_fn
    )
    return build_model(spec, geometry, scans), scans, geometry
