"""The ``sensorium`` console script: the composition root.

One module per command group (``data``, ``convert``, ``experiments``, ``sweeps``, ``imports``, ``results``,
``report``, ``worker``, ``jobs``, ``db``); each command parses its arguments, calls one use case
(``usecases``) and prints the result. This entry point only assembles their parsers and turns the errors
users can cause into one-line messages. Database commands import ``usecases`` (and with it DataJoint)
lazily, so that ``sensorium synth``, ``convert`` and ``--help`` work without a database.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cli import convert, data, db, experiments, imports, jobs, report, results, sweeps, training, worker
from cli.common import out
from pipeline.settings import SettingsError

COMMAND_GROUPS = (data, convert, experiments, training, sweeps, imports, results, report, worker, jobs, db)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorium", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def user_error(err: BaseException) -> str | None:
    """One line for an error the user's environment caused (no traceback), or None for a bug.

    Covers a database that cannot be reached or refuses the login, a missing permission, a pipeline lock
    held elsewhere past ``SENSORIUM_LOCK_TIMEOUT_S`` and an embedded server that cannot start. Modules
    are looked up by name so that this import stays DataJoint-free.
    """
    from pipeline.database import EmbeddedServerError

    if type(err).__name__ in ("SchemaNotDeclaredError", "LockTimeoutError"):
        return str(err)
    if isinstance(err, EmbeddedServerError):
        return str(err).splitlines()[0]
    module = type(err).__module__ or ""
    name = type(err).__name__
    first = (str(err).strip().splitlines() or [name])[0].strip()
    if module.startswith("psycopg2") and name in ("OperationalError", "InterfaceError"):
        return f"cannot reach the database: {first} (check DJ_HOST, DJ_PORT, DJ_USER and the password)"
    if module.startswith("datajoint") and name == "LostConnectionError":
        return f"lost the database connection: {first}"
    if (module.startswith("datajoint") and name == "AccessError") or name == "InsufficientPrivilege":
        detail = " ".join(str(a) for a in err.args[1:2]).strip().splitlines() or [first]
        return f"{detail[0]} (the database role of this login does not allow it; see `sensorium db roles`)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except SettingsError as err:
        out(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        # a run in progress keeps its checkpoint: the next `sensorium train` / `populate` resumes it
        out("interrupted")
        return 130
    except Exception as err:
        message = user_error(err)
        if message is None or args.verbose:
            raise
        out(f"error: {message}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
