"""``benchmarks.flops``: real counts of a tiny training step, linear in the batch, and the scaled count of
the receptive-field map equal to a direct count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import flops
from pipeline.models.rf_map import correlation_maps

EXPERIMENTS = Path(__file__).parents[2] / "experiments"
#: two tiny scans with the real image size (144 x 256, 36 x 64 at the presets' scale)
TINY = [
    flops.ScanSize(n_neurons=12, n_trials=60, n_train=40, n_validation=10, height=144, width=256),
    flops.ScanSize(n_neurons=9, n_trials=50, n_train=30, n_validation=8, height=144, width=256),
]


@pytest.mark.parametrize("preset", ["beyond.yaml", "winner_demo.yaml"])
def test_a_training_step_is_counted_and_grows_with_the_batch(preset):
    counts = {}
    for batch in (2, 4):
        spec, _, _ = flops.preset_spec(EXPERIMENTS / preset, batch_size=batch)
        counts[batch] = flops.count_preset(spec, TINY)
    small, large = counts[2], counts[4]
    assert all(n > 0 for n in small["train_batch_flops"] + small["validation_batch_flops"])
    assert sum(large["train_batch_flops"]) > sum(small["train_batch_flops"])
    assert sum(large["validation_batch_flops"]) > sum(small["validation_batch_flops"])
    # a training step (forward + backward) costs more than the forward pass alone, but not 4x more: the
    # validation pass (no gradients) is counted in full, transformer blocks included
    pairs = zip(small["train_batch_flops"], small["validation_batch_flops"], strict=True)
    assert all(v < t < 4 * v for t, v in pairs)
    budget = flops.budget(small, TINY, None)
    assert budget["rounds_per_epoch"] == 20  # ceil(40 / 2): the scan with the most training trials
    assert budget["epoch"] > budget["step"] > 0


def test_the_vit_attention_is_counted():
    """Attention runs through the reference kernel while counting, so its products are in the count."""
    spec, _, _ = flops.preset_spec(EXPERIMENTS / "beyond.yaml", batch_size=2)
    counted = flops.count_preset(spec, TINY)
    assert counted["step_ops"].get("aten.bmm", 0) > 0


@pytest.mark.parametrize("groups", [1, 8])
def test_a_convolution_backward_costs_its_forward_once_per_gradient(groups):
    """Also for a grouped (depthwise-style) convolution, whose groups the counter's own backward formula
    leaves out."""
    conv = torch.nn.Conv2d(8, 8, 5, padding=2, groups=groups, bias=False)
    x = torch.randn(2, 8, 12, 16, requires_grad=True)
    _, ops = flops._counted(lambda: conv(x).sum().backward())
    assert ops["aten.convolution"] == 2 * 2 * 8 * (8 // groups) * 25 * 12 * 16
    assert ops["aten.convolution_backward"] == 2 * ops["aten.convolution"]


def test_the_scaled_map_count_equals_a_direct_count():
    size = flops.ScanSize(n_neurons=20, n_trials=40, n_train=30, n_validation=5, height=144, width=256)
    images = torch.randn(size.n_train, 1, 36, 64)
    responses = torch.rand(size.n_train, size.n_neurons)
    direct, _ = flops._counted(lambda: correlation_maps(images, responses))
    assert flops.rf_map_flops([size], 0.25) == [direct]
    # rf_map_neurons: the product covers only the neurons mapped (a cap above the scan's changes nothing)
    capped, _ = flops._counted(lambda: correlation_maps(images, responses[:, :12]))
    assert flops.rf_map_flops([size], 0.25, max_neurons=12) == [capped]
    assert flops.rf_map_flops([size], 0.25, max_neurons=100) == [direct]


def test_full_size_scans_follow_the_generator():
    sizes = flops.scan_sizes("full")
    assert len(sizes) == 6
    assert all(7000 < s.n_neurons < 8500 and 4000 < s.n_train < s.n_trials for s in sizes)
    assert flops.model_image_size(sizes[0], 0.25) == (36, 64)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--efficiency", "2"], "--efficiency"),
        (["--efficiency", "a,b"], "--efficiency"),
        (["--batch-size", "0"], "--batch-size"),
        (["--experiment", "no-such-file.yaml"], "no-such-file.yaml"),
    ],
)
def test_bad_arguments_are_one_line(argv, named, capsys):
    with pytest.raises(SystemExit) as exc:
        flops.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert named in err and "Traceback" not in err
