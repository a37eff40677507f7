"""Ensembles, their scores and contamination flags, and submission files, on a real PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.experiments import parse_experiment
from pipeline.scoring.metrics import single_trial_correlation
from tests.factories import run_cli

REPO = Path(__file__).parents[2]
SCANS: list[str] = []


@pytest.fixture(scope="module")
def ingested(db, session_scans):
    SCANS[:] = session_scans
    return db


def spec(name: str, resplit: bool) -> dict:
    dataset = {"scans": list(SCANS), "batch_size": 32}
    if resplit:
        dataset["split"] = {"n_splits": 2, "seed": 9}
    return {
        "name": name,
        "dataset": {"fn": "sensorium.datasets.static_loaders", "config": dataset},
        "model": {
            "fn": "sensorium.models.stacked_core_full_gauss_readout",
            "config": {"layers": 2, "hidden_channels": 4, "input_kern": 5, "hidden_kern": 3},
        },
        "trainer": {
            "fn": "sensorium.training.standard_trainer",
            "config": {"max_iter": 2, "lr_decay_steps": 1},
        },
        "members": [
            {"seed": 1, "split": 0 if resplit else None},
            {"seed": 2, "split": 1 if resplit else None},
        ],
        "ensemble": {"comment": "test"},
    }


@pytest.fixture(scope="module")
def ensembles(ingested):
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.fabrik import Experiment
    from usecases.experiments import add_experiment

    for name, resplit in (("ens_resplit", True), ("ens_shared", False)):
        add_experiment(parse_experiment(spec(name, resplit)), "tester")
        populate(
            "all", (Experiment & {"experiment_name": name}) * Experiment.Member, settings=bound_settings()
        )
    return ingested


def _scores(name):
    from schemas.evaluation import EnsembleScore

    return {(r["data_key"], r["tier"]): r for r in (EnsembleScore & {"ensemble_name": name}).to_dicts()}


def test_declared_ensembles_are_formed_and_scored(ensembles):
    from schemas.data import Scan
    from schemas.evaluation import Ensemble

    for name in ("ens_resplit", "ens_shared"):
        assert (Ensemble & {"ensemble_name": name}).fetch1("n_members") == 2
        scorable = Scan.TierInfo & {"responses_withheld": False} & [{"data_key": k} for k in SCANS]
        assert len(_scores(name)) == len(scorable)


def test_contamination_flags(ensembles):
    resplit, shared = _scores("ens_resplit"), _scores("ens_shared")
    for (_, tier), row in resplit.items():
        assert row["contaminated"] == (tier in ("train", "validation")), tier
    for (_, tier), row in shared.items():
        assert row["contaminated"] == (tier == "train"), tier
        if tier == "validation":
            assert row["trained_fraction"] == 0.0
    cli_out = run_cli("scores", "--ensemble", "ens_resplit").stdout
    assert "* contaminated" in cli_out


def test_single_member_ensemble_scores_exactly_as_the_member(ensembles):
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.evaluation import EnsembleScore, ModelScore, add_ensemble
    from schemas.fabrik import Experiment
    from schemas.training import TrainedModel

    member = (TrainedModel & ((Experiment & {"experiment_name": "ens_shared"}) * Experiment.Member)).keys()[0]
    add_ensemble("solo", [member])
    populate("cpu", settings=bound_settings())
    for r in (EnsembleScore & {"ensemble_name": "solo"}).to_dicts():
        m = (ModelScore & member & {"data_key": r["data_key"], "tier": r["tier"]}).fetch1()
        for metric in ("single_trial_correlation", "correlation_to_average", "feve"):
            assert r[metric] == m[metric], metric


@pytest.mark.slow
def test_ensemble_score_recomputed_from_exported_predictions(ensembles, tmp_path):
    out = tmp_path / "ens.npz"
    assert run_cli("predict", "--ensemble", "ens_shared", "--tier", "test", "--out", str(out)).returncode == 0
    members = []
    for seed in (1, 2):
        path = tmp_path / f"m{seed}.npz"
        proc = run_cli(
            "predict", "--experiment", "ens_shared", "--seed", str(seed), "--tier", "test", "--out", str(path)
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        members.append(np.load(path))
    ens = np.load(out)
    scores = _scores("ens_shared")
    checked = 0
    for k in SCANS:
        if (k, "test") not in scores:
            continue  # withheld competition tier
        mean = (members[0][f"{k}/predictions"].astype(np.float64) + members[1][f"{k}/predictions"]) / 2
        np.testing.assert_allclose(ens[f"{k}/predictions"], mean, rtol=1e-6)
        recomputed = single_trial_correlation(ens[f"{k}/targets"], mean).mean()
        assert recomputed == pytest.approx(scores[(k, "test")]["single_trial_correlation"], abs=1e-6)
        checked += 1
    assert checked >= 1


@pytest.mark.slow
def test_submission_for_competition_recording(ensembles, tmp_path):
    from schemas.data import Scan
    from schemas.evaluation import Submission

    proc = run_cli("submit", "--ensemble", "ens_shared", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    competition = (Scan & {"trial_idx_hashed": True}).fetch1("data_key")
    files = {p.name: p for p in tmp_path.glob("*.csv")}
    live = files[f"{competition}_submission_file_live_test.csv"]
    final = files[f"{competition}_submission_file_final_test.csv"]
    for path, tier in ((live, "test"), (final, "final_test")):
        # fetch the checksum only: fetching the attachment would download the file into the working directory
        stored = (Submission & {"ensemble_name": "ens_shared", "data_key": competition, "tier": tier}).fetch1(
            "checksum"
        )
        assert stored == hashlib.sha256(path.read_bytes()).hexdigest()
        check = run_cli("submit", "--check", str(path), "--scan", competition)
        assert check.returncode == 0 and "valid" in check.stdout, check.stdout
    # a broken copy is caught by the same validator, through the CLI
    lines = live.read_text().splitlines()
    broken = tmp_path / "broken_submission_file_live_test.csv"
    broken.write_text("\n".join(lines[:-1]) + "\n")
    check = run_cli("submit", "--check", str(broken), "--scan", competition)
    assert check.returncode == 1 and "missing" in check.stdout
