"""Recordings (``Scan``, ``GroundTruth``) and their time order (``TrialOrder``, ``ExactTrialOrder``).

Storing a recording is :mod:`usecases.ingest`."""

from __future__ import annotations

import logging

import datajoint as dj
import numpy as np

from pipeline.data.recording import NEURON_FIELDS, TRIAL_FIELDS, Recording
from pipeline.regressors.trial_order import trial_order

log = logging.getLogger(__name__)
schema = dj.Schema()


@schema
class Tier(dj.Lookup):
    definition = """
    # a tier of trials (docs/model.md#tiers)
    tier                : varchar(16)     # train | validation | test | final_test
    ---
    known               : bool            # responses may be used by models (train, validation)
    """
    contents = [("train", True), ("validation", True), ("test", False), ("final_test", False)]


@schema
class Scan(dj.Manual):
    definition = """
    # one recording: a SENSORIUM 2022 data_key (animal-session-scan), ingested all-or-nothing
    data_key            : varchar(32)     # animal-session-scan, e.g. 27204-5-13
    ---
    animal_id           : int64           # meta/neurons/animal_ids
    session             : int64           # meta/neurons/sessions
    scan_idx            : int64           # meta/neurons/scan_idx
    folder_name         : varchar(255)    # static<key>-GrayImageNet-<hash>
    source              : varchar(1024)   # folder or zip read from (relative to the data root if inside)
    checksum            : char(64)        # SHA-256 over the recording's file contents
    n_neurons           : int32           # N
    n_trials            : int32           # T, all tiers
    image_height        : int32           # pixels, as stored
    image_width         : int32           # pixels, as stored
    trial_idx_hashed    : bool            # true for competition recordings (trial_idx not the time order)
    images              : <npy@sensorium> # (T, 1, H, W) stimuli in file-index order, dtype as stored
    responses           : <npy@sensorium> # (T, N) responses in file-index order (zeros where withheld)
    statistics          : <blob>          # meta/statistics: {var: {variant: {min,max,mean,median,std}}}
    extra_meta          : <blob>          # meta/neurons and meta/trials arrays not kept in the part tables
    ingested_at = CURRENT_TIMESTAMP : datetime  # when the row was inserted
    """

    class Neuron(dj.Part):
        definition = """
        # one neuron of the recording (column of `responses`)
        -> master
        neuron_idx      : int32           # position in the recording (0..N-1)
        ---
        unit_id         : int64           # meta/neurons/unit_ids, used in submissions
        cortex_x        : float32         # cell_motor_coordinates x (um)
        cortex_y        : float32         # cell_motor_coordinates y (um)
        cortex_z        : float32         # cell_motor_coordinates z (um)
        area            : varchar(32)     # brain area
        layer           : varchar(32)     # cortical layer
        """

    class Trial(dj.Part):
        definition = """
        # one trial (row of `images`/`responses`), with its behaviour and eye position
        -> master
        trial_id        : int32           # file index i of data/<var>/<i>.npy
        ---
        -> Tier                           # original tier of the trial
        frame_image_id  : int64           # image id; repeats share it
        trial_idx       : varchar(64)     # meta/trials/trial_idx as given (hashed for competition mice)
        frame_trial_ts  : datetime        # presentation time (1-s resolution in the real data)
        pupil           : float32         # behavior[0]: pupil dilation
        dpupil          : float32         # behavior[1]: derivative of pupil dilation
        running         : float32         # behavior[2]: running speed
        pupil_x         : float32         # pupil_center[0]: horizontal eye position
        pupil_y         : float32         # pupil_center[1]: vertical eye position
        """

    class TierInfo(dj.Part):
        definition = """
        # the trials of one tier of the recording
        -> master
        -> Tier
        ---
        n_trials        : int32           # trials in the tier
        n_images        : int32           # distinct images shown
        responses_withheld : bool         # all responses are zero (competition test tiers)
        """

    def fetch_recording(self, key: dict) -> Recording:
        """Rebuild the :class:`Recording` of one scan from the database (file-index order)."""
        row = (Scan & key).fetch1()
        neurons_q = (Scan.Neuron & key).to_dicts(order_by="neuron_idx")
        trials_q = (Scan.Trial & key).to_dicts(order_by="trial_id")
        # blobs return string arrays as object arrays: give them back as unicode arrays
        extra = {k: v.astype(str) if v.dtype == object else v for k, v in row["extra_meta"].items()}
        neurons = {k[len("neurons/") :]: v for k, v in extra.items() if k.startswith("neurons/")}
        trials = {k[len("trials/") :]: v for k, v in extra.items() if k.startswith("trials/")}
        neurons["unit_ids"] = np.array([n["unit_id"] for n in neurons_q])
        neurons["cell_motor_coordinates"] = np.array(
            [[n["cortex_x"], n["cortex_y"], n["cortex_z"]] for n in neurons_q], dtype=np.float32
        )
        for name in ("area", "layer"):
            neurons.setdefault(name, np.array([n[name] for n in neurons_q]))
        trials["tiers"] = np.array([t["tier"] for t in trials_q])
        trials["frame_image_id"] = np.array([t["frame_image_id"] for t in trials_q])
        trials.setdefault("trial_idx", np.array([t["trial_idx"] for t in trials_q]))
        return Recording(
            data_key=row["data_key"],
            images=np.asarray(row["images"]),
            responses=np.asarray(row["responses"]),
            behavior=np.array([[t["pupil"], t["dpupil"], t["running"]] for t in trials_q], dtype=np.float32),
            pupil_center=np.array([[t["pupil_x"], t["pupil_y"]] for t in trials_q], dtype=np.float32),
            neurons=neurons,
            trials=trials,
            statistics=row["statistics"],
            checksum=row["checksum"],
            extra={"folder_name": row["folder_name"]},
        )


@schema
class TrialOrder(dj.Computed):
    definition = """
    # time order of the trials from a stable sort of the timestamps, checked against trial_idx where numeric
    -> Scan
    ---
    n_tied              : int32           # trials sharing their (1-s) timestamp with another trial
    trial_idx_numeric   : bool            # trial_idx is the presentation order (not hashed)
    consistent = null   : bool            # timestamps never decrease along trial_idx (null when hashed)
    n_rank_mismatch = null : int32        # trials whose rank differs from the trial_idx rank (ties only)
    """

    class Trial(dj.Part):
        definition = """
        # time rank of one trial
        -> master
        -> Scan.Trial
        ---
        rank            : int32           # position in time (0 = first trial presented)
        """

    def make(self, key: dict) -> None:
        rows, timestamps, trial_idx = _order_inputs(key)
        result = trial_order(timestamps, trial_idx)
        self.insert1(
            dict(
                key,
                n_tied=result.n_tied,
                trial_idx_numeric=result.trial_idx_numeric,
                consistent=result.consistent,
                n_rank_mismatch=result.n_rank_mismatch,
            )
        )
        self.Trial.insert(
            [dict(key, trial_id=r["trial_id"], rank=int(result.rank[i])) for i, r in enumerate(rows)]
        )


def _order_inputs(key: dict) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(trial rows, timestamps (T,) datetime64[us], trial_idx (T,)) of a scan, file-index order."""
    rows = (Scan.Trial & key).to_dicts(order_by="trial_id")
    timestamps = np.array([r["frame_trial_ts"] for r in rows], dtype="datetime64[us]")
    return rows, timestamps, np.array([r["trial_idx"] for r in rows])


@schema
class ExactTrialOrder(dj.Computed):
    definition = """
    # time order with ties within a second broken by trial_idx where it is numeric
    -> Scan
    ---
    rule                : varchar(32)     # timestamp+trial_idx, or timestamp (trial_idx hashed)
    n_reordered         : int32           # trials whose rank differs from TrialOrder's
    """

    class Trial(dj.Part):
        definition = """
        # time rank of one trial under this rule
        -> master
        -> Scan.Trial
        ---
        rank            : int32           # position in time (0 = first trial presented)
        """

    def make(self, key: dict) -> None:
        rows, timestamps, trial_idx = _order_inputs(key)
        exact = trial_order(timestamps, trial_idx, rule="exact")
        plain = trial_order(timestamps, trial_idx)
        self.insert1(dict(key, rule=exact.rule, n_reordered=int((exact.rank != plain.rank).sum())))
        self.Trial.insert(
            [dict(key, trial_id=r["trial_id"], rank=int(exact.rank[i])) for i, r in enumerate(rows)]
        )


def time_ranks(key: dict, rule: str = "timestamp") -> np.ndarray:
    """(T,) time rank of every trial of a scan (file-index order) under ``rule`` (``timestamp``:
    ``TrialOrder``; ``exact``: ``ExactTrialOrder``).

    Raises:
        LookupError: the order of that rule is not computed yet.
    """
    table = ExactTrialOrder if rule == "exact" else TrialOrder
    ranks = (table.Trial & {"data_key": key["data_key"]}).to_dicts(order_by="trial_id")
    if not ranks:
        raise LookupError(
            f"{table.__name__} has no rows for scan {key['data_key']}: run `sensorium populate`"
        )
    return np.array([r["rank"] for r in ranks], dtype=np.int64)


@schema
class GroundTruth(dj.Manual):
    definition = """
    # planted truth of a synthetic recording, from its sidecar <name>.truth.npz (ingested with the scan)
    -> Scan
    ---
    expected            : <npy@sensorium> # (T, N) expected response given everything up to the trial
    responses           : <npy@sensorium> # (T, N) responses before zeroing (competition tiers included)
    time_rank           : <npy@sensorium> # (T,) true presentation position of each file index
    latents             : <npy@sensorium> # (T, K) planted network state
    gain                : <npy@sensorium> # (T,) planted session gain drift
    neuron_truth        : <blob>          # per-neuron planted parameters {name: (N, ...) array}
    generator_config    : json            # SynthConfig of the generator
    sidecar_checksum    : char(64)        # SHA-256 of the sidecar file
    """


__all__ = [
    "Scan",
    "TrialOrder",
    "ExactTrialOrder",
    "GroundTruth",
    "NEURON_FIELDS",
    "TRIAL_FIELDS",
]
