"""The data of ``sensorium report``, read from the tables (stored scores and predictions; nothing is
trained or predicted here). Returns :class:`pipeline.report.data.ReportData`.

Two oracles, each shown where it exists: the planted one (``OracleScore``, synthetic scans) and the
leave-one-out one (``RepeatOracle``, any scan whose tier repeats images)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import numpy as np

from pipeline.report.data import Curve, EnsembleGain, NeuronScatter, ReportData, ScoreBar
from pipeline.scoring.evaluate import score_tier
from schemas.evaluation import (
    Ensemble,
    EnsembleScore,
    ModelScore,
    OracleScore,
    Prediction,
    RepeatOracle,
    declared_ensemble,
    scan_targets,
)
from schemas.fabrik import Experiment, experiment_models
from schemas.training import TrainedModel

MAX_SCATTERS = 6


def experiment_names(requested: list[str] | None) -> list[str]:
    """The requested experiments (checked), or every experiment with a scored model, in name order.

    Raises:
        LookupError: a requested experiment does not exist.
    """
    known = sorted(r["experiment_name"] for r in Experiment.proj().to_dicts())
    if requested:
        unknown = [n for n in requested if n not in known]
        if unknown:
            raise LookupError(
                f"no experiment named {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
            )
        return list(requested)
    return [n for n in known if ModelScore & experiment_models(n)]


def _ensembles_of(names: list[str]) -> list[str]:
    out = []
    for row in (Experiment & [{"experiment_name": n} for n in names]).to_dicts(order_by="experiment_name"):
        name = declared_ensemble(row)
        if name and Ensemble & {"ensemble_name": name}:
            out.append(name)
    return out


def gather(requested: list[str] | None = None, tier: str = "test") -> ReportData:
    """Scores, learning curves, per-neuron scores, ensemble gains and provenance of the experiments."""
    names = experiment_names(requested)
    ensembles = _ensembles_of(names) if names else []
    oracle = _Oracles(
        {r["data_key"]: r["single_trial_correlation"] for r in (OracleScore & {"tier": tier}).to_dicts()},
        {r["data_key"]: r["single_trial_correlation"] for r in (RepeatOracle & {"tier": tier}).to_dicts()},
    )
    title = "sensorium report: " + (", ".join(names) if names else "no scored experiments yet")
    return ReportData(
        title=title,
        tier=tier,
        bars=_bars(names, ensembles, oracle, tier),
        curves=_curves(names),
        scatters=_scatters(names, ensembles, tier),
        gains=[g for e in ensembles for g in _gains(e, oracle, tier)],
        provenance=_provenance(names),
    )


@dataclass(frozen=True)
class _Oracles:
    """{data_key: mean correlation} of the tier's planted and leave-one-out oracles."""

    planted: dict[str, float]
    repeat: dict[str, float]

    def of(self, data_key: str) -> tuple[float | None, float | None]:
        return self.planted.get(data_key), self.repeat.get(data_key)


def _bars(names, ensembles, oracle: _Oracles, tier) -> list[ScoreBar]:
    bars = []
    for name in names:
        rows = ((ModelScore & {"tier": tier}) * experiment_models(name)).to_dicts(
            order_by=("data_key", "seed")
        )
        for data_key, group in groupby(rows, key=lambda r: r["data_key"]):
            values = [r["single_trial_correlation"] for r in group]
            bars.append(ScoreBar(name, data_key, values, *oracle.of(data_key)))
    for ens in ensembles:
        for r in (EnsembleScore & {"ensemble_name": ens, "tier": tier}).to_dicts(order_by="data_key"):
            bars.append(
                ScoreBar(
                    f"{ens} [ens]", r["data_key"], [r["single_trial_correlation"]], *oracle.of(r["data_key"])
                )
            )
    return bars


def _curves(names) -> list[Curve]:
    curves = []
    for name in names:
        rows = (TrainedModel.Epoch * experiment_models(name)).to_dicts(
            order_by=("dataset_hash", "seed", "epoch")
        )
        for (_, seed), runs in groupby(rows, key=lambda r: (r["dataset_hash"], r["seed"])):
            group = list(runs)
            curves.append(Curve(name, int(seed), [r["epoch"] for r in group], [r["val_corr"] for r in group]))
    return curves


def _neuron_values(query) -> dict[str, np.ndarray]:
    rows = query.to_dicts(order_by=("data_key", "neuron_idx"))
    return {
        k: np.array([r["correlation"] for r in g], dtype=float)
        for k, g in groupby(rows, key=lambda r: r["data_key"])
    }


def _scatters(names, ensembles, tier) -> list[NeuronScatter]:
    planted = _neuron_values(OracleScore.Neuron & {"tier": tier})
    repeat = _neuron_values(RepeatOracle.Neuron & {"tier": tier})
    if not planted and not repeat:
        return []

    def scatter(label: str, data_key: str, values: np.ndarray) -> NeuronScatter | None:
        if data_key not in planted and data_key not in repeat:
            return None
        return NeuronScatter(label, data_key, values, planted.get(data_key), repeat.get(data_key))

    out = []
    for name in names:
        models = (TrainedModel & experiment_models(name)).keys()
        if not models:
            continue
        first = min(models, key=lambda k: (k["seed"], k["dataset_hash"]))
        for data_key, values in _neuron_values(ModelScore.Neuron & first & {"tier": tier}).items():
            out.append(scatter(f"{name} (seed {first['seed']})", data_key, values))
    for ens in ensembles:
        for data_key, values in _neuron_values(
            EnsembleScore.Neuron & {"ensemble_name": ens, "tier": tier}
        ).items():
            out.append(scatter(f"{ens} [ens]", data_key, values))
    return [s for s in out if s is not None][:MAX_SCATTERS]


def _gains(ensemble: str, oracle: _Oracles, tier) -> list[EnsembleGain]:
    """Correlation of the mean of the first k members' stored predictions (members by seed)."""
    members = sorted(
        (Ensemble.Member & {"ensemble_name": ensemble}).keys(), key=lambda k: (k["seed"], k["dataset_hash"])
    )
    out = []
    for r in (EnsembleScore & {"ensemble_name": ensemble, "tier": tier}).to_dicts(order_by="data_key"):
        data_key = r["data_key"]
        targets, tiers, image_ids = scan_targets(data_key)
        mask = tiers == tier
        total = None
        corr = []
        for k, member in enumerate(members, start=1):
            p = np.asarray(
                (Prediction.PerScan & dict(member, data_key=data_key)).fetch1("predictions"), dtype=np.float64
            )
            total = p if total is None else total + p
            mean = (total / k).astype(np.float32)
            corr.append(score_tier(targets[mask], mean[mask], image_ids[mask]).single_trial_correlation)
        out.append(
            EnsembleGain(ensemble, data_key, list(range(1, len(members) + 1)), corr, *oracle.of(data_key))
        )
    return out


def _provenance(names) -> list[dict[str, str]]:
    rows = []
    for name in names:
        query = TrainedModel * experiment_models(name)
        imported = {
            (r["dataset_hash"], r["seed"]): r["source_sha256"]
            for r in (TrainedModel.Imported * experiment_models(name)).to_dicts()
        }
        for r in query.to_dicts(order_by=("seed", "dataset_hash")):
            sha = imported.get((r["dataset_hash"], r["seed"]))
            rows.append(
                {
                    "experiment": name,
                    "seed": str(r["seed"]),
                    "dataset": r["dataset_hash"][:8],
                    "origin": f"imported, sha256 {sha[:16]}..." if sha else f"trained, {r['epochs']} epochs",
                    "code version": r["code_version"],
                    "data checksums": ", ".join(
                        f"{k}: {v[:12]}..." for k, v in sorted(r["data_checksums"].items())
                    ),
                    "device": r["device"],
                    "host": r["host"],
                    "duration (s)": f"{r['duration_s']:.1f}",
                    "best validation correlation": f"{r['best_val_corr']:.4f}",
                }
            )
    return rows
