"""Sweep files: validation with one-line errors, trial experiments, Optuna distributions and samplers."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from pipeline.configs import ConfigError
from pipeline.sweeps.spec import decode_params, load_sweep, parse_sweep, trial_experiment
from pipeline.sweeps.study import ask, distributions, sampler, tell

EXPERIMENTS = Path(__file__).parents[2] / "experiments"
BASE = yaml.safe_load((EXPERIMENTS / "demo.yaml").read_text())


def _sweep(**changes) -> dict:
    data = {
        "name": "s",
        "base": BASE,
        "sampler": "random",
        "budget": 4,
        "space": {
            "model.config.hidden_channels": [8, 16],
            "trainer.config.lr_init": {"log_uniform": [0.001, 0.02]},
            "dataset.config.batch_size": {"int": [16, 64]},
        },
    }
    data.update(changes)
    return data


def test_a_trial_is_the_base_with_the_sampled_values():
    spec = parse_sweep(_sweep())
    params = {
        "model.config.hidden_channels": 8,
        "trainer.config.lr_init": 0.004,
        "dataset.config.batch_size": 20,
    }
    exp = trial_experiment(spec, 7, params)
    assert exp.name == "s.t007" and exp.seeds == BASE["seeds"]
    assert (
        exp.model.config["hidden_channels"] == 8
        and exp.model.config["layers"] == BASE["model"]["config"]["layers"]
    )
    assert exp.trainer.config["lr_init"] == 0.004 and exp.dataset.config["batch_size"] == 20
    dists = distributions(spec)
    assert dists["trainer.config.lr_init"].log and isinstance(
        dists["dataset.config.batch_size"], optuna.distributions.IntDistribution
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"space": {"model.config.hidden_chanels": [8]}}, "hidden_chanels: unknown key"),
        ({"space": {"trainer.config.lr_init": {"log_uniform": [0, 0.1]}}}, "positive low bound"),
        (
            {"space": {"trainer.config.lr_init": {"uniform": [-1.0, 0.1]}}},
            "lr_init: Input should be greater than 0",
        ),
        ({"space": {"trainer.config.lr_init": {"normal": [0, 1]}}}, "expected a list of values or one of"),
        ({"space": {"seeds": [1, 2]}}, "starts with dataset., model. or trainer."),
        ({"sampler": "grid"}, "the grid sampler needs lists of values"),
        (
            {"sampler": "grid", "budget": 3, "space": {"model.config.layers": [2, 3]}},
            "above the grid's 2 points",
        ),
        ({"budget": 0}, "budget"),
        ({"samplr": "tpe"}, "samplr: unknown key"),
        ({"base": "missing.yaml"}, "base: .*missing.yaml: cannot read: No such file"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"seed": 2**40}, "seed: Input should be less than or equal to 2147483647"),
        ({"parallel": 10**6}, "parallel: Input should be less than or equal to 999"),
        ({"space": {"dataset.config.shuffle_seed": list(range(1000))}}, "1000 values listed; at most 999"),
        (
            {"space": {"trainer.config.lr_init": {"uniform": [0.001, float("inf")]}}},
            "lr_init.uniform.1: .inf",
        ),
        ({"space": {"model.config.hidden_channels": [16, 100000]}}, "hidden_channels: Input should be less"),
        ({"base": dict(BASE, seeds=[3, 3])}, "base: seeds: .*seed 3 is given more than once"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_problem(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(_sweep(**changes), base_dir=EXPERIMENTS)


def test_list_valued_choices_travel_through_optuna_as_json():
    spec = parse_sweep(
        _sweep(
            space={"dataset.config.regressors.history.lags": [[1, 2], [1, 2, 5]]},
            base=yaml.safe_load((EXPERIMENTS / "winner_demo.yaml").read_text()),
        )
    )
    dist = distributions(spec)["dataset.config.regressors.history.lags"]
    assert dist.choices == ("[1, 2]", "[1, 2, 5]")
    assert decode_params(spec, {"dataset.config.regressors.history.lags": "[1, 2, 5]"}) == {
        "dataset.config.regressors.history.lags": [1, 2, 5]
    }


def test_grid_sampler_visits_every_point_once():
    spec = parse_sweep(
        _sweep(
            sampler="grid",
            budget=4,
            space={"model.config.layers": [2, 3], "model.config.hidden_channels": [8, 16]},
        )
    )
    study = optuna.create_study(sampler=sampler(spec), direction="maximize")
    seen = []
    for _ in range(4):
        trial = ask(study, spec)
        seen.append(tuple(trial.params.values()))
        tell(study, trial, 0.0)  # the last one: Optuna's grid sampler stops the study
    assert sorted(seen) == [(2, 8), (2, 16), (3, 8), (3, 16)]


def test_shipped_sweep_files_are_valid():
    files = sorted((EXPERIMENTS / "sweeps").glob("*.yaml"))
    assert files, "experiments/sweeps/ holds example sweeps"
    for path in files:
        load_sweep(path)


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_asks_from_freshly_opened_studies_differ_and_repeat_with_the_seed(kind):
    # every `sweep step` opens the study anew: a sampler seeded alike each time once drew one point
    spec = parse_sweep(_sweep(sampler=kind, budget=6))

    def draws(seed_spec):
        storage = optuna.storages.InMemoryStorage()
        out = []
        for _ in range(4):
            study = optuna.create_study(
                study_name="s", storage=storage, load_if_exists=True, direction="maximize"
            )
            trial = ask(study, seed_spec)
            out.append(tuple(trial.params.values()))
            tell(study, trial, 0.1 * len(out))
        return out

    first = draws(spec)
    assert len(set(first)) == 4, first
    assert draws(spec) == first, "the same sweep seed gives the same trials"


def test_report_difference_reads_unset_options_as_their_defaults():
    from pipeline.sweeps.report import difference

    spec = parse_sweep(
        _sweep(space={"trainer.config.ema_decay": [None, 0.9], "model.config.hidden_channels": [8, 16]})
    )
    assert (
        difference(spec, {"trainer.config.ema_decay": None, "model.config.hidden_channels": 16}) == "(base)"
    )
    assert difference(spec, {"trainer.config.ema_decay": 0.9, "model.config.hidden_channels": 8}) == (
        "trainer.config.ema_decay=0.9, model.config.hidden_channels=8"
    )


def test_a_sweep_or_its_base_file_with_an_alias_bomb_is_refused_in_one_line(tmp_path):
    bomb = "a0: &a0 [" + ", ".join(["lol"] * 10) + "]\n"
    bomb += "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "sweep.yaml").write_text("name: s\nbase: bomb.yaml\nbudget: 1\nspace: {a: [1]}\n")
    for name, message in [
        ("bomb.yaml", r"^line \d+: more than"),
        ("sweep.yaml", r"^base: .*bomb.yaml: line \d+"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            load_sweep(tmp_path / name)
        assert "alias bomb" in str(err.value) and "\n" not in str(err.value)
