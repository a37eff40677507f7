"""Errors name the file and the field, never a file's contents: a store spec with its secret key, or a
secret file given where an experiment (or a sweep's ``base:``) was expected."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.configs import ConfigError
from pipeline.settings import SettingsError, load_settings
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]
SECRET = "Sup3r-Secret-Key-0042"
STORE = {
    "protocol": "s3",
    "endpoint": "minio:9000",
    "bucket": "sensorium",
    "location": "store",
    "access_key": "sensorium",
    "secret_key": SECRET,
}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({k: v for k, v in STORE.items() if k != "endpoint"}, "missing field(s) endpoint (protocol s3)"),
        (dict(STORE, protocol="ftp"), "field 'protocol': expected one of file, s3, gcs, azure"),
        (dict(STORE, protocol=SECRET), "field 'protocol': expected one of"),
        ({"secret_key": SECRET}, "expected a JSON object with at least a 'protocol' field"),
        ({"protocol": "file", "secret_key": SECRET}, "missing field(s) location (protocol file)"),
    ],
)
def test_a_bad_store_spec_file_is_named_with_its_field_not_its_content(tmp_path, spec, fragment):
    path = tmp_path / "store_spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(SettingsError) as err:
        load_settings({"SENSORIUM_STORE_FILE": str(path)})
    message = str(err.value)
    assert message.startswith(f"SENSORIUM_STORE (SENSORIUM_STORE_FILE={path}): ") and fragment in message
    assert SECRET not in message
    with pytest.raises(SettingsError, match=r"^SENSORIUM_STORE: ") as err:
        load_settings({"SENSORIUM_STORE": json.dumps(spec)})
    assert SECRET not in str(err.value)


def test_invalid_json_gives_its_position_and_file_only(tmp_path):
    path = tmp_path / "store_spec.json"
    path.write_text(f'{{"protocol": "s3",\n "secret_key": "{SECRET}" oops}}')
    with pytest.raises(SettingsError) as err:
        load_settings({"SENSORIUM_STORE_FILE": str(path)})
    assert f"at line 2, column {len(SECRET) + 19} of {path}" in str(err.value)
    assert SECRET not in str(err.value)


def test_the_cli_prints_one_line_without_the_secret(tmp_path):
    path = tmp_path / "store_spec.json"
    path.write_text(json.dumps({k: v for k, v in STORE.items() if k != "bucket"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SENSORIUM_"))}
    env |= {"SENSORIUM_HOME": str(tmp_path / "home"), "SENSORIUM_STORE_FILE": str(path)}
    done = subprocess.run(
        cli_argv("db", "status"),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stdout.count("\n") == 1, done.stdout + done.stderr
    assert done.stdout.startswith("error: SENSORIUM_STORE (SENSORIUM_STORE_FILE=") and "bucket" in done.stdout
    assert SECRET not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "home").exists(), "nothing was started"


def test_a_store_spec_given_as_an_experiment_or_a_sweeps_base_is_not_echoed(tmp_path):
    from pipeline.experiments import load_experiment
    from pipeline.sweeps.spec import load_sweep

    store = tmp_path / "store_spec.json"  # JSON is YAML: it parses, then fails validation
    store.write_text(json.dumps(STORE))
    with pytest.raises(ConfigError) as err:
        load_experiment(store)
    assert "unknown key" in str(err.value) and "Field required" in str(err.value)
    assert SECRET not in str(err.value)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "name: leak\nbase: store_spec.json\nspace: {trainer.config.lr_init: [0.001, 0.01]}\n"
        "sampler: grid\nbudget: 2\n"
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep)
    assert str(err.value).startswith("base: ") and SECRET not in str(err.value)
