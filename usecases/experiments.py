"""Experiments as users manage them: added (configurations, regressor parameter sets, seeds and members,
in one go), listed, shown, compared with a file, and deleted with everything computed for them alone."""

from __future__ import annotations

import getpass
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import datajoint as dj

from jobs.queues import QUEUES, jobs_of
from pipeline.configs import ConfigError, config_hash, stored_form
from pipeline.experiments import (
    ExperimentSpec,
    config_diff,
    effective_form,
    readable_form,
    stored_effective_form,
)
from pipeline.registry import resolve
from schemas.data import Scan
from schemas.evaluation import Ensemble, EnsembleScore, ModelScore, Prediction, declared_ensemble
from schemas.fabrik import Dataset, Experiment, Fabrikant, Model, Seed, Trainer, experiment_models
from schemas.locks import advisory_lock
from schemas.regressors import HistoryParamSet, SplitParamSet, StateParamSet
from schemas.sweeps import Sweep
from schemas.training import TrainedModel, key_hash
from usecases.queries import known_names, require_names


class ExperimentExistsError(ConfigError):
    """An experiment of that name is stored with another configuration; ``differences`` are the lines of
    ``pipeline.experiments.config_diff`` (stored -> given). The message is several lines: what, the
    differences, and how to go on."""

    def __init__(self, name: str, differences: list[str]) -> None:
        self.name, self.differences = name, differences
        shown = differences or ["(the stored members differ: `sensorium experiment show` lists them)"]
        super().__init__(
            "\n".join(
                [
                    f"experiment {name!r} already exists with a different configuration (stored -> given):",
                    *(f"  {line}" for line in shown),
                    f"give this one another name (--set name=...), or delete the stored one first "
                    f"(`sensorium experiment delete {name}`: it removes its trained models and scores too)",
                ]
            )
        )


def _experiments_lock() -> None:
    """Serialise adding and deleting experiments for the rest of the transaction: a delete removes the
    configurations no other experiment uses, which an experiment being added at that moment may name."""
    advisory_lock(
        Experiment.connection,
        f"sensorium-experiments:{Experiment.database}",
        "the lock of the experiment tables",
        transaction=True,
    )


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


def check_scans_ingested(spec: ExperimentSpec) -> None:
    """Refuse an experiment whose datasets name scans that are not ingested (nothing could train on them,
    and every later plain ``populate`` would fail on them).

    Raises:
        ConfigError: one line naming the missing scans and the ingested ones (path ``dataset.config.scans``).
    """
    named = [
        s
        for config, _ in spec.member_list()
        if isinstance(config.get("scans"), list)
        for s in config["scans"]
    ]
    if not named:
        return
    ingested = known_names("scan")
    missing = [s for s in dict.fromkeys(named) if s not in set(ingested)]
    if missing:
        what = (
            f"not ingested: {', '.join(repr(m) for m in missing)} "
            f"(ingested: {', '.join(ingested) if ingested else 'none yet'}); run `sensorium ingest` first"
        )
        raise ConfigError(f"dataset.config.scans: {what}", problems=(("dataset.config.scans", what),))


def add_experiment(spec: ExperimentSpec, fabrikant: str | None = None) -> dict:
    """Insert an experiment, its configurations, regressor parameter sets and members in one transaction.

    Adding the same experiment again is a no-op; a different one under an existing name is refused with
    the differences; one naming scans that are not ingested is refused before anything is inserted.

    Returns:
        The experiment's key.

    Raises:
        ConfigError: scans not ingested (``dataset.config.scans``), or no scans at all for ``scans: all``.
        ExperimentExistsError: the name is taken by another configuration (the message shows the diff).
    """
    fabrikant = fabrikant or getpass.getuser()
    check_scans_ingested(spec)
    with Experiment.connection.transaction:
        Fabrikant.insert1({"fabrikant_name": fabrikant}, skip_duplicates=True)
        _experiments_lock()  # after the first insert: a login that may not add is told so by that insert
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
                raise ExperimentExistsError(spec.name, experiment_diff(spec))
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
        UnknownNameError: no experiment of one of the names (one line listing the known ones).
    """
    if not name:
        return None
    require_names("experiment", name)
    return experiment_models(name)


# -- comparing a file with the stored experiment ----------------------------------------------------------


def experiment_diff(spec: ExperimentSpec) -> list[str]:
    """What differs between the stored experiment of ``spec.name`` and ``spec``, one line per path
    (``model.config.vit.dim: 32 -> 48``, ``...: added (3)``, ``...: removed (was 5)``); empty: identical.

    Both sides are compared with every builder default written out, so a default left out and a default
    written are the same. ``scans: all`` is compared as resolved too: the stored members keep the scans
    ingested when it was added, while adding it now would take the scans ingested now.

    Raises:
        UnknownNameError: nothing is stored under that name.
    """
    require_names("experiment", spec.name)
    row = (Experiment & {"experiment_name": spec.name}).fetch1()
    lines = config_diff(stored_effective_form(row["experiment_spec"]), effective_form(spec))
    stored_scans = sorted(
        {
            tuple(c["dataset_config"].get("scans") or [])
            for c in (Dataset * Experiment.Member & row).to_dicts()
        }
    )
    if not lines and spec.dataset.config.get("scans", "all") == "all" and stored_scans:
        try:
            now = resolve_all_scans(dict(spec.dataset.config))["scans"]
        except ConfigError:
            now = []
        if [tuple(now)] != stored_scans:
            then = " / ".join(str(list(s)) for s in stored_scans)
            lines.append(f"dataset.config.scans: 'all' was {then} when added, is {now} now")
    return lines


# -- listing and showing -----------------------------------------------------------------------------------

_MODEL_KEY = ("model_fn", "model_hash", "dataset_fn", "dataset_hash", "trainer_fn", "trainer_hash", "seed")


def _model_key(row: dict) -> tuple:
    """The TrainedModel key of a row that holds one, as a hashable tuple."""
    return tuple(row[k] for k in _MODEL_KEY)


def _test_scores(name: str | None = None) -> dict[tuple[str, tuple], list[float]]:
    """{(experiment, model key): single-trial correlations of its scans' test tiers}."""
    scores: dict[tuple[str, tuple], list[float]] = defaultdict(list)
    query = (ModelScore & {"tier": "test"}).proj("single_trial_correlation") * experiment_models(name)
    for r in query.to_dicts():
        scores[(r["experiment_name"], _model_key(r))].append(float(r["single_trial_correlation"]))
    return scores


def experiment_summaries() -> list[dict[str, Any]]:
    """Every experiment: name, comment, when added, members, trained models, and the best model's test
    score (``best_test``: the highest mean single-trial correlation over the test tiers of its scans;
    None where none is scored), sorted by name."""
    members = Counter(r["experiment_name"] for r in Experiment.Member.proj().to_dicts())
    trained = Counter(r["experiment_name"] for r in (TrainedModel.proj() * experiment_models()).to_dicts())
    best: dict[str, float] = {}
    for (name, _), values in _test_scores().items():
        mean = sum(values) / len(values)
        best[name] = max(best.get(name, mean), mean)
    rows = Experiment.proj("experiment_comment", "experiment_ts").to_dicts(order_by="experiment_name")
    return [
        {
            "name": r["experiment_name"],
            "comment": r["experiment_comment"],
            "added": str(r["experiment_ts"]),
            "members": members[r["experiment_name"]],
            "trained": trained[r["experiment_name"]],
            "best_test": best.get(r["experiment_name"]),
        }
        for r in rows
    ]


def _job_counts(model_keys: list[dict], ensembles: list[str]) -> dict[str, dict[str, int]]:
    """{table: {status: jobs}} of the job queues' entries for these trained models and ensembles."""
    out: dict[str, dict[str, int]] = {}
    for table, query in _job_queries(model_keys, ensembles):
        counts = Counter(r["status"] for r in query.proj("status").to_dicts())
        if counts:
            out[table.__name__] = dict(sorted(counts.items()))
    return out


def _job_queries(model_keys: list[dict], ensembles: list[str]) -> list[tuple[Any, Any]]:
    """(table, its job entries of these trained models or ensembles) for every job queue that has some
    key of that kind (DataJoint's job tables have no foreign keys: a cascade does not reach them)."""
    out = []
    for table in QUEUES["all"]:
        jobs = jobs_of(table)
        if not jobs.is_declared:
            continue
        pk = set(jobs.primary_key)
        if set(_MODEL_KEY) <= pk and model_keys:
            out.append((table, jobs & model_keys))
        elif "ensemble_name" in pk and ensembles:
            out.append((table, jobs & [{"ensemble_name": e} for e in ensembles]))
    return out


def experiment_details(name: str) -> dict[str, Any]:
    """One experiment: its stored spec (as added), configuration keys, members with what is computed for
    each (trained, predictions, scores, test score, other experiments sharing the model), the ensembles
    holding its models, and its entries in the job queues.

    Raises:
        UnknownNameError: no experiment of that name.
    """
    require_names("experiment", name)
    key = {"experiment_name": name}
    row = (Experiment & key).fetch1()
    mine = experiment_models(name).to_dicts(order_by=("seed", "dataset_hash"))
    model_keys = [{k: m[k] for k in _MODEL_KEY} for m in mine]
    others = [n for n in known_names("experiment") if n != name]
    sharing: dict[tuple, list[str]] = defaultdict(list)
    if others and model_keys:
        for r in (experiment_models(others) & model_keys).to_dicts():
            sharing[_model_key(r)].append(r["experiment_name"])
    trained = {_model_key(r): r for r in (TrainedModel & model_keys).to_dicts()} if model_keys else {}
    imported = (
        {_model_key(r) for r in (TrainedModel.Imported & model_keys).proj().to_dicts()}
        if model_keys
        else set()
    )
    predictions = (
        Counter(_model_key(r) for r in (Prediction.PerScan & model_keys).proj().to_dicts())
        if model_keys
        else Counter()
    )
    scores = (
        Counter(_model_key(r) for r in (ModelScore & model_keys).proj().to_dicts())
        if model_keys
        else Counter()
    )
    tests = _test_scores(name)
    configs = {
        (r["dataset_fn"], r["dataset_hash"]): r["dataset_config"]
        for r in (Dataset * Experiment.Member & key).to_dicts()
    }
    members = []
    for m in mine:
        k = _model_key(m)
        config = configs.get((m["dataset_fn"], m["dataset_hash"]), {})
        split = config.get("split")
        run = trained.get(k)
        values = tests.get((name, k))
        members.append(
            {
                "seed": m["seed"],
                "split": split.get("index", 0) if split else None,
                "dataset_hash": m["dataset_hash"],
                "scans": config.get("scans"),
                "trained": run is not None,
                "imported": k in imported,
                "epochs": run["epochs"] if run else None,
                "best_val_corr": run["best_val_corr"] if run else None,
                "predictions": predictions[k],
                "scores": scores[k],
                "test": sum(values) / len(values) if values else None,
                "shared_with": sorted(sharing.get(k, [])),
            }
        )
    ensembles = []
    names = (
        sorted({r["ensemble_name"] for r in (Ensemble.Member & model_keys).proj().to_dicts()})
        if model_keys
        else []
    )
    for e in names:
        ens = (Ensemble & {"ensemble_name": e}).fetch1()
        n_scores = len(EnsembleScore & {"ensemble_name": e})
        ensembles.append({"name": e, "n_members": ens["n_members"], "scores": n_scores})
    return {
        "name": name,
        "comment": row["experiment_comment"],
        "added": str(row["experiment_ts"]),
        "spec": readable_form(row["experiment_spec"] or {}),
        "model": {"fn": row["model_fn"], "hash": row["model_hash"]},
        "trainer": {"fn": row["trainer_fn"], "hash": row["trainer_hash"]},
        "members": members,
        "ensembles": ensembles,
        "jobs": _job_counts(model_keys, names),
    }


# -- deleting ----------------------------------------------------------------------------------------------


class DeletionRefusedError(RuntimeError):
    """The experiment cannot be deleted now (one line saying why and what to do); nothing was changed."""


@dataclass
class Removal:
    """What deleting an experiment removes (or removed, once ``committed``).

    ``rows``: {table: rows} in the order they are deleted from (DataJoint's cascade, parts included);
    ``jobs``: {table: job queue entries}; ``checkpoints``: checkpoint files of unfinished runs;
    ``kept``: what stays because another experiment uses it, in words.
    """

    experiment: str
    rows: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    kept: list[str] = field(default_factory=list)
    committed: bool = False


def _label(full_table_name: str) -> str:
    """``"prefix_evaluation"."ensemble__member"`` -> ``Ensemble.Member`` (the class names users know)."""
    table = full_table_name.rsplit(".", 1)[-1].strip('"`').lstrip("_#~")
    return ".".join("".join(w.capitalize() for w in part.split("_")) for part in table.split("__"))


def _checkpoint_files(model_keys: list[dict]) -> list[dict]:
    """The keys among ``model_keys`` whose unfinished training left a checkpoint file."""
    folder = TrainedModel.checkpoint_dir()
    return [k for k in model_keys if (folder / f"{key_hash(k)}.pt").exists()]


def _plan_and_delete(name: str, removal: Removal) -> list[dict]:
    """Inside the open transaction: find what belongs to experiment ``name`` alone and delete it through
    DataJoint's cascade, counting each table's rows first; returns the trained-model keys removed.

    What goes: the experiment and its members; its trained models that no other experiment declares,
    with their epochs, checkpoints, predictions and scores; every ensemble holding one of them, and the
    ensemble it declares, with their scores and submissions; the configurations (model, trainer,
    datasets) no other experiment names; the job queue entries of what goes. What stays: every row
    another experiment reaches (a trained model is keyed by its configs and seed, not by experiment).
    """
    key = {"experiment_name": name}
    if Sweep.Trial & key:
        trial = (Sweep.Trial & key).fetch1()
        raise DeletionRefusedError(
            f"experiment {name!r} is trial {trial['trial_number']} of sweep {trial['sweep_name']!r}; "
            "its study keeps it: it is not deleted on its own"
        )
    row = (Experiment & key).fetch1()
    others = [n for n in known_names("experiment") if n != name]
    other_models = (
        {_model_key(r): r["experiment_name"] for r in experiment_models(others).to_dicts()} if others else {}
    )
    mine = experiment_models(name).to_dicts()
    own = [{k: m[k] for k in _MODEL_KEY} for m in mine if _model_key(m) not in other_models]
    shared = sorted({other_models[_model_key(m)] for m in mine if _model_key(m) in other_models})
    if shared:
        n = sum(_model_key(m) in other_models for m in mine)
        removal.kept.append(f"{n} trained model(s) also declared by {', '.join(shared)}")

    other_rows = (Experiment & [{"experiment_name": n} for n in others]).to_dicts() if others else []
    declared_elsewhere = {declared_ensemble(r) for r in other_rows}
    ensembles = set((r["ensemble_name"] for r in (Ensemble.Member & own).proj().to_dicts()) if own else ())
    declared = declared_ensemble(row)
    if declared and declared not in declared_elsewhere and Ensemble & {"ensemble_name": declared}:
        ensembles.add(declared)
    elif declared is not None and declared in declared_elsewhere and declared not in ensembles:
        removal.kept.append(f"ensemble {declared!r}, also declared by another experiment")

    # job entries: a job a worker holds now would insert its row after the delete
    queries = _job_queries(own, sorted(ensembles))
    busy = sum(len(q & {"status": "reserved"}) for _, q in queries)
    if busy:
        raise DeletionRefusedError(
            f"a worker is computing {busy} job(s) of experiment {name!r} right now; stop it or let it finish "
            "(`sensorium jobs` lists the workers), then delete"
        )
    for table, q in queries:
        n = len(q)
        if n:
            removal.jobs[table.__name__] = n
            q.delete_quick()

    # configurations that no other experiment names (a shared one keeps every row that depends on it)
    used_models = {(r["model_fn"], r["model_hash"]) for r in other_rows}
    used_trainers = {(r["trainer_fn"], r["trainer_hash"]) for r in other_rows}
    used_datasets = (
        {
            (r["dataset_fn"], r["dataset_hash"])
            for r in (Experiment.Member & [{"experiment_name": n} for n in others]).proj().to_dicts()
        }
        if others
        else set()
    )
    configs: list[Any] = []
    if (row["model_fn"], row["model_hash"]) not in used_models:
        configs.append(Model & {"model_fn": row["model_fn"], "model_hash": row["model_hash"]})
    else:
        removal.kept.append("its model configuration (used by another experiment)")
    if (row["trainer_fn"], row["trainer_hash"]) not in used_trainers:
        configs.append(Trainer & {"trainer_fn": row["trainer_fn"], "trainer_hash": row["trainer_hash"]})
    else:
        removal.kept.append("its trainer configuration (used by another experiment)")
    datasets = {(m["dataset_fn"], m["dataset_hash"]) for m in mine}
    mine_only = [{"dataset_fn": f, "dataset_hash": h} for f, h in sorted(datasets - used_datasets)]
    if mine_only:
        configs.append(Dataset & mine_only)
    if datasets & used_datasets:
        removal.kept.append(
            f"{len(datasets & used_datasets)} dataset configuration(s) used by another experiment"
        )

    roots = [Experiment & key]
    if own:
        roots.append(TrainedModel & own)
    if ensembles:
        roots.append(Ensemble & [{"ensemble_name": e} for e in sorted(ensembles)])
    roots.extend(configs)
    for root in roots:
        counts = dj.Diagram.cascade(root, part_integrity="cascade").counts()
        for table, n in counts.items():
            if n:
                label = _label(table)
                removal.rows[label] = removal.rows.get(label, 0) + n
        root.delete(transaction=False, prompt=False, part_integrity="cascade")
    return own


def delete_experiment(name: str, *, execute: bool, expected: Removal | None = None) -> Removal:
    """Delete experiment ``name`` and what was computed for it alone (``_plan_and_delete``), in one
    transaction through DataJoint's cascade; with ``execute`` False the same deletes run and are rolled
    back. ``expected``: the preview the user confirmed; a delete that would now remove other counts (a
    worker finished a row meanwhile) is rolled back and refused, so nothing beyond the preview goes.

    Raises:
        UnknownNameError: no experiment of that name.
        DeletionRefusedError: it is a sweep's trial, a worker holds one of its jobs now, or what would
            be deleted changed since ``expected``.
    """
    require_names("experiment", name)
    removal = Removal(name)
    conn = Experiment.connection
    conn.start_transaction()
    try:
        _experiments_lock()
        own = _plan_and_delete(name, removal)
        removal.checkpoints = len(_checkpoint_files(own))
        if expected is not None and (removal.rows, removal.jobs) != (expected.rows, expected.jobs):
            raise DeletionRefusedError(
                f"what deleting {name!r} removes changed since the preview (a worker finished something); "
                "nothing was deleted: run the command again"
            )
    except BaseException:
        conn.cancel_transaction()
        raise
    if not execute:
        conn.cancel_transaction()
        return removal
    conn.commit_transaction()
    removal.committed = True
    for k in _checkpoint_files(own):  # after the commit: a rolled-back delete keeps its runs resumable
        TrainedModel.discard_checkpoint(k)
    return removal
