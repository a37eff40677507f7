"""Merged-array cache of recordings under ``$SENSORIUM_HOME/cache``.

A real recording has about 6,000 small files per variable; they are read and validated once, merged
into contiguous ``.npy`` arrays and cached under the recording's content checksum. A fingerprint of the
source (path, sizes, modification times) maps to that checksum, so an unchanged source is not read again,
and to the source's own data key and folder name: copies of one content under different names share the
cached arrays but each keeps its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.data.format import read_recording
from pipeline.data.recording import TRIAL_VARIABLES, Recording

_SEP = "__"


def source_fingerprint(path: Path) -> str:
    """Cheap identity of a source: resolved path plus (name, size, mtime) of its files."""
    path = Path(path).resolve()
    h = hashlib.sha256(str(path).encode())
    if path.is_dir():
        for dirpath, _dirs, names in sorted(os.walk(path)):
            for name in sorted(names):
                # lstat where the target cannot be seen (a dangling link, a loop): reading says why
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError:
                    st = os.lstat(os.path.join(dirpath, name))
                h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    else:
        st = path.stat()
        h.update(f":{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def load_recording(path: str | Path, cache_dir: Path, *, progress: bool = True) -> Recording:
    """Read ``path`` through the cache: validated and merged once, then memory-mapped.

    Args:
        path: recording folder or ``.zip``.
        cache_dir: ``Settings.cache_dir``.
        progress: progress bar while reading per-trial files.
    """
    path = Path(path)
    index = cache_dir / "index" / f"{source_fingerprint(path)}.json" if path.exists() else None
    if index is not None and index.exists():
        entry = json.loads(index.read_text())
        folder = cache_dir / "recordings" / entry["checksum"]
        # entries written before the name was kept in them are read again, once
        if "data_key" in entry and (folder / "info.json").exists():
            return _named(_load(folder), entry)
    rec = read_recording(path, progress=progress)
    folder = cache_dir / "recordings" / rec.checksum
    if not (folder / "info.json").exists():
        _save(rec, folder)
    entry = {"checksum": rec.checksum, "data_key": rec.data_key, "extra": rec.extra}
    if index is not None:
        index.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(index, json.dumps({**entry, "source": str(path.resolve())}))
    return _named(_load(folder), entry)


def _named(rec: Recording, entry: dict) -> Recording:
    """``rec`` (cached arrays, shared by every copy of the same content) under the data key and folder
    name of the source being read, as recorded in its index ``entry``: a renamed copy of a recording has
    the content, hence the cache folder, of the original but a name of its own."""
    return replace(rec, data_key=entry["data_key"], extra={**rec.extra, **entry.get("extra", {})})


def _save(rec: Recording, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for var in TRIAL_VARIABLES:
            np.save(tmp / f"{var}.npy", rec.trial_variable(var), allow_pickle=False)
        meta = {f"neurons{_SEP}{k}": v for k, v in rec.neurons.items()}
        meta |= {f"trials{_SEP}{k}": v for k, v in rec.trials.items()}
        for var, variants in rec.statistics.items():
            for variant, stats in variants.items():
                meta |= {_SEP.join(("statistics", var, variant, s)): v for s, v in stats.items()}
        # numpy's stub: mypy matches **meta (dict[str, ndarray]) against the keyword allow_pickle: bool
        np.savez(tmp / "meta.npz", **meta)  # type: ignore[arg-type]
        info = {"data_key": rec.data_key, "checksum": rec.checksum, "extra": rec.extra}
        (tmp / "info.json").write_text(json.dumps(info))
        try:
            tmp.rename(folder)
        except OSError:  # another process cached the same checksum first: identical content
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(folder: Path) -> Recording:
    info = json.loads((folder / "info.json").read_text())
    arrays = {var: np.load(folder / f"{var}.npy", mmap_mode="r") for var in TRIAL_VARIABLES}
    neurons: dict = {}
    trials: dict = {}
    statistics: dict = {}
    with np.load(folder / "meta.npz", allow_pickle=False) as meta:
        for name in meta.files:
            parts = name.split(_SEP)
            if parts[0] == "neurons":
                neurons[parts[1]] = meta[name]
            elif parts[0] == "trials":
                trials[parts[1]] = meta[name]
            else:
                statistics.setdefault(parts[1], {}).setdefault(parts[2], {})[parts[3]] = meta[name]
    return Recording(
        data_key=info["data_key"],
        neurons=neurons,
        trials=trials,
        statistics=statistics,
        checksum=info["checksum"],
        extra=info.get("extra", {}),
        **arrays,
    )


def _atomic_write_text(path: Path, text: str) -> None:
    # pid and a random part: processes in different containers sharing the cache can have the same pid
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
