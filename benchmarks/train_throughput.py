"""Training throughput of the baseline and winner presets, with and without each throughput option.

What it measures:
    For each preset (``--scale demo``: ``experiments/demo.yaml`` and ``winner_demo.yaml`` on the two demo
    recordings; ``--scale full``: ``baseline.yaml`` and ``winner.yaml`` on the six SENSORIUM+-size
    recordings; or any ``--experiment FILE``), the scans' tensors are built on the device (everything
    resident there: images, responses, regressors), the model is built from the preset's seed, and the
    trainer's own epoch function (``pipeline.training.trainer.train_epoch``: one batch of every scan per
    optimiser step, the trainer's loss, regularisers and options, and the weight average's update after
    every step for a preset with ``ema_decay``) runs ``--warmup`` untimed rounds (they
    also pay ``torch.compile``'s compile time), then ``--repeats`` timed passes of ``--rounds`` rounds
    (default: a whole epoch), then one timed validation pass (the trainer's early-stopping score).

    Reported per preset and option set:
      * samples/s: training samples of a timed pass / its wall time (median over the repeats);
      * s/epoch: a whole epoch's training rounds at that rate plus the validation pass (measured);
      * peak memory: CUDA ``max_memory_allocated`` since the tensors were built; CPU the process's peak
        RSS (reset before the tensors are built, where ``/proc/self/clear_refs`` allows);
      * with ``--agree-epochs N``: the validation correlation after N epochs of real training
        (``trainer.train``, no early stop) without and with bf16 autocast, for the first preset.

    Option sets (``--options``): ``none``, each single option (``autocast``, ``channels_last``,
    ``fused_adam``, ``compile``) and ``all``; default ``none`` (``--compare-options``: all of them).
    Everything is seeded; on CUDA the device is synchronised around every clock reading.

Run (from the repository root):
    .venv/bin/python -m benchmarks.train_throughput --scale demo
    .venv/bin/python -m benchmarks.train_throughput --scale full --device cuda \
        --compare-options --agree-epochs 5
    .venv/bin/python -m benchmarks.train_throughput --experiment old_winner_demo.yaml --scale demo
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from benchmarks.common import GIB, MIB, REPO, command_line, machine_info, machine_line, recordings, table
from pipeline.data.format import read_recording
from pipeline.data.recording import Recording
from pipeline.data.synth import scale_configs, synthesize
from pipeline.experiments import load_experiment
from pipeline.regressors.compute import compute_regressors
from pipeline.run import RunSpec, build_model, build_scans
from pipeline.training import schedule, speed
from pipeline.training.seeding import resolve_device, set_seed
from pipeline.training.trainer import BatchStream, train, train_epoch, validation_correlation

PRESETS = {
    "demo": ("demo.yaml", "winner_demo.yaml"),
    "full": ("baseline.yaml", "winner.yaml"),
}
OPTION_SETS = {
    "none": {},
    "autocast": {"autocast": "bf16"},
    "channels_last": {"channels_last": True},
    "fused_adam": {"fused_adam": True},
    "compile": {"compile_core": True},
    "all": {"autocast": "bf16", "channels_last": True, "fused_adam": True, "compile_core": True},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale", choices=sorted(PRESETS), default="demo", help="data and presets (default demo)"
    )
    parser.add_argument(
        "--experiment", type=Path, action="append", help="preset file(s) instead of the scale's"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda")
    parser.add_argument(
        "--options", default="none", help=f"comma-separated option sets of {list(OPTION_SETS)}"
    )
    parser.add_argument("--compare-options", action="store_true", help="every option set, side by side")
    parser.add_argument("--rounds", type=int, help="rounds per timed pass (default: a whole epoch)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes (median; default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--agree-epochs", type=int, default=0, help="epochs of the autocast agreement check")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave)")
    parser.add_argument("--seed", type=int, default=0, help="synthesis seed (default 0)")
    parser.add_argument(
        "--data", type=Path, help="read the recordings from this folder (default: synthesise)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)
    sets = list(OPTION_SETS) if args.compare_options else args.options.split(",")
    unknown = [s for s in sets if s not in OPTION_SETS]
    if unknown:
        parser.error(f"--options: unknown {unknown}; known: {list(OPTION_SETS)}")
    args.option_sets = sets
    for name in ("rounds", "repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_rss() -> bool:
    """Reset the process's resident-set high-water mark (Linux >= 4.0); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _recording(cfg, mouse: int) -> Recording:
    return synthesize(cfg, mouse)[0]


def _parallel(fn, *iterables) -> list:
    """``list(map(fn, *iterables))``, in processes where cores and memory allow (~8 GB per full-size
    mouse while it is generated or its network state fitted)."""
    n = len(iterables[0])
    jobs = max(1, min(n, os.cpu_count() or 1, int(psutil.virtual_memory().available // (9 * GIB))))
    if jobs == 1:
        return list(map(fn, *iterables))
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(fn, *iterables))


def load_data(args: argparse.Namespace) -> tuple[dict[str, Recording], float]:
    """The scale's recordings: read from ``--data`` when given, else synthesised in memory."""
    start = time.perf_counter()
    if args.data is not None:
        recs = [read_recording(folder, progress=False) for folder in recordings(args.data)]
        if not recs:
            raise SystemExit(f"--data: no recordings in {args.data}")
    else:
        configs = scale_configs(args.scale, args.seed)
        recs = _parallel(_recording, configs, range(len(configs)))
    return {r.data_key: r for r in recs}, time.perf_counter() - start


def run_spec(path: Path, options: dict[str, Any]) -> RunSpec:
    return RunSpec.of_member(load_experiment(path), trainer_options=options)


def bench(
    spec: RunSpec, recs: dict[str, Recording], regs: dict, device: torch.device, args
) -> dict[str, Any]:
    cfg = spec.trainer_config
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        rss_reset = False
    else:
        rss_reset = reset_peak_rss()
    t0 = time.perf_counter()
    scans = build_scans(recs, spec.dataset_config, device, regressors=regs)
    _sync(device)
    build_s = time.perf_counter() - t0
    model = build_model(spec, recs, scans).to(device)
    set_seed(spec.seed)
    speed.prepare_model(model, cfg)
    optimizer = speed.optimizer(speed.parameter_groups(model, cfg), cfg)
    # a preset that averages its weights pays the average's update after every step, as in training
    ema = schedule.weight_average(model, cfg)
    after_step = None if ema is None else partial(ema.update_parameters, model)
    bs = spec.dataset_config.batch_size
    streams = {
        k: BatchStream(s, bs, torch.Generator().manual_seed(spec.dataset_config.shuffle_seed))
        for k, s in scans.items()
    }
    epoch_rounds = max(int(np.ceil(len(s.tier_indices("train")) / bs)) for s in scans.values())
    rounds = min(args.rounds or epoch_rounds, epoch_rounds)
    per_round = sum(min(bs, len(s.tier_indices("train"))) for s in scans.values())
    model.train()
    t0 = time.perf_counter()
    if args.warmup:
        train_epoch(model, scans, streams, optimizer, cfg, args.warmup, 0, after_step=after_step)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    pass_s = []
    for _ in range(args.repeats):
        _sync(device)
        t0 = time.perf_counter()
        train_epoch(model, scans, streams, optimizer, cfg, rounds, 1, after_step=after_step)
        _sync(device)
        pass_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    evaluated = model if ema is None else ema.module  # what training validates
    val = validation_correlation(evaluated, scans, precision=lambda: speed.autocast(cfg, device))
    _sync(device)
    val_s = time.perf_counter() - t0
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "alloc"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "RSS" if rss_reset else "RSS*"
    median = statistics.median(pass_s)
    samples_per_s = rounds * per_round / median
    result = {
        "build_scans_s": build_s,
        "warmup_s": warmup_s,
        "rounds_timed": rounds,
        "epoch_rounds": epoch_rounds,
        "samples_per_s": samples_per_s,
        "train_s_per_epoch": median * epoch_rounds / rounds,
        "validation_s": val_s,
        "s_per_epoch": median * epoch_rounds / rounds + val_s,
        "val_corr_after": val,
        "peak_memory_mib": peak / MIB,
        "peak_memory_kind": kind,
        "parameters": sum(p.numel() for p in model.parameters()),
        "pass_s": pass_s,
    }
    del model, optimizer, scans, streams, ema, evaluated, after_step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def agreement(spec: RunSpec, recs, regs, device, epochs: int) -> dict[str, float]:
    """Validation correlation after ``epochs`` epochs (no early stop) without and with bf16 autocast."""
    out = {}
    for name, options in (("fp32", {"autocast": None}), ("bf16", {"autocast": "bf16"})):
        cfg = spec.trainer_config.model_copy(
            update={"max_iter": epochs, "patience": epochs + 1, "lr_decay_steps": 1, **options}
        )
        scans = build_scans(recs, spec.dataset_config, device, regressors=regs)
        model = build_model(spec, recs, scans).to(device)
        result = train(
            model,
            scans,
            cfg,
            batch_size=spec.dataset_config.batch_size,
            shuffle_seed=spec.dataset_config.shuffle_seed,
            seed=spec.seed,
            progress=False,
        )
        out[name] = result.history[-1].val_corr
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    recs, data_s = load_data(args)
    presets = args.experiment or [REPO / "experiments" / name for name in PRESETS[args.scale]]
    results, agree = [], None
    for path in presets:
        base = run_spec(path, {})
        t0 = time.perf_counter()
        computed = _parallel(compute_regressors, list(recs.values()), [base.dataset_config] * len(recs))
        regs = dict(zip(recs, computed, strict=True))
        regs_s = time.perf_counter() - t0
        for name in args.option_sets:
            print(f"{path.name} [{name}] ...", file=sys.stderr, flush=True)
            r = bench(run_spec(path, OPTION_SETS[name]), recs, regs, device, args)
            results.append({"preset": path.name, "options": name, "regressors_s": regs_s, **r})
        if args.agree_epochs and agree is None:
            agree = {
                "preset": path.name,
                "epochs": args.agree_epochs,
                **agreement(base, recs, regs, device, args.agree_epochs),
            }
    first = next(iter(recs.values()))
    report = {
        "command": command_line(),
        "machine": machine_info(),
        "device": str(device),
        "workload": {
            "scale": args.scale,
            "scans": len(recs),
            "neurons": [r.n_neurons for r in recs.values()],
            "trials": [r.n_trials for r in recs.values()],
            "train_trials": int(np.sum(np.asarray(first.tiers) == "train")),
            "data_s": data_s,
        },
        "results": results,
        "autocast_agreement": agree,
        "wall_s": time.perf_counter() - start,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


def render(report: dict[str, Any]) -> str:
    w = report["workload"]
    head = [
        "Training throughput (trainer epoch function, data resident on the device)",
        f"command  : {report['command']}",
        f"machine  : {machine_line(report['machine'])}",
        f"device   : {report['device']}",
        f"workload : {w['scans']} scans, neurons {w['neurons']}, trials {w['trials']}",
        "",
    ]
    headers = [
        "preset",
        "options",
        "params",
        "samples/s",
        "s/epoch",
        "of it validation",
        "peak MiB",
        "warm-up s",
    ]
    rows = [
        [
            r["preset"],
            r["options"],
            f"{r['parameters']:,}",
            f"{r['samples_per_s']:.1f}",
            f"{r['s_per_epoch']:.2f}",
            f"{r['validation_s']:.2f}",
            f"{r['peak_memory_mib']:.0f} ({r['peak_memory_kind']})",
            f"{r['warmup_s']:.1f}",
        ]
        for r in report["results"]
    ]
    lines = [*head, table(headers, rows)]
    timed = {r["rounds_timed"] for r in report["results"]}
    epoch = {r["epoch_rounds"] for r in report["results"]}
    lines.append(
        f"\ntimed passes of {sorted(timed)} rounds (an epoch is {sorted(epoch)}); "
        "s/epoch = epoch rounds at that rate + validation"
    )
    a = report["autocast_agreement"]
    if a:
        lines.append(
            f"validation correlation after {a['epochs']} epochs of {a['preset']}: "
            f"fp32 {a['fp32']:.4f}, bf16 autocast {a['bf16']:.4f}"
        )
    lines.append(f"benchmark wall time {report['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
