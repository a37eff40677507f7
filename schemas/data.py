"""Recordings (``Scan``) and their time order (``TrialOrder``)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import datajoint as dj
import numpy as np

from pipeline.data.cache import load_recording
from pipeline.data.format import parse_timestamps
from pipeline.data.recording import NEURON_FIELDS, TRIAL_FIELDS, Recording
from pipeline.data.synth import truth_path
from pipeline.regressors.trial_order import trial_order

log = logging.getLogger(__name__)
schema = dj.Schema()


class IngestConflictError(ValueError):
    """A different recording is already stored under the same data key."""


@schema
class Tier(dj.Lookup):
    definition = """
    # a tier of trials (SPEC 1.3)
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
    # time order with ties within a second broken by trial_idx where it is numeric (issue 12)
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


# ------------------------------------------------------------------------------------------------------
# ingest
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestResult:
    data_key: str
    status: str  # "inserted" | "exists"
    checksum: str


def ingest(
    path: str | Path, *, cache_dir: Path, data_root: Path | None = None, progress: bool = True
) -> IngestResult:
    """Validate a recording and store it, all-or-nothing.

    The recording is read and validated completely before the database is touched. The insert runs in
    one transaction holding an advisory lock on the data key, so two processes ingesting the same
    recording store it once. Ingesting the same content again is a no-op; a different recording under an
    existing key raises :class:`IngestConflictError` and changes nothing.
    """
    path = Path(path).resolve()
    rec = load_recording(path, cache_dir, progress=progress)
    source = str(path.relative_to(data_root)) if data_root and path.is_relative_to(data_root) else str(path)
    truth = _read_truth(path, rec)
    conn = Scan.connection
    key = {"data_key": rec.data_key}
    # a recording already stored needs no write, hence no lock (a read-only analyst may re-run an ingest)
    existing = _stored(key)
    if existing is None:
        with _store_writes_removed_on_error(), conn.transaction:
            _lock(conn, rec.data_key)
            existing = _stored(key)  # stored by another process while this one waited
            if existing is None:
                _warn_if_copy(path, rec)
                _insert(rec, key, source)
                if truth is not None:
                    GroundTruth.insert1(dict(key, **truth))
    if existing is not None:
        if existing["checksum"] == rec.checksum:
            return IngestResult(rec.data_key, "exists", rec.checksum)
        raise IngestConflictError(
            f"{path}: data_key {rec.data_key} is already stored from {existing['source']} "
            f"with checksum {existing['checksum'][:12]}..., "
            f"but this recording has checksum {rec.checksum[:12]}...; "
            "refusing to replace it (delete the stored scan first if that is intended)"
        )
    TrialOrder.populate(key, display_progress=False)
    return IngestResult(rec.data_key, "inserted", rec.checksum)


class _ForeignSidecarError(Exception):
    """A ground-truth sidecar that is not this project's (a foreign or partial file).

    ``field`` names the array that is missing or wrong (None: the file itself); ``problem`` continues the
    sentence "field <field> ..." (or "the file ..."), e.g. "missing" or "has shape (3,), expected (150, 20)".
    """

    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(field, problem)
        self.field, self.problem = field, problem

    def __str__(self) -> str:
        return f"the file {self.problem}" if self.field is None else f"field {self.field!r} {self.problem}"


# per-neuron planted parameters (optional: what GroundTruth.neuron_truth keeps of a sidecar)
_NEURON_TRUTH = (
    "gain_coupling",
    "history_weight",
    "rf_center",
    "behavior_weight",
    "image_weight",
    "latent_loadings",
)


def _read_truth(path: Path, rec: Recording) -> dict | None:
    """The ground-truth sidecar beside a synthetic recording, checked against it; None if absent.

    The sidecar is optional and the recording is valid competition data without it, so a sidecar that is
    not this project's ground truth (not an npz, a missing field, a wrong shape) is ignored with one
    warning naming the file and the field, instead of refusing the recording. Called before the ingest
    transaction opens, so a bad sidecar can never leave a half-written scan.
    """
    sidecar = truth_path(path)
    if not sidecar.exists():
        return None
    try:
        return _load_truth(sidecar, rec)
    except _ForeignSidecarError as err:
        log.warning(
            "ignoring ground-truth sidecar %s: %s (not this project's ground truth); "
            "ingesting the recording without ground truth",
            sidecar,
            err,
        )
        return None


def _load_truth(sidecar: Path, rec: Recording) -> dict:
    """Read and check a sidecar; :class:`_ForeignSidecarError` for anything but this project's truth."""
    try:
        raw = sidecar.read_bytes()
    except OSError as err:  # a folder, or no read permission
        raise _ForeignSidecarError(None, f"cannot be read ({err.strerror or err})") from None
    # np.load guesses the format from the first bytes: check for a zip first, for a message that fits
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise _ForeignSidecarError(None, "is not an .npz archive")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        # truncated or corrupt members, object arrays (refused without pickle)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise _ForeignSidecarError(None, f"is not a readable .npz archive ({first})") from None
    T, N = rec.responses.shape
    shapes = {"expected": (T, N), "responses": (T, N), "time_rank": (T,), "latents": (T, None), "gain": (T,)}
    for name, shape in shapes.items():
        arr = _truth_array(data, name)
        fits = arr.ndim == len(shape) and all(
            want in (None, n) for want, n in zip(shape, arr.shape, strict=True)
        )
        if not fits:
            wanted = str(shape).replace("None", "K")
            raise _ForeignSidecarError(name, f"has shape {arr.shape}, expected {wanted} like the recording")
        if not np.all(np.isfinite(arr)):
            raise _ForeignSidecarError(name, "has NaN or infinite values")
    if not np.array_equal(np.sort(data["time_rank"]), np.arange(T)):
        raise _ForeignSidecarError("time_rank", f"is not a permutation of 0..{T - 1}")
    neuron_truth = {}
    for name in _NEURON_TRUTH:
        if name in data:
            arr = _truth_array(data, name)
            if arr.ndim == 0 or arr.shape[0] != N:
                raise _ForeignSidecarError(name, f"has shape {arr.shape}, expected one row per neuron ({N})")
            neuron_truth[name] = arr
    config = data.get("config")
    if config is None:
        raise _ForeignSidecarError("config", "missing")
    try:
        generator_config = json.loads(str(config)) if config.dtype.kind == "U" and config.ndim == 0 else None
    except ValueError:
        generator_config = None
    if not isinstance(generator_config, dict):
        raise _ForeignSidecarError("config", "is not the generator's settings as a JSON string")
    return dict(
        expected=data["expected"],
        responses=data["responses"],
        time_rank=data["time_rank"],
        latents=data["latents"],
        gain=data["gain"],
        neuron_truth=neuron_truth,
        generator_config=generator_config,
        sidecar_checksum=hashlib.sha256(raw).hexdigest(),
    )


def _truth_array(data: dict, name: str) -> np.ndarray:
    """``data[name]``, checked to be a numeric array (:class:`_ForeignSidecarError` otherwise)."""
    if name not in data:
        raise _ForeignSidecarError(name, "missing")
    arr = data[name]
    # np.load hands back non-.npy members of the zip as bytes
    if not isinstance(arr, np.ndarray):
        raise _ForeignSidecarError(name, f"is {type(arr).__name__}, expected a numeric array")
    if arr.dtype.kind not in "biuf":
        raise _ForeignSidecarError(name, f"has dtype {arr.dtype}, expected a numeric array")
    return arr


# object-store files written by this thread while a `_store_writes_removed_on_error` block is open
_written = threading.local()


def _record_store_writes() -> None:
    """Wrap DataJoint's one write of a file (``StorageBackend.put_buffer``), once per process, so that
    writes made inside a :func:`_store_writes_removed_on_error` block are recorded (in that thread)."""
    from datajoint.storage import StorageBackend

    put_buffer = StorageBackend.put_buffer
    if getattr(put_buffer, "_sensorium_recorded", False):
        return

    def recorded_put_buffer(backend: StorageBackend, buffer: bytes, remote_path: str | PurePosixPath) -> None:
        paths = getattr(_written, "paths", None)
        if paths is not None:
            paths.append((backend, str(remote_path)))  # before writing: a partial file goes too
        put_buffer(backend, buffer, remote_path)

    recorded_put_buffer._sensorium_recorded = True  # type: ignore[attr-defined]
    StorageBackend.put_buffer = recorded_put_buffer  # type: ignore[method-assign]


@contextmanager
def _store_writes_removed_on_error() -> Iterator[None]:
    """Remove the object-store files written in the block when it raises.

    DataJoint writes an ``<npy@...>`` attribute's file while it encodes the row, before the INSERT runs:
    an insert that then fails (a login without INSERT rights, a constraint, a lost connection) or a
    transaction rolled back later would leave files that no row references. Every file written through
    DataJoint's storage backend in this thread is recorded and removed again on error (place the block
    outside the transaction, so that the rollback has happened when the files go). Files written by other
    threads and processes are never touched.
    """
    _record_store_writes()
    outer = getattr(_written, "paths", None)
    _written.paths = paths = []
    try:
        yield
    except BaseException:
        for backend, remote_path in paths:
            try:
                backend.remove(remote_path)
            except Exception as err:  # the ingest's own error is the one to report
                log.warning("could not remove %s from the object store: %s", remote_path, err)
        raise
    finally:
        _written.paths = outer
        if outer is not None:  # an enclosing block answers for these files too
            outer.extend(paths)


def _stored(key: dict) -> dict | None:
    """Checksum and source of the stored scan of ``key`` (no arrays fetched), or None."""
    rows = (Scan & key).proj("checksum", "source").to_dicts()
    return rows[0] if rows else None


def _warn_if_copy(path: Path, rec: Recording) -> None:
    """Say when the same content is already stored under another data key (it is stored again)."""
    copies = sorted(r["data_key"] for r in (Scan & {"checksum": rec.checksum}).proj().to_dicts())
    if copies:
        log.warning(
            "%s: the same content is already stored as %s; storing it under %s as well "
            "(a data key comes from the folder name)",
            path,
            ", ".join(copies),
            rec.data_key,
        )


def _lock(conn, data_key: str) -> None:
    """Serialise ingests of the same key for the rest of the transaction (a bounded wait: a lock held
    elsewhere for ``SENSORIUM_LOCK_TIMEOUT_S`` raises ``schemas.locks.LockTimeoutError``)."""
    from schemas.locks import advisory_lock

    advisory_lock(conn, f"sensorium-ingest:{data_key}", f"the ingest lock of {data_key}", transaction=True)


def _insert(rec: Recording, key: dict, source: str) -> None:
    n = rec.neurons
    t = rec.trials
    kept_neurons = {"unit_ids", "cell_motor_coordinates", "area", "layer"}
    kept_trials = {"tiers", "frame_image_id", "frame_trial_ts"}
    extra = {f"neurons/{k}": np.asarray(v) for k, v in n.items() if k not in kept_neurons}
    extra |= {f"trials/{k}": np.asarray(v) for k, v in t.items() if k not in kept_trials}
    timestamps = parse_timestamps(t["frame_trial_ts"])
    extra["trials/frame_trial_ts"] = np.asarray(t["frame_trial_ts"])  # raw strings, for exact round trips
    _, _, H, W = rec.images.shape
    Scan.insert1(
        dict(
            key,
            animal_id=int(np.asarray(n["animal_ids"]).ravel()[0]),
            session=int(np.asarray(n["sessions"]).ravel()[0]),
            scan_idx=int(np.asarray(n["scan_idx"]).ravel()[0]),
            folder_name=rec.extra.get("folder_name", ""),
            source=source,
            checksum=rec.checksum,
            n_neurons=rec.n_neurons,
            n_trials=rec.n_trials,
            image_height=H,
            image_width=W,
            trial_idx_hashed=not rec.trial_idx_is_numeric,
            images=np.ascontiguousarray(rec.images),
            responses=np.ascontiguousarray(rec.responses),
            statistics=rec.statistics,
            extra_meta=extra,
        )
    )
    coords = np.asarray(n["cell_motor_coordinates"], dtype=np.float64)
    Scan.Neuron.insert(
        [
            dict(
                key,
                neuron_idx=i,
                unit_id=int(n["unit_ids"][i]),
                cortex_x=coords[i, 0],
                cortex_y=coords[i, 1],
                cortex_z=coords[i, 2],
                area=str(n["area"][i]),
                layer=str(n["layer"][i]),
            )
            for i in range(rec.n_neurons)
        ]
    )
    tiers = np.asarray(t["tiers"]).astype(str)
    image_ids = np.asarray(t["frame_image_id"])
    Scan.TierInfo.insert(
        [
            dict(
                key,
                tier=tier,
                n_trials=int((tiers == tier).sum()),
                n_images=len(np.unique(image_ids[tiers == tier])),
                responses_withheld=bool(np.all(np.asarray(rec.responses)[tiers == tier] == 0)),
            )
            for tier in np.unique(tiers)
        ]
    )
    trial_idx = np.asarray(t["trial_idx"]).astype(str)
    Scan.Trial.insert(
        [
            dict(
                key,
                trial_id=i,
                tier=str(t["tiers"][i]),
                frame_image_id=int(t["frame_image_id"][i]),
                trial_idx=trial_idx[i],
                frame_trial_ts=timestamps[i].item(),
                pupil=float(rec.behavior[i, 0]),
                dpupil=float(rec.behavior[i, 1]),
                running=float(rec.behavior[i, 2]),
                pupil_x=float(rec.pupil_center[i, 0]),
                pupil_y=float(rec.pupil_center[i, 1]),
            )
            for i in range(rec.n_trials)
        ]
    )


__all__ = [
    "Scan",
    "TrialOrder",
    "ingest",
    "IngestConflictError",
    "IngestResult",
    "NEURON_FIELDS",
    "TRIAL_FIELDS",
]
