"""Training through populate(): tiny real models on small synthetic recordings, real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.configs import ConfigError
from pipeline.experiments import parse_experiment
from tests import factories
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]
WORKER_TIMEOUT_S = float(os.environ.get("SENSORIUM_WORKER_TIMEOUT_S", "3"))

SCANS: list[str] = []  # the two session recordings, set by the `ingested` fixture


def tiny_experiment(name: str, seeds=(1,), **trainer) -> dict:
    """A tiny model on the two small session recordings (other tests ingest more scans)."""
    return factories.tiny_experiment(name, seeds, scans=SCANS or "all", **trainer)


@pytest.fixture(scope="module")
def ingested(db, session_scans):
    SCANS[:] = session_scans
    return db


def _restriction(name):
    from schemas.fabrik import Experiment

    return (Experiment & {"experiment_name": name}) * Experiment.Member


def test_tiny_model_trains_through_populate(ingested):
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.data import Scan
    from schemas.evaluation import ModelScore, OracleScore, Prediction
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    add_experiment(parse_experiment(tiny_experiment("tiny", max_iter=4)), "tester")
    results = populate("all", _restriction("tiny"), settings=bound_settings())
    assert results["TrainedModel"]["success_count"] == 1
    key = (TrainedModel & _restriction("tiny")).keys()[0]
    row = (TrainedModel & key).fetch1()
    assert row["epochs"] == len(TrainedModel.Epoch & key) >= 1
    for column in ("code_version", "python_version", "torch_version", "numpy_version", "host", "device"):
        assert row[column], column
    assert row["finished_at"] >= row["started_at"] and row["duration_s"] > 0
    stored = {r["data_key"]: r["checksum"] for r in (Scan & [{"data_key": k} for k in SCANS]).to_dicts()}
    assert row["data_checksums"] == stored
    assert {r["data_key"]: r["checksum"] for r in (TrainedModel.UsedScan & key).to_dicts()} == stored
    state = (TrainedModel.Checkpoint & key).fetch1("state_dict")
    assert "core.features.layer0.conv.weight" in state

    epochs = (TrainedModel.Epoch & key).to_dicts(order_by="epoch")
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"], "the training loss goes down"
    assert all(np.isfinite(e["val_corr"]) for e in epochs)

    for r in (Prediction.PerScan & key).to_dicts():
        T, N = (Scan & {"data_key": r["data_key"]}).fetch1("n_trials", "n_neurons")
        assert np.asarray(r["predictions"]).shape == (T, N)
    scores = (ModelScore & key).to_dicts()
    scorable = Scan.TierInfo & {"responses_withheld": False} & [{"data_key": k} for k in SCANS]
    assert len(scores) == len(scorable)
    assert all(np.isfinite(s["single_trial_correlation"]) for s in scores)
    assert len(ModelScore.Neuron & key) == sum(
        (Scan & {"data_key": s["data_key"]}).fetch1("n_neurons") for s in scores
    )
    # withheld competition tiers are not scored; the oracle is scored where truth exists
    assert not (ModelScore & key & (Scan.TierInfo & {"responses_withheld": True}).proj())
    from schemas.data import GroundTruth

    assert len(OracleScore & [{"data_key": k} for k in SCANS]) == len(scorable & GroundTruth.proj())
    oracle = {(o["data_key"], o["tier"]): o["single_trial_correlation"] for o in OracleScore.to_dicts()}
    assert all(v > 0.3 for v in oracle.values()), oracle


def test_same_config_seed_and_data_give_identical_scores(ingested):
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.evaluation import ModelScore
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    add_experiment(parse_experiment(tiny_experiment("repro", seeds=(7,))), "tester")
    populate("all", _restriction("repro"), settings=bound_settings())
    key = (TrainedModel & _restriction("repro")).keys()[0]
    first = sorted(
        ((s["data_key"], s["tier"]), s["single_trial_correlation"]) for s in (ModelScore & key).to_dicts()
    )
    first_state = (TrainedModel.Checkpoint & key).fetch1("state_dict")
    (TrainedModel & key).delete()  # cascades to Prediction and ModelScore
    assert not ModelScore & key
    populate("all", _restriction("repro"), settings=bound_settings())
    second = sorted(
        ((s["data_key"], s["tier"]), s["single_trial_correlation"]) for s in (ModelScore & key).to_dicts()
    )
    second_state = (TrainedModel.Checkpoint & key).fetch1("state_dict")
    assert first == second
    assert all(np.array_equal(first_state[k], second_state[k]) for k in first_state)


def test_diverging_training_leaves_error_and_no_rows(ingested):
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    add_experiment(parse_experiment(tiny_experiment("diverge", lr_init=1e12, max_iter=3)), "tester")
    results = populate(
        "gpu", _restriction("diverge"), reserve_jobs=True, suppress_errors=True, settings=bound_settings()
    )
    assert results["TrainedModel"]["success_count"] == 0
    assert len(results["TrainedModel"]["error_list"]) == 1
    keys = (TrainedModel.key_source & _restriction("diverge")).keys()
    errors = (TrainedModel.jobs.errors & keys[0]).to_dicts()
    assert len(errors) == 1
    assert "TrainingDivergedError" in errors[0]["error_message"]
    assert not (TrainedModel & keys[0])
    for part in (TrainedModel.Epoch, TrainedModel.Checkpoint, TrainedModel.UsedScan):
        assert not (part & keys[0])


def test_unknown_key_and_wrong_type_are_refused():
    bad = tiny_experiment("bad")
    bad["model"]["config"]["hidden_chanels"] = 8
    with pytest.raises(ConfigError, match=r"model\.config\.hidden_chanels: unknown key"):
        parse_experiment(bad)
    bad = tiny_experiment("bad")
    bad["trainer"]["config"]["max_iter"] = "many"
    with pytest.raises(ConfigError, match=r"trainer\.config\.max_iter"):
        parse_experiment(bad)
    bad = tiny_experiment("bad")
    bad["model"]["fn"] = "sensorium.models.nope"
    with pytest.raises(ConfigError, match="unknown builder"):
        parse_experiment(bad)


@pytest.mark.slow
def test_cli_experiment_add_with_set_and_errors(ingested, tmp_path):
    import yaml

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment("cli-exp")))
    env = dict(os.environ)
    run = cli_argv("experiment", "add", str(path))
    out = subprocess.run(
        [*run, "--set", "model.config.hidden_chanels=3"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 2 and "model.config.hidden_chanels: unknown key" in out.stdout
    out = subprocess.run(
        [*run, "--set", "trainer.config.max_iter=2"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from schemas.fabrik import Experiment, Trainer

    trainer = (Trainer & (Experiment & {"experiment_name": "cli-exp"})).fetch1("trainer_config")
    assert trainer["max_iter"] == 2
    out = subprocess.run(
        [*run, "--set", "trainer.config.max_iter=5"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 2 and "already exists" in out.stdout


@pytest.mark.slow
def test_killed_populate_is_finished_by_the_next_call(ingested):
    """Kill a worker mid-training; once its heartbeat is stale the next populate() finishes its job."""
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    spec = tiny_experiment("killed", seeds=(21, 22), max_iter=25, patience=25)
    add_experiment(parse_experiment(spec), "tester")
    worker = subprocess.Popen(
        cli_argv(
            "populate",
            "--queue",
            "gpu",
            "--experiment",
            "killed",
            "--reserve-jobs",
        ),
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wanted = (TrainedModel.key_source & _restriction("killed")).keys()

    def reserved() -> list[dict]:
        # the job table has its own lineage: restrict by plain key dicts
        return [k for k in wanted if TrainedModel.jobs.reserved & k]

    deadline = time.time() + 120
    while time.time() < deadline and not reserved():
        time.sleep(0.2)
    assert reserved(), "the worker never reserved a job"
    time.sleep(1.0)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    done_before = len(TrainedModel & _restriction("killed"))
    assert done_before < 2
    assert reserved(), "the killed worker's reservation is still there"
    time.sleep(WORKER_TIMEOUT_S + 0.5)  # its heartbeat goes stale: then the reservation is dead
    results = populate("gpu", _restriction("killed"), reserve_jobs=True, settings=bound_settings())
    assert len(TrainedModel & _restriction("killed")) == 2
    assert results["TrainedModel"]["success_count"] == 2 - done_before
    assert not reserved()


def test_predict_export(ingested, tmp_path):
    from schemas.data import Scan
    from schemas.evaluation import ModelScore

    out = tmp_path / "pred.npz"
    proc = subprocess.run(
        cli_argv(
            "predict",
            "--experiment",
            "tiny",
            "--tier",
            "test",
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = np.load(out)
    keys = {k.split("/")[0] for k in data.files}
    assert keys, data.files
    from pipeline.scoring.metrics import single_trial_correlation

    scored = 0
    for k in keys:
        pred, target = data[f"{k}/predictions"], data[f"{k}/targets"]
        assert pred.shape == target.shape == (len(data[f"{k}/trial_id"]), len(data[f"{k}/neuron_ids"]))
        unit_ids = [n["unit_id"] for n in (Scan.Neuron & {"data_key": k}).to_dicts(order_by="neuron_idx")]
        assert data[f"{k}/neuron_ids"].tolist() == unit_ids
        if (Scan.TierInfo & {"data_key": k, "tier": "test"}).fetch1("responses_withheld"):
            assert np.all(target == 0)  # competition tier: exported for submissions, never scored
            continue
        stored = (ModelScore & _restriction("tiny") & {"data_key": k, "tier": "test"}).fetch1(
            "single_trial_correlation"
        )
        assert np.isclose(single_trial_correlation(target, pred).mean(), stored)
        scored += 1
    assert scored >= 1


def test_scores_belong_to_their_experiment_only(ingested):
    """Two experiments sharing dataset and seed but not the model: each sees only its own scores."""
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from usecases.experiments import add_experiment
    from usecases.queries import score_rows as _score_rows

    other = tiny_experiment("tiny_wide", max_iter=1)
    other["model"]["config"]["hidden_channels"] = 6
    same_data = tiny_experiment("tiny_narrow", max_iter=1)
    for spec in (other, same_data):
        add_experiment(parse_experiment(spec), "tester")
        populate("all", _restriction(spec["name"]), settings=bound_settings())
    from schemas.data import Scan

    wide, narrow = _score_rows("tiny_wide"), _score_rows("tiny_narrow")
    scorable = Scan.TierInfo & {"responses_withheld": False} & [{"data_key": k} for k in SCANS]
    assert len(wide) == len(narrow) == len(scorable), (
        "one row per scan and tier, not one per model sharing data"
    )
    assert {r["model"] for r in wide} == {"tiny_wide"}
    assert [r["single_trial_correlation"] for r in wide] != [r["single_trial_correlation"] for r in narrow]


def test_only_declared_combinations_are_trained(ingested):
    """key_source pairs each experiment's model and trainer only with its own datasets and seeds, and
    leaves out import-only experiments (their weights come from `sensorium import-checkpoint`)."""
    from schemas.fabrik import experiment_models, trainable_experiments
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    pk = TrainedModel.primary_key

    def keyset(rows):
        return {tuple(r[k] for k in pk) for r in rows}

    spec = tiny_experiment("tiny_import_only", seeds=(77,))
    add_experiment(parse_experiment(dict(spec, import_only=True)), "tester")
    assert "tiny_import_only" not in trainable_experiments()
    declared = keyset(experiment_models(trainable_experiments()).to_dicts())
    assert len(declared) >= 4  # several experiments with different models and trainers exist by now
    assert keyset(TrainedModel.key_source.to_dicts()) == declared
    assert not keyset(experiment_models("tiny_import_only").to_dicts()) & declared


def test_scans_all_is_resolved_when_the_experiment_is_added(ingested):
    from schemas.data import Scan
    from schemas.fabrik import Dataset, Experiment
    from usecases.experiments import add_experiment

    spec = tiny_experiment("all_scans")
    spec["dataset"]["config"]["scans"] = "all"
    add_experiment(parse_experiment(spec), "tester")
    member = (Experiment.Member & {"experiment_name": "all_scans"}).fetch1()
    config = (Dataset & member).fetch1("dataset_config")
    assert config["scans"] == sorted(Scan.proj().to_arrays("data_key").tolist())
