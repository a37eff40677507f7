"""FLOPs of a preset's training at full size, counted on the CPU, and the GPU time they imply.

What it counts:
    For each preset (default ``experiments/winner.yaml`` and ``experiments/beyond_full.yaml``) the model
    is built at the size of the recordings of ``--scale`` (``full``: the six synthetic SENSORIUM+-size
    recordings of ``sensorium synth --scale full``, 7,334-8,372 neurons and 5,951-6,959 trials each; the
    preset's first member: its seed and re-split) and ``torch.utils.flop_counter.FlopCounterMode``
    counts what the trainer's own epoch function (``pipeline.training.trainer.train_epoch``) does in one
    round: one batch of every scan, forward pass, loss, regularisers, backward pass, optimiser step. The
    counter counts matrix products, convolutions and attention (the bulk of the work), not element-wise
    operations, normalisations, ``grid_sample`` or the optimiser's update; attention is counted through
    PyTorch's reference (math) kernel, whose products are those a fused GPU kernel does (and a transformer
    block without gradients through its parts, not as the one fused operator); a convolution's
    backward pass counts as the forward's products once per gradient (the counter's own formula ignores
    the groups of a depthwise convolution, as the winner's core has).

    Each scan stands in as one batch of random tensors of the preset's shapes (images at the preset's
    scale, behaviour, eye position, responses, history, state, time rank): the count depends on the
    shapes only. The validation pass (forward only, ``pipeline.scoring.predict.predict_indices``, the
    CPU path of the trainer's early-stopping score) is counted for one batch of each scan.

    From the counts:
      * per step: one round (one batch of every scan, one optimiser step);
      * per epoch: ``rounds`` rounds (enough for one pass over the scan with the most training trials,
        as ``pipeline.training.streams.rounds_per_epoch``; a scan with fewer trials wraps around), each
        scan's batches scaled to its mean batch size (trials / batches per pass: the last batch of a pass
        is shorter), plus the validation pass over each scan's validation trials. Trials per tier come
        from the generator's rule for the full-size recordings (``pipeline.data.synth``: about 1,000 test
        trials, 8.3 % validation, a second test block for the last, competition-style recording, the rest
        training); a re-split keeps the counts;
      * per member: the receptive-field map once (``init_mu: rf_map``; counted at the real image size and
        a few trials and neurons, then scaled: its products are linear in trials and, beyond the
        filtering, in neurons), then epochs; per ensemble: members x that;
      * epochs: the preset's ``max_iter`` (the upper bound early stopping allows) and ``--typical-epochs``
        (default 112: the winning entry's published runs of this member configuration, about 112 epochs
        each on six scans; ``docs/real-data.md``).
    GPU time = FLOPs / (``--peak-tflops`` x efficiency), for each efficiency of ``--efficiency``.

Run:  .venv/bin/python -m benchmarks.flops [--experiment FILE ...] [--scale full|demo] [--json]
      [--peak-tflops 67] [--efficiency 0.1,0.3] [--typical-epochs 112] [--batch-size N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from benchmarks.common import REPO, command_line, machine_info, machine_line, table
from pipeline.configs import DatasetConfig
from pipeline.data.images import rescale_bilinear
from pipeline.data.loaders import HistoryTensors, ScanTensors
from pipeline.data.synth import SynthConfig, _schedule, scale_configs
from pipeline.experiments import load_experiment
from pipeline.models.build import ScanGeometry
from pipeline.models.rf_map import correlation_maps
from pipeline.run import RunSpec, build_model
from pipeline.scoring.predict import predict_indices
from pipeline.training import speed
from pipeline.training.streams import batch_streams
from pipeline.training.trainer import train_epoch

#: the presets compared by default
PRESETS = ("winner.yaml", "beyond_full.yaml")
#: H100 SXM5 dense FP32 peak (CUDA cores), TFLOP/s. The trainer leaves PyTorch's default of FP32 matrix
#: products (``torch.backends.cuda.matmul.allow_tf32`` is False), so the ViT's products and every linear
#: layer run at this rate; only cuDNN's convolutions may use TF32 tensor cores (495 TFLOP/s dense), which
#: a small CNN at batch 128 rarely gets near. FP32 is the rate that bounds both presets alike.
PEAK_TFLOPS = 67.0
#: achieved fraction of that peak: small models (~0.1 GFLOP per image, one scan's batch of 128 at a time)
#: leave a large GPU partly idle between short kernels, so well below the peak
EFFICIENCY = (0.10, 0.30)
#: epochs of the winning entry's published runs of one member's configuration (Model 3: ~112 epochs)
TYPICAL_EPOCHS = 112
#: a fixed generator for the stand-in tensors (the count does not depend on their values)
SEED = 0


@dataclass(frozen=True)
class ScanSize:
    """Trials and neurons of one recording, and its trials per tier."""

    n_neurons: int
    n_trials: int
    n_train: int
    n_validation: int
    height: int
    width: int


def scan_sizes(scale: str, seed: int = 0) -> list[ScanSize]:
    """The recordings ``sensorium synth --scale SCALE`` writes, by the generator's own tier rule (no data
    is generated): full size, the six SENSORIUM+ recordings' neuron and trial counts."""
    out = []
    for cfg in scale_configs(scale, seed):
        n_train, n_val, _, _ = _tiers(cfg)
        out.append(ScanSize(cfg.n_neurons, cfg.n_trials, n_train, n_val, cfg.height, cfg.width))
    return out


def _tiers(cfg: SynthConfig) -> tuple[int, int, int, int]:
    """(train, validation, test images, final-test images) of one synthetic recording."""
    return _schedule(cfg, cfg.n_trials)


def model_image_size(size: ScanSize, scale: float) -> tuple[int, int]:
    """(h, w) of the images the model sees (the loaders' bilinear rescale)."""
    h, w = rescale_bilinear(np.zeros((1, size.height, size.width), np.float32), scale).shape[-2:]
    return int(h), int(w)


def stand_in_scan(
    key: str, size: ScanSize, cfg: DatasetConfig, batch: int, gen: torch.Generator
) -> ScanTensors:
    """A scan of ``batch`` training and ``batch`` validation trials with ``size``'s neurons and the
    tensors the preset's dataset delivers (random values: only shapes matter for the count)."""
    t = 2 * batch
    h, w = model_image_size(size, cfg.scale)
    n = size.n_neurons
    extras: dict[str, torch.Tensor] = {}
    history = None
    regs = cfg.regressors
    if regs is not None and regs.state is not None:
        extras["state"] = torch.rand(t, regs.state.n_components, generator=gen)
    if regs is not None and regs.rank:
        # ranks index the learned gain, which covers every trial of the real recording
        extras["rank_id"] = torch.randint(0, size.n_trials, (t,), generator=gen)
    if regs is not None and regs.history is not None:
        prefix = torch.rand(t + 1, n, generator=gen, dtype=torch.float64).cumsum(0)
        history = HistoryTensors(prefix, torch.arange(t), torch.as_tensor(regs.history.lags))
    return ScanTensors(
        data_key=key,
        images=torch.randn(t, 1, h, w, generator=gen),
        behavior=torch.rand(t, 3, generator=gen),
        pupil_center=torch.randn(t, 2, generator=gen),
        responses=torch.rand(t, n, generator=gen),
        tiers=np.array(["train"] * batch + ["validation"] * batch),
        image_ids=np.arange(t),
        include_behavior=cfg.include_behavior,
        extras=extras,
        history=history,
    )


def preset_spec(path: Path, batch_size: int | None = None) -> tuple[RunSpec, int, int]:
    """(run spec of the preset's first member, members, ``max_iter``); ``batch_size`` overrides the
    preset's. The throughput options that change no count are dropped (compile, autocast)."""
    exp = load_experiment(path)
    spec = RunSpec.of_member(exp, trainer_options={"compile_core": False, "autocast": None})
    if batch_size is not None:
        spec = replace(spec, dataset_config=spec.dataset_config.model_copy(update={"batch_size": batch_size}))
    return spec, len(exp.member_list()), spec.trainer_config.max_iter


def _conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: list[bool],
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """``convolution_backward``: each gradient asked for (input, weight) costs the forward convolution's
    products. Given to ``FlopCounterMode`` in place of its own formula, which leaves the groups out of
    the backward pass (torch 2.13: a depthwise 10 x 10 convolution's backward counted 65x its forward,
    where 2x is right); for an ungrouped convolution both give the same count."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _counted(fn) -> tuple[int, dict[str, int]]:
    """FLOPs of ``fn()`` (total, per operator), attention through the reference kernel."""
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops}
    )
    # without gradients (the validation pass) a transformer block would run as one fused operator the
    # counter does not know; off, it runs as its products, which the counter counts
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def count_preset(spec: RunSpec, sizes: list[ScanSize]) -> dict[str, Any]:
    """FLOPs of one training round, per scan (forward + backward of one batch) and of the validation
    forward pass of one batch per scan, for the model of ``spec`` at ``sizes``."""
    bs = spec.dataset_config.batch_size
    gen = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    keys = [f"scan{i}" for i in range(len(sizes))]
    scans = {k: stand_in_scan(k, s, spec.dataset_config, bs, gen) for k, s in zip(keys, sizes, strict=True)}
    geometry = {
        k: ScanGeometry(s.n_neurons, rng.uniform(0, 800, (s.n_neurons, 2)), n_trials=s.n_trials)
        for k, s in zip(keys, sizes, strict=True)
    }
    model = build_model(spec, geometry, scans)
    cfg = spec.trainer_config
    speed.prepare_model(model, cfg)
    optimizer = speed.optimizer(speed.parameter_groups(model, cfg), cfg)
    streams = batch_streams(scans, bs, spec.dataset_config.shuffle_seed)
    model.train()
    train: list[int] = []
    validation: list[int] = []
    per_op: dict[str, int] = {}
    for k in keys:
        # one scan at a time (each its own optimiser step): the per-scan counts add up to the round's
        n, ops = _counted(
            lambda k=k: train_epoch(model, {k: scans[k]}, {k: streams[k]}, optimizer, cfg, 1, 1)
        )
        train.append(n)
        for op, v in ops.items():
            per_op[op] = per_op.get(op, 0) + v
        idx = scans[k].tier_indices("validation")
        validation.append(_counted(lambda k=k, idx=idx: predict_indices(model, scans[k], idx, bs))[0])
    return {
        "batch_size": bs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "core_parameters": sum(p.numel() for p in model.core.parameters()),
        "train_batch_flops": train,
        "validation_batch_flops": validation,
        "step_ops": per_op,
        "core_map": list(model.readout[keys[0]].in_shape),
    }


def rf_map_flops(
    sizes: list[ScanSize],
    scale: float,
    trials: int = 24,
    neurons: tuple[int, int] = (8, 16),
    max_neurons: int | None = None,
) -> list[int]:
    """FLOPs of the receptive-field map of each scan's training trials (``init_mu: rf_map``).

    Counted at the real image size with ``trials`` trials and two neuron counts, then scaled: the Gabor
    filtering is linear in trials, the correlation product in trials x neurons mapped (exact for these
    ops; ``max_neurons``: ``model.config.rf_map_neurons``, the most neurons of a scan mapped).
    """
    gen = torch.Generator().manual_seed(SEED)
    h, w = model_image_size(sizes[0], scale)
    images = torch.randn(trials, 1, h, w, generator=gen)
    counts = []
    for n in neurons:
        responses = torch.rand(trials, n, generator=gen)
        counts.append(_counted(lambda r=responses: correlation_maps(images, r))[0])
    per_neuron = (counts[1] - counts[0]) / (neurons[1] - neurons[0]) / trials  # per trial and neuron
    fixed = (counts[0] - per_neuron * trials * neurons[0]) / trials  # per trial (the filtering)
    mapped = [s.n_neurons if max_neurons is None else min(s.n_neurons, max_neurons) for s in sizes]
    return [int(round(s.n_train * (fixed + per_neuron * n))) for s, n in zip(sizes, mapped, strict=True)]


def budget(counted: dict[str, Any], sizes: list[ScanSize], rf_map: list[int] | None) -> dict[str, float]:
    """FLOPs per step, per epoch and per member (before its epochs: the map), from the counts."""
    bs = counted["batch_size"]
    rounds = max(math.ceil(s.n_train / bs) for s in sizes)
    epoch = 0.0
    for s, train, val in zip(
        sizes, counted["train_batch_flops"], counted["validation_batch_flops"], strict=True
    ):
        mean_batch = s.n_train / math.ceil(s.n_train / bs)  # the last batch of a pass is shorter
        epoch += rounds * train * mean_batch / bs + val * s.n_validation / bs
    return {
        "step": float(sum(counted["train_batch_flops"])),
        "batch_mean": float(np.mean(counted["train_batch_flops"])),
        "rounds_per_epoch": rounds,
        "epoch": epoch,
        "member_once": float(sum(rf_map)) if rf_map else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, action="append", help="preset file(s) (default: two)")
    parser.add_argument("--scale", choices=["full", "demo"], default="full", help="recording sizes")
    parser.add_argument("--batch-size", type=int, help="instead of the preset's batch size")
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS, help="GPU peak, TFLOP/s")
    parser.add_argument(
        "--efficiency",
        default=",".join(f"{e:g}" for e in EFFICIENCY),
        help="achieved fractions of the peak, comma-separated",
    )
    parser.add_argument(
        "--typical-epochs", type=int, default=TYPICAL_EPOCHS, help="epochs early stopping takes"
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    try:
        efficiency = [float(e) for e in args.efficiency.split(",")]
    except ValueError:
        parser.error(f"--efficiency: comma-separated numbers expected, got {args.efficiency!r}")
    if not efficiency or not all(0 < e <= 1 for e in efficiency):
        parser.error("--efficiency: fractions in (0, 1]")
    for name in ("batch_size", "threads", "typical_epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.peak_tflops <= 0:
        parser.error("--peak-tflops must be positive")
    paths = args.experiment or [REPO / "experiments" / p for p in PRESETS]
    for path in paths:
        if not path.is_file():
            parser.error(f"--experiment: no file {path}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = scan_sizes(args.scale)
    start = time.perf_counter()
    results = []
    for path in paths:
        try:
            spec, members, max_iter = preset_spec(path, args.batch_size)
        except (ValueError, OSError) as exc:  # the loader's one-line message (pydantic's included)
            raise SystemExit(f"{path}: {str(exc).splitlines()[0]}") from None
        print(f"{path.name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        counted = count_preset(spec, sizes)
        rf = (
            rf_map_flops(sizes, spec.dataset_config.scale, max_neurons=spec.model_config.rf_map_neurons)
            if spec.model_config.init_mu == "rf_map"
            else None
        )
        b = budget(counted, sizes, rf)
        epochs = {"max_iter": max_iter, "typical": min(args.typical_epochs, max_iter)}
        per_member = {k: b["member_once"] + e * b["epoch"] for k, e in epochs.items()}
        results.append(
            {
                "preset": path.name,
                "members": members,
                "epochs": epochs,
                **counted,
                "rf_map_flops": rf,
                **b,
                "member": per_member,
                "ensemble": {k: members * v for k, v in per_member.items()},
                "count_s": time.perf_counter() - t0,
            }
        )
    report = {
        "command": command_line(),
        "machine": machine_info(),
        "scale": args.scale,
        "scans": [asdict(s) for s in sizes],
        "peak_tflops": args.peak_tflops,
        "efficiency": efficiency,
        "results": results,
        "wall_s": time.perf_counter() - start,
    }
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _seconds(flops: float, tflops: float) -> str:
    s = flops / (tflops * 1e12)
    if s < 10:
        return f"{s:.2f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def render(report: dict[str, Any]) -> str:
    """The side-by-side table of every preset."""
    results = report["results"]
    scans = report["scans"]
    effs = report["efficiency"]
    peak = report["peak_tflops"]
    lines = [
        "FLOPs of training (FlopCounterMode on the CPU: matrix products, convolutions, attention)",
        f"command  : {report['command']}",
        f"machine  : {machine_line(report['machine'])}",
        f"workload : {len(scans)} {report['scale']}-size scans, neurons {[s['n_neurons'] for s in scans]}, "
        f"training trials {[s['n_train'] for s in scans]}, validation {[s['n_validation'] for s in scans]}",
        f"GPU time : FLOPs / ({peak:g} TFLOP/s x {' or '.join(f'{e:.0%}' for e in effs)})",
        "",
    ]
    headers = ["", *[r["preset"] for r in results]]

    def row(name: str, fn) -> list[str]:
        return [name, *[fn(r) for r in results]]

    def tf(x: float) -> str:
        if x >= 1e15:
            return f"{x / 1e15:.3g} PFLOP"
        return f"{x / 1e12:.3g} TFLOP" if x >= 1e11 else f"{x / 1e9:.3g} GFLOP"

    rows = [
        row("parameters (core)", lambda r: f"{r['parameters']:,} ({r['core_parameters']:,})"),
        row("core map (c, h, w)", lambda r: " x ".join(map(str, r["core_map"]))),
        row("batch size", lambda r: str(r["batch_size"])),
        row("per batch (fwd + bwd, mean)", lambda r: tf(r["batch_mean"])),
        row("per step (one batch per scan)", lambda r: tf(r["step"])),
        row("rounds per epoch", lambda r: str(r["rounds_per_epoch"])),
        row("per epoch (+ validation)", lambda r: tf(r["epoch"])),
        row("receptive-field map per member", lambda r: tf(r["member_once"]) if r["member_once"] else "-"),
        row("members", lambda r: str(r["members"])),
    ]
    kinds = (("max_iter", "max_iter epochs"), ("typical", "early-stopped"))
    for kind, label in kinds:
        rows.append(
            row(f"ensemble, {label}", lambda r, k=kind: f"{tf(r['ensemble'][k])} ({r['epochs'][k]} ep)")
        )
    for e in effs:
        rows.append(row(f"H100 per epoch at {e:.0%}", lambda r, e=e: _seconds(r["epoch"], peak * e)))
    for kind, label in kinds:
        for e in effs:
            rows.append(
                row(
                    f"H100 ensemble, {label}, {e:.0%}",
                    lambda r, k=kind, e=e: _seconds(r["ensemble"][k], peak * e),
                )
            )
    lines.append(table(headers, rows))
    lines.append(f"\ncounting took {report['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
