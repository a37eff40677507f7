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
        "import sys, pipeline, cli, pipeline.settings, pipeline.database, pipeline.data.format, "
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


def test_secrets_are_read_from_files(tmp_path):
    (tmp_path / "pw").write_text("s3cret-from-file\n")
    spec = {"protocol": "s3", "endpoint": "minio:9000", "bucket": "b", "location": "l", "secret_key": "k"}
    (tmp_path / "store.json").write_text(json.dumps(spec))
    s = load_settings(
        {
            "DJ_HOST": "db",
            "DJ_PASS_FILE": str(tmp_path / "pw"),
            "SENSORIUM_STORE_FILE": str(tmp_path / "store.json"),
        }
    )
    assert s.database.password == "s3cret-from-file" and s.store_spec == spec
    # an empty *_FILE (a compose default) means: not set
    assert load_settings({"DJ_HOST": "db", "DJ_PASS": "p", "DJ_PASS_FILE": ""}).database.password == "p"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DJ_PASS": "p", "DJ_PASS_FILE": "{dir}/pw"}, "DJ_PASS and DJ_PASS_FILE are both set"),
        ({"DJ_PASS_FILE": "{dir}/missing"}, "DJ_PASS_FILE={dir}/missing: cannot read the file"),
        ({"DJ_PASS_FILE": "{dir}"}, "DJ_PASS_FILE={dir}: cannot read the file"),
        ({"SENSORIUM_STORE_FILE": "{dir}/bad.json"}, "SENSORIUM_STORE is not valid JSON"),
    ],
)
def test_bad_secret_files_are_named_without_their_content(tmp_path, env, fragment):
    (tmp_path / "pw").write_text("hunter2-hunter2")
    (tmp_path / "bad.json").write_text('{"secret_key": "hunter2-hunter2", oops}')
    env = {k: v.format(dir=tmp_path) for k, v in env.items()} | {"DJ_HOST": "db"}
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert fragment.format(dir=tmp_path) in str(err.value) and "hunter2" not in str(err.value)


def test_public_store_spec_drops_credentials():
    from pipeline.settings import public_store_spec

    spec = {
        "protocol": "s3",
        "endpoint": "https://ak:sk-secret@minio.lab:9000",
        "bucket": "b",
        "access_key": "ak",
        "secret_key": "sk-secret",
        "account_key": "x",
    }
    assert public_store_spec(spec) == {"protocol": "s3", "endpoint": "https://minio.lab:9000", "bucket": "b"}


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_device_names_are_accepted(device):
    assert load_settings({"SENSORIUM_HOME": "/tmp/x", "SENSORIUM_DEVICE": device}).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:a", "CUDA", "cpu0"])
def test_misspelt_device_is_named(device):
    with pytest.raises(SettingsError, match=r"SENSORIUM_DEVICE=.*expected auto, cpu, cuda, cuda:N"):
        load_settings({"SENSORIUM_HOME": "/tmp/x", "SENSORIUM_DEVICE": device})


def test_named_home_says_so(tmp_path):
    s = load_settings({"SENSORIUM_HOME": str(tmp_path)})
    assert s.home_source == "SENSORIUM_HOME" and not s.home_is_new


def test_a_file_where_the_world_would_be_is_refused(tmp_path, monkeypatch):
    if any((p / ".sensorium").is_dir() for p in tmp_path.parents):
        pytest.skip("a folder above the temporary folder holds a world")
    (tmp_path / ".sensorium").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match=r"the world .*\.sensorium: is a file; .*set SENSORIUM_HOME"):
        load_settings({})
