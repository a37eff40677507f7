"""Trained models by their names, for what ``sensorium train`` / ``populate`` show: which models a run
trained, each named by its experiment and seed, and their test scores beside the oracle.

Read-only; nothing here prints. The names come from ``jobs.labels`` (the job loop names failed jobs the
same way), the oracles from :func:`usecases.queries.score_rows` (what ``sensorium scores`` shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.labels import experiment_names, key_label, model_key
from pipeline.training.progress import member_label
from schemas.evaluation import ModelScore
from schemas.training import TrainedModel
from usecases.queries import score_rows

__all__ = ["FinalScore", "key_label", "model_name", "test_scores", "trained_keys"]


def trained_keys(restriction: Any = None) -> list[dict]:
    """Primary keys of the trained models (of ``restriction``, e.g. an experiment's models)."""
    query = TrainedModel.proj() if restriction is None else (TrainedModel & restriction).proj()
    return query.keys()


def model_name(key: dict) -> str:
    """A trained model's name: ``tiny (seed 1)`` (its experiments and seed; the short model hash where
    no experiment declares it)."""
    return member_label(experiment_names(key), str(key["model_hash"]), int(key["seed"]))


@dataclass(frozen=True)
class FinalScore:
    """One trained model's score on one scan's test tier, beside that tier's oracle.

    ``oracle_kind``: ``oracle`` for the planted one (synthetic scans), ``LOO`` for the leave-one-out
    oracle from repeated images, None when the tier has neither. ``data_key`` None: the model has no
    test score (not scored yet, or every test tier's responses are withheld).
    """

    model: str
    data_key: str | None = None
    correlation: float | None = None
    oracle: float | None = None
    oracle_kind: str | None = None

    @property
    def fraction(self) -> float | None:
        """The correlation as a share of the oracle (None without one, or with an oracle <= 0: no ceiling)."""
        if self.correlation is None or self.oracle is None or self.oracle <= 0:
            return None
        return self.correlation / self.oracle


def test_scores(keys: list[dict]) -> list[FinalScore]:
    """The test-tier scores of the models of ``keys``: one per model and scored scan (one empty
    :class:`FinalScore` for a model without any), with the oracle ``sensorium scores`` shows beside it:
    the planted one where the scan has ground truth, else the leave-one-out one."""
    # an oracle belongs to a scan's tier, whichever experiment's rows carry it
    oracles: dict[str, dict] = {}  # data_key -> a score row of its test tier
    asked: set[str] = set()  # experiments whose score rows were read
    out = []
    for key in keys:
        model = model_key(key)
        if model is None:
            continue
        names = experiment_names(model)
        label = member_label(names, str(model["model_hash"]), int(model["seed"]))
        # this model's own rows: an experiment may hold two members with one seed (on two splits)
        own = (ModelScore & model & {"tier": "test"}).to_dicts(order_by="data_key")
        if not own:
            out.append(FinalScore(label))
            continue
        for name in set(names) - asked:
            asked.add(name)
            for r in score_rows(name):
                if r["tier"] == "test":
                    oracles.setdefault(r["data_key"], r)
        for row in own:
            shown = oracles.get(row["data_key"], {})
            oracle, kind = shown.get("oracle_single_trial_correlation"), "oracle"
            if oracle is None:
                oracle, kind = shown.get("loo_oracle_single_trial_correlation"), "LOO"
            out.append(
                FinalScore(
                    label,
                    row["data_key"],
                    float(row["single_trial_correlation"]),
                    None if oracle is None else float(oracle),
                    None if oracle is None else kind,
                )
            )
    return out
