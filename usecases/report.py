"""The data of ``sensorium report``, read from the tables (stored scores, learning curves, predictions
and weights; nothing is trained, predicted or scored here). Returns
:class:`pipeline.report.content.ReportContent`.

Two oracles, each shown where it exists: the planted one (``OracleScore``, synthetic scans) and the
leave-one-out one (``RepeatOracle``, any scan whose tier repeats images). The summary table shows the
stored scores and the stored training record of every model; the only numbers made here are ratios
and means of stored ones (fraction of the oracle, mean over seeds), the readout positions (read from the
stored weights) and the mean and spread of the stored responses and predictions over repeats."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import torch

from pipeline.report.content import (
    ExampleNeuron,
    NeuronScores,
    PositionPanel,
    ReportContent,
    SummaryRow,
    TrainingCurve,
)
from pipeline.report.data import Curve, EnsembleGain, NeuronScatter, ScoreBar
from pipeline.scoring.evaluate import score_tier
from pipeline.scoring.readout_positions import (
    model_readout_pixels,
    normalised_to_pixels,
    position_fit,
    retinotopy_r2,
)
from schemas.binding import bound_settings
from schemas.data import GroundTruth, Scan
from schemas.evaluation import (
    Ensemble,
    EnsembleScore,
    ModelScore,
    OracleScore,
    Prediction,
    RepeatOracle,
    declared_ensemble,
    ensemble_predictions,
    scan_targets,
)
from schemas.fabrik import Experiment, experiment_models
from schemas.training import TrainedModel, load_trained_model
from usecases.queries import require_names

#: models whose readout positions are drawn (each is rebuilt from its stored weights: the costly part)
MAX_POSITION_MODELS = 6
#: example neurons of the best model: the neurons at these quantiles of its per-neuron correlation
EXAMPLE_QUANTILES = (1.0, 0.75, 0.5, 0.25)
PLANTED = "planted oracle"
REPEAT = "leave-one-out oracle"


def experiment_names(requested: list[str] | None) -> list[str]:
    """The requested experiments (checked), or every experiment with a scored model, in name order.

    Raises:
        LookupError: a requested experiment does not exist.
    """
    if requested:
        require_names("experiment", requested)
        return list(requested)
    known = sorted(r["experiment_name"] for r in Experiment.proj().to_dicts())
    return [n for n in known if ModelScore & experiment_models(n)]


def _ensembles_of(names: list[str]) -> list[str]:
    out = []
    for row in (Experiment & [{"experiment_name": n} for n in names]).to_dicts(order_by="experiment_name"):
        name = declared_ensemble(row)
        if name and Ensemble & {"ensemble_name": name}:
            out.append(name)
    return out


def gather(requested: list[str] | None = None, tier: str = "test", positions: bool = True) -> ReportContent:
    """Everything the report shows for the experiments (all scored ones when ``requested`` is None).

    ``positions``: rebuild models from their stored weights to draw their readout positions (the one
    part that loads weights and recordings).
    """
    names = experiment_names(requested)
    ensembles = _ensembles_of(names) if names else []
    oracle = _Oracles(
        {r["data_key"]: r["single_trial_correlation"] for r in (OracleScore & {"tier": tier}).to_dicts()},
        {r["data_key"]: r["single_trial_correlation"] for r in (RepeatOracle & {"tier": tier}).to_dicts()},
    )
    title = "sensorium report: " + (", ".join(names) if names else "no scored experiments yet")
    models = _Models.of(names)
    neurons = _neuron_scores(names, ensembles, models, tier)
    summary = _summary(names, ensembles, models, oracle, tier)
    notes: list[str] = []
    panels = _positions(models, _position_order(models, neurons), tier, notes) if positions else []
    return ReportContent(
        title=title,
        tier=tier,
        bars=_bars(names, ensembles, oracle, tier),
        curves=_curves(names),
        scatters=_scatters(neurons),
        gains=[g for e in ensembles for g in _gains(e, oracle, tier)],
        provenance=_provenance(names),
        summary=summary,
        training=_training(names, models),
        neurons=neurons,
        positions=panels,
        examples=_examples(summary, models, neurons, tier, notes),
        notes=notes,
    )


@dataclass(frozen=True)
class _Oracles:
    """{data_key: mean correlation} of the tier's planted and leave-one-out oracles."""

    planted: dict[str, float]
    repeat: dict[str, float]

    def of(self, data_key: str) -> tuple[float | None, float | None]:
        return self.planted.get(data_key), self.repeat.get(data_key)


@dataclass(frozen=True)
class _Models:
    """The trained models of the experiments: {label: key}, labels unique ("<experiment> seed <s>", with
    the dataset hash where members share a seed on different splits), in experiment and seed order."""

    keys: dict[str, dict]
    experiment: dict[str, str]  # label -> experiment

    @classmethod
    def of(cls, names: list[str]) -> _Models:
        keys: dict[str, dict] = {}
        experiment: dict[str, str] = {}
        for name in names:
            rows = (TrainedModel.proj() * experiment_models(name)).to_dicts()
            rows.sort(key=lambda k: (k["seed"], k["dataset_hash"]))
            seeds = [k["seed"] for k in rows]
            for key in rows:
                label = f"{name} seed {key['seed']}"
                if seeds.count(key["seed"]) > 1:
                    label += f" ({key['dataset_hash'][:6]})"
                keys[label] = {k: key[k] for k in TrainedModel.primary_key}
                experiment[label] = name
        return cls(keys, experiment)

    def label_of(self, name: str, key: dict) -> str:
        for label, k in self.keys.items():
            if self.experiment[label] == name and all(key[f] == v for f, v in k.items()):
                return label
        raise KeyError(key)


# -- the summary table --------------------------------------------------------------------------------


def _summary(names, ensembles, models: _Models, oracle: _Oracles, tier) -> list[SummaryRow]:
    """Every model, the mean over each experiment's seeds (two or more) and every ensemble, per scan."""
    imported = {tuple(sorted(k.items())) for k in TrainedModel.Imported.proj().keys()}
    rows: list[SummaryRow] = []
    for name in names:
        query = (
            (ModelScore & {"tier": tier})
            * experiment_models(name)
            * TrainedModel.proj("epochs", "duration_s")
        )
        per_scan: dict[str, list[SummaryRow]] = defaultdict(list)
        for r in query.to_dicts(order_by=("data_key", "seed", "dataset_hash")):
            key = {k: r[k] for k in TrainedModel.primary_key}
            member = models.label_of(name, key).removeprefix(f"{name} ")
            if tuple(sorted(key.items())) in imported:
                member += " (imported)"
            per_scan[r["data_key"]].append(
                SummaryRow(
                    experiment=name,
                    member=member,
                    data_key=r["data_key"],
                    single_trial_correlation=r["single_trial_correlation"],
                    correlation_to_average=r["correlation_to_average"],
                    feve=r["feve"],
                    planted_oracle=oracle.planted.get(r["data_key"]),
                    repeat_oracle=oracle.repeat.get(r["data_key"]),
                    epochs=int(r["epochs"]),
                    duration_s=float(r["duration_s"]),
                    contaminated=r["trained_fraction"] > 0,
                )
            )
        for data_key, group in per_scan.items():
            rows += group
            if len(group) > 1:
                rows.append(_mean_row(name, data_key, group))
    for ens in ensembles:
        members = TrainedModel & (Ensemble.Member & {"ensemble_name": ens})
        duration = float(sum(r["duration_s"] for r in members.proj("duration_s").to_dicts()))
        query = EnsembleScore * Ensemble.proj("n_members") & {"ensemble_name": ens, "tier": tier}
        for r in query.to_dicts(order_by="data_key"):
            rows.append(
                SummaryRow(
                    experiment=f"{ens} [ens]",
                    member=f"{r['n_members']} members",
                    data_key=r["data_key"],
                    single_trial_correlation=r["single_trial_correlation"],
                    correlation_to_average=r["correlation_to_average"],
                    feve=r["feve"],
                    planted_oracle=oracle.planted.get(r["data_key"]),
                    repeat_oracle=oracle.repeat.get(r["data_key"]),
                    duration_s=duration,
                    kind="ensemble",
                    contaminated=bool(r["contaminated"]),
                )
            )
    return sorted(rows, key=lambda row: row.data_key)  # stable: experiment order kept within a scan


def _mean_row(name: str, data_key: str, group: list[SummaryRow]) -> SummaryRow:
    corr = np.array([r.single_trial_correlation for r in group])
    feve = [r.feve for r in group if r.feve is not None]
    return SummaryRow(
        experiment=name,
        member=f"mean of {len(group)} seeds",
        data_key=data_key,
        single_trial_correlation=float(corr.mean()),
        correlation_to_average=float(np.mean([r.correlation_to_average for r in group])),
        feve=float(np.mean(feve)) if len(feve) == len(group) else None,
        planted_oracle=group[0].planted_oracle,
        repeat_oracle=group[0].repeat_oracle,
        epochs=None,
        duration_s=float(np.mean([r.duration_s or 0.0 for r in group])),
        kind="mean",
        contaminated=any(r.contaminated for r in group),
        spread=float(corr.std(ddof=1)),
    )


# -- figures' data -------------------------------------------------------------------------------------


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


def _training(names, models: _Models) -> list[TrainingCurve]:
    """The stored per-epoch record (training loss and validation correlation) of every trained model."""
    out = []
    for name in names:
        rows = (TrainedModel.Epoch * experiment_models(name)).to_dicts(
            order_by=("seed", "dataset_hash", "epoch")
        )
        for (dataset, seed), runs in groupby(rows, key=lambda r: (r["dataset_hash"], r["seed"])):
            group = list(runs)
            out.append(
                TrainingCurve(
                    experiment=name,
                    seed=int(seed),
                    dataset=dataset[:6],
                    epochs=[int(r["epoch"]) for r in group],
                    train_loss=[float(r["train_loss"]) for r in group],
                    val_corr=[float(r["val_corr"]) for r in group],
                )
            )
    return out


def _neuron_values(query) -> dict[str, np.ndarray]:
    rows = query.to_dicts(order_by=("data_key", "neuron_idx"))
    return {
        k: np.array([r["correlation"] for r in g], dtype=float)
        for k, g in groupby(rows, key=lambda r: r["data_key"])
    }


def _neuron_scores(names, ensembles, models: _Models, tier) -> list[NeuronScores]:
    """Per-neuron correlations of every model, every ensemble and both oracles (where they exist)."""
    out = []
    for label, key in models.keys.items():
        means = {
            r["data_key"]: r["single_trial_correlation"]
            for r in (ModelScore & key & {"tier": tier}).to_dicts()
        }
        for data_key, values in _neuron_values(ModelScore.Neuron & key & {"tier": tier}).items():
            out.append(
                NeuronScores(label, models.experiment[label], data_key, values, "model", means.get(data_key))
            )
    for ens in ensembles:
        restriction = {"ensemble_name": ens, "tier": tier}
        means = {
            r["data_key"]: r["single_trial_correlation"] for r in (EnsembleScore & restriction).to_dicts()
        }
        for data_key, values in _neuron_values(EnsembleScore.Neuron & restriction).items():
            label = f"{ens} [ens]"
            out.append(NeuronScores(label, label, data_key, values, "ensemble", means.get(data_key)))
    scanned = {s.data_key for s in out}
    for table, kind in ((OracleScore, PLANTED), (RepeatOracle, REPEAT)):
        means = {r["data_key"]: r["single_trial_correlation"] for r in (table & {"tier": tier}).to_dicts()}
        for data_key, values in _neuron_values(table.Neuron & {"tier": tier}).items():
            if data_key in scanned:
                out.append(NeuronScores(kind, kind, data_key, values, kind, means.get(data_key)))
    return out


def _scatters(neurons: list[NeuronScores]) -> list[NeuronScatter]:
    """Every model's and ensemble's per-neuron scores beside the oracles' (scans with an oracle only)."""
    planted = {s.data_key: s.values for s in neurons if s.kind == PLANTED}
    repeat = {s.data_key: s.values for s in neurons if s.kind == REPEAT}
    return [
        NeuronScatter(s.label, s.data_key, s.values, planted.get(s.data_key), repeat.get(s.data_key))
        for s in neurons
        if s.kind in ("model", "ensemble") and (s.data_key in planted or s.data_key in repeat)
    ]


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


# -- readout positions ---------------------------------------------------------------------------------


def _cortex(data_key: str) -> np.ndarray:
    rows = (Scan.Neuron & {"data_key": data_key}).to_dicts(order_by="neuron_idx")
    return np.array([[r["cortex_x"], r["cortex_y"]] for r in rows], dtype=np.float64)


def _planted_centres(data_key: str) -> np.ndarray | None:
    """(N, 2) planted receptive-field centres in normalised image coordinates, or None (not synthetic,
    or a sidecar without them)."""
    rows = (GroundTruth & {"data_key": data_key}).to_dicts()
    if not rows:
        return None
    centres = (rows[0]["neuron_truth"] or {}).get("rf_center")
    return None if centres is None else np.asarray(centres, dtype=np.float64)


def _position_order(models: _Models, neurons: list[NeuronScores]) -> list[str]:
    """Model labels, the best of each experiment first (by stored mean correlation over its scans), then
    the second best of each, and so on: the order in which models get a readout-position figure."""
    means: dict[str, list[float]] = defaultdict(list)
    for s in neurons:
        if s.kind == "model" and s.mean is not None:
            means[s.label].append(s.mean)
    rank: dict[str, int] = {}
    for name in dict.fromkeys(models.experiment.values()):
        labels = [label for label in models.keys if models.experiment[label] == name]
        labels.sort(key=lambda label: -float(np.mean(means[label])) if means[label] else 0.0)
        rank.update({label: i for i, label in enumerate(labels)})
    return sorted(models.keys, key=lambda label: rank[label])  # stable: experiment order within a rank


def _positions(models: _Models, order: list[str], tier: str, notes: list[str]) -> list[PositionPanel]:
    """Readout positions per scan of the first ``MAX_POSITION_MODELS`` models of ``order`` (each rebuilt
    from its stored weights on the CPU), drawn in experiment and seed order."""
    chosen = set(order[:MAX_POSITION_MODELS])
    labels = [label for label in models.keys if label in chosen]
    if len(order) > MAX_POSITION_MODELS:
        notes.append(
            f"Readout positions: {MAX_POSITION_MODELS} of {len(order)} models are drawn, the best of each "
            f"experiment first (left out: {', '.join(order[MAX_POSITION_MODELS:])})."
        )
    cache_dir = bound_settings().cache_dir
    panels = []
    without: list[str] = []
    for label in labels:
        try:
            model, scans = load_trained_model(models.keys[label], torch.device("cpu"), cache_dir)
        except (LookupError, ValueError, RuntimeError, OSError) as err:
            # an old model this code can no longer rebuild (or whose scan is gone) costs its figure only
            notes.append(f"Readout positions: {label} could not be rebuilt from its weights ({err}).")
            continue
        for data_key, scan in sorted(scans.items()):
            learned = model_readout_pixels(model, data_key, scan.pupil_center)
            if learned is None:
                without.append(label)
                break
            in_tier = scan.tier_indices(tier)
            frame = scan.images[int(in_tier[0]) if len(in_tier) else 0, 0].detach().cpu().numpy()
            h, w = frame.shape
            cortex = _cortex(data_key)
            centres = _planted_centres(data_key)
            planted = normalised_to_pixels(centres, (h, w)) if centres is not None else None
            fit = position_fit(learned, planted) if planted is not None else None
            panels.append(
                PositionPanel(
                    label=label,
                    data_key=data_key,
                    frame=frame,
                    learned=learned,
                    cortex=cortex,
                    planted=planted,
                    mean_distance=fit.mean_distance if fit else None,
                    affine_distance=fit.affine_distance if fit else None,
                    corr_x=fit.corr_x if fit else None,
                    corr_y=fit.corr_y if fit else None,
                    retinotopy_r2=retinotopy_r2(learned, cortex),
                )
            )
        del model, scans
    if without:
        notes.append(f"Readout positions: no Gaussian readout to draw for {', '.join(without)}.")
    return panels


# -- example neurons -----------------------------------------------------------------------------------


def _examples(
    summary: list[SummaryRow], models: _Models, neurons: list[NeuronScores], tier: str, notes: list[str]
) -> list[ExampleNeuron]:
    """A few neurons of the best model or ensemble (highest stored correlation on a scan whose tier
    repeats images): the mean and spread of responses and predictions over each image's repeats."""
    repeated = {r["data_key"] for r in (Scan.TierInfo & {"tier": tier} & "n_trials > n_images").to_dicts()}
    candidates = [r for r in summary if r.kind != "mean" and r.data_key in repeated]
    if not candidates:
        if summary:
            notes.append(f"Example neurons: no scored scan repeats images in its {tier} tier.")
        return []
    best = max(candidates, key=lambda r: r.single_trial_correlation)
    data_key = best.data_key
    if best.kind == "ensemble":
        label = best.experiment
        predictions = ensemble_predictions({"ensemble_name": label.removesuffix(" [ens]")}, data_key)
    else:
        label = f"{best.experiment} {best.member.removesuffix(' (imported)')}"
        key = models.keys[label]
        predictions = (Prediction.PerScan & dict(key, data_key=data_key)).fetch1("predictions")
    (scores,) = [s for s in neurons if s.label == label and s.data_key == data_key]
    targets, tiers, image_ids = scan_targets(data_key)
    mask = tiers == tier
    responses, predicted, ids = (
        targets[mask],
        np.asarray(predictions, dtype=np.float64)[mask],
        image_ids[mask],
    )
    unique, counts = np.unique(ids, return_counts=True)
    shown = unique[counts > 1]
    units = [r["unit_id"] for r in (Scan.Neuron & {"data_key": data_key}).to_dicts(order_by="neuron_idx")]
    order = np.argsort(-np.nan_to_num(scores.values, nan=-np.inf))  # best first
    picks: list[int] = []
    for q in EXAMPLE_QUANTILES:
        index = int(order[min(len(order) - 1, round((1.0 - q) * (len(order) - 1)))])
        if index not in picks:
            picks.append(index)
    out = []
    for n in picks:
        groups = [ids == image for image in shown]
        r_mean = np.array([responses[g, n].mean() for g in groups])
        sort = np.argsort(r_mean)
        out.append(
            ExampleNeuron(
                label=label,
                data_key=data_key,
                neuron_idx=n,
                unit_id=int(units[n]),
                correlation=float(scores.values[n]),
                image_ids=shown[sort],
                response_mean=r_mean[sort],
                response_sd=np.array([responses[g, n].std() for g in groups])[sort],
                prediction_mean=np.array([predicted[g, n].mean() for g in groups])[sort],
                prediction_sd=np.array([predicted[g, n].std() for g in groups])[sort],
                n_repeats=np.array([g.sum() for g in groups])[sort],
            )
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
