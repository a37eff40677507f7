"""Commands that only read or administer the database start without torch or scikit-learn.

Every command imports the schema modules; importing torch and scikit-learn with them cost about 2 s of a
`sensorium jobs` that otherwise takes about 1.5 s, and tests and users run such commands often. The
training, prediction and fitting code is imported inside the jobs that need it. Each command runs in a
real process against the test session's PostgreSQL and reports which heavy modules it loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "sklearn")
#: runs the console script's main(), then prints which of HEAVY were imported
PROBE = (
    "import atexit, sys\n"
    f"atexit.register(lambda: print('heavy:', *[m for m in {HEAVY!r} if m in sys.modules], "
    "file=sys.stderr))\n"
    "from cli import main\n"
    "sys.argv = ['sensorium', *sys.argv[1:]]\n"
    "sys.exit(main())\n"
)


@pytest.mark.parametrize(
    "args",
    [
        ("db", "status"),
        ("jobs",),
        ("jobs", "--errors", "--json"),
        ("scores",),
        ("experiment", "list"),
        ("db", "roles"),
    ],
    ids=" ".join,
)
def test_a_reading_command_loads_neither_torch_nor_scikit_learn(db, args):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("heavy:")]
    assert line == "heavy:", f"sensorium {' '.join(args)} imported {line.split()[1:]}"
