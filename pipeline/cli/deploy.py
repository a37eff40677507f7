"""``sensorium db init``: the deployment's one-shot set-up step (the compose file's ``init`` service).

Run as the database's owner (the ``postgres`` superuser of the compose file's ``db``) on every deploy:
each step is idempotent, so running it again changes only what is new.

1. declare the schemas, tables and job tables;
2. create or update the roles ``sensorium_admin`` / ``_worker`` / ``_analyst`` and their grants;
3. create or update the service logins (``--login ROLE:NAME:PASSWORD_FILE``);
4. ingest the recordings found in ``--recordings`` folders (already stored ones are skipped);
5. add the experiment files (``--experiments``: files or folders of ``*.yaml``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli.common import out
from pipeline.cli.data import ingest_each
from pipeline.settings import Settings, load_settings

MIN_PASSWORD = 8


class InitError(ValueError):
    """An argument of ``db init`` that cannot be used (the message names it)."""


@dataclass(frozen=True)
class Login:
    """One ``--login ROLE:NAME:PASSWORD_FILE``."""

    role: str
    name: str
    password_file: Path


def read_password_file(path: Path, what: str) -> str:
    """The password in ``path`` (trailing newlines dropped, as ``DJ_PASS_FILE`` and the PostgreSQL image
    read theirs, so that the same file gives the same password everywhere); ``what`` names it in errors."""
    try:
        text = Path(path).read_text().rstrip("\r\n")
    except OSError as err:
        raise InitError(f"{what} {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise InitError(f"{what} {path}: not a text file") from None
    if len(text) < MIN_PASSWORD:
        raise InitError(f"{what} {path}: the password must have at least {MIN_PASSWORD} characters")
    if "\x00" in text:
        raise InitError(f"{what} {path}: the password contains a NUL character")
    return text


def parse_login(text: str) -> Login:
    """``ROLE:NAME:PASSWORD_FILE`` -> :class:`Login` (the file path may itself contain ':')."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected ROLE:NAME:PASSWORD_FILE, found {text!r}")
    role, name, path = parts
    if role not in ("worker", "analyst", "admin"):
        raise argparse.ArgumentTypeError(f"role {role!r}: expected worker, analyst or admin")
    return Login(role, name, Path(path))


def recording_paths(folders: list[Path]) -> list[Path]:
    """Recordings in ``folders``: every ``*.zip``, and every sub-folder with no zip of the same name."""
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise InitError(f"--recordings {folder}: not a folder")
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        zips = {p.with_suffix("") for p in entries if p.suffix == ".zip"}
        found += [p for p in entries if p.suffix == ".zip" or (p.is_dir() and p not in zips)]
    return found


def experiment_files(paths: list[Path]) -> list[Path]:
    """Experiment files: each file as given, and the ``*.yaml`` / ``*.yml`` of each folder (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            found.append(path)
        else:
            raise InitError(f"--experiments {path}: no such file or folder")
    return found


def cmd_db_init(args: argparse.Namespace) -> int:
    try:
        # everything given is checked before the database is touched
        passwords = [
            read_password_file(lg.password_file, f"--login {lg.role}:{lg.name} password file")
            for lg in args.login
        ]
        recordings = recording_paths(args.recordings)
        experiments = experiment_files(args.experiments)
    except InitError as err:
        out(f"error: {err}")
        return 2
    settings = load_settings()
    if not settings.create_tables:
        out("error: db init declares the schemas: unset SENSORIUM_CREATE_TABLES (it is false here)")
        return 2
    start = time.perf_counter()
    conn = _declare(settings)
    _roles(conn, settings)
    _logins(conn, args.login, passwords)
    failures = ingest_each(settings, recordings, progress=False) + _experiments(experiments)
    out(
        f"init finished in {time.perf_counter() - start:.1f} s" + (f", {failures} failed" if failures else "")
    )
    return 1 if failures else 0


def _declare(settings: Settings):
    import schemas

    conn = schemas.activate(settings=settings)
    names = [f"{settings.db_prefix}{m.__name__.split('.')[-1]}" for m in schemas.modules()]
    out(f"schemas   {', '.join(names)}: declared, with their job tables")
    return conn


def _roles(conn, settings: Settings) -> None:
    import schemas
    from schemas.roles import apply_roles

    statements = apply_roles(conn, settings.db_prefix, schemas.modules())
    out(f"roles     sensorium_admin, sensorium_worker, sensorium_analyst: {len(statements)} statements")


def _logins(conn, logins: list[Login], passwords: list[str]) -> None:
    """Create or update each login; only its password's SCRAM verifier reaches the server."""
    from schemas.roles import add_user

    for login, password in zip(logins, passwords, strict=True):
        existed = add_user(conn, login.name, login.role, password)
        out(f"login     {login.name} (sensorium_{login.role}): {'updated' if existed else 'created'}")


def _experiments(paths: list[Path]) -> int:
    from pipeline.configs import ConfigError
    from pipeline.experiments import load_experiment
    from schemas.fabrik import Experiment, add_experiment

    failures = 0
    for path in paths:
        try:
            spec = load_experiment(path, [])
        except ConfigError as err:
            failures += 1
            out(f"error: {path}: {err}")
            continue
        existed = bool(Experiment & {"experiment_name": spec.name})
        try:
            add_experiment(spec, "init")
        except (ConfigError, ValueError) as err:
            # a redeploy must not fail on these: the stored experiment stays as it was trained (e.g. its
            # `scans: all` would now cover a new recording), or one with `scans: all` waits for recordings
            what = "the stored experiment is kept" if existed else "not added"
            out(f"warning: {path.name}: {str(err).splitlines()[0]}; {what}")
            continue
        out(f"experiment {spec.name}: {'already stored' if existed else 'added'} ({path.name})")
    return failures


def register(db_sub: argparse._SubParsersAction) -> None:
    p = db_sub.add_parser(
        "init",
        help="deployment set-up, idempotent: schemas, roles, logins, recordings, experiments",
        description=__doc__,
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
