"""Predictions and scores: ``Prediction`` (every trial, once per model), ``ModelScore`` per trained model x
scan x tier, ``OracleScore`` per synthetic scan x tier (the planted expected response as the prediction)."""

from __future__ import annotations

import datajoint as dj
import numpy as np

from pipeline.data.loaders import response_precision
from pipeline.scoring.evaluate import TierScore, score_tier
from pipeline.scoring.predict import predict_all
from pipeline.training.seeding import resolve_device
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
        from pipeline.provenance import device_name
        from schemas import active_settings

        settings = active_settings()
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


def _targets(data_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised responses (T, N) as the model sees them, tiers (T,), image ids (T,)."""
    row = (Scan & {"data_key": data_key}).fetch1()
    p = response_precision(row["statistics"]["responses"]["all"]["std"])
    trials = (Scan.Trial & {"data_key": data_key}).to_dicts(order_by="trial_id")
    tiers = np.array([t["tier"] for t in trials])
    image_ids = np.array([t["frame_image_id"] for t in trials])
    return np.asarray(row["responses"], dtype=np.float32) * p[None], tiers, image_ids


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
    # the metrics of SPEC section 4 for one trained model on one tier of one scan
    -> Prediction.PerScan
    -> Tier
    ---
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
        targets, tiers, image_ids = _targets(key["data_key"])
        predictions = np.asarray((Prediction.PerScan & key).fetch1("predictions"))
        mask = tiers == key["tier"]
        master, neurons = _score_rows(key, score_tier(targets[mask], predictions[mask], image_ids[mask]))
        self.insert1(master)
        self.Neuron.insert(neurons)


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
        targets, tiers, image_ids = _targets(key["data_key"])
        row = (Scan & key).fetch1("statistics")
        expected = np.asarray((GroundTruth & key).fetch1("expected"), dtype=np.float32)
        expected = expected * response_precision(row["responses"]["all"]["std"])[None]
        mask = tiers == key["tier"]
        master, neurons = _score_rows(key, score_tier(targets[mask], expected[mask], image_ids[mask]))
        self.insert1(master)
        self.Neuron.insert(neurons)
