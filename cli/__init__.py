"""The ``sensorium`` console script: the composition root.

One module per command group (``data``, ``convert``, ``experiments``, ``sweeps``, ``imports``, ``results``,
``report``, ``worker``, ``jobs``, ``db``); each command parses its arguments, calls one use case
(``usecases``) and prints the result. This entry point only assembles their parsers and turns the errors
users can cause into one-line messages. Database commands import ``usecases`` (and with it DataJoint)
lazily, so that ``sensorium synth``, ``convert`` and ``--help`` work without a database, and check their
arguments before they start the database or import torch (``cli.common``).

Output: results on stdout; the progress logger ``pipeline.progress`` prints its INFO records as plain
lines on stdout too (``-q`` silences it); every other log record goes to stderr as ``LEVEL name:
message``, WARNING and above by default, DEBUG for the project's own loggers with ``-v`` (third-party
libraries stay at WARNING).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cli import convert, data, db, experiments, imports, jobs, report, results, sweeps, training, worker
from cli.common import UsageError, out
from pipeline.settings import SettingsError

COMMAND_GROUPS = (data, convert, experiments, training, sweeps, imports, results, report, worker, jobs, db)

PROGRESS_LOGGER = "pipeline.progress"  # per-step progress lines for people (epochs, ...), on stdout
# the project's own logger trees: -v shows their DEBUG records; other libraries stay at WARNING
PROJECT_LOGGERS = ("pipeline", "schemas", "jobs", "usecases", "cli", "benchmarks", "sensorium")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _Parser(argparse.ArgumentParser):
    """A parser whose every (sub)command also takes ``-q`` / ``-v``, so that both work before or after
    the command's name. Subcommand parsers are made with the class of their parent, so the options
    reach every level without each command module adding them.

    A subcommand's options default to "absent" (``SUPPRESS``): a flag given before the command is not
    overwritten by the subcommand's default.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        verbosity = self.add_mutually_exclusive_group()
        verbosity.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            default=argparse.SUPPRESS,
            help="no progress lines or bars (results and errors still print)",
        )
        verbosity.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="debug logging of the pipeline's own modules; tracebacks of errors",
        )


DESCRIPTION = (
    "Models of mouse V1 for SENSORIUM+ recordings, trained, scored and stored in a DataJoint database. "
    "Every command has --help; the documentation is in docs/ (index.md)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sensorium", description=DESCRIPTION)
    parser.set_defaults(quiet=False, verbose=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


class _Below(logging.Filter):
    """Passes records under ``level`` (optionally only those of the logger tree ``name``)."""

    def __init__(self, level: int, name: str = "", *, invert: bool = False) -> None:
        super().__init__(name)
        self.level, self.invert = level, invert

    def filter(self, record: logging.LogRecord) -> bool:
        below = record.levelno < self.level and super().filter(record)
        return below != self.invert


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Set up the logging contract of the command line (see the module docstring).

    Idempotent: ``make demo`` calls :func:`main` several times in one process, and each call replaces
    the handlers the previous one installed (handlers installed by others, e.g. pytest's, are kept).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_sensorium", False)]:
        root.removeHandler(handler)
    progress = logging.getLogger(PROGRESS_LOGGER)
    for handler in [h for h in progress.handlers if getattr(h, "_sensorium", False)]:
        progress.removeHandler(handler)

    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(logging.Formatter(LOG_FORMAT))
    # progress records under WARNING are printed by the stdout handler below, not again here
    errors.addFilter(_Below(logging.WARNING, PROGRESS_LOGGER, invert=True))
    lines = logging.StreamHandler(sys.stdout)
    lines.setFormatter(logging.Formatter("%(message)s"))
    lines.addFilter(_Below(logging.WARNING))  # its warnings go up to the stderr handler, with a level
    for handler in (errors, lines):
        handler._sensorium = True  # type: ignore[attr-defined]
    root.addHandler(errors)
    root.setLevel(logging.WARNING)
    progress.addHandler(lines)

    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.NOTSET)
    progress.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and args.verbose:  # one before the command's name, the other after it
        parser.error("-q/--quiet and -v/--verbose exclude each other")
    configure_logging(quiet=args.quiet, verbose=args.verbose)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # the reader went away (`sensorium db status | head`): stop quietly, as cat and grep do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (SettingsError, UsageError) as err:
        out(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        # a run in progress keeps its checkpoint: the next `sensorium train` / `populate` resumes it
        out("interrupted: a training run keeps its checkpoint; the same command again resumes it")
        return 130
    except Exception as err:
        message = user_error(err)
        if message is None or args.verbose:
            raise
        out(f"error: {message}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
