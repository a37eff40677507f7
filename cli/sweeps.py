"""``sensorium sweep add | step | run | report | list``: hyper-parameter searches through the tables."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cli.common import activate, out, positive_float, positive_int, use_device, writable_parent


def _counts(name: str, c: dict[str, int]) -> str:
    return (
        f"sweep {name!r}: {c['finished']}/{c['budget']} trials finished, {c['in_flight']} in flight "
        f"({c['asked']} new, {c['told']} scored now)"
    )


def cmd_sweep_add(args: argparse.Namespace) -> int:
    from pipeline.configs import ConfigError
    from pipeline.sweeps.spec import load_sweep

    try:
        spec = load_sweep(args.file, args.set)
    except ConfigError as err:
        out(f"error: {err.located(args.file)}")
        return 2
    activate()
    from usecases.sweeps import add_sweep

    try:
        counts = add_sweep(spec, args.fabrikant)
    except ConfigError as err:
        out(f"error: {err}")
        return 2
    out(_counts(spec.name, counts))
    out("workers train the trials like any experiment (`sensorium worker`, or `sensorium sweep run --train`)")
    return 0


def cmd_sweep_step(args: argparse.Namespace) -> int:
    activate()
    from usecases.sweeps import advance

    try:
        out(_counts(args.name, advance(args.name, args.fabrikant)))
    except LookupError as err:
        out(f"error: {err}")
        return 2
    return 0


def cmd_sweep_run(args: argparse.Namespace) -> int:
    """Advance until the budget is spent; with ``--train`` this process also trains and scores the trials."""
    use_device(args.device)  # checked before the database starts; sets SENSORIUM_DEVICE for the schemas
    settings = activate()
    from jobs.runner import populate
    from usecases.sweeps import advance, sweep_experiments

    try:
        counts = advance(args.name, args.fabrikant)
    except LookupError as err:
        out(f"error: {err}")
        return 2
    out(_counts(args.name, counts))
    while counts["finished"] < counts["budget"]:
        if args.train:
            from usecases.experiments import experiment_restriction

            names = sweep_experiments(args.name)
            restriction = experiment_restriction(names) if names else "false"
            populate(
                "gpu" if args.queue == "gpu" else "all",
                restriction,
                settings=settings,
                reserve_jobs=True,
                suppress_errors=True,
            )
        else:
            time.sleep(args.poll)
        previous, counts = counts, advance(args.name, args.fabrikant)
        if counts != previous or counts["asked"] or counts["told"]:
            out(_counts(args.name, counts))
        if (
            args.train
            and not counts["in_flight"]
            and counts["finished"] < counts["budget"]
            and not counts["asked"]
        ):
            out("error: no trial is in flight and none could be asked; see `sensorium sweep report`")
            return 1
    out(f"sweep {args.name!r} is done: `sensorium sweep report {args.name}` ranks its trials")
    return 0


def cmd_sweep_report(args: argparse.Namespace) -> int:
    # the figure goes to the current folder by default, like any output a command is asked to write
    figure_path = None if args.figure == "none" else Path(args.figure or f"sweep-{args.name}.png")
    if figure_path is not None:
        writable_parent(figure_path, "--figure")
    activate()
    from pipeline.sweeps.report import figure, table
    from schemas.sweeps import study
    from usecases.sweeps import trial_states

    try:
        spec, st = study(args.name)
    except LookupError as err:
        out(f"error: {err}")
        return 2
    trials = trial_states(args.name, {t.number: t for t in st.get_trials(deepcopy=False)})
    for line in table(spec, trials, args.top):
        out(line)
    if figure_path is not None:
        path = figure(spec, trials, figure_path)
        out(f"figure: {path}")
    return 0


def cmd_sweep_list(args: argparse.Namespace) -> int:
    activate()
    from schemas.sweeps import Sweep

    for row in Sweep.proj("sweep_comment", "sweep_ts").to_dicts(order_by="sweep_ts"):
        n = len(Sweep.Trial & {"sweep_name": row["sweep_name"]})
        out(f"{row['sweep_name']:<32} {n:>4} trials  added {row['sweep_ts']}  {row['sweep_comment']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser(
        "sweep", help="hyper-parameter sweeps (Optuna) trained by the workers"
    ).add_subparsers(dest="sweep_command", metavar="COMMAND", required=True)
    p = sweep.add_parser("add", help="validate a sweep YAML, store it and ask for its first trials")
    p.add_argument("file", type=Path, help="sweep YAML (see experiments/sweeps/)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override an entry")
    p.add_argument("--fabrikant", help="who adds the trial configs (default: the login name)")
    p.set_defaults(func=cmd_sweep_add)

    p = sweep.add_parser("step", help="score finished trials and ask for new ones (once)")
    p.add_argument("name")
    p.add_argument("--fabrikant", help="who adds the trial configs (default: the login name)")
    p.set_defaults(func=cmd_sweep_step)

    p = sweep.add_parser("run", help="keep a sweep going until its budget is spent")
    p.add_argument("name")
    p.add_argument("--train", action="store_true", help="also train and score the trials in this process")
    p.add_argument("--queue", default="all", choices=["all", "gpu"], help="with --train: which tables")
    p.add_argument(
        "--device", help="torch device: auto, cpu, cuda, cuda:N or mps (default: SENSORIUM_DEVICE or auto)"
    )
    p.add_argument("--poll", type=positive_float, default=30.0, help="seconds between steps without --train")
    p.add_argument("--fabrikant", help="who adds the trial configs (default: the login name)")
    p.set_defaults(func=cmd_sweep_run)

    p = sweep.add_parser("report", help="rank the trials by validation score; figure of score vs parameter")
    p.add_argument("name")
    p.add_argument("--top", type=positive_int, help="only the best N")
    p.add_argument("--figure", help="PNG path (default sweep-NAME.png; 'none': no figure)")
    p.set_defaults(func=cmd_sweep_report)

    p = sweep.add_parser("list", help="the sweeps in the database")
    p.set_defaults(func=cmd_sweep_list)
