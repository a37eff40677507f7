"""Ensemble re-splits of the train / validation labels (see docs/model.md#ensembles).

Each ensemble member trains on its own split: the train and validation labels are shuffled among the
known (train or validation) trials, so the counts stay the same and test / final_test never move; with
``validation_share`` each split labels that share of the known trials validation instead (fewer: more
training trials per member).

Randomness: the winner called the legacy ``np.random.seed(35382)`` once and drew the rows one after the
other from the global stream. Here one ``np.random.default_rng(seed)`` Generator is used the same way (one
Generator, rows drawn in order), so the procedure and the counts are the same but the exact permutations
differ from the winner's. The global NumPy state is never touched.
"""

from __future__ import annotations

import numpy as np

from pipeline.configs import SplitConfig
from pipeline.data.recording import KNOWN_TIERS

ALL_TIERS = ("train", "validation", "test", "final_test")


def ensemble_splits(
    tiers: np.ndarray, cfg_n_splits: int, seed: int, validation_share: float | None = None
) -> np.ndarray:
    """All re-splits of one recording.

    Args:
        tiers: (T,) original tier of every trial (file-index order).
        cfg_n_splits: number of rows (ensemble members), > 0.
        seed: seed of the Generator.
        validation_share: None: each row permutes the original train/validation labels (their counts
            stay); else each row labels ``round(share x known)`` known trials validation (at least 2,
            at most all but 1), the others train, at random.

    Returns:
        (n_splits, T) ``<U10``; row i is ``tiers`` with the train/validation positions holding the i-th
        random permutation of the train/validation labels.
    """
    tiers = np.asarray(tiers).astype(str)
    if tiers.ndim != 1:
        raise ValueError(f"tiers must be (T,), got shape {tiers.shape}")
    if cfg_n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {cfg_n_splits}")
    unknown = sorted(set(tiers.tolist()) - set(ALL_TIERS))
    if unknown:
        # '<U10' would silently truncate longer names; refuse anything that is not a SENSORIUM tier
        raise ValueError(f"unknown tiers {unknown}; expected a subset of {ALL_TIERS}")
    tiers = tiers.astype("<U10")
    positions = np.flatnonzero(np.isin(tiers, KNOWN_TIERS))
    labels = tiers[positions]
    if validation_share is not None:
        if not 0 < validation_share < 1:
            raise ValueError(f"validation_share must be in (0, 1), got {validation_share}")
        if len(positions) < 3:
            raise ValueError(
                f"{len(positions)} known trial(s): a re-split with a validation share needs 3 or more"
            )
        # at least 2 validation trials: the trainer scores no scan on fewer (a correlation over one trial)
        n_val = min(max(round(validation_share * len(positions)), 2), len(positions) - 1)
        labels = np.array(["validation"] * n_val + ["train"] * (len(positions) - n_val), dtype="<U10")
    rng = np.random.default_rng(seed)
    out = np.empty((cfg_n_splits, tiers.shape[0]), dtype="<U10")
    for i in range(cfg_n_splits):
        row = tiers.copy()
        row[positions] = rng.permutation(labels)
        out[i] = row
    return out


def split_tiers(tiers: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    """The tiers of split ``cfg.index``: (T,) ``<U10``.

    Raises:
        ValueError: ``cfg.index`` >= ``cfg.n_splits``.
    """
    if cfg.index >= cfg.n_splits:
        raise ValueError(
            f"split index {cfg.index} is out of range: the config makes {cfg.n_splits} splits "
            f"(indices 0..{cfg.n_splits - 1})"
        )
    return ensemble_splits(tiers, cfg.n_splits, cfg.seed, cfg.validation_share)[cfg.index]
