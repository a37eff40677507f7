"""``sensorium jobs``: queue counts, errors, retry and priority (see ``jobs.admin``)."""

from __future__ import annotations

import argparse
import json

from cli.common import activate, out


def _priority(text: str) -> int:
    """argparse type: a job priority, 0 to 127 (DataJoint's range, within the job table's column)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 127:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 0 to 127 (lower runs first), found {text}"
        )
    return value


def cmd_jobs(args: argparse.Namespace) -> int:
    from jobs import admin as jobs

    if args.table is not None:  # the table classes are known before the schemas are bound
        try:
            jobs.job_tables(args.table)
        except LookupError as err:
            out(f"error: --table: {err}")
            return 2
    activate()
    if args.errors:
        rows = jobs.errors(args.table)
        if args.json:
            out(json.dumps(rows, indent=2, default=str))
        elif not rows:
            out("no jobs in error")
        for r in [] if args.json else rows:
            # the model by experiment and seed where the key is a model's; else the key itself
            key = r.get("model") or ", ".join(f"{k}={v}" for k, v in r["key"].items())
            out(f"{r['table']:<22} {r['time'][:19]}  {r['host']}:{r['pid']}  {key}")
            out(f"    {r['message']}")
        return 0
    rows = jobs.summary()
    workers = jobs.workers()
    if args.json:
        out(json.dumps({"tables": rows, "workers": workers}, indent=2, default=str))
        return 0
    out(f"{'table':<22} {'pending':>8} {'reserved':>9} {'error':>6} {'ignore':>7} {'success':>8}")
    for r in rows:
        out(
            f"{r['table']:<22} {r['pending']:>8} {r['reserved']:>9} {r['error']:>6} {r['ignore']:>7} "
            f"{r['success']:>8}"
        )
    out(f"\n{len(workers)} running worker(s)")
    for w in workers:
        doing = f"{w['current_table']} {w['current_key']}" if w["current_table"] else "idle"
        out(
            f"  {w['host']}:{w['pid']} queue {w['queue']} on {w['device']}, "
            f"seen {float(w['seen_s_ago']):.0f} s ago, {w['jobs_done']} done / {w['jobs_failed']} failed, "
            f"{doing}"
        )
    return 0


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    from jobs import admin as jobs

    if args.table is not None:  # a misspelt table is refused before the database starts
        try:
            jobs.job_tables(args.table)
        except LookupError as err:
            out(f"error: --table: {err}")
            return 2
    activate()
    try:
        done = jobs.retry(args.table)
    except LookupError as err:
        out(f"error: {err}")
        return 2
    total = sum(done.values())
    out(f"{total} job(s) in error back to pending" + "".join(f"\n  {t}: {n}" for t, n in done.items() if n))
    return 0


def cmd_jobs_priority(args: argparse.Namespace) -> int:
    activate()
    from jobs import admin as jobs
    from usecases.queries import require_names

    try:
        require_names("experiment", args.experiment)
        n = jobs.set_priority(args.experiment, args.priority)
    except (LookupError, ValueError) as err:
        out(f"error: {err}")
        return 2
    out(f"{n} pending training job(s) of {args.experiment!r} now at priority {args.priority}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="job queues: counts per table, errors, retry, priority")
    p.add_argument("--errors", action="store_true", help="list jobs in error (key, host, time, message)")
    p.add_argument("--table", help="with --errors: only this table")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)
    jobs_sub = p.add_subparsers(dest="jobs_command")
    r = jobs_sub.add_parser("retry", help="put jobs in error back to pending")
    r.add_argument("--table", help="only this table (default: all)")
    r.set_defaults(func=cmd_jobs_retry)
    r = jobs_sub.add_parser("priority", help="reprioritise an experiment's pending training jobs")
    r.add_argument("experiment")
    r.add_argument(
        "priority", type=_priority, help="0 to 127, lower runs first (DataJoint's convention; default 5)"
    )
    r.set_defaults(func=cmd_jobs_priority)
