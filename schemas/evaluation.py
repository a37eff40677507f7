"""Predictions and scores: ``Prediction`` (every trial, once per model), ``ModelScore`` per trained model x
scan x tier, ``OracleScore`` per synthetic scan x tier (the planted expected response as the prediction),
``RepeatOracle`` per scan x tier with repeated images (the leave-one-out oracle, from the data alone)."""

from __future__ import annotations

import datajoint as dj
import numpy as np

from pipeline.data.precision import response_precision
from pipeline.scoring.evaluate import TierScore, score_tier
from pipeline.scoring.metrics import leave_one_out_score
from schemas.binding import bound_settings
from schemas.data import GroundTruth, Scan, Tier  # noqa: F401 - Tier is referenced in table definitions
from schemas.training import TrainedModel, load_trained_model

schema = dj.Schema()


@schema
class Prediction(dj.Computed):
    definition = """
    # predictions of a trained model for every trial of its scans (computed once, reused by all scores)
    -> TrainedModel
    ---
    device              : varchar(255)    # where the predictions were computed
    """

    class PerScan(dj.Part):
        definition = """
        # (T, N) predicted responses of one scan, file-index order, in the normalised units the model sees
        -> master
        -> Scan
        ---
        predictions     : <npy@sensorium> # (T, N) float32, all tiers
        """

    def make_fetch(self, key: dict) -> tuple[list[str]]:
        return ([r["data_key"] for r in (TrainedModel.UsedScan & key).to_dicts(order_by="data_key")],)

    def make_compute(self, key: dict, data_keys: list[str]):
        # torch, here only: commands that read scores import this module without it
        from pipeline.provenance import device_name
        from pipeline.scoring.predict import predict_all
        from pipeline.training.seeding import resolve_device

        settings = bound_settings()
        device = resolve_device(settings.device)
        model, scans = load_trained_model(key, device, settings.cache_dir)
        arrays = {k: predict_all(model, scans[k]) for k in data_keys}
        return device_name(device), arrays

    def make_insert(self, key: dict, device: str, arrays: dict[str, np.ndarray]) -> None:
        self.insert1(dict(key, device=device[:255]))
        self.PerScan.insert(
            [dict(key, data_key=k, predictions=v.astype(np.float32)) for k, v in arrays.items()]
        )


def _scorable_tiers():
    """(data_key, tier) pairs whose responses exist (competition test tiers are withheld)."""
    return (Scan.TierInfo & {"responses_withheld": False}).proj()


def scan_targets(data_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised responses (T, N) as the model sees them, tiers (T,), image ids (T,)."""
    row = (Scan & {"data_key": data_key}).fetch1()
    p = response_precision(row["statistics"]["responses"]["all"]["std"])
    trials = (Scan.Trial & {"data_key": data_key}).to_dicts(order_by="trial_id")
    tiers = np.array([t["tier"] for t in trials])
    image_ids = np.array([t["frame_image_id"] for t in trials])
    return np.asarray(row["responses"], dtype=np.float32) * p[None], tiers, image_ids


def tier_ids(data_key: str, tier: str):
    """File indices (n,) of ``tier`` and its :class:`~pipeline.scoring.submission.TierIds`."""
    from pipeline.scoring.submission import TierIds

    key = {"data_key": data_key}
    trials = (Scan.Trial & key).to_dicts(order_by="trial_id")
    idx = np.array([t["trial_id"] for t in trials if t["tier"] == tier], dtype=np.int64)
    by_id = {t["trial_id"]: t for t in trials}
    units = np.array([n["unit_id"] for n in (Scan.Neuron & key).to_dicts(order_by="neuron_idx")])
    return idx, TierIds(
        trial_idx=np.array([by_id[i]["trial_idx"] for i in idx], dtype=str),
        image_ids=np.array([by_id[i]["frame_image_id"] for i in idx], dtype=np.int64),
        unit_ids=units,
    )


def training_tiers(model_key: dict, data_key: str) -> np.ndarray:
    """(T,) the tier labels a trained model was trained with on one scan (its split, or the original)."""
    from schemas.fabrik import Dataset
    from schemas.regressors import SplitParamSet, SplitSet

    config = (Dataset & model_key).fetch1("dataset_config")
    split = config.get("split")
    if split is not None:
        key = dict(SplitParamSet.key_of(split), data_key=data_key, split_index=int(split.get("index", 0)))
        return np.asarray((SplitSet.Split & key).fetch1("tiers")).astype(str)
    return _original_tiers(data_key)


def trained_fraction(model_key: dict, data_key: str, tier: str, original: np.ndarray) -> float:
    """Share of the trials of ``tier`` (original labels ``original``) that the model trained on."""
    mask = original == tier
    return float((training_tiers(model_key, data_key)[mask] == "train").mean()) if mask.any() else 0.0


def _insert_scores(table, key: dict, predictions: np.ndarray, **extra) -> None:
    """Score ``predictions`` (T, N) on the key's tier of its scan; insert the master and neuron rows."""
    targets, tiers, image_ids = scan_targets(key["data_key"])
    mask = tiers == key["tier"]
    master, neurons = _score_rows(key, score_tier(targets[mask], predictions[mask], image_ids[mask]))
    table.insert1(dict(master, **extra))
    table.Neuron.insert(neurons)


def _original_tiers(data_key: str) -> np.ndarray:
    return np.array([t["tier"] for t in (Scan.Trial & {"data_key": data_key}).to_dicts(order_by="trial_id")])


def _score_rows(key: dict, score: TierScore) -> tuple[dict, list[dict]]:
    master = dict(
        key,
        n_trials=score.n_trials,
        single_trial_correlation=score.single_trial_correlation,
        correlation_to_average=score.correlation_to_average,
        feve=score.feve,
        n_neurons_feve=score.n_neurons_feve,
    )

    def opt(arr, i):
        return None if arr is None or not np.isfinite(arr[i]) else float(arr[i])

    neurons = [
        dict(
            key,
            neuron_idx=i,
            correlation=float(score.per_neuron_correlation[i]),
            correlation_to_average=float(score.per_neuron_correlation_to_average[i]),
            fev=opt(score.per_neuron_fev, i),
            feve=opt(score.per_neuron_feve, i),
        )
        for i in range(len(score.per_neuron_correlation))
    ]
    return master, neurons


_SCORE_COLUMNS = """
    n_trials            : int32           # trials in the tier
    single_trial_correlation : float64    # mean over neurons of the per-neuron correlation over trials
    correlation_to_average : float64      # mean over neurons of the correlation of repeat-averaged values
    feve = null         : float64         # mean FEVE over neurons with FEV >= 0.15 (null without repeats)
    n_neurons_feve      : int32           # neurons entering the FEVE mean
"""
_NEURON_COLUMNS = """
        correlation     : float64         # single-trial correlation
        correlation_to_average : float64  # correlation of repeat-averaged values
        fev = null      : float64         # fraction of explainable variance (null without repeats)
        feve = null     : float64         # fraction of explainable variance explained
"""


@schema
class ModelScore(dj.Computed):
    definition = (
        """
    # the metrics (docs/model.md#metrics) for one trained model on one tier of one scan
    -> Prediction.PerScan
    -> Tier
    ---
    trained_fraction    : float32         # share of the tier's trials it trained on (>0: contaminated)
    """
        + _SCORE_COLUMNS
    )

    class Neuron(dj.Part):
        definition = (
            """
        # per-neuron metrics
        -> master
        -> Scan.Neuron
        ---
        """
            + _NEURON_COLUMNS
        )

    @property
    def key_source(self):
        return Prediction.PerScan.proj() * _scorable_tiers()

    def make(self, key: dict) -> None:
        predictions = np.asarray((Prediction.PerScan & key).fetch1("predictions"))
        fraction = trained_fraction(key, key["data_key"], key["tier"], _original_tiers(key["data_key"]))
        _insert_scores(self, key, predictions, trained_fraction=fraction)


@schema
class OracleScore(dj.Computed):
    definition = (
        """
    # the same metrics for the planted expected response of a synthetic scan: the best possible score
    -> GroundTruth
    -> Tier
    ---
    """
        + _SCORE_COLUMNS
    )

    class Neuron(dj.Part):
        definition = (
            """
        # per-neuron metrics of the oracle
        -> master
        -> Scan.Neuron
        ---
        """
            + _NEURON_COLUMNS
        )

    @property
    def key_source(self):
        return GroundTruth.proj() * _scorable_tiers()

    def make(self, key: dict) -> None:
        row = (Scan & key).fetch1("statistics")
        expected = np.asarray((GroundTruth & key).fetch1("expected"), dtype=np.float32)
        _insert_scores(self, key, expected * response_precision(row["responses"]["all"]["std"])[None])


@schema
class RepeatOracle(dj.Computed):
    definition = """
    # leave-one-out oracle: each repeat of an image against the mean of its other repeats (any scan)
    -> Scan.TierInfo
    ---
    n_trials            : int32           # trials of images shown at least twice (the trials correlated)
    n_images            : int32           # images shown at least twice
    single_trial_correlation : float64    # mean over neurons of the per-neuron leave-one-out correlation
    fev = null          : float64         # mean over neurons of the fraction of explainable variance
    n_neurons_fev       : int32           # neurons with FEV >= 0.15 (those FEVE averages over)
    """

    class Neuron(dj.Part):
        definition = """
        # per-neuron leave-one-out oracle
        -> master
        -> Scan.Neuron
        ---
        correlation     : float64         # leave-one-out correlation over the trials of repeated images
        fev = null      : float64         # fraction of explainable variance (null: constant on them)
        """

    @property
    def key_source(self):
        # known responses, and at least one image shown twice (more trials than distinct images)
        return (Scan.TierInfo & {"responses_withheld": False} & "n_trials > n_images").proj()

    def make(self, key: dict) -> None:
        targets, tiers, image_ids = scan_targets(key["data_key"])
        mask = tiers == key["tier"]
        score = leave_one_out_score(targets[mask], image_ids[mask])
        self.insert1(
            dict(
                key,
                n_trials=score.n_trials,
                n_images=score.n_images,
                single_trial_correlation=score.correlation,
                fev=score.fev,
                n_neurons_fev=score.n_neurons_fev,
            )
        )
        fev = score.per_neuron_fev
        self.Neuron.insert(
            [
                dict(
                    key,
                    neuron_idx=i,
                    correlation=float(c),
                    fev=float(fev[i]) if np.isfinite(fev[i]) else None,
                )
                for i, c in enumerate(score.per_neuron_correlation)
            ]
        )


# ------------------------------------------------------------------------------------------------------
# ensembles (see docs/model.md#ensembles)
# ------------------------------------------------------------------------------------------------------


@schema
class Ensemble(dj.Manual):
    definition = """
    # a mean ensemble of trained models
    ensemble_name       : varchar(64)     # name (an experiment's `ensemble`, or given)
    ---
    ensemble_comment = "" : varchar(256)  # free text
    member_hash         : char(32)        # hash of the sorted member keys
    n_members           : int32           # members
    ensemble_ts = CURRENT_TIMESTAMP : datetime  # when created
    """

    class Member(dj.Part):
        definition = """
        # one member
        -> master
        -> TrainedModel
        """


def declared_ensemble(experiment_row: dict) -> str | None:
    """Name of the ensemble an ``Experiment`` row declares (its ``ensemble:``; default: its own name)."""
    decl = (experiment_row["experiment_spec"] or {}).get("ensemble")
    return (decl.get("name") or experiment_row["experiment_name"]) if decl else None


def member_hash(members: list[dict]) -> str:
    """Order-independent hash of member keys."""
    import hashlib
    import json

    canon = sorted(json.dumps(m, sort_keys=True, default=str) for m in members)
    return hashlib.md5("\n".join(canon).encode()).hexdigest()


def add_ensemble(name: str, members: list[dict], comment: str = "") -> dict:
    """Record an ensemble of trained models (no-op if the same; refused if the name has other members)."""
    keys = [{k: m[k] for k in TrainedModel.primary_key} for m in members]
    missing = [k for k in keys if not TrainedModel & k]
    if missing:
        raise ValueError(
            f"ensemble {name!r}: {len(missing)} member(s) are not trained yet, e.g. {missing[0]}"
        )
    h = member_hash(keys)
    key = {"ensemble_name": name}
    existing = (Ensemble & key).to_dicts()
    if existing:
        if existing[0]["member_hash"] != h:
            raise ValueError(f"ensemble {name!r} already exists with other members; choose another name")
        return key
    with Ensemble.connection.transaction:
        Ensemble.insert1(dict(key, ensemble_comment=comment[:256], member_hash=h, n_members=len(keys)))
        Ensemble.Member.insert([dict(key, **k) for k in keys])
    return key


def register_declared_ensembles() -> list[str]:
    """Create the ensembles that experiments declare, once all their members are trained."""
    from schemas.fabrik import Experiment

    made = []
    for exp in Experiment.to_dicts():
        name = declared_ensemble(exp)
        if name is None:
            continue
        decl = exp["experiment_spec"]["ensemble"]
        members = (
            TrainedModel & ((Experiment & {"experiment_name": exp["experiment_name"]}) * Experiment.Member)
        ).keys()
        n_declared = len(Experiment.Member & {"experiment_name": exp["experiment_name"]})
        if len(members) == n_declared and not Ensemble & {"ensemble_name": name}:
            add_ensemble(name, members, decl.get("comment", ""))
            made.append(name)
    return made


def ensemble_predictions(ensemble: dict, data_key: str) -> np.ndarray:
    """(T, N) mean of the members' stored predictions for one scan (predictions are never recomputed)."""
    members = (Ensemble.Member & ensemble).keys()
    arrays = [
        np.asarray((Prediction.PerScan & dict(m, data_key=data_key)).fetch1("predictions"), dtype=np.float64)
        for m in members
    ]
    return np.mean(arrays, axis=0).astype(np.float32)


@schema
class EnsembleScore(dj.Computed):
    definition = (
        """
    # the metrics (docs/model.md#metrics) for the mean of an ensemble's members on one tier of one scan
    -> Ensemble
    -> Scan
    -> Tier
    ---
    contaminated        : bool            # a member trained on trials of this tier (re-split validation)
    trained_fraction    : float32         # the largest share of this tier's trials any member trained on
    """
        + _SCORE_COLUMNS
    )

    class Neuron(dj.Part):
        definition = (
            """
        # per-neuron metrics of the ensemble
        -> master
        -> Scan.Neuron
        ---
        """
            + _NEURON_COLUMNS
        )

    @property
    def key_source(self):
        # (ensemble, scan) pairs for which every member has stored predictions
        covered = dj.U("ensemble_name", "data_key").aggr(
            Ensemble.Member * Prediction.PerScan.proj(), n="count(*)"
        )
        complete = (covered * Ensemble.proj("n_members")) & "n = n_members"
        return complete.proj() * _scorable_tiers()

    def make(self, key: dict) -> None:
        ensemble = {"ensemble_name": key["ensemble_name"]}
        tiers = _original_tiers(key["data_key"])
        fractions = [
            trained_fraction(m, key["data_key"], key["tier"], tiers)
            for m in (Ensemble.Member & ensemble).keys()
        ]
        predictions = ensemble_predictions(ensemble, key["data_key"])
        _insert_scores(
            self, key, predictions, contaminated=max(fractions) > 0, trained_fraction=max(fractions)
        )


@schema
class Submission(dj.Manual):
    definition = """
    # a competition submission file written from an ensemble (docs/model.md#submission-files)
    -> Ensemble
    -> Scan
    -> Tier
    ---
    path                : varchar(1024)   # where it was written
    checksum            : char(64)        # SHA-256 of the file
    n_trials            : int32           # rows
    file                : <attach@sensorium>  # the file itself
    created_at = CURRENT_TIMESTAMP : datetime  # when written
    """
