"""Ingest of one recording, from its folder and from its zip: wall time and peak memory.

What it measures:
    ``sensorium ingest -q PATH`` as its own process, once for the folder and once for the zip of the same
    synthetic recording (``--scale full``: mouse ``--mouse`` of the six SENSORIUM+-size recordings, default
    the first, 8,372 neurons x 5,994 trials), each into a fresh ``SENSORIUM_HOME`` whose embedded
    PostgreSQL is already running (its initdb is not counted) and whose cache is empty (a cold ingest:
    every file read and validated, merged, checksummed, stored; trial order computed).
    Wall time = the whole process, Python start-up included. Peak RSS = the kernel's high-water mark of
    the ingest process (``wait4``); the database server's own memory is a separate process, not counted.
    Targets (issue 11): <= 60 s and <= 2 GB for one full-size recording on 2 cores.

Run:  .venv/bin/python -m benchmarks.ingest [--scale full|demo] [--mouse 0] [--seed 0] [--data DIR] [--json]
      (the recordings are synthesised on first use into $SENSORIUM_BENCH_DATA or /tmp/sensorium-bench)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    CLI,
    GIB,
    command_line,
    ensure_synthetic,
    machine_info,
    machine_line,
    recordings,
    run_measured,
    table,
    throwaway_home,
)

TARGET_S, TARGET_GIB = 60.0, 2.0


def log(text: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f} s] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["demo", "full"], default="full")
    parser.add_argument("--mouse", type=int, default=0, help="which recording of the scale (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="synthesis seed (default 0)")
    parser.add_argument("--data", type=Path, help="folder of the recordings (synthesised when empty)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    data, synth_s = ensure_synthetic(args.scale, args.seed, args.data)
    folders = recordings(data)
    if not 0 <= args.mouse < len(folders):
        parser.error(f"--mouse: expected 0..{len(folders) - 1}, found {args.mouse}")
    folder = folders[args.mouse]
    results = []
    start = time.perf_counter()
    for form, path in (("folder", folder), ("zip", folder.with_name(folder.name + ".zip"))):
        with throwaway_home() as env:
            log(f"{form}: database started", start)
            m = run_measured([*CLI, "ingest", "-q", str(path)], env)
            m.check(f"ingest of {path}")
            log(f"{form}: ingested in {m.wall_s:.1f} s", start)
        log(f"{form}: database stopped and removed", start)
        results.append({"form": form, "path": str(path), "wall_s": m.wall_s, "peak_rss": m.peak_rss})

    n_neurons = len(np.load(folder / "meta" / "neurons" / "unit_ids.npy"))
    n_trials = len(list((folder / "data" / "responses").iterdir()))
    report = {
        "command": command_line(),
        "machine": machine_info(),
        "recording": {"path": str(folder), "neurons": n_neurons, "trials": n_trials},
        "synthesis_s": synth_s,
        "results": results,
        "targets": {"wall_s": TARGET_S, "peak_rss_gib": TARGET_GIB},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("Ingest of one recording (sensorium ingest, cold cache, fresh database)")
    print(f"command   : {report['command']}")
    print(f"machine   : {machine_line(report['machine'])}")
    print(f"recording : {folder.name}: {n_neurons} neurons x {n_trials} trials")
    rows = [
        [
            r["form"],
            f"{r['wall_s']:.1f}",
            f"{r['peak_rss'] / GIB:.2f}",
            "yes" if r["wall_s"] <= TARGET_S and r["peak_rss"] <= TARGET_GIB * GIB else "NO",
        ]
        for r in results
    ]
    print(table(["source", "wall s", "peak RSS GiB", f"<= {TARGET_S:g} s and {TARGET_GIB:g} GiB"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
