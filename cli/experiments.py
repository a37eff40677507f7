"""``sensorium experiment ...``: experiment files validated and their configurations stored."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import activate, out


def cmd_experiment_add(args: argparse.Namespace) -> int:
    from pipeline.configs import ConfigError
    from pipeline.experiments import load_experiment

    try:
        spec = load_experiment(args.file, args.set)
    except ConfigError as err:
        out(f"error: {args.file}: {err}")
        return 2
    activate()
    from usecases.experiments import add_experiment

    try:
        add_experiment(spec, args.fabrikant)
    except ConfigError as err:
        out(f"error: {err}")
        return 2
    seeds = [seed for _, seed in spec.member_list()]
    out(f"experiment {spec.name!r}: configs and {len(seeds)} member(s) (seeds {seeds}) are in the database")
    return 0


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="experiment YAML (see experiments/)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override an entry")
    p.add_argument("--fabrikant", help="who adds it (default: the login name)")


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("experiment", help="experiment files").add_subparsers(
        dest="exp_command", required=True
    )
    p = exp.add_parser("add", help="validate an experiment YAML and insert its configs and seeds")
    _experiment_args(p)
    p.set_defaults(func=cmd_experiment_add)
