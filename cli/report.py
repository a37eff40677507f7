"""``sensorium report``: one self-contained HTML page (figures embedded) and the figures as PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import activate, out


def cmd_report(args: argparse.Namespace) -> int:
    activate()
    from pipeline.report.page import write_report
    from usecases.report import gather

    try:
        data = gather(args.experiment, tier=args.tier)
    except LookupError as err:
        out(f"error: {err}")
        return 2
    try:
        path = write_report(data, args.out)
    except OSError as err:
        out(f"error: --out: cannot write {err.filename or args.out}: {err.strerror or err}")
        return 2
    shown = len({row["experiment"] for row in data.provenance})
    out(f"report of {shown} experiment(s), {len(data.provenance)} model(s): {path.resolve()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="HTML report with figures: scores vs oracle, curves, neurons, ensembles"
    )
    p.add_argument("--experiment", action="append", help="only this experiment (repeat; default: all scored)")
    p.add_argument("--out", type=Path, required=True, help="output folder (report.html and the PNGs)")
    p.add_argument("--tier", default="test", choices=["test", "validation", "train"], help="headline tier")
    p.set_defaults(func=cmd_report)
