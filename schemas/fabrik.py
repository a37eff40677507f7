"""Configuration tables in nnfabrik's shape: ``Fabrikant``, ``Seed``, ``Dataset``, ``Model``, ``Trainer``,
plus ``Experiment`` (a named dataset x model x trainer with its seeds, from a YAML file).

``*_fn`` is a registry key (``pipeline.registry``), ``*_config`` the full validated config as JSON (defaults
included), ``*_hash`` its hash (in the primary key).
"""

from __future__ import annotations

import getpass
from typing import Any

import datajoint as dj

from pipeline.configs import ConfigError, canonical_json, config_hash
from pipeline.experiments import ExperimentSpec
from pipeline.registry import resolve

schema = dj.Schema()


@schema
class Fabrikant(dj.Manual):
    definition = """
    # a person (or service) who adds configurations
    fabrikant_name      : varchar(32)     # short name
    ---
    email = ""          : varchar(128)    # contact
    affiliation = ""    : varchar(128)    # lab
    dj_username = ""    : varchar(64)     # database user
    """


@schema
class Seed(dj.Manual):
    definition = """
    # a random seed: initialisation, sampling and data order of a run
    seed                : int32           # seed value
    """


@schema
class Dataset(dj.Manual):
    definition = """
    # a dataset configuration: which scans and how the loaders present them
    dataset_fn          : varchar(64)     # registry key, e.g. sensorium.datasets.static_loaders
    dataset_hash        : char(32)        # hash of dataset_fn and the canonical config
    ---
    dataset_config      : json            # full validated config (defaults included)
    -> Fabrikant.proj(dataset_fabrikant='fabrikant_name')
    dataset_comment = "" : varchar(256)   # free text
    dataset_ts = CURRENT_TIMESTAMP : datetime  # when added
    """


@schema
class Model(dj.Manual):
    definition = """
    # a model configuration
    model_fn            : varchar(64)     # registry key (pipeline.registry.MODELS)
    model_hash          : char(32)        # hash of model_fn and the canonical config
    ---
    model_config        : json            # full validated config (defaults included)
    -> Fabrikant.proj(model_fabrikant='fabrikant_name')
    model_comment = ""  : varchar(256)    # free text
    model_ts = CURRENT_TIMESTAMP : datetime  # when added
    """


@schema
class Trainer(dj.Manual):
    definition = """
    # a trainer configuration
    trainer_fn          : varchar(64)     # registry key, e.g. sensorium.training.standard_trainer
    trainer_hash        : char(32)        # hash of trainer_fn and the canonical config
    ---
    trainer_config      : json            # full validated config (defaults included)
    -> Fabrikant.proj(trainer_fabrikant='fabrikant_name')
    trainer_comment = "" : varchar(256)   # free text
    trainer_ts = CURRENT_TIMESTAMP : datetime  # when added
    """


@schema
class Experiment(dj.Manual):
    definition = """
    # a named experiment (an experiments/*.yaml file): a model x trainer trained on each member
    experiment_name     : varchar(64)     # name in the YAML file
    ---
    -> Model
    -> Trainer
    experiment_comment = "" : varchar(256) # free text
    experiment_spec     : json            # the experiment as added (after --set overrides)
    experiment_ts = CURRENT_TIMESTAMP : datetime  # when added
    """

    class Member(dj.Part):
        definition = """
        # one model of the experiment: a dataset (with its split) and a seed
        -> master
        -> Dataset
        -> Seed
        """


_TABLES = {"dataset": Dataset, "model": Model, "trainer": Trainer}

#: secondary attributes of Experiment that, with Member's dataset and seed, identify its trained models
EXPERIMENT_CONFIG_KEYS = ("model_fn", "model_hash", "trainer_fn", "trainer_hash")


def experiment_models(name: str | list[str] | None = None):
    """(Experiment x Member) projected to everything that identifies a trained model (for restrictions).

    ``name``: one experiment, several (a list: any of them) or all (None).
    """
    query = Experiment * Experiment.Member
    if isinstance(name, str):
        query = query & {"experiment_name": name}
    elif name is not None:
        query = query & [{"experiment_name": n} for n in name]
    return query.proj(*EXPERIMENT_CONFIG_KEYS)


def trainable_experiments() -> list[str]:
    """Names of the experiments whose members populate / workers train (all but ``import_only`` ones)."""
    return [
        r["experiment_name"]
        for r in Experiment.proj("experiment_spec").to_dicts()
        if not (r["experiment_spec"] or {}).get("import_only")
    ]


def add_config(kind: str, fn: str, config: dict[str, Any], fabrikant: str, comment: str = "") -> dict:
    """Validate and insert a dataset / model / trainer configuration (no-op if present); return its key."""
    validated = resolve(kind, fn, config)
    key = {f"{kind}_fn": fn, f"{kind}_hash": config_hash(fn, validated)}
    table = _TABLES[kind]
    if not table & key:
        import json

        table.insert1(
            dict(
                key,
                **{
                    f"{kind}_config": json.loads(canonical_json(validated)),
                    f"{kind}_fabrikant": fabrikant,
                    f"{kind}_comment": comment[:256],
                },
            )
        )
    return key


def resolve_all_scans(dataset_config: dict) -> dict:
    """Replace ``scans: all`` by the data keys ingested now (sorted), so that a dataset is a fixed set.

    Resolving at add time keeps a dataset's meaning (and hash) stable when more scans are ingested later,
    and lets a long training run finish even if someone ingests a scan meanwhile.
    """
    from schemas.data import Scan

    if dataset_config.get("scans", "all") != "all":
        return dataset_config
    keys = sorted(Scan.proj().to_arrays("data_key").tolist()) if len(Scan()) else []
    if not keys:
        raise ConfigError(
            "dataset.config.scans is 'all' but no scans are ingested yet; run `sensorium ingest` first"
        )
    return {**dataset_config, "scans": keys}


def add_experiment(spec: ExperimentSpec, fabrikant: str | None = None) -> dict:
    """Insert an experiment, its configurations, regressor parameter sets and members in one transaction.

    Adding the same experiment again is a no-op; a different one under an existing name is refused.

    Returns:
        The experiment's key.
    """
    from schemas.regressors import register_dataset_regressors

    fabrikant = fabrikant or getpass.getuser()
    with Experiment.connection.transaction:
        Fabrikant.insert1({"fabrikant_name": fabrikant}, skip_duplicates=True)
        keys = {}
        for kind in ("model", "trainer"):
            part = getattr(spec, kind)
            keys |= add_config(kind, part.fn, part.config, fabrikant, part.comment)
        members = []
        for config, seed in spec.member_list():
            config = resolve_all_scans(config)
            register_dataset_regressors(config)
            dataset_key = add_config("dataset", spec.dataset.fn, config, fabrikant, spec.dataset.comment)
            members.append(dict(dataset_key, seed=seed))
        exp_key = {"experiment_name": spec.name}
        existing = (Experiment & exp_key).to_dicts()
        if existing:
            same = all(existing[0][k] == v for k, v in keys.items())
            stored = {tuple(sorted(m.items())) for m in (Experiment.Member & exp_key).proj().to_dicts()}
            wanted = {tuple(sorted(dict(exp_key, **m).items())) for m in members}
            if not same or stored != wanted:
                raise ConfigError(
                    f"experiment {spec.name!r} already exists with a different configuration or members; "
                    "give this one another name (e.g. --set name=...)"
                )
            return exp_key
        Seed.insert([{"seed": m["seed"]} for m in members], skip_duplicates=True)
        Experiment.insert1(
            dict(exp_key, **keys, experiment_comment=spec.comment[:256], experiment_spec=spec.as_dict())
        )
        Experiment.Member.insert([dict(exp_key, **m) for m in members])
    return exp_key
