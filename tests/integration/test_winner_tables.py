"""Regressor tables and the modulated model populated from tables (real PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.experiments import parse_experiment

SCANS: list[str] = []


@pytest.fixture(scope="module")
def ingested(db, session_scans):
    SCANS[:] = session_scans
    return db


def tiny_winner(name: str) -> dict:
    return {
        "name": name,
        "dataset": {
            "fn": "sensorium.datasets.static_loaders",
            "config": {
                "scans": list(SCANS),
                "batch_size": 32,
                "behavior_normalization": "minmax01",
                "regressors": {"history": {"lags": [1, 2, 5]}, "state": {"n_components": 4}, "rank": True},
                "split": {"n_splits": 3, "seed": 5},
            },
        },
        "model": {
            "fn": "sensorium.models.modulated_stacked_core_full_gauss_readout",
            "config": {
                "layers": 2,
                "hidden_channels": 4,
                "input_kern": 5,
                "hidden_kern": 3,
                "modulator_params": {"nr_history": 3, "nr_behav_state": 4},
            },
        },
        "trainer": {
            "fn": "sensorium.training.standard_trainer",
            "config": {"max_iter": 2, "lr_decay_steps": 1},
        },
        "members": [{"seed": 1, "split": 0}, {"seed": 2, "split": 1}],
    }


def test_winner_populates_from_tables(ingested):
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.data import Scan
    from schemas.evaluation import ModelScore
    from schemas.fabrik import Experiment
    from schemas.regressors import BehaviorNormalization, History, NetworkState, SplitSet
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    add_experiment(parse_experiment(tiny_winner("tiny_winner")), "tester")
    restriction = (Experiment & {"experiment_name": "tiny_winner"}) * Experiment.Member
    results = populate("all", restriction, settings=bound_settings())
    assert results["TrainedModel"]["success_count"] == 2, results
    for k in SCANS:
        key = {"data_key": k}
        assert len(BehaviorNormalization & key) == 2  # std and minmax01
        h = (History & key).fetch1()
        T, N = (Scan & key).fetch1("n_trials", "n_neurons")
        assert np.asarray(h["prefix"]).shape == (h["n_known"] + 1, N)
        state = np.asarray((NetworkState & key).fetch1("state"))
        assert state.shape == (T, 4) and np.all(np.isfinite(state)) and np.all(state >= 0)
        original = np.array([t["tier"] for t in (Scan.Trial & key).to_dicts(order_by="trial_id")])
        for split in (SplitSet.Split & key).to_dicts():
            tiers = np.asarray(split["tiers"]).astype(str)
            held_out = np.isin(original, ["test", "final_test"])
            assert np.array_equal(tiers[held_out], original[held_out]), "test tiers never move"
            assert split["n_train"] == int((original == "train").sum())
            assert split["n_validation"] == int((original == "validation").sum())
    members = (TrainedModel & restriction).to_dicts()
    assert len(members) == 2 and len({m["dataset_hash"] for m in members}) == 2  # one dataset per split
    assert ModelScore & restriction


def test_missing_regressors_give_a_clear_error(ingested):
    from schemas.regressors import fetch_regressors

    config = tiny_winner("x")["dataset"]["config"]
    config["regressors"]["history"] = {"lags": [1, 3]}  # never computed
    with pytest.raises(LookupError, match="run `sensorium populate`"):
        fetch_regressors(SCANS[0], config)


def test_compute_regressors_equals_the_tables(ingested):
    """pipeline.regressors.compute (no database; the benchmarks use it) gives what the tables store."""
    from pipeline.configs import DatasetConfig
    from pipeline.regressors.compute import compute_regressors
    from schemas import regressors as r
    from schemas.data import Scan
    from usecases.experiments import register_dataset_regressors

    config = {**tiny_winner("x")["dataset"]["config"], "split": {"n_splits": 3, "seed": 5, "index": 1}}
    register_dataset_regressors(config)
    for table in (r.BehaviorNormalization, r.History, r.NetworkState, r.SplitSet):
        table.populate(display_progress=False)
    for k in SCANS:
        stored = r.fetch_regressors(k, config)
        fresh = compute_regressors(Scan().fetch_recording({"data_key": k}), DatasetConfig(**config))
        assert sorted(fresh) == sorted(stored)
        for name in ("behavior", "state", "rank_id"):
            np.testing.assert_array_equal(np.asarray(fresh[name]), np.asarray(stored[name]), err_msg=name)
        for got, want in zip(fresh["history"], stored["history"], strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        np.testing.assert_array_equal(
            np.asarray(fresh["tiers"]).astype(str), np.asarray(stored["tiers"]).astype(str)
        )
    # re-splits with a validation share: the table stores the new counts, and the database-free code agrees
    shared = {**config, "split": {**config["split"], "validation_share": 0.05}}
    register_dataset_regressors(shared)
    r.SplitSet.populate(display_progress=False)
    for k in SCANS:
        stored = np.asarray(r.fetch_regressors(k, shared)["tiers"]).astype(str)
        fresh = compute_regressors(Scan().fetch_recording({"data_key": k}), DatasetConfig(**shared))["tiers"]
        np.testing.assert_array_equal(np.asarray(fresh).astype(str), stored)
        known = int(np.isin(stored, ["train", "validation"]).sum())
        assert (stored == "validation").sum() == max(round(0.05 * known), 2)


def test_exact_trial_order_tables_record_their_rule_and_feed_the_regressors(ingested):
    """rule exact: ties broken by numeric trial_idx (the pre-training scan), recorded per scan; the
    history, state and rank of such a dataset come from that order (and equal the database-free code)."""
    from pipeline.configs import DatasetConfig
    from pipeline.regressors.compute import compute_regressors
    from schemas import regressors as r
    from schemas.data import ExactTrialOrder, Scan, TrialOrder
    from usecases.experiments import register_dataset_regressors

    base = tiny_winner("x")["dataset"]["config"]
    regs = {
        "history": {"lags": [1, 2, 5], "trial_order": "exact"},
        "state": {"n_components": 4, "trial_order": "exact"},
        "rank": True,
        "rank_order": "exact",
    }
    config = {**base, "regressors": regs, "split": None}
    register_dataset_regressors(config)
    for table in (ExactTrialOrder, r.BehaviorNormalization, r.History, r.NetworkState):
        table.populate(display_progress=False)
    rules = {row["data_key"]: row for row in ExactTrialOrder.to_dicts()}
    numeric = {row["data_key"]: row["trial_idx_numeric"] for row in TrialOrder.to_dicts()}
    for k in SCANS:
        assert rules[k]["rule"] == ("timestamp+trial_idx" if numeric[k] else "timestamp (trial_idx hashed)")
        if not numeric[k]:
            assert rules[k]["n_reordered"] == 0
        stored = r.fetch_regressors(k, config)
        fresh = compute_regressors(Scan().fetch_recording({"data_key": k}), DatasetConfig(**config))
        for name in ("state", "rank_id"):
            np.testing.assert_array_equal(np.asarray(fresh[name]), np.asarray(stored[name]), err_msg=name)
        np.testing.assert_array_equal(np.asarray(fresh["history"][0]), np.asarray(stored["history"][0]))
    pre = next(k for k in SCANS if numeric[k])
    # what the stable timestamp sort got wrong is exactly what the exact rule reorders
    assert rules[pre]["n_reordered"] == (TrialOrder & {"data_key": pre}).fetch1("n_rank_mismatch")
    # the exact order is the planted presentation order of the synthetic recording
    from schemas.data import GroundTruth

    truth = np.asarray((GroundTruth & {"data_key": pre}).fetch1("time_rank"))
    exact = np.asarray(r.fetch_regressors(pre, config)["rank_id"])
    np.testing.assert_array_equal(exact, truth)
