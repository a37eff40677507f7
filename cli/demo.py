"""``make demo``: the main job end to end on the embedded database and synthetic data.

Steps (each timed): synthesise two recordings with ground truth (the second competition-style), ingest
them (validation, merge, store, trial order), train the demo baseline through ``TrainedModel.populate()``,
compute the winning model's regressors (history, network state, trial rank, re-splits), train three demo
winner members and their mean ensemble, score everything, print it next to the oracle (the planted
expected response) per tier with contaminated numbers marked, write and validate the submission files,
and end with the HTML report (figures embedded) and its path.
Every number printed is a row of ``ModelScore`` / ``OracleScore`` (see the SQL printed at the end).

Run with ``python -m cli.demo``; state goes to ``$SENSORIUM_HOME`` (default: the ``.sensorium`` world in
the current folder or above it, else a new ``./.sensorium``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from cli import main as cli

_timings: list[tuple[str, float]] = []
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@contextmanager
def step(name: str):
    sys.stdout.write(f"\n== {name}\n")
    sys.stdout.flush()
    start = time.perf_counter()
    yield
    _timings.append((name, time.perf_counter() - start))


def _run(argv: list[str]) -> None:
    code = cli(argv)
    if code:
        raise SystemExit(f"demo step failed: sensorium {' '.join(argv)} (exit {code})")


def run(run_cli: Callable[[list[str]], None] = _run) -> None:
    from pipeline.settings import load_settings

    settings = load_settings()
    data = settings.data_root / "demo"
    with step("synthesise 2 recordings (sensorium synth)"):
        run_cli(["synth", "--out", str(data), "--mice", "2", "--seed", "0", "--competition"])
    with step("ingest (sensorium ingest)"):
        run_cli(["ingest", "-q", *sorted(str(p) for p in data.glob("*.zip"))])
    with step("train, predict and score the demo baseline (sensorium train experiments/demo.yaml)"):
        run_cli(["train", str(EXPERIMENTS / "demo.yaml")])
    with step("regressors + 3 winner members + ensemble (sensorium train experiments/ensemble_demo.yaml)"):
        run_cli(["train", str(EXPERIMENTS / "ensemble_demo.yaml")])
    with step("scores: baseline, members, ensemble vs oracle (sensorium scores)"):
        run_cli(["scores"])
    with step("submission files (sensorium submit --ensemble ensemble_demo)"):
        run_cli(["submit", "--ensemble", "ensemble_demo", "--out", str(settings.home / "submission")])
    with step("database (sensorium db status)"):
        run_cli(["db", "status"])
    with step("plain-SQL views of the results (sensorium db views)"):
        run_cli(["db", "views"])
    views = f"{settings.db_prefix}views"
    sys.stdout.write("\nThe same numbers in SQL (docs/sql.md):\n")
    sys.stdout.write(
        "  SELECT experiment_name, seed, data_key, single_trial_correlation, fraction_of_oracle\n"
        f"    FROM {views}.model_scores WHERE tier = 'test';\n"
        "  SELECT ensemble_name, data_key, single_trial_correlation, fraction_of_oracle\n"
        f"    FROM {views}.ensemble_scores WHERE tier = 'test';\n"
    )
    report = settings.home / "report"
    with step("report with figures (sensorium report)"):
        run_cli(["report", "--out", str(report)])
    sys.stdout.write("\n== timings\n")
    for name, seconds in _timings:
        sys.stdout.write(f"  {name:<85} {seconds:7.1f} s\n")
    sys.stdout.write(f"\nreport: {(report / 'report.html').resolve()}\n")


if __name__ == "__main__":
    run()
