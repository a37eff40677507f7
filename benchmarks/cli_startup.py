"""Start-up cost of the command line: help and argument errors must answer well under a second, and
commands that only read the database must not load torch or scikit-learn.

What it measures:
    Each command below as its own process (``sensorium`` = this interpreter's ``python -m cli``), run
    ``--runs`` times (default 5); the median wall time of the whole process (interpreter start, imports,
    parsing, the check that refuses the argument). Also whether the process imported torch, DataJoint or
    scikit-learn (from ``-X importtime``, one extra run each; none of them should be needed for help or
    an argument error), and the slowest imports of ``sensorium --help`` (cumulative microseconds, as
    ``python -X importtime`` reports them).

    The commands run in a throwaway folder with ``SENSORIUM_HOME`` pointing into it, and ``DJ_HOST`` /
    ``DJ_PORT`` naming a closed local port: no world is touched, and a command that goes to the database
    before refusing its argument pays for the imports and a refused connection, never for starting an
    embedded server (so its time is a lower bound of what a user would wait).

    With ``--reading``: the commands that read the database (``jobs``, ``scores``, ``db status``,
    ``experiment list``) instead, against an embedded server in the throwaway folder, started (and its
    schemas declared) before the timed runs and stopped after them. An empty world: the time is the
    process's start, imports and connection, which is what these commands cost on any world of modest
    size.

Run:  .venv/bin/python -m benchmarks.cli_startup [--runs 5] [--top 15] [--reading] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CLI, REPO

#: (label, arguments, expected exit status)
COMMANDS: list[tuple[str, list[str], int]] = [
    ("sensorium --help", ["--help"], 0),
    ("sensorium ingest --help", ["ingest", "--help"], 0),
    ("sensorium ingest /nonexistent", ["ingest", "/nonexistent"], 2),
    ("sensorium train /nonexistent.yaml", ["train", "/nonexistent.yaml"], 2),
]
#: commands that read the database (``--reading``)
READING: list[tuple[str, list[str], int]] = [
    ("sensorium jobs", ["jobs"], 0),
    ("sensorium scores", ["scores"], 0),
    ("sensorium db status", ["db", "status"], 0),
    ("sensorium experiment list", ["experiment", "list"], 0),
]
HEAVY = ("torch", "datajoint", "sklearn")


def _env(home: Path, database: bool = False) -> dict[str, str]:
    """The commands' environment: a closed port for the database, or (``database``) the embedded server
    of ``home``."""
    env = dict(os.environ, SENSORIUM_HOME=str(home), OMP_NUM_THREADS="1", DJ_HOST="127.0.0.1", DJ_PORT="9")
    if database:
        for name in ("DJ_HOST", "DJ_PORT", "DJ_USER", "DJ_PASS", "SENSORIUM_DB_PREFIX"):
            env.pop(name, None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def time_command(args: list[str], expected: int, runs: int, cwd: Path, env: dict[str, str]) -> list[float]:
    """Wall seconds of ``runs`` runs of the command line with ``args``.

    Raises:
        RuntimeError: a run ended with another exit status than ``expected`` (the measurement would
            not be of the path it names).
    """
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if done.returncode != expected:
            raise RuntimeError(
                f"sensorium {' '.join(args)}: exit {done.returncode}, expected {expected}: "
                f"{(done.stdout + done.stderr).strip()[-500:]}"
            )
    return seconds


def import_times(args: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[int, int, str]]:
    """(self µs, cumulative µs, module) of every import of one run, from ``-X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *CLI[1:], *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        rows.append((int(own), int(cumulative), name.rstrip()))
    return rows


def heavy_modules(rows: list[tuple[int, int, str]]) -> list[str]:
    """Which of :data:`HEAVY` were imported."""
    names = {name.strip().split(".")[0] for _, _, name in rows}
    return [m for m in HEAVY if m in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--top", type=int, default=15, help="slowest imports of --help to show (default 15)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument(
        "--reading", action="store_true", help="the commands that read the database (an embedded server)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.top < 0:
        parser.error("--runs must be >= 1 and --top >= 0")

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sensorium-startup-") as tmp:
        cwd = Path(tmp)
        env = _env(cwd / "home", database=args.reading)
        try:
            if args.reading:  # the server started and the schemas declared before anything is timed
                time_command(["db", "status"], 0, 1, cwd, env)
            for label, cmd, expected in READING if args.reading else COMMANDS:
                seconds = time_command(cmd, expected, args.runs, cwd, env)
                rows = import_times(cmd, cwd, env)
                results.append(
                    {
                        "command": label,
                        "median_s": statistics.median(seconds),
                        "min_s": min(seconds),
                        "max_s": max(seconds),
                        "runs": len(seconds),
                        "heavy_imports": heavy_modules(rows),
                    }
                )
            help_rows = import_times(["--help"], cwd, env)
        finally:
            if args.reading:
                subprocess.run([*CLI, "db", "stop"], cwd=cwd, env=env, capture_output=True)
    top = sorted(help_rows, key=lambda r: r[1], reverse=True)[: args.top]

    if args.json:
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "repo": str(REPO),
                    "commands": results,
                    "help_top_imports": [
                        {"module": n.strip(), "self_us": s, "cumulative_us": c} for s, c, n in top
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"{'command':<36} {'median':>8} {'min':>8} {'max':>8}  heavy imports ({args.runs} runs each)")
    for r in results:
        heavy = ", ".join(r["heavy_imports"]) or "none"
        print(f"{r['command']:<36} {r['median_s']:>7.3f}s {r['min_s']:>7.3f}s {r['max_s']:>7.3f}s  {heavy}")
    print("\nslowest imports of `sensorium --help` (cumulative, -X importtime; indent = nesting):")
    for own, cumulative, name in top:
        print(f"  {cumulative / 1000:8.1f} ms  (self {own / 1000:6.1f} ms)  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
