"""Settings come from the environment only, through one reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import SettingsError, load_settings


def test_defaults_embedded(tmp_path):
    s = load_settings({"SENSORIUM_HOME": str(tmp_path)})
    assert s.database.embedded and s.database.host == str(tmp_path / "db")
    assert s.db_prefix == "sensorium_"
    assert s.store_spec == {"protocol": "file", "location": str(tmp_path / "store")}
    assert s.cache_dir == tmp_path / "cache"


def test_external_server():
    s = load_settings({"DJ_HOST": "db.lab", "DJ_PORT": "6543", "DJ_USER": "u", "DJ_PASS": "p"})
    assert not s.database.embedded
    assert (s.database.host, s.database.port, s.database.user, s.database.password) == (
        "db.lab",
        6543,
        "u",
        "p",
    )


def test_s3_store():
    spec = {"protocol": "s3", "endpoint": "minio:9000", "bucket": "b", "location": "sens"}
    assert load_settings({"SENSORIUM_STORE": json.dumps(spec)}).store_spec == spec


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SENSORIUM_DB_PREFIX": "Bad-Prefix"}, "SENSORIUM_DB_PREFIX"),
        ({"DJ_HOST": "h", "DJ_PORT": "x"}, "DJ_PORT"),
        ({"SENSORIUM_STORE": "{nope"}, "SENSORIUM_STORE"),
    ],
)
def test_bad_values_are_named(env, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings(env)


def test_pipeline_does_not_import_datajoint():
    code = (
        "import sys, pipeline, pipeline.cli, pipeline.settings, pipeline.database, pipeline.data.format, "
        "pipeline.data.cache, pipeline.data.synth, pipeline.regressors.trial_order; "
        "print('datajoint' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "False"
