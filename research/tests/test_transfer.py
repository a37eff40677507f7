"""research.transfer: a core trained on one home's mice, saved, and started from (fine-tuned or frozen) on
another home's, on tiny Gabor-world recordings written by ``sensorium synth``."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
import yaml

from research import transfer
from tests.factories import REPO, TINY_MODEL, cli_argv


def synth(out, seed: int) -> None:
    argv = cli_argv(
        "synth", "--out", str(out), "--mice", "1", "--neurons", "20", "--trials", "200", "--seed", str(seed)
    )
    p = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    synth(root / "archive" / "data", seed=3)
    synth(root / "target" / "data", seed=4)
    experiment = {
        "name": "tiny",
        "dataset": {"fn": "sensorium.datasets.static_loaders", "config": {"scans": "all", "batch_size": 32}},
        "model": {"fn": "sensorium.models.stacked_core_full_gauss_readout", "config": TINY_MODEL},
        "trainer": {"fn": "sensorium.training.standard_trainer", "config": {"max_iter": 2, "patience": 3}},
        "seeds": [1],
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(experiment))
    return root


def run(root, capsys, *args: str, seed: int = 1) -> dict:
    transfer.main([*args, "--seed", str(seed), "--experiment", str(root / "tiny.yaml")])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def core_after_target(root, monkeypatch, *args: str) -> tuple[dict, dict]:
    """(the core's weights when training starts, and when it ends) of a target run with ``args``."""
    seen: dict = {}
    train = transfer.train_model

    def weights(model) -> dict:
        core = model.core.inner if isinstance(model.core, transfer.FrozenCore) else model.core
        return {k: v.clone() for k, v in core.state_dict().items()}

    def spy(spec, model, scans, **options):
        seen["start"] = weights(model)
        result = train(spec, model, scans, **options)
        seen["end"] = weights(model)
        return result

    monkeypatch.setattr(transfer, "train_model", spy)
    transfer.main(
        [
            "target",
            "--home",
            str(root / "target"),
            "--seed",
            "1",
            "--experiment",
            str(root / "tiny.yaml"),
            *args,
        ]
    )
    return seen["start"], seen["end"]


def test_pretrain_saves_the_core_and_target_starts_from_it(homes, capsys, monkeypatch):
    out = homes / "core.pt"
    # another seed than the target runs': a core that did not beat its start is still not theirs
    pre = run(homes, capsys, "pretrain", "--home", str(homes / "archive"), "--out", str(out), seed=2)
    assert pre["step"] == "pretrain" and pre["epochs"] == 2 and 0 < pre["best_validation_corr"] < 1
    saved = torch.load(out, weights_only=True)
    assert saved and all(isinstance(v, torch.Tensor) for v in saved.values())

    start, end = core_after_target(homes, monkeypatch, "--core", str(out))
    assert start.keys() == saved.keys()
    assert all(torch.equal(start[k], saved[k]) for k in saved)  # started from the file
    assert any(not torch.equal(end[k], saved[k]) for k in saved)  # then fine-tuned

    start, end = core_after_target(homes, monkeypatch, "--core", str(out), "--freeze")
    assert all(torch.equal(end[k], saved[k]) for k in saved)  # weights and BatchNorm statistics kept

    scratch, _ = core_after_target(homes, monkeypatch)
    assert any(not torch.equal(scratch[k], saved[k]) for k in saved if saved[k].is_floating_point())
    out_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(out_line)["core"] is None


def test_report_home_scores_only_its_scans(homes, capsys, tmp_path):
    joint = tmp_path / "joint" / "data"
    joint.mkdir(parents=True)
    for home in ("archive", "target"):
        for f in (homes / home / "data").glob("*.zip"):
            (joint / f.name).symlink_to(f)
    both = run(
        homes,
        capsys,
        "pretrain",
        "--home",
        str(joint.parent),
        "--out",
        str(tmp_path / "c.pt"),
        "--report-home",
        str(homes / "target"),
    )
    assert both["report_home_validation_corr"] is not None
    assert both["report_home_validation_corr"] != both["best_validation_corr"]


def test_freeze_needs_a_core():
    with pytest.raises(SystemExit):
        transfer.parse_args(["target", "--home", "x", "--freeze"])
