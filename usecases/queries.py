"""Read-only lookups shared by the CLI, the worker, notebooks and reports.

Each function returns plain Python data (dicts, arrays); nothing here prints.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import numpy as np

from schemas.data import Scan
from schemas.evaluation import (
    Ensemble,
    EnsembleScore,
    ModelScore,
    OracleScore,
    Prediction,
    RepeatOracle,
    ensemble_predictions,
    scan_targets,
    tier_ids,
)
from schemas.fabrik import Experiment, experiment_models

# -- names users give ------------------------------------------------------------------------------------

#: known names shown in an error (the rest are counted): the line stays one line with hundreds of sweep trials
KNOWN_SHOWN = 12
#: what stores each kind of name, and how to get a first one
_NAMES = {
    "experiment": ("experiment_name", "`sensorium experiment add FILE.yaml` adds one"),
    "scan": ("data_key", "`sensorium ingest` adds one"),
    "ensemble": ("ensemble_name", "an experiment's `ensemble:` declares one"),
}


class UnknownNameError(LookupError):
    """Names of an experiment, scan or ensemble that are not stored: one line,
    ``unknown experiment 'foo' (known: a, b, c)``."""

    def __init__(self, kind: str, names: list[str], known: list[str]) -> None:
        self.kind, self.names, self.known = kind, names, known
        super().__init__(unknown_name_message(kind, names, known))


def unknown_name_message(kind: str, names: list[str], known: list[str]) -> str:
    """``unknown experiment 'foo' (known: a, b, c)``: close matches first, at most ``KNOWN_SHOWN`` names,
    and what adds a first one when none is stored."""
    what = f"unknown {kind}{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)}"
    if not known:
        return f"{what} (none is stored yet: {_NAMES[kind][1]})"
    close = [m for n in names for m in difflib.get_close_matches(n, known, n=3, cutoff=0.6)]
    ordered = list(dict.fromkeys([*close, *sorted(known)]))
    shown = ", ".join(ordered[:KNOWN_SHOWN])
    more = len(ordered) - KNOWN_SHOWN
    if more > 0:
        shown += f" and {more} more" + (": `sensorium experiment list`" if kind == "experiment" else "")
    return f"{what} (known: {shown})"


def known_names(kind: str) -> list[str]:
    """The stored names of ``kind`` (experiment, scan or ensemble), sorted."""
    table: Any = {"experiment": Experiment, "scan": Scan, "ensemble": Ensemble}[kind]
    attribute = _NAMES[kind][0]
    return sorted(str(r[attribute]) for r in table.proj().to_dicts())


def require_names(kind: str, names: str | Iterable[str] | None) -> None:
    """Refuse names of ``kind`` (experiment, scan or ensemble) that are not stored (None: nothing given).

    Raises:
        UnknownNameError: one line naming the unknown ones and the known ones.
    """
    if names is None:
        return
    wanted = [names] if isinstance(names, str) else list(names)
    if not wanted:
        return
    known = known_names(kind)
    missing = [n for n in dict.fromkeys(wanted) if n not in set(known)]
    if missing:
        raise UnknownNameError(kind, missing, known)


def _score_row(
    label: str, member: str, r: dict, oracle: dict, repeat_oracle: dict, contaminated: bool
) -> dict:
    o = oracle.get((r["data_key"], r["tier"]))
    loo = repeat_oracle.get((r["data_key"], r["tier"]))
    return {
        "model": label,
        "member": member,
        "data_key": r["data_key"],
        "tier": r["tier"],
        "n_trials": r["n_trials"],
        "single_trial_correlation": r["single_trial_correlation"],
        "correlation_to_average": r["correlation_to_average"],
        "feve": r["feve"],
        "contaminated": contaminated,
        "oracle_single_trial_correlation": o["single_trial_correlation"] if o else None,
        "oracle_feve": o["feve"] if o else None,
        "loo_oracle_single_trial_correlation": loo["single_trial_correlation"] if loo else None,
        "loo_oracle_n_images": loo["n_images"] if loo else None,
    }


def score_rows(experiment: str | None = None, ensemble: str | None = None) -> list[dict]:
    """Score rows of experiments' models and of ensembles, with the oracles beside them.

    ``contaminated`` marks a tier whose trials the model (or a member) trained on: the train tier, and
    the validation tier of re-split ensemble members (docs/model.md#ensembles). Test tiers are the headline.

    Two oracles, each None where it does not exist: ``oracle_*`` is the planted expected response
    (``OracleScore``: synthetic scans only); ``loo_oracle_*`` the leave-one-out oracle from the repeats
    (``RepeatOracle``: every tier with repeated images), the ceiling of a stimulus-only model, which a
    model that uses behaviour, history and state may exceed.
    """
    oracle = {(r["data_key"], r["tier"]): r for r in OracleScore.to_dicts()}
    repeat = {(r["data_key"], r["tier"]): r for r in RepeatOracle.to_dicts()}
    out = []
    if ensemble is None:
        # a trained model belongs to an experiment through all of its configs (model, trainer, dataset, seed)
        for r in (ModelScore * experiment_models(experiment)).to_dicts(
            order_by=("experiment_name", "seed", "data_key")
        ):
            out.append(
                _score_row(
                    r["experiment_name"], f"seed {r['seed']}", r, oracle, repeat, r["trained_fraction"] > 0
                )
            )
    if experiment is None or ensemble is not None:
        ens = EnsembleScore * Ensemble.proj("n_members")
        if ensemble:
            ens = ens & {"ensemble_name": ensemble}
        for r in ens.to_dicts(order_by=("ensemble_name", "data_key")):
            label = f"{r['ensemble_name']} [ens]"
            out.append(
                _score_row(label, f"{r['n_members']} members", r, oracle, repeat, bool(r["contaminated"]))
            )
    return out


def predictions_of(experiment: str | None, ensemble: str | None, seed: int | None) -> dict[str, np.ndarray]:
    """{data_key: (T, N) predictions} of one experiment model or of an ensemble (stored, not recomputed).

    Raises:
        UnknownNameError: no experiment or ensemble of that name.
        LookupError: no predictions yet, or several models and no ``seed`` to choose.
    """
    if ensemble is not None:
        require_names("ensemble", ensemble)
        members = (Ensemble.Member & {"ensemble_name": ensemble}).keys()
        keys = set.intersection(
            *({r["data_key"] for r in (Prediction.PerScan & m).proj().to_dicts()} for m in members)
        )
        if not keys:
            raise LookupError(
                f"ensemble {ensemble!r} has no member predictions yet; run `sensorium populate`"
            )
        return {k: ensemble_predictions({"ensemble_name": ensemble}, k) for k in sorted(keys)}
    require_names("experiment", experiment)
    exp = experiment_models(experiment)
    if seed is not None:
        seeds = sorted({int(r["seed"]) for r in exp.proj().to_dicts()})
        if seed not in seeds:
            raise LookupError(f"experiment {experiment!r} has no member of seed {seed} (its seeds: {seeds})")
        exp = exp & {"seed": seed}
    per_scan = Prediction.PerScan & exp
    models = {(r["dataset_hash"], r["seed"]) for r in per_scan.proj().to_dicts()}
    if not models:
        raise LookupError(f"no predictions for experiment {experiment!r}; run `sensorium populate` first")
    if len(models) > 1:
        seeds = sorted({s for _, s in models})
        raise LookupError(
            f"experiment {experiment!r} has {len(models)} models (seeds {seeds}); choose one with --seed "
            "(members sharing a seed on different splits: use an ensemble)"
        )
    return {r["data_key"]: r["predictions"] for r in per_scan.to_dicts(order_by="data_key")}


def prediction_arrays(
    experiment: str | None, ensemble: str | None, seed: int | None, tier: str
) -> dict[str, np.ndarray]:
    """Predictions of a model (or an ensemble's mean) for one tier, with everything needed to use them:
    ``<data key>/predictions`` (T, N), ``/targets`` (T, N) in the same units, ``/trial_id`` (T,) rows of the
    scan, ``/trial_idx`` and ``/image_ids`` (T,), ``/neuron_ids`` (N,). Scans without trials in the tier
    are left out (an empty dict: none has any).

    Raises:
        LookupError: no such experiment, member or ensemble, or its predictions are not computed.
    """
    arrays: dict[str, np.ndarray] = {}
    for k, predictions in predictions_of(experiment, ensemble, seed).items():
        idx, ids = tier_ids(k, tier)
        if len(idx) == 0:
            continue
        targets, _, _ = scan_targets(k)
        arrays[f"{k}/predictions"] = np.asarray(predictions)[idx]
        arrays[f"{k}/targets"] = targets[idx]
        arrays[f"{k}/trial_id"] = idx
        arrays[f"{k}/trial_idx"] = ids.trial_idx
        arrays[f"{k}/image_ids"] = ids.image_ids
        arrays[f"{k}/neuron_ids"] = ids.unit_ids
    return arrays
