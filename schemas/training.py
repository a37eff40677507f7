"""Seeded training runs: ``TrainedModel`` over Model x Dataset x Trainer x Seed (for declared experiments)."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datajoint as dj
import numpy as np

from pipeline import lifecycle
from pipeline.provenance import code_version, environment
from pipeline.training.progress import member_label
from schemas.binding import bound_settings
from schemas.data import Scan
from schemas.fabrik import Dataset, Model, Seed, Trainer, experiment_models, trainable_experiments
from schemas.regressors import fetch_regressors

if TYPE_CHECKING:
    import torch

    from pipeline.run import Lazy
    from pipeline.training.checkpoint import Checkpointer

# torch and the training code (pipeline.run, ~2 s to import) are imported inside the methods that train or
# rebuild a model: every command that touches the database imports this module, most only to read it
log = logging.getLogger(__name__)
schema = dj.Schema()


@schema
class TrainedModel(dj.Computed):
    definition = """
    # one seeded training run of a model x dataset x trainer configuration
    -> Model
    -> Dataset
    -> Trainer
    -> Seed
    ---
    best_val_corr       : float64         # validation single-trial correlation of the restored best weights
    epochs              : int32           # epochs run
    code_version        : varchar(64)     # package version + git commit of the code that trained it
    python_version      : varchar(32)     #
    torch_version       : varchar(32)     #
    numpy_version       : varchar(32)     #
    host                : varchar(255)    # machine that trained it
    device              : varchar(255)    # GPU model or CPU
    started_at          : datetime        # training start (local time of the worker)
    finished_at         : datetime        # training end
    duration_s          : float64         # wall time of make_compute (s); of the last attempt when resumed
    resumed_from_epoch=0 : int32          # epoch of the checkpoint the run was resumed from (0: one go)
    data_checksums      : json            # {data_key: checksum} of the recordings used
    """

    class UsedScan(dj.Part):
        definition = """
        # a recording the model was trained on (its readout is keyed by the data key)
        -> master
        -> Scan
        ---
        checksum        : char(64)        # Scan.checksum at training time
        """

    class Epoch(dj.Part):
        definition = """
        # learning curve: one row per epoch
        -> master
        epoch           : int32           # 1-based
        ---
        lr              : float64         # learning rate of this epoch's updates
        train_loss      : float64         # mean per-batch objective (scaled Poisson loss + regularisers)
        val_corr        : float64         # validation single-trial correlation after the epoch
        seconds         : float64         # wall time of the epoch including validation
        """

    class Imported(dj.Part):
        definition = """
        # weights imported from a file (`sensorium import-checkpoint`) instead of trained here: no Epoch rows
        -> master
        ---
        source_file     : varchar(1024)   # the file as given
        source_sha256   : char(64)        # SHA-256 of its bytes
        """

    class Checkpoint(dj.Part):
        definition = """
        # the best weights (restored at the end of training)
        -> master
        ---
        state_dict      : <blob@sensorium> # {parameter name: array}, neuralpredictors 0.3.0 names
        n_parameters    : int64           # trainable parameters
        """

    @property
    def key_source(self):
        # only the combinations declared by an experiment, not the full product of the config tables, and
        # not those of import-only experiments (their weights come from `sensorium import-checkpoint`)
        return declared_models() & experiment_models(trainable_experiments())

    # -- three-part make: no transaction is open while the model trains -------------------------------

    def make_fetch(self, key: dict) -> tuple[dict, list[tuple[str, str]]]:
        return run_inputs(key)

    def make_compute(self, key: dict, spec_dict: dict, scans: list[tuple[str, str]]):
        from pipeline.run import RunSpec, run_training
        from pipeline.training.seeding import resolve_device

        settings = bound_settings()
        device = resolve_device(settings.device)
        spec = RunSpec.from_dicts(**spec_dict)
        recordings, regressors = stored_inputs([k for k, _ in scans], spec_dict["dataset_config"])
        from schemas.sweeps import pruner_for  # sweeps build on this module

        # the progress lines name the run by its experiment(s) and seed, known only in the database
        names = sorted({str(n) for n in (experiment_models() & key).to_arrays("experiment_name")})
        started = datetime.datetime.now()
        model, _, result = run_training(
            spec,
            recordings,
            device,
            cache_dir=settings.cache_dir,
            progress=True,
            regressors=regressors,
            checkpoint=self.checkpointer(key, spec_dict, scans),
            should_stop=lifecycle.training_should_stop,
            should_prune=pruner_for(key),  # a trial of a sweep that prunes: stop when clearly worse
            label=member_label(names, key["model_hash"], int(key["seed"])),
        )
        row = run_row(result.best_val_corr, result.epochs, started, result.resumed_from, scans, device)
        state = {k: v.numpy() for k, v in result.state_dict.items()}
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return row, [e.__dict__ for e in result.history], state, int(n_params)

    def make_insert(self, key: dict, row: dict, epochs: list[dict], state: dict, n_params: int) -> None:
        self.insert_run(key, row, epochs, state, n_params)

    @classmethod
    def insert_run(
        cls,
        key: dict,
        row: dict,
        epochs: list[dict],
        state: dict,
        n_params: int,
        imported: dict | None = None,
    ) -> None:
        """Insert one run: the row (:func:`run_row`), its scans, its learning curve, its weights and, for
        weights imported from a file, where they came from (``imported``: ``source_file``,
        ``source_sha256``). The one writer of these tables: training's ``make`` and checkpoint import."""
        direct = {"allow_direct_insert": True}  # an import inserts outside populate
        cls.insert1(dict(key, **row), **direct)
        cls.UsedScan.insert(
            [dict(key, data_key=k, checksum=c) for k, c in row["data_checksums"].items()], **direct
        )
        if epochs:  # an imported model has no learning curve
            cls.Epoch.insert(
                [
                    dict(
                        key,
                        epoch=e["epoch"],
                        lr=e["lr"],
                        train_loss=e["train_loss"],
                        val_corr=e["val_corr"],
                        seconds=e["seconds"],
                    )
                    for e in epochs
                ],
                **direct,
            )
        if imported is not None:
            cls.Imported.insert1(dict(key, **imported), **direct)
        cls.Checkpoint.insert1(dict(key, state_dict=state, n_parameters=int(n_params)), **direct)

    # -- loading a trained model (nnfabrik's ``load_model``) ---------------------------------------------

    def load_model(
        self,
        key: Any = None,
        include_dataloader: bool = False,
        device: str | torch.device | None = None,
    ) -> torch.nn.Module | tuple[dict[str, Any], torch.nn.Module]:
        """The trained model of ``key``, rebuilt from its configs with its best weights, in eval mode.

        As in nnfabrik, ``key`` (a dict or any restriction; None: this table as restricted already) must
        select exactly one trained model. With ``include_dataloader`` it returns ``(dataloaders, model)``,
        nnfabrik's order, where ``dataloaders`` maps each data key to the scan's tensors as the model sees
        them (``pipeline.data.loaders.ScanTensors``: images, behaviour, responses, tiers, ``batch(idx)``).
        ``device`` defaults to the one the pipeline predicts on (``SENSORIUM_DEVICE``).

        Raises:
            LookupError: ``key`` matches no trained model, or several (the message gives the count).
        """
        query = self if key is None else self & key
        keys = query.keys()
        if len(keys) != 1:
            raise LookupError(
                f"load_model needs a key that matches one trained model; it matches {len(keys)}"
                + (" (add the seed, dataset or model hash to the key)" if keys else "")
            )
        from pipeline.training.seeding import resolve_device

        settings = bound_settings()
        where = resolve_device(settings.device if device is None else str(device))
        # the one rebuild, shared with Prediction's make (a table may not call usecases: the layers)
        model, scans = load_trained_model(keys[0], where, settings.cache_dir)
        return (scans, model) if include_dataloader else model

    # -- checkpoints (one file per job key; deleted once the row is committed) ----------------------------

    @classmethod
    def checkpoint_dir(cls) -> Path:
        """``$SENSORIUM_CHECKPOINTS/<schema>/trained_model`` (the schema name keeps prefixes apart)."""
        return bound_settings().checkpoints / cls.database / cls.table_name.lstrip("_")

    @classmethod
    def checkpointer(cls, key: dict, spec_dict: dict, scans: list[tuple[str, str]]) -> Checkpointer:
        """The checkpoint of ``key``; used only by a run with the same configs, code and recordings."""
        from pipeline.training.checkpoint import Checkpointer

        pk = {k: key[k] for k in cls.primary_key}
        meta = {"key": pk, "spec": spec_hash(spec_dict), "code_version": code_version(), "data": dict(scans)}
        return Checkpointer(cls.checkpoint_dir() / f"{key_hash(pk)}.pt", meta)

    @classmethod
    def discard_checkpoint(cls, key: dict) -> None:
        """Delete the checkpoint of ``key`` (after its row is committed)."""
        from pipeline.training.checkpoint import Checkpointer

        pk = {k: key[k] for k in cls.primary_key}
        Checkpointer(cls.checkpoint_dir() / f"{key_hash(pk)}.pt", {}).delete()

    @classmethod
    def sweep_checkpoints(cls) -> int:
        """Delete checkpoints whose run is in the table (a crash between commit and delete). Returns count."""
        folder = cls.checkpoint_dir()
        removed = 0
        for sidecar in folder.glob("*.json") if folder.exists() else []:
            try:
                key = json.loads(sidecar.read_text())["meta"]["key"]
            except (OSError, ValueError, KeyError):
                continue  # being written right now, or not ours
            if cls & key:
                cls.discard_checkpoint(key)
                removed += 1
        return removed


def run_row(
    best_val_corr: float,
    epochs: int,
    started: datetime.datetime,
    resumed_from: int,
    scans: list[tuple[str, str]],
    device: torch.device,
) -> dict:
    """The secondary attributes of a ``TrainedModel`` row, ending now: scores, provenance, timing."""
    finished = datetime.datetime.now()
    return dict(
        best_val_corr=best_val_corr,
        epochs=epochs,
        started_at=started,
        finished_at=finished,
        duration_s=(finished - started).total_seconds(),
        resumed_from_epoch=resumed_from,
        data_checksums=dict(scans),
        **environment(device),
    )


def declared_models():
    """Model x Dataset x Trainer x Seed keys (restrict with ``experiment_models``)."""
    return Model.proj() * Dataset.proj() * Trainer.proj() * Seed.proj()


def spec_hash(spec_dict: dict) -> str:
    """Hash of a run's configs (canonical JSON)."""
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True, default=str).encode()).hexdigest()[:32]


def key_hash(key: dict) -> str:
    """File name of a job key's checkpoint."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def run_inputs(key: dict) -> tuple[dict, list[tuple[str, str]]]:
    """The configs of a TrainedModel key and the (data_key, checksum) of the scans it uses (small).

    Raises:
        ValueError: a scan named by the dataset config is not ingested, or there are no scans.
    """
    model = (Model & key).fetch1()
    dataset = (Dataset & key).fetch1()
    trainer = (Trainer & key).fetch1()
    spec_dict = dict(
        dataset_fn=dataset["dataset_fn"],
        dataset_config=dataset["dataset_config"],
        model_fn=model["model_fn"],
        model_config=model["model_config"],
        trainer_fn=trainer["trainer_fn"],
        trainer_config=trainer["trainer_config"],
        seed=int(key["seed"]),
    )
    stored = {r["data_key"]: r["checksum"] for r in Scan.proj("checksum").to_dicts()}
    wanted = dataset["dataset_config"].get("scans", "all")
    names = sorted(stored) if wanted == "all" else list(wanted)
    missing = [k for k in names if k not in stored]
    if missing:
        raise ValueError(f"dataset {key['dataset_hash'][:8]} names scans that are not ingested: {missing}")
    if not names:
        raise ValueError("no scans are ingested; run `sensorium ingest` first")
    return spec_dict, [(k, stored[k]) for k in names]


def stored_inputs(keys: list[str], dataset_config: dict) -> tuple[Lazy, Lazy]:
    """The recordings and regressors of ``keys`` as lazy mappings: training reads them one scan at a time
    and keeps only the tensors (peak host memory: the tensors plus one raw recording)."""
    from pipeline.run import Lazy

    recordings = Lazy(keys, lambda k: Scan().fetch_recording({"data_key": k}))
    regressors = Lazy(keys, lambda k: fetch_regressors(k, dataset_config))
    return recordings, regressors


def load_trained_model(
    key: dict, device: torch.device, cache_dir=None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model with its best weights, and its scans' tensors, on ``device``."""
    import torch

    from pipeline.run import RunSpec, build_model, load_scans

    spec_dict, _ = run_inputs(key)
    spec = RunSpec.from_dicts(**spec_dict)
    used = [r["data_key"] for r in (TrainedModel.UsedScan & key).to_dicts(order_by="data_key")]
    recordings, regressors = stored_inputs(used, spec_dict["dataset_config"])
    scans, geometry = load_scans(recordings, spec.dataset_config, device, cache_dir, regressors)
    model = build_model(spec, geometry, scans)
    state = (TrainedModel.Checkpoint & key).fetch1("state_dict")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model.to(device).eval(), scans
