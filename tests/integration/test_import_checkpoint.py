"""``sensorium import-checkpoint`` with the competition's real starter-kit checkpoints.

Both files (the starter kit's, found as ``tests/factories.py`` says) are imported into the experiments
of ``experiments/``
(``starter_kit_sota``, ``starter_kit_ln``) on a synthetic scan of their shape under their data key
(27204-5-13, 7538 neurons) whose cortex coordinates are the checkpoint's own, then predicted and scored
like a trained model. A wrong file, a model that does not fit and other neurons are refused with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.format import write_recording
from pipeline.data.synth import SynthConfig, folder_name, synthesize
from tests.factories import KIT_PLACES, LN, SOTA, cli_argv

REPO = Path(__file__).parents[2]
DATA_KEY = "27204-5-13"

pytestmark = pytest.mark.skipif(
    not SOTA.exists(), reason=f"starter-kit checkpoints not found in {', '.join(map(str, KIT_PLACES))}"
)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_argv(*args),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def scan_like_the_checkpoint(out: Path, grid: np.ndarray, data_key: str = DATA_KEY) -> Path:
    """A small synthetic recording with the checkpoint's neurons: its data key, and cortex coordinates
    equal to the stored (normalised) source grid, which normalising leaves unchanged."""
    cfg = SynthConfig(n_neurons=len(grid), n_trials=60, seed=5)  # 60: a few of every tier
    rec, _ = synthesize(cfg)
    animal, session, scan = (int(x) for x in data_key.split("-"))
    coords = np.array(rec.neurons["cell_motor_coordinates"], dtype=np.float32)
    coords[:, :2] = grid
    neurons = dict(rec.neurons, cell_motor_coordinates=coords)
    neurons |= {
        "animal_ids": np.full(len(grid), animal),
        "sessions": np.full(len(grid), session),
        "scan_idx": np.full(len(grid), scan),
    }
    T = rec.n_trials
    trials = dict(
        rec.trials, animal_id=np.full(T, animal), session=np.full(T, session), scan_idx=np.full(T, scan)
    )
    rec = dataclasses.replace(rec, data_key=data_key, neurons=neurons, trials=trials)
    _, zipped = write_recording(rec, out / folder_name(data_key))
    return zipped


@pytest.fixture(scope="module")
def kit_scan(db, tmp_path_factory) -> str:
    grid = torch.load(SOTA, map_location="cpu", weights_only=True)[f"readout.{DATA_KEY}.source_grid"].numpy()
    ingested = _cli("ingest", "-q", str(scan_like_the_checkpoint(tmp_path_factory.mktemp("kit"), grid)))
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    for name in ("starter_kit_sota", "starter_kit_ln"):
        added = _cli("experiment", "add", f"experiments/{name}.yaml")
        assert added.returncode == 0, added.stdout + added.stderr
    return DATA_KEY


@pytest.mark.slow
@pytest.mark.parametrize(("experiment", "path"), [("starter_kit_sota", SOTA), ("starter_kit_ln", LN)])
def test_starter_kit_checkpoint_imports_strictly_and_is_scored_like_a_trained_model(
    kit_scan, experiment, path, tmp_path
):
    from schemas.evaluation import ModelScore
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel

    # import-only: no worker or populate would train it meanwhile
    assert not TrainedModel.key_source & experiment_models(experiment)
    done = _cli("import-checkpoint", str(path), "--experiment", experiment, "--scan", kit_scan)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"as experiment {experiment!r} seed 0 on scan {kit_scan}" in done.stdout
    (key,) = (TrainedModel & experiment_models(experiment)).keys()
    row = (TrainedModel & key).fetch1()
    assert row["epochs"] == 0 and not TrainedModel.Epoch & key and np.isfinite(row["best_val_corr"])
    imported = (TrainedModel.Imported & key).fetch1()
    assert imported["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    stored = (TrainedModel.Checkpoint & key).fetch1("state_dict")
    original = torch.load(path, map_location="cpu", weights_only=True)
    assert list(stored) == list(original)
    assert all(np.array_equal(np.asarray(stored[k]), original[k].numpy()) for k in original), (
        "weights as in the file"
    )

    again = _cli("import-checkpoint", str(path), "--experiment", experiment, "--scan", kit_scan)
    assert again.returncode == 2 and "already stored" in again.stdout

    if experiment != "starter_kit_sota":
        return  # predicting, scoring and submitting (about a minute for 7538 neurons) once is enough
    populated = _cli("populate", "--experiment", experiment)
    assert populated.returncode == 0, populated.stdout + populated.stderr
    assert len(ModelScore & key) >= 3
    scores = json.loads(_cli("scores", "--experiment", experiment, "--json").stdout)
    assert scores, "the imported model is scored"
    submitted = _cli("submit", "--ensemble", experiment, "--out", str(tmp_path))
    assert submitted.returncode == 0 and "valid, recorded" in submitted.stdout, (
        submitted.stdout + submitted.stderr
    )


@pytest.mark.slow
def test_a_checkpoint_of_another_model_lists_missing_unexpected_and_misshaped_keys(kit_scan, tmp_path):
    from schemas.training import TrainedModel

    before = len(TrainedModel())
    # the SOTA file into the LN model: one core layer too many, and nothing else differs
    added = _cli(
        "experiment",
        "add",
        "experiments/starter_kit_ln.yaml",
        "--set",
        "name=kit_ln_probe",
        "--set",
        "seeds=[3]",
    )
    assert added.returncode == 0, added.stdout
    wrong = _cli("import-checkpoint", str(SOTA), "--experiment", "kit_ln_probe", "--scan", kit_scan)
    assert wrong.returncode == 2 and "unexpected keys (8): core.features.layer3." in wrong.stdout, (
        wrong.stdout
    )
    assert "missing keys" not in wrong.stdout and "mis-shaped" not in wrong.stdout
    # a copy with a dropped, an extra and a re-shaped tensor
    state = torch.load(SOTA, map_location="cpu", weights_only=True)
    state.pop(f"readout.{DATA_KEY}.bias")
    state["extra.weight"] = torch.zeros(3)
    state["core.features.layer0.conv.weight"] = torch.zeros(64, 3, 9, 9)
    torch.save(state, tmp_path / "edited.pth")
    refused = _cli(
        "import-checkpoint",
        str(tmp_path / "edited.pth"),
        "--experiment",
        "baseline_probe",
        "--scan",
        kit_scan,
    )
    assert refused.returncode == 2 and "unknown experiment 'baseline_probe'" in refused.stdout
    added = _cli(
        "experiment",
        "add",
        "experiments/starter_kit_sota.yaml",
        "--set",
        "name=kit_probe",
        "--set",
        "seeds=[3]",
    )
    assert added.returncode == 0, added.stdout
    refused = _cli(
        "import-checkpoint", str(tmp_path / "edited.pth"), "--experiment", "kit_probe", "--scan", kit_scan
    )
    line = refused.stdout
    assert refused.returncode == 2 and line.count("\n") == 1 and "Traceback" not in refused.stderr, line
    assert f"missing keys (1): readout.{DATA_KEY}.bias" in line
    assert "unexpected keys (1): extra.weight" in line
    assert "core.features.layer0.conv.weight (64, 3, 9, 9) in the file vs (64, 4, 9, 9) in the model" in line
    assert len(TrainedModel()) == before, "nothing stored"


@pytest.mark.slow
def test_other_neurons_and_foreign_files_are_refused_with_the_reason(kit_scan, tmp_path):
    state = torch.load(SOTA, map_location="cpu", weights_only=True)
    grid = state[f"readout.{DATA_KEY}.source_grid"]
    state[f"readout.{DATA_KEY}.source_grid"] = torch.flip(grid, dims=[0])  # the same neurons, reordered
    torch.save(state, tmp_path / "reordered.pth")
    added = _cli(
        "experiment",
        "add",
        "experiments/starter_kit_sota.yaml",
        "--set",
        "name=kit_probe2",
        "--set",
        "seeds=[4]",
    )
    assert added.returncode == 0, added.stdout
    refused = _cli(
        "import-checkpoint", str(tmp_path / "reordered.pth"), "--experiment", "kit_probe2", "--scan", kit_scan
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "normalised cortex coordinates differ from those of the ingested scan 27204-5-13" in refused.stdout

    (tmp_path / "notes.pth").write_text("not a checkpoint")
    (tmp_path / "list.pth").write_bytes(b"")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    for name, reason in (
        ("notes.pth", "not a PyTorch state_dict"),
        ("list.pth", "expected a state_dict"),
        ("gone.pth", "cannot read"),
    ):
        bad = _cli(
            "import-checkpoint", str(tmp_path / name), "--experiment", "kit_probe2", "--scan", kit_scan
        )
        assert bad.returncode == 2 and reason in bad.stdout and bad.stdout.count("\n") == 1, bad.stdout
