"""Read, validate and write the SENSORIUM 2022 file tree, from a folder or a ``.zip``
(see docs/model.md#file-layout).

Everything is validated before a :class:`~pipeline.data.recording.Recording` is returned; every problem
raises :class:`RecordingFormatError` naming the file, the field, what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat as stat_mode
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from pipeline.data.npy import NpyError, load_npy
from pipeline.data.recording import (
    NEURON_FIELDS,
    STATISTICS,
    TIERS,
    TRIAL_FIELDS,
    TRIAL_VARIABLES,
    Recording,
    data_key_from_name,
    data_key_from_neurons,
)

_TRIAL_FILE = re.compile(r"(\d+)\.npy")
# files that belong to the recording's content (config.json is written by the loaders; not content)
_CONTENT_PREFIXES = ("data/", "meta/")
# Bounds that keep a crafted recording from exhausting memory. A real SENSORIUM+ scan is about 6,000
# trials of a (1, 144, 256) image and ~8,000 responses: a few hundred MB in all, its largest file a few
# hundred KB. The bounds are far above that and far below what a worker node holds.
MAX_FILE_BYTES = 256 * 2**20
MAX_RECORDING_BYTES = 16 * 2**30


class RecordingFormatError(ValueError):
    """A recording is not in the SENSORIUM 2022 format.

    Attributes:
        source: the folder or zip file.
        where: the file or folder inside the recording.
        expected: what the format requires.
        found: what is there.
    """

    def __init__(self, source: str | Path, where: str, expected: str, found: str) -> None:
        self.source, self.where, self.expected, self.found = str(source), where, expected, found
        super().__init__(f"{source}: {where}: expected {expected}, found {found}")


# --------------------------------------------------------------------------------------------------
# sources: a folder or a zip, seen as relative POSIX paths -> bytes
# --------------------------------------------------------------------------------------------------


class _Source:
    """Uniform read access to the files of a recording, relative to its root folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name.removesuffix(".zip")

    def files(self) -> list[str]:
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def size(self, rel: str) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release open handles."""


class _FolderSource(_Source):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._root = path.resolve()

    def files(self) -> list[str]:
        root = self.path
        out = []
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                if not name.startswith("."):
                    out.append(Path(dirpath, name).relative_to(root).as_posix())
        return out

    def size(self, rel: str) -> int:
        """Bytes of ``rel`` (a symlink's target); 0 where it cannot be seen (``read`` then says why)."""
        try:
            return os.stat(self.path / rel).st_size
        except OSError:
            return 0

    def read(self, rel: str) -> bytes:
        """The bytes of a regular file inside the recording; anything else is a one-line format error.

        A FIFO or a device would block or never end, a symlink may point anywhere: the file is opened
        without blocking and checked on its descriptor before a byte is read.
        """
        path = self.path / rel
        try:
            target = path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 raises this for a symlink loop
            raise RecordingFormatError(self.path, rel, "a regular file", "a symlink loop") from None
        except OSError as err:
            found = "a dangling symlink" if path.is_symlink() else f"no readable file ({err.strerror})"
            if err.errno == 40:  # ELOOP
                found = "a symlink loop"
            raise RecordingFormatError(self.path, rel, "a regular file", found) from None
        if not target.is_relative_to(self._root):
            raise RecordingFormatError(
                self.path, rel, "a file inside the recording", f"a symlink to {target} outside it"
            )
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            raise RecordingFormatError(self.path, rel, "a readable file", f"{err.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat_mode.S_ISREG(info.st_mode):
                raise RecordingFormatError(self.path, rel, "a regular file", _file_kind(info.st_mode))
            if info.st_size > MAX_FILE_BYTES:
                raise RecordingFormatError(
                    self.path, rel, f"at most {MAX_FILE_BYTES >> 20} MiB", f"{info.st_size} bytes"
                )
            with os.fdopen(fd, "rb", closefd=False) as fh:
                return fh.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            raise RecordingFormatError(self.path, rel, "a readable file", f"{err.strerror}") from None
        finally:
            os.close(fd)


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, word in (
        (stat_mode.S_ISFIFO, "a FIFO"),
        (stat_mode.S_ISCHR, "a character device"),
        (stat_mode.S_ISBLK, "a block device"),
        (stat_mode.S_ISSOCK, "a socket"),
        (stat_mode.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return word
    return "not a regular file"


class _ZipSource(_Source):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise RecordingFormatError(path, "(zip archive)", "a readable zip archive", f"{err}") from err
        names = [n for n in self._zip.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        # The real archives contain one top folder static<key>-GrayImageNet-<hash>/; accept a bare tree too.
        tops = {PurePosixPath(n).parts[0] for n in names}
        self._root = ""
        if len(tops) == 1 and not any(n.startswith(_CONTENT_PREFIXES) for n in names):
            self._root = tops.pop() + "/"
            self.name = self._root.rstrip("/")
        self._names = {n[len(self._root) :]: n for n in names if n.startswith(self._root)}

    def files(self) -> list[str]:
        return [n for n in self._names if not PurePosixPath(n).name.startswith(".")]

    def size(self, rel: str) -> int:
        """Uncompressed bytes of ``rel`` as the archive declares them (reads never return more)."""
        return self._zip.getinfo(self._names[rel]).file_size

    def read(self, rel: str) -> bytes:
        size = self.size(rel)
        if size > MAX_FILE_BYTES:
            raise RecordingFormatError(self.path, rel, f"at most {MAX_FILE_BYTES >> 20} MiB", f"{size} bytes")
        try:
            return self._zip.read(self._names[rel])
        except (zipfile.BadZipFile, EOFError, OSError, zlib_error()) as err:
            raise RecordingFormatError(
                self.path, rel, "an intact member of the zip archive", f"a damaged member ({err})"
            ) from err

    def close(self) -> None:
        self._zip.close()


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def _open(path: Path) -> _Source:
    if not path.exists():
        raise RecordingFormatError(
            path, "(recording)", "a recording folder or .zip file", "nothing at this path"
        )
    if path.is_dir():
        return _FolderSource(path)
    if path.suffix == ".zip":
        return _ZipSource(path)
    raise RecordingFormatError(
        path, "(recording)", "a folder or a .zip file", f"a file with suffix {path.suffix!r}"
    )


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def _load_npy(src: _Source, rel: str, data: bytes) -> np.ndarray:
    """One file of the recording as an array; never unpickles anything but strings and numbers.

    Real recordings may keep string arrays in ``meta/`` as pickled object arrays: those are read through
    an allow-listed unpickler (:mod:`pipeline.data.npy`) and come back as unicode arrays; ``data/`` files
    must be plain arrays.
    """
    try:
        return load_npy(data, allow_object=rel.startswith("meta/"))
    except NpyError as err:
        raise RecordingFormatError(src.path, rel, "a .npy array", str(err)) from None


def _check_integer_ids(src: _Source, rel: str, arr: np.ndarray) -> None:
    """Whole numbers that fit int64: integers, or floats / digit strings equal to them (kept as given,
    so that a stored recording is written back byte for byte)."""
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= 2**63:
            raise RecordingFormatError(src.path, rel, "integer ids below 2**63", f"{int(arr.max())}")
        return
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        values = np.where(finite, arr, 0)
        bad = ~finite | (np.mod(values, 1) != 0) | (np.abs(values) >= 2**63)
        if bad.any():
            raise RecordingFormatError(
                src.path, rel, "whole-number ids", f"{int(bad.sum())} non-integer or non-finite values"
            )
        return
    if arr.dtype.kind not in "US":
        raise RecordingFormatError(src.path, rel, "integer ids", f"dtype {arr.dtype}")
    text = [v.strip() for v in arr.astype(str).ravel()]
    example = next((v for v in text if not re.fullmatch(r"-?\d{1,18}", v)), None)
    if example is not None:
        shown = example if len(example) <= 20 else example[:20] + "..."
        raise RecordingFormatError(src.path, rel, "integer ids", f"text such as {shown!r}")


def _check_finite(src: _Source, rel: str, arr: np.ndarray) -> None:
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise RecordingFormatError(src.path, rel, "finite values", f"{n_nan} NaN and {n_inf} infinite values")


def _check_numeric(src: _Source, rel: str, arr: np.ndarray) -> None:
    if arr.dtype.kind not in "biuf":
        raise RecordingFormatError(src.path, rel, "a numeric array", f"dtype {arr.dtype}")


def read_recording(path: str | Path, *, progress: bool = True) -> Recording:
    """Read and validate a recording from its folder or ``.zip``.

    Args:
        path: ``static<key>-GrayImageNet-<hash>`` folder or ``.zip``.
        progress: show a progress bar over the per-trial files.

    Returns:
        The validated recording with its content checksum.

    Raises:
        RecordingFormatError: the first problem found (file, field, expected, found).
    """
    path = Path(path)
    src = _open(path)
    try:
        return _read(src, progress)
    finally:
        src.close()


def _read(src: _Source, progress: bool) -> Recording:
    """Read and validate everything of ``src``, in an order that keeps each check cheap: the file listing
    first (names and sizes, nothing read; the ``data/`` file names fix the number of trials T), then the
    small ``meta/`` arrays (the number of neurons N), then the per-trial files, checked against both as
    they are read, and the statistics last."""
    files = _content_files(src)
    load = _Loader(src)
    indices = _trial_file_indices(src, files)
    T = _trial_count(src, indices)
    # both meta folders are read before either is checked (a missing one is reported first)
    neurons = _read_meta_folder(src, files, "meta/neurons", NEURON_FIELDS, load)
    trials = _read_meta_folder(src, files, "meta/trials", TRIAL_FIELDS, load)
    N = _check_neurons(src, neurons)
    _check_trials(src, trials, T)
    merged = _read_trial_data(src, indices, T, N, load, progress)
    statistics = _read_statistics(src, files, N, load)
    return Recording(
        data_key=data_key_from_name(src.name) or data_key_from_neurons(neurons),
        images=merged["images"],
        responses=merged["responses"],
        behavior=merged["behavior"],
        pupil_center=merged["pupil_center"],
        neurons=neurons,
        trials=trials,
        statistics=statistics,
        checksum=load.digest.hexdigest(),
        extra={"folder_name": src.name},
    )


class _Loader:
    """Reads files of one recording as arrays; each file's bytes go into the content checksum (SHA-256
    over name and hash of every file, in the order read, which is the same for a folder and a zip)."""

    def __init__(self, src: _Source) -> None:
        self.src = src
        self.digest = hashlib.sha256()

    def __call__(self, rel: str) -> np.ndarray:
        data = self.src.read(rel)
        self.digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        return _load_npy(self.src, rel, data)


def _content_files(src: _Source) -> list[str]:
    """The sorted ``data/`` and ``meta/`` files; refused before anything is read when their declared
    sizes add up to more than :data:`MAX_RECORDING_BYTES`."""
    files = sorted(f for f in src.files() if f.startswith(_CONTENT_PREFIXES))
    total = sum(src.size(f) for f in files)
    if total > MAX_RECORDING_BYTES:
        raise RecordingFormatError(
            src.path,
            "(recording)",
            f"at most {MAX_RECORDING_BYTES >> 30} GiB of data/ and meta/ files",
            f"{total} bytes",
        )
    return files


def _trial_file_indices(src: _Source, files: list[str]) -> dict[str, dict[int, str]]:
    """variable -> trial index -> file, for every per-trial variable: a folder of ``<i>.npy`` files."""
    indices: dict[str, dict[int, str]] = {}
    for var in TRIAL_VARIABLES:
        folder = f"data/{var}/"
        entries = [f for f in files if f.startswith(folder)]
        if not entries:
            raise RecordingFormatError(
                src.path, f"data/{var}", "a folder of per-trial <i>.npy files", "nothing"
            )
        found: dict[int, str] = {}
        for rel in entries:
            m = _TRIAL_FILE.fullmatch(rel[len(folder) :])
            if m is None:
                raise RecordingFormatError(
                    src.path, rel, "a file named <trial index>.npy", "another file name"
                )
            found[int(m.group(1))] = rel
        indices[var] = found
    return indices


def _trial_count(src: _Source, indices: dict[str, dict[int, str]]) -> int:
    """T, the number of trials: every variable has the files ``0..T-1.npy`` of the fullest one."""
    reference = max(TRIAL_VARIABLES, key=lambda v: len(indices[v]))
    T = len(indices[reference])
    expected_ids = set(range(T))
    for var, found in indices.items():
        missing = sorted(expected_ids - set(found))
        extra = sorted(set(found) - expected_ids)
        if missing:
            shown = ", ".join(f"{i}.npy" for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise RecordingFormatError(
                src.path,
                f"data/{var}",
                f"{T} trial files 0..{T - 1}.npy (as in data/{reference})",
                f"{len(missing)} missing: {shown}",
            )
        if extra:
            raise RecordingFormatError(
                src.path, f"data/{var}", f"trial files 0..{T - 1}.npy", f"unexpected indices {extra[:5]}"
            )
    return T


def _check_neurons(src: _Source, neurons: dict[str, np.ndarray]) -> int:
    """Check ``meta/neurons`` (one entry per neuron, finite coordinates, integer ids, short labels);
    returns N = len(unit_ids)."""
    N = len(np.asarray(neurons["unit_ids"]).ravel())
    for name in NEURON_FIELDS:
        want = (N, 3) if name == "cell_motor_coordinates" else (N,)
        if neurons[name].shape != want:
            raise RecordingFormatError(
                src.path,
                f"meta/neurons/{name}.npy",
                f"shape {want} (N = len(unit_ids))",
                f"shape {neurons[name].shape}",
            )
    _check_finite(src, "meta/neurons/cell_motor_coordinates.npy", neurons["cell_motor_coordinates"])
    for name in ("unit_ids", "animal_ids", "sessions", "scan_idx"):
        _check_integer_ids(src, f"meta/neurons/{name}.npy", neurons[name])
    for name in ("area", "layer"):
        longest = max((len(v) for v in neurons[name].astype(str)), default=0)
        if longest > 32:  # the database column's width
            rel = f"meta/neurons/{name}.npy"
            raise RecordingFormatError(src.path, rel, "labels of at most 32 characters", f"{longest}")
    return N


def _check_trials(src: _Source, trials: dict[str, np.ndarray], T: int) -> None:
    """Check ``meta/trials`` (one entry per trial, known tiers, integer image ids, parseable
    timestamps); the tiers are replaced by their unicode form (they may come as bytes)."""
    for name, arr in trials.items():
        if arr.ndim < 1 or arr.shape[0] != T:
            raise RecordingFormatError(
                src.path, f"meta/trials/{name}.npy", f"one entry per trial ({T})", f"shape {arr.shape}"
            )
    tiers = trials["tiers"].astype(str)
    unknown = sorted(set(np.unique(tiers)) - set(TIERS))
    if unknown:
        raise RecordingFormatError(
            src.path, "meta/trials/tiers.npy", f"tiers from {list(TIERS)}", f"{unknown}"
        )
    trials["tiers"] = tiers
    image_ids = trials["frame_image_id"]
    if image_ids.dtype.kind not in "iu" and not (
        image_ids.dtype.kind == "f" and np.all(np.mod(image_ids, 1) == 0)
    ):
        raise RecordingFormatError(
            src.path, "meta/trials/frame_image_id.npy", "integer image ids", f"dtype {image_ids.dtype}"
        )
    parse_timestamps(trials["frame_trial_ts"], source=src.path)  # validates; the raw strings are kept


def _read_trial_data(
    src: _Source, indices: dict[str, dict[int, str]], T: int, N: int, load: _Loader, progress: bool
) -> dict[str, np.ndarray]:
    """variable -> its per-trial files merged: ``images`` (T, 1, H, W), ``responses`` (T, N),
    ``behavior`` (T, 3), ``pupil_center`` (T, 2), each of the dtype of its trial 0."""
    bar = tqdm(total=T * len(TRIAL_VARIABLES), desc=f"reading {src.name}", unit="file", disable=not progress)
    merged = {var: _merge_trials(src, var, indices[var], T, N, load, bar) for var in TRIAL_VARIABLES}
    bar.close()
    return merged


def _merge_trials(
    src: _Source, var: str, files: dict[int, str], T: int, N: int, load: _Loader, bar: tqdm
) -> np.ndarray:
    """The files ``0..T-1.npy`` of ``var`` as one (T, *shape) array; every file must have the shape of
    :data:`TRIAL_VARIABLES` (an image's height and width: those of trial 0), numbers and finite values."""
    want = tuple(N if (var == "responses") else s for s in TRIAL_VARIABLES[var])
    out: np.ndarray | None = None
    for i in range(T):
        rel = files[i]
        arr = load(rel)
        if out is None:  # trial 0 fixes the image size and the dtype of the merged array
            if var == "images" and (arr.ndim != 3 or arr.shape[0] != 1 or min(arr.shape) < 1):
                raise RecordingFormatError(src.path, rel, "shape (1, height, width)", f"shape {arr.shape}")
            want = arr.shape if var == "images" else want
            _check_numeric(src, rel, arr)
            dims = [n for n in want if n is not None]
            assert len(dims) == len(want), "trial 0 or N gives every size TRIAL_VARIABLES leaves open"
            out = np.empty((T, *dims), dtype=arr.dtype)
        if arr.shape != want:
            raise RecordingFormatError(src.path, rel, f"shape {want}", f"shape {arr.shape}")
        if arr.dtype != out.dtype:  # a number of another dtype is converted; anything else refused
            _check_numeric(src, rel, arr)
        _check_finite(src, rel, arr)
        out[i] = arr
        bar.update()
    assert out is not None, "T >= 1: every variable has a trial file (_trial_file_indices)"
    return out


def _read_statistics(
    src: _Source, files: list[str], N: int, load: _Loader
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``statistics[var][variant][stat]`` from ``meta/statistics``: every variant found (``all``
    required) with all of :data:`STATISTICS`; a scalar for images, else one value per neuron or per
    behaviour / eye coordinate."""
    statistics: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    sizes = {"images": None, "responses": N, "behavior": 3, "pupil_center": 2}
    for var, size in sizes.items():
        statistics[var] = {}
        variants = sorted(
            {f.split("/")[3] for f in files if f.startswith(f"meta/statistics/{var}/") and f.count("/") == 4}
        )
        if "all" not in variants:
            raise RecordingFormatError(
                src.path, f"meta/statistics/{var}/all", "a folder with min/max/mean/median/std.npy", "nothing"
            )
        for variant in variants:
            folder = f"meta/statistics/{var}/{variant}"
            statistics[var][variant] = {
                stat: _statistics_file(src, files, f"{folder}/{stat}.npy", size, load) for stat in STATISTICS
            }
    return statistics


def _statistics_file(src: _Source, files: list[str], rel: str, size: int | None, load: _Loader) -> np.ndarray:
    """One statistics array: present, a scalar (``size`` None) or of shape (size,), numeric, finite."""
    if rel not in files:
        raise RecordingFormatError(src.path, rel, "a statistics file", "no file")
    arr = load(rel)
    ok = arr.size == 1 if size is None else arr.shape == (size,)
    if not ok:
        want = "a scalar" if size is None else f"shape ({size},)"
        raise RecordingFormatError(src.path, rel, want, f"shape {arr.shape}")
    _check_numeric(src, rel, arr)
    _check_finite(src, rel, arr)
    return arr


def _read_meta_folder(
    src: _Source, files: list[str], folder: str, required: tuple[str, ...], load: _Loader
) -> dict[str, np.ndarray]:
    """name -> array of every ``<folder>/<name>.npy`` (read in name order); the ``required`` ones must
    be there."""
    entries = {
        PurePosixPath(f).stem: f
        for f in files
        if f.startswith(folder + "/") and f.count("/") == 2 and f.endswith(".npy")
    }
    missing = [name for name in required if name not in entries]
    if missing:
        raise RecordingFormatError(
            src.path, f"{folder}/{missing[0]}.npy", f"the arrays {list(required)}", f"{missing} missing"
        )
    return {name: load(rel) for name, rel in sorted(entries.items())}


_TS_WRAPPED = re.compile(r"Timestamp\('(.+)'\)")


def parse_timestamps(values: np.ndarray, *, source: str | Path = "") -> np.ndarray:
    """Parse ``frame_trial_ts`` to ``datetime64[us]``.

    Accepts datetime64 arrays and strings written as ``Timestamp('YYYY-MM-DD HH:MM:SS')`` (the real
    recordings) or plain ISO text.

    Args:
        values: (T,) timestamps.

    Returns:
        (T,) ``datetime64[us]``.
    """
    if values.dtype.kind == "M":
        return values.astype("datetime64[us]")
    out = np.empty(len(values), dtype="datetime64[us]")
    for i, v in enumerate(values.astype(str)):
        m = _TS_WRAPPED.fullmatch(v.strip())
        text = (m.group(1) if m else v.strip()).replace(" ", "T")
        try:
            out[i] = np.datetime64(text, "us")
        except ValueError as err:
            raise RecordingFormatError(
                source,
                "meta/trials/frame_trial_ts.npy",
                "timestamps like Timestamp('2019-07-01 10:00:00')",
                f"{str(v)!r} at trial {i}",
            ) from err
    return out


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def _iter_files(rec: Recording) -> Iterator[tuple[str, np.ndarray]]:
    for var in TRIAL_VARIABLES:
        arr = rec.trial_variable(var)
        for i in range(rec.n_trials):
            yield f"data/{var}/{i}.npy", arr[i]
    for name, arr in rec.neurons.items():
        yield f"meta/neurons/{name}.npy", arr
    for name, arr in rec.trials.items():
        yield f"meta/trials/{name}.npy", arr
    for var, variants in rec.statistics.items():
        for variant, stats in variants.items():
            for stat, arr in stats.items():
                yield f"meta/statistics/{var}/{variant}/{stat}.npy", arr


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_recording(rec: Recording, folder: str | Path, *, make_zip: bool = True) -> tuple[Path, Path | None]:
    """Write ``rec`` as a SENSORIUM file tree (and its ``.zip`` with the folder as top entry).

    Both are written under a temporary name and renamed, so a crash never leaves half a recording.

    Args:
        rec: the recording.
        folder: target folder, e.g. ``out/static27204-5-13-GrayImageNet-<hash>``.
        make_zip: also write ``<folder>.zip`` beside it.

    Returns:
        (folder path, zip path or None).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for rel, arr in _iter_files(rec):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_npy_bytes(arr))
        # mkdtemp makes the folder private (0700); a recording is shared like any file written here
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    zip_path = None
    if make_zip:
        zip_path = folder.with_name(folder.name + ".zip")
        tmp_zip = zip_path.with_name(f".{zip_path.name}.tmp")
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for rel, _arr in _iter_files(rec):
                zf.write(folder / rel, f"{folder.name}/{rel}")
        tmp_zip.replace(zip_path)
    return folder, zip_path
