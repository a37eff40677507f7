"""``sensorium worker``: a long-running loop over a queue's job tables (see ``jobs.runner``)."""

from __future__ import annotations

import argparse
import logging
import sys

from cli.common import activate, out, positive_float, positive_int, use_device
from pipeline.settings import load_settings


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline import lifecycle

    # from the first moment: a SIGTERM while starting (imports, connecting) means "do not start"
    with lifecycle.graceful_signals():
        return _worker(args)


def _worker(args: argparse.Namespace) -> int:
    # a device that is not there stops the worker before the database is started: with `cuda` and no
    # GPU in the container it would otherwise train on the CPU or fail each job in turn
    use_device(args.device)
    settings = load_settings()
    # one line per job on stderr, whatever the global level (workers run unattended; logs are their record)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    # the epoch lines come from the progress logger, timestamped here like every other worker line (and
    # not also as plain lines on stdout); the trainer's own per-epoch line would repeat them: -v only
    for name in ("sensorium.worker", "jobs", "schemas.dj_compat", "pipeline.progress", "pipeline.training"):
        logger = logging.getLogger(name)
        quiet = (name == "pipeline.training" and not args.verbose) or (
            name == "pipeline.progress" and args.quiet
        )
        logger.setLevel(logging.WARNING if quiet else logging.DEBUG if args.verbose else logging.INFO)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    activate(settings)
    from jobs.runner import WorkerOptions, run_worker
    from pipeline.training.seeding import resolve_device
    from usecases.experiments import experiment_restriction

    try:
        restriction = experiment_restriction(args.experiment)
    except LookupError as err:
        out(f"error: {err}")
        return 2

    try:
        device = str(resolve_device(settings.device))  # auto -> cuda or cpu; checked above
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
    p.add_argument(
        "--device",
        help="torch device: auto, cpu, cuda, cuda:N or mps, checked to exist "
        "(default: SENSORIUM_DEVICE or auto)",
    )
    p.add_argument(
        "--experiment", action="append", help="only this experiment's jobs (repeat for several; default: all)"
    )
    p.add_argument("--max-jobs", type=positive_int, help="exit after this many jobs")
    p.add_argument(
        "--idle-exit",
        type=positive_float,
        metavar="SECONDS",
        help="exit when the queue has been empty this long",
    )
    p.add_argument(
        "--poll", type=positive_float, default=10.0, metavar="SECONDS", help="sleep when idle (default 10)"
    )
    p.add_argument(
        "--priority", type=int, help="only jobs of this priority or more urgent (DataJoint: lower runs first)"
    )
    p.set_defaults(func=cmd_worker)
