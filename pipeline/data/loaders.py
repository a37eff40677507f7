"""Tensors and batches for training, built once from a recording's merged arrays
(see docs/model.md#data-format).

Per-trial files are never read here: a :class:`ScanTensors` is made from a
:class:`~pipeline.data.recording.Recording` (fetched from the database or the merged cache) and holds
everything on one device. Images are rescaled once (and cached on disk by checksum and scale);
behaviour planes are appended per batch, so the (T, 4, h, w) input is never materialised.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from pipeline.configs import DatasetConfig
from pipeline.data.behavior import normalize_behavior
from pipeline.data.images import rescale_bilinear
from pipeline.data.precision import response_precision
from pipeline.data.recording import Recording

TIER_NAMES = ("train", "validation", "test", "final_test")


def rescaled_images(rec: Recording, scale: float, cache_dir: Path | None = None) -> np.ndarray:
    """(T, 1, h, w) float32 images at ``scale``, cached as ``cache_dir/rescaled/<checksum>-<scale>.npy``."""
    path = None
    if cache_dir is not None and rec.checksum:
        path = Path(cache_dir) / "rescaled" / f"{rec.checksum}-{scale:g}.npy"
        if path.exists():
            return np.load(path)
    out = (
        rescale_bilinear(np.asarray(rec.images), scale) if scale != 1 else np.asarray(rec.images, np.float32)
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # unique per process: containers sharing the cache volume may write the same file at once
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


@dataclass
class HistoryTensors:
    """History filter bank on a device, kept as prefix sums; features are made per batch
    (docs/model.md#history).

    Attributes:
        prefix: (K+1, N) float64 cumulative sums of the K known responses in time order (row 0 is zero).
        n_known_before: (T,) long, known trials strictly before each trial (file-index order).
        lags: (L,) long.
    """

    prefix: torch.Tensor
    n_known_before: torch.Tensor
    lags: torch.Tensor

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, N, L) float32: mean of each neuron's last ``lag`` known responses before trial ``idx``."""
        k = self.n_known_before[idx]  # (B,)
        lo = torch.clamp(k[:, None] - self.lags[None, :], min=0)  # (B, L)
        window = self.prefix[k][:, None, :] - self.prefix[lo]  # (B, L, N); zero-padded at the start
        return (window / self.lags[None, :, None].to(window.dtype)).transpose(1, 2).float()

    def to(self, device) -> HistoryTensors:
        return HistoryTensors(self.prefix.to(device), self.n_known_before.to(device), self.lags.to(device))


@dataclass
class ScanTensors:
    """Everything the model sees of one scan, as tensors on one device, in file-index order.

    Attributes:
        data_key: the scan.
        images: (T, 1, h, w) normalised images.
        behavior: (T, 3) normalised behaviour (appended as constant planes when ``include_behavior``).
        pupil_center: (T, 2) z-scored eye position.
        responses: (T, N) normalised responses r * p_n.
        tiers: (T,) tier name per trial (numpy, on the host).
        image_ids: (T,) ``frame_image_id`` (numpy).
        include_behavior: whether batches carry behaviour planes.
        extras: further per-trial tensors keyed by batch name: ``state`` (T, S), ``rank_id`` (T,).
        history: the history bank; batches then carry ``history`` (B, N, L).
    """

    data_key: str
    images: torch.Tensor
    behavior: torch.Tensor
    pupil_center: torch.Tensor
    responses: torch.Tensor
    tiers: np.ndarray
    image_ids: np.ndarray
    include_behavior: bool = True
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    history: HistoryTensors | None = None

    @property
    def n_trials(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])

    @property
    def input_channels(self) -> int:
        return 1 + (3 if self.include_behavior else 0)

    def tier_indices(self, tier: str) -> np.ndarray:
        """Ascending file indices of the trials in ``tier``."""
        return np.flatnonzero(self.tiers == tier)

    def to(self, device: torch.device | str) -> ScanTensors:
        move = {k: v.to(device) for k, v in self.extras.items()}
        return ScanTensors(
            self.data_key,
            self.images.to(device),
            self.behavior.to(device),
            self.pupil_center.to(device),
            self.responses.to(device),
            self.tiers,
            self.image_ids,
            self.include_behavior,
            move,
            None if self.history is None else self.history.to(device),
        )

    def batch(self, idx: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch for trials ``idx``: ``images`` [B, C, h, w], ``responses`` [B, N], ``pupil_center``
        [B, 2], ``behavior`` [B, 3], ``trial_id`` [B] and every extra."""
        idx_t = torch.as_tensor(idx, dtype=torch.long, device=self.images.device)
        images = self.images[idx_t]
        behavior = self.behavior[idx_t]
        if self.include_behavior:
            B, _, h, w = images.shape
            images = torch.cat([images, behavior[:, :, None, None].expand(B, 3, h, w)], dim=1)
        out = {
            "images": images,
            "responses": self.responses[idx_t],
            "pupil_center": self.pupil_center[idx_t],
            "behavior": behavior,
            "trial_id": idx_t,
        }
        out.update({k: v[idx_t] for k, v in self.extras.items()})
        if self.history is not None:
            out["history"] = self.history.features(idx_t)
        return out

    def batches(
        self, tier: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``tier``: shuffled by ``generator`` when given (training), else ascending order."""
        idx = self.tier_indices(tier)
        if generator is not None:
            idx = idx[torch.randperm(len(idx), generator=generator).numpy()]
        for start in range(0, len(idx), batch_size):
            yield self.batch(idx[start : start + batch_size])


def build_scan_tensors(
    rec: Recording, cfg: DatasetConfig, cache_dir: Path | None = None, regressors: dict | None = None
) -> ScanTensors:
    """Normalise one recording as the competition loaders do and wrap it as tensors (CPU)
    (docs/model.md#normalisation).

    Args:
        rec: the recording (file-index order).
        cfg: dataset configuration.
        cache_dir: where rescaled images are cached.
        regressors: from the regressor tables (``schemas.regressors.fetch_regressors``): ``behavior``
            (T, 3) already normalised, ``history`` (prefix, n_known_before, lags), ``state`` (T, S),
            ``rank_id`` (T,), ``tiers`` (T,) of an ensemble re-split. Without it behaviour is normalised
            here and no extras are delivered.

    Raises:
        ValueError: statistics make a normalisation impossible (zero image std), naming the scan.
    """
    regressors = regressors or {}
    stats = rec.statistics
    images = rescaled_images(rec, cfg.scale, cache_dir)
    responses = np.asarray(rec.responses, dtype=np.float32)
    behavior = np.asarray(rec.behavior, dtype=np.float32)
    pupil = np.asarray(rec.pupil_center, dtype=np.float32)
    if cfg.normalize:
        img_mean = float(np.asarray(stats["images"]["all"]["mean"]).ravel()[0])
        img_std = float(np.asarray(stats["images"]["all"]["std"]).ravel()[0])
        if not img_std > 0:
            raise ValueError(f"scan {rec.data_key}: statistics/images/all/std is {img_std}; cannot normalise")
        images = (images - img_mean) / img_std
        responses = responses * response_precision(stats["responses"]["all"]["std"])[None]
        if "behavior" in regressors:
            behavior = np.asarray(regressors["behavior"], dtype=np.float32)
        else:
            behavior = normalize_behavior(behavior, stats["behavior"]["all"], cfg.behavior_normalization)
        pc_mean = np.asarray(stats["pupil_center"]["all"]["mean"], dtype=np.float32)
        pc_std = np.asarray(stats["pupil_center"]["all"]["std"], dtype=np.float32)
        # float32 (the 1.0 is a weak scalar); numpy's stub types np.where as NDArray[Any]
        pc_scale: NDArray[np.float32] = np.where(pc_std > 0, pc_std, 1.0)
        pupil = (pupil - pc_mean) / pc_scale
    extras: dict[str, torch.Tensor] = {}
    if "state" in regressors:
        extras["state"] = torch.from_numpy(np.ascontiguousarray(regressors["state"], dtype=np.float32))
    if "rank_id" in regressors:
        extras["rank_id"] = torch.from_numpy(np.asarray(regressors["rank_id"], dtype=np.int64))
    history = None
    if "history" in regressors:
        prefix, counts, lags = regressors["history"]
        history = HistoryTensors(
            torch.from_numpy(np.asarray(prefix, dtype=np.float64)),
            torch.from_numpy(np.asarray(counts, dtype=np.int64)),
            torch.as_tensor(list(lags), dtype=torch.long),
        )
    tiers = np.asarray(regressors.get("tiers", rec.tiers)).astype(str)
    for name, arr in (("state", extras.get("state")), ("rank_id", extras.get("rank_id")), ("tiers", tiers)):
        if arr is not None and len(arr) != rec.n_trials:
            raise ValueError(
                f"scan {rec.data_key}: regressor {name} has {len(arr)} trials, expected {rec.n_trials}"
            )
    return ScanTensors(
        data_key=rec.data_key,
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
        behavior=torch.from_numpy(np.ascontiguousarray(behavior, dtype=np.float32)),
        pupil_center=torch.from_numpy(np.ascontiguousarray(pupil, dtype=np.float32)),
        responses=torch.from_numpy(np.ascontiguousarray(responses, dtype=np.float32)),
        tiers=tiers,
        image_ids=np.asarray(rec.trials["frame_image_id"]),
        include_behavior=cfg.include_behavior,
        extras=extras,
        history=history,
    )
