"""research.transfer: a core trained on one home's mice, saved, and started from (fine-tuned or frozen) on
another home's, on tiny Gabor-world recordings written by ``sensorium synth``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from research import transfer
from tests.factories import REPO, TINY_MODEL, cli_argv


def synth(out: Path, seed: int) -> None:
    """One tiny Gabor-world recording in ``out``."""
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
        # the last weights, not the best: a 2-epoch run that did not beat its start would otherwise end
        # on its starting weights, and "the frozen core did not change" would prove nothing
        "trainer": {
            "fn": "sensorium.training.standard_trainer",
            "config": {"max_iter": 2, "patience": 3, "restore_best": False},
        },
        "seeds": [1],
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(experiment))
    return root


def run(root: Path, capsys: pytest.CaptureFixture, *args: str, seed: int = 1) -> dict:
    """research.transfer's JSON line for ``args`` on the tiny experiment."""
    transfer.main([*args, "--seed", str(seed), "--experiment", str(root / "tiny.yaml")])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def core_after_target(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[dict, dict, bool]:
    """(the core's weights when training starts, when it ends, whether the core was wrapped as frozen) of
    a target run with ``args``."""
    seen: dict = {}
    train = transfer.train_model

    def weights(model) -> dict:
        core = model.core.inner if isinstance(model.core, transfer.FrozenCore) else model.core
        return {k: v.clone() for k, v in core.state_dict().items()}

    def spy(spec, model, scans, **options):
        seen["frozen"] = isinstance(model.core, transfer.FrozenCore)
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
    return seen["start"], seen["end"], seen["frozen"]


def test_pretrain_saves_the_core_and_target_starts_from_it(homes, capsys, monkeypatch):
    out = homes / "core.pt"
    # another seed than the target runs': a core that did not beat its start is still not theirs
    pre = run(homes, capsys, "pretrain", "--home", str(homes / "archive"), "--out", str(out), seed=2)
    assert pre["step"] == "pretrain" and pre["epochs"] == 2 and 0 < pre["best_validation_corr"] < 1
    saved = torch.load(out, weights_only=True)
    assert saved and all(isinstance(v, torch.Tensor) for v in saved.values())

    start, end, frozen = core_after_target(homes, monkeypatch, "--core", str(out))
    assert start.keys() == saved.keys()
    assert all(torch.equal(start[k], saved[k]) for k in saved)  # started from the file
    assert any(not torch.equal(end[k], saved[k]) for k in saved)  # then fine-tuned

    assert not frozen
    start, end, frozen = core_after_target(homes, monkeypatch, "--core", str(out), "--freeze")
    assert frozen
    assert all(torch.equal(start[k], saved[k]) for k in saved)
    assert all(torch.equal(end[k], saved[k]) for k in saved)  # weights and BatchNorm statistics kept

    scratch, _, _ = core_after_target(homes, monkeypatch)
    assert any(not torch.equal(scratch[k], saved[k]) for k in saved if saved[k].is_floating_point())
    out_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(out_line)["core"] is None


def test_report_home_scores_only_its_scans(homes, capsys, tmp_path, monkeypatch):
    joint = tmp_path / "joint" / "data"
    joint.mkdir(parents=True)
    for home in ("archive", "target"):
        for f in (homes / home / "data").glob("*.zip"):
            (joint / f.name).symlink_to(f)
    scored: list = []
    score = transfer.validation_correlation

    def spy(model, scans, *args, **kwargs):
        scored.append(sorted(scans))
        return score(model, scans, *args, **kwargs)

    monkeypatch.setattr(transfer, "validation_correlation", spy)
    out = tmp_path / "c.pt"
    both = run(
        homes,
        capsys,
        "pretrain",
        "--home",
        str(joint.parent),
        "--out",
        str(out),
        "--report-home",
        str(homes / "target"),
    )
    assert scored == [sorted(transfer.scans_of(homes / "target"))]
    assert len(transfer.scans_of(joint.parent)) == 2 and len(scored[0]) == 1
    assert 0 < both["report_home_validation_corr"] < 1


def test_test_tier_is_reported_only_when_asked(homes, capsys, monkeypatch):
    tiers: list = []
    predict = transfer.predict_tier

    def spy(model, scan, tier, **kwargs):
        tiers.append(tier)
        return predict(model, scan, tier, **kwargs)

    monkeypatch.setattr(transfer, "predict_tier", spy)
    plain = run(homes, capsys, "target", "--home", str(homes / "target"))
    assert plain["test_corr"] is None and "test" not in tiers
    tested = run(homes, capsys, "target", "--home", str(homes / "target"), "--test")
    assert tiers.count("test") == 1 and -1 < tested["test_corr"] < 1  # one scan, predicted once
    assert tested["best_validation_corr"] == plain["best_validation_corr"]  # reporting changes no training


def test_members_saved_and_scored_as_one_ensemble(homes, capsys, tmp_path):
    files = [tmp_path / f"m{i}.npz" for i in range(2)]
    for seed, path in zip((1, 2), files, strict=True):
        run(
            homes,
            capsys,
            "target",
            "--home",
            str(homes / "target"),
            "--test",
            "--predictions",
            str(path),
            seed=seed,
        )
    single = [np.load(f) for f in files]
    (key,) = {k.removesuffix("/pred") for k in single[0].files if k.endswith("/pred")}
    target = single[0][f"{key}/target"]
    assert np.array_equal(target, single[1][f"{key}/target"])
    assert not np.array_equal(single[0][f"{key}/pred"], single[1][f"{key}/pred"])
    transfer.main(["score", "--predictions", *map(str, files)])
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # a direct loop: the mean prediction, correlated per neuron over the test trials
    mean = (single[0][f"{key}/pred"] + single[1][f"{key}/pred"]) / 2
    direct = np.mean([np.corrcoef(target[:, n], mean[:, n])[0, 1] for n in range(target.shape[1])])
    assert scored == {"step": "score", "members": 2, "test_corr": round(float(direct), 4)}


def test_a_one_member_score_is_its_test_corr_and_bad_files_are_refused(homes, capsys, tmp_path):
    path = tmp_path / "m.npz"
    tested = run(
        homes, capsys, "target", "--home", str(homes / "target"), "--test", "--predictions", str(path)
    )
    transfer.main(["score", "--predictions", str(path)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test_corr"] == tested["test_corr"]
    other = tmp_path / "other.npz"
    np.savez(other, **{"someone/pred": np.zeros((3, 2)), "someone/target": np.zeros((3, 2))})
    with pytest.raises(SystemExit, match="other scans than"):
        transfer.main(["score", "--predictions", str(path), str(other)])
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros(1))
    with pytest.raises(SystemExit, match="no test predictions"):
        transfer.main(["score", "--predictions", str(empty)])
    with pytest.raises(SystemExit, match=r"--member: tiny.yaml: member 1: the experiment has 1 \(0\.\.0\)"):
        run(homes, capsys, "target", "--home", str(homes / "target"), "--member", "1")


def test_member_index_is_checked():
    exp = transfer.load_experiment(REPO / "experiments" / "beyond_cnn.yaml")
    assert transfer.RunSpec.of_member(exp, index=2).seed == 44
    assert transfer.RunSpec.of_member(exp, index=2).dataset_config.split.index == 2
    with pytest.raises(ValueError, match="member 3: the experiment has 3"):
        transfer.RunSpec.of_member(exp, index=3)


def test_report_home_must_share_a_scan(homes, tmp_path):
    with pytest.raises(SystemExit, match="none of the recordings"):
        transfer.main(
            [
                "pretrain",
                "--home",
                str(homes / "archive"),
                "--out",
                str(tmp_path / "c.pt"),
                "--report-home",
                str(homes / "target"),
                "--experiment",
                str(homes / "tiny.yaml"),
            ]
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["target", "--home", "x", "--freeze"],
        ["target", "--home", "x", "--out", "c.pt"],
        ["pretrain", "--home", "x"],
        ["target"],
        ["score"],
        ["score", "--predictions", "missing.npz"],
        ["score", "--predictions", "m.npz", "--freeze"],
        ["target", "--home", "x", "--predictions", "p"],
        ["pretrain", "--home", "x", "--out", "c.pt", "--predictions", "p.npz"],
    ],
)
def test_arguments_that_do_not_fit_the_step_are_refused(argv):
    with pytest.raises(SystemExit):
        transfer.parse_args(argv)


def test_two_files_of_one_scan_are_one_line(homes, capsys, tmp_path):
    data = tmp_path / "twice" / "data"
    data.mkdir(parents=True)
    (original,) = sorted((homes / "target" / "data").glob("*.zip"))[:1]
    (data / original.name).symlink_to(original)
    (data / f"copy-{original.name}").symlink_to(original)
    # name order: the copy is read first, the original then finds its scan taken
    with pytest.raises(SystemExit, match=rf"^{original.name}: scan .* is in another file of this folder too"):
        run(homes, capsys, "target", "--home", str(tmp_path / "twice"))
