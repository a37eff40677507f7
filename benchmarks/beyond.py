"""Beyond the winner (issue 12): candidate rows and the chosen ensemble against the winner's, same budget.

On the project's synthetic recordings (two pre-training-style mice, as ``benchmarks/ablation.py``), every
row is trained through the real pipeline (``sensorium experiment add`` + one ``sensorium populate``) in
one ``SENSORIUM_HOME``, at the same number of epochs on the same data:

* single models, one per seed: ``winner_demo`` and each candidate improvement on top of it, alone;
* ensembles, one per seed base s (members seeds s, s+1, s+2 on re-splits 0..2):
  ``ensemble_demo`` (the winner preset's ensemble) and ``beyond`` (``experiments/beyond.yaml``).

It prints the test single-trial correlation (mean over the scans; range over seeds) with the oracle as
the ceiling and each row's ratio to its reference (winner_demo for single rows, the winner ensemble for
ensembles). Rerunning with the same ``--home`` reuses what is trained (a stopped run continues).

The recordings are synthesised with ``--synth-seed`` (default 1), so they are not the seed-0 demo
recordings the sweeps chose on: selection and comparison share no data.

``--tier validation`` reports the validation tier instead (for choosing: single rows only, as ensemble
members' re-splits train on each other's validation trials); the ``SECOND_ROUND`` rows (variations on
``beyond.yaml``) run only when named in ``--rows``.

Run:  .venv/bin/python benchmarks/beyond.py --home DIR [--seeds 42,45,48] [--epochs 12] [--rows a,b]
      [--workers 2] [--synth-seed 1] [--tier test|validation]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

#: readout positions started at receptive fields mapped from the training trials (free positions)
RF_MAP = ["model.config.grid_mean_predictor=null", "model.config.init_mu=rf_map"]
#: single-model rows: (experiment file, --set overrides) on top of the winner preset
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "winner_demo": ("winner_demo.yaml", []),
    "+softplus": ("winner_demo.yaml", ["model.config.output_nonlinearity=softplus"]),
    "+adamw_cosine_ema": (
        "winner_demo.yaml",
        [
            "trainer.config.optimizer=adamw",
            "trainer.config.weight_decay=0.01",
            "trainer.config.lr_schedule=cosine",
            "trainer.config.warmup_epochs=1",
            "trainer.config.ema_decay=0.9",
        ],
    ),
    "+learned_state": ("winner_demo.yaml", ["model.config.modulator_params.learned_state=true"]),
    "+exact_order": (
        "winner_demo.yaml",
        [
            "dataset.config.regressors.history.trial_order=exact",
            "dataset.config.regressors.state.trial_order=exact",
            "dataset.config.regressors.rank_order=exact",
        ],
    ),
    "+log1p_history": ("winner_demo.yaml", ["dataset.config.regressors.history.transform=log1p"]),
    "+gamma_loss": ("winner_demo.yaml", ["trainer.config.loss_function=GammaLoss"]),
    "+gabor_input": ("winner_demo.yaml", ["model.config.input_init=gabor"]),
    "+rf_map": ("winner_demo.yaml", RF_MAP),
    "+vit_core": ("vit_demo.yaml", []),
    # control: is the ViT's gain its 32 output channels (the readout's feature size) or the architecture?
    "+cnn_32_channels": ("winner_demo.yaml", ["model.config.hidden_channels=32"]),
    "+sweep_options": ("beyond_cnn_options.yaml", []),
    "beyond_single": ("beyond.yaml", []),
}
#: second round, on top of beyond.yaml, for choosing on validation only (run with --rows and
#: --tier validation --synth-seed 0, the recordings the sweeps chose on); not in the default rows
SECOND_ROUND: dict[str, tuple[str, list[str]]] = {
    "beyond+cosine": ("beyond.yaml", ["trainer.config.lr_schedule=cosine", "trainer.config.warmup_epochs=1"]),
    "beyond+batch_32": ("beyond.yaml", ["dataset.config.batch_size=32"]),
    "beyond+softplus": ("beyond.yaml", ["model.config.output_nonlinearity=softplus"]),
    "beyond+vit_48": ("beyond.yaml", ["model.config.vit.dim=48"]),
    "beyond+lr_0.015": ("beyond.yaml", ["trainer.config.lr_init=0.015"]),
    "beyond+readout_l1_0.1": ("beyond.yaml", ["model.config.gamma_readout=0.1"]),
    "beyond+readout_l1_0.02": ("beyond.yaml", ["model.config.gamma_readout=0.02"]),
    # a population state learned from several past trials (boxcars 1, 2, 5, 10), not the lag-1 trial only
    "beyond+state_4_lags": (
        "beyond.yaml",
        [
            "model.config.modulator_params.learned_state=true",
            "model.config.modulator_params.learned_state_lags=4",
        ],
    ),
    "beyond+state_4_lags_rank_3": (
        "beyond.yaml",
        [
            "model.config.modulator_params.learned_state=true",
            "model.config.modulator_params.learned_state_lags=4",
            "model.config.modulator_params.learned_state_rank=3",
        ],
    ),
    # a convolutional stem before the ViT's patches, from noise or from a Gabor bank
    "beyond+stem_16": ("beyond.yaml", ["model.config.vit.stem_channels=16"]),
    "beyond+stem_16_gabor": (
        "beyond.yaml",
        ["model.config.vit.stem_channels=16", "model.config.vit.stem_init=gabor"],
    ),
    # the readout: narrower sampling at the start (small receptive fields), free positions (no retinotopy
    # prior), and a finer token grid
    "beyond+init_sigma_0.05": ("beyond.yaml", ["model.config.init_sigma=0.05"]),
    "beyond+free_positions": ("beyond.yaml", ["model.config.grid_mean_predictor=null"]),
    "beyond+patch_stride_2": ("beyond.yaml", ["model.config.vit.patch_stride=2"]),
    # smoother end points under the same plateau schedule: an EMA of the weights, a lower rate
    "beyond+ema_0.9": ("beyond.yaml", ["trainer.config.ema_decay=0.9"]),
    "beyond+ema_0.97": ("beyond.yaml", ["trainer.config.ema_decay=0.97"]),
    "beyond+lr_0.006": ("beyond.yaml", ["trainer.config.lr_init=0.006"]),
    # warm-up / stable / decay: lr_init held, then a linear anneal over the last 2, 3 or 4 of the 12 epochs
    # (every validation curve of the rows above still rises at epoch 12, with the plateau rate never cut)
    "beyond+wsd_2": ("beyond.yaml", ["trainer.config.lr_schedule=wsd", "trainer.config.decay_epochs=2"]),
    "beyond+wsd_3": ("beyond.yaml", ["trainer.config.lr_schedule=wsd", "trainer.config.decay_epochs=3"]),
    "beyond+wsd_4": ("beyond.yaml", ["trainer.config.lr_schedule=wsd", "trainer.config.decay_epochs=4"]),
    # a smaller transformer (data-limited image part?) and decoupled weight decay alone (no cosine)
    "beyond+vit_16": ("beyond.yaml", ["model.config.vit.dim=16"]),
    "beyond+adamw_0.05": (
        "beyond.yaml",
        ["trainer.config.optimizer=adamw", "trainer.config.weight_decay=0.05"],
    ),
    # the eye shift is worth 0.13 of the oracle's 0.63 (benchmarks/headroom.py), and the generator's is
    # linear in the eye position: a one-layer shifter (Linear, Tanh) instead of the 3-layer MLP
    "beyond+linear_shifter": ("beyond.yaml", ["model.config.shift_layers=1"]),
    "winner+linear_shifter": ("winner_demo.yaml", ["model.config.shift_layers=1"]),
    # fourth round: local mixing of the tokens before every block (CPVT's depthwise convolution), the
    # readout reading every block (the early, near-linear features too), a wider feed-forward part, the
    # weaker input smoothness the ViT sweep's best trials had
    "beyond+local_3": ("beyond.yaml", ["model.config.vit.local_kernel=3"]),
    "beyond+readout_all": ("beyond.yaml", ["model.config.vit.readout_blocks=all"]),
    "beyond+mlp_4": ("beyond.yaml", ["model.config.vit.mlp_ratio=4"]),
    "beyond+gamma_input_3": ("beyond.yaml", ["model.config.gamma_input=3.0"]),
    # fifth round: a full-resolution linear pathway beside the tokens (simple cells' phase)
    "beyond+pixel_16": ("beyond.yaml", ["model.config.vit.pixel_channels=16"]),
    "beyond+pixel_16_energy": (
        "beyond.yaml",
        ["model.config.vit.pixel_channels=16", "model.config.vit.pixel_energy=true"],
    ),
    "beyond+pixel_32": ("beyond.yaml", ["model.config.vit.pixel_channels=32"]),
    # the readout's training jitter (init_sigma 0.14: ~4 px in x) blurs a phase-sensitive feature
    "beyond+pixel_16_sigma_0.05": (
        "beyond.yaml",
        ["model.config.vit.pixel_channels=16", "model.config.init_sigma=0.05"],
    ),
    # sixth round: every validation curve still rises ~0.004 per epoch at epoch 12, so at this budget
    # the model that learns fastest wins: the per-neuron parts at a higher rate than the core, or one
    # optimiser step per batch instead of per round of one batch from every scan (2x the steps)
    "beyond+readout_lr_2": ("beyond.yaml", ["trainer.config.readout_lr_scale=2.0"]),
    "beyond+readout_lr_4": ("beyond.yaml", ["trainer.config.readout_lr_scale=4.0"]),
    "beyond+step_per_batch": ("beyond.yaml", ["trainer.config.loss_accum_batch_n=1"]),
    # seventh round: the readout at a higher rate was worse, so the other way round: the core faster
    # than the per-neuron parts (which stay at beyond's 0.009)
    "beyond+core_lr_2": (
        "beyond.yaml",
        ["trainer.config.lr_init=0.018", "trainer.config.readout_lr_scale=0.5"],
    ),
    "beyond+core_lr_1.5": (
        "beyond.yaml",
        ["trainer.config.lr_init=0.0135", "trainer.config.readout_lr_scale=0.6666666666666666"],
    ),
    # eighth round: the readout positions start at receptive fields mapped from the training trials
    # (init_mu rf_map; free positions, as the map replaces the grid-mean predictor's retinotopy)
    "beyond+rf_map": ("beyond.yaml", RF_MAP),
}
# rounds 2-8 varied beyond.yaml as it was before round 8 adopted the receptive-field start: every such
# row starts from that config (its own overrides come after, so `beyond+rf_map` is beyond.yaml today)
ROUND7_BEYOND = [
    "model.config.init_mu=uniform",
    "model.config.grid_mean_predictor={hidden_layers: 4, hidden_features: 20, nonlinearity: ReLU}",
]
SECOND_ROUND = {row: (path, [*ROUND7_BEYOND, *sets]) for row, (path, sets) in SECOND_ROUND.items()}
SECOND_ROUND["beyond_round7"] = ("beyond.yaml", ROUND7_BEYOND)
CANDIDATES.update(SECOND_ROUND)
ENSEMBLES = {
    "winner_ensemble": "ensemble_demo.yaml",
    "cnn_options_ensemble": "beyond_cnn_options.yaml",
    "beyond_ensemble": "beyond.yaml",
}
REFERENCE = {"single": "winner_demo", "ensemble": "winner_ensemble"}


def sensorium(env: dict, *args: str, capture: bool = True) -> str:
    """Run the CLI; with ``capture=False`` its output goes to this terminal (long populate runs)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env, capture_output=capture, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"sensorium {' '.join(args)} failed:\n{proc.stdout}\n{(proc.stderr or '')[-3000:]}")
    return proc.stdout or ""


def _safe(name: str) -> str:
    return name.replace("+", "p_")


def declare(env: dict, rows: list[str], seeds: list[int], epochs: int) -> dict[str, tuple[str, list[str]]]:
    """Add every row's experiments; returns {row: (kind, [experiment or ensemble names])}."""
    declared = {}
    for row in rows:
        if row in CANDIDATES:
            path, sets = CANDIDATES[row]
            name = f"abl_{_safe(row)}"
            seed_list = ",".join(map(str, seeds))
            # one model per seed on the original split (a re-split belongs to ensemble members)
            extra = [f"name={name}", f"seeds=[{seed_list}]", "members=null", "ensemble=null"]
            extra.append("dataset.config.split=null")
            extra.append(f"trainer.config.max_iter={epochs}")
            args = [x for s in [*extra, *sets] for x in ("--set", s)]
            sensorium(env, "experiment", "add", str(EXPERIMENTS / path), *args)
            declared[row] = ("single", [name])
        else:
            names = []
            for s in seeds:
                name = f"abl_{row}_s{s}"
                members = ",".join(f"{{seed: {s + i}, split: {i}}}" for i in range(3))
                sets = [
                    f"name={name}",
                    f"members=[{members}]",
                    "seeds=null",
                    f"ensemble.name={name}",
                    "dataset.config.split.n_splits=3",
                    f"trainer.config.max_iter={epochs}",
                ]
                sensorium(
                    env,
                    "experiment",
                    "add",
                    str(EXPERIMENTS / ENSEMBLES[row]),
                    *[x for v in sets for x in ("--set", v)],
                )
                names.append(name)
            declared[row] = ("ensemble", names)
    return declared


def summarise(
    scores: list[dict], declared: dict[str, tuple[str, list[str]]], tier: str = "test"
) -> list[dict]:
    of_tier = [r for r in scores if r["tier"] == tier]
    out = []
    for row, (kind, names) in declared.items():
        per_seed: dict[str, list[float]] = {}
        oracle = []
        for r in of_tier:
            model = r["model"].removesuffix(" [ens]")
            if kind == "single" and r["model"] == names[0]:
                per_seed.setdefault(r["member"], []).append(r["single_trial_correlation"])
            elif kind == "ensemble" and r["model"].endswith("[ens]") and model in names:
                per_seed.setdefault(model, []).append(r["single_trial_correlation"])
            else:
                continue
            oracle.append(r["oracle_single_trial_correlation"])
        means = [statistics.fmean(v) for v in per_seed.values()]
        if not means:
            continue
        out.append(
            {
                "row": row,
                "kind": kind,
                "test_corr": statistics.fmean(means),
                "seed_min": min(means),
                "seed_max": max(means),
                "n_seeds": len(means),
                "oracle": statistics.fmean(oracle),
            }
        )
    ref = {r["row"]: r["test_corr"] for r in out}
    for r in out:
        base = ref.get(REFERENCE[r["kind"]])
        r["ratio"] = None if base is None else r["test_corr"] / base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="SENSORIUM_HOME (reused when it exists)")
    parser.add_argument("--seeds", default="42,45,48", help="seeds (ensembles: seed bases s, s+1, s+2)")
    parser.add_argument("--epochs", type=int, default=12, help="max_iter of every model (default 12)")
    first_round = [r for r in CANDIDATES if r not in SECOND_ROUND]
    parser.add_argument("--rows", default=",".join([*first_round, *ENSEMBLES]), help="comma-separated rows")
    parser.add_argument("--mice", type=int, default=2)
    parser.add_argument(
        "--synth-seed",
        type=int,
        default=1,
        help="seed of the synthetic recordings (default 1: not the seed-0 demo data the sweeps chose on)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="populate processes of one torch thread each (default 1)"
    )
    parser.add_argument(
        "--tier",
        choices=["test", "validation"],
        default="test",
        help="tier to report (validation: for choosing rows; members' re-splits mix it with training)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in CANDIDATES and r not in ENSEMBLES]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {[*CANDIDATES, *ENSEMBLES]}")

    env = dict(os.environ, SENSORIUM_HOME=str(args.home))
    t0 = time.perf_counter()
    data = args.home / "data"
    seed_file = data / "SYNTH_SEED"  # a reused home must hold the recordings this run asks for
    if seed_file.exists() and seed_file.read_text().strip() != str(args.synth_seed):
        raise SystemExit(
            f"{args.home} holds synth seed {seed_file.read_text().strip()} recordings, not "
            f"--synth-seed {args.synth_seed}: use another --home"
        )
    if not any(data.glob("*.zip")):
        sensorium(env, "synth", "--out", str(data), "--mice", str(args.mice), "--seed", str(args.synth_seed))
        sensorium(env, "ingest", "-q", *sorted(str(p) for p in data.glob("*.zip")))
        seed_file.write_text(f"{args.synth_seed}\n")
    declared = declare(env, rows, seeds, args.epochs)
    names = [n for _, ns in declared.values() for n in ns]
    print(
        f"training {len(names)} experiments ({sum(len(ns) for _, ns in declared.values())}) ...", flush=True
    )
    if args.workers > 1:
        # N one-thread processes share the job queue (small models train faster side by side than one
        # process with N threads); the plain populate after them picks up what depended on both (the
        # ensemble scores of members trained by different processes)
        one_thread = dict(env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "populate", "--reserve-jobs"],
                cwd=REPO,
                env=one_thread,
                stdout=subprocess.DEVNULL if i else None,
            )
            for i in range(args.workers)
        ]
        failed = [p.args for p in procs if p.wait() != 0]
        if failed:
            raise SystemExit(f"{len(failed)} populate process(es) failed: see `sensorium jobs --errors`")
    sensorium(env, "populate", capture=False)  # every declared model, then predictions and scores
    summary = summarise(json.loads(sensorium(env, "scores", "--json")), declared, args.tier)
    info = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": f"{args.mice} synthetic pre-training-style mice (150 neurons, 1000 trials, "
        f"synth seed {args.synth_seed})",
        "budget": f"{args.epochs} epochs per model; seeds {seeds}; {args.workers} populate process(es)",
        "wall_seconds": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps({"info": info, "rows": summary}, indent=2))
        return
    for k, v in info.items():
        print(f"{k:<8}: {v}")
    print(
        f"metric  : {args.tier} single-trial correlation, mean over scans; range over seeds; "
        "oracle = planted expectation"
    )
    print(
        f"\n{'row':<20} {'kind':<8} {args.tier[:4] + ' corr':>9} {'seeds':>5} {'range':>11} {'oracle':>7} "
        f"{'of oracle':>9} {'vs ref':>7}"
    )
    for r in summary:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        spread = f"{r['seed_min']:.3f}-{r['seed_max']:.3f}"
        print(
            f"{r['row']:<20} {r['kind']:<8} {r['test_corr']:>9.3f} {r['n_seeds']:>5} {spread:>11} "
            f"{r['oracle']:>7.3f} {r['test_corr'] / r['oracle']:>9.2f} {ratio:>7}"
        )


if __name__ == "__main__":
    main()
