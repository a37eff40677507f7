"""Per-trial regressors of the winning model, as parameterised computations (see docs/model.md#winner).

Each parameter table holds a config as JSON with its hash in the key; each computed table holds, per scan
and parameter set, what ``pipeline.regressors`` computed, with the arrays in the object store. History and
state are computed from the responses exactly as the model sees them (r * p_n) in time order
(``TrialOrder``), with the original tiers: only train / validation responses are ever inputs.
"""

from __future__ import annotations

from typing import Any

import datajoint as dj
import numpy as np

from pipeline.configs import (
    FrozenConfig,
    HistoryConfig,
    SplitConfig,
    StateConfig,
    config_hash,
    stored_form,
)
from pipeline.data.behavior import normalize_behavior
from pipeline.data.precision import response_precision
from pipeline.data.recording import KNOWN_TIERS
from pipeline.regressors.history import build_history_bank
from pipeline.regressors.splits import ensemble_splits
from schemas.data import ExactTrialOrder, Scan, TrialOrder, time_ranks  # noqa: F401 - in definitions

schema = dj.Schema()


@schema
class BehaviorMethod(dj.Lookup):
    definition = """
    # a behaviour normalisation (docs/model.md#normalisation, docs/model.md#behaviour-normalisation)
    behavior_method     : varchar(16)     # std | minmax01
    ---
    description         : varchar(255)    # what it does
    """
    contents = [
        ("std", "b_k / std_k (baseline)"),
        ("minmax01", "pupil min-max to [0,1]; d pupil / std; |running| / max|running| (winner)"),
    ]


@schema
class BehaviorNormalization(dj.Computed):
    definition = """
    # normalised behaviour of every trial of a scan
    -> Scan
    -> BehaviorMethod
    ---
    behavior            : <npy@sensorium> # (T, 3) float32, file-index order
    """

    def make(self, key: dict) -> None:
        stats = (Scan & key).fetch1("statistics")["behavior"]["all"]
        trials = (Scan.Trial & key).to_dicts(order_by="trial_id")
        raw = np.array([[t["pupil"], t["dpupil"], t["running"]] for t in trials], dtype=np.float32)
        self.insert1(dict(key, behavior=normalize_behavior(raw, stats, key["behavior_method"])))


class _ParamSet:
    """Shared insert logic of the parameter tables: config -> (hash, canonical JSON)."""

    config_class: type[FrozenConfig]
    prefix: str
    insert1: Any  # from the DataJoint table class it is mixed into

    @classmethod
    def _validated(cls, config: Any):
        return (
            config if isinstance(config, cls.config_class) else cls.config_class.model_validate(config or {})
        )

    @classmethod
    def key_of(cls, config: Any) -> dict:
        """The primary key of ``config`` (nothing inserted)."""
        return {f"{cls.prefix}_hash": config_hash(cls.prefix, cls._validated(config))}

    @classmethod
    def add(cls, config: Any) -> dict:
        """Insert ``config`` if new; return its key."""
        cfg = cls._validated(config)
        key = cls.key_of(cfg)
        if not cls() & key:
            cls().insert1(dict(key, **{f"{cls.prefix}_config": stored_form(cfg)}), skip_duplicates=True)
        return key


@schema
class HistoryParamSet(_ParamSet, dj.Manual):
    definition = """
    # parameters of the history filter bank
    history_hash        : char(32)        # hash of the config
    ---
    history_config      : json            # HistoryConfig (lags)
    """
    config_class = HistoryConfig
    prefix = "history"


@schema
class StateParamSet(_ParamSet, dj.Manual):
    definition = """
    # parameters of the network-state regressor
    state_hash          : char(32)        # hash of the config
    ---
    state_config        : json            # StateConfig (PCA, RRR rank and iterations, NMF, seeds)
    """
    config_class = StateConfig
    prefix = "state"


@schema
class SplitParamSet(_ParamSet, dj.Manual):
    definition = """
    # parameters of the ensemble re-splits
    split_hash          : char(32)        # hash of the config (n_splits, seed, share; not the index)
    ---
    split_config        : json            # SplitConfig with index 0
    """
    config_class = SplitConfig
    prefix = "split"

    @classmethod
    def _validated(cls, config: Any):
        cfg = SplitConfig.model_validate(config) if not isinstance(config, SplitConfig) else config
        return cfg.model_copy(update={"index": 0})  # one set holds every index


def known_responses(
    key: dict, trial_order: str = "timestamp"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Responses as the model sees them (T, N), time rank (T,) under ``trial_order``, known mask (T,),
    tiers (T,), file order."""
    # only the two columns needed: the whole row would also download the images (0.2 GB at full size)
    statistics, stored = (Scan & key).fetch1("statistics", "responses")
    p = response_precision(statistics["responses"]["all"]["std"])
    responses = np.asarray(stored, dtype=np.float32) * p[None]
    tiers = np.array([t["tier"] for t in (Scan.Trial & key).to_dicts(order_by="trial_id")])
    rank = time_ranks(key, trial_order)
    return responses, rank, np.isin(tiers, KNOWN_TIERS), tiers


@schema
class History(dj.Computed):
    definition = """
    # history filter bank of a scan, kept compactly as prefix sums over the known trials in time order
    -> TrialOrder
    -> HistoryParamSet
    ---
    prefix              : <npy@sensorium> # (K+1, N) float64 cumulative sums of the K known responses
    n_known_before      : <npy@sensorium> # (T,) known trials before each trial (file-index order)
    n_known             : int32           # K
    nbytes              : int64           # bytes of prefix + counts (the full T x N x L bank is not stored)
    """

    def make(self, key: dict) -> None:
        cfg = HistoryConfig.model_validate((HistoryParamSet & key).fetch1("history_config"))
        responses, rank, known, _ = known_responses(key, cfg.trial_order)
        bank = build_history_bank(responses, rank, known, cfg)
        self.insert1(
            dict(
                key,
                prefix=bank.prefix,
                n_known_before=bank.n_known_before,
                n_known=int(known.sum()),
                nbytes=int(bank.nbytes),
            )
        )


@schema
class NetworkState(dj.Computed):
    definition = """
    # network state of every trial: sqrt -> PCA -> reduced-rank VAR(1) -> NMF, fitted on known trial pairs
    -> TrialOrder
    -> StateParamSet
    ---
    state               : <npy@sensorium> # (T, n_components) float32, file-index order
    n_pairs             : int32           # consecutive known pairs the model was fitted on
    n_pca               : int32           # PCA components used
    pca_explained       : float64         # variance fraction kept by the PCA
    rrr_fit_r2          : float64         # R^2 of the reduced-rank VAR(1) on the pairs
    nmf_converged       : bool            # NMF reached its tolerance before max_iter
    nmf_n_iter          : int32           # NMF iterations run
    """

    def make(self, key: dict) -> None:
        cfg = StateConfig.model_validate((StateParamSet & key).fetch1("state_config"))
        # scikit-learn (~0.8 s to import) only where a state is fitted, not in every command that reads
        from pipeline.regressors.state import fit_network_state

        responses, rank, known, _ = known_responses(key, cfg.trial_order)
        result = fit_network_state(responses, rank, known, cfg)
        self.insert1(
            dict(
                key,
                state=result.state.astype(np.float32),
                n_pairs=result.n_pairs,
                n_pca=result.n_pca,
                pca_explained=float(result.pca_explained),
                rrr_fit_r2=float(result.rrr_fit_r2),
                nmf_converged=bool(result.nmf_converged),
                nmf_n_iter=int(result.nmf_n_iter),
            )
        )


@schema
class SplitSet(dj.Computed):
    definition = """
    # ensemble re-splits of a scan's train/validation labels (test tiers untouched)
    -> Scan
    -> SplitParamSet
    ---
    n_splits            : int32           # rows in the part table
    """

    class Split(dj.Part):
        definition = """
        # one re-split
        -> master
        split_index     : int32           # 0..n_splits-1
        ---
        tiers           : <blob>          # (T,) tier of every trial under this split (file-index order)
        n_train         : int32           # trials labelled train
        n_validation    : int32           # trials labelled validation
        """

    def make(self, key: dict) -> None:
        cfg = SplitConfig.model_validate((SplitParamSet & key).fetch1("split_config"))
        tiers = np.array([t["tier"] for t in (Scan.Trial & key).to_dicts(order_by="trial_id")])
        rows = ensemble_splits(tiers, cfg.n_splits, cfg.seed, cfg.validation_share)
        self.insert1(dict(key, n_splits=cfg.n_splits))
        self.Split.insert(
            [
                dict(
                    key,
                    split_index=i,
                    tiers=row.astype(str),
                    n_train=int((row == "train").sum()),
                    n_validation=int((row == "validation").sum()),
                )
                for i, row in enumerate(rows)
            ]
        )


def fetch_regressors(data_key: str, dataset_config: dict) -> dict[str, Any]:
    """What the loaders need from the regressor tables for one scan (raises if not yet computed).

    Returns:
        ``behavior`` (T, 3) normalised, and when configured ``history`` (prefix, n_known_before, lags),
        ``state`` (T, S), ``rank_id`` (T,) and ``tiers`` (T,) of the configured split.
    """
    key = {"data_key": data_key}
    out: dict[str, Any] = {}
    method = dataset_config.get("behavior_normalization", "std")
    out["behavior"] = np.asarray(_one(BehaviorNormalization & dict(key, behavior_method=method), "behavior"))
    regs = dataset_config.get("regressors") or {}
    if regs.get("history") is not None:
        cfg = HistoryConfig.model_validate(regs["history"])
        prefix, counts = _one(History & dict(key, **HistoryParamSet.key_of(cfg)), "prefix", "n_known_before")
        out["history"] = (np.asarray(prefix), np.asarray(counts), list(cfg.lags))
    if regs.get("state") is not None:
        out["state"] = np.asarray(
            _one(NetworkState & dict(key, **StateParamSet.key_of(regs["state"])), "state")
        )
    if regs.get("rank"):
        out["rank_id"] = time_ranks(key, regs.get("rank_order", "timestamp"))
    split = dataset_config.get("split")
    if split is not None:
        skey = dict(key, **SplitParamSet.key_of(split), split_index=int(split.get("index", 0)))
        out["tiers"] = np.asarray(_one(SplitSet.Split & skey, "tiers")).astype(str)
    return out


def _one(query, *attrs):
    """``query.fetch1(*attrs)``, or a clear error when the regressor has not been computed."""
    if len(query) != 1:
        raise LookupError(
            f"{type(query).__name__} has no row for {query.restriction}: run `sensorium populate` "
            "to compute the regressors first"
        )
    return query.fetch1(*attrs)
