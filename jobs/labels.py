"""Names of job keys for people: a model's experiment and seed instead of its configuration hashes.

A job key of ``TrainedModel``, ``Prediction`` or ``ModelScore`` holds a model key (the model, dataset and
trainer hashes and the seed); the experiment that declared that model is only known in ``Experiment``.
:func:`key_label` looks it up, read-only, so that error messages and log lines can say ``tiny (seed 1)``
where the key says ``model_hash=3f2a9c...``. Keys of other tables (regressors, oracles, ensembles) are
shown as they are, with long values cut.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.training.progress import member_label
from schemas.fabrik import experiment_models

log = logging.getLogger(__name__)

#: the attributes of a key that identify one trained model
MODEL_KEY = ("model_fn", "model_hash", "dataset_fn", "dataset_hash", "trainer_fn", "trainer_hash", "seed")


def short_key(key: dict) -> str:
    """A key for log lines: builder names left out (the hash beside them says it), hashes cut to 8."""
    parts = [f"{k}={str(v)[:8] if len(str(v)) > 16 else v}" for k, v in key.items() if not k.endswith("_fn")]
    return "{" + ", ".join(parts) + "}"


def model_key(key: dict) -> dict[str, Any] | None:
    """The model part of ``key`` (:data:`MODEL_KEY`), or None when ``key`` is not a model's key."""
    if not all(k in key for k in MODEL_KEY):
        return None
    return {k: key[k] for k in MODEL_KEY}


def experiment_names(key: dict) -> list[str]:
    """Names of the experiments that declare the model of ``key`` (sorted; empty when none does)."""
    model = model_key(key)
    if model is None:
        return []
    rows = (experiment_models() & model).proj().to_dicts()
    return sorted({r["experiment_name"] for r in rows})


def model_of(key: dict) -> str | None:
    """The model of ``key`` for people, ``tiny (seed 1)`` (the short model hash where no experiment
    declares it); None when ``key`` is not a model's key or the lookup failed.

    Never raises (the database may be what just failed): a label must not hide the error it names.
    """
    model = model_key(key)
    if model is None:
        return None
    try:
        names = experiment_names(model)
    except Exception as err:
        log.debug("no experiment name for %s: %s", short_key(key), err)
        return None
    return member_label(names, str(model["model_hash"]), int(model["seed"]))


def key_label(key: dict) -> str:
    """``key`` for people: :func:`model_of` followed by the rest of the key (``tiny (seed 1)``, or
    ``tiny (seed 1) data_key=..., tier=test`` for a score); :func:`short_key` for any other key."""
    label = model_of(key)
    if label is None:
        return short_key(key)
    rest = {k: v for k, v in key.items() if k not in MODEL_KEY}
    return label if not rest else f"{label} {short_key(rest)[1:-1]}"
