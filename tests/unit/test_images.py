"""Image rescaling matches the competition's ScaleInputs (bilinear, no anti-aliasing)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.images import rescale_bilinear


def test_quarter_scale_matches_torch_bilinear():
    x = np.random.default_rng(0).uniform(0, 255, (3, 1, 144, 256)).astype(np.float32)
    ours = rescale_bilinear(x, 0.25)
    ref = F.interpolate(torch.from_numpy(x), scale_factor=0.25, mode="bilinear", align_corners=False).numpy()
    assert ours.shape == (3, 1, 36, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_quarter_scale_is_mean_of_central_block():
    x = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)
    out = rescale_bilinear(x, 0.25)
    assert out[0, 0] == x[1:3, 1:3].mean()
