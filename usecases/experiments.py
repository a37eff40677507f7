"""Adding experiments: their configurations, regressor parameter sets, seeds and members, in one go."""

from __future__ import annotations

import getpass
from typing import Any

from pipeline.configs import ConfigError, config_hash, stored_form
from pipeline.experiments import ExperimentSpec
from pipeline.registry import resolve
from schemas.data import Scan
from schemas.fabrik import Dataset, Experiment, Fabrikant, Model, Seed, Trainer, experiment_models
from schemas.regressors import HistoryParamSet, SplitParamSet, StateParamSet

_TABLES: dict[str, Any] = {"dataset": Dataset, "model": Model, "trainer": Trainer}


def register_dataset_regressors(dataset_config: dict) -> None:
    """Insert the parameter sets a dataset config asks for (called when an experiment is added)."""
    regs = dataset_config.get("regressors") or {}
    if regs.get("history") is not None:
        HistoryParamSet.add(regs["history"])
    if regs.get("state") is not None:
        StateParamSet.add(regs["state"])
    if dataset_config.get("split") is not None:
        SplitParamSet.add(dataset_config["split"])


def add_config(kind: str, fn: str, config: dict[str, Any], fabrikant: str, comment: str = "") -> dict:
    """Validate and insert a dataset / model / trainer configuration (no-op if present); return its key."""
    validated = resolve(kind, fn, config)
    key = {f"{kind}_fn": fn, f"{kind}_hash": config_hash(fn, validated)}
    table = _TABLES[kind]
    if not table & key:
        table.insert1(
            dict(
                key,
                **{
                    f"{kind}_config": stored_form(validated),
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
    fabrikant = fabrikant or getpass.getuser()
    with Experiment.connection.transaction:
        Fabrikant.insert1({"fabrikant_name": fabrikant}, skip_duplicates=True)
        keys: dict[str, str] = {}
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


def experiment_restriction(name: str | list[str] | None):
    """The TrainedModel keys of experiment ``name`` or of a list of them (None: no restriction).

    Raises:
        LookupError: no experiment of one of the names.
    """
    if not name:
        return None
    for n in [name] if isinstance(name, str) else name:
        if not Experiment & {"experiment_name": n}:
            raise LookupError(f"no experiment named {n!r}; add it with `sensorium experiment add`")
    return experiment_models(name)
