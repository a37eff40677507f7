"""Configuration tables in nnfabrik's shape: ``Fabrikant``, ``Seed``, ``Dataset``, ``Model``, ``Trainer``,
plus ``Experiment`` (a named dataset x model x trainer with its seeds, from a YAML file).

``*_fn`` is a registry key (``pipeline.registry``), ``*_config`` the full validated config as JSON (every
default included, ``pipeline.configs.stored_form``; rows stored before issue 28 lack the hash-neutral fields
at their default), ``*_hash`` the hash of the key and the reduced config (``pipeline.configs.config_hash``:
hash-neutral fields at their default left out, so configs stored before such a field existed keep their
hash). See docs/config-evolution.md.
"""

from __future__ import annotations

import datajoint as dj

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
