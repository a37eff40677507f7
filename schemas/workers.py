"""Which tables a worker populates, in dependency order, and the populate loop."""

from __future__ import annotations

import logging
from typing import Any

from schemas.data import TrialOrder
from schemas.evaluation import ModelScore, OracleScore, Prediction
from schemas.training import TrainedModel

log = logging.getLogger(__name__)

#: queue name -> tables, in dependency order. GPU workers train and predict; CPU workers do the rest.
QUEUES: dict[str, list] = {
    "all": [TrialOrder, TrainedModel, Prediction, ModelScore, OracleScore],
    "gpu": [TrainedModel, Prediction],
    "cpu": [TrialOrder, ModelScore, OracleScore],
}


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
        results[table.__name__] = table.populate(
            *args,
            reserve_jobs=reserve_jobs,
            suppress_errors=suppress_errors,
            max_calls=max_calls,
            display_progress=False,
        )
    return results
