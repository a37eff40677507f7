"""The lab deployment run for real: the image built, the compose stack up on a Docker engine (issue 27).

``make deploy-check`` runs this after ``tests/deploy/engine.sh`` (a running engine, Compose v2). In a
fresh folder holding a copy of the repository's files, as a lab sets it up (``deploy/make-secrets.sh``,
``.env`` from ``.env.example``, tiny synthetic recordings and two tiny experiments under ``lab/``):

1. stand-in base images (``standins.sh``; no registry here), then ``docker compose build``, and a code-only
   change rebuilt: only the layers after the dependencies run again;
2. ``docker compose up -d`` (``worker-cpu`` scaled to 2, one GPU-worker service training on the CPU): the
   ``init`` step exits 0, and runs again on a second ``up`` changing nothing; every named volume is
   writable by the image's user; every server listens on 127.0.0.1 only;
3. the experiments are trained and scored; ``docker compose run --rm worker-cpu scores`` shows them;
4. the notebook service answers on 127.0.0.1, a notebook runs inside it as the analyst, and a write as
   the analyst is refused;
5. ``lab_resume`` trained once more: ``docker compose stop`` of its worker mid-run exits 0 within the
   ``stop_grace_period`` and the job is pending again; after ``up`` the run resumes from its checkpoint
   and ends with the scores of the uninterrupted run;
6. ``docker compose down`` (volumes kept) and ``up``: every row and every stored file is still there;
7. no secret in ``docker inspect``, ``docker history``, a container log, an image layer, a command's
   output or a row; ``docker compose down -v`` leaves no container, volume or network behind.

Every container uses the host network through ``compose.test.yml`` (reasons there): all traffic stays on
127.0.0.1, no network is created. The compose project is ``sensoriumcheck`` and the image
``sensorium-pipeline:deploy-check``, so a lab's own stack on the same engine is not touched.

Environment: SENSORIUM_DEPLOY_KEEP=1 leaves the stack and its folder for a look after a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

import psycopg2
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PROJECT = "sensoriumcheck"
IMAGE = "sensorium-pipeline:deploy-check"
STANDINS = ("python:3.11-slim-bookworm", "postgres:16")
SCALE = ("--scale", "worker-cpu=2", "--scale", "worker-gpu-1=0")
TRAINER = "worker-gpu-0"  # the GPU-worker service of the test (on the CPU)
PREFIX = "sensorium_"
TINY_MODEL = {
    "layers": 2,
    "hidden_channels": 4,
    "input_kern": 5,
    "hidden_kern": 3,
    "grid_mean_predictor": {"hidden_layers": 1, "hidden_features": 8},
}
RESUME_EPOCHS = 100  # 50-200 ms an epoch here: long enough to be stopped in the middle


def experiment(name: str, seed: int, max_iter: int) -> dict:
    return {
        "name": name,
        "dataset": {"fn": "sensorium.datasets.static_loaders", "config": {"scans": "all", "batch_size": 32}},
        "model": {"fn": "sensorium.models.stacked_core_full_gauss_readout", "config": dict(TINY_MODEL)},
        "trainer": {
            "fn": "sensorium.training.standard_trainer",
            "config": {"max_iter": max_iter, "patience": max_iter, "lr_decay_steps": 1},
        },
        "seeds": [seed],
    }


class DeployCheckError(AssertionError):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise DeployCheckError(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 900)
    return subprocess.run(argv, **kwargs)


def _compose_env(**extra: str) -> dict[str, str]:
    """The environment of a ``docker compose`` call: this process's, less every ``SENSORIUM_*`` and
    ``DJ_*`` variable. Compose lets the shell's variables override ``.env``, so a caller's settings (pytest
    sets ``SENSORIUM_DB_PREFIX`` and short worker timings for the tests that ran before this one in the
    same process) would otherwise reach the stack; the deployment under test is the one ``.env`` says."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("SENSORIUM_", "DJ_"))}
    return kept | extra


class Scenario:
    def __init__(self, folder: Path):
        self.folder = folder
        self.db_port, self.nb_port = _free_port(), _free_port()
        self.env = _compose_env(
            COMPOSE_FILE="docker-compose.yml:compose.test.yml", COMPOSE_PROJECT_NAME=PROJECT
        )
        self.outputs: list[str] = []  # every command's output, searched for secrets at the end
        self.logs: dict[str, str] = {}  # every container's log, kept before containers are removed
        self.timings: list[tuple[str, float]] = []
        self.figures: dict[str, object] = {}

    # -- helpers ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, name: str):
        print(f"== {name}", flush=True)
        started = time.monotonic()
        yield
        took = time.monotonic() - started
        self.timings.append((name, took))
        print(f"   ok ({took:.1f} s)", flush=True)

    def compose(self, *args: str, ok: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        done = _run(["docker", "compose", *args], cwd=self.folder, env=self.env, timeout=timeout)
        self.outputs.append(done.stdout + done.stderr)
        if ok:
            check(
                done.returncode == 0,
                f"docker compose {' '.join(args)}: exit {done.returncode}\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
            )
        return done

    def docker(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = _run(["docker", *args])
        if ok:
            check(done.returncode == 0, f"docker {' '.join(args)}: {done.stderr[-2000:]}")
        return done

    def containers(self, *filters: str) -> list[str]:
        argv = [
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--format",
            "{{.Names}}",
        ]
        for f in filters:
            argv[2:2] = ["--filter", f]
        return sorted(self.docker(*argv).stdout.split())

    def container(self, service: str, index: int = 1) -> str:
        return f"{PROJECT}-{service}-{index}"

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name).stdout)[0]

    def keep_logs(self) -> None:
        for name in self.containers():
            done = self.docker("logs", name, ok=False)
            self.logs[f"{name} {self.inspect(name)['Id'][:12]}"] = done.stdout + done.stderr

    def log(self, service: str, index: int = 1) -> str:
        done = self.docker("logs", self.container(service, index))
        return done.stdout + done.stderr

    def volume(self, name: str) -> Path:
        return Path(
            self.docker("volume", "inspect", "-f", "{{.Mountpoint}}", f"{PROJECT}_{name}").stdout.strip()
        )

    def secret(self, name: str) -> str:
        return (self.folder / "secrets" / name).read_text().strip()

    def secrets(self) -> list[str]:
        users = {"minio_root_user", "minio_analyst_user"}  # names, not secrets
        values = [
            p.read_text().strip()
            for p in (self.folder / "secrets").iterdir()
            if p.suffix != ".json" and p.name not in users
        ]
        check(len(values) == 5 and all(len(v) >= 16 for v in values), f"unexpected secrets: {len(values)}")
        return values

    def sql(self, query: str, args: tuple = (), user: str = "postgres") -> list[tuple]:
        password = self.secret({"postgres": "postgres_password", "lab_analyst": "analyst_password"}[user])
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.db_port,
            user=user,
            password=password,
            dbname="postgres",
            connect_timeout=10,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def wait(self, what: str, condition, timeout: float, every: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DeployCheckError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(every)

    def scores(self, experiment_name: str, user: str = "lab_analyst") -> list[tuple]:
        return self.sql(
            f'SELECT s.tier, s.single_trial_correlation FROM "{PREFIX}evaluation"."__model_score" s '
            f'JOIN "{PREFIX}fabrik"."experiment" e USING (model_hash, trainer_hash) '
            f'JOIN "{PREFIX}fabrik"."experiment__member" m USING (experiment_name, dataset_hash, seed) '
            "WHERE e.experiment_name = %s ORDER BY s.tier",
            (experiment_name,),
            user,
        )

    def trained(self, seed: int) -> list[tuple]:
        return self.sql(
            "SELECT resumed_from_epoch, epochs, best_val_corr, device "
            f'FROM "{PREFIX}training"."__trained_model" WHERE seed = %s',
            (seed,),
        )

    def job_status(self, seed: int) -> str | None:
        rows = self.sql(
            f'SELECT status::text FROM "{PREFIX}training"."~~trained_model" WHERE seed = %s', (seed,)
        )
        return rows[0][0] if rows else None

    def checkpoint_epoch(self) -> int:
        folder = self.volume("checkpoints") / f"{PREFIX}training" / "trained_model"
        epochs = []
        for sidecar in folder.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                epochs.append(int(json.loads(sidecar.read_text())["epoch"]))
        return max(epochs, default=0)

    def init_finished(self) -> dict:
        """The init container's state, once it has exited."""
        state = self.inspect(self.container("init"))["State"]
        return state if state["Status"] == "exited" else {}

    # -- the scenario ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        with self.step("the deployment folder: files, secrets, .env, recordings, experiments"):
            listed = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO)
            check(listed.returncode == 0, listed.stderr)
            for name in filter(None, listed.stdout.split("\0")):
                source = REPO / name
                if source.is_file():
                    (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, self.folder / name)
            shutil.copy2(HERE / "compose.test.yml", self.folder / "compose.test.yml")
            made = _run(["sh", "deploy/make-secrets.sh"], cwd=self.folder)
            check(made.returncode == 0, made.stderr)
            env = (self.folder / ".env.example").read_text()
            for name, value in {
                "SENSORIUM_IMAGE": IMAGE,
                "SENSORIUM_DB_PORT": str(self.db_port),
                "SENSORIUM_NOTEBOOK_PORT": str(self.nb_port),
            }.items():
                check(f"\n{name}=" in env, f".env.example has no {name}")
                env = env.replace(f"\n{name}=", f"\n{name}={value}\n# was: {name}=")
            (self.folder / ".env").write_text(env)
            # the README: Jupyter runs as uid 1000 and saves into the bind-mounted notebooks/
            if os.geteuid() == 0:
                for path in [self.folder / "notebooks", *(self.folder / "notebooks").iterdir()]:
                    os.chown(path, 1000, 1000)
            recordings, experiments = self.folder / "lab" / "recordings", self.folder / "lab" / "experiments"
            experiments.mkdir(parents=True)
            synth = _run(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    "synth",
                    "--out",
                    str(self.folder / "synth"),
                    "--mice",
                    "1",
                    "--neurons",
                    "20",
                    "--trials",
                    "150",
                    "--seed",
                    "11",
                ],
                cwd=REPO,
            )
            check(synth.returncode == 0, synth.stdout + synth.stderr)
            recordings.mkdir(parents=True)
            for z in (self.folder / "synth").glob("*.zip"):
                shutil.copy2(z, recordings)
            (experiments / "tiny.yaml").write_text(yaml.safe_dump(experiment("lab_tiny", 7, 2)))
            (experiments / "resume.yaml").write_text(
                yaml.safe_dump(experiment("lab_resume", 9, RESUME_EPOCHS))
            )
            self.compose("config", "--quiet")
            real = _run(
                ["docker", "compose", "-f", "docker-compose.yml", "config", "--quiet"],
                cwd=self.folder,
                env=_compose_env(COMPOSE_PROJECT_NAME=PROJECT),
            )
            check(real.returncode == 0, "Compose v2 rejects docker-compose.yml: " + real.stderr)

    def build(self) -> None:
        with self.step("stand-in base images (Debian packages; no registry here)"):
            made = _run(
                ["sh", str(HERE / "standins.sh")], env=os.environ | {"PYTHON": sys.executable}, timeout=900
            )
            print(made.stderr.strip())
            check(made.returncode == 0, made.stdout + made.stderr)
        mirror = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "pip_mirror.py"),
                "serve",
                os.environ.get("SENSORIUM_PIP_MIRROR_PORT", "47113"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            first = mirror.stdout.readline().strip()
            check(first.startswith("pip mirror on"), f"the pip mirror did not start: {first}")
            print("   " + first)
            with self.step("docker compose build"):
                started = time.monotonic()
                built = self.compose("--progress", "plain", "build")
                self.figures["build_s"] = round(time.monotonic() - started, 1)
                steps, cached = _cached_steps(built.stderr + built.stdout)
                self.figures["build_steps_cached"] = f"{len(cached & set(steps))} of {len(steps)}"
                image = self.docker("image", "inspect", IMAGE).stdout
                self.figures["image_bytes"] = json.loads(image)[0]["Size"]
                named = (built.stdout + built.stderr).count(f"naming to docker.io/library/{IMAGE}")
                check(named == 1, f"the image was built {named} times (once per service?)")
            with self.step("a code-only change rebuilds only the last layers"):
                module = self.folder / "pipeline" / "__init__.py"
                module.write_text(module.read_text() + f"\n# touched by the deploy check {time.time_ns()}\n")
                started = time.monotonic()
                built = self.compose("--progress", "plain", "build")
                self.figures["rebuild_after_code_change_s"] = round(time.monotonic() - started, 1)
                steps, cached = _cached_steps(built.stderr + built.stdout)
                ran = [steps[i] for i in sorted(steps) if i not in cached and "] FROM " not in steps[i]]
                self.figures["rebuilt_steps"] = ran
                heavy = [s for s in ran if "pip install --no-cache-dir torch" in s or "requirements" in s]
                check(not heavy, f"a code change reinstalled the dependencies: {heavy}")
                check(any("COPY pipeline/" in s for s in ran), f"the code layer was not rebuilt: {ran}")
        finally:
            mirror.terminate()
            mirror.wait(timeout=10)
        with self.step("the image: non-root, every volume's folder owned by its user"):
            shown = self.docker(
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "stat",
                IMAGE,
                "-c",
                "%n %u",
                "/var/lib/sensorium/store",
                "/var/lib/sensorium/checkpoints",
                "/var/lib/sensorium/cache",
            ).stdout.split("\n")
            check(all(line.endswith(" 1000") for line in filter(None, shown)), f"not uid 1000: {shown}")
            user = self.inspect(IMAGE)["Config"]["User"]
            check(user.split(":")[0] == "1000", f"the image runs as {user!r}")

    def up(self) -> None:
        with self.step("docker compose up -d: db healthy, init exits 0, workers and notebook start"):
            self.networks = self.docker("network", "ls", "-q").stdout.split()
            self.compose("up", "-d", *SCALE)
            state = self.wait("init to finish", self.init_finished, 300)
            check(state["ExitCode"] == 0, "init failed:\n" + self.log("init"))
            first = self.log("init")
            for line in (
                "login     lab_worker (sensorium_worker): created",
                ": ingested from",
                "experiment lab_tiny: added",
                "experiment lab_resume: added",
            ):
                check(line in first, f"init did not print {line!r}:\n{first}")
            running = self.containers("status=running")
            expected = {
                self.container(s, i)
                for s, i in [("db", 1), ("worker-cpu", 1), ("worker-cpu", 2), (TRAINER, 1), ("notebook", 1)]
            }
            check(expected <= set(running), f"not running: {sorted(expected - set(running))}")
            self.first_init_started = state["StartedAt"]
        with self.step("a second up runs init again, which changes nothing"):
            self.compose("up", "-d", *SCALE)
            state = self.wait(
                "init to finish again",
                lambda: (s := self.init_finished()) and s["StartedAt"] != self.first_init_started and s,
                300,
            )
            check(state["ExitCode"] == 0, "init failed the second time:\n" + self.log("init"))
            again = self.log("init")[len(first) :]
            for line in (
                "lab_worker (sensorium_worker): updated",
                ": already stored (no change) from",
                "experiment lab_tiny: already stored",
                "experiment lab_resume: already stored",
            ):
                check(line in again, f"second init did not print {line!r}:\n{again}")
            check(
                "added" not in again and "ingested" not in again,
                f"the second init changed something:\n{again}",
            )
        with self.step("every named volume is writable by the image's user (uid 1000)"):
            for service in ("worker-cpu", TRAINER):
                probe = (
                    "set -e; id -u; for d in store checkpoints cache; do "
                    "touch /var/lib/sensorium/$d/.probe && rm /var/lib/sensorium/$d/.probe; done"
                )
                done = self.compose("exec", "-T", service, "sh", "-c", probe, ok=False)
                check(
                    done.returncode == 0 and done.stdout.strip() == "1000",
                    f"{service}: a volume is not writable by uid 1000: {done.stdout}{done.stderr}",
                )
        with self.step("the servers listen on 127.0.0.1 only (the containers share the host's network)"):
            for port, what in ((self.db_port, "db"), (self.nb_port, "notebook")):
                addresses = self.wait(f"{what} to listen", lambda p=port: listening_on(p), 120)
                check(addresses <= {"127.0.0.1"}, f"{what} listens on {sorted(addresses)}")

    def train(self) -> None:
        with self.step("the GPU-worker service and two CPU workers train and score both experiments"):
            seen: list = []

            def registered() -> bool:
                # each worker registers once its interpreter has started and imported torch, which on a
                # loaded machine can take longer than the containers take to report "running"
                seen[:] = self.sql(
                    f'SELECT queue, count(*) FROM "{PREFIX}workers"."worker" '
                    "WHERE status = 'running' GROUP BY queue ORDER BY queue"
                )
                return dict(seen) == {"cpu": 2, "gpu": 1}

            try:
                self.wait("two CPU workers and the GPU-worker service to register", registered, 180, 2)
            except DeployCheckError as err:
                raise DeployCheckError(f"{err}; running workers: {seen}") from None
            for name in ("lab_tiny", "lab_resume"):
                self.wait(
                    f"the test score of {name}",
                    lambda n=name: ("test",) in {r[:1] for r in self.scores(n)},
                    600,
                    2,
                )
            for seed in (7, 9):
                (row,) = self.trained(seed)
                check(row[0] == 0 and row[3].startswith("cpu"), f"seed {seed}: {row}")
            for name in self.containers("status=running"):
                check(
                    self.inspect(name)["RestartCount"] == 0,
                    f"{name} restarted:\n{self.docker('logs', name).stderr[-3000:]}",
                )
        with self.step("docker compose run --rm worker-cpu scores"):
            shown = self.compose("run", "--rm", "worker-cpu", "scores").stdout
            for name in ("lab_tiny", "lab_resume"):
                check(
                    f"\n{name} " in "\n" + shown and "test" in shown, f"scores does not show {name}:\n{shown}"
                )
            print("\n".join("   " + line for line in shown.strip().splitlines()))

    def notebook(self) -> None:
        with self.step("the notebook service answers on 127.0.0.1 and runs a notebook as the analyst"):

            def answers():
                url = f"http://127.0.0.1:{self.nb_port}/api"
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
                    return json.load(r)
                return None

            api = self.wait("Jupyter to answer", answers, 120)
            check("version" in api, f"/api answered {api}")
            self.compose(
                "exec",
                "-T",
                "-w",
                "/app/notebooks",
                "notebook",
                "jupyter",
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--output-dir",
                "/tmp",
                "--output",
                "executed",
                "03_compare.ipynb",
                timeout=600,
            )
            notebook = json.loads(self.compose("exec", "-T", "notebook", "cat", "/tmp/executed.ipynb").stdout)
            text = json.dumps(notebook["cells"])
            check("login lab_analyst" in text, "the notebook did not log in as the analyst")
            check("lab_resume" in text and "lab_tiny" in text, "the notebook does not show the experiments")
        with self.step("a write as the analyst is refused"):
            refused = self.compose(
                "exec",
                "-T",
                "notebook",
                "sensorium",
                "experiment",
                "add",
                "/app/experiments/winner.yaml",
                "--set",
                "name=analyst_try",
                # the recordings the deployment holds: an experiment naming scans that are not ingested
                # is refused before any write
                "--set",
                "dataset.config.scans=all",
                ok=False,
            )
            check(
                refused.returncode == 2 and refused.stdout.startswith("error: permission denied"),
                f"the analyst's write was not refused: {refused.returncode} {refused.stdout}{refused.stderr}",
            )
            check("Traceback" not in refused.stderr, refused.stderr)

    def resume(self) -> None:
        with self.step("reference: lab_resume as trained in one go, then its model deleted by the admin"):
            reference = json.loads(
                self.compose(
                    "run", "--rm", "worker-cpu", "scores", "--experiment", "lab_resume", "--json"
                ).stdout
            )
            check({r["tier"] for r in reference} >= {"test"}, f"no test score: {reference}")
            (self.reference_row,) = self.trained(9)
            self.reference = reference
            delete = (
                "from cli.common import activate; activate(); "
                "from schemas.fabrik import experiment_models; from schemas.training import TrainedModel; "
                "print((TrainedModel & experiment_models('lab_resume')).delete(prompt=False))"
            )
            self.compose("run", "--rm", "--no-deps", "--entrypoint", "python", "init", "-c", delete)
            check(not self.trained(9) and not self.scores("lab_resume", "postgres"), "lab_resume not deleted")
        with self.step(f"docker compose stop {TRAINER} in the middle of the run"):
            self.wait("the retraining to reach epoch 5", lambda: self.checkpoint_epoch() >= 5, 300, 0.2)
            spec = yaml.safe_load((self.folder / "docker-compose.yml").read_text())
            grace = float(spec["services"][TRAINER]["stop_grace_period"].rstrip("s"))
            started = time.monotonic()
            self.compose("stop", TRAINER)
            took = time.monotonic() - started
            state = self.inspect(self.container(TRAINER))["State"]
            log = self.log(TRAINER)
            check(
                state["ExitCode"] == 0,
                f"exit {state['ExitCode']} (137: killed at the end of the grace period)",
            )
            check(took < grace, f"stop took {took:.0f} s, the grace period is {grace:.0f} s")
            check(
                "SIGTERM received" in log and "pending again" in log,
                "no graceful stop in the log:\n" + log[-3000:],
            )
            self.stopped_at = self.checkpoint_epoch()
            check(0 < self.stopped_at < RESUME_EPOCHS, f"stopped at epoch {self.stopped_at}")
            check(self.job_status(9) == "pending", f"the job is {self.job_status(9)!r}, not pending")
            check(not self.trained(9), "a model row was written for the interrupted run")
            self.figures["stop_s"] = round(took, 1)
            print(
                f"   stopped at epoch {self.stopped_at} of {RESUME_EPOCHS} in {took:.1f} s, exit 0, "
                "job pending"
            )
        with self.step("docker compose up -d: the run resumes and ends with the uninterrupted run's scores"):
            self.compose("up", "-d", *SCALE)
            self.wait(
                "the resumed run's test score",
                lambda: ("test",) in {r[:1] for r in self.scores("lab_resume")},
                600,
                1,
            )
            (row,) = self.trained(9)
            check(row[0] == self.stopped_at, f"resumed from epoch {row[0]}, stopped at {self.stopped_at}")
            check(
                row[1:] == self.reference_row[1:],
                f"{row} differs from the uninterrupted {self.reference_row}",
            )
            resumed = json.loads(
                self.compose(
                    "run", "--rm", "worker-cpu", "scores", "--experiment", "lab_resume", "--json"
                ).stdout
            )
            check(resumed == self.reference, f"scores differ:\n{resumed}\n{self.reference}")
            for line in self.log(TRAINER).splitlines():  # the worker's account of the resumed run
                if any(w in line for w in ("worker ", "waiting", "resum", "TrainedModel")):
                    print("   " + line[:150])
            test = [r["single_trial_correlation"] for r in resumed if r["tier"] == "test"]
            print(f"   test correlation {test} == uninterrupted run's, resumed from epoch {row[0]}")

    def snapshot(self) -> tuple[dict[str, set[str]], dict[str, tuple[int, str]]]:
        tables = self.sql(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE %s", (PREFIX + "%",)
        )
        rows = {
            f"{s}.{t}": {r[0] for r in self.sql(f'SELECT t::text FROM "{s}"."{t}" AS t')} for s, t in tables
        }
        files = {}
        for volume in ("store", "checkpoints", "cache"):
            root = self.volume(volume)
            for path in root.rglob("*"):
                if path.is_file():
                    files[f"{volume}/{path.relative_to(root)}"] = (path.stat().st_size, _sha256(path))
        return rows, files

    def redeploy(self) -> None:
        with self.step("docker compose down (volumes kept), then up: every row and stored file is there"):
            self.report_restarts()
            rows, files = self.snapshot()
            check(
                len(rows) > 20 and sum(map(len, rows.values())) > 100 and len(files) > 10,
                f"little to compare: {len(rows)} tables, {len(files)} files",
            )
            self.keep_logs()
            self.compose("down")
            check(not self.containers(), f"containers left: {self.containers()}")
            volumes = self.docker(
                "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"
            )
            check(
                {f"{PROJECT}_{v}" for v in ("pgdata", "store", "checkpoints", "cache")}
                <= set(volumes.stdout.split()),
                f"volumes after down: {volumes.stdout}",
            )
            self.compose("up", "-d", *SCALE)
            state = self.wait("init to finish", self.init_finished, 300)
            check(state["ExitCode"] == 0, self.log("init"))
            rows_after, files_after = self.snapshot()
            live = {f"{PREFIX}workers.worker", f"{PREFIX}workers.~worker_token"}  # the running workers
            lost = {t: sorted(r - rows_after.get(t, set()))[:3] for t, r in rows.items() if t not in live}
            lost = {t: r for t, r in lost.items() if r}
            check(not lost, f"rows lost or changed by down / up: {lost}")
            gone = {f: v for f, v in files.items() if files_after.get(f) != v}
            check(not gone, f"files lost or changed by down / up: {sorted(gone)[:5]}")
            print(
                f"   {sum(map(len, rows.values()))} rows in {len(rows)} tables, {len(files)} files: all there"
            )

    def no_secret_anywhere(self) -> None:
        with self.step("no secret in docker inspect / history, container logs, image layers, outputs, rows"):
            secrets = [s.encode() for s in self.secrets()]
            self.keep_logs()
            places: dict[str, bytes] = {}
            names = self.containers()
            volumes = self.docker(
                "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"
            )
            for kind, items in (
                ("container", names),
                ("image", [IMAGE, *STANDINS]),
                ("volume", volumes.stdout.split()),
            ):
                for item in items:
                    places[f"docker inspect {kind} {item}"] = self.docker("inspect", item).stdout.encode()
            for image in (IMAGE, *STANDINS):
                places[f"docker history {image}"] = self.docker(
                    "history", "--no-trunc", image
                ).stdout.encode()
            for name, text in self.logs.items():
                places[f"log of {name}"] = text.encode()
            places["outputs of the docker commands"] = "\n".join(self.outputs).encode()
            rows, _ = self.snapshot()
            places["every row"] = "\n".join(r for t in rows.values() for r in t).encode()
            # the search finds what is there: the worker's password, in the file mounted for it
            shown = _grep_stream(
                ["docker", "exec", self.container("worker-cpu"), "cat", "/run/secrets/worker_password"],
                secrets,
            )
            check(shown == [self.secret("worker_password").encode()], "the secret search finds nothing")
            for place, blob in places.items():
                check(not [s for s in secrets if s in blob], f"a secret is in the {place}")
            for image in (IMAGE, *STANDINS):  # every layer of the image, as `docker save` writes it
                found = _grep_stream(["docker", "save", image], secrets)
                check(not found, f"a secret is in a layer of {image}")
            print(
                f"   {len(places)} places and the layers of {1 + len(STANDINS)} images searched for "
                f"{len(secrets)} secrets"
            )

    def down(self) -> None:
        with self.step("docker compose down -v: nothing left"):
            self.compose("down", "-v", "--remove-orphans")
            check(not self.containers(), "containers left")
            left = self.docker(
                "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"
            )
            check(not left.stdout.split(), f"volumes left: {left.stdout}")
            # the images of earlier builds, untagged by this one (the image and its build cache stay)
            self.docker("image", "prune", "-f", "--filter", f"label=com.docker.compose.project={PROJECT}")
            check(
                sorted(self.docker("network", "ls", "-q").stdout.split()) == sorted(self.networks),
                "a network was created",
            )

    def report_restarts(self) -> None:
        """Say which container Docker restarted (``restart: unless-stopped``), with what its log says.

        Not a failure: a worker that died is restarted and resumes, and the checks on the results
        stand. Seen once: a worker's queue query and the admin's cascading delete of ``lab_resume``
        deadlocked in PostgreSQL, the worker exited and was restarted (README, "What is tested here")."""
        for name in self.containers():
            restarts = self.inspect(name)["RestartCount"]
            if restarts:
                log = self.docker("logs", name, ok=False)
                lines = (log.stdout + log.stderr).splitlines()
                said = [line for line in lines if any(w in line for w in ("rror", "Traceback", "deadlock"))]
                print(f"   NOTE: {name} was restarted {restarts} time(s); its log says:")
                print("\n".join("     " + line[:200] for line in said[-15:]))

    def purge(self) -> None:
        """Remove the project's containers and volumes, by their labels (no compose file needed)."""
        label = f"label=com.docker.compose.project={PROJECT}"
        containers = self.containers()
        if containers:
            self.docker("rm", "-f", "-v", *containers)
        volumes = self.docker("volume", "ls", "-q", "--filter", label).stdout.split()
        if volumes:
            self.docker("volume", "rm", *volumes)

    def dump_logs(self) -> None:
        for name in self.containers():
            done = self.docker("logs", "--tail", "40", name, ok=False)
            print(f"--- {name}\n{done.stdout}{done.stderr}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _grep_stream(argv: list[str], needles: list[bytes]) -> list[bytes]:
    """The needles found in a command's output (read in chunks, overlapping by the longest needle)."""
    overlap = max(map(len, needles))
    found: set[bytes] = set()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    tail = b""
    for chunk in iter(lambda: proc.stdout.read(1 << 24), b""):
        window = tail + chunk
        found |= {n for n in needles if n in window}
        tail = window[-overlap:]
    check(proc.wait() == 0, f"{' '.join(argv)} failed")
    return sorted(found)


def _listening() -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets listening on this host (IPv4 and IPv6), from /proc."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state != "0A":
                    continue
                address, port = local.split(":")
                if width == 8:
                    text = socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1])
                else:
                    raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8))
                    text = socket.inet_ntop(socket.AF_INET6, raw)
                    text = "127.0.0.1" if text in ("::1", "::ffff:127.0.0.1") else text
                found.append((text, int(port, 16)))
    return found


def listening_on(port: int) -> set[str]:
    return {a for a, p in _listening() if p == port}


def _cached_steps(output: str) -> tuple[dict[str, str], set[str]]:
    """({BuildKit step id: its line}, ids of the cached steps) from `--progress plain` output."""
    steps, cached = {}, set()
    for line in output.splitlines():
        head, _, rest = line.partition(" ")
        if not head.startswith("#") or not head[1:].isdigit():
            continue
        if rest.startswith("[") and "/" in rest.split("]")[0]:
            steps[head] = rest
        elif rest.strip() == "CACHED":
            cached.add(head)
    return steps, cached


def _one_at_a_time():
    """An exclusive lock: two deploy checks on one engine would share the compose project."""
    lock = open(Path(tempfile.gettempdir()) / "sensorium-deploy-check.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another deploy check runs on this machine: waiting for it", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def main() -> int:
    lock = _one_at_a_time()
    started = time.monotonic()
    base = Path(os.environ.get("SENSORIUM_DEPLOY_DIR", tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix="sensorium-deploy-", dir=base))
    scenario = Scenario(folder)
    keep = os.environ.get("SENSORIUM_DEPLOY_KEEP") == "1"
    failed = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        scenario.purge()  # what a killed run left
        scenario.prepare()
        scenario.build()
        scenario.up()
        scenario.train()
        scenario.notebook()
        scenario.resume()
        scenario.redeploy()
        scenario.no_secret_anywhere()
        scenario.down()
        failed = False
    except Exception as err:  # a failed check, or a command that timed out or could not run
        if not isinstance(err, DeployCheckError):
            traceback.print_exc()
        print(f"FAILED: {err}", flush=True)
        with contextlib.suppress(Exception):
            scenario.dump_logs()
    finally:
        if not keep or not failed:
            with contextlib.suppress(Exception):
                scenario.purge()
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept: {folder} and the stack {PROJECT} (docker compose down -v there)")
    total = time.monotonic() - started
    print("\nsteps:")
    for name, took in scenario.timings:
        print(f"  {took:7.1f} s  {name}")
    print(f"figures: {json.dumps(scenario.figures)}")
    print(f"deploy check {'FAILED' if failed else 'passed'} in {total:.0f} s")
    lock.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
