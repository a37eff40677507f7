"""The data path: normalisation (docs/model.md#normalisation), behaviour planes
(docs/model.md#input-pipeline), batching and seeded shuffling."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.configs import DatasetConfig
from pipeline.data.behavior import normalize_behavior
from pipeline.data.loaders import build_scan_tensors, rescaled_images
from pipeline.data.precision import response_precision
from pipeline.data.synth import SynthConfig, synthesize

REC, _ = synthesize(SynthConfig(n_neurons=12, n_trials=120, seed=3), 0)


def test_response_precision_floor_by_hand():
    std = np.array([1.0, 2.0, 0.001, 0.0])  # mean 0.75025 -> floor 0.0075025
    p = response_precision(std)
    np.testing.assert_allclose(p, [1.0, 0.5, 1 / 0.0075025, 1 / 0.0075025], rtol=1e-6)


def test_behavior_normalisations_by_hand():
    stats = {
        "min": np.array([2.0, -1.0, -4.0]),
        "max": np.array([10.0, 1.0, 8.0]),
        "std": np.array([2.0, 0.5, 4.0]),
    }
    b = np.array([[6.0, 0.5, -2.0], [2.0, -1.0, 8.0]])
    np.testing.assert_allclose(normalize_behavior(b, stats, "std"), [[3, 1, -0.5], [1, -2, 2]])
    # pupil (6-2)/8; dpupil / 0.5; |running| / max(4, 8)
    np.testing.assert_allclose(normalize_behavior(b, stats, "minmax01"), [[0.5, 1, 0.25], [0, -2, 1]])
    with pytest.raises(ValueError, match="unknown behaviour normalisation"):
        normalize_behavior(b, stats, "zscore")


def test_scan_tensors_are_normalised_as_specified():
    cfg = DatasetConfig()
    s = build_scan_tensors(REC, cfg)
    st = REC.statistics
    assert s.images.shape == (120, 1, 36, 64)
    expected_img = (rescaled_images(REC, 0.25) - st["images"]["all"]["mean"]) / st["images"]["all"]["std"]
    np.testing.assert_allclose(s.images.numpy(), expected_img, rtol=1e-5, atol=1e-5)
    p = response_precision(st["responses"]["all"]["std"])
    np.testing.assert_allclose(s.responses.numpy(), REC.responses * p, rtol=1e-6)
    np.testing.assert_allclose(s.behavior.numpy(), REC.behavior / st["behavior"]["all"]["std"], rtol=1e-5)
    z = (REC.pupil_center - st["pupil_center"]["all"]["mean"]) / st["pupil_center"]["all"]["std"]
    np.testing.assert_allclose(s.pupil_center.numpy(), z, rtol=1e-5, atol=1e-6)


def test_batches_carry_behaviour_planes_and_keep_order():
    s = build_scan_tensors(REC, DatasetConfig())
    val = list(s.batches("validation", 5))
    idx = np.concatenate([b["trial_id"].numpy() for b in val])
    assert np.array_equal(idx, s.tier_indices("validation")), "non-train tiers are sequential"
    b = val[0]
    assert b["images"].shape[1] == 4
    for c in range(3):
        plane = b["images"][:, 1 + c]
        assert torch.allclose(plane, b["behavior"][:, c, None, None].expand_as(plane))
    no_beh = build_scan_tensors(REC, DatasetConfig(include_behavior=False))
    assert next(no_beh.batches("validation", 5))["images"].shape[1] == 1


def test_training_shuffle_is_seeded():
    s = build_scan_tensors(REC, DatasetConfig())

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return [np.concatenate([b["trial_id"].numpy() for b in s.batches("train", 16, g)]) for _ in range(2)]

    a, b, c = order(1), order(1), order(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1]), "each pass is a new permutation"
    assert not np.array_equal(a[0], c[0])
    assert sorted(a[0]) == sorted(s.tier_indices("train"))


def test_rescaled_images_are_cached(tmp_path):
    rec = replace(REC, checksum="c" * 64)  # the cache is keyed by the recording's checksum
    first = rescaled_images(rec, 0.25, tmp_path)
    files = list((tmp_path / "rescaled").glob("*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(files[0]), first)
    assert files[0].name.startswith("c" * 64)
    np.testing.assert_array_equal(rescaled_images(rec, 0.25, tmp_path), first)
