"""Experiments as users manage them, on a real PostgreSQL through the real command line: list, show,
diff, add refusing scans that are not ingested, one line for every unknown name, and delete, which
removes exactly one experiment's rows and keeps those another experiment shares.

Three tiny experiments on the session's two recordings: ``adm_a`` (seeds 1, 2, an ensemble) and
``adm_b`` (seeds 2, 3, the same configs: the model of seed 2 is shared) are trained, three models in
all; ``adm_c`` (the same model, another trainer) only has a pending job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.factories import run_cli, tiny_experiment

# trains three tiny models, then some thirty command-line runs, each importing torch and DataJoint: about
# five minutes on a busy 2-core machine
pytestmark = pytest.mark.slow

NAMES = ("adm_a", "adm_b", "adm_c")


def _spec(name: str, scans: list[str]) -> dict:
    seeds = {"adm_a": (1, 2), "adm_b": (2, 3)}.get(name, (1,))
    # learning rates no other test module uses: the trained models are this module's alone
    spec = tiny_experiment(
        name, seeds, scans=scans, max_iter=2, lr_init=0.00411 if name == "adm_c" else 0.00511
    )
    if name == "adm_a":
        spec["ensemble"] = {"comment": "mean of adm_a"}
    return spec


@pytest.fixture(scope="module")
def experiments(db, session_scans):
    """The three experiments added; adm_a and adm_b trained, predicted and scored; adm_c queued."""
    from jobs.queues import jobs_of
    from jobs.runner import populate
    from pipeline.experiments import parse_experiment
    from schemas.binding import bound_settings
    from schemas.fabrik import Experiment, experiment_models
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    for name in NAMES:
        add_experiment(parse_experiment(_spec(name, session_scans)), "tester")
    trained = (Experiment & [{"experiment_name": n} for n in NAMES[:2]]) * Experiment.Member
    populate("all", trained, settings=bound_settings())
    jobs_of(TrainedModel).refresh(experiment_models("adm_c"), delay=-1)
    return session_scans


def _one_line(done) -> str:
    text = done.stdout + done.stderr
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def _file(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_list_shows_members_trained_models_and_best_test_score(experiments):
    listed = run_cli("experiment", "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert (rows["adm_a"]["members"], rows["adm_a"]["trained"]) == (2, 2)
    assert (rows["adm_c"]["members"], rows["adm_c"]["trained"], rows["adm_c"]["best_test"]) == (1, 0, None)
    assert 0 < rows["adm_a"]["best_test"] < 1 and rows["adm_a"]["comment"] == ""

    table = run_cli("experiment", "list")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["name", "members", "trained", "best", "test", "comment"]
    ours = [line for line in lines if line.split()[0] in NAMES]
    assert [line.split()[:3] for line in ours] == [
        ["adm_a", "2", "2"],
        ["adm_b", "2", "2"],
        ["adm_c", "1", "0"],
    ]
    # aligned: every row's columns start where the header's do
    assert len({line.index(line.split()[1]) + len(line.split()[1]) for line in [lines[0], *ours]}) == 1


def test_show_prints_the_stored_config_members_and_what_is_computed(experiments):
    shown = run_cli("experiment", "show", "adm_a")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    text = shown.stdout
    spec = yaml.safe_load(text.split("\nmembers:")[0])  # the stored experiment is YAML a file could hold
    assert (
        spec["name"] == "adm_a"
        and spec["seeds"] == [1, 2]
        and spec["ensemble"] == {"comment": "mean of adm_a"}
    )
    members = {line.split()[0]: line for line in text.split("\nmembers:")[1].splitlines()[2:4]}
    assert "2 epochs" in members["1"] and members["1"].rstrip().endswith("-")
    assert members["2"].rstrip().endswith("adm_b")  # the model of seed 2 is adm_b's too
    assert "adm_a: 2 members" in text and "job queue entries: none" in text

    queued = run_cli("experiment", "show", "adm_c")
    assert "TrainedModel: 1 pending" in queued.stdout, queued.stdout


def test_diff_compares_a_file_with_the_stored_experiment(experiments, tmp_path):
    path = _file(tmp_path, _spec("adm_a", experiments))
    same = run_cli("experiment", "diff", str(path))
    assert same.returncode == 0 and _one_line(same) == f"{path}: identical to the stored experiment 'adm_a'"

    changed = run_cli(
        "experiment", "diff", str(path), "--set", "model.config.hidden_channels=6", "--set", "seeds=[1,2,5]"
    )
    assert changed.returncode == 0, changed.stdout
    assert changed.stdout.splitlines()[1:] == [
        "  model.config.hidden_channels: 4 -> 6",
        "  seeds: [1, 2] -> [1, 2, 5]",
    ]

    removed = run_cli("experiment", "diff", str(path), "--set", "ensemble=null")
    assert removed.stdout.splitlines()[1:] == ["  ensemble.comment: removed (was 'mean of adm_a')"]


def test_add_refuses_a_scan_that_is_not_ingested(experiments, tmp_path):
    from schemas.fabrik import Dataset, Experiment

    datasets = len(Dataset())
    path = _file(tmp_path, _spec("adm_missing", [experiments[0], "99999-9-9"]))
    done = run_cli("experiment", "add", str(path))
    line = _one_line(done)
    assert done.returncode == 2
    assert line.startswith(f"error: {path}: dataset.config.scans: not ingested: '99999-9-9' (ingested: ")
    assert all(k in line for k in experiments) and re.search(r"\(line \d+\)$", line), line
    assert not Experiment & {"experiment_name": "adm_missing"} and len(Dataset()) == datasets


def test_add_under_a_taken_name_shows_the_differences_and_the_ways_on(experiments, tmp_path):
    path = _file(tmp_path, _spec("adm_a", experiments))
    done = run_cli("experiment", "add", str(path), "--set", "trainer.config.max_iter=3")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == "error: experiment 'adm_a' already exists with a different configuration (stored -> given):"
    )
    assert lines[1:-1] == ["  trainer.config.max_iter: 2 -> 3"]
    assert "--set name=" in lines[-1] and "sensorium experiment delete adm_a" in lines[-1]
    again = run_cli("experiment", "add", str(path))  # the same experiment: nothing to do
    assert again.returncode == 0, again.stdout


UNKNOWN = [
    (("scores", "--experiment", "nope_x"), "experiment"),
    (("scores", "--ensemble", "nope_x"), "ensemble"),
    (("predict", "--experiment", "nope_x", "--tier", "test", "--out", "{tmp}/p.npz"), "experiment"),
    (("predict", "--ensemble", "nope_x", "--tier", "test", "--out", "{tmp}/p.npz"), "ensemble"),
    (("report", "--experiment", "nope_x", "--out", "{tmp}/report"), "experiment"),
    (("submit", "--ensemble", "nope_x", "--out", "{tmp}/sub"), "ensemble"),
    (("submit", "--check", "{tmp}/file.csv", "--scan", "nope_x"), "scan"),
    (("populate", "--experiment", "nope_x"), "experiment"),
    (("experiment", "show", "nope_x"), "experiment"),
    (("experiment", "delete", "nope_x", "--yes"), "experiment"),
]


@pytest.mark.parametrize(("argv", "kind"), UNKNOWN, ids=[" ".join(a[:2]) for a, _ in UNKNOWN])
def test_an_unknown_name_is_one_line_and_a_failure(experiments, tmp_path, argv, kind):
    (tmp_path / "file.csv").write_text("trial_indices,image_ids,prediction,neuron_ids\n1,2,[0.5],[1]\n")
    done = run_cli(*(a.format(tmp=tmp_path) for a in argv))
    line = _one_line(done)
    assert done.returncode == 2
    assert re.fullmatch(rf"error: unknown {kind} 'nope_x' \(known: [^()]+\)", line), line
    known = {"experiment": "adm_a", "scan": experiments[0], "ensemble": "adm_a"}[kind]
    assert known in line


def _rows(name: str) -> dict[str, int]:
    """What one experiment reaches: its rows, its models' rows, its ensembles' rows."""
    from schemas.evaluation import Ensemble, EnsembleScore, ModelScore, Prediction
    from schemas.fabrik import Experiment, experiment_models
    from schemas.training import TrainedModel

    models = (TrainedModel & experiment_models(name)).proj()
    return {
        "experiment": len(Experiment & {"experiment_name": name}),
        "members": len(Experiment.Member & {"experiment_name": name}),
        "models": len(models),
        "epochs": len(TrainedModel.Epoch & models),
        "predictions": len(Prediction & models),
        "scores": len(ModelScore & models),
        "ensemble": len(Ensemble & {"ensemble_name": name}),
        "ensemble_scores": len(EnsembleScore & {"ensemble_name": name}),
    }


def test_delete_asks_first_and_removes_only_that_experiment(experiments):
    from schemas.fabrik import Experiment, Model, experiment_models
    from schemas.training import TrainedModel

    kept_before = _rows("adm_b")
    removed_before = _rows("adm_a")
    assert removed_before["models"] == 2 and removed_before["ensemble"] == 1 and removed_before["scores"] > 0
    model_key = (Experiment & {"experiment_name": "adm_a"}).fetch1("model_fn", "model_hash")

    # stdin is not a terminal: the preview is shown, nothing is deleted
    asked = run_cli("experiment", "delete", "adm_a", input="y\n")
    assert asked.returncode == 2 and "Traceback" not in asked.stderr
    lines = asked.stdout.splitlines()
    assert lines[0] == "deleting experiment 'adm_a' will remove:"
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[1:] if line.endswith("row(s)")}
    assert counts["Experiment"] == 1 and counts["Experiment.Member"] == 2
    assert counts["TrainedModel"] == 1  # seed 1 only: seed 2 is adm_b's too
    assert counts["Ensemble"] == 1 and counts["ModelScore"] == removed_before["scores"] // 2
    assert "1 trained model(s) also declared by adm_b" in asked.stdout
    assert lines[-1] == "error: not deleted: stdin is not a terminal to confirm on; add --yes to delete"
    assert _rows("adm_a") == removed_before

    done = run_cli("experiment", "delete", "adm_a", "--yes")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "experiment 'adm_a' deleted", done.stdout
    assert _rows("adm_b") == kept_before, "the other experiment keeps every row, the shared model too"
    assert not Experiment & {"experiment_name": "adm_a"} and not experiment_models("adm_a")
    seed1 = {"seed": 1, "trainer_hash": (Experiment & {"experiment_name": "adm_b"}).fetch1("trainer_hash")}
    assert not TrainedModel & seed1, "adm_a's own model is gone"
    assert Model & dict(zip(("model_fn", "model_hash"), model_key, strict=True)), "a shared config stays"


def test_delete_removes_queued_jobs_and_unshared_configs_but_not_a_held_job(experiments):
    from jobs.queues import jobs_of
    from schemas.fabrik import Experiment, Model, Trainer, experiment_models
    from schemas.training import TrainedModel

    row = (Experiment & {"experiment_name": "adm_c"}).fetch1()
    (key,) = (TrainedModel.key_source & experiment_models("adm_c")).keys()
    jobs = jobs_of(TrainedModel)
    assert (jobs & key).fetch1("status") == "pending"

    jobs.update1({**key, "status": "reserved"})  # as a worker holding it would
    held = run_cli("experiment", "delete", "adm_c", "--yes")
    assert held.returncode == 2 and "a worker is computing 1 job(s)" in _one_line(held)
    assert Experiment & {"experiment_name": "adm_c"}
    jobs.update1({**key, "status": "pending"})

    done = run_cli("experiment", "delete", "adm_c", "--yes")
    assert done.returncode == 0, done.stdout
    assert "job queue entries: TrainedModel 1" in done.stdout and "Trainer " in done.stdout
    assert not jobs & key and not Experiment & {"experiment_name": "adm_c"}
    assert not Trainer & {"trainer_hash": row["trainer_hash"]}, "its own trainer config goes"
    assert Model & {"model_hash": row["model_hash"]}, "the model config adm_b uses stays"
