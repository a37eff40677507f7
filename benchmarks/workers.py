"""Workers side by side: wall time of 1 vs 2 CPU worker processes on the same training jobs, and the
share of a job's wall time spent on queue bookkeeping.

A throwaway ``SENSORIUM_HOME`` gets two synthetic recordings and an experiment of ``--jobs`` seeds of the
demo baseline (``experiments/demo.yaml``, ``--epochs`` epochs each, no early stop). The same jobs are
trained twice, by one worker and then, after the rows are deleted, by two workers started together;
the machine's cores are split between the workers (``OMP_NUM_THREADS``), so both runs use every core.
Wall time runs from the workers' launch until the last model is stored (process start-up included).

Bookkeeping: for each training job the worker logs its *cycle*, from the queue scan that found it to
the end of its completion, and ``TrainedModel.duration_s`` is the time inside ``make_compute`` (data
to tensors and training). cycle - duration is what DataJoint and the worker add: queue scans,
refresh, reaping, reserve, the fetches of ``make_fetch`` (run twice), the insert transaction, job
completion and the heartbeat's current-job updates. (The heartbeat thread's own UPDATE every
``SENSORIUM_HEARTBEAT_S`` runs beside training, on its own connection.)

Run:  .venv/bin/python -m benchmarks.workers [--jobs 6] [--epochs 4] [--neurons 150] [--trials 1000]
      [--home DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import CLI, REPO, sensorium, synth_and_ingest

CYCLE = re.compile(r"done   TrainedModel \{[^}]*seed=(\d+)\} in ([\d.]+) s \(cycle ([\d.]+) s\)")


def run_workers(env: dict, n_workers: int, n_jobs: int, logs: Path, restriction) -> dict:
    """Start ``n_workers`` workers on the experiment; wait for ``n_jobs`` models; return the figures."""
    from schemas.training import TrainedModel

    threads = max(1, (os.cpu_count() or 1) // n_workers)
    wenv = dict(env, OMP_NUM_THREADS=str(threads))
    paths = [logs / f"{n_workers}w-{i}.log" for i in range(n_workers)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*CLI, "worker", "--queue", "gpu", "--experiment", "bench"]
            + ["--poll", "0.5", "--idle-exit", "3"],
            cwd=REPO,
            env=wenv,
            stdout=open(p, "w"),  # noqa: SIM115 (the child owns it)
            stderr=subprocess.STDOUT,
        )
        for p in paths
    ]
    while len(TrainedModel & restriction) < n_jobs:
        if all(p.poll() is not None for p in procs):
            raise SystemExit(f"workers exited early; see {logs}")
        time.sleep(0.2)
    wall = time.perf_counter() - start
    for p in procs:
        p.wait(timeout=600)
    durations = {r["seed"]: r["duration_s"] for r in (TrainedModel & restriction).to_dicts()}
    cycles = {}
    for path in paths:
        for seed, _, cycle in CYCLE.findall(path.read_text()):
            cycles[int(seed)] = float(cycle)
    shares = [(cycles[s] - durations[s]) / cycles[s] for s in durations if s in cycles]
    return {
        "workers": n_workers,
        "threads_per_worker": threads,
        "wall_s": wall,
        "train_s_median": statistics.median(durations.values()),
        "bookkeeping_share_median": statistics.median(shares),
        "bookkeeping_s_median": statistics.median(cycles[s] - durations[s] for s in durations if s in cycles),
        "jobs_per_worker": [len(CYCLE.findall(p.read_text())) for p in paths],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6, help="training jobs (seeds), default 6")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per job, default 4")
    parser.add_argument("--neurons", type=int, default=150)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--home", type=Path, help="SENSORIUM_HOME to use (default: a new temporary folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="sens-workers-"))
    env = dict(os.environ, SENSORIUM_HOME=str(home), SENSORIUM_DEVICE="cpu")
    env.pop("DJ_HOST", None)
    data = home / "data"
    synth_and_ingest(env, data, mice=2, neurons=args.neurons, trials=args.trials)
    seeds = ",".join(str(100 + i) for i in range(args.jobs))
    sensorium(
        env,
        "experiment",
        "add",
        str(REPO / "experiments" / "demo.yaml"),
        "--set",
        "name=bench",
        "--set",
        f"seeds=[{seeds}]",
        "--set",
        f"trainer.config.max_iter={args.epochs}",
        "--set",
        f"trainer.config.patience={args.epochs}",
        "--set",
        "trainer.config.lr_decay_steps=1",
    )
    os.environ.update(SENSORIUM_HOME=str(home))
    os.environ.pop("DJ_HOST", None)
    import schemas

    schemas.activate()
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel

    restriction = experiment_models("bench")
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    one = run_workers(env, 1, args.jobs, logs, restriction)
    (TrainedModel & restriction).delete()
    two = run_workers(env, 2, args.jobs, logs, restriction)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.node()}",
        "date": time.strftime("%Y-%m-%d"),
        "jobs": args.jobs,
        "epochs": args.epochs,
        "one_worker": one,
        "two_workers": two,
        "speedup": one["wall_s"] / two["wall_s"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.jobs} training jobs of {args.epochs} epochs (demo baseline), {result['machine']}")
    for r in (one, two):
        print(
            f"  {r['workers']} worker(s) x {r['threads_per_worker']} thread(s): wall {r['wall_s']:.1f} s, "
            f"median training {r['train_s_median']:.1f} s per job, jobs per worker {r['jobs_per_worker']}, "
            f"bookkeeping median {r['bookkeeping_s_median']:.3f} s = "
            f"{100 * r['bookkeeping_share_median']:.2f}% of a job's cycle"
        )
    print(f"  wall time 1 worker / 2 workers: {result['speedup']:.2f}")


if __name__ == "__main__":
    main()
