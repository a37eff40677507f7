"""Which tables a worker serves (queues), in dependency order, and what the job loop does around them.

Per-table hooks sit beside the table lists, so that the runner (:mod:`jobs.runner`) stays generic: it
never names a particular table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datajoint.errors import DuplicateError

from schemas.data import ExactTrialOrder, TrialOrder
from schemas.evaluation import (
    EnsembleScore,
    ModelScore,
    OracleScore,
    Prediction,
    RepeatOracle,
    register_declared_ensembles,
)
from schemas.regressors import BehaviorNormalization, History, NetworkState, SplitSet
from schemas.training import TrainedModel

REGRESSORS: list[Any] = [TrialOrder, ExactTrialOrder, BehaviorNormalization, History, NetworkState, SplitSet]

#: queue name -> tables, in dependency order. GPU workers train and predict; CPU workers do the rest.
QUEUES: dict[str, list[Any]] = {
    "all": [*REGRESSORS, TrainedModel, Prediction, ModelScore, OracleScore, RepeatOracle, EnsembleScore],
    # regressors are cheap and must exist before training: a GPU worker computes any that are missing
    "gpu": [*REGRESSORS, TrainedModel, Prediction],
    "cpu": [*REGRESSORS, ModelScore, OracleScore, RepeatOracle, EnsembleScore],
}


@dataclass(frozen=True)
class Hooks:
    """What the job loop does around one table's jobs (every hook is optional).

    ``before_refresh()``: before the table's queue is refreshed from its key source (and before a plain
    ``populate`` pass over it). ``after_job(key)``: after a job's row is committed and its reservation
    removed. ``after_pass()``: after a plain (unreserved) ``populate`` pass over the table.
    """

    before_refresh: Callable[[], Any] | None = None
    after_job: Callable[[dict], Any] | None = None
    after_pass: Callable[[], Any] | None = None


def _register_ensembles() -> None:
    """Experiments' ensembles whose members are all trained become ``Ensemble`` rows (their scores are
    then EnsembleScore's keys); another worker may register the same ensemble at this moment."""
    with contextlib.suppress(DuplicateError):
        register_declared_ensembles()


#: table -> its hooks; a table not listed has none
HOOKS: dict[type, Hooks] = {
    EnsembleScore: Hooks(before_refresh=_register_ensembles),
    # the training checkpoint of a committed row is no longer needed; a crash between commit and delete
    # leaves one, which the next plain pass collects
    TrainedModel: Hooks(after_job=TrainedModel.discard_checkpoint, after_pass=TrainedModel.sweep_checkpoints),
}
NO_HOOKS = Hooks()


def hooks(table: type) -> Hooks:
    """The hooks of ``table`` (:data:`NO_HOOKS` when it has none)."""
    return HOOKS.get(table, NO_HOOKS)


def queue_tables(queue: str) -> list:
    """The tables of ``queue`` in order.

    Raises:
        ValueError: unknown queue name.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {sorted(QUEUES)}")
    return QUEUES[queue]


_JOBS: dict[tuple[type, int], Any] = {}


def jobs_of(table) -> Any:
    """The job table of ``table``, made once per process and connection.

    ``Table.jobs`` builds a new ``Job`` object (and re-derives its definition from the dependency
    graph, about 10 ms) on every access from the class; a worker touches it several times per job.
    """
    key = (table, id(table.connection))
    if key not in _JOBS:
        _JOBS[key] = table().jobs
    return _JOBS[key]
