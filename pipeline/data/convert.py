"""Plain arrays -> one recording in the SENSORIUM 2022 format (``docs/real-data.md``).

A lab with its own recordings usually has them as arrays: the images shown, the responses of every
neuron, the behaviour and eye position per trial, the tiers and timestamps, the neurons' cortex
coordinates. :func:`recording_from_arrays` checks them (shape, dtype, finite values, known tiers, one
length T for every per-trial array, one N for every per-neuron array), fills in what is optional, computes
the ``meta/statistics`` the loaders normalise with, and returns a
:class:`~pipeline.data.recording.Recording`; :func:`write_converted` writes it with the project's own
writer (:func:`pipeline.data.format.write_recording`) as ``static<animal>-<session>-<scan>-GrayImageNet-
<hash>/`` (and its ``.zip``), which ``sensorium ingest`` then reads like a competition recording.
:func:`load_npz` reads those arrays from an ``.npz`` file (``sensorium convert``).

Every problem raises :class:`ConvertError` naming the array, what was expected and what was found, before
anything is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from pipeline.data.format import MAX_RECORDING_BYTES, RecordingFormatError, parse_timestamps, write_recording
from pipeline.data.recording import STATISTICS, TIERS, Recording

#: arrays every conversion needs, by their name in the format (and in an ``.npz`` for ``sensorium convert``)
REQUIRED = (
    "images",  # (T, H, W) or (T, 1, H, W), numbers
    "responses",  # (T, N) deconvolved activity
    "behavior",  # (T, 3) pupil dilation, its derivative, running speed
    "pupil_center",  # (T, 2) horizontal, vertical eye position
    "tiers",  # (T,) train | validation | test | final_test
    "frame_trial_ts",  # (T,) presentation time: datetime64, ISO text or "Timestamp('...')"
    "cell_motor_coordinates",  # (N, 3) cortex x, y, z in micrometres
)
#: arrays with a default (see :func:`recording_from_arrays`)
OPTIONAL = ("unit_ids", "animal_id", "session", "scan_idx", "frame_image_id", "trial_idx", "area", "layer")
FIELDS = REQUIRED + OPTIONAL
#: the longest data key (``Scan.data_key`` is a varchar(32)), ``trial_idx`` text and area / layer label
MAX_KEY_CHARS, MAX_TRIAL_IDX_CHARS, MAX_LABEL_CHARS = 32, 64, 32
#: the competition's folder-name pattern; the hash part here is a digest of the converted arrays
FOLDER_PATTERN = "static{key}-GrayImageNet-{digest}"


class ConvertError(ValueError):
    """One array (or the input file, ``--from``, or the output folder, ``out``) is not convertible.

    Attributes:
        field: the array's name, ``--from`` or ``out``.
        expected: what a conversion needs.
        found: what is there.
    """

    def __init__(self, field: str, expected: str, found: str) -> None:
        self.field, self.expected, self.found = field, expected, found
        super().__init__(f"{field}: expected {expected}, found {found}")


# --------------------------------------------------------------------------------------------------
# reading an .npz
# --------------------------------------------------------------------------------------------------


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file (``np.savez(path, images=..., responses=..., ...)``).

    Nothing in the file is executed (``allow_pickle=False``: object arrays are refused); only names of
    :data:`FIELDS` are accepted (a misspelt name is an error, not a silently missing array); the arrays
    may hold at most :data:`~pipeline.data.format.MAX_RECORDING_BYTES` uncompressed, the limit of a
    recording, checked from the archive's directory before anything is decompressed.

    Raises:
        ConvertError: ``--from`` for the file itself, else the array's name.
    """
    path = Path(path)
    if not path.exists():
        raise ConvertError("--from", "an .npz file", f"nothing at {path}")
    if not path.is_file():
        raise ConvertError("--from", "an .npz file", f"something other than a regular file at {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ConvertError(
            "--from", "an .npz archive (np.savez)", f"no readable zip archive ({err})"
        ) from None
    names: list[str] = []
    for info in infos:
        name = info.filename.removesuffix(".npy")
        if name not in FIELDS:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise ConvertError(shown, f"one of the arrays {', '.join(FIELDS)}", "an unknown name")
        if name in names:
            raise ConvertError(name, "one array of this name", "two")
        names.append(name)
    total = sum(i.file_size for i in infos)
    if total > MAX_RECORDING_BYTES:
        raise ConvertError(
            "--from", f"at most {MAX_RECORDING_BYTES >> 30} GiB of arrays (uncompressed)", f"{total} bytes"
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in names:
                try:
                    arrays[name] = npz[name]
                except ValueError as err:
                    if "allow_pickle" in str(err):
                        raise ConvertError(
                            name, "a plain array of numbers or text", "an object array (pickles are not read)"
                        ) from None
                    raise ConvertError(name, "a readable .npy array", _first_line(err)) from None
                except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                    raise ConvertError(name, "an intact member of the archive", _first_line(err)) from None
    except (OSError, zipfile.BadZipFile) as err:  # np.load itself (e.g. a file removed meanwhile)
        raise ConvertError("--from", "a readable .npz archive", _first_line(err)) from None
    return arrays


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# --------------------------------------------------------------------------------------------------
# checking and completing the arrays
# --------------------------------------------------------------------------------------------------


def recording_from_arrays(
    *,
    images: ArrayLike,
    responses: ArrayLike,
    behavior: ArrayLike,
    pupil_center: ArrayLike,
    tiers: ArrayLike,
    frame_trial_ts: ArrayLike,
    cell_motor_coordinates: ArrayLike,
    unit_ids: ArrayLike | None = None,
    animal_id: ArrayLike | None = None,
    session: ArrayLike | None = None,
    scan_idx: ArrayLike | None = None,
    frame_image_id: ArrayLike | None = None,
    trial_idx: ArrayLike | None = None,
    area: ArrayLike | None = None,
    layer: ArrayLike | None = None,
) -> Recording:
    """Check the arrays of one recording and complete them into a :class:`Recording`.

    T (trials) is the length of ``responses``, N (neurons) its width; every per-trial array must have T
    entries and every per-neuron array N, in the same order. Trials may come in any order (the
    competition's files are shuffled); the time order is taken from ``frame_trial_ts``.

    Args:
        images: (T, H, W) or (T, 1, H, W) grey images, integers or floats; kept in their dtype (uint8
            keeps the recording small). They must not all be one value (the loaders divide by their std).
        responses: (T, N) responses (e.g. deconvolved calcium activity), finite; stored as float32.
        behavior: (T, 3) pupil dilation, its derivative, running speed, finite; float32. Zeros where not
            measured (as in the competition's SENSORIUM-track mouse); train without behaviour then.
        pupil_center: (T, 2) horizontal and vertical eye position, finite; float32.
        tiers: (T,) text, each one of ``train``, ``validation``, ``test``, ``final_test``; at least one
            ``train`` trial (the statistics are computed over them).
        frame_trial_ts: (T,) presentation times: datetime64, ISO text (``2023-05-01T10:00:00``) or the
            competition's ``Timestamp('2023-05-01 10:00:00')``; stored in the competition's form.
        cell_motor_coordinates: (N, 3) cortex x, y, z in micrometres, finite; float32.
        unit_ids: (N,) distinct integer neuron ids (the ids of a submission); default 1..N.
        animal_id, session, scan_idx: non-negative integers; they form the data key
            ``animal-session-scan`` (at most 32 characters). Default 0 each: give them, so that two
            recordings of a lab do not share the key ``0-0-0`` (ingest refuses a second one under a key).
        frame_image_id: (T,) integer image ids, equal for repeats of one image; default: trials showing
            identical pixels share an id (numbered in order of first appearance).
        trial_idx: (T,) distinct trial ids, integers (the presentation order, as in the pre-training
            recordings) or text of at most 64 characters; default: the time rank from ``frame_trial_ts``
            (ties in the given order).
        area, layer: a label or (N,) labels of at most 32 characters; default ``unknown``.

    Returns:
        The recording, with ``extra["folder_name"]`` = ``static<key>-GrayImageNet-<digest>`` (the digest
        identifies the converted arrays).

    Raises:
        ConvertError: the first problem, naming the array.
    """
    resp = _floats("responses", responses, ndim=2, what="(T, N)")
    T, N = resp.shape
    if T < 1 or N < 1:
        raise ConvertError(
            "responses", "shape (T, N) with T >= 1 trials and N >= 1 neurons", f"shape {resp.shape}"
        )
    imgs = _images(images, T)
    beh = _floats("behavior", behavior, ndim=2, what="(T, 3)", shape=(T, 3))
    eye = _floats("pupil_center", pupil_center, ndim=2, what="(T, 2)", shape=(T, 2))
    tier = _tiers(tiers, T)
    stamps = _timestamps(frame_trial_ts, T)
    coords = _floats("cell_motor_coordinates", cell_motor_coordinates, ndim=2, what="(N, 3)", shape=(N, 3))
    units = np.arange(1, N + 1, dtype=np.int64) if unit_ids is None else _integers("unit_ids", unit_ids, N)
    if unit_ids is not None:
        _distinct("unit_ids", units)
    key_parts = [
        _key_part(name, value)
        for name, value in (("animal_id", animal_id), ("session", session), ("scan_idx", scan_idx))
    ]
    data_key = "-".join(str(p) for p in key_parts)
    if len(data_key) > MAX_KEY_CHARS:
        raise ConvertError(
            "animal_id",
            f"a data key animal-session-scan of at most {MAX_KEY_CHARS} characters",
            repr(data_key),
        )
    image_ids = (
        _image_ids_from_pixels(imgs)
        if frame_image_id is None
        else _integers("frame_image_id", frame_image_id, T)
    )
    if trial_idx is None:
        trial_ids: np.ndarray = np.empty(T, dtype=np.int64)
        trial_ids[np.argsort(stamps, kind="stable")] = np.arange(T)
    else:
        trial_ids = _trial_ids(trial_idx, T)
    neurons = {
        "unit_ids": units,
        "animal_ids": np.full(N, key_parts[0], dtype=np.int64),
        "sessions": np.full(N, key_parts[1], dtype=np.int64),
        "scan_idx": np.full(N, key_parts[2], dtype=np.int64),
        "area": _labels("area", area, N),
        "layer": _labels("layer", layer, N),
        "cell_motor_coordinates": coords,
    }
    trials = {
        "tiers": tier,
        "frame_image_id": image_ids,
        "trial_idx": trial_ids,
        "frame_trial_ts": _timestamp_text(stamps),
    }
    train = tier == "train"
    statistics = {
        "images": {"all": _statistics(imgs[train], per_channel=False)},
        "responses": {"all": _statistics(resp[train], per_channel=True)},
        "behavior": {"all": _statistics(beh[train], per_channel=True)},
        "pupil_center": {"all": _statistics(eye[train], per_channel=True)},
    }
    arrays = [imgs, resp, beh, eye, coords, *neurons.values(), *trials.values()]
    return Recording(
        data_key=data_key,
        images=imgs,
        responses=resp,
        behavior=beh,
        pupil_center=eye,
        neurons=neurons,
        trials=trials,
        statistics=statistics,
        extra={"folder_name": FOLDER_PATTERN.format(key=data_key, digest=_digest(arrays))},
    )


def _array(field: str, value: ArrayLike) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:  # e.g. ragged nested lists
        raise ConvertError(field, "an array", _first_line(err)) from None


def _floats(
    field: str, value: ArrayLike, *, ndim: int, what: str, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A numeric array of ``shape`` (or of ``ndim`` dimensions), finite, as float32."""
    arr = _array(field, value)
    if arr.ndim != ndim or (shape is not None and arr.shape != shape):
        want = what if shape is None else f"{what} = {shape}"
        raise ConvertError(field, f"shape {want}", f"shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ConvertError(field, "numbers (integers or floats)", f"dtype {arr.dtype}")
    _finite(field, arr)
    with np.errstate(over="ignore"):  # values beyond float32 become inf: reported just below
        out = arr.astype(np.float32)
    beyond = int(np.sum(~np.isfinite(out)))
    if beyond:
        raise ConvertError(field, "values within the float32 range", f"{beyond} values beyond it")
    return out


def _finite(field: str, arr: np.ndarray) -> None:
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise ConvertError(field, "finite values", f"{n_nan} NaN and {n_inf} infinite values")


def _images(value: ArrayLike, T: int) -> np.ndarray:
    """(T, 1, H, W) images in their own numeric dtype, finite, not all equal."""
    arr = _array("images", value)
    given = arr.shape
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] != 1 or arr.shape[2] < 1 or arr.shape[3] < 1:
        raise ConvertError("images", "shape (T, H, W) or (T, 1, H, W) (grey images)", f"shape {given}")
    if arr.shape[0] != T:
        raise ConvertError("images", f"{T} images (one per trial, as responses)", f"{arr.shape[0]}")
    if arr.dtype.kind not in "iuf":
        raise ConvertError("images", "numbers (integers or floats)", f"dtype {arr.dtype}")
    _finite("images", arr)
    if arr.min() == arr.max():
        raise ConvertError(
            "images", "pixels that vary (the loaders divide by their std)", f"every pixel {arr.flat[0]}"
        )
    return np.ascontiguousarray(arr)


def _text(field: str, value: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """A unicode array of ``shape`` from text (str, bytes, or Python objects that are all str)."""
    arr = _array(field, value)
    if arr.shape != shape:
        raise ConvertError(field, f"shape {shape}", f"shape {arr.shape}")
    if arr.dtype.kind == "S":
        try:
            return np.char.decode(arr, "utf-8")
        except UnicodeDecodeError:
            raise ConvertError(field, "UTF-8 text", "bytes that are not UTF-8") from None
    if arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.ravel()):
        return arr.astype(str)
    if arr.dtype.kind != "U":
        raise ConvertError(field, "text", f"dtype {arr.dtype}")
    return arr


def _tiers(value: ArrayLike, T: int) -> np.ndarray:
    arr = _array("tiers", value)
    if arr.shape != (T,):
        raise ConvertError("tiers", f"shape ({T},) (one tier per trial, as responses)", f"shape {arr.shape}")
    tiers = _text("tiers", arr, (T,))
    unknown = sorted(set(np.unique(tiers).tolist()) - set(TIERS))
    if unknown:
        shown = ", ".join(repr(u if len(u) <= 20 else u[:20] + "...") for u in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise ConvertError("tiers", f"tiers from {list(TIERS)}", f"{shown}{more}")
    if not np.any(tiers == "train"):
        raise ConvertError(
            "tiers", "at least one 'train' trial (the statistics are computed over them)", "none"
        )
    return tiers


#: a time zone at the end of an ISO time: Z, +02:00, -0500
_UTC_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})'?\)?$")


def _timestamps(value: ArrayLike, T: int) -> np.ndarray:
    """(T,) datetime64[us] from datetime64 or text; NaT refused."""
    arr = _array("frame_trial_ts", value)
    if arr.ndim != 1 or len(arr) != T:
        raise ConvertError(
            "frame_trial_ts", f"shape ({T},) (one time per trial, as responses)", f"shape {arr.shape}"
        )
    if arr.dtype.kind != "M":
        arr = _text("frame_trial_ts", arr, (T,))
        # a UTC offset would be silently converted to UTC (numpy only warns): the stored clock time would
        # no longer be the lab's; local times without an offset are what the format holds
        offset = next((str(s) for s in arr if _UTC_OFFSET.search(str(s))), None)
        if offset is not None:
            raise ConvertError("frame_trial_ts", "local times without a UTC offset", repr(offset))
    try:
        stamps = parse_timestamps(arr)
    except RecordingFormatError as err:
        raise ConvertError("frame_trial_ts", "times like 2023-05-01T10:00:00", err.found) from None
    bad = np.flatnonzero(np.isnat(stamps))
    if bad.size:
        raise ConvertError(
            "frame_trial_ts", "a time for every trial", f"{bad.size} NaT, the first at trial {bad[0]}"
        )
    return stamps


def _timestamp_text(stamps: np.ndarray) -> np.ndarray:
    """The competition's ``Timestamp('YYYY-MM-DD HH:MM:SS[.ffffff]')`` text (whole seconds when all are)."""
    whole = np.all(stamps == stamps.astype("datetime64[s]"))
    shown = stamps.astype("datetime64[s]") if whole else stamps
    return np.array([f"Timestamp('{str(t).replace('T', ' ')}')" for t in shown])


def _integers(field: str, value: ArrayLike, n: int) -> np.ndarray:
    """(n,) whole numbers as int64: integers, or floats equal to them."""
    arr = _array(field, value)
    if arr.shape != (n,):
        per = "neuron, as responses has columns" if field == "unit_ids" else "trial, as responses has rows"
        raise ConvertError(field, f"shape ({n},) (one per {per})", f"shape {arr.shape}")
    return _as_int64(field, arr)


def _as_int64(field: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= 2**63:
        raise ConvertError(field, "integers below 2**63", f"{int(arr.max())}")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        values = np.where(finite, arr, 0)
        bad = ~finite | (np.mod(values, 1) != 0) | (np.abs(values) >= 2**63)
        if bad.any():
            raise ConvertError(field, "whole numbers", f"{int(bad.sum())} non-integer or non-finite values")
    elif arr.dtype.kind not in "iu":
        raise ConvertError(field, "integers", f"dtype {arr.dtype}")
    return arr.astype(np.int64)


def _distinct(field: str, arr: np.ndarray) -> None:
    values, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        example = values[counts > 1][0].item()
        raise ConvertError(field, "distinct ids", f"{int((counts > 1).sum())} repeated, e.g. {example!r}")


def _key_part(field: str, value: ArrayLike | None) -> int:
    """A non-negative integer (a 0-d or one-element array, or a Python int); 0 when not given."""
    if value is None:
        return 0
    arr = _array(field, value)
    if arr.size != 1 or arr.ndim > 1:
        raise ConvertError(field, "one integer", f"shape {arr.shape}")
    number = int(_as_int64(field, arr.reshape(1))[0])
    if number < 0:
        raise ConvertError(field, "a non-negative integer (part of the data key)", f"{number}")
    return number


def _trial_ids(value: ArrayLike, T: int) -> np.ndarray:
    """(T,) distinct trial ids: integers as int64, or text of at most 64 characters."""
    arr = _array("trial_idx", value)
    if arr.shape != (T,):
        raise ConvertError("trial_idx", f"shape ({T},) (one per trial, as responses)", f"shape {arr.shape}")
    if arr.dtype.kind in "iuf":
        ids = _as_int64("trial_idx", arr)
    else:
        ids = _text("trial_idx", arr, (T,))
        longest = max((len(v) for v in ids), default=0)
        if longest > MAX_TRIAL_IDX_CHARS:
            raise ConvertError("trial_idx", f"ids of at most {MAX_TRIAL_IDX_CHARS} characters", f"{longest}")
    _distinct("trial_idx", ids)
    return ids


def _labels(field: str, value: ArrayLike | None, N: int) -> np.ndarray:
    """(N,) labels of at most 32 characters from one label or N of them; ``unknown`` when not given."""
    if value is None:
        return np.full(N, "unknown")
    shape = (N,) if np.ndim(value) == 1 else ()
    labels = np.broadcast_to(_text(field, value, shape), (N,)).copy()
    longest = max((len(v) for v in labels), default=0)
    if longest > MAX_LABEL_CHARS:
        raise ConvertError(field, f"labels of at most {MAX_LABEL_CHARS} characters", f"{longest}")
    return labels


def _image_ids_from_pixels(images: np.ndarray) -> np.ndarray:
    """(T,) int64: trials whose images are identical pixel for pixel share an id (0, 1, ... in order of
    first appearance), so that repeats of a test image are grouped as the metrics need."""
    seen: dict[bytes, int] = {}
    ids = np.empty(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
        ids[i] = seen.setdefault(digest, len(seen))
    return ids


def _statistics(arr: np.ndarray, *, per_channel: bool) -> dict[str, np.ndarray]:
    """min / max / mean / median / std over the trials of ``arr``: one value per column, or one scalar over
    every pixel (images; accumulated in float64 in chunks of trials, and ``arr``, the caller's
    boolean-indexed copy, is partly sorted by the median), as float32."""
    if per_channel:
        a = arr.astype(np.float64)
        values = {
            "min": a.min(axis=0),
            "max": a.max(axis=0),
            "mean": a.mean(axis=0),
            "median": np.median(a, axis=0),
            "std": a.std(axis=0),
        }
        return {s: np.asarray(values[s], dtype=np.float32) for s in STATISTICS}
    chunks = [slice(start, start + 256) for start in range(0, len(arr), 256)]
    mean = sum(float(arr[c].sum(dtype=np.float64)) for c in chunks) / arr.size
    squares = sum(float(np.square(arr[c].astype(np.float64) - mean).sum()) for c in chunks)
    values = {"min": arr.min(), "max": arr.max(), "mean": mean, "std": np.sqrt(squares / arr.size)}
    values["median"] = np.median(arr, overwrite_input=True)  # last: it reorders arr
    return {s: np.asarray(values[s], dtype=np.float32) for s in STATISTICS}


def _digest(arrays: list[np.ndarray]) -> str:
    """32 hex digits identifying the converted arrays (the hash part of the folder name)."""
    h = hashlib.blake2b(digest_size=16)
    for arr in arrays:
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def write_converted(rec: Recording, out: str | Path, *, make_zip: bool = False) -> tuple[Path, Path | None]:
    """Write ``rec`` as ``<out>/static<key>-GrayImageNet-<digest>/`` (and its ``.zip`` beside it).

    An existing recording of that name is never replaced. The folder is written under a temporary name
    and renamed (:func:`~pipeline.data.format.write_recording`), the zip likewise; if the zip fails, the
    folder is removed again, so a failure leaves neither.

    Returns:
        (folder, zip or None).

    Raises:
        ConvertError: ``out`` when a file blocks the folder or the recording exists already.
        OSError: the folder cannot be written (permissions, disk full).
    """
    out = Path(out)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConvertError("out", "a folder", f"a file at {blocking}")
    folder = out / rec.extra["folder_name"]
    zip_path = folder.with_name(folder.name + ".zip")
    for path in (folder, zip_path):
        if os.path.lexists(path):
            raise ConvertError("out", "no recording of this name there yet", f"{path} (not replaced)")
    write_recording(rec, folder, make_zip=False)
    if not make_zip:
        return folder, None
    tmp_zip = zip_path.with_name(f".{zip_path.name}.tmp")
    try:
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for rel in sorted(_files_under(folder)):
                zf.write(folder / rel, f"{folder.name}/{rel}")
        tmp_zip.replace(zip_path)
    except BaseException:
        tmp_zip.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, zip_path


def _files_under(folder: Path) -> list[str]:
    return [
        Path(dirpath, name).relative_to(folder).as_posix()
        for dirpath, _dirs, names in os.walk(folder)
        for name in names
    ]


def convert(
    arrays: Mapping[str, ArrayLike], out: str | Path, *, make_zip: bool = False
) -> tuple[Path, Path | None]:
    """:func:`recording_from_arrays` of ``arrays`` (names of :data:`FIELDS`), then :func:`write_converted`.

    Raises:
        ConvertError: an unknown or missing array, or any problem of :func:`recording_from_arrays`.
    """
    unknown = sorted(set(arrays) - set(FIELDS))
    if unknown:
        raise ConvertError(unknown[0], f"one of the arrays {', '.join(FIELDS)}", "an unknown name")
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise ConvertError(missing[0], "a required array", f"none ({', '.join(missing)} missing)")
    rec = recording_from_arrays(**dict(arrays))
    return write_converted(rec, out, make_zip=make_zip)
