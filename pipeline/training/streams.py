"""The trainer's batch streams: endless, shuffled, resumable training batches of every scan.

An epoch is ``n_rounds`` rounds of one batch from every scan (:func:`rounds_per_epoch`); a scan with
fewer training trials than the longest one wraps around within the epoch and continues where it was in
the next, which is why the streams carry their position across epochs (and into checkpoints).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data.loaders import ScanTensors


class BatchStream:
    """Endless shuffled training batches of one scan (a new permutation after each pass), resumable.

    The same sequence as drawing ``torch.randperm(n, generator)`` at the start of each pass and cutting
    it into ``batch_size`` slices (the last one shorter); :meth:`state` / :meth:`load_state` capture the
    generator, the current permutation and the position in it, so a resumed run continues mid-pass.
    """

    def __init__(self, scan: ScanTensors, batch_size: int, generator: torch.Generator):
        self.scan, self.batch_size, self.generator = scan, batch_size, generator
        self._idx = scan.tier_indices("train")
        self._perm: np.ndarray | None = None
        self._perm_device: torch.Tensor | None = None  # the permutation where the data lives
        self._pos = 0

    def next(self) -> dict[str, torch.Tensor]:
        """The next batch: ``scan.batch`` of up to ``batch_size`` trials (``images`` [B, C, h, w], ...)."""
        if self._perm is None or self._pos >= len(self._perm):
            self._set_perm(self._idx[torch.randperm(len(self._idx), generator=self.generator).numpy()])
            self._pos = 0
        assert self._perm_device is not None  # set with _perm (_set_perm), which is set here
        # a slice of a device tensor: no host-to-device copy per batch (one per pass over the data)
        chunk = self._perm_device[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.scan.batch(chunk)

    def _set_perm(self, perm: np.ndarray | None) -> None:
        self._perm = perm
        device = self.scan.responses.device
        self._perm_device = None if perm is None else torch.as_tensor(perm, dtype=torch.long, device=device)

    def state(self) -> dict:
        """Generator state, current permutation ([n_train] int64 or None) and position, for a checkpoint."""
        perm = None if self._perm is None else torch.from_numpy(np.asarray(self._perm, dtype=np.int64))
        return {"generator": self.generator.get_state(), "perm": perm, "pos": self._pos}

    def load_state(self, state: dict) -> None:
        """Continue from what :meth:`state` returned."""
        self.generator.set_state(state["generator"])
        self._set_perm(None if state["perm"] is None else state["perm"].numpy().astype(self._idx.dtype))
        self._pos = int(state["pos"])


def batch_streams(
    scans: dict[str, ScanTensors], batch_size: int, shuffle_seed: int
) -> dict[str, BatchStream]:
    """One stream per scan, each with its own generator seeded with ``shuffle_seed`` (so one scan's
    shuffling does not depend on how many others there are)."""
    return {
        k: BatchStream(s, batch_size, torch.Generator().manual_seed(shuffle_seed)) for k, s in scans.items()
    }


def rounds_per_epoch(scans: dict[str, ScanTensors], batch_size: int, cap: int | None) -> int:
    """Rounds in an epoch: enough for one pass over the longest scan's training trials, at most ``cap``
    (``max_batches_per_epoch``; None: no cap)."""
    n_rounds = max(int(np.ceil(len(s.tier_indices("train")) / batch_size)) for s in scans.values())
    return n_rounds if cap is None else min(n_rounds, cap)
