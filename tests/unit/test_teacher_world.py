"""The teacher world (``sensorium synth --stimulus teacher``): the image drive of a pretrained starter-kit
model of real mouse V1, evaluated on the generator's images, behaviour and eye position.

Needs the starter kit's ``sensorium_p_sota_model.pth`` (``$SENSORIUM_STARTER_KIT``, or one of the
places ``tests.factories.KIT_PLACES`` lists); the tests that read it are skipped without it. Sizes are
small (20 neurons x 60 trials): each test takes seconds on a CPU.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.synth import SynthConfig, synthesize_world
from tests.factories import KIT_PLACES, LN, SOTA, cli_argv

REPO = Path(__file__).parents[2]
DATA_KEY = "27204-5-13"

needs_kit = pytest.mark.skipif(
    not SOTA.exists(), reason=f"starter-kit checkpoint not found in {', '.join(map(str, KIT_PLACES))}"
)

CFG = SynthConfig(n_neurons=20, n_trials=60, seed=5)


@functools.lru_cache(maxsize=8)
def world(rf_jitter: float = 2.5, seed: int = 5, mouse: int = 0):
    from pipeline.data.teacher import TeacherWorld

    cfg = SynthConfig(**{**CFG.__dict__, "seed": seed})
    return synthesize_world(cfg, mouse, TeacherWorld(SOTA, rf_jitter=rf_jitter))


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-column correlation of two (T, N) arrays."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


@needs_kit
def test_teacher_world_is_reproducible_for_a_seed():
    from pipeline.data.teacher import TeacherWorld

    a = world()
    b = synthesize_world(CFG, 0, TeacherWorld(SOTA))  # not cached: generated again
    assert a.stimulus == "teacher"
    assert sorted(a.truth) == sorted(b.truth)
    assert all(np.array_equal(a.truth[k], b.truth[k]) for k in a.truth)
    assert np.array_equal(a.recording.responses, b.recording.responses)
    assert np.array_equal(a.drive, b.drive)
    # another seed or another mouse: other neurons of the teacher, another recording
    for other in (world(seed=6), world(mouse=1)):
        assert not np.array_equal(other.truth["teacher_neuron"], a.truth["teacher_neuron"])
        assert not np.array_equal(other.recording.responses, a.recording.responses)


@needs_kit
def test_the_drive_is_the_teachers_prediction_on_what_the_loaders_give_it():
    """With no jitter, each neuron's drive is, up to its standardisation, the project's own model with the
    file's weights (``readout_drive``) on the recording's tensors as the starter kit's dataset config
    makes them (scale 0.25, normalised images, behaviour planes, z-scored pupil for the shifter)."""
    from pipeline.configs import DatasetConfig
    from pipeline.data.loaders import build_scan_tensors
    from pipeline.data.teacher import load_teacher

    w = world(rf_jitter=0.0)
    rec, truth = w.recording, w.truth
    teacher = load_teacher(SOTA)
    scan = build_scan_tensors(rec, DatasetConfig(scale=0.25, behavior_normalization="std"))
    batch = scan.batch(np.arange(rec.n_trials))
    with torch.no_grad():
        full = teacher.model.readout_drive(batch["images"], DATA_KEY, batch["pupil_center"]).double().numpy()
    expected = full[:, truth["teacher_neuron"]]  # file order, like the truth
    raw = truth["drive"] * truth["teacher_drive_std"] + truth["teacher_drive_mean"]
    assert np.allclose(raw, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.all(_corr(truth["drive"].astype(np.float64), expected) > 0.9999)
    # the teacher's own positions, an exact function of the cortex coordinates it stores
    own = teacher.model.readout[DATA_KEY].mu.detach().view(-1, 2).numpy()[truth["teacher_neuron"]]
    assert np.allclose(truth["teacher_own_position"], own, atol=1e-6)
    assert np.array_equal(truth["teacher_position"], truth["teacher_own_position"])
    # the neurons are distinct neurons of the file, with its cortex coordinates (400 + 400 x grid, um-like)
    assert len(set(truth["teacher_neuron"])) == CFG.n_neurons and set(truth["teacher_scan"]) == {DATA_KEY}
    grid = torch.load(SOTA, map_location="cpu", weights_only=True)[f"readout.{DATA_KEY}.source_grid"].numpy()
    coords = rec.neurons["cell_motor_coordinates"]
    assert np.allclose(coords[:, :2], 400 + 400 * grid[truth["teacher_neuron"]], atol=1e-3)


@needs_kit
def test_the_jitter_moves_each_readout_and_changes_its_drive():
    from pipeline.data.teacher import load_teacher

    still, jittered = world(rf_jitter=0.0), world(rf_jitter=2.5)
    # the same neurons, everything but the positions drawn the same
    assert np.array_equal(still.truth["teacher_neuron"], jittered.truth["teacher_neuron"])
    assert np.array_equal(still.truth["teacher_own_position"], jittered.truth["teacher_own_position"])
    h, w = load_teacher(SOTA).map_size
    half = np.array([(w - 1) / 2, (h - 1) / 2])
    offset = (jittered.truth["teacher_position"] - jittered.truth["teacher_own_position"]) * half  # pixels
    assert 1.5 < offset.std() < 3.5, offset  # 2.5 px per axis (40 draws)
    # the drive moves with the position but stays the teacher's: correlated, not equal
    r = _corr(jittered.drive, still.drive)
    assert np.all(r < 0.99999) and 0.3 < np.mean(r) < 0.99, r
    # the image drive carries through to the oracle
    assert np.mean(_corr(jittered.expected, jittered.drive)) > 0.3


@needs_kit
def test_sidecar_and_recording_pass_the_format_reader(tmp_path):
    from pipeline.data.format import read_recording
    from pipeline.data.synth import mouse_configs, truth_path, write_configs
    from pipeline.data.teacher import TeacherWorld

    configs = mouse_configs(1, SynthConfig(**{**CFG.__dict__, "competition": True}))
    (folder,) = write_configs(tmp_path, configs, make_zip=True, stimulus=TeacherWorld(SOTA, rf_jitter=1.0))
    T, N = CFG.n_trials, CFG.n_neurons
    for path in (folder, folder.with_name(folder.name + ".zip")):
        rec = read_recording(path, progress=False)
        assert rec.responses.shape == (T, N) and rec.images.shape == (T, 1, 144, 256)
    truth = np.load(truth_path(folder))
    shapes = {
        "expected": (T, N),
        "drive": (T, N),
        "eye_shift": (T, 2),
        "teacher_shift": (T, 1, 2),
        "rf_center": (N, 2),
        "teacher_position": (N, 2),
        "teacher_own_position": (N, 2),
        "teacher_neuron": (N,),
        "teacher_scan": (N,),
        "teacher_drive_mean": (N,),
        "teacher_drive_std": (N,),
        "image_weight": (N,),
        "teacher": (),
    }
    assert {k: truth[k].shape for k in shapes} == shapes
    known = np.isin(rec.tiers, ["train", "validation"])
    assert np.array_equal(truth["responses"][known], rec.responses[known])
    assert np.all(rec.responses[~known] == 0), "competition-style: test responses withheld"
    about = json.loads(str(truth["teacher"]))
    assert about["sha256"] == hashlib.sha256(SOTA.read_bytes()).hexdigest()
    assert about["rf_jitter"] == 1.0 and about["scans"] == [DATA_KEY]
    # the eye shift is the teacher's shifter less its mean (as the Gabor world's, mean 0), in pixels
    assert np.allclose(truth["eye_shift"].mean(0), 0, atol=1e-4) and truth["eye_shift"].std() > 0.1
    assert np.all(np.abs(truth["rf_center"]) <= 1.5)


def _two_mouse_teacher(path: Path) -> None:
    """The SOTA file cut to two small readouts (8 and 7 neurons), as a teacher of two mice would be."""
    from pipeline.models.readout import normalize_source_grid

    state = torch.load(SOTA, map_location="cpu", weights_only=True)
    out = {k: v for k, v in state.items() if not k.startswith(("readout.", "shifter."))}
    for key, part in (("1-1-1", slice(0, 8)), ("2-2-2", slice(8, 15))):
        for name, tensor in state.items():
            if name.startswith(f"shifter.{DATA_KEY}."):
                out[name.replace(DATA_KEY, key)] = tensor.clone()
            elif name.startswith(f"readout.{DATA_KEY}."):
                field = name.removeprefix(f"readout.{DATA_KEY}.")
                if field == "source_grid":
                    tensor = torch.from_numpy(normalize_source_grid(tensor[part].numpy()))
                elif field == "sigma":
                    tensor = tensor[:, part]
                elif field == "_features":
                    tensor = tensor[..., part]
                elif field == "bias":
                    tensor = tensor[part]
                out[f"readout.{key}.{field}"] = tensor.clone()
    torch.save(out, path)


@needs_kit
def test_neurons_of_several_mice_each_once_before_any_repeats(tmp_path):
    from pipeline.data.teacher import TeacherWorld

    _two_mouse_teacher(tmp_path / "two.pth")
    w = synthesize_world(CFG, 0, TeacherWorld(tmp_path / "two.pth", rf_jitter=2.5))
    picked = list(zip(w.truth["teacher_scan"], w.truth["teacher_neuron"], strict=True))
    assert len(set(picked[:15])) == 15, "all 15 neurons before the first repeat"
    assert set(picked) == {("1-1-1", i) for i in range(8)} | {("2-2-2", i) for i in range(7)}
    assert w.truth["teacher_shift"].shape == (CFG.n_trials, 2, 2)
    # a repeated neuron is another neuron: its own jitter, its own drive
    first = picked.index(picked[15])
    assert not np.array_equal(w.truth["teacher_position"][first], w.truth["teacher_position"][15])
    only = synthesize_world(CFG, 0, TeacherWorld(tmp_path / "two.pth", scans=("2-2-2",)))
    assert set(only.truth["teacher_scan"]) == {"2-2-2"} and only.truth["teacher_shift"].shape[1] == 1


@needs_kit
def test_bad_teachers_are_refused_in_one_line_and_code_is_never_run(tmp_path):
    from pipeline.data.synth import SynthConfigError
    from pipeline.data.teacher import TeacherError, TeacherWorld

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"core.weight": Payload()}, protocol=2))
    torch.save({"core.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    cases = {
        "evil.pth": "not a PyTorch state_dict",
        "foreign.pth": "expected a starter-kit model with readouts of cortex coordinates",
        "list.pth": "expected a state_dict",
        "gone.pth": "cannot read the file",
    }
    for name, reason in cases.items():
        with pytest.raises(TeacherError, match=reason) as err:
            TeacherWorld(tmp_path / name).load()
        assert err.value.field == "teacher" and "\n" not in str(err.value)
    assert not marker.exists(), "weights_only: the pickle's code was never run"
    if LN.exists():
        with pytest.raises(TeacherError, match="not the starter kit's SOTA model.*missing keys"):
            TeacherWorld(LN).load()
    with pytest.raises(TeacherError, match="9-9-9: not a readout") as err:
        TeacherWorld(SOTA, scans=("9-9-9",)).load()
    assert err.value.field == "teacher_scans"
    for jitter in (-1.0, float("nan"), True):
        with pytest.raises(SynthConfigError, match="rf_jitter"):
            TeacherWorld(SOTA, rf_jitter=jitter)


# -- the command line ---------------------------------------------------------------------------------


def _synth(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_argv("synth", "--out", str(out), "--mice", "1", "--neurons", "20", "--trials", "60", *args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error_line(p: subprocess.CompletedProcess, out: Path) -> str:
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1, p.stdout
    assert not out.exists(), "nothing may be written for a bad argument"
    return lines[0]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--teacher", "x.pth"], "error: --teacher: only with --stimulus teacher"),
        (["--rf-jitter", "1"], "error: --rf-jitter: only with --stimulus teacher"),
        (["--teacher-scan", DATA_KEY], "error: --teacher-scan: only with --stimulus teacher"),
        (["--stimulus", "teacher"], "error: --stimulus teacher: needs --teacher FILE.pth"),
    ],
)
def test_teacher_flags_without_the_teacher_stimulus_are_one_error_line(tmp_path, args, line):
    out = tmp_path / "out"
    assert _one_error_line(_synth(out, *args), out).startswith(line)


@needs_kit
@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["--teacher", "{tmp}/gone.pth"], "error: --teacher: {tmp}/gone.pth: cannot read the file"),
        (["--teacher", "{tmp}/notes.pth"], "error: --teacher: {tmp}/notes.pth: not a PyTorch state_dict"),
        (["--teacher", str(SOTA), "--rf-jitter", "-2"], "error: --rf-jitter: expected a finite number"),
        (["--teacher", str(SOTA), "--teacher-scan", "1-2-3"], "error: --teacher-scan: 1-2-3: not a readout"),
    ],
)
def test_bad_teacher_arguments_are_one_error_line(tmp_path, args, start):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path) for a in args]
    line = _one_error_line(_synth(out, "--stimulus", "teacher", *args), out)
    assert line.startswith(start.format(tmp=tmp_path)), line


@needs_kit
def test_synth_writes_a_teacher_recording(tmp_path):
    from pipeline.data.format import read_recording
    from pipeline.data.synth import truth_path

    out = tmp_path / "out"
    p = _synth(out, "--no-zip", "--stimulus", "teacher", "--teacher", str(SOTA), "--rf-jitter", "0")
    assert p.returncode == 0, p.stdout + p.stderr
    (folder,) = [f for f in out.iterdir() if f.is_dir()]
    rec = read_recording(folder, progress=False)
    truth = np.load(truth_path(folder))
    assert rec.n_neurons == 20 and rec.n_trials == 60
    assert json.loads(str(truth["teacher"]))["rf_jitter"] == 0.0
    # the command line writes what the library generates
    assert np.array_equal(truth["drive"], world(rf_jitter=0.0, seed=0).truth["drive"])
