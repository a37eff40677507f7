"""The command line starts light, refuses bad arguments before any database, and finds its world.

Heavy libraries are detected in ``sys.modules`` of a child process (not by timing, which depends on
the machine). Every child gets ``DJ_HOST`` / ``DJ_PORT`` naming a closed local port: a command that went
to the database before checking its arguments would fail with "cannot reach the database" instead of
starting an embedded server, and the tests would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import WORLD_DIR, find_home, load_settings
from tests.factories import REPO, cli_argv

# a closed port on this machine: nothing may get as far as connecting
NO_DATABASE = {"DJ_HOST": "127.0.0.1", "DJ_PORT": "9", "OMP_NUM_THREADS": "1"}

# runs the command lines of argv (a JSON list of lists) in one process, then reports each exit status
# and which heavy modules were loaded by then
PROBE = """
import json, sys
from cli import main
runs = []
for argv in json.loads(sys.argv[1]):
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    runs.append(code)
heavy = [m for m in ("torch", "datajoint", "sklearn") if m in sys.modules]
print("PROBE " + json.dumps({"codes": runs, "heavy": heavy}))
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, SENSORIUM_HOME=str(tmp_path / "home"), **NO_DATABASE, **extra)


def _probe(tmp_path: Path, *argvs: list[str]) -> tuple[dict, subprocess.CompletedProcess]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(argvs))],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("PROBE ")), None)
    assert line is not None, done.stdout + done.stderr
    return json.loads(line.removeprefix("PROBE ")), done


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and subcommand of ``parser`` (e.g. ``["sweep", "add"]``), depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append([*prefix, name])
                found.extend(_commands(sub, (*prefix, name)))
    return found


def test_help_of_every_command_imports_nothing_heavy(tmp_path):
    from cli import build_parser

    argvs = [["--help"], *([*names, "--help"] for names in _commands(build_parser()))]
    assert ["sweep", "add", "--help"] in argvs and ["db", "status", "--help"] in argvs
    result, _ = _probe(tmp_path, *argvs)
    assert result["codes"] == [0] * len(argvs)
    assert result["heavy"] == []


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["ingest", "/nonexistent"], "/nonexistent: expected a recording folder or .zip file, found nothing"),
        (["ingest", "README.md"], "README.md: expected a recording folder or .zip file, found a file"),
        (["train", "/nonexistent.yaml"], "/nonexistent.yaml"),
        (["sweep", "add", "/nonexistent.yaml"], "/nonexistent.yaml"),
        (["import-checkpoint", "/nonexistent.pth", "--experiment", "e", "--scan", "s"], "/nonexistent.pth"),
        (["db", "init", "--login", "worker:w:/nonexistent"], "/nonexistent"),
        (["worker", "--device", "gpu0"], "--device='gpu0': expected auto, cpu, cuda, cuda:N"),
        (["sweep", "run", "s", "--device", "cuda:x"], "--device='cuda:x'"),
    ],
)
def test_argument_error_is_one_line_before_any_database_or_torch(tmp_path, argv, fragment):
    result, done = _probe(tmp_path, argv)
    assert result["codes"] == [2], done.stdout + done.stderr
    assert result["heavy"] == [], f"{argv} imported {result['heavy']} before refusing its argument"
    lines = [x for x in (done.stdout + done.stderr).splitlines() if x.strip() and not x.startswith("PROBE ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not (tmp_path / "home").exists(), "a refused command created its world"


def test_usage_errors_of_argparse_are_caught_before_anything(tmp_path):
    result, done = _probe(tmp_path, ["worker", "--poll", "0"], ["sweep", "report", "x", "--top", "0"])
    assert result["codes"] == [2, 2] and result["heavy"] == []
    assert "--poll: expected a positive number, found 0" in done.stderr
    assert "--top: expected a positive integer, found 0" in done.stderr


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_cuda_without_cuda_is_refused_in_one_line(tmp_path, how):
    if _has_cuda():
        pytest.skip("this machine has CUDA: `--device cuda` is accepted here")
    argv, extra = (["--device", "cuda"], {}) if how == "flag" else ([], {"SENSORIUM_DEVICE": "cuda"})
    done = subprocess.run(
        cli_argv("worker", *argv, "--max-jobs", "1"),
        cwd=REPO,
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [x for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert lines == ["error: device 'cuda' requested but torch sees no CUDA device"], lines
    assert not (tmp_path / "home").exists(), "the database was started before the device was checked"


def test_verbosity_flags_before_or_after_the_command():
    from cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["-q", "ingest", "x"]).quiet
    assert parser.parse_args(["ingest", "-q", "x"]).quiet
    assert parser.parse_args(["-v", "jobs", "retry"]).verbose
    assert parser.parse_args(["jobs", "retry", "-v"]).verbose
    plain = parser.parse_args(["ingest", "x"])
    assert (plain.quiet, plain.verbose) == (False, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["ingest", "-q", "-v", "x"])


LOGGING_PROBE = """
import logging, sys
from cli import configure_logging
configure_logging(quiet=sys.argv[1] == "q", verbose=sys.argv[1] == "v")
logging.getLogger("pipeline.progress").info("epoch 3 done")
logging.getLogger("pipeline.training").debug("own debug")
logging.getLogger("usecases.ingest").warning("own warning")
logging.getLogger("urllib3.connectionpool").debug("library debug")
logging.getLogger("datajoint").info("library info")
"""


@pytest.mark.parametrize(
    ("mode", "stdout", "stderr"),
    [
        ("default", ["epoch 3 done"], ["WARNING usecases.ingest: own warning"]),
        ("q", [], ["WARNING usecases.ingest: own warning"]),
        (
            "v",
            ["epoch 3 done"],
            ["DEBUG pipeline.training: own debug", "WARNING usecases.ingest: own warning"],
        ),
    ],
)
def test_logging_contract(mode, stdout, stderr):
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == stdout
    assert done.stderr.splitlines() == stderr  # no library's DEBUG / INFO, even with -v


def test_find_home_walks_up_to_the_first_world(tmp_path):
    project = tmp_path / "project"
    deeper = project / "analysis" / "week1"
    deeper.mkdir(parents=True)
    (project / WORLD_DIR).mkdir()
    assert find_home({}, deeper) == (project / WORLD_DIR, f"found in {project}")
    assert find_home({}, project) == (project / WORLD_DIR, f"found in {project}")
    # a nearer world wins, as a nested git repository does
    (deeper / WORLD_DIR).mkdir()
    assert find_home({}, deeper) == (deeper / WORLD_DIR, f"found in {deeper}")
    # SENSORIUM_HOME always wins
    named = tmp_path / "elsewhere"
    assert find_home({"SENSORIUM_HOME": str(named)}, deeper) == (named, "SENSORIUM_HOME")


def test_find_home_without_a_world_makes_one_here(tmp_path, monkeypatch):
    if any((p / WORLD_DIR).is_dir() for p in tmp_path.parents):
        pytest.skip("a folder above the temporary folder holds a world")
    here = tmp_path / "fresh"
    here.mkdir()
    (tmp_path / WORLD_DIR).write_text("a file of that name is not a world")
    assert find_home({}, here) == (here / WORLD_DIR, f"new in {here}")
    monkeypatch.chdir(here)
    settings = load_settings({})
    assert settings.home == here / WORLD_DIR and settings.home_is_new
    assert settings.home_source == f"new in {here}"
    assert not settings.database.embedded or settings.database.host == str(here / WORLD_DIR / "db")


ANNOUNCE_PROBE = """
from cli.common import announce_new_world
from pipeline.settings import load_settings
settings = load_settings()
announce_new_world(settings)
print(settings.home_source)
"""


def _announce_probe(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """ANNOUNCE_PROBE run in ``cwd`` with ``env``: stdout the home's source, stderr any announcement."""
    return subprocess.run(
        [sys.executable, "-c", ANNOUNCE_PROBE], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_new_world_is_announced_once_on_stderr(tmp_path):
    if any((p / WORLD_DIR).is_dir() for p in tmp_path.parents):
        pytest.skip("a folder above the temporary folder holds a world")
    here = tmp_path / "work"
    (here / "rec").mkdir(parents=True)
    env = {k: v for k, v in _env(tmp_path).items() if k != "SENSORIUM_HOME"}
    # a real command that goes as far as the database (which is unreachable here)
    done = subprocess.run(
        cli_argv("ingest", "rec"), cwd=here, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "cannot reach the database" in done.stdout, done.stdout + done.stderr
    notes = [x for x in done.stderr.splitlines() if "new world" in x]
    assert notes == [
        f"creating a new world in {here / WORLD_DIR} "
        "(no .sensorium here or above; set SENSORIUM_HOME to choose)"
    ]
    # from a subfolder the world just made is found: no second announcement
    sub = here / "rec"
    result = _announce_probe(sub, env)
    assert result.stdout.strip() == f"found in {here}" and result.stderr == "", result.stderr


def test_a_named_home_without_a_database_is_announced(tmp_path):
    """A mistyped SENSORIUM_HOME would start an empty embedded world: one line says so; a home with a
    database, or a database on a server (DJ_HOST), is used without a word."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJ_")}
    home = tmp_path / "typo"

    def announce(**extra: str) -> subprocess.CompletedProcess:
        return _announce_probe(REPO, dict(base, SENSORIUM_HOME=str(home), **extra))

    first = announce()
    assert first.returncode == 0 and first.stdout.strip() == "SENSORIUM_HOME", first.stderr
    assert first.stderr.splitlines() == [
        f"creating a new world in {home} (SENSORIUM_HOME names a folder with no database yet)"
    ]
    assert announce(DJ_HOST="127.0.0.1").stderr == ""
    (home / "db").mkdir(parents=True)
    assert announce().stderr == ""
