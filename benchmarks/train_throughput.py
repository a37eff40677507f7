"""Training throughput of the SENSORIUM baseline model on synthetic data (no database needed).

What it measures:
    The model of ``experiments/baseline.yaml`` at full size (64 channels, 4 layers, depth-separable core,
    Gaussian readout with cortex grid predictor, shifter) is trained on ``--scans`` synthetic recordings
    (``pipeline.data.synth``, 144x256 images rescaled to 36x64, ``--neurons`` x ``--trials`` each) for
    ``--warmup`` untimed and ``--steps`` timed optimiser steps. A step is what the standard trainer
    (``pipeline.training.trainer._train_epoch``) does per round: one shuffled training batch from every
    scan, Poisson loss scaled by sqrt(T/B) plus the model's regulariser, backward, then one Adam step.

    Reported per device:
      * samples/s: training samples processed in the timed steps / their total wall time;
      * median step (ms) over the timed steps;
      * data wait: time spent assembling batches (``next()`` on the batch iterators) / total step time;
        on CUDA the device is synchronised around every clock reading, so queued GPU work is charged to
        compute, not to the data;
      * peak memory: CPU - the process's peak resident set size (``ru_maxrss``) while building the scan
        tensors and training; the high-water mark is reset first through ``/proc/self/clear_refs`` so
        the larger peak of the synthesis is not counted (where that fails, the peak since start is shown,
        marked ``RSS*``); CUDA - ``torch.cuda.max_memory_allocated()`` since the scans were moved there;
      * the size of the scan tensors held on the device, and the time to build them.
    Everything is seeded with ``--seed`` (default 0).

How to run (from the repository root):
    .venv/bin/python benchmarks/train_throughput.py [--all-devices]
    .venv/bin/python benchmarks/train_throughput.py --device cpu --threads 4 --steps 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.loaders import ScanTensors
from pipeline.data.recording import Recording
from pipeline.data.synth import SynthConfig, synthesize
from pipeline.experiments import load_experiment
from pipeline.training.losses import loss_scale, poisson_loss
from pipeline.training.run import RunSpec, build_model, build_scans
from pipeline.training.seeding import resolve_device, set_seed

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "baseline.yaml"
MIB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda")
    where.add_argument("--all-devices", action="store_true", help="run on the CPU and, if present, CUDA")
    parser.add_argument("--neurons", type=int, default=1000, help="neurons per scan (default 1000)")
    parser.add_argument("--trials", type=int, default=1200, help="trials per scan, all tiers (default 1200)")
    parser.add_argument("--scans", type=int, default=2, help="number of synthetic scans (default 2)")
    parser.add_argument("--steps", type=int, default=30, help="timed optimiser steps (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimiser steps first (default 5)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, model and shuffling (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)
    for name in ("neurons", "trials", "scans", "steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be non-negative")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


# ----------------------------------------------------------------------------------------------------
# machine
# ----------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


# ----------------------------------------------------------------------------------------------------
# one training step, as in pipeline.training.trainer._train_epoch
# ----------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _endless(scan: ScanTensors, batch_size: int, generator: torch.Generator) -> Iterator[dict]:
    """Shuffled training batches forever, a new permutation after each pass (as the trainer's stream)."""
    while True:
        yield from scan.batches("train", batch_size, generator)


def train_step(model, scans, streams, optimizer, trainer_cfg, device) -> tuple[float, float, int]:
    """One round (a batch from every scan, one Adam step); returns (seconds, data seconds, samples)."""
    _sync(device)
    start = time.perf_counter()
    data_s, samples = 0.0, 0
    for key, scan in scans.items():
        _sync(device)
        t0 = time.perf_counter()
        batch = next(streams[key])
        _sync(device)
        data_s += time.perf_counter() - t0
        pred = model(**batch, data_key=key, detach_core=trainer_cfg.detach_core)
        target = batch["responses"]
        loss = poisson_loss(pred, target, avg=trainer_cfg.avg_loss)
        if trainer_cfg.scale_loss:
            loss = loss * loss_scale(scan.n_trials, target.shape[0])
        loss = loss + model.regularizer(key)
        loss.backward()
        value = float(loss.detach())  # the trainer reads every loss (a device sync on CUDA)
        if not np.isfinite(value):
            raise RuntimeError(f"loss is {value} on scan {key}")
        samples += int(target.shape[0])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - start, data_s, samples


def tensor_bytes(scan: ScanTensors) -> int:
    tensors = [scan.images, scan.behavior, scan.pupil_center, scan.responses, *scan.extras.values()]
    return sum(t.element_size() * t.nelement() for t in tensors)


def reset_peak_rss() -> bool:
    """Reset the process's resident-set high-water mark (Linux >= 4.0); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def bench_device(
    device: torch.device, spec: RunSpec, recordings: dict[str, Recording], args: argparse.Namespace
) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        rss_reset = False
    else:
        rss_reset = reset_peak_rss()
    t0 = time.perf_counter()
    scans = build_scans(recordings, spec.dataset_config, device)
    _sync(device)
    build_s = time.perf_counter() - t0
    model = build_model(spec, recordings, scans).to(device)
    trainer_cfg = spec.trainer_config

    set_seed(args.seed)  # as the trainer does before training
    optimizer = torch.optim.Adam(model.parameters(), lr=trainer_cfg.lr_init)
    generators = {k: torch.Generator().manual_seed(args.seed) for k in scans}
    streams = {k: _endless(s, args.batch_size, generators[k]) for k, s in scans.items()}
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for _ in range(args.warmup):
        train_step(model, scans, streams, optimizer, trainer_cfg, device)
    step_s, data_s, samples = [], [], []
    for _ in range(args.steps):
        s, d, n = train_step(model, scans, streams, optimizer, trainer_cfg, device)
        step_s.append(s)
        data_s.append(d)
        samples.append(n)

    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_kind = "process peak RSS" + (" (scan build + training)" if rss_reset else " (since start)")
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "build_scans_s": build_s,
        "samples_per_s": sum(samples) / sum(step_s),
        "median_step_ms": 1000 * statistics.median(step_s),
        "median_data_ms": 1000 * statistics.median(data_s),
        "data_wait_pct": 100 * sum(data_s) / sum(step_s),
        "timed_steps": len(step_s),
        "timed_samples": sum(samples),
        "peak_memory_mib": peak / MIB,
        "peak_memory_kind": peak_kind,
        "scan_tensors_mib": sum(tensor_bytes(s) for s in scans.values()) / MIB,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_s": step_s,
        "data_s": data_s,
    }
    del model, optimizer, scans, streams
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ----------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Aligned plain text: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def mem_tag(result: dict[str, Any]) -> str:
    if result["device"] != "cpu":
        return "(alloc)"
    return "(RSS)" if "since start" not in result["peak_memory_kind"] else "(RSS*)"


def render(report: dict[str, Any]) -> str:
    m, w = report["machine"], report["workload"]
    cores = f"{m['cores']} cores"
    if m["usable_cores"] != m["cores"]:
        cores += f" ({m['usable_cores']} usable)"
    gpu = f"{m['gpu']} (CUDA {m.get('cuda')})" if m["gpu"] else "none"
    head = [
        "SENSORIUM baseline: training throughput on synthetic data",
        f"command   : {report['command']}",
        f"machine   : {m['cpu']}, {cores}; GPU: {gpu}",
        f"software  : Python {m['python']}, torch {m['torch']}, {m['torch_threads']} torch threads",
        f"model     : {w['experiment']} ({w['model']}), {w['parameters']:,} parameters",
        f"workload  : {w['scans']} scans x {w['neurons']} neurons x {w['trials']} trials "
        f"({w['train_trials']} train each), batch {w['batch_size']}, "
        f"{w['warmup']} warm-up + {w['steps']} timed steps, seed {w['seed']}",
        f"synthesis : {w['synthesis_s']:.2f} s for {w['scans']} recordings; "
        f"benchmark wall time {report['wall_s']:.1f} s",
        "",
    ]
    headers = [
        "device",
        "build scans s",
        "samples/s",
        "median step ms",
        "data wait",
        "peak mem MiB",
        "scan tensors MiB",
    ]
    rows = [
        [
            r["device"],
            f"{r['build_scans_s']:.2f}",
            f"{r['samples_per_s']:.1f}",
            f"{r['median_step_ms']:.1f}",
            f"{r['data_wait_pct']:.1f}%",
            f"{r['peak_memory_mib']:.0f} {mem_tag(r)}",
            f"{r['scan_tensors_mib']:.1f}",
        ]
        for r in report["results"]
    ]
    notes = [
        "",
        "step = one batch from every scan + one Adam step; samples/s = timed samples / timed wall time;",
        "data wait = batch assembly / step time; peak mem: CPU process peak RSS during scan build + training",
        "(RSS*: since process start), CUDA max_memory_allocated.",
    ]
    return "\n".join([*head, table(headers, rows), *notes])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.all_devices:
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [resolve_device(args.device)]

    exp = load_experiment(EXPERIMENT)
    dataset_config = {**exp.dataset.config, "scans": "all", "batch_size": args.batch_size}
    spec = RunSpec.from_dicts(
        exp.dataset.fn,
        dataset_config,
        exp.model.fn,
        exp.model.config,
        exp.trainer.fn,
        exp.trainer.config,
        args.seed,
    )

    t0 = time.perf_counter()
    synth_cfg = SynthConfig(n_neurons=args.neurons, n_trials=args.trials, seed=args.seed)
    recordings: dict[str, Recording] = {}
    for mouse in range(args.scans):
        rec, _truth = synthesize(synth_cfg, mouse)
        recordings[rec.data_key] = rec
    synthesis_s = time.perf_counter() - t0

    results = [bench_device(device, spec, recordings, args) for device in devices]
    mc = spec.model_config
    report = {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "machine": machine_info(),
        "workload": {
            "experiment": str(EXPERIMENT.relative_to(EXPERIMENT.parents[1])),
            "model": f"{mc.hidden_channels} channels x {mc.layers} layers"
            + (", depth-separable" if mc.depth_separable else ""),
            "parameters": results[0]["parameters"],
            "scans": args.scans,
            "neurons": args.neurons,
            "trials": args.trials,
            "train_trials": int(np.sum(np.asarray(next(iter(recordings.values())).tiers) == "train")),
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "steps": args.steps,
            "seed": args.seed,
            "synthesis_s": synthesis_s,
        },
        "results": results,
        "wall_s": time.perf_counter() - start,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
