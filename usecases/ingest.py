"""Ingest: a recording in the SENSORIUM format (and the ground-truth sidecar of a synthetic one) into
``Scan``, ``GroundTruth`` and ``TrialOrder``, all-or-nothing."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.cache import load_recording
from pipeline.data.format import parse_timestamps
from pipeline.data.recording import Recording
from pipeline.data.synth import truth_path
from schemas.data import GroundTruth, Scan, TrialOrder
from schemas.dj_compat import store_writes_removed_on_error
from schemas.locks import advisory_lock

log = logging.getLogger(__name__)


class IngestConflictError(ValueError):
    """A different recording is already stored under the same data key."""


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
        with store_writes_removed_on_error(), conn.transaction:
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
