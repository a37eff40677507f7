"""Which tables a worker populates, in dependency order, and the populate loop."""

from __future__ import annotations

import logging
from typing import Any

from schemas.data import TrialOrder
from schemas.evaluation import EnsembleScore, ModelScore, OracleScore, Prediction, register_declared_ensembles
from schemas.regressors import BehaviorNormalization, History, NetworkState, SplitSet
from schemas.training import TrainedModel

REGRESSORS = [TrialOrder, BehaviorNormalization, History, NetworkState, SplitSet]

log = logging.getLogger(__name__)

#: queue name -> tables, in dependency order. GPU workers train and predict; CPU workers do the rest.
QUEUES: dict[str, list] = {
    "all": [*REGRESSORS, TrainedModel, Prediction, ModelScore, OracleScore, EnsembleScore],
    # regressors are cheap and must exist before training: a GPU worker computes any that are missing
    "gpu": [*REGRESSORS, TrainedModel, Prediction],
    "cpu": [*REGRESSORS, ModelScore, OracleScore, EnsembleScore],
}


def release_dead_reservations(table) -> int:
    """Re-queue jobs reserved by workers whose database connection is gone (killed or crashed workers).

    Every reservation records the worker's connection id (the PostgreSQL backend pid). A reservation whose
    connection no longer exists can never complete, so it is put back to ``pending``. This needs no
    timeout guess, unlike DataJoint's ``orphan_timeout``.

    Returns:
        How many jobs were re-queued.
    """
    conn = table.connection
    if conn.adapter.backend != "postgresql":
        return 0
    alive = {int(r[0]) for r in conn.query("SELECT pid FROM pg_stat_activity").fetchall()}
    released = 0
    for job in table.jobs.reserved.to_dicts():
        if int(job["connection_id"]) in alive:
            continue
        key = {k: job[k] for k in table.primary_key}
        (table.jobs & key).delete_quick()
        table.jobs.insert1({**key, "status": "pending", "priority": job["priority"]})
        log.warning(
            "re-queued %s %s: its worker (host %s, pid %s) is gone",
            table.__name__,
            key,
            job["host"],
            job["pid"],
        )
        released += 1
    return released


def populate(
    queue: str = "all",
    restriction: Any = None,
    *,
    reserve_jobs: bool = False,
    suppress_errors: bool = False,
    max_calls: int | None = None,
) -> dict[str, dict]:
    """Populate the tables of ``queue`` in order; returns ``{table: {'success_count', 'error_list'}}``.

    With ``reserve_jobs`` several workers can run at once: each key is reserved in the table's job queue,
    and failures are recorded there with their error message and stack.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {sorted(QUEUES)}")
    results = {}
    for table in QUEUES[queue]:
        args = [] if restriction is None else [restriction]
        if reserve_jobs:
            release_dead_reservations(table)
        if table is EnsembleScore:
            register_declared_ensembles()  # experiments' ensembles whose members are all trained
        results[table.__name__] = table.populate(
            *args,
            reserve_jobs=reserve_jobs,
            suppress_errors=suppress_errors,
            max_calls=max_calls,
            display_progress=False,
        )
    return results
