"""Ablation of the winning additions on fixed synthetic recordings, through the real pipeline
(docs/model.md#ablation).

Each demo-size preset (``experiments/demo.yaml`` and its ``*_demo`` variants, which differ from it only in
one winning addition, plus ``winner_demo.yaml`` with all of them) is trained through ``sensorium train``
on the same synthetic recordings in a throwaway ``SENSORIUM_HOME``. The script prints each model's test
single-trial correlation next to the oracle (the planted expected response) and its relative change
against the baseline, beside the relative changes the winning entry reported (docs/model.md#ablation).

Run:  .venv/bin/python -m benchmarks.ablation [--mice 2] [--neurons 150] [--trials 1000] [--seed 0]
      [--presets demo,only_history_demo,...] [--home DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, command_line, sensorium, synth_and_ingest

EXPERIMENTS = REPO / "experiments"

# relative change of test single-trial correlation vs the 6-mouse baseline, reported by the winner
# (docs/model.md#ablation)
REPORTED = {
    "demo": None,
    "only_adjnorm_demo": +2.5,
    "only_history_demo": +12.6,
    "only_state_demo": +9.7,
    "only_gain_demo": +3.6,
    "new_hyperparams_demo": -4.1,
    "winner_demo": +19.5,  # the full Model 4 ensemble; here one member, so no ensemble gain
}


def training_seconds(home: Path) -> dict[str, float]:
    """Training wall time of each experiment's models, from ``TrainedModel.duration_s``."""
    os.environ["SENSORIUM_HOME"] = str(home)
    import schemas

    schemas.activate()
    from schemas.fabrik import Experiment
    from schemas.training import TrainedModel

    rows = TrainedModel * (Experiment * Experiment.Member).proj(
        "model_fn", "model_hash", "trainer_fn", "trainer_hash"
    )
    out: dict[str, float] = {}
    for r in rows.to_dicts():
        out[r["experiment_name"]] = out.get(r["experiment_name"], 0.0) + r["duration_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mice", type=int, default=2)
    parser.add_argument("--neurons", type=int, default=150)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", default=",".join(REPORTED), help="comma-separated preset names")
    parser.add_argument(
        "--seeds", default="42", help="comma-separated training seeds per preset (default 42)"
    )
    parser.add_argument("--home", type=Path, help="SENSORIUM_HOME to use (default: a new temporary folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="sens-abl-"))
    env = dict(
        os.environ, SENSORIUM_HOME=str(home), SENSORIUM_DEVICE=os.environ.get("SENSORIUM_DEVICE", "auto")
    )
    data = home / "data"
    t0 = time.perf_counter()
    # pre-training-style recordings only: every test tier has responses to score
    synth_and_ingest(env, data, mice=args.mice, neurons=args.neurons, trials=args.trials, seed=args.seed)
    timings = {}
    for name in args.presets.split(","):
        start = time.perf_counter()
        sensorium(env, "train", str(EXPERIMENTS / f"{name}.yaml"), "--set", f"seeds=[{args.seeds}]")
        timings[name] = time.perf_counter() - start
    rows = json.loads(sensorium(env, "scores", "--json"))
    durations = training_seconds(home)

    test = [r for r in rows if r["tier"] == "test"]
    per_exp: dict[str, dict] = {}
    for r in test:
        e = per_exp.setdefault(r["model"], {"corr": [], "oracle": [], "by_seed": {}})
        e["corr"].append(r["single_trial_correlation"])
        e["oracle"].append(r["oracle_single_trial_correlation"])
        e["by_seed"].setdefault(r["member"], []).append(r["single_trial_correlation"])
    summary = []
    base = None
    for name in args.presets.split(","):
        e = per_exp.get(name)
        if not e:
            continue
        corr = sum(e["corr"]) / len(e["corr"])
        oracle = sum(e["oracle"]) / len(e["oracle"])
        if name == "demo":
            base = corr
        seed_means = [sum(v) / len(v) for v in e["by_seed"].values()]
        summary.append(
            {
                "preset": name,
                "test_corr": corr,
                "seed_min": min(seed_means),
                "seed_max": max(seed_means),
                "n_seeds": len(seed_means),
                "oracle": oracle,
                "train_seconds": durations.get(name),
                "step_seconds": timings[name],
            }
        )
    for s in summary:
        s["change_pct"] = None if base is None else 100 * (s["test_corr"] - base) / base
        s["reported_pct"] = REPORTED.get(s["preset"])
    info = {
        "command": command_line(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": f"{args.mice} synthetic mice, {args.neurons} neurons, {args.trials} trials, seed {args.seed}",
        "wall_seconds": time.perf_counter() - t0,
        "home": str(home),
    }
    if args.json:
        print(json.dumps({"info": info, "rows": summary}, indent=2))
        return
    print(f"command : {info['command']}\nmachine : {info['machine']}\ndata    : {info['data']}")
    print("metric  : test single-trial correlation, mean over scans and seeds (oracle: planted expectation)")
    print("range   : lowest-highest per-seed mean; train s = summed training time of the preset's models\n")
    header = ("preset", "test corr", "seeds", "range", "oracle", "of oracle", "change", "reported", "train s")
    widths = (22, 9, 5, 11, 7, 9, 8, 8, 7)
    print(
        " ".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for s in summary:
        change = "-" if s["change_pct"] is None or s["preset"] == "demo" else f"{s['change_pct']:+.1f}%"
        reported = "-" if s["reported_pct"] is None else f"{s['reported_pct']:+.1f}%"
        ratio = s["test_corr"] / s["oracle"]
        spread = f"{s['seed_min']:.3f}-{s['seed_max']:.3f}"
        cells = (
            s["preset"],
            f"{s['test_corr']:.3f}",
            s["n_seeds"],
            spread,
            f"{s['oracle']:.3f}",
            f"{ratio:.2f}",
        )
        cells += (change, reported, f"{s['train_seconds'] or 0:.0f}")
        print(
            " ".join(
                f"{c:<{w}}" if i == 0 else f"{c!s:>{w}}"
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    print(f"\nwall time {info['wall_seconds']:.0f} s; state in {home}")


if __name__ == "__main__":
    main()
