"""First contact: commands started together on a fresh home, the folders above the home, failed ingests
and the object store, renamed copies of a recording.

Everything runs for real: ``python -m cli`` processes, the embedded PostgreSQL (a fresh one per
fresh home, stopped at the end of its test), real logins made with ``sensorium db user add``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from pipeline.data.synth import SynthConfig, folder_name, write_synthetic
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]


def _env(home: Path, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, SENSORIUM_HOME=str(home), SENSORIUM_DB_PREFIX=prefix, TQDM_DISABLE="1", **extra)
    env.pop("DJ_HOST", None)
    return env


def _start(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        cli_argv(*args),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), cwd=REPO, env=env, capture_output=True, text=True)


def _together(env: dict[str, str], *args: str, n: int = 2) -> list[tuple[int, str]]:
    """Start ``n`` identical commands at once; (exit code, output) of each."""
    procs = [_start(env, *args) for _ in range(n)]
    results = []
    for p in procs:
        output, _ = p.communicate(timeout=300)
        results.append((p.returncode, output))
    return results


@pytest.fixture()
def fresh_home(tmp_path):
    """A home no server has run in yet (and a prefix of its own); its embedded server is removed after."""
    from pipeline.database import remove_embedded_server

    home = tmp_path / "home"
    yield home
    remove_embedded_server(home / "db")


def _store_files(store: Path) -> int:
    return sum(1 for p in store.rglob("*") if p.is_file()) if store.exists() else 0


@pytest.mark.slow
def test_two_db_status_at_once_on_a_fresh_home(fresh_home):
    env = _env(fresh_home, f"fc{os.getpid()}a_")
    for code, output in _together(env, "db", "status"):
        assert code == 0 and "Traceback" not in output, output
        assert f"fc{os.getpid()}a_data" in output


@pytest.mark.slow
def test_two_ingests_of_one_recording_at_once_on_a_fresh_home(fresh_home, synth_dir):
    import json

    prefix = f"fc{os.getpid()}b_"
    env = _env(fresh_home, prefix)
    recording = sorted(synth_dir.glob("*.zip"))[0]
    results = _together(env, "ingest", "-q", str(recording))
    for code, output in results:
        assert code == 0 and "Traceback" not in output, output
    verbs = sorted("ingested" if "ingested" in out else "already stored" for _, out in results)
    assert verbs == ["already stored", "ingested"], results
    status = _cli(env, "db", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["tables"][f"{prefix}data"]["scan"] == 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="pgserver chmods only as root")
def test_embedded_server_keeps_the_modes_of_folders_above_the_home(tmp_path):
    """As root pgserver would widen every folder above its data folder: the data lives under the
    pipeline's own folder instead, the home links to it, and no folder above the home changes (start,
    a checkpoint, attach, stop, start again); once the home is deleted its data is collected."""
    from pipeline.database import ROOT_DATA_PARENT, remove_embedded_server

    outer = tmp_path / "private"
    inner = outer / "deeper"
    inner.mkdir(parents=True)
    for folder in (tmp_path, outer, inner):
        folder.chmod(0o700)
    home = inner / "home"
    mine = (tmp_path, outer, inner)  # folders no other test or process touches

    def modes() -> dict[Path, int]:
        return {p: stat.S_IMODE(p.stat().st_mode) for p in mine}

    before = modes()
    assert set(before.values()) == {0o700}
    env = _env(home, f"fc{os.getpid()}c_")
    try:
        first = _cli(env, "db", "status")  # start, then declare every table
        assert first.returncode == 0, first.stdout + first.stderr
        assert modes() == before
        data = (home / "db").resolve()
        assert (home / "db").is_symlink() and data.parent == ROOT_DATA_PARENT
        # the server keeps working with the folders above the home private: a checkpoint reopens
        # global/pg_control by its absolute path (this is what failed when the modes were only restored)
        import psycopg2

        # the socket by the data folder's own path: the home's link names the same folder, but under
        # pytest-xdist's longer temporary paths it passes the 107-byte limit of a socket's path
        conn = psycopg2.connect(host=str(data), port=5432, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
        conn.close()
        again = _cli(env, "db", "status")  # attach to the running server
        assert again.returncode == 0, again.stdout + again.stderr
        stopped = _cli(env, "db", "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not (home / "db" / "postmaster.pid").exists()
        restarted = _cli(env, "db", "status")  # the same data again, through the link
        assert restarted.returncode == 0 and f"fc{os.getpid()}c_data" in restarted.stdout
        assert (home / "db").resolve() == data
        assert modes() == before
        # `make clean`: the home goes; the next start elsewhere collects the data of the stopped server
        assert _cli(env, "db", "stop").returncode == 0
        shutil.rmtree(home)
        other = inner / "other"
        assert _cli(_env(other, f"fc{os.getpid()}d_"), "db", "stop").returncode == 0
        started = _cli(_env(other, f"fc{os.getpid()}d_"), "db", "status")
        assert started.returncode == 0, started.stdout + started.stderr
        assert not data.exists() and not data.with_suffix(".home").exists()
        remove_embedded_server(other / "db")
    finally:
        remove_embedded_server(home / "db")


# -- ingest through the session's server ----------------------------------------------------------------


def _synthetic(out: Path, seed: int) -> Path:
    """One small recording folder of its own (data key 90000-<1 + seed>-1)."""
    (folder,) = write_synthetic(out, 1, SynthConfig(n_neurons=20, n_trials=150, seed=seed), make_zip=False)
    return folder


def _copy_as(source: Path, data_key: str, where: Path) -> Path:
    """``source`` copied under the folder name of ``data_key`` (same content, another name)."""
    target = where / folder_name(data_key)
    shutil.copytree(source, target)
    return target


def test_renamed_copy_first_then_the_original_both_keys_stored(db, tmp_path, caplog):
    """The data key comes from the folder being ingested, never from the cache entry of an identical copy
    ingested before."""
    from schemas.data import Scan
    from usecases.ingest import ingest

    original = _synthetic(tmp_path / "synth", seed=741)
    original_key = original.name.removeprefix("static").split("-GrayImageNet")[0]
    renamed = _copy_as(original, "11111-741-1", tmp_path / "renamed")

    first = ingest(renamed, cache_dir=db.cache_dir, progress=False)
    second = ingest(original, cache_dir=db.cache_dir, progress=False)
    assert (first.data_key, first.status) == ("11111-741-1", "inserted")
    assert (second.data_key, second.status) == (original_key, "inserted")
    assert first.checksum == second.checksum
    rows = {
        r["data_key"]: r["folder_name"]
        for r in (Scan & [{"data_key": "11111-741-1"}, {"data_key": original_key}]).to_dicts()
    }
    assert rows == {"11111-741-1": renamed.name, original_key: original.name}
    assert any("same content is already stored as 11111-741-1" in r.getMessage() for r in caplog.records)
    # read again through the cache (index hits now): each path keeps its own key
    assert ingest(renamed, cache_dir=db.cache_dir, progress=False).data_key == "11111-741-1"
    assert ingest(original, cache_dir=db.cache_dir, progress=False).status == "exists"


def test_conflicting_recording_leaves_the_store_unchanged(db, session_scans, tmp_path):
    from usecases.ingest import IngestConflictError, ingest

    other = _synthetic(tmp_path / "synth", seed=742)
    impostor = _copy_as(other, session_scans[0], tmp_path / "impostor")
    before = _store_files(db.store_dir)
    with pytest.raises(IngestConflictError):
        ingest(impostor, cache_dir=db.cache_dir, progress=False)
    assert _store_files(db.store_dir) == before


@pytest.fixture(scope="module")
def refused_logins(db, session_scans) -> dict[str, dict[str, str]]:
    """A worker and an analyst login (neither may insert a scan), each as a process environment."""
    env = dict(os.environ)
    applied = _cli(env, "db", "roles", "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    logins = {}
    for user, role in (("fc_worker", "worker"), ("fc_analyst", "analyst")):
        made = _cli(
            dict(env, SENSORIUM_NEW_PASSWORD="first-contact-123"), "db", "user", "add", user, "--role", role
        )
        assert made.returncode == 0, made.stdout + made.stderr
        logins[role] = dict(env, DJ_HOST=str(db.db_dir), DJ_PORT="5432", DJ_USER=user, DJ_PASS="unused")
    return logins


@pytest.mark.parametrize("role", ["worker", "analyst"])
def test_refused_ingest_leaves_the_store_unchanged(db, refused_logins, tmp_path, role):
    """A login without INSERT on Scan: DataJoint writes the arrays while encoding the row, before the
    INSERT is refused; those files are removed again."""
    from schemas.data import Scan

    seed = {"worker": 743, "analyst": 744}[role]
    recording = _synthetic(tmp_path / "synth", seed=seed)
    before = _store_files(db.store_dir)
    refused = _cli(dict(refused_logins[role], TQDM_DISABLE="1"), "ingest", "-q", str(recording))
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: permission denied"), output
    assert _store_files(db.store_dir) == before, f"files left in the object store by the {role}'s ingest"
    assert not Scan & {"data_key": f"90000-{seed + 1}-1"}
