"""The deployment files: docker-compose.yml against the Compose specification's schema, the Dockerfile
through hadolint, and what the lab deployment promises (one service per GPU, graceful stops, secrets as
files only, a non-root image that does not reinstall torch on a code change).

The validators are real tools run as processes (check-jsonschema with its vendored compose-spec schema,
the hadolint binary); each is also shown a broken file, so a test that cannot fail would be noticed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
GPU_WORKERS = sorted(name for name in SERVICES if name.startswith("worker-gpu-"))


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed (make install)"
    return path


def _compose_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    # every rule, down to style and info findings, fails the lint
    return subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
    )


def test_compose_file_follows_the_compose_specification(tmp_path):
    checked = _compose_check(REPO / "docker-compose.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = dict(COMPOSE, services=dict(SERVICES, db=dict(SERVICES["db"], stop_grace_period=["1m"])))
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    assert _compose_check(tmp_path / "docker-compose.yml").returncode != 0, "the validator must catch it"


@pytest.mark.external  # the hadolint binary
def test_dockerfile_passes_hadolint(tmp_path):
    linted = _hadolint(REPO / "Dockerfile")
    assert linted.returncode == 0, linted.stdout + linted.stderr
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN pip install torch\n")
    bad = _hadolint(tmp_path / "Dockerfile")
    assert bad.returncode != 0 and "DL3007" in bad.stdout, bad.stdout  # the linter really runs


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    rows = [line.strip().split(" ", 1) for line in text.splitlines() if line.strip()]
    return [(r[0], r[1] if len(r) > 1 else "") for r in rows if not r[0].startswith("#")]


def test_image_is_non_root_pins_torch_first_and_runs_sensorium():
    steps = _instructions()
    words = [w for w, _ in steps]
    assert steps[0][1].startswith("python:3.11")
    torch_pin = next(
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch")
    )
    torch_step = next(
        i for i, (w, a) in enumerate(steps) if w == "RUN" and f"pip install --no-cache-dir {torch_pin}" in a
    )
    first_copy = words.index("COPY")
    code_copy = next(i for i, (w, a) in enumerate(steps) if w == "COPY" and a.startswith("pipeline/"))
    assert torch_step < first_copy < code_copy, "torch and the dependencies are installed before the code"
    user = [a for w, a in steps if w == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["sensorium"]') in steps
    for word, args in steps:  # no secret is baked into a layer
        if word in ("ENV", "ARG"):
            assert not re.search(r"PASS|SECRET|TOKEN|KEY", args, re.I), args
    assert "RUN pip install -e" not in (REPO / "Dockerfile").read_text()


def test_dockerignore_keeps_secrets_state_and_the_venv_out():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert lines.index("*") < lines.index("!pipeline/")  # everything out, then what the image needs
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pipeline", "schemas", "pyproject.toml"} <= allowed
    assert not allowed & {"secrets", ".env", ".venv", ".sensorium", "lab", ".git"}


def test_secrets_and_local_settings_are_git_ignored(tmp_path):
    for path in ("secrets/postgres_password", ".env", "lab/recordings/x.zip"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not git-ignored"


def test_one_service_per_gpu_with_its_own_device_graceful_stop_and_restart():
    assert len(GPU_WORKERS) >= 2
    devices = []
    for name in GPU_WORKERS:
        service = SERVICES[name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        devices.append(device["device_ids"][0])
        assert service["init"] is True and service["restart"] == "unless-stopped"
        assert _seconds(service["stop_grace_period"]) >= 60
        assert service["environment"]["SENSORIUM_CREATE_TABLES"] == "false"
        assert service["command"][:3] == ["worker", "--queue", "gpu"]
    assert len(set(devices)) == len(devices), "each GPU service is given a different device"
    cpu = SERVICES["worker-cpu"]
    assert "container_name" not in cpu and "ports" not in cpu, "worker-cpu must scale with --scale"
    assert cpu["command"][:3] == ["worker", "--queue", "cpu"] and cpu["init"] is True


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m)", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def test_start_order_db_healthy_then_init_then_workers():
    db = SERVICES["db"]
    assert db["image"].split(":")[1].startswith("16")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert SERVICES["init"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert SERVICES["init"]["restart"] == "no"
    for name in [*GPU_WORKERS, "worker-cpu", "notebook"]:
        assert SERVICES[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert SERVICES["minio"]["profiles"] == ["minio"]


def test_passwords_come_from_secret_files_only():
    text = (REPO / "docker-compose.yml").read_text() + (REPO / ".env.example").read_text()
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        for var in env:
            assert not re.search(r"PASS(WORD)?$|SECRET|TOKEN", var), f"{name}: {var} must be a *_FILE"
        for var, value in env.items():
            if var.endswith("_FILE") and value and not value.startswith("${"):  # ${...}: set in .env
                assert value.startswith("/run/secrets/"), (name, var, value)
                assert value.split("/")[-1] in service["secrets"], (name, var)
    for secret in COMPOSE["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert "POSTGRES_PASSWORD:" not in text and "DJ_PASS:" not in text
    analyst = SERVICES["notebook"]["environment"]
    assert "ANALYST" in analyst["DJ_USER"] and analyst["DJ_PASS_FILE"].endswith("analyst_password")


def test_every_variable_the_compose_file_uses_is_in_env_example():
    used = set(re.findall(r"\$\{(\w+)", (REPO / "docker-compose.yml").read_text()))
    listed = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert used - listed == set(), f"not in .env.example: {sorted(used - listed)}"
    assert listed - used == set(), f"listed but unused: {sorted(listed - used)}"


@pytest.mark.parametrize("volume", ["pgdata", "store", "checkpoints"])
def test_state_lives_in_named_volumes(volume):
    assert volume in COMPOSE["volumes"]


@pytest.mark.external  # the shellcheck binary
def test_shell_scripts_pass_shellcheck(tmp_path):
    scripts = sorted(
        str(p)
        for p in [*(REPO / "deploy").iterdir(), *(REPO / "benchmarks").iterdir(), REPO / ".ci" / "run"]
        if p.suffix in (".sh", ".sbatch") or p.name == "run"
    )
    assert len(scripts) >= 4
    checked = subprocess.run([_tool("shellcheck"), *scripts], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "bad.sh").write_text("#!/bin/sh\nrm -rf $1/*\n")
    bad = subprocess.run([_tool("shellcheck"), str(tmp_path / "bad.sh")], capture_output=True, text=True)
    assert bad.returncode != 0 and "SC2086" in bad.stdout


def _secret_sources(service: dict) -> dict[str, str]:
    """{secret name: file name under /run/secrets} of a service (short and long syntax)."""
    found = {}
    for s in service.get("secrets", []):
        name = s if isinstance(s, str) else s["source"]
        found[name] = s if isinstance(s, str) else s.get("target", name)
    return found


def test_the_analyst_notebook_gets_read_only_object_store_keys_never_the_root_key():
    notebook = SERVICES["notebook"]
    secrets = _secret_sources(notebook)
    assert not {"store_spec", "minio_root_user", "minio_root_password", "postgres_password"} & set(secrets)
    # SENSORIUM_STORE_FILE (.env.example: /run/secrets/store_spec) reaches the analyst's spec there
    assert secrets["store_spec_analyst"] == "store_spec"
    assert notebook["environment"]["SENSORIUM_STORE_FILE"] == "${SENSORIUM_STORE_FILE:-}"
    assert "SENSORIUM_STORE_FILE=\n" in (REPO / ".env.example").read_text()
    assert "/run/secrets/store_spec" in (REPO / ".env.example").read_text()
    assert COMPOSE["secrets"]["store_spec_analyst"]["file"] == "./secrets/store_spec_analyst.json"
    assert not [v for v in notebook["environment"] if v.startswith(("MINIO", "MC_HOST", "AWS"))]
    # the root key reaches only MinIO itself and the one-shot set-up service
    for name, service in SERVICES.items():
        if {"minio_root_user", "minio_root_password"} & set(_secret_sources(service)):
            assert name in ("minio", "minio-bucket"), name


def _make_secrets(folder: Path, *args: str) -> dict[str, str]:
    (folder / "deploy").mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "deploy" / "make-secrets.sh", folder / "deploy")
    made = subprocess.run(["sh", "deploy/make-secrets.sh", *args], cwd=folder, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return {p.name: p.read_text() for p in (folder / "secrets").iterdir()}


def test_make_secrets_writes_the_analysts_spec_with_the_read_only_users_keys(tmp_path):
    import json

    plain = _make_secrets(tmp_path)
    assert json.loads(plain["store_spec_analyst.json"]) == json.loads(plain["store_spec.json"])
    assert "secret_key" not in plain["store_spec_analyst.json"]
    minio = _make_secrets(tmp_path, "--minio")
    analyst, root = json.loads(minio["store_spec_analyst.json"]), json.loads(minio["store_spec.json"])
    assert analyst["access_key"] == minio["minio_analyst_user"].strip() != root["access_key"]
    assert analyst["secret_key"] == minio["minio_analyst_password"].strip() != root["secret_key"]
    assert root["secret_key"] == minio["minio_root_password"].strip()
    assert minio["minio_root_password"].strip() not in minio["store_spec_analyst.json"]
    assert {k: v for k, v in analyst.items() if not k.endswith("_key")} == {
        k: v for k, v in root.items() if not k.endswith("_key")
    }, "the same bucket and location"
    again = _make_secrets(tmp_path, "--minio")
    assert again["minio_analyst_password"] == minio["minio_analyst_password"], "existing keys are kept"


@pytest.mark.external  # the shellcheck binary
def test_minio_setup_creates_the_analyst_user_with_the_readonly_policy(tmp_path):
    setup = SERVICES["minio-bucket"]
    assert {"minio_analyst_user", "minio_analyst_password"} <= set(_secret_sources(setup))
    assert SERVICES["init"]["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    script = setup["command"][0].replace("$$", "$")
    lines = [line.strip() for line in script.splitlines()]
    # keys on standard input, never in mc's arguments (the line piping them ends with the bare alias)
    (add,) = [line for line in lines if "mc admin user add" in line]
    assert add.startswith("printf ") and add.endswith("| mc admin user add local")
    assert "/run/secrets/minio_analyst_user" in script and "/run/secrets/minio_analyst_password" in add
    (attach,) = [line for line in lines if "mc admin policy attach" in line]
    assert 'mc admin policy attach local readonly --user "$analyst"' in attach
    assert '*"already in effect"*) ;;' in lines, "attaching again on a redeploy is no failure"
    assert lines[0] == "set -eu" and "exit 1" in script
    for line in lines:  # no secret file's content is put on an mc command line
        if line.startswith("mc ") or " mc " in line:
            assert "minio_analyst_password" not in line.split("|")[-1], line
    (tmp_path / "setup.sh").write_text("#!/bin/sh\n" + script.replace("${SENSORIUM_BUCKET:-sensorium}", "b"))
    checked = subprocess.run(
        [_tool("shellcheck"), str(tmp_path / "setup.sh")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
