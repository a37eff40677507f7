"""Host memory of a preset's training process on the six full-size recordings, stage by stage.

What it measures:
    A child process does what a worker's ``TrainedModel.make_compute`` does, with the same functions, and
    reports its resident memory (the process and its children, sampled every 50 ms) after each stage:
      1. ``start``: Python, torch, DataJoint imported and connected;
      2. ``fetch + tensors``: each scan's recording and regressors fetched from the database and object
         store and turned into tensors on the device (``schemas.training.stored_inputs`` +
         ``pipeline.run.load_scans``: one scan at a time, as training does; ``--all-at-once``
         instead fetches every recording first, the way training did before, for comparison);
      3. ``model``: the preset's model (``--experiment``, default ``experiments/winner.yaml``; its first
         member's seed) built and moved to the device;
         ``rf_map start``: only for a preset with ``init_mu: rf_map`` (``beyond_full.yaml``): every scan's
         readout positions started at its mapped receptive fields (``pipeline.run.start_as_configured``, as
         training does; on the CPU minutes per full-size scan: ``--rf-map-scans K`` maps only the K scans with
         the most neurons x training trials, the others keep their uniform start; the scans are mapped one
         after the other, each one's intermediates freed before the next, so the largest one sets the stage's
         peak; ``--rf-map-pairs P`` maps with a bank of P Gabor pairs instead of 24 (P orientations; the bank
         is filtered 8 pairs at a time and correlated 2 pairs at a time, every group of 8 allocating the same,
         so P = 8 gives the peak of the whole map in a third of the time; the positions are then coarser,
         which the few rounds measured here do not care about);
      4. ``first epoch``: ``trainer.train`` with ``max_iter=1`` (its initial and final validation passes
         included); on the CPU only the first ``--batches`` rounds of it (default 5: the peak of an epoch
         is reached in its first round, a whole epoch at full size takes hours on 2 cores); on CUDA the
         whole epoch.
    The process's kernel high-water mark (``ru_maxrss``) is printed too. The database server is another
    process and is not counted. Target (issue 11): <= 8 GB peak (the winning entry needed 32 GB).

    The recordings and their regressors come from a ``SENSORIUM_HOME`` prepared by
    ``python -m benchmarks.regressors --home DIR`` (done here first when ``--home`` is not given or empty);
    regressors the preset asks for beyond the winner's (``beyond_full.yaml``'s log1p history) are
    computed into that home first, in a process of their own, before anything is measured.

Run:  .venv/bin/python -m benchmarks.memory [--home DIR] [--experiment FILE] [--device cpu] [--batches 5]
      [--all-at-once] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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

        import pipeline.models.rf_map as rf_map_module
        import schemas
        from pipeline.experiments import load_experiment
        from pipeline.run import RunSpec, build_model, load_scans, start_as_configured, train_model
        from pipeline.training.seeding import resolve_device
        from schemas.data import Scan
        from schemas.regressors import fetch_regressors
        from schemas.training import stored_inputs

        schemas.activate()
        device = resolve_device(args.device)
        exp = load_experiment(args.experiment)
        trainer = {"max_iter": 1}
        if device.type == "cpu":
            trainer["max_batches_per_epoch"] = args.batches
        # the first member as populate would train it: its re-split and seed
        spec = RunSpec.of_member(exp, trainer_options=trainer)
        dataset = {**exp.member_list()[0][0], "scans": "all"}
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
        if spec.model_config.init_mu == "rf_map":
            # its per-scan lines to stderr: stdout carries the one result line
            if args.rf_map_pairs:
                # a module constant read at each call: fewer pairs, fewer chunks of the same size
                rf_map_module.MAP_PAIRS = args.rf_map_pairs
            order = sorted(scans, key=lambda k: -scans[k].n_neurons * len(scans[k].tier_indices("train")))
            mapped = order[: args.rf_map_scans] if args.rf_map_scans else order
            with contextlib.redirect_stdout(sys.stderr):
                start_as_configured(
                    spec,
                    model,
                    {k: scans[k] for k in mapped},
                    {k: geometry[k] for k in mapped},
                    progress=True,
                )
            stages["rf_map start"] = rss.mark("rf_map start")
            say("rf_map start")
        t0 = time.perf_counter()
        result = train_model(spec, model, scans, progress=False)
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


def populate(args: argparse.Namespace) -> None:
    """Compute the regressors the preset asks for that the home lacks (none for the winner's, which
    ``benchmarks.regressors`` computed): the parameter sets registered as ``experiment add`` does, then
    each regressor table populated for every scan (DataJoint skips what is there)."""
    import schemas
    from pipeline.experiments import load_experiment
    from schemas.data import Scan
    from schemas.regressors import (
        BehaviorNormalization,
        History,
        HistoryParamSet,
        NetworkState,
        SplitParamSet,
        SplitSet,
        StateParamSet,
    )
    from usecases.experiments import register_dataset_regressors

    schemas.activate()
    dataset = load_experiment(args.experiment).dataset.config
    register_dataset_regressors(dataset)
    regs = dataset.get("regressors") or {}
    method = dataset.get("behavior_normalization", "std")
    # (table class, restriction): DataJoint's class-level ``&`` is not in its type annotations
    wanted: list[tuple[Any, dict[str, Any]]] = [(BehaviorNormalization, {"behavior_method": method})]
    if regs.get("history") is not None:
        wanted.append((History, HistoryParamSet.key_of(regs["history"])))
    if regs.get("state") is not None:
        wanted.append((NetworkState, StateParamSet.key_of(regs["state"])))
    if dataset.get("split") is not None:
        wanted.append((SplitSet, SplitParamSet.key_of(dataset["split"])))
    keys = Scan.proj().to_dicts()
    for tbl, restriction in wanted:
        todo = [k for k in keys if not tbl & dict(k, **restriction)]
        for key in todo:
            t0 = time.perf_counter()
            tbl.populate(dict(key, **restriction), display_progress=False)
            print(
                f"  {tbl.__name__} {key['data_key']}: {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="SENSORIUM_HOME prepared by benchmarks.regressors")
    parser.add_argument(
        "--experiment", type=Path, default=EXPERIMENT, help="the preset (default experiments/winner.yaml)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--batches", type=int, default=5, help="rounds of the first epoch on the CPU")
    parser.add_argument("--all-at-once", action="store_true", help="fetch every recording before tensors")
    parser.add_argument(
        "--rf-map-pairs", type=int, help="init_mu rf_map: Gabor pairs of the map (even, 2..24; default 24)"
    )
    parser.add_argument(
        "--rf-map-scans", type=int, help="init_mu rf_map: map only this many (largest) scans (default all)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--populate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.populate:
        populate(args)
        return 0
    if args.batches < 1:
        parser.error("--batches must be at least 1")
    if args.rf_map_scans is not None and args.rf_map_scans < 1:
        parser.error("--rf-map-scans must be at least 1")
    if args.rf_map_pairs is not None and not (2 <= args.rf_map_pairs <= 24 and args.rf_map_pairs % 2 == 0):
        parser.error("--rf-map-pairs must be an even number from 2 to 24")
    args.experiment = args.experiment.resolve()
    try:
        from pipeline.experiments import load_experiment

        name = load_experiment(args.experiment).name
    except (ValueError, OSError) as exc:  # the loader's one-line message
        parser.error(f"--experiment {args.experiment}: {str(exc).splitlines()[0]}")
    home = args.home or Path("/tmp/sb-memory")
    if not (home / "db").exists():
        print(f"preparing {home} (ingest + regressors, benchmarks.regressors) ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "benchmarks.regressors", "--home", str(home)]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=sys.stderr)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SENSORIUM_"))}
    env.update(SENSORIUM_HOME=str(home), PYTHONPATH=str(REPO))
    preset = ["--experiment", str(args.experiment)]
    print(f"regressors of {args.experiment.name} in {home} ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "benchmarks.memory", "--populate", *preset]
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=sys.stderr)
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", "--device", args.device, *preset]
    cmd += ["--batches", str(args.batches)] + (["--all-at-once"] if args.all_at_once else [])
    cmd += ["--rf-map-scans", str(args.rf_map_scans)] if args.rf_map_scans else []
    cmd += ["--rf-map-pairs", str(args.rf_map_pairs)] if args.rf_map_pairs else []
    m = run_measured(cmd, env, show_stderr=True).check("the measured training process")
    line = next(x for x in m.stdout.splitlines() if x.startswith("MEMORY "))
    result = json.loads(line[len("MEMORY ") :])
    report = {
        "command": command_line(),
        "machine": machine_info(),
        "experiment": str(args.experiment),
        "device": args.device,
        "mode": "all at once" if args.all_at_once else "one scan at a time",
        "batches": args.batches if args.device == "cpu" else "whole epoch",
        "rf_map_scans": args.rf_map_scans or "all",
        "rf_map_pairs": args.rf_map_pairs or 24,
        "peak_rss_wait4": m.peak_rss,
        "wall_s": m.wall_s,
        **result,
        "target_gib": TARGET_GIB,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Host memory of a {name}-preset training process (stages as in make_compute)")
    print(f"command  : {report['command']}")
    print(f"machine  : {machine_line(report['machine'])}")
    print(
        f"workload : {len(result['scans'])} scans, {sum(result['scans'].values())} neurons; {report['mode']}"
    )
    n_scans = len(result["scans"])
    labels = {
        "first epoch": "first epoch" + (f" ({args.batches} rounds)" if args.device == "cpu" else ""),
        "rf_map start": f"rf_map start ({min(args.rf_map_scans or n_scans, n_scans)} of {n_scans} scans, "
        f"{args.rf_map_pairs or 24} of 24 pairs)",
    }
    rows = [[labels.get(name, name), f"{peak / GIB:.2f}"] for name, peak in result["stages"].items()]
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
