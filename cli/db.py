"""``sensorium db status|stop|roles|views|user``: the database itself (``db init``: ``cli/deploy.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli import deploy
from cli.common import out
from pipeline.init_inputs import MIN_PASSWORD, read_password_file
from pipeline.settings import load_settings, public_store_spec


def cmd_db_status(args: argparse.Namespace) -> int:
    import schemas
    from schemas.views import VIEWS_VERSION, installed_version, views_schema

    settings = load_settings()
    conn = schemas.activate(settings=settings)
    counts = schemas.table_counts(conn, settings.db_prefix)
    # how the home was found (a variable, a file, a default): settings may not say in every version
    home_source = settings.home_source
    views = installed_version(conn, settings.db_prefix)
    status = {
        "backend": "postgresql",
        "embedded": settings.database.embedded,
        "host": settings.database.host,
        "port": settings.database.port,
        "prefix": settings.db_prefix,
        "home": str(settings.home),
        "home_source": home_source,
        "user": settings.database.user,
        "store": public_store_spec(settings.store_spec),
        "views": {"schema": views_schema(settings.db_prefix), "version": views, "current": VIEWS_VERSION},
        "tables": counts,
    }
    if args.json:
        out(json.dumps(status, indent=2))
        return 0
    where = "embedded pgserver" if settings.database.embedded else "external server"
    out(f"home      {settings.home}" + (f" ({home_source})" if home_source else ""))
    out(f"backend   postgresql ({where})")
    out(f"host      {settings.database.host}:{settings.database.port}")
    out(f"user      {settings.database.user}")
    out(f"prefix    {settings.db_prefix}")
    out(f"store     {status['store']}")
    out(f"views     {_views_line(settings.db_prefix, views)}")
    for schema, tables in counts.items():
        out(f"\n{schema}")
        for table, n in tables.items():
            out(f"  {table:<40} {n:>10}")
    return 0


def _views_line(prefix: str, version: int | None) -> str:
    """Where the SQL views stand, in words."""
    from schemas.views import VIEWS_VERSION, views_schema

    schema = views_schema(prefix)
    if version is None:
        return f"{schema}: not created, or not readable by this login (`sensorium db init` creates them)"
    if version != VIEWS_VERSION:
        return (
            f"{schema}: version {version}; this code makes version {VIEWS_VERSION} (run `sensorium db views`)"
        )
    return f"{schema}: version {version} (docs/sql.md)"


def cmd_db_views(args: argparse.Namespace) -> int:
    import schemas
    from schemas.views import ViewsError, views_schema
    from usecases.deployment import install_views, views_statements

    settings = load_settings()
    conn = schemas.activate(settings=settings)
    if args.sql:
        out("BEGIN;")
        for statement in views_statements(conn, settings):
            out(statement + ";")
        out("COMMIT;")
        return 0
    try:
        names = install_views(conn, settings)
    except ViewsError as err:
        out(f"error: {err}")
        return 2
    out(f"{views_schema(settings.db_prefix)}: {len(names)} views ({', '.join(names)})")
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


def cmd_db_roles(args: argparse.Namespace) -> int:
    import schemas
    from usecases.roles import apply_roles, roles_sql, schema_names

    settings = load_settings()
    conn = schemas.activate(settings=settings)
    modules = schemas.modules()
    if args.apply:
        statements = apply_roles(conn, settings.db_prefix, modules)
        out(f"applied {len(statements)} statements: sensorium_admin, sensorium_worker, sensorium_analyst")
        return 0
    database = conn.query("SELECT current_database()").fetchone()[0]
    names, others = schema_names(settings.db_prefix, modules)
    for statement in roles_sql(settings.db_prefix, database, names, modules, others):
        out(statement + ";")
    return 0


_MAX_STDIN = 4096  # characters of a password read from standard input


def _new_password(args: argparse.Namespace) -> str:
    """From --password-file, else SENSORIUM_NEW_PASSWORD, else standard input (never the command line):
    typed twice at a prompt on a terminal, otherwise one line (or the same line twice) read from it.

    Raises:
        ValueError: no usable password (the message never holds the password).
    """
    import getpass
    import os

    if args.password_file:
        return read_password_file(args.password_file, "--password-file")
    if os.environ.get("SENSORIUM_NEW_PASSWORD"):
        text = os.environ["SENSORIUM_NEW_PASSWORD"]
    elif sys.stdin is None or not sys.stdin.isatty():
        text = _password_from_stdin()
    else:
        try:
            text = getpass.getpass(f"password for {args.name}: ")
            again = getpass.getpass("again: ")
        except EOFError:
            raise ValueError("no password: the input ended at the prompt") from None
        if text != again:
            raise ValueError("the two passwords differ")
    if len(text) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    return text


def _password_from_stdin() -> str:
    """The password piped to standard input: one line, or two equal lines (as typed at a prompt)."""
    if sys.stdin is None:
        raise ValueError(_NO_PASSWORD)
    data = sys.stdin.buffer.read(_MAX_STDIN + 1)
    if len(data) > _MAX_STDIN:
        raise ValueError(f"standard input: more than {_MAX_STDIN} bytes; expected the password on one line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("standard input: not UTF-8 text; expected the password on one line") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise ValueError(_NO_PASSWORD)
    if len(lines) > 2:
        raise ValueError(
            f"standard input has {len(lines)} lines: expected the password on one line (or twice, on two)"
        )
    if len(lines) == 2 and lines[0] != lines[1]:
        raise ValueError("the two passwords on standard input differ")
    return lines[0]


_NO_PASSWORD = (
    "no password: standard input is empty (pipe the password on one line, or give --password-file or "
    "SENSORIUM_NEW_PASSWORD)"
)


def cmd_db_user_add(args: argparse.Namespace) -> int:
    import schemas
    from usecases.roles import add_user

    try:
        password = _new_password(args)
    except ValueError as err:
        out(f"error: {err}")
        return 2
    settings = load_settings()
    conn = schemas.activate(settings=settings)
    try:
        existed = add_user(conn, args.name, args.role, password)
    except ValueError as err:
        out(f"error: {err}")
        return 2
    out(f"user {args.name!r} {'updated' if existed else 'created'}: role sensorium_{args.role}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database commands").add_subparsers(
        dest="db_command", metavar="COMMAND", required=True
    )
    p = db.add_parser("status", help="home, backend, host, prefix, views and row counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_status)
    p = db.add_parser(
        "views",
        help="(re)create the plain-SQL views of the results in <prefix>views (db init does it too)",
        description="Drop and recreate the views of the schema <prefix>views in one transaction, owned by "
        "sensorium_admin and readable by workers and analysts where those roles exist. See docs/sql.md.",
    )
    p.add_argument("--sql", action="store_true", help="print the statements instead of running them")
    p.set_defaults(func=cmd_db_views)
    p = db.add_parser("stop", help="stop the embedded PostgreSQL server")
    p.set_defaults(func=cmd_db_stop)
    deploy.register(db)
    p = db.add_parser("roles", help="print (or --apply) the SQL of the admin / worker / analyst roles")
    p.add_argument("--apply", action="store_true", help="run it (idempotent; as the schemas' owner)")
    p.set_defaults(func=cmd_db_roles)
    user = db.add_parser("user", help="database logins").add_subparsers(
        dest="user_command", metavar="COMMAND", required=True
    )
    p = user.add_parser("add", help="create or update a login in a role (password never on the command line)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["worker", "analyst", "admin"])
    p.add_argument(
        "--password-file",
        type=Path,
        help="read the password from this file (else SENSORIUM_NEW_PASSWORD, else a prompt on a terminal "
        "or one line piped to standard input)",
    )
    p.set_defaults(func=cmd_db_user_add)
