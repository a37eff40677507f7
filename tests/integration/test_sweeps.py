"""Sweeps through the tables: trials are experiments trained by populate, scored on validation, told to
an Optuna study stored in the same PostgreSQL; median pruning stops a clearly worse trial."""

from __future__ import annotations

import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from pipeline.sweeps.spec import parse_sweep
from tests.factories import cli_argv, tiny_experiment

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def scans(db, session_scans):
    return session_scans


def _sweep(name: str, scans: list[str], **changes) -> dict:
    base = tiny_experiment("base", scans=scans, max_iter=3)
    data = {"name": name, "base": base, "sampler": "grid", "budget": 2, "parallel": 1}
    data.update(changes)
    return data


def _train(name: str) -> dict:
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from usecases.experiments import experiment_restriction
    from usecases.sweeps import sweep_experiments

    return populate("gpu", experiment_restriction(sweep_experiments(name)), settings=bound_settings())


@pytest.mark.slow
def test_grid_sweep_trains_trials_through_populate_and_reports(scans, tmp_path):
    from optuna.trial import TrialState

    from schemas.fabrik import Experiment
    from schemas.sweeps import Sweep, study
    from schemas.training import TrainedModel
    from usecases.sweeps import add_sweep, advance, trial_states

    spec = parse_sweep(_sweep("grid", scans, space={"model.config.hidden_channels": [2, 4]}))
    counts = add_sweep(spec, "tester")
    assert counts == {"told": 0, "asked": 1, "in_flight": 1, "finished": 0, "budget": 2}  # parallel: 1
    assert add_sweep(spec, "tester")["asked"] == 0, "adding the same sweep again asks for nothing"
    first = (Sweep.Trial & {"sweep_name": "grid"}).fetch1()
    assert (Experiment & {"experiment_name": first["experiment_name"]}).fetch1("experiment_spec")["model"][
        "config"
    ]["hidden_channels"] == first["params"]["model.config.hidden_channels"]

    assert _train("grid")["TrainedModel"]["success_count"] == 1
    assert advance("grid", "tester") == {"told": 1, "asked": 1, "in_flight": 1, "finished": 1, "budget": 2}
    _train("grid")
    assert advance("grid", "tester")["finished"] == 2
    assert advance("grid", "tester") == {"told": 0, "asked": 0, "in_flight": 0, "finished": 2, "budget": 2}

    trials = trial_states("grid")
    assert {t.params["model.config.hidden_channels"] for t in trials} == {2, 4}
    _, st = study("grid")
    for t in trials:
        # the score is the validation correlation early stopping selected on, and the study holds it
        best = (TrainedModel & _members(t.experiment)).fetch1("best_val_corr")
        assert t.status == "complete" and t.score == pytest.approx(best)
        frozen = st.trials[t.number]
        assert frozen.state == TrialState.COMPLETE and frozen.value == pytest.approx(best)

    figure = tmp_path / "grid.png"
    proc = subprocess.run(
        cli_argv("sweep", "report", "grid", "--figure", str(figure)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ranked = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(ranked) == 2 and "complete" in ranked[0] and "model.config.hidden_channels=" in ranked[0]
    best_first = max(trials, key=lambda t: t.score)
    assert best_first.experiment in ranked[0]
    assert matplotlib.image.imread(figure).shape[0] > 100


def _members(experiment: str):
    from usecases.sweeps import member_keys

    return member_keys(experiment)


def test_median_pruning_stops_the_clearly_worse_trial(scans):
    from optuna.trial import TrialState

    from schemas.sweeps import study
    from schemas.training import TrainedModel
    from usecases.sweeps import advance, trial_states

    # seed 1: Optuna's grid order is lr 0.02 first, then 1e-9 (asserted below, so that an Optuna change
    # fails here instead of leaving nothing to prune); patience large, so the good trial runs all epochs
    data = _sweep(
        "pruned",
        scans,
        seed=1,
        space={"trainer.config.lr_init": [0.02, 1e-9]},
        pruning={"warmup_epochs": 0, "startup_trials": 1},
    )
    data["base"]["trainer"]["config"].update(max_iter=4, patience=10)
    from usecases.sweeps import add_sweep

    add_sweep(parse_sweep(data), "tester")
    _train("pruned")
    advance("pruned", "tester")
    _train("pruned")
    advance("pruned", "tester")
    good, bad = trial_states("pruned")
    assert good.params["trainer.config.lr_init"] == 0.02 and bad.params["trainer.config.lr_init"] == 1e-9
    assert good.status == "complete" and good.epochs == 4
    assert bad.status == "pruned" and bad.pruned_at == 1 and bad.epochs == 1
    assert len(TrainedModel.Epoch & _members(bad.experiment)) == 1, "the pruned run stopped after epoch 1"
    _, st = study("pruned")
    assert st.trials[bad.number].state == TrialState.PRUNED
    assert st.trials[good.number].intermediate_values.keys() == {1, 2, 3, 4}


def test_unknown_sweep_is_a_one_line_error(scans):
    proc = subprocess.run(
        cli_argv("sweep", "report", "nope"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout.strip() == (
        "error: no sweep named 'nope'; add it with `sensorium sweep add FILE`"
    )
