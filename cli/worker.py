"""``sensorium worker``: a long-running loop over a queue's job tables (see ``jobs.runner``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cli.common import activate, out


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text}")
    return value


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline import lifecycle

    # from the first moment: a SIGTERM while starting (imports, connecting) means "do not start"
    with lifecycle.graceful_signals():
        return _worker(args)


def _worker(args: argparse.Namespace) -> int:
    if args.device:
        os.environ["SENSORIUM_DEVICE"] = args.device
    # one line per job on stderr, whatever the global level (workers run unattended; logs are their record)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    for name in ("sensorium.worker", "jobs", "schemas.dj_compat", "pipeline.training"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False
    settings = activate()
    from jobs.runner import WorkerOptions, run_worker
    from pipeline.training.seeding import resolve_device
    from usecases.experiments import experiment_restriction

    try:
        restriction = experiment_restriction(args.experiment)
    except LookupError as err:
        out(f"error: {err}")
        return 2

    try:
        device = str(resolve_device(settings.device))
    except RuntimeError as err:
        out(f"error: {err}")
        return 2
    options = WorkerOptions(
        queue=args.queue,
        max_jobs=args.max_jobs,
        idle_exit_s=args.idle_exit,
        poll_s=args.poll,
        priority=args.priority,
    )
    run_worker(options, settings, device, restriction)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run jobs from the queue until stopped (SIGTERM / SIGINT: give the job back, exit 0)",
    )
    p.add_argument("--queue", default="gpu", choices=["gpu", "cpu", "all"], help="which tables (default gpu)")
    p.add_argument("--device", help="torch device, e.g. cuda:1 (default: SENSORIUM_DEVICE or auto)")
    p.add_argument(
        "--experiment", action="append", help="only this experiment's jobs (repeat for several; default: all)"
    )
    p.add_argument("--max-jobs", type=_count, help="exit after this many jobs")
    p.add_argument(
        "--idle-exit", type=_positive, metavar="SECONDS", help="exit when the queue has been empty this long"
    )
    p.add_argument(
        "--poll", type=_positive, default=10.0, metavar="SECONDS", help="sleep when idle (default 10)"
    )
    p.add_argument(
        "--priority", type=int, help="only jobs of this priority or more urgent (DataJoint: lower runs first)"
    )
    p.set_defaults(func=cmd_worker)
