"""``sensorium train`` and ``populate``: one populate pass over what is declared but not yet computed."""

from __future__ import annotations

import argparse
import os
import time

from cli.common import activate, out
from cli.experiments import _experiment_args, cmd_experiment_add


def _populate(queue: str, restriction, reserve_jobs: bool, max_calls: int | None, settings) -> int:
    from jobs.runner import populate

    start = time.perf_counter()
    results = populate(
        queue,
        restriction,
        settings=settings,
        reserve_jobs=reserve_jobs,
        suppress_errors=True,
        max_calls=max_calls,
    )
    failed = 0
    for table, result in results.items():
        errors = result.get("error_list", [])
        failed += len(errors)
        out(f"{table:<14} {result.get('success_count', 0):>4} made, {len(errors)} failed")
        for key, message in errors:
            out(f"  error for {key}: {message}")
    out(f"populate finished in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def cmd_populate(args: argparse.Namespace) -> int:
    if args.device:
        os.environ["SENSORIUM_DEVICE"] = args.device
    settings = activate()
    from usecases.experiments import experiment_restriction

    try:
        restriction = experiment_restriction(args.experiment)
    except LookupError as err:
        out(f"error: {err}")
        return 2
    return _populate(args.queue, restriction, args.reserve_jobs, args.max_calls, settings)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.experiments import load_experiment

    if args.device:  # before the first activation: the schemas keep the settings they were bound with
        os.environ["SENSORIUM_DEVICE"] = args.device
    code = cmd_experiment_add(args)
    if code:
        return code
    spec = load_experiment(args.file, args.set)
    args.experiment, args.queue, args.max_calls = spec.name, "all", None
    return cmd_populate(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="add an experiment, then populate its models and scores")
    _experiment_args(p)
    p.add_argument("--device", help="torch device (default: SENSORIUM_DEVICE or auto)")
    p.add_argument("--reserve-jobs", action="store_true", help="use the job queue (several workers)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("populate", help="train, predict and score everything declared but not yet computed")
    p.add_argument("--queue", default="all", choices=["all", "gpu", "cpu"], help="which tables (default all)")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--device", help="torch device (default: SENSORIUM_DEVICE or auto)")
    p.add_argument("--reserve-jobs", action="store_true", help="use the job queue (several workers)")
    p.add_argument("--max-calls", type=int, help="at most this many keys per table")
    p.set_defaults(func=cmd_populate)
