"""Read-only lookups shared by the CLI, the worker, notebooks and reports.

Each function returns plain Python data (dicts, arrays); nothing here prints.
"""

from __future__ import annotations

import numpy as np

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
from schemas.fabrik import experiment_models


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
    the validation tier of re-split ensemble members (SPEC 3g). Test tiers are the headline.

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
        LookupError: no such ensemble, no predictions yet, or several models and no ``seed`` to choose.
    """
    if ensemble is not None:
        if not Ensemble & {"ensemble_name": ensemble}:
            raise LookupError(f"no ensemble named {ensemble!r}")
        members = (Ensemble.Member & {"ensemble_name": ensemble}).keys()
        keys = set.intersection(
            *({r["data_key"] for r in (Prediction.PerScan & m).proj().to_dicts()} for m in members)
        )
        if not keys:
            raise LookupError(
                f"ensemble {ensemble!r} has no member predictions yet; run `sensorium populate`"
            )
        return {k: ensemble_predictions({"ensemble_name": ensemble}, k) for k in sorted(keys)}
    exp = experiment_models(experiment)
    if seed is not None:
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
