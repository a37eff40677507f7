"""Bad ``sensorium synth`` arguments: one ``error:`` line naming the flag, exit code 2, nothing written."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.synth import SynthConfig, SynthConfigError, min_trials, synthesize, write_synthetic
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]


def _synth(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_argv("synth", "--out", str(out), *args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "flag", "found", "minimum"),
    [
        (["--neurons", "-5"], "--neurons", "-5", ">= 2"),
        (["--neurons", "1"], "--neurons", "1", ">= 2"),
        (["--trials", "0"], "--trials", "0", "at least 33"),
        (["--trials", "32"], "--trials", "32", "at least 33"),
        (["--trials", "55", "--competition"], "--trials", "55", "at least 56"),
        (["--mice", "0"], "--mice", "0", "positive integer"),
        (["--seed", "-1"], "--seed", "-1", "non-negative integer"),
    ],
)
def test_bad_synth_argument_is_one_error_line(tmp_path, args, flag, found, minimum):
    out = tmp_path / "out"
    p = _synth(out, "--neurons", "5", "--trials", "60", *args)  # later flags override the small defaults
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1, p.stdout
    assert lines[0].startswith(f"error: {flag}: expected "), lines[0]
    assert lines[0].endswith(f"found {found}") and minimum in lines[0], lines[0]
    assert not out.exists(), "nothing may be written for a bad argument"


def test_out_that_is_a_file_is_one_error_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    p = _synth(blocker / "out", "--neurons", "5", "--trials", "60")
    assert p.returncode == 2 and "Traceback" not in p.stdout + p.stderr
    assert p.stdout.splitlines() == [f"error: --out: expected a folder, found a file at {blocker}"]
    assert blocker.read_text() == "not a folder"


def test_valid_small_arguments_still_write(tmp_path):
    p = _synth(tmp_path / "out", "--mice", "1", "--neurons", "2", "--trials", "33", "--no-zip")
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(list((tmp_path / "out").glob("*.truth.npz"))) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_neurons", -5),
        ("n_neurons", 2.5),
        ("n_trials", True),
        ("n_repeats", 1),
        ("height", 2),
        ("seed", -1),
        ("test_fraction", 1.0),
        ("validation_fraction", 0.0),
        ("latent_rho", 1.0),
        ("noise_shape", 0.0),
        ("gain_drift", float("nan")),
        ("image_drive", (1.2, 0.6)),
        ("competition", "yes"),
    ],
)
def test_config_names_the_bad_field(field, value):
    with pytest.raises(SynthConfigError) as info:
        SynthConfig(**{field: value})
    assert isinstance(info.value, ValueError) and info.value.field == field
    assert str(info.value).startswith(f"{field}: expected ") and str(info.value).endswith(f"found {value!r}")


def test_write_synthetic_checks_n_mice_before_writing(tmp_path):
    with pytest.raises(SynthConfigError, match="n_mice: expected a positive integer, found 0"):
        write_synthetic(tmp_path / "out", 0, SynthConfig(n_neurons=2, n_trials=33))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("competition", [False, True])
def test_minimum_sizes_are_exact(competition):
    """The smallest accepted sizes generate every tier cleanly; one fewer trial is refused."""
    n = min_trials(SynthConfig(competition=competition))
    assert n == (56 if competition else 33)
    with pytest.raises(SynthConfigError, match=f"n_trials: expected at least {n} "):
        SynthConfig(n_trials=n - 1, competition=competition)
    cfg = SynthConfig(n_neurons=2, n_trials=n, height=3, width=3, competition=competition)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. NaN from too few neurons would warn here
        rec, truth = synthesize(cfg, 0)
    tiers = {"train", "validation", "test"} | ({"final_test"} if competition else set())
    assert set(rec.tiers) == tiers and (rec.tiers == "train").sum() >= 10
    _, counts = np.unique(rec.trials["frame_image_id"][rec.tiers == "test"], return_counts=True)
    assert np.all(counts == cfg.n_repeats)
    assert np.all(np.isfinite(truth["expected"]))


@pytest.mark.parametrize("command", [["db", "status"], ["jobs"], ["scores"]])
def test_unreachable_database_is_one_error_line(tmp_path, command):
    import os

    env = dict(os.environ, DJ_HOST="127.0.0.1", DJ_PORT="1", DJ_USER="nobody", SENSORIUM_HOME=str(tmp_path))
    proc = subprocess.run(cli_argv(*command), cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stdout.startswith("error: cannot reach the database: ") and proc.stdout.count("\n") == 1
    assert "127.0.0.1" in proc.stdout and "port 1" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr and not proc.stderr.strip(), proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--login", "worker:w:{dir}/missing"], "--login worker:w password file {dir}/missing: No such file"),
        (["--login", "worker:w:{dir}/short"], "password must have at least 8 characters"),
        (
            ["--login", "analyst:a:{dir}/good", "--recordings", "{dir}/good"],
            "--recordings {dir}/good: not a folder",
        ),
        (["--experiments", "{dir}/nothing.yaml"], "--experiments {dir}/nothing.yaml: no such file or folder"),
    ],
)
def test_bad_db_init_argument_is_one_error_line_before_any_connection(tmp_path, args, message):
    (tmp_path / "short").write_text("abc\n")
    (tmp_path / "good").write_text("long-enough-password\n")
    # DJ_HOST points nowhere: the arguments are refused before the database is contacted
    env = {"PATH": "/usr/bin:/bin", "DJ_HOST": "127.0.0.1", "DJ_PORT": "9", "SENSORIUM_HOME": str(tmp_path)}
    result = subprocess.run(
        cli_argv("db", "init", *[a.format(dir=tmp_path) for a in args]),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2 and result.stdout.count("\n") == 1, result.stdout + result.stderr
    assert message.format(dir=tmp_path) in result.stdout and "Traceback" not in result.stderr
    assert "long-enough-password" not in result.stdout


def test_db_init_login_needs_role_name_and_file():
    result = subprocess.run(
        cli_argv("db", "init", "--login", "worker:nofile"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "expected ROLE:NAME:PASSWORD_FILE" in result.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--scale", "full", "--mice", "3"], "error: --scale full sets the sizes itself; drop --mice"),
        (
            ["--scale", "demo", "--neurons", "9", "--competition"],
            "error: --scale demo sets the sizes itself; drop --neurons, --competition",
        ),
        (["--jobs", "0"], "error: --jobs: expected a positive integer, found 0"),
    ],
)
def test_bad_scale_or_jobs_is_one_error_line(tmp_path, args, line):
    p = _synth(tmp_path / "out", *args)
    assert p.returncode == 2 and "Traceback" not in p.stdout + p.stderr
    assert p.stdout.splitlines() == [line]
    assert not (tmp_path / "out").exists()
