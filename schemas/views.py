"""Plain-SQL views of the results, in a schema of their own: ``<prefix>views``.

DataJoint names its tables after the classes (``__model_score``, ``~~trained_model``) and keys results by
config hashes, so ``psql``, a BI tool or ``pandas.read_sql`` cannot find "the test score of each
experiment" without knowing the pipeline. These views give the results by name: scores by experiment,
seed, scan and tier beside both oracles, ensemble scores, learning curves, the provenance of every model,
and the state of the job queues and the workers. ``docs/sql.md`` describes every view and column.

The views are made from the bound table classes (:func:`schemas.activate` first), so they follow the
tables' real SQL names. :func:`create_views` drops and recreates every view of the schema in one
transaction (under an advisory lock), so a reader sees either the old set or the new one, and a new
version may rename or drop columns. ``views_version`` (and the schema's comment) says which version is
installed; :data:`VIEWS_VERSION` grows by one whenever a view or a column changes.

PostgreSQL runs a view with its owner's rights: whoever may read a view reads what it shows, without
rights on the tables below it. The grants (and the owner) are the roles' business (``usecases.roles``),
passed in as ``after`` so that they are part of the same transaction.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datajoint as dj

from schemas.sql_quoting import quote_ident as _q
from schemas.sql_quoting import quote_literal as _lit

#: grows by one whenever a view, a column or a column's meaning changes
VIEWS_VERSION = 1
#: the views' schema is ``<prefix>`` + this
SCHEMA_SUFFIX = "views"


class ViewsError(RuntimeError):
    """The views cannot be (re)created (the message is one line saying why)."""


@dataclass(frozen=True)
class ViewDoc:
    """What a view shows (``description``) and each of its columns, in the view's order."""

    description: str
    columns: dict[str, str]


_MODEL_KEY_DOCS = {
    "model_fn": "model builder (registry key)",
    "model_hash": "hash of the model config",
    "dataset_fn": "dataset builder (registry key)",
    "dataset_hash": "hash of the dataset config (scans, split, regressors)",
    "trainer_fn": "trainer (registry key)",
    "trainer_hash": "hash of the trainer config",
}
_METRIC_DOCS = {
    "n_trials": "trials of the tier that were scored",
    "single_trial_correlation": "mean over neurons of the correlation over single trials (the headline)",
    "correlation_to_average": "mean over neurons of the correlation with repeat-averaged responses",
    "feve": "mean fraction of explainable variance explained, over neurons with FEV >= 0.15 "
    "(null: no repeats)",
    "n_neurons_feve": "neurons entering the FEVE mean",
}
_ORACLE_DOCS = {
    "oracle_single_trial_correlation": "planted oracle: the ground-truth expected response scored the "
    "same way (synthetic scans only; null elsewhere)",
    "oracle_feve": "FEVE of the planted oracle",
    "fraction_of_oracle": "single_trial_correlation / oracle_single_trial_correlation (null without a "
    "planted oracle or when it is 0)",
    "loo_oracle_single_trial_correlation": "leave-one-out repeat oracle: each repeat against the mean of the "
    "other repeats of its image (tiers with repeated images; null elsewhere)",
    "loo_oracle_n_images": "images shown at least twice, which the repeat oracle uses",
    "fraction_of_loo_oracle": "single_trial_correlation / loo_oracle_single_trial_correlation (null unless "
    "that oracle is positive)",
}

#: every view (apart from the version) with its columns: the contract of docs/sql.md and the tests
VIEW_DOCS: dict[str, ViewDoc] = {
    "views_version": ViewDoc(
        "one row: which version of these views is installed, for which prefix, when and by which code",
        {
            "version": "version of the views (grows when a view or a column changes)",
            "prefix": "the schema prefix of the tables the views read",
            "views": "names of the views in this schema",
            "created_at": "when the views were (re)created (UTC)",
            "code_version": "version of the code that created them",
        },
    ),
    "model_scores": ViewDoc(
        "score of every trained model of every experiment on every scored scan and tier, beside both oracles",
        {
            "experiment_name": "experiment (a model belongs to it through model, trainer, dataset and seed)",
            "seed": "seed of the experiment member",
            "data_key": "scan (animal-session-scan)",
            "tier": "train, validation, test or final_test",
            **_METRIC_DOCS,
            "trained_fraction": "share of the tier's trials the model trained on",
            "contaminated": "the model trained on trials of this tier (trained_fraction > 0)",
            **_ORACLE_DOCS,
            **_MODEL_KEY_DOCS,
        },
    ),
    "ensemble_scores": ViewDoc(
        "score of every ensemble (mean of its members' predictions) per scan and tier, beside both oracles",
        {
            "ensemble_name": "ensemble",
            "n_members": "trained models averaged",
            "data_key": "scan (animal-session-scan)",
            "tier": "train, validation, test or final_test",
            **_METRIC_DOCS,
            "trained_fraction": "the largest share of the tier's trials any member trained on",
            "contaminated": "a member trained on trials of this tier",
            **_ORACLE_DOCS,
            "ensemble_comment": "free text",
            "ensemble_ts": "when the ensemble was recorded",
        },
    ),
    "ensemble_members": ViewDoc(
        "the trained models of every ensemble, with the experiments they belong to",
        {
            "ensemble_name": "ensemble",
            "experiment_name": "experiment of the member (null: in none; two rows: in two)",
            "seed": "seed of the member",
            **_MODEL_KEY_DOCS,
        },
    ),
    "oracles": ViewDoc(
        "per scan and tier: the trials, and both oracles where they exist",
        {
            "data_key": "scan (animal-session-scan)",
            "tier": "train, validation, test or final_test",
            "n_trials": "trials in the tier",
            "n_images": "distinct images shown in the tier",
            "responses_withheld": "responses are withheld (competition test tiers): nothing can be scored",
            "oracle_single_trial_correlation": "planted oracle (synthetic scans only)",
            "oracle_correlation_to_average": "planted oracle's correlation with repeat-averaged responses",
            "oracle_feve": "planted oracle's FEVE",
            "loo_oracle_single_trial_correlation": "leave-one-out repeat oracle",
            "loo_oracle_n_trials": "trials of images shown at least twice",
            "loo_oracle_n_images": "images shown at least twice",
            "loo_oracle_fev": "mean fraction of explainable variance over neurons",
            "loo_oracle_n_neurons_fev": "neurons with FEV >= 0.15",
        },
    ),
    "learning_curves": ViewDoc(
        "one row per epoch of every trained model (imported models have none)",
        {
            "experiment_name": "experiment (null: the model is in none; a model in two appears twice)",
            "seed": "seed",
            "epoch": "epoch, from 1",
            "lr": "learning rate of the epoch's updates (core parameters)",
            "train_loss": "mean per-batch training objective",
            "val_corr": "validation single-trial correlation after the epoch",
            "best_val_corr_so_far": "highest val_corr up to this epoch",
            "seconds": "wall time of the epoch, validation included",
            "elapsed_s": "wall time of the epochs up to this one",
            "epochs_run": "epochs the run took in all",
            "best_val_corr": "validation correlation of the weights kept (the best epoch's)",
            **_MODEL_KEY_DOCS,
        },
    ),
    "models": ViewDoc(
        "every model: each declared experiment member, trained or not, and every trained model, with its "
        "provenance",
        {
            "experiment_name": "experiment (null: a trained model no experiment declares any more)",
            "seed": "seed",
            "state": "trained, imported, pending / reserved / error / ignore (its training job), or declared "
            "(no job yet)",
            **_MODEL_KEY_DOCS,
            "model_config": "the full model config (JSON)",
            "dataset_config": "the full dataset config (JSON)",
            "trainer_config": "the full trainer config (JSON)",
            "model_fabrikant": "who added the model config",
            "dataset_fabrikant": "who added the dataset config",
            "trainer_fabrikant": "who added the trainer config",
            "model_ts": "when the model config was added",
            "dataset_ts": "when the dataset config was added",
            "trainer_ts": "when the trainer config was added",
            "experiment_comment": "free text of the experiment",
            "experiment_ts": "when the experiment was added",
            "experiment_spec": "the experiment as added (JSON)",
            "best_val_corr": "validation correlation of the weights kept",
            "epochs": "epochs run",
            "code_version": "package version and git commit of the code that trained it",
            "python_version": "Python of the training run",
            "torch_version": "PyTorch of the training run",
            "numpy_version": "NumPy of the training run",
            "host": "machine that trained it",
            "device": "GPU model or CPU it trained on",
            "started_at": "training start (the worker's local time)",
            "finished_at": "training end (the worker's local time)",
            "duration_s": "wall time of the (last) training attempt",
            "resumed_from_epoch": "epoch of the checkpoint the run resumed from (0: in one go)",
            "data_checksums": "checksum of every recording used (JSON)",
            "data_keys": "scans it was trained on",
            "n_parameters": "trainable parameters",
            "imported_from": "file the weights were imported from (null: trained here)",
            "imported_sha256": "SHA-256 of that file",
            "prediction_device": "where its predictions were computed (null: not yet)",
            "job_status": "status of its training job (null: no job row)",
            "job_error": "error message of its training job",
        },
    ),
    "jobs": ViewDoc(
        "one row per table with a job queue, in pipeline order: jobs by status and rows computed",
        {
            "position": "order of the table in the pipeline",
            "table_name": "the table's class name (as `sensorium jobs` shows it)",
            "schema_name": "PostgreSQL schema of the table",
            "sql_table": "the table's SQL name",
            "job_table": "the SQL name of its job queue",
            "pending": "jobs waiting",
            "reserved": "jobs being computed",
            "error": "jobs that failed (`sensorium jobs --errors`, `sensorium jobs retry`)",
            "ignore": "jobs set aside",
            "computed": "rows of the table (a finished job leaves its row, not a job)",
            "oldest_pending": "when the oldest waiting job was queued (server time)",
            "last_error_at": "when the latest failure happened (server time)",
        },
    ),
    "job_queue": ViewDoc(
        "every job of every queue (finished jobs are removed: their rows are the record)",
        {
            "table_name": "the table's class name",
            "key": "the job's key (JSON)",
            "status": "pending, reserved, error or ignore",
            "priority": "lower runs first",
            "created_time": "when queued (server time)",
            "scheduled_time": "not run before (server time)",
            "reserved_time": "when a worker took it",
            "completed_time": "when it ended (errors)",
            "duration": "seconds it ran (errors)",
            "host": "host of the worker that holds or failed it",
            "pid": "process id of that worker",
            "db_user": "database login of that worker",
            "error_message": "the error (first 2047 characters)",
        },
    ),
    "workers": ViewDoc(
        "every run of a worker process and its heartbeat",
        {
            "worker_id": "random id of the run",
            "host": "host name",
            "pid": "process id",
            "queue": "gpu, cpu or all",
            "device": "torch device it trains on",
            "status": "running, stopped (exited cleanly) or dead (declared by another worker)",
            "started_at": "start (UTC, server clock)",
            "last_seen": "latest heartbeat (UTC, server clock)",
            "seconds_since_seen": "seconds since the latest heartbeat",
            "heartbeat_s": "its heartbeat interval (null: unknown)",
            "timeout_s": "silence after which it counts as dead (null: unknown)",
            "overdue": "running, but silent for longer than its timeout (it will be declared dead)",
            "current_table": "table of the job in hand ('' when idle)",
            "current_key": "key of the job in hand (JSON)",
            "jobs_done": "jobs it finished",
            "jobs_failed": "jobs that ended in an error",
            "stopped_at": "when it stopped or was declared dead (UTC)",
        },
    ),
}


def views_schema(prefix: str) -> str:
    """The schema of the views of ``prefix``."""
    return f"{prefix}{SCHEMA_SUFFIX}"


def _on(left: str, right: str, columns: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{c} = {right}.{c}" for c in columns)


def _tables() -> dict[str, Any]:
    """The bound table classes the views read, by short name."""
    from schemas.data import Scan
    from schemas.evaluation import (
        Ensemble,
        EnsembleScore,
        ModelScore,
        OracleScore,
        Prediction,
        RepeatOracle,
    )
    from schemas.fabrik import Dataset, Experiment, Model, Trainer
    from schemas.training import TrainedModel
    from schemas.workers import Worker

    return {
        "tier_info": Scan.TierInfo,
        "experiment": Experiment,
        "member": Experiment.Member,
        "model": Model,
        "dataset": Dataset,
        "trainer": Trainer,
        "trained": TrainedModel,
        "epoch": TrainedModel.Epoch,
        "used_scan": TrainedModel.UsedScan,
        "imported": TrainedModel.Imported,
        "checkpoint": TrainedModel.Checkpoint,
        "prediction": Prediction,
        "model_score": ModelScore,
        "oracle": OracleScore,
        "repeat_oracle": RepeatOracle,
        "ensemble": Ensemble,
        "ensemble_member": Ensemble.Member,
        "ensemble_score": EnsembleScore,
        "worker": Worker,
    }


def job_tables() -> list[tuple[Any, str]]:
    """(table class, full name of its job table) of every computed / imported table, in pipeline order."""
    import schemas

    found = []
    for module in schemas.modules():
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, dj.Computed | dj.Imported)
                and obj.__module__ == module.__name__
            ):
                found.append((obj, obj().jobs.full_table_name))
    return found


def _oracle_columns(score: str) -> str:
    """The oracle columns of a score view (``o``: planted, ``r``: leave-one-out, ``score``: its alias)."""
    return (
        "o.single_trial_correlation AS oracle_single_trial_correlation, o.feve AS oracle_feve, "
        f"CASE WHEN o.single_trial_correlation > 0 THEN {score}.single_trial_correlation / "
        "o.single_trial_correlation END AS fraction_of_oracle, "
        "r.single_trial_correlation AS loo_oracle_single_trial_correlation, "
        "r.n_images AS loo_oracle_n_images, "
        f"CASE WHEN r.single_trial_correlation > 0 THEN {score}.single_trial_correlation / "
        "r.single_trial_correlation END AS fraction_of_loo_oracle"
    )


def _oracle_joins(t: dict[str, str], score: str) -> str:
    on = _on("o", score, ("data_key", "tier"))
    on_r = _on("r", score, ("data_key", "tier"))
    return f"LEFT JOIN {t['oracle']} o ON {on} LEFT JOIN {t['repeat_oracle']} r ON {on_r}"


_METRICS = "n_trials, single_trial_correlation, correlation_to_average, feve, n_neurons_feve"


def _select(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def view_queries(
    prefix: str, heartbeat_table: str | None, code_version: str, created_at: datetime.datetime
) -> dict[str, str]:
    """The ``SELECT`` of every view, by name (the schemas must be active)."""
    classes = _tables()
    t = {name: cls.full_table_name for name, cls in classes.items()}
    key = list(classes["trained"].primary_key)  # model, dataset, trainer (fn + hash) and seed
    model_cols = ", ".join(c for c in key if c != "seed")
    members = (
        "SELECT e.experiment_name, e.model_fn, e.model_hash, e.trainer_fn, e.trainer_hash, m.dataset_fn, "
        "m.dataset_hash, m.seed, e.experiment_comment, e.experiment_ts, e.experiment_spec "
        f"FROM {t['experiment']} e JOIN {t['member']} m ON m.experiment_name = e.experiment_name"
    )
    queries: dict[str, str] = {}
    names = ", ".join(_lit(n) for n in VIEW_DOCS)
    queries["views_version"] = (
        f"SELECT {VIEWS_VERSION} AS version, {_lit(prefix)}::text AS prefix, "
        f"ARRAY[{names}]::text[] AS views, {_lit(created_at.isoformat())}::timestamptz AS created_at, "
        f"{_lit(code_version)}::text AS code_version"
    )
    queries["model_scores"] = (
        f"SELECT x.experiment_name, s.seed, s.data_key, s.tier, {_select(_METRICS, 's')}, "
        "s.trained_fraction, s.trained_fraction > 0 AS contaminated, "
        f"{_oracle_columns('s')}, {_select(model_cols, 's')} "
        f"FROM {t['model_score']} s JOIN ({members}) x ON {_on('x', 's', key)} {_oracle_joins(t, 's')}"
    )
    queries["ensemble_scores"] = (
        f"SELECT s.ensemble_name, n.n_members, s.data_key, s.tier, {_select(_METRICS, 's')}, "
        f"s.trained_fraction, s.contaminated, {_oracle_columns('s')}, n.ensemble_comment, n.ensemble_ts "
        f"FROM {t['ensemble_score']} s JOIN {t['ensemble']} n ON n.ensemble_name = s.ensemble_name "
        f"{_oracle_joins(t, 's')}"
    )
    queries["ensemble_members"] = (
        f"SELECT m.ensemble_name, x.experiment_name, m.seed, {_select(model_cols, 'm')} "
        f"FROM {t['ensemble_member']} m LEFT JOIN ({members}) x ON {_on('x', 'm', key)}"
    )
    queries["oracles"] = (
        "SELECT i.data_key, i.tier, i.n_trials, i.n_images, i.responses_withheld, "
        "o.single_trial_correlation AS oracle_single_trial_correlation, "
        "o.correlation_to_average AS oracle_correlation_to_average, o.feve AS oracle_feve, "
        "r.single_trial_correlation AS loo_oracle_single_trial_correlation, "
        "r.n_trials AS loo_oracle_n_trials, r.n_images AS loo_oracle_n_images, r.fev AS loo_oracle_fev, "
        "r.n_neurons_fev AS loo_oracle_n_neurons_fev "
        f"FROM {t['tier_info']} i {_oracle_joins(t, 'i')}"
    )
    curve = ", ".join(f"p.{c}" for c in key) + ", x.experiment_name"
    queries["learning_curves"] = (
        "SELECT x.experiment_name, p.seed, p.epoch, p.lr, p.train_loss, p.val_corr, "
        "max(p.val_corr) OVER w AS best_val_corr_so_far, p.seconds, sum(p.seconds) OVER w AS elapsed_s, "
        f"t.epochs AS epochs_run, t.best_val_corr, {_select(model_cols, 'p')} "
        f"FROM {t['epoch']} p JOIN {t['trained']} t ON {_on('t', 'p', key)} "
        f"LEFT JOIN ({members}) x ON {_on('x', 'p', key)} "
        f"WINDOW w AS (PARTITION BY {curve} ORDER BY p.epoch)"
    )
    queries["models"] = _models_query(t, key, members, job_table=classes["trained"]().jobs.full_table_name)
    queries["jobs"], queries["job_queue"] = _job_queries()
    queries["workers"] = _workers_query(t["worker"], heartbeat_table)
    return queries


def _models_query(t: dict[str, str], key: list[str], members: str, job_table: str) -> str:
    """Declared members and trained models (a full join on the model key), with their provenance."""
    keys = ", ".join(f"COALESCE(x.{c}, t.{c}) AS {c}" for c in key)
    both = (
        f"SELECT {keys}, x.experiment_name, x.experiment_comment, x.experiment_ts, x.experiment_spec "
        f"FROM ({members}) x FULL JOIN (SELECT {', '.join(key)} FROM {t['trained']}) t "
        f"ON {_on('x', 't', key)}"
    )
    model_cols = ", ".join(c for c in key if c != "seed")
    trained = (
        "t.best_val_corr, t.epochs, t.code_version, t.python_version, t.torch_version, t.numpy_version, "
        "t.host, t.device, t.started_at, t.finished_at, t.duration_s, t.resumed_from_epoch, t.data_checksums"
    )
    state = (
        "CASE WHEN i.source_file IS NOT NULL THEN 'imported' WHEN t.seed IS NOT NULL THEN 'trained' "
        "WHEN j.status IS NOT NULL THEN j.status::text ELSE 'declared' END"
    )
    return (
        f"SELECT k.experiment_name, k.seed, {state} AS state, {_select(model_cols, 'k')}, "
        "mo.model_config, da.dataset_config, tr.trainer_config, mo.model_fabrikant, da.dataset_fabrikant, "
        "tr.trainer_fabrikant, mo.model_ts, da.dataset_ts, tr.trainer_ts, k.experiment_comment, "
        f"k.experiment_ts, k.experiment_spec, {trained}, "
        f"ARRAY(SELECT u.data_key FROM {t['used_scan']} u WHERE {_on('u', 'k', key)} ORDER BY u.data_key) "
        "AS data_keys, c.n_parameters, i.source_file AS imported_from, i.source_sha256 AS imported_sha256, "
        "p.device AS prediction_device, j.status::text AS job_status, "
        "NULLIF(j.error_message, '') AS job_error "
        f"FROM ({both}) k "
        f"LEFT JOIN {t['trained']} t ON {_on('t', 'k', key)} "
        f"LEFT JOIN {t['model']} mo ON {_on('mo', 'k', ('model_fn', 'model_hash'))} "
        f"LEFT JOIN {t['dataset']} da ON {_on('da', 'k', ('dataset_fn', 'dataset_hash'))} "
        f"LEFT JOIN {t['trainer']} tr ON {_on('tr', 'k', ('trainer_fn', 'trainer_hash'))} "
        f"LEFT JOIN {t['checkpoint']} c ON {_on('c', 'k', key)} "
        f"LEFT JOIN {t['imported']} i ON {_on('i', 'k', key)} "
        f"LEFT JOIN {t['prediction']} p ON {_on('p', 'k', key)} "
        f"LEFT JOIN {job_table} j ON {_on('j', 'k', key)}"
    )


def _job_queries() -> tuple[str, str]:
    """(``jobs``: one row per queue, ``job_queue``: every job) over every job table."""
    summaries, rows = [], []
    for position, (cls, job_table) in enumerate(job_tables(), start=1):
        schema, table = cls.database, cls.table_name
        job_name = job_table.rsplit(".", 1)[1].strip('"')

        def count(status: str) -> str:
            return f"count(*) FILTER (WHERE j.status::text = '{status}') AS {status}"

        summaries.append(
            f"SELECT {position} AS position, {_lit(cls.__name__)}::text AS table_name, "
            f"{_lit(schema)}::text AS schema_name, {_lit(table)}::text AS sql_table, "
            f"{_lit(job_name)}::text AS job_table, "
            + ", ".join(count(s) for s in ("pending", "reserved", "error", "ignore"))
            + f", (SELECT count(*) FROM {cls.full_table_name}) AS computed, "
            "min(j.created_time) FILTER (WHERE j.status::text = 'pending') AS oldest_pending, "
            "max(j.completed_time) FILTER (WHERE j.status::text = 'error') AS last_error_at "
            f"FROM {job_table} j"
        )
        job_key = ", ".join(f"{_lit(c)}, j.{_q(c)}" for c in cls.primary_key)
        rows.append(
            f"SELECT {_lit(cls.__name__)}::text AS table_name, jsonb_build_object({job_key}) AS key, "
            "j.status::text AS status, j.priority, j.created_time, j.scheduled_time, j.reserved_time, "
            'j.completed_time, j.duration, j.host, j.pid, j."user" AS db_user, j.error_message '
            f"FROM {job_table} j"
        )
    return " UNION ALL ".join(summaries), " UNION ALL ".join(rows)


def _workers_query(worker: str, heartbeat_table: str | None) -> str:
    """Worker runs with the seconds since their heartbeat; their timing from the token table if present."""
    since = "EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC') - w.last_seen)::double precision"
    if heartbeat_table is not None:
        timing, join = (
            "k.heartbeat_s, k.timeout_s",
            f"LEFT JOIN {heartbeat_table} k ON k.worker_id = w.worker_id",
        )
        overdue = f"(w.status = 'running' AND {since} > k.timeout_s)"
    else:  # no worker has registered with a token yet: the timing is unknown
        timing, join = "NULL::double precision AS heartbeat_s, NULL::double precision AS timeout_s", ""
        overdue = "NULL::boolean"
    return (
        "SELECT w.worker_id, w.host, w.pid, w.queue, w.device, w.status, w.started_at, w.last_seen, "
        f"{since} AS seconds_since_seen, {timing}, {overdue} AS overdue, w.current_table, w.current_key, "
        f"w.jobs_done, w.jobs_failed, w.stopped_at FROM {worker} w {join}"
    )


def views_sql(
    prefix: str,
    heartbeat_table: str | None = None,
    code_version: str = "",
    created_at: datetime.datetime | None = None,
) -> list[str]:
    """The statements that create the schema when missing, drop the views of this version and create them
    anew, with their comments and the schema's comment (run them in one transaction)."""
    schema = _q(views_schema(prefix))
    created_at = created_at or datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    queries = view_queries(prefix, heartbeat_table, code_version, created_at)
    sql = [
        f"CREATE SCHEMA IF NOT EXISTS {schema}",
        "DROP VIEW IF EXISTS " + ", ".join(f"{schema}.{_q(name)}" for name in VIEW_DOCS),
    ]
    for name, doc in VIEW_DOCS.items():
        view = f"{schema}.{_q(name)}"
        sql += [
            f"CREATE VIEW {view} AS {queries[name]}",
            f"COMMENT ON VIEW {view} IS {_lit(doc.description)}",
        ]
        sql += [f"COMMENT ON COLUMN {view}.{_q(c)} IS {_lit(text)}" for c, text in doc.columns.items()]
    sql.append(
        f"COMMENT ON SCHEMA {schema} IS "
        + _lit(f"sensorium-pipeline SQL views of prefix {prefix}, version {VIEWS_VERSION} (docs/sql.md)")
    )
    return sql


def _run(connection: dj.Connection, statement: str) -> None:
    # DataJoint passes an (empty) argument tuple, so psycopg2 reads '%' as a placeholder: double it
    connection.query(statement.replace("%", "%%"))


def create_views(
    connection: dj.Connection,
    prefix: str,
    *,
    heartbeat_table: str | None = None,
    after: Sequence[str] = (),
    code_version: str = "",
    timeout_s: float | None = None,
) -> list[str]:
    """Create the schema ``<prefix>views`` when missing, drop every view in it and create the views anew,
    then run ``after`` (grants), all in one transaction. Returns the names of the views.

    Args:
        connection: a connection whose login may create in the views' schema (its owner, or a superuser).
        prefix: the schema prefix (the schemas must be active with it).
        heartbeat_table: full name of the workers' token table (their heartbeat timing), or None; it is
            used only if it exists now.
        after: statements to run in the same transaction (the roles' owner and grants).
        code_version: recorded in ``views_version``.
        timeout_s: longest wait for another process recreating the views (default: the settings').

    Raises:
        ViewsError: something outside the schema (a view of one's own) depends on these views, so they
            cannot be dropped without CASCADE; nothing is changed.
    """
    from schemas.locks import advisory_lock

    if heartbeat_table is not None:
        exists = connection.query("SELECT to_regclass(%s)", args=(heartbeat_table,)).fetchone()[0]
        heartbeat_table = heartbeat_table if exists else None
    statements = views_sql(prefix, heartbeat_table, code_version)
    schema = views_schema(prefix)
    with connection.transaction:
        # two processes recreating at once would each drop what they saw, then collide on CREATE VIEW
        advisory_lock(
            connection,
            f"sensorium-views:{prefix}",
            f"the views of prefix {prefix!r}",
            transaction=True,
            timeout_s=timeout_s,
        )
        _run(connection, f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
        # every view there, those of earlier versions included (views_sql drops only this version's)
        existing = [
            r[0]
            for r in connection.query(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'v' ORDER BY 1",
                args=(schema,),
            ).fetchall()
        ]
        if existing:  # one statement: dependencies among them are no obstacle, other objects' are
            try:
                _run(connection, "DROP VIEW " + ", ".join(f"{_q(schema)}.{_q(v)}" for v in existing))
            except Exception as err:
                if "depend" not in str(err).lower():
                    raise
                raise ViewsError(
                    f"{schema}: {_first_line(err)} (something outside the schema uses these views: drop it "
                    "first); nothing was changed"
                ) from err
        for statement in [*statements, *after]:
            _run(connection, statement)
    return list(VIEW_DOCS)


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def installed_version(connection: dj.Connection, prefix: str) -> int | None:
    """Version of the installed views of ``prefix`` (None: not created, or not readable by this login)."""
    schema = views_schema(prefix)
    readable = connection.query(
        "SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n WHERE n.nspname = %s", args=(schema,)
    ).fetchone()
    if not readable or not readable[0]:
        return None
    view = f"{_q(schema)}.{_q('views_version')}"
    if connection.query("SELECT to_regclass(%s)", args=(view,)).fetchone()[0] is None:
        return None
    if not connection.query("SELECT has_table_privilege(%s, 'SELECT')", args=(view,)).fetchone()[0]:
        return None
    return int(connection.query(f"SELECT version FROM {view}").fetchone()[0])
