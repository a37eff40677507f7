"""Host memory of a winner-preset training process on the six full-size recordings, stage by stage.

What it measures:
    A child process does what a worker's ``TrainedModel.make_compute`` does, with the same functions, and
    reports its resident memory (the process and its children, sampled every 50 ms) after each stage:
      1. ``start``: Python, torch, DataJoint imported and connected;
      2. ``fetch + tensors``: each scan's recording and regressors fetched from the database and object
         store and turned into tensors on the device (``schemas.training.stored_inputs`` +
         ``pipeline.run.load_scans``: one scan at a time, as training does; ``--all-at-once``
         instead fetches every recording first, the way training did before, for comparison);
      3. ``model``: the winner model built and moved to the device;
      4. ``first epoch``: ``trainer.train`` with ``max_iter=1`` (its initial and final validation passes
         included); on the CPU only the first ``--batches`` rounds of it (default 5: the peak of an epoch
         is reached in its first round, a whole epoch at full size takes hours on 2 cores); on CUDA the
         whole epoch.
    The process's kernel high-water mark (``ru_maxrss``) is printed too. The database server is another
    process and is not counted. Target (issue 11): <= 8 GB peak (the winning entry needed 32 GB).

    The recordings and their regressors come from a ``SENSORIUM_HOME`` prepared by
    ``python -m benchmarks.regressors --home DIR`` (done here first when ``--home`` is not given or empty).

Run:  .venv/bin/python -m benchmarks.memory [--home DIR] [--device cpu] [--batches 5] [--all-at-once]
      [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import (
    GIB,
    REPO,
    RssSampler,
    command_line,
    machine_info,
    machine_line,
    run_measured,
    table,
)

TARGET_GIB = 8.0
EXPERIMENT = REPO / "experiments" / "winner.yaml"


def _progress(stages: dict[str, int]):
    """A function printing one stderr line per finished stage (its peak RSS, seconds since the start)."""
    start = time.perf_counter()

    def say(name: str) -> None:
        print(
            f"  {name}: peak {stages[name] / GIB:.2f} GiB [{time.perf_counter() - start:.0f} s]",
            file=sys.stderr,
            flush=True,
        )

    return say


def child(args: argparse.Namespace) -> None:
    """The measured process: prints one JSON line with the stage peaks."""
    with RssSampler() as rss:
        import torch

        import schemas
        from pipeline.experiments import load_experiment
        from pipeline.run import RunSpec, build_model, load_scans
        from pipeline.training.seeding import resolve_device
        from pipeline.training.trainer import train
        from schemas.data import Scan
        from schemas.regressors import fetch_regressors
        from schemas.training import stored_inputs

        schemas.activate()
        device = resolve_device(args.device)
        exp = load_experiment(EXPERIMENT)
        dataset = {**exp.dataset.config, "scans": "all"}
        trainer = dict(exp.trainer.config, max_iter=1)
        if device.type == "cpu":
            trainer["max_batches_per_epoch"] = args.batches
        member = exp.members[0]
        spec_dict = dict(
            dataset_fn=exp.dataset.fn,
            dataset_config=dataset,
            model_fn=exp.model.fn,
            model_config=exp.model.config,
            trainer_fn=exp.trainer.fn,
            trainer_config=trainer,
            seed=member.seed,
        )
        spec = RunSpec.from_dicts(**spec_dict)
        keys = sorted(r["data_key"] for r in Scan.proj().to_dicts())
        stages = {"start": rss.mark("start")}
        say = _progress(stages)
        say("start")
        t0 = time.perf_counter()
        if args.all_at_once:
            recordings = {k: Scan().fetch_recording({"data_key": k}) for k in keys}
            regressors = {k: fetch_regressors(k, dataset) for k in keys}
        else:
            recordings, regressors = stored_inputs(keys, dataset)
        scans, geometry = load_scans(recordings, spec.dataset_config, device, None, regressors)
        stages["fetch + tensors"] = rss.mark("fetch + tensors")
        say("fetch + tensors")
        fetch_s = time.perf_counter() - t0
        model = build_model(spec, geometry, scans).to(device)
        stages["model"] = rss.mark("model")
        say("model")
        t0 = time.perf_counter()
        result = train(
            model,
            scans,
            spec.trainer_config,
            batch_size=spec.dataset_config.batch_size,
            shuffle_seed=spec.dataset_config.shuffle_seed,
            seed=spec.seed,
            progress=False,
        )
        stages["first epoch"] = rss.mark("first epoch")
        say("first epoch")
        epoch_s = time.perf_counter() - t0
    tensor_bytes = sum(
        t.element_size() * t.nelement()
        for s in scans.values()
        for t in [s.images, s.behavior, s.pupil_center, s.responses, *s.extras.values()]
        + ([s.history.prefix, s.history.n_known_before] if s.history is not None else [])
    )
    out = {
        "stages": stages,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "tensor_bytes": tensor_bytes,
        "scans": {k: s.n_neurons for k, s in scans.items()},
        "fetch_s": fetch_s,
        "epoch_s": epoch_s,
        "val_corr": result.best_val_corr,
        "cuda_peak": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
    }
    print("MEMORY " + json.dumps(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="SENSORIUM_HOME prepared by benchmarks.regressors")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--batches", type=int, default=5, help="rounds of the first epoch on the CPU")
    parser.add_argument("--all-at-once", action="store_true", help="fetch every recording before tensors")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    home = args.home or Path("/tmp/sb-memory")
    if not (home / "db").exists():
        print(f"preparing {home} (ingest + regressors, benchmarks.regressors) ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "benchmarks.regressors", "--home", str(home)]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=sys.stderr)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SENSORIUM_"))}
    env.update(SENSORIUM_HOME=str(home), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", "--device", args.device]
    cmd += ["--batches", str(args.batches)] + (["--all-at-once"] if args.all_at_once else [])
    m = run_measured(cmd, env, show_stderr=True).check("the measured training process")
    line = next(x for x in m.stdout.splitlines() if x.startswith("MEMORY "))
    result = json.loads(line[len("MEMORY ") :])
    report = {
        "command": command_line(),
        "machine": machine_info(),
        "device": args.device,
        "mode": "all at once" if args.all_at_once else "one scan at a time",
        "batches": args.batches if args.device == "cpu" else "whole epoch",
        "peak_rss_wait4": m.peak_rss,
        "wall_s": m.wall_s,
        **result,
        "target_gib": TARGET_GIB,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("Host memory of a winner-preset training process (six recordings, stages as in make_compute)")
    print(f"command  : {report['command']}")
    print(f"machine  : {machine_line(report['machine'])}")
    print(
        f"workload : {len(result['scans'])} scans, {sum(result['scans'].values())} neurons; {report['mode']}"
    )
    first = "first epoch" + (f" ({args.batches} rounds)" if args.device == "cpu" else "")
    rows = [
        [name if name != "first epoch" else first, f"{peak / GIB:.2f}"]
        for name, peak in result["stages"].items()
    ]
    print(table(["stage", "peak RSS GiB"], rows))
    peak = max(m.peak_rss, *result["stages"].values())
    print(
        f"process high-water mark (wait4): {m.peak_rss / GIB:.2f} GiB; tensors on the device "
        f"{result['tensor_bytes'] / GIB:.2f} GiB; fetch + tensors {result['fetch_s']:.0f} s, "
        f"epoch part {result['epoch_s']:.0f} s"
    )
    verdict = "meets" if peak <= TARGET_GIB * GIB else "MISSES"
    print(f"peak {peak / GIB:.2f} GiB: {verdict} the {TARGET_GIB:g} GiB target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
