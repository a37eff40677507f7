"""``sensorium import-checkpoint``: weights trained elsewhere as a ``TrainedModel`` row of an experiment.

The experiment's model is built for the ingested scan exactly as training would build it, and the file
must fit it strictly (every key and shape, and the neurons' cortex coordinates). The row then carries
the usual provenance of the machine that imported it, ``epochs = 0``, no ``Epoch`` rows, and an
``Imported`` part naming the file and its SHA-256; prediction, scoring and submission treat it like any
trained model.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import torch

from pipeline.models.import_state import check_fits, read_state_dict
from pipeline.run import RunSpec, build_model, load_scans
from pipeline.training.trainer import validation_correlation
from schemas.fabrik import experiment_models
from schemas.training import TrainedModel, declared_models, run_inputs, run_row, stored_inputs
from usecases.queries import require_names


def member_key(experiment: str, seed: int | None) -> dict:
    """The TrainedModel key of the experiment's member with ``seed`` (None: its only member).

    Raises:
        LookupError: no such experiment, or no (single) member fits.
    """
    require_names("experiment", experiment)
    members = (declared_models() & experiment_models(experiment)).keys()
    keys = [k for k in members if seed is None or k["seed"] == seed]
    if len(keys) != 1:
        seeds = sorted(k["seed"] for k in members)
        wanted = f"seed {seed}" if seed is not None else "one member (give --seed)"
        raise LookupError(f"experiment {experiment!r} has members with seeds {seeds}: expected {wanted}")
    return keys[0]


def import_checkpoint(
    path: str | Path, experiment: str, data_key: str, seed: int | None = None, device: str = "cpu"
) -> tuple[dict, float]:
    """Import the state_dict in ``path`` as the experiment's member; returns (key, validation correlation).

    Raises:
        StateDictImportError: the file is not a state_dict, or it does not fit (keys, shapes, neurons).
        LookupError: unknown experiment / member / scan, or the member exists already.
    """
    from jobs.queues import REGRESSORS, jobs_of

    state, sha256 = read_state_dict(path)  # the file first: nothing is looked up for a bad one
    key = member_key(experiment, seed)
    if TrainedModel & key:
        raise LookupError(f"experiment {experiment!r} seed {key['seed']}: a model is already stored for it")
    if jobs_of(TrainedModel) & key & {"status": "reserved"}:
        raise LookupError(f"experiment {experiment!r} seed {key['seed']}: a worker is training it right now")
    require_names("scan", data_key)
    spec_dict, scans = run_inputs(key)
    used = [k for k, _ in scans]
    if data_key not in used:
        raise LookupError(f"experiment {experiment!r} uses scans {used}, not {data_key}")
    for table in REGRESSORS:  # what the loaders need (cheap; computed once per scan)
        table.populate([{"data_key": k} for k in used], display_progress=False)

    started = datetime.datetime.now()
    torch_device = torch.device(device)
    spec = RunSpec.from_dicts(**spec_dict)
    recordings, regressors = stored_inputs(used, spec_dict["dataset_config"])
    tensors, geometry = load_scans(recordings, spec.dataset_config, torch_device, None, regressors)
    model = build_model(spec, geometry, tensors)
    check_fits(model, state)
    model.load_state_dict(state, strict=True)
    model = model.to(torch_device).eval()
    val_corr = validation_correlation(model, tensors)
    row = run_row(val_corr, 0, started, 0, scans, torch_device)
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    imported = dict(source_file=str(Path(path).resolve())[:1024], source_sha256=sha256)
    with TrainedModel.connection.transaction:
        TrainedModel.insert_run(key, row, [], weights, n_params, imported=imported)
    return key, val_corr
