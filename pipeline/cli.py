"""The ``sensorium`` console script: the composition root.

Database commands import ``schemas`` (and with it DataJoint) lazily, so that ``sensorium synth`` and
``--help`` work without a database.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pipeline.settings import SettingsError, load_settings

log = logging.getLogger("sensorium")


def _out(text: str = "") -> None:
    """Command output (results for the user), as opposed to log messages on stderr."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace) -> int:
    from pipeline.data.synth import SynthConfig, truth_path, write_synthetic

    cfg = SynthConfig(
        n_neurons=args.neurons, n_trials=args.trials, seed=args.seed, competition=args.competition
    )
    start = time.perf_counter()
    folders = write_synthetic(args.out, args.mice, cfg, make_zip=not args.no_zip)
    for folder in folders:
        zip_note = "" if args.no_zip else f" (+ {folder.name}.zip)"
        _out(f"wrote {folder}{zip_note}; ground truth {truth_path(folder).name}")
    _out(f"{len(folders)} recording(s) in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import schemas
    from pipeline.data.format import RecordingFormatError
    from schemas.data import IngestConflictError, ingest

    settings = load_settings()
    schemas.activate(settings=settings)
    failures = 0
    for path in args.paths:
        start = time.perf_counter()
        try:
            result = ingest(
                path, cache_dir=settings.cache_dir, data_root=settings.data_root, progress=not args.quiet
            )
        except (RecordingFormatError, IngestConflictError) as err:
            failures += 1
            _out(f"error: {err}")
            continue
        verb = "ingested" if result.status == "inserted" else "already stored (no change)"
        _out(f"{result.data_key}: {verb} from {path} [{time.perf_counter() - start:.1f} s]")
    return 1 if failures else 0


def cmd_db_status(args: argparse.Namespace) -> int:
    import schemas

    settings = load_settings()
    conn = schemas.activate(settings=settings)
    counts = schemas.table_counts(conn, settings.db_prefix)
    status = {
        "backend": "postgresql",
        "embedded": settings.database.embedded,
        "host": settings.database.host,
        "port": settings.database.port,
        "prefix": settings.db_prefix,
        "home": str(settings.home),
        "store": {k: v for k, v in settings.store_spec.items() if "secret" not in k and "key" not in k},
        "tables": counts,
    }
    if args.json:
        _out(json.dumps(status, indent=2))
        return 0
    where = "embedded pgserver" if settings.database.embedded else "external server"
    _out(f"backend   postgresql ({where})")
    _out(f"host      {settings.database.host}:{settings.database.port}")
    _out(f"prefix    {settings.db_prefix}")
    _out(f"store     {status['store']}")
    for schema, tables in counts.items():
        _out(f"\n{schema}")
        for table, n in tables.items():
            _out(f"  {table:<40} {n:>10}")
    return 0


def cmd_db_stop(args: argparse.Namespace) -> int:
    from pipeline.database import stop_embedded_server

    settings = load_settings()
    if not settings.database.embedded:
        _out("DJ_HOST is set: the server is not the embedded one; nothing to stop")
        return 0
    stopped = stop_embedded_server(settings.db_dir)
    _out(f"embedded server in {settings.db_dir}: {'stopped' if stopped else 'was not running'}")
    return 0


# ---------------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorium", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write synthetic recordings with ground truth")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mice", type=int, default=2, help="number of recordings (default 2)")
    p.add_argument("--neurons", type=int, default=150, help="neurons per recording (default 150)")
    p.add_argument("--trials", type=int, default=1000, help="trials per recording (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--competition",
        action="store_true",
        help="make the last recording competition-style "
        "(hashed trial_idx, final_test tier, zeroed test responses)",
    )
    p.add_argument("--no-zip", action="store_true", help="write folders only")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="validate recordings (folders or .zip) and store them")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ingest)

    db = sub.add_parser("db", help="database commands").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("status", help="backend, host, prefix and row counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_status)
    p = db.add_parser("stop", help="stop the embedded PostgreSQL server")
    p.set_defaults(func=cmd_db_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except SettingsError as err:
        _out(f"error: {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
