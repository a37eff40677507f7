"""``sensorium db init``: the deployment's one-shot set-up step (the compose file's ``init`` service).

Run as the database's owner (the ``postgres`` superuser of the compose file's ``db``) on every deploy:
each step is idempotent, so running it again changes only what is new.

1. declare the schemas, tables and job tables;
2. create or update the roles ``sensorium_admin`` / ``_worker`` / ``_analyst`` and their grants;
3. (re)create the plain-SQL views of ``<prefix>views`` (docs/sql.md), readable by the analyst;
4. create or update the service logins (``--login ROLE:NAME:PASSWORD_FILE``);
5. ingest the recordings found in ``--recordings`` folders (already stored ones are skipped);
6. add the experiment files (``--experiments``: files or folders of ``*.yaml``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cli.common import announce_new_world, out
from pipeline.init_inputs import InitError, Login, experiment_files, read_password_file, recording_paths
from pipeline.settings import load_settings


def parse_login(text: str) -> Login:
    """``ROLE:NAME:PASSWORD_FILE`` -> :class:`Login` (the file path may itself contain ':')."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected ROLE:NAME:PASSWORD_FILE, found {text!r}")
    role, name, path = parts
    if role not in ("worker", "analyst", "admin"):
        raise argparse.ArgumentTypeError(f"role {role!r}: expected worker, analyst or admin")
    return Login(role, name, Path(path))


def cmd_db_init(args: argparse.Namespace) -> int:
    try:
        # the same checks as the use case's, done first here: they need neither DataJoint nor torch,
        # which importing the use case loads, so a missing password file is refused at once
        for login in args.login:
            read_password_file(login.password_file, f"--login {login.role}:{login.name} password file")
        recording_paths(args.recordings)
        experiment_files(args.experiments)
        settings = load_settings()
        from usecases.deployment import check_inputs, init_deployment

        inputs = check_inputs(args.login, args.recordings, args.experiments)
    except InitError as err:
        out(f"error: {err}")
        return 2
    start, failures = time.perf_counter(), 0
    announce_new_world(settings)
    try:
        for step in init_deployment(settings, inputs):
            out(step.text)
            failures += not step.ok
    except InitError as err:
        out(f"error: {err}")
        return 2
    out(
        f"init finished in {time.perf_counter() - start:.1f} s" + (f", {failures} failed" if failures else "")
    )
    return 1 if failures else 0


def register(db_sub: argparse._SubParsersAction) -> None:
    p = db_sub.add_parser(
        "init",
        help="deployment set-up, idempotent: schemas, roles, views, logins, recordings, experiments",
        description=__doc__.replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--login",
        type=parse_login,
        action="append",
        default=[],
        metavar="ROLE:NAME:PASSWORD_FILE",
        help="create or update a login (role worker, analyst or admin); repeat for several",
    )
    p.add_argument(
        "--recordings",
        type=Path,
        action="append",
        default=[],
        metavar="FOLDER",
        help="ingest the recordings (zips or folders) in this folder; repeat for several",
    )
    p.add_argument(
        "--experiments",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="add this experiment file, or every *.yaml in this folder; repeat for several",
    )
    p.set_defaults(func=cmd_db_init)
