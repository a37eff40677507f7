"""``make deploy-check`` inside ``make test``: the image built and the compose stack run on a real engine.

Skipped, with the reason, where no Docker engine can be had (not root and none running, no apt-get, a
dockerd that does not start); ``tests/deploy/engine.sh`` decides and says why. The scenario itself is
``tests/deploy/scenario.py`` (its steps and their reasons are there); its step timings and wall time are
printed at the end of the test even when it passes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def test_the_deploy_check_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which(
        "shellcheck"
    )
    assert shellcheck, "shellcheck is not installed (make install)"
    scripts = sorted(str(p) for p in HERE.glob("*.sh"))
    assert len(scripts) >= 3
    checked = subprocess.run([shellcheck, *scripts], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_deployment_runs_for_real_on_a_docker_engine(capsys):
    engine = subprocess.run(["sh", str(HERE / "engine.sh")], capture_output=True, text=True, timeout=900)
    if engine.returncode == 77:
        pytest.skip(engine.stderr.strip().splitlines()[-1])
    assert engine.returncode == 0, engine.stdout + engine.stderr
    done = subprocess.run(
        ["make", "--no-print-directory", "deploy-check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=45 * 60,
    )
    output = done.stdout + done.stderr
    summary = output[output.rfind("\nsteps:") :] if "\nsteps:" in output else output[-4000:]
    with capsys.disabled():  # the scenario's own timings, in CI's log too
        print("\n" + summary.strip())
    assert done.returncode == 0, output[-20000:]
