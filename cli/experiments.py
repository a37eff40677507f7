"""``sensorium experiment add | list | show | diff | delete``: experiment files validated and stored, and
the stored experiments listed, shown, compared with a file and deleted."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.common import activate, out


def _load(args: argparse.Namespace) -> Any:
    """The experiment of ``args.file`` with ``args.set``, or None once its error line is printed."""
    from pipeline.configs import ConfigError
    from pipeline.experiments import load_experiment

    try:
        return load_experiment(args.file, args.set)
    except ConfigError as err:
        out(f"error: {err.located(args.file)}")
        return None


def cmd_experiment_add(args: argparse.Namespace) -> int:
    from pipeline.configs import ConfigError
    from pipeline.experiments import locate_in_file

    spec = _load(args)
    if spec is None:
        return 2
    activate()
    from usecases.experiments import ExperimentExistsError, add_experiment

    try:
        add_experiment(spec, args.fabrikant)
    except ExperimentExistsError as err:
        out(f"error: {err}")
        return 2
    except ConfigError as err:  # scans not ingested: pointed at in the file
        out(f"error: {locate_in_file(err, args.file, args.set).located(args.file)}")
        return 2
    seeds = [seed for _, seed in spec.member_list()]
    out(f"experiment {spec.name!r}: configs and {len(seeds)} member(s) (seeds {seeds}) are in the database")
    return 0


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_experiment_list(rows: list[dict[str, Any]]) -> str:
    """The aligned table of ``experiment list`` (comments cut to 48 characters)."""
    header = ("name", "members", "trained", "best test", "comment")
    table = [header] + [
        (
            r["name"],
            str(r["members"]),
            str(r["trained"]),
            _score(r["best_test"]),
            r["comment"] if len(r["comment"]) <= 48 else r["comment"][:45] + "...",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {1, 2, 3}  # numbers align right
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]
    note = "best test: the best member's mean single-trial correlation over the test tiers of its scans"
    return "\n".join([*lines, note])


def cmd_experiment_list(args: argparse.Namespace) -> int:
    activate()
    from usecases.experiments import experiment_summaries

    rows = experiment_summaries()
    if args.json:
        out(json.dumps(rows, indent=2))
    elif not rows:
        out("no experiments yet: `sensorium experiment add FILE.yaml` adds one (see experiments/)")
    else:
        out(format_experiment_list(rows))
    return 0


def format_experiment(d: dict[str, Any]) -> str:
    """``experiment show``: the stored spec as YAML, the members and what is computed for them."""
    import yaml

    lines = [
        f"# experiment {d['name']!r}, added {d['added']}",
        f"# model   {d['model']['fn']} {d['model']['hash']}",
        f"# trainer {d['trainer']['fn']} {d['trainer']['hash']}",
        "# as added (after --set overrides):",
        yaml.safe_dump(d["spec"], sort_keys=False, default_flow_style=None, width=100).rstrip(),
        "",
        "members:",
    ]
    header = (
        "seed",
        "split",
        "dataset",
        "scans",
        "trained",
        "val corr",
        "predictions",
        "scores",
        "test",
        "shared with",
    )
    rows = [header]
    for m in d["members"]:
        scans = m["scans"]
        trained = "-"
        if m["trained"]:
            trained = "imported" if m["imported"] else f"{m['epochs']} epochs"
        rows.append(
            (
                str(m["seed"]),
                "-" if m["split"] is None else str(m["split"]),
                m["dataset_hash"][:8],
                str(len(scans)) if isinstance(scans, list) else str(scans),
                trained,
                _score(m["best_val_corr"]),
                f"{m['predictions']} scan(s)" if m["predictions"] else "-",
                str(m["scores"]) if m["scores"] else "-",
                _score(m["test"]),
                ", ".join(m["shared_with"]) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("ensembles holding its models:" if d["ensembles"] else "ensembles holding its models: none")
    lines += [f"  {e['name']}: {e['n_members']} members, {e['scores']} score row(s)" for e in d["ensembles"]]
    if d["jobs"]:
        lines.append("job queue entries:")
        lines += [
            f"  {table}: " + ", ".join(f"{n} {status}" for status, n in counts.items())
            for table, counts in d["jobs"].items()
        ]
    else:
        lines.append("job queue entries: none")
    return "\n".join(lines)


def cmd_experiment_show(args: argparse.Namespace) -> int:
    activate()
    from usecases.experiments import experiment_details

    try:
        details = experiment_details(args.name)
    except LookupError as err:
        out(f"error: {err}")
        return 2
    out(json.dumps(details, indent=2, default=str) if args.json else format_experiment(details))
    return 0


def cmd_experiment_diff(args: argparse.Namespace) -> int:
    spec = _load(args)
    if spec is None:
        return 2
    activate()
    from usecases.experiments import experiment_diff
    from usecases.queries import UnknownNameError

    try:
        lines = experiment_diff(spec)
    except UnknownNameError:
        # nothing to compare with yet: not a mistake (exit 0), and it says what would happen
        out(f"{args.file}: no experiment {spec.name!r} is stored yet; `sensorium experiment add` adds it")
        return 0
    except LookupError as err:
        out(f"error: {err}")
        return 2
    if not lines:
        out(f"{args.file}: identical to the stored experiment {spec.name!r}")
        return 0
    out(
        f"{args.file} against the stored experiment {spec.name!r} (stored -> file): "
        f"{len(lines)} difference(s)"
    )
    for line in lines:
        out(f"  {line}")
    return 0


def format_removal(removal: Any) -> str:
    """What a delete removes (or removed): rows per table, job entries, checkpoint files, what is kept."""
    verb = "removed" if removal.committed else "will remove"
    lines = [f"deleting experiment {removal.experiment!r} {verb}:"]
    width = max((len(t) for t in removal.rows), default=0)
    lines += [f"  {table:<{width}}  {n:>6} row(s)" for table, n in removal.rows.items()]
    if removal.jobs:
        lines.append("  job queue entries: " + ", ".join(f"{t} {n}" for t, n in removal.jobs.items()))
    if removal.checkpoints:
        lines.append(f"  checkpoint files of unfinished runs: {removal.checkpoints}")
    if removal.kept:
        lines.append("kept (other experiments use them): " + "; ".join(removal.kept))
    return "\n".join(lines)


def _confirmed(name: str) -> bool:
    """Ask on the terminal; anything but y / yes declines."""
    sys.stdout.write(f"delete experiment {name!r} and the rows above? [y/N] ")
    sys.stdout.flush()
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_experiment_delete(args: argparse.Namespace) -> int:
    activate()
    from usecases.experiments import DeletionRefusedError, delete_experiment

    try:
        preview = delete_experiment(args.name, execute=False)
    except (LookupError, DeletionRefusedError) as err:
        out(f"error: {err}")
        return 2
    out(format_removal(preview))
    if not args.yes:
        if not sys.stdin.isatty():
            out("error: not deleted: stdin is not a terminal to confirm on; add --yes to delete")
            return 2
        if not _confirmed(args.name):
            out("not deleted")
            return 1
    try:
        delete_experiment(args.name, execute=True, expected=preview)
    except (LookupError, DeletionRefusedError) as err:
        out(f"error: {err}")
        return 2
    out(f"experiment {args.name!r} deleted")
    return 0


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="experiment YAML (see experiments/)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override an entry")
    p.add_argument("--fabrikant", help="who adds it (default: the login name)")


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("experiment", help="experiment files and stored experiments").add_subparsers(
        dest="exp_command", metavar="COMMAND", required=True
    )
    p = exp.add_parser("add", help="validate an experiment YAML and insert its configs and seeds")
    _experiment_args(p)
    p.set_defaults(func=cmd_experiment_add)

    p = exp.add_parser("list", help="stored experiments: members, trained models, best test score")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_experiment_list)

    p = exp.add_parser("show", help="one experiment: its stored config, members and what is computed")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_experiment_show)

    p = exp.add_parser("diff", help="compare an experiment YAML with the stored experiment of its name")
    p.add_argument("file", type=Path, help="experiment YAML")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override an entry")
    p.set_defaults(func=cmd_experiment_diff)

    p = exp.add_parser("delete", help="delete an experiment and what was computed for it alone (asks first)")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    p.set_defaults(func=cmd_experiment_delete)
