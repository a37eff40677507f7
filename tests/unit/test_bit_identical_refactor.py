"""Guard of the issue-28 refactor (``train()``, ``format._read()``, ``synthesize()`` split up): same bits.

The expected values below were recorded from the code *before* the refactor and must not change while
behaviour is meant to stay the same:

* ``synthesize()`` on fixed seeds (a pre-training and a competition-style mouse): SHA-256 of every array
  of the recording and of the ground truth;
* the format reader on those recordings written to disk (folder and zip): SHA-256 of the parsed result
  (every array, the data key, the content checksum);
* demo-size training runs on fixed synthetic data (plateau rounds with early stopping and a learning-rate
  decay, the same run stopped and resumed from its checkpoint, evaluation intervals with two parameter
  groups, a pruned run, the per-step cosine schedule with AdamW and EMA, and wsd with per-batch steps
  and the Gamma loss): SHA-256 of the returned weights (tensors' bytes in sorted name order) and of the
  model's final weights, the learning curve (exact float reprs) and the number of epochs.

CPU floating-point results may differ between instruction sets, so the CPU capability of the recording
machine is stored beside the values: on a machine with the same capability every value must be
bit-identical; on another one the floats are compared with a relative tolerance of 1e-4 (the assertion
message says so) and only what does not depend on float rounding (shapes, dtypes, strings) exactly.
Torch runs single-threaded here so that the thread count of the machine cannot change a reduction order.

Re-recorded on 2026-12-06 when the readout's training step was made faster (a contiguous sampling grid
and the channel sum as a product and sum instead of an einsum: the same arithmetic, other rounding); only
the training entries changed.

Re-record (only when a change of results is intended):
``.venv/bin/python -m tests.unit.test_bit_identical_refactor`` prints the constants to paste below.
"""

from __future__ import annotations

import hashlib
import logging
import pprint
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.configs import BaselineModelConfig, DatasetConfig, TrainerConfig
from pipeline.data.format import read_recording, write_recording
from pipeline.data.recording import Recording
from pipeline.data.synth import SynthConfig, folder_name, synthesize
from pipeline.run import RunSpec, build_model, build_scans
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.trainer import EpochRecord, TrainingInterruptedError, train

RELATIVE_TOLERANCE = 1e-4
# below this a relative tolerance means nothing (a correlation of ~0): compared absolutely
ABSOLUTE_FLOOR = 1e-7

# -- what is fingerprinted -----------------------------------------------------------------------------

# (config, mouse): small, but every tier, a history, latents and (second) the competition-style fields
SYNTH_CASES = (
    (SynthConfig(n_neurons=12, n_trials=140, seed=4), 0),
    (SynthConfig(n_neurons=10, n_trials=170, seed=4, competition=True), 1),
)
# the training data: two mice of different trial counts, so the shorter batch stream wraps mid-pass
TRAIN_DATA = tuple((SynthConfig(n_neurons=10, n_trials=120 + 40 * m, seed=4), m) for m in range(2))
MODEL = BaselineModelConfig(layers=2, hidden_channels=4, input_kern=5, hidden_kern=3)
PLATEAU = TrainerConfig(max_iter=14, patience=2, lr_decay_steps=3, lr_init=0.05)
RESUME_AFTER = 7  # the plateau run is stopped after this epoch (after its first decay) and resumed
# name -> (trainer config, epoch from which should_prune says True, or None)
RUNS: dict[str, tuple[TrainerConfig, int | None]] = {
    # early stopping: a learning-rate decay round, then the rounds run out before max_iter
    "plateau": (PLATEAU, None),
    # the weight average restarted from the restored weights at the end of a round
    "plateau-ema": (PLATEAU.model_copy(update={"ema_decay": 0.8}), None),
    # evaluations every 2 epochs (the last interval cut short by max_iter, which ends the run), two
    # parameter groups, the last weights kept (no restore)
    "interval": (
        TrainerConfig(
            max_iter=5,
            patience=3,
            lr_decay_steps=2,
            lr_init=0.05,
            interval=2,
            readout_lr_scale=2.0,
            restore_best=False,
        ),
        None,
    ),
    "pruned": (TrainerConfig(max_iter=8, patience=2, lr_init=0.05), 3),
    # the per-step schedules: every max_iter epoch runs; should_prune after the last epoch is no pruning
    "cosine-adamw-ema": (
        TrainerConfig(
            max_iter=5,
            lr_init=0.05,
            optimizer="adamw",
            weight_decay=0.01,
            lr_schedule="cosine",
            warmup_epochs=1,
            ema_decay=0.9,
            restore_best=False,  # the model ends with the average's last weights
        ),
        5,
    ),
    "wsd-per-batch-gamma": (
        TrainerConfig(
            max_iter=4,
            lr_init=0.05,
            lr_schedule="wsd",
            decay_epochs=2,
            loss_accum_batch_n=1,
            max_batches_per_epoch=2,
            loss_function="GammaLoss",
        ),
        None,
    ),
}

# -- recorded from the code before the refactor ----------------------------------------------------------

RECORDED_CAPABILITY = "AVX512"
EXPECTED: dict = {
    "reader": {
        "90000-5-1/folder": {
            "layout": "125eb286b1e3b9e21ab6a4e526ce4ce5d16b77b3e5926c596c492f23c80c4e4c",
            "sha256": "a693190b7070ff8d3a3ef40b7fb36730975122da86f142f74b19a257fd943f12",
        },
        "90000-5-1/zip": {
            "layout": "125eb286b1e3b9e21ab6a4e526ce4ce5d16b77b3e5926c596c492f23c80c4e4c",
            "sha256": "a693190b7070ff8d3a3ef40b7fb36730975122da86f142f74b19a257fd943f12",
        },
        "90001-5-1/folder": {
            "layout": "e1fa87e62e6b347fb5d05aed395390daba7b4db84fc186982a2f14aa65675e4e",
            "sha256": "d8b9ff647644c755795762076391152a1b3092303453e7f0cc5637f58364e96f",
        },
        "90001-5-1/zip": {
            "layout": "e1fa87e62e6b347fb5d05aed395390daba7b4db84fc186982a2f14aa65675e4e",
            "sha256": "d8b9ff647644c755795762076391152a1b3092303453e7f0cc5637f58364e96f",
        },
    },
    "synth": {
        "90000-5-1/recording": {
            "layout": "46d0159808c058e58fe34bbd993d4cc9e47c8417edc3a38a62b01487a942ec06",
            "sha256": "374fa83de923efa1557a5d12ebe34b0008eb51a13288545a98e32e4377102e4c",
            "sums": {
                "behavior": "2311.330618419335",
                "data_key": "2540f43e670f3a18",
                "images": "658021008.0",
                "neurons/animal_ids": "1080000.0",
                "neurons/area": "3b895ca75b656649",
                "neurons/cell_motor_coordinates": "12152.90005493164",
                "neurons/layer": "196358bfdbdc55f2",
                "neurons/scan_idx": "12.0",
                "neurons/sessions": "60.0",
                "neurons/unit_ids": "78.0",
                "pupil_center": "47974.30532836914",
                "responses": "2889.9714073529467",
                "trials/animal_id": "12600000.0",
                "trials/condition_hash": "9e4609e79dffad0a",
                "trials/frame_image_class": "7e37494c1fc6d7c4",
                "trials/frame_image_id": "9550.0",
                "trials/frame_last_flip": "812961.0",
                "trials/frame_pre_blank_period": "42.0",
                "trials/frame_presentation_time": "70.0",
                "trials/frame_trial_ts": "d40cdaef4779f88a",
                "trials/scan_idx": "140.0",
                "trials/session": "700.0",
                "trials/tiers": "1b592afdf2d8c50d",
                "trials/trial_idx": "9730.0",
            },
        },
        "90000-5-1/truth": {
            "layout": "a983de8f669508c193aec2844e5f5259292f7f9e27f975bb41fb4277d89df3d9",
            "sha256": "843ad46bb66e53ddf401bdc0f04cc27de8017ef103f359682dac30553ea9a88a",
            "sums": {
                "behavior_weight": "6.663973149843514",
                "config": "134174edab2d3a65",
                "expected": "2840.3506857194006",
                "eye_shift": "457.7439558552578",
                "gain": "147.9839802980423",
                "gain_coupling": "13.265925228595734",
                "history_weight": "4.048071026802063",
                "image_weight": "10.094609916210175",
                "latent_loadings": "8.98050947394222",
                "latents": "336.5670189370867",
                "responses": "2889.9714073529467",
                "rf_center": "7.255438227206469",
                "time_rank": "9730.0",
            },
        },
        "90001-5-1/recording": {
            "layout": "93057bd19b52635fcde8979b5cf3755b6bbb1352a48a2c75ad8beda3f7760bb5",
            "sha256": "522da85c98fd1054a5f5ff0069d096ea3924050f366ecd72f8a3a04f52c53fbb",
            "sums": {
                "behavior": "4250.644607457856",
                "data_key": "fe5eae357727d8ca",
                "images": "799008930.0",
                "neurons/animal_ids": "900010.0",
                "neurons/area": "e82ab3a32e073157",
                "neurons/cell_motor_coordinates": "9741.481384277344",
                "neurons/layer": "a0f0574037f545e7",
                "neurons/scan_idx": "10.0",
                "neurons/sessions": "50.0",
                "neurons/unit_ids": "55.0",
                "pupil_center": "57732.039489746094",
                "responses": "2009.6871964917518",
                "trials/animal_id": "15300170.0",
                "trials/condition_hash": "6d2b58de756d8096",
                "trials/frame_image_class": "65319f4032b11caf",
                "trials/frame_image_id": "13645.0",
                "trials/frame_last_flip": "1479341.0",
                "trials/frame_pre_blank_period": "50.99999999999999",
                "trials/frame_presentation_time": "85.0",
                "trials/frame_trial_ts": "40ae2fee8ef4654a",
                "trials/scan_idx": "170.0",
                "trials/session": "850.0",
                "trials/tiers": "3ebfd9c18b95d2dc",
                "trials/trial_idx": "cd5eb8ebd8615475",
            },
        },
        "90001-5-1/truth": {
            "layout": "bc29bcdd61555ecfd01457f5ddd25d2dea6c3161777a5a140208832671ff9572",
            "sha256": "c0883e1cb69f42ffd587ab841ddb0ac14081390007cb5a081a2400484ffe6739",
            "sums": {
                "behavior_weight": "5.065613673068583",
                "config": "9216d92e683448a8",
                "expected": "2339.33418959938",
                "eye_shift": "545.2036708970554",
                "gain": "180.55349171161652",
                "gain_coupling": "10.639302253723145",
                "history_weight": "3.587158203125",
                "image_weight": "9.076588153839111",
                "latent_loadings": "7.431625336641446",
                "latents": "385.0212863960769",
                "responses": "2369.185095482506",
                "rf_center": "5.388743223622441",
                "time_rank": "14365.0",
            },
        },
    },
    "training": {
        "cosine-adamw-ema": {
            "best_val_corr": "-0.0010365752487705188",
            "curve": [
                (1, "0.0125", "791.4148559570312", "-0.05241523386492051"),
                (2, "0.05", "675.8995361328125", "-0.008801655251638603"),
                (3, "0.04269231419060436", "641.6749801635742", "-0.009411632272722553"),
                (4, "0.025050000000000003", "643.1014709472656", "-0.0010365752487705188"),
                (5, "0.0074076858093956414", "645.4199523925781", "-0.0015396156262458614"),
            ],
            "epochs": 5,
            "model_sha256": "4142f951466e366e6505f28058e65af9fb51f827412bd3a000dc313e20516b8e",
            "pruned_at": 0,
            "weights_sha256": "b4079322c4ea7fc85c8edcaa30551b0132f99d3348e915301bf4428c4b4cc3bf",
        },
        "interval": {
            "best_val_corr": "0.027225523309362475",
            "curve": [
                (1, "0.05", "736.3980865478516", "0.029779903391548346"),
                (2, "0.05", "660.8717269897461", "0.027225523309362475"),
                (3, "0.05", "633.8523941040039", "-0.004866928548249999"),
                (4, "0.05", "633.0654907226562", "0.002567410767772951"),
                (5, "0.05", "634.5687942504883", "0.015927477968622775"),
            ],
            "epochs": 5,
            "model_sha256": "3d387e2de85752426ec9837737bd7104a2c764c9f6a35956afca9e2af69420a5",
            "pruned_at": 0,
            "weights_sha256": "77efcffffd26859c0306e713d06cd5da2d22108f82f131ca28d92571491f4d56",
        },
        "plateau": {
            "best_val_corr": "0.08095527857058801",
            "curve": [
                (1, "0.05", "748.3018341064453", "-0.02788631542139771"),
                (2, "0.05", "660.3886184692383", "0.010993467045260163"),
                (3, "0.05", "632.27197265625", "0.06460169987474537"),
                (4, "0.05", "635.8090019226074", "0.019765025389570277"),
                (5, "0.05", "637.3947601318359", "0.01222296555446313"),
                (6, "0.05", "622.918888092041", "0.023875409437421967"),
                (7, "0.015", "630.9488677978516", "0.029072662504660403"),
                (8, "0.015", "633.533748626709", "0.08095527857058801"),
                (9, "0.015", "625.2822418212891", "0.04555702393910009"),
                (10, "0.015", "628.0452003479004", "0.028765410082995622"),
            ],
            "epochs": 10,
            "model_sha256": "048b65ee23b09780dc7234ca31eae8ab30ffeeccb783b5d4745e5a1bdee27e1b",
            "pruned_at": 0,
            "weights_sha256": "048b65ee23b09780dc7234ca31eae8ab30ffeeccb783b5d4745e5a1bdee27e1b",
        },
        "plateau-ema": {
            "best_val_corr": "0.07531176574162222",
            "curve": [
                (1, "0.05", "748.3018341064453", "0.003558722718256768"),
                (2, "0.05", "660.3886184692383", "0.04744777517889866"),
                (3, "0.05", "632.27197265625", "-0.023191034068690893"),
                (4, "0.05", "635.8090019226074", "0.07531176574162222"),
                (5, "0.05", "637.3947601318359", "-0.010594366321545512"),
                (6, "0.05", "618.1877212524414", "0.04644965545329326"),
                (7, "0.05", "633.5124473571777", "0.05214943632406586"),
                (8, "0.015", "625.6242866516113", "0.06348102654848009"),
                (9, "0.015", "625.3805351257324", "0.06217344647503135"),
                (10, "0.015", "628.7464141845703", "0.04951960742093131"),
            ],
            "epochs": 10,
            "model_sha256": "3082edbf486412f0ab4840b0ba54cced7529a6a31748d25f9487e7a904d7d88a",
            "pruned_at": 0,
            "weights_sha256": "3082edbf486412f0ab4840b0ba54cced7529a6a31748d25f9487e7a904d7d88a",
        },
        "pruned": {
            "best_val_corr": "0.06460169987474537",
            "curve": [
                (1, "0.05", "748.3018341064453", "-0.02788631542139771"),
                (2, "0.05", "660.3886184692383", "0.010993467045260163"),
                (3, "0.05", "632.27197265625", "0.06460169987474537"),
            ],
            "epochs": 3,
            "model_sha256": "3071a73e4fa1fe327f4aefde210382cf7079da72f725b7795b2990b93d3a23be",
            "pruned_at": 3,
            "weights_sha256": "3071a73e4fa1fe327f4aefde210382cf7079da72f725b7795b2990b93d3a23be",
        },
        "wsd-per-batch-gamma": {
            "best_val_corr": "0.11740136963852103",
            "curve": [
                (1, "0.05", "638.7804336547852", "0.11740136963852103"),
                (2, "0.05", "494.2939147949219", "0.05366854969229763"),
                (3, "0.0437625", "472.6203308105469", "0.055258017405266736"),
                (4, "0.0188125", "515.8504638671875", "0.050447728854376706"),
            ],
            "epochs": 4,
            "model_sha256": "b68d0e712c32b21fdb186eae6ec43cd32a841f5dff3583b56f913850d34e7f43",
            "pruned_at": 0,
            "weights_sha256": "b68d0e712c32b21fdb186eae6ec43cd32a841f5dff3583b56f913850d34e7f43",
        },
    },
}


# -- fingerprints ---------------------------------------------------------------------------------------


def _digest(named: Iterable[tuple[str, np.ndarray | str]]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every array, in the order given."""
    h = hashlib.sha256()
    for name, value in named:
        a = np.ascontiguousarray(np.asarray(value))
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _layout(named: Iterable[tuple[str, np.ndarray | str]]) -> str:
    """SHA-256 of the name, dtype and shape of every array: what must match on any CPU."""
    text = "\n".join(f"{name} {np.asarray(v).dtype.str} {np.asarray(v).shape}" for name, v in named)
    return hashlib.sha256(text.encode()).hexdigest()


def _sums(named: Iterable[tuple[str, np.ndarray | str]]) -> dict[str, str]:
    """float64 sum of the absolute values of every numeric array (repr; no cancellation to ~0), or the
    digest of a text array (exact on any CPU); not of the statistics (functions of the arrays summed)."""
    out = {}
    for name, value in named:
        if name.startswith("statistics/"):
            continue
        a = np.asarray(value)
        out[name] = (
            repr(float(np.abs(a.astype(np.float64)).sum()))
            if a.dtype.kind in "biuf"
            else _digest([(name, a)])[:16]
        )
    return out


def _recording_arrays(rec: Recording) -> Iterator[tuple[str, np.ndarray | str]]:
    yield "data_key", rec.data_key
    for var in ("images", "responses", "behavior", "pupil_center"):
        yield var, getattr(rec, var)
    for group, arrays in (("neurons", rec.neurons), ("trials", rec.trials)):
        for name in sorted(arrays):
            yield f"{group}/{name}", arrays[name]
    for var in sorted(rec.statistics):
        for variant in sorted(rec.statistics[var]):
            for stat in sorted(rec.statistics[var][variant]):
                yield f"statistics/{var}/{variant}/{stat}", rec.statistics[var][variant][stat]


def _arrays_fingerprint(named: list[tuple[str, np.ndarray | str]]) -> dict:
    return {"sha256": _digest(named), "layout": _layout(named), "sums": _sums(named)}


def _weights_sha(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' bytes in sorted name order (names, dtypes and shapes included)."""
    return _digest((k, state[k].detach().cpu().contiguous().numpy()) for k in sorted(state))


def _curve(history: list[EpochRecord]) -> list[tuple[int, str, str, str]]:
    return [(e.epoch, repr(e.lr), repr(e.train_loss), repr(e.val_corr)) for e in history]


# -- observations -----------------------------------------------------------------------------------------


def observe_synth() -> dict:
    out = {}
    for cfg, mouse in SYNTH_CASES:
        rec, truth = synthesize(cfg, mouse)
        out[f"{rec.data_key}/recording"] = _arrays_fingerprint(list(_recording_arrays(rec)))
        out[f"{rec.data_key}/truth"] = _arrays_fingerprint([(k, truth[k]) for k in sorted(truth)])
    return out


def observe_reader(folder: Path) -> dict:
    """Each synthetic recording written (folder + zip) and read back: the parsed result, fingerprinted."""
    out = {}
    for cfg, mouse in SYNTH_CASES:
        rec, _ = synthesize(cfg, mouse)
        written, zipped = write_recording(rec, folder / folder_name(rec.data_key))
        for kind, path in (("folder", written), ("zip", zipped)):
            parsed = read_recording(path, progress=False)
            _assert_same_recording(parsed, rec)
            named = [*_recording_arrays(parsed), ("checksum", parsed.checksum), ("extra", repr(parsed.extra))]
            out[f"{rec.data_key}/{kind}"] = {"sha256": _digest(named), "layout": _layout(named)}
    return out


def _assert_same_recording(parsed: Recording, rec: Recording) -> None:
    """What the reader returns is what was written, dtypes included (holds on any CPU)."""
    a, b = dict(_recording_arrays(parsed)), dict(_recording_arrays(rec))
    assert sorted(a) == sorted(b)
    for name, value in b.items():
        got = np.asarray(a[name])
        assert got.dtype == np.asarray(value).dtype and np.array_equal(got, value), name


def _train_data() -> dict[str, Recording]:
    recs = {}
    for cfg, mouse in TRAIN_DATA:
        rec, _ = synthesize(cfg, mouse)
        recs[rec.data_key] = rec
    return recs


def _train(
    recs: dict[str, Recording],
    cfg: TrainerConfig,
    prune_from: int | None = None,
    checkpoint: Checkpointer | None = None,
    stop_after: int | None = None,
) -> tuple[dict, list[int]]:
    """One run as the benchmarks and ``run_training`` start it; its fingerprint and the epochs it ran."""
    spec = RunSpec(
        "sensorium.datasets.static_loaders",
        DatasetConfig(batch_size=32),
        "sensorium.models.stacked_core_full_gauss_readout",
        MODEL,
        "sensorium.training.standard_trainer",
        cfg,
        5,
    )
    scans = build_scans(recs, spec.dataset_config, torch.device("cpu"))
    model = build_model(spec, recs, scans)
    ran: list[int] = []
    should_prune: Callable[[EpochRecord], bool] | None = None
    if prune_from is not None:

        def should_prune(record: EpochRecord) -> bool:
            return record.epoch >= prune_from

    result = train(
        model,
        scans,
        cfg,
        batch_size=32,
        shuffle_seed=1,
        seed=5,
        on_epoch=lambda r: ran.append(r.epoch),
        progress=False,
        checkpoint=checkpoint,
        should_stop=None
        if checkpoint is None
        else (lambda: stop_after is not None and len(ran) >= stop_after),
        should_prune=should_prune,
    )
    fingerprint = {
        "epochs": result.epochs,
        "pruned_at": result.pruned_at,
        "best_val_corr": repr(result.best_val_corr),
        "curve": _curve(result.history),
        "weights_sha256": _weights_sha(result.state_dict),
        "model_sha256": _weights_sha(model.state_dict()),
    }
    return fingerprint, ran


def observe_training(recs: dict[str, Recording]) -> dict:
    return {name: _train(recs, cfg, prune_from)[0] for name, (cfg, prune_from) in RUNS.items()}


def observe_resumed(recs: dict[str, Recording], folder: Path) -> tuple[dict, list[int], str]:
    """The plateau run stopped after :data:`RESUME_AFTER` epochs and resumed from its checkpoint."""
    ckpt = Checkpointer(folder / "run.pt", {"key": "bit-identical", "code": "x"})
    with pytest.raises(TrainingInterruptedError) as stopped:
        _train(recs, PLATEAU, checkpoint=ckpt, stop_after=RESUME_AFTER)
    fingerprint, ran = _train(recs, PLATEAU, checkpoint=ckpt)
    return fingerprint, ran, str(stopped.value)


def observe_all() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            "synth": observe_synth(),
            "reader": observe_reader(Path(tmp)),
            "training": observe_training(_train_data()),
        }


# -- comparison ---------------------------------------------------------------------------------------------


def _same_cpu() -> bool:
    return torch.backends.cpu.get_cpu_capability() == RECORDED_CAPABILITY


def _other_cpu_note() -> str:
    return (
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()!r}, recorded on {RECORDED_CAPABILITY!r}: "
        f"floats compared with relative tolerance {RELATIVE_TOLERANCE:g}, not bit for bit)"
    )


def _close(got: str, want: str) -> bool:
    return float(got) == pytest.approx(float(want), rel=RELATIVE_TOLERANCE, abs=ABSOLUTE_FLOOR)


def _compare_arrays(name: str, got: dict, want: dict) -> None:
    if _same_cpu():
        assert got["sha256"] == want["sha256"], f"{name}: arrays differ from the recorded ones (bit for bit)"
        return
    assert got["layout"] == want["layout"], f"{name}: names, dtypes or shapes differ"
    if "sums" in want:
        bad = [k for k, v in want["sums"].items() if v != got["sums"][k] and not _close(got["sums"][k], v)]
        assert not bad, f"{name}: {bad} differ {_other_cpu_note()}"


def _compare_run(name: str, got: dict, want: dict) -> None:
    for key in ("epochs", "pruned_at"):
        assert got[key] == want[key], f"{name}: {key} {got[key]} != recorded {want[key]}"
    if _same_cpu():
        assert got["curve"] == want["curve"], f"{name}: learning curve differs (bit for bit)"
        assert got["best_val_corr"] == want["best_val_corr"], f"{name}: best_val_corr differs"
        assert got["weights_sha256"] == want["weights_sha256"], f"{name}: returned weights differ"
        assert got["model_sha256"] == want["model_sha256"], f"{name}: the model's final weights differ"
        return
    for g, w in zip(got["curve"], want["curve"], strict=True):
        assert g[0] == w[0] and all(_close(a, b) for a, b in zip(g[1:], w[1:], strict=True)), (
            f"{name}: epoch {w[0]} (lr, loss, val_corr) {g[1:]} != recorded {w[1:]} {_other_cpu_note()}"
        )
    assert _close(got["best_val_corr"], want["best_val_corr"]), f"{name}: best_val_corr {_other_cpu_note()}"


@pytest.fixture(autouse=True)
def _one_thread():
    """Torch single-threaded while these run (restored after): reductions in one order on any machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_data() -> dict[str, Recording]:
    return _train_data()


def test_expected_values_are_recorded():
    assert EXPECTED, "run `python -m tests.unit.test_bit_identical_refactor` and paste its output"
    assert sorted(EXPECTED["training"]) == sorted(RUNS)


def test_synthesize_output_is_unchanged():
    got = observe_synth()
    assert sorted(got) == sorted(EXPECTED["synth"])
    for name, want in EXPECTED["synth"].items():
        _compare_arrays(f"synthesize {name}", got[name], want)


def test_reader_output_is_unchanged(tmp_path):
    got = observe_reader(tmp_path)
    assert sorted(got) == sorted(EXPECTED["reader"])
    for name, want in EXPECTED["reader"].items():
        _compare_arrays(f"read_recording {name}", got[name], want)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_training_run_is_unchanged(train_data, name):
    cfg, prune_from = RUNS[name]
    got, ran = _train(train_data, cfg, prune_from)
    assert ran == [e for e, *_ in EXPECTED["training"][name]["curve"]]
    _compare_run(name, got, EXPECTED["training"][name])


def test_stopped_and_resumed_run_is_the_recorded_uninterrupted_one(train_data, tmp_path):
    got, ran, stopped = observe_resumed(train_data, tmp_path)
    assert stopped == f"stop requested during epoch {RESUME_AFTER + 1}; the partial epoch is dropped"
    assert ran[0] == RESUME_AFTER + 1, "resumed after the checkpointed epoch, not from scratch"
    _compare_run("plateau (stopped, resumed)", got, EXPECTED["training"]["plateau"])


def test_progress_lines_are_unchanged(train_data, caplog):
    """One log line per epoch, from the trainer's logger, in today's words."""
    cfg, _ = RUNS["interval"]
    with caplog.at_level(logging.INFO, logger="pipeline.training.trainer"):
        got, _ = _train(train_data, cfg)
    lines = [r for r in caplog.records if r.name == "pipeline.training.trainer"]
    pattern = r"epoch (\d+)/5: val_corr -?\d\.\d{4}, lr \S+, loss \S+, \d+\.\d s"
    assert [re.fullmatch(pattern, r.getMessage()) is not None for r in lines] == [True] * got["epochs"]
    assert [int(re.fullmatch(pattern, r.getMessage()).group(1)) for r in lines] == list(
        range(1, got["epochs"] + 1)
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(f"RECORDED_CAPABILITY = {torch.backends.cpu.get_cpu_capability()!r}")
    print("EXPECTED: dict = " + pprint.pformat(observe_all(), width=108, sort_dicts=True))
