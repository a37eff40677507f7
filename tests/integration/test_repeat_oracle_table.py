"""The leave-one-out oracle (``RepeatOracle``, issue 29) on a scan without ground truth.

A small synthetic recording is ingested WITHOUT its ``.truth.npz`` sidecar, so it looks like a real scan:
no ``GroundTruth``, no planted ``OracleScore``. Populating must still give the leave-one-out oracle of
its repeated test images, equal to the metric computed from the recording's files, and ``sensorium
scores`` must show it beside a tiny model's score with no planted oracle.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data.format import read_recording
from pipeline.data.precision import response_precision
from pipeline.data.synth import SynthConfig, truth_path, write_synthetic
from pipeline.experiments import parse_experiment
from pipeline.scoring.metrics import leave_one_out_score
from tests.factories import long_experiment, run_cli

EXPERIMENT = "loo_tiny"
# data key 90000-291-1 (no other test's); 10 test images shown 3 times each
CONFIG = SynthConfig(n_neurons=12, n_trials=150, n_repeats=3, test_fraction=0.2, seed=290)


@pytest.fixture(scope="module")
def truthless(db, tmp_path_factory):
    """(data key, recording folder) of a scan ingested without its ground truth, populated."""
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.data import GroundTruth
    from schemas.fabrik import Experiment
    from usecases.experiments import add_experiment
    from usecases.ingest import ingest

    (folder,) = write_synthetic(tmp_path_factory.mktemp("truthless"), 1, CONFIG)
    truth_path(folder).unlink()
    folder.with_name(folder.name + ".zip").unlink()
    result = ingest(folder, cache_dir=db.cache_dir, progress=False)
    assert result.status == "inserted"
    assert not GroundTruth & {"data_key": result.data_key}, "ingested as a real scan: no ground truth"
    add_experiment(parse_experiment(long_experiment(EXPERIMENT, [result.data_key], max_iter=2)), "tester")
    populate(
        "all", (Experiment & {"experiment_name": EXPERIMENT}) * Experiment.Member, settings=bound_settings()
    )
    return result.data_key, folder


def _expected(folder) -> dict[str, object]:
    """The metric computed from the recording's files, per tier with repeated images."""
    rec = read_recording(folder, progress=False)
    responses = rec.trial_variable("responses").astype(np.float32)
    p = response_precision(np.asarray(rec.statistics["responses"]["all"]["std"]))
    targets = responses * p[None]
    tiers = np.asarray(rec.trials["tiers"]).astype(str)
    image_ids = np.asarray(rec.trials["frame_image_id"])
    out = {}
    for tier in np.unique(tiers):
        mask = tiers == tier
        if len(np.unique(image_ids[mask])) < mask.sum():
            out[str(tier)] = leave_one_out_score(targets[mask], image_ids[mask])
    return out


def test_the_table_holds_the_leave_one_out_oracle_of_every_tier_with_repeats(truthless):
    from schemas.data import Scan
    from schemas.evaluation import OracleScore, RepeatOracle

    data_key, folder = truthless
    key = {"data_key": data_key}
    expected = _expected(folder)
    assert sorted(expected) == ["test"], "the synthetic scan repeats its test images only"
    assert sorted(r["tier"] for r in (RepeatOracle & key).to_dicts()) == ["test"]
    assert not OracleScore & key, "no planted oracle without ground truth"
    assert len(RepeatOracle.key_source - RepeatOracle.proj()) == 0, "nothing left to populate"

    score = expected["test"]
    row = (RepeatOracle & key & {"tier": "test"}).fetch1()
    info = (Scan.TierInfo & key & {"tier": "test"}).fetch1()
    assert row["n_trials"] == score.n_trials == info["n_trials"] and row["n_images"] == info["n_images"]
    assert row["single_trial_correlation"] == pytest.approx(score.correlation, abs=1e-9)
    assert row["fev"] == pytest.approx(score.fev, abs=1e-9)
    assert row["n_neurons_fev"] == score.n_neurons_fev
    # the synthetic image drive is weak beside behaviour, state and gain: a small value, but a number
    assert -1 <= row["single_trial_correlation"] <= 1 and (row["n_trials"], row["n_images"]) == (30, 10)

    neurons = (RepeatOracle.Neuron & key & {"tier": "test"}).to_dicts(order_by="neuron_idx")
    assert [n["neuron_idx"] for n in neurons] == list(range(CONFIG.n_neurons))
    np.testing.assert_allclose([n["correlation"] for n in neurons], score.per_neuron_correlation, atol=1e-9)
    np.testing.assert_allclose([n["fev"] for n in neurons], score.per_neuron_fev, atol=1e-9)


def test_scores_show_the_leave_one_out_oracle_and_no_planted_one(truthless):
    from schemas.evaluation import RepeatOracle

    data_key, _ = truthless
    shown = run_cli("scores", "--experiment", EXPERIMENT, "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = {r["tier"]: r for r in json.loads(shown.stdout) if r["data_key"] == data_key}
    assert sorted(rows) == ["test", "train", "validation"]
    stored = (RepeatOracle & {"data_key": data_key, "tier": "test"}).fetch1()
    test = rows["test"]
    assert test["loo_oracle_single_trial_correlation"] == pytest.approx(stored["single_trial_correlation"])
    assert test["loo_oracle_n_images"] == stored["n_images"]
    assert test["oracle_single_trial_correlation"] is None and test["oracle_feve"] is None
    for tier in ("train", "validation"):  # every image shown once: no leave-one-out oracle either
        assert rows[tier]["loo_oracle_single_trial_correlation"] is None

    table = run_cli("scores", "--experiment", EXPERIMENT)
    assert table.returncode == 0, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[5:9] == ["corr", "oracle", "ratio", "LOO"]
    (line,) = [s for s in lines if data_key in s and " test " in s]
    columns = line.split()  # the member is two words: "seed 1"
    assert columns[1:3] == ["seed", "1"] and columns[7:9] == ["-", "-"], "no planted oracle, no ratio"
    assert columns[9] == f"{stored['single_trial_correlation']:.3f}"
    assert any(s.startswith("LOO: leave-one-out oracle") for s in lines)


def test_the_report_falls_back_to_the_leave_one_out_oracle(truthless):
    from usecases.report import gather

    data_key, _ = truthless
    data = gather([EXPERIMENT])
    (bar,) = [b for b in data.bars if b.data_key == data_key]
    assert bar.oracle is None and bar.repeat_oracle is not None and bar.repeat_oracle > 0
    (scatter,) = [s for s in data.scatters if s.data_key == data_key]
    assert scatter.oracle is None and scatter.repeat_oracle is not None
    assert scatter.repeat_oracle.shape == scatter.model.shape == (CONFIG.n_neurons,)


def test_a_worker_may_insert_into_the_new_tables_by_the_class_rule(truthless, db):
    """The grants are derived from the classes: a computed table and its part get the worker's INSERT,
    and its job table the worker's INSERT, UPDATE, DELETE (tests/integration/test_roles.py applies them)."""
    import schemas
    from jobs.queues import QUEUES, jobs_of
    from schemas.evaluation import OracleScore, RepeatOracle
    from usecases.roles import roles_sql

    modules = schemas.modules()
    names = [f"{db.db_prefix}{m.__name__.split('.')[-1]}" for m in modules]
    sql = roles_sql(db.db_prefix, "postgres", names, modules)
    for table in (RepeatOracle, RepeatOracle.Neuron):
        assert f'GRANT INSERT ON {table.full_table_name} TO "sensorium_worker"' in sql
    jobs = jobs_of(RepeatOracle).full_table_name
    assert f'GRANT INSERT, UPDATE, DELETE ON {jobs} TO "sensorium_worker"' in sql
    for queue in ("all", "cpu"):
        tables = QUEUES[queue]
        assert tables.index(RepeatOracle) == tables.index(OracleScore) + 1, queue
    assert RepeatOracle not in QUEUES["gpu"]
