"""``sensorium db status|stop``: the database itself."""

from __future__ import annotations

import argparse
import json

from pipeline.cli.common import out
from pipeline.settings import load_settings


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
        out(json.dumps(status, indent=2))
        return 0
    where = "embedded pgserver" if settings.database.embedded else "external server"
    out(f"backend   postgresql ({where})")
    out(f"host      {settings.database.host}:{settings.database.port}")
    out(f"prefix    {settings.db_prefix}")
    out(f"store     {status['store']}")
    for schema, tables in counts.items():
        out(f"\n{schema}")
        for table, n in tables.items():
            out(f"  {table:<40} {n:>10}")
    return 0


def cmd_db_stop(args: argparse.Namespace) -> int:
    from pipeline.database import stop_embedded_server

    settings = load_settings()
    if not settings.database.embedded:
        out("DJ_HOST is set: the server is not the embedded one; nothing to stop")
        return 0
    stopped = stop_embedded_server(settings.db_dir)
    out(f"embedded server in {settings.db_dir}: {'stopped' if stopped else 'was not running'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database commands").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("status", help="backend, host, prefix and row counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_status)
    p = db.add_parser("stop", help="stop the embedded PostgreSQL server")
    p.set_defaults(func=cmd_db_stop)
