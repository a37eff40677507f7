"""The preset comparison: ``beyond`` against the winner preset, single models and ensembles, same budget.

On the project's synthetic recordings (two pre-training-style mice, as ``benchmarks.ablation``), every
row is trained through the real pipeline (``sensorium experiment add`` + one ``sensorium populate``) in
one ``SENSORIUM_HOME``, at the same number of epochs on the same data:

* single models, one per seed: ``winner_demo`` and ``beyond_single`` (``experiments/beyond.yaml`` as one
  model per seed on the original split);
* ensembles, one per seed base s (members seeds s, s+1, s+2 on re-splits 0..2):
  ``winner_ensemble`` (``ensemble_demo.yaml``, the winner preset's ensemble) and ``beyond_ensemble``
  (``beyond.yaml``).

It prints the test single-trial correlation (mean over the scans; range over seeds) with the oracle as
the ceiling and each row's ratio to its reference (winner_demo for single rows, the winner ensemble for
ensembles). Rerunning with the same ``--home`` reuses what is trained (a stopped run continues).

The recordings are synthesised with ``--synth-seed`` (default 1), so they are not the seed-0 demo
recordings the sweeps and selection rounds chose on: selection and comparison share no data.
``--tier validation`` reports the validation tier instead (single rows only: ensemble members'
re-splits train on each other's validation trials).

The candidate rows of the selection rounds that chose ``beyond.yaml`` run through the same machinery
from ``research.selection`` (``compare`` with their own rows; the row and experiment names are the same).

Run:  .venv/bin/python -m benchmarks.beyond --home DIR [--seeds 42,45,48] [--epochs 12] [--rows a,b]
      [--workers 2] [--synth-seed 1] [--tier test|validation] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import CLI, REPO, command_line, sensorium, synth_and_ingest

EXPERIMENTS = REPO / "experiments"

#: single-model rows: (experiment file, --set overrides); one model per seed on the original split
SINGLES: dict[str, tuple[str, list[str]]] = {
    "winner_demo": ("winner_demo.yaml", []),
    "beyond_single": ("beyond.yaml", []),
}
#: ensemble rows: experiment file, trained as members s, s+1, s+2 on re-splits 0..2 per seed base s
ENSEMBLES: dict[str, str] = {
    "winner_ensemble": "ensemble_demo.yaml",
    "beyond_ensemble": "beyond.yaml",
}
#: the row each kind's ratio is taken against
REFERENCE = {"single": "winner_demo", "ensemble": "winner_ensemble"}


def _safe(name: str) -> str:
    return name.replace("+", "p_")


def declare(
    env: dict,
    rows: list[str],
    seeds: list[int],
    epochs: int,
    singles: dict[str, tuple[str, list[str]]] = SINGLES,
    ensembles: Mapping[str, str | tuple[str, list[str]]] = ENSEMBLES,
) -> dict[str, tuple[str, list[str]]]:
    """Add every row's experiments; returns {row: (kind, [experiment or ensemble names])}.

    An ensemble row is an experiment file, or a file and its own ``--set`` overrides (applied after the
    row's members and budget, so a row may give itself another ``trainer.config.max_iter``).
    """
    declared = {}
    for row in rows:
        if row in singles:
            path, sets = singles[row]
            name = f"abl_{_safe(row)}"
            seed_list = ",".join(map(str, seeds))
            # one model per seed on the original split (a re-split belongs to ensemble members)
            extra = [f"name={name}", f"seeds=[{seed_list}]", "members=null", "ensemble=null"]
            extra.append("dataset.config.split=null")
            extra.append(f"trainer.config.max_iter={epochs}")
            args = [x for s in [*extra, *sets] for x in ("--set", s)]
            sensorium(env, "experiment", "add", str(EXPERIMENTS / path), *args)
            declared[row] = ("single", [name])
        else:
            entry = ensembles[row]
            path, own = entry if isinstance(entry, tuple) else (entry, [])
            names = []
            for s in seeds:
                name = f"abl_{row}_s{s}"
                members = ",".join(f"{{seed: {s + i}, split: {i}}}" for i in range(3))
                sets = [
                    f"name={name}",
                    f"members=[{members}]",
                    "seeds=null",
                    f"ensemble.name={name}",
                    "dataset.config.split.n_splits=3",
                    f"trainer.config.max_iter={epochs}",
                    *own,
                ]
                sensorium(
                    env,
                    "experiment",
                    "add",
                    str(EXPERIMENTS / path),
                    *[x for v in sets for x in ("--set", v)],
                )
                names.append(name)
            declared[row] = ("ensemble", names)
    return declared


def summarise(
    scores: list[dict], declared: dict[str, tuple[str, list[str]]], tier: str = "test"
) -> list[dict]:
    """One summary per declared row from ``sensorium scores --json`` rows: mean over seeds of the per-seed
    mean over scans, the seed range, the oracle and the ratio to the kind's reference row."""
    of_tier = [r for r in scores if r["tier"] == tier]
    out: list[dict[str, Any]] = []
    for row, (kind, names) in declared.items():
        per_seed: dict[str, list[float]] = {}
        oracle = []
        for r in of_tier:
            model = r["model"].removesuffix(" [ens]")
            if kind == "single" and r["model"] == names[0]:
                per_seed.setdefault(r["member"], []).append(r["single_trial_correlation"])
            elif kind == "ensemble" and r["model"].endswith("[ens]") and model in names:
                per_seed.setdefault(model, []).append(r["single_trial_correlation"])
            else:
                continue
            oracle.append(r["oracle_single_trial_correlation"])
        means = [statistics.fmean(v) for v in per_seed.values()]
        if not means:
            continue
        out.append(
            {
                "row": row,
                "kind": kind,
                "test_corr": statistics.fmean(means),
                "seed_min": min(means),
                "seed_max": max(means),
                "n_seeds": len(means),
                "oracle": statistics.fmean(oracle),
            }
        )
    ref = {r["row"]: r["test_corr"] for r in out}
    for r in out:
        base = ref.get(REFERENCE[r["kind"]])
        r["ratio"] = None if base is None else r["test_corr"] / base
    return out


def compare(
    argv: list[str] | None = None,
    singles: dict[str, tuple[str, list[str]]] = SINGLES,
    ensembles: Mapping[str, str | tuple[str, list[str]]] = ENSEMBLES,
    default_rows: list[str] | None = None,
    description: str | None = None,
) -> None:
    """The command line: train the chosen rows side by side in one home and print their table.

    ``singles`` / ``ensembles`` are the rows one may name (``research.selection`` passes its candidate
    rows); ``default_rows`` those trained without ``--rows`` (default: all of them).
    """
    default_rows = default_rows or [*singles, *ensembles]
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="SENSORIUM_HOME (reused when it exists)")
    parser.add_argument("--seeds", default="42,45,48", help="seeds (ensembles: seed bases s, s+1, s+2)")
    parser.add_argument("--epochs", type=int, default=12, help="max_iter of every model (default 12)")
    parser.add_argument("--rows", default=",".join(default_rows), help="comma-separated rows")
    parser.add_argument("--mice", type=int, default=2, help="recordings to synthesise (default 2)")
    parser.add_argument("--neurons", type=int, default=150, help="neurons per recording (default 150)")
    parser.add_argument(
        "--synth-seed",
        type=int,
        default=1,
        help="seed of the synthetic recordings (default 1: not the seed-0 demo data the sweeps chose on)",
    )
    parser.add_argument(
        "--stimulus",
        choices=["gabor", "teacher"],
        default="gabor",
        help="image drive of the recordings (teacher: a pretrained model of real V1; docs/teacher-world.md)",
    )
    parser.add_argument("--teacher", type=Path, help="the teacher's state_dict (with --stimulus teacher)")
    parser.add_argument(
        "--workers", type=int, default=1, help="populate processes of one torch thread each (default 1)"
    )
    parser.add_argument(
        "--tier",
        choices=["test", "validation"],
        default="test",
        help="tier to report (validation: for choosing rows; members' re-splits mix it with training)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in singles and r not in ensembles]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {[*singles, *ensembles]}")

    if (args.stimulus == "teacher") != (args.teacher is not None):
        raise SystemExit("--teacher FILE goes with --stimulus teacher, and only with it")
    env = dict(os.environ, SENSORIUM_HOME=str(args.home))
    t0 = time.perf_counter()
    data = args.home / "data"
    seed_file = data / "SYNTH_SEED"  # a reused home must hold the recordings this run asks for
    # the Gabor world's homes of earlier runs hold the seed alone
    wanted = str(args.synth_seed) + ("" if args.stimulus == "gabor" else f" {args.stimulus}")
    if (args.mice, args.neurons) != (2, 150):  # homes of the default size keep their earlier line
        wanted += f" {args.mice}x{args.neurons}"
    if seed_file.exists() and seed_file.read_text().strip() != wanted:
        raise SystemExit(
            f"{args.home} holds recordings of synth seed / world {seed_file.read_text().strip()!r}, not "
            f"{wanted!r}: use another --home"
        )
    if not any(data.glob("*.zip")):
        world = [] if args.stimulus == "gabor" else ["--stimulus", "teacher", "--teacher", str(args.teacher)]
        synth_and_ingest(env, data, *world, mice=args.mice, neurons=args.neurons, seed=args.synth_seed)
        seed_file.write_text(f"{wanted}\n")
    declared = declare(env, rows, seeds, args.epochs, singles, ensembles)
    names = [n for _, ns in declared.values() for n in ns]
    print(
        f"training {len(names)} experiments ({sum(len(ns) for _, ns in declared.values())}) ...", flush=True
    )
    if args.workers > 1:
        # N one-thread processes share the job queue (small models train faster side by side than one
        # process with N threads); the plain populate after them picks up what depended on both (the
        # ensemble scores of members trained by different processes)
        one_thread = dict(env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        procs = [
            subprocess.Popen(
                [*CLI, "populate", "--reserve-jobs"],
                cwd=REPO,
                env=one_thread,
                stdout=subprocess.DEVNULL if i else None,
            )
            for i in range(args.workers)
        ]
        failed = [p.args for p in procs if p.wait() != 0]
        if failed:
            raise SystemExit(f"{len(failed)} populate process(es) failed: see `sensorium jobs --errors`")
    sensorium(env, "populate", capture=False)  # every declared model, then predictions and scores
    summary = summarise(json.loads(sensorium(env, "scores", "--json")), declared, args.tier)
    info = {
        "command": command_line(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": f"{args.mice} synthetic pre-training-style mice ({args.neurons} neurons, 1000 trials, "
        f"synth seed {args.synth_seed}, {args.stimulus} world)",
        "budget": f"{args.epochs} epochs per model; seeds {seeds}; {args.workers} populate process(es)",
        "wall_seconds": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps({"info": info, "rows": summary}, indent=2))
        return
    for k, v in info.items():
        print(f"{k:<8}: {v}")
    print(
        f"metric  : {args.tier} single-trial correlation, mean over scans; range over seeds; "
        "oracle = planted expectation"
    )
    print(
        f"\n{'row':<20} {'kind':<8} {args.tier[:4] + ' corr':>9} {'seeds':>5} {'range':>11} {'oracle':>7} "
        f"{'of oracle':>9} {'vs ref':>7}"
    )
    for r in summary:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        spread = f"{r['seed_min']:.3f}-{r['seed_max']:.3f}"
        print(
            f"{r['row']:<20} {r['kind']:<8} {r['test_corr']:>9.3f} {r['n_seeds']:>5} {spread:>11} "
            f"{r['oracle']:>7.3f} {r['test_corr'] / r['oracle']:>9.2f} {ratio:>7}"
        )


def main(argv: list[str] | None = None) -> None:
    compare(argv)


if __name__ == "__main__":
    main()
