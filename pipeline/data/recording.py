"""In-memory form of one SENSORIUM 2022 static-image recording (see docs/model.md#data-format).

A :class:`Recording` holds the per-trial variables merged into contiguous arrays (file index order),
plus the ``meta/`` arrays exactly as found. Readers and writers live in :mod:`pipeline.data.format`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

#: per-trial variables under ``data/`` and the shape of one trial (None: any positive size)
TRIAL_VARIABLES: dict[str, tuple[int | None, ...]] = {
    "images": (1, None, None),
    "responses": (None,),  # (N,)
    "behavior": (3,),
    "pupil_center": (2,),
}
TIERS = ("train", "validation", "test", "final_test")
#: tiers whose responses a model may use (the others are held out; zeroed in competition recordings)
KNOWN_TIERS = ("train", "validation")
STATISTICS = ("min", "max", "mean", "median", "std")
NEURON_FIELDS = ("unit_ids", "animal_ids", "sessions", "scan_idx", "area", "layer", "cell_motor_coordinates")
TRIAL_FIELDS = ("tiers", "frame_image_id", "trial_idx", "frame_trial_ts")

_KEY_PATTERN = re.compile(r"static(\d+-\d+-\d+)-")


@dataclass(frozen=True)
class Recording:
    """One recording; arrays are indexed by file index ``i`` (``data/<var>/<i>.npy``).

    Attributes:
        data_key: ``animal-session-scan``, e.g. ``27204-5-13``.
        images: (T, 1, H, W) stimulus images, dtype as stored.
        responses: (T, N) deconvolved activity.
        behavior: (T, 3) pupil dilation, its derivative, running speed.
        pupil_center: (T, 2) horizontal and vertical eye position.
        neurons: ``meta/neurons/<name>`` arrays, each of length N.
        trials: ``meta/trials/<name>`` arrays, each of length T.
        statistics: ``statistics[var][variant][stat]``, e.g. ``statistics["responses"]["all"]["std"]``.
        checksum: SHA-256 over the recording's file contents (independent of folder vs zip).
    """

    data_key: str
    images: np.ndarray
    responses: np.ndarray
    behavior: np.ndarray
    pupil_center: np.ndarray
    neurons: dict[str, np.ndarray]
    trials: dict[str, np.ndarray]
    statistics: dict[str, dict[str, dict[str, np.ndarray]]]
    checksum: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def n_trials(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])

    @property
    def tiers(self) -> np.ndarray:
        """(T,) tier name of every trial."""
        return self.trials["tiers"].astype(str)

    def trial_variable(self, name: str) -> np.ndarray:
        """The merged array of the ``data/<name>`` variable."""
        if name not in TRIAL_VARIABLES:
            raise KeyError(f"unknown trial variable {name!r}; expected one of {sorted(TRIAL_VARIABLES)}")
        return getattr(self, name)

    @property
    def trial_idx_is_numeric(self) -> bool:
        """True when ``trial_idx`` is the presentation order (pre-training mice), False when hashed."""
        return trial_idx_numeric(self.trials["trial_idx"]) is not None


def trial_idx_numeric(trial_idx: np.ndarray) -> np.ndarray | None:
    """``trial_idx`` as int64 if every entry is an integer, else None (hashed ids)."""
    if trial_idx.dtype.kind in "iu":
        return trial_idx.astype(np.int64)
    if trial_idx.dtype.kind == "f":
        return trial_idx.astype(np.int64) if np.all(np.mod(trial_idx, 1) == 0) else None
    values = trial_idx.astype(str)
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return values.astype(np.int64)
    return None


def data_key_from_name(name: str) -> str | None:
    """``27204-5-13`` from ``static27204-5-13-GrayImageNet-<hash>[.zip]``; None if it does not match."""
    match = _KEY_PATTERN.search(name)
    return match.group(1) if match else None


def data_key_from_neurons(neurons: dict[str, np.ndarray]) -> str:
    """``animal-session-scan`` from the first entries of ``meta/neurons`` (as the competition loader)."""
    return "-".join(str(np.asarray(neurons[k]).ravel()[0]) for k in ("animal_ids", "sessions", "scan_idx"))
