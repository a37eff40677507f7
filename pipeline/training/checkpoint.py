"""Atomic training checkpoints: everything needed to resume a run bit-identically on the same device.

A checkpoint is one ``torch.save`` file written to a temporary name and renamed over the old one (a
reader never sees half a file; a crash mid-write leaves the previous checkpoint intact), plus a small
JSON sidecar with the same identity, readable without torch. The identity (``meta``) names the job key,
the hash of the run's configs, the code version and the recordings' checksums; a checkpoint whose
identity differs from the run's is not used (logged), so edited configs or new code never resume from
stale state. Files are loaded with ``weights_only=True``: a checkpoint on a shared folder cannot run
code.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


class Checkpointer:
    """Save / load / delete the checkpoint of one run at ``path`` (``<name>.pt`` + ``<name>.json``).

    Args:
        path: the ``.pt`` file (its folder is created on the first save).
        meta: JSON-serialisable identity of the run; a stored checkpoint is used only if it is equal.
    """

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = json.loads(json.dumps(meta, sort_keys=True, default=str))  # plain JSON types only
        self.sidecar = self.path.with_suffix(".json")

    def exists(self) -> bool:
        return self.path.exists()

    def _temporaries(self) -> list[Path]:
        """Half-written files of this checkpoint (a process killed while saving leaves one)."""
        folder = self.path.parent
        if not folder.exists():
            return []
        return [p for n in (self.path.name, self.sidecar.name) for p in folder.glob(f".{n}.*.tmp")]

    def load(self) -> dict[str, Any] | None:
        """The saved training state, or None when there is none or it belongs to another run (logged).

        Also removes temporaries a killed predecessor left: one job key is worked on by one process.
        """
        for tmp in self._temporaries():
            tmp.unlink(missing_ok=True)
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a corrupt or foreign file: start over, never crash the job
            log.warning("checkpoint %s is unreadable (%s); training starts from scratch", self.path, err)
            return None
        stored = saved.get("meta") if isinstance(saved, dict) else None
        if stored != self.meta:
            diff = sorted(
                k for k in set(self.meta) | set(stored or {}) if (stored or {}).get(k) != self.meta.get(k)
            )
            log.warning(
                "checkpoint %s was written by a different run (differs in: %s); not used, training starts "
                "from scratch",
                self.path,
                ", ".join(diff) or "format",
            )
            return None
        return saved["state"]

    def save(self, state: dict[str, Any], summary: dict[str, Any] | None = None) -> None:
        """Write ``state`` atomically (temporary file in the same folder, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path, lambda f: torch.save({"meta": self.meta, "state": state}, f))
        side = json.dumps({"meta": self.meta, **(summary or {})}, indent=1, sort_keys=True).encode()
        _atomic_write(self.sidecar, lambda f: f.write(side))

    def delete(self) -> None:
        for p in (self.path, self.sidecar, *self._temporaries()):
            p.unlink(missing_ok=True)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- random number generators -----------------------------------------------------------------------


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every global RNG that drives training: Python, NumPy, torch CPU and the training device's CUDA.

    Only the training device's CUDA generator is kept (not every visible GPU's), so a checkpoint
    resumes on a host with another number of GPUs or on another GPU index. NumPy's state is stored as a
    tensor and plain numbers so that ``weights_only`` loading accepts it.
    """
    # legacy=True is the default; numpy's stub picks the dict overload when the argument is left out
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple), "the global RandomState is an MT19937: its legacy state is a tuple"
    name, keys, pos, has_gauss, cached = legacy
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` returned (the CUDA generator onto the training ``device``)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
