"""``pipeline.data.convert`` and ``sensorium convert``: plain arrays -> a recording the reader accepts;
every bad input is one line naming the array, and nothing is written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import convert as convert_module
from pipeline.data.convert import (
    REQUIRED,
    ConvertError,
    convert,
    load_npz,
    recording_from_arrays,
    write_converted,
)
from pipeline.data.format import parse_timestamps, read_recording
from pipeline.data.recording import STATISTICS
from tests.factories import run_cli

T, N, H, W = 60, 7, 9, 16


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """One small recording as plain arrays: 40 distinct images then 4 test images shown 5 times each,
    in shuffled trial order (as the competition's files are)."""
    rng = np.random.default_rng(seed)
    distinct = rng.integers(0, 256, (44, H, W), dtype=np.uint8)
    shown = np.r_[np.arange(40), np.repeat(np.arange(40, 44), 5)]
    tiers = np.array(["train"] * 30 + ["validation"] * 10 + ["test"] * 20)
    times = np.datetime64("2023-05-01T10:00:00") + (np.arange(T) * 2).astype("timedelta64[s]")
    order = rng.permutation(T)
    return {
        "images": distinct[shown][order],
        "responses": rng.gamma(1.0, 1.0, (T, N)).astype(np.float32)[order],
        "behavior": rng.normal(size=(T, 3)).astype(np.float32)[order],
        "pupil_center": rng.normal(size=(T, 2)).astype(np.float32)[order],
        "tiers": tiers[order],
        "frame_trial_ts": times[order],
        "cell_motor_coordinates": rng.uniform(0, 500, (N, 3)).astype(np.float32),
        "animal_id": np.array(31337),
        "session": np.array(2),
        "scan_idx": np.array(5),
    }


def _assert_same(rec_path: Path, arrays: dict[str, np.ndarray]) -> None:
    rec = read_recording(rec_path, progress=False)
    assert rec.data_key == "31337-2-5"
    images = arrays["images"]
    assert rec.images.dtype == images.dtype and np.array_equal(rec.images, images.reshape(T, 1, H, W))
    for var in ("responses", "behavior", "pupil_center"):
        got = rec.trial_variable(var)
        assert got.dtype == np.float32 and np.array_equal(got, arrays[var]), var
    assert np.array_equal(rec.tiers, arrays["tiers"])
    assert np.array_equal(parse_timestamps(rec.trials["frame_trial_ts"]), arrays["frame_trial_ts"])
    assert np.array_equal(rec.neurons["cell_motor_coordinates"], arrays["cell_motor_coordinates"])
    train = arrays["tiers"] == "train"
    want = arrays["responses"][train].astype(np.float64)
    stats = rec.statistics["responses"]["all"]
    assert sorted(stats) == sorted(STATISTICS)
    assert np.allclose(stats["std"], want.std(axis=0), rtol=1e-6)
    assert np.allclose(stats["median"], np.median(want, axis=0), rtol=1e-6)
    image_stats = rec.statistics["images"]["all"]
    assert image_stats["mean"].size == 1
    assert np.isclose(image_stats["std"], images[train].astype(np.float64).std(), rtol=1e-6)
    assert np.isclose(image_stats["median"], np.median(images[train]))


@pytest.mark.parametrize("image_shape", ["(T, H, W)", "(T, 1, H, W)"])
def test_round_trip_folder_and_zip(tmp_path, image_shape):
    arrays = _arrays()
    given = dict(arrays)
    if image_shape == "(T, 1, H, W)":
        given["images"] = arrays["images"][:, None]
    folder, zip_path = convert(given, tmp_path / "out", make_zip=True)
    assert folder.name.startswith("static31337-2-5-GrayImageNet-") and zip_path is not None
    assert zip_path.name == folder.name + ".zip"
    for path in (folder, zip_path):
        _assert_same(path, arrays)
    assert (
        read_recording(folder, progress=False).checksum == read_recording(zip_path, progress=False).checksum
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [folder.name, zip_path.name], (
        "no leftovers"
    )


def test_defaults_image_ids_trial_order_unit_ids(tmp_path):
    arrays = _arrays()
    folder, _ = convert(arrays, tmp_path)
    rec = read_recording(folder, progress=False)
    image_ids = rec.trials["frame_image_id"]
    # trials showing the same pixels share an id; different pixels never do
    for i in range(T):
        same = np.all(arrays["images"] == arrays["images"][i], axis=(1, 2))
        assert np.array_equal(image_ids == image_ids[i], same)
    assert len(np.unique(image_ids[arrays["tiers"] == "test"])) == 4
    # trial_idx: the time rank (the presentation order, as in the pre-training recordings)
    rank = np.argsort(np.argsort(arrays["frame_trial_ts"]))
    assert np.array_equal(rec.trials["trial_idx"], rank)
    assert rec.trial_idx_is_numeric
    assert np.array_equal(np.sort(rec.neurons["unit_ids"]), np.arange(1, N + 1))
    assert set(rec.neurons["area"]) == {"unknown"}


def test_given_optional_arrays_are_kept(tmp_path):
    arrays = _arrays()
    arrays.update(
        unit_ids=np.arange(100, 100 + N),
        frame_image_id=np.arange(T) + 1000,
        trial_idx=np.array([f"hash{i:03d}" for i in range(T)]),
        area="V1",
        layer=np.array(["L2/3"] * N),
        frame_trial_ts=np.array(
            [f"Timestamp('{str(t).replace('T', ' ')}')" for t in arrays["frame_trial_ts"]]
        ),
    )
    folder, _ = convert(arrays, tmp_path)
    rec = read_recording(folder, progress=False)
    assert np.array_equal(rec.neurons["unit_ids"], np.arange(100, 100 + N))
    assert np.array_equal(rec.trials["frame_image_id"], np.arange(T) + 1000)
    assert list(rec.trials["trial_idx"][:2]) == ["hash000", "hash001"] and not rec.trial_idx_is_numeric
    assert set(rec.neurons["area"]) == {"V1"} and set(rec.neurons["layer"]) == {"L2/3"}
    assert np.array_equal(rec.trials["frame_trial_ts"], arrays["frame_trial_ts"])


def _nan(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    a[3, 1] = np.nan
    return a


BAD = [
    # (what, field, change)
    ("responses 1-D", "responses", lambda a: {"responses": a["responses"][:, 0]}),
    ("images with 2 channels", "images", lambda a: {"images": np.stack([a["images"]] * 2, axis=1)}),
    ("behavior of 4 columns", "behavior", lambda a: {"behavior": np.zeros((T, 4))}),
    ("coordinates (N, 2)", "cell_motor_coordinates", lambda a: {"cell_motor_coordinates": np.zeros((N, 2))}),
    ("NaN in responses", "responses", lambda a: {"responses": _nan(a["responses"])}),
    ("NaN in behaviour", "behavior", lambda a: {"behavior": _nan(a["behavior"])}),
    ("inf in the eye position", "pupil_center", lambda a: {"pupil_center": a["pupil_center"] * np.inf}),
    ("NaN in an image", "images", lambda a: {"images": _nan(a["images"].reshape(T, -1)).reshape(T, H, W)}),
    (
        "NaN in coordinates",
        "cell_motor_coordinates",
        lambda a: {"cell_motor_coordinates": _nan(a["cell_motor_coordinates"])},
    ),
    (
        "responses beyond float32",
        "responses",
        lambda a: {"responses": a["responses"].astype(np.float64) * 1e300},
    ),
    ("text responses", "responses", lambda a: {"responses": a["responses"].astype(str)}),
    ("unknown tier", "tiers", lambda a: {"tiers": np.where(a["tiers"] == "test", "tset", a["tiers"])}),
    ("no train trial", "tiers", lambda a: {"tiers": np.full(T, "validation")}),
    ("numeric tiers", "tiers", lambda a: {"tiers": np.zeros(T)}),
    ("one image fewer", "images", lambda a: {"images": a["images"][1:]}),
    ("one behaviour row fewer", "behavior", lambda a: {"behavior": a["behavior"][1:]}),
    ("one eye position fewer", "pupil_center", lambda a: {"pupil_center": a["pupil_center"][1:]}),
    ("one tier fewer", "tiers", lambda a: {"tiers": a["tiers"][1:]}),
    ("one timestamp fewer", "frame_trial_ts", lambda a: {"frame_trial_ts": a["frame_trial_ts"][1:]}),
    ("timestamp text", "frame_trial_ts", lambda a: {"frame_trial_ts": np.full(T, "yesterday")}),
    (
        "timestamps with a UTC offset",
        "frame_trial_ts",
        lambda a: {
            "frame_trial_ts": np.array([f"2023-05-01T10:{i // 60:02d}:{i % 60:02d}+02:00" for i in range(T)])
        },
    ),
    (
        "a NaT timestamp",
        "frame_trial_ts",
        lambda a: {"frame_trial_ts": np.where(np.arange(T) == 4, np.datetime64("NaT"), a["frame_trial_ts"])},
    ),
    ("constant images", "images", lambda a: {"images": np.zeros((T, H, W), np.uint8)}),
    ("repeated unit id", "unit_ids", lambda a: {"unit_ids": np.r_[np.arange(N - 1), 0]}),
    ("unit ids of another N", "unit_ids", lambda a: {"unit_ids": np.arange(N + 1)}),
    ("fractional image ids", "frame_image_id", lambda a: {"frame_image_id": np.arange(T) + 0.5}),
    ("repeated trial_idx", "trial_idx", lambda a: {"trial_idx": np.zeros(T, int)}),
    ("long trial_idx", "trial_idx", lambda a: {"trial_idx": np.array([f"{i}" + "x" * 70 for i in range(T)])}),
    ("negative animal id", "animal_id", lambda a: {"animal_id": np.array(-3)}),
    ("two animal ids", "animal_id", lambda a: {"animal_id": np.array([1, 2])}),
    (
        "a data key too long",
        "animal_id",
        lambda a: {"animal_id": np.array(10**18), "session": np.array(10**17)},
    ),
    ("area label too long", "area", lambda a: {"area": "V" * 40}),
]


@pytest.mark.parametrize(("what", "field", "change"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_naming_the_field_and_writes_nothing(tmp_path, what, field, change):
    arrays = _arrays()
    arrays.update(change(arrays))
    out = tmp_path / "out"
    with pytest.raises(ConvertError) as info:
        convert(arrays, out, make_zip=True)
    message = str(info.value)
    assert info.value.field == field, message
    assert message.startswith(f"{field}: expected ") and ", found " in message, message
    assert "\n" not in message
    assert not out.exists(), f"{what}: nothing may be written"


@pytest.mark.parametrize("missing", REQUIRED)
def test_missing_array_is_named(tmp_path, missing):
    arrays = _arrays()
    del arrays[missing]
    with pytest.raises(ConvertError, match=rf"^{missing}: expected a required array, found none"):
        convert(arrays, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_array_name_is_refused(tmp_path):
    arrays = _arrays()
    arrays["respones"] = arrays.pop("responses")
    with pytest.raises(ConvertError, match=r"^respones: expected one of the arrays images, responses"):
        convert(arrays, tmp_path / "out")


def test_existing_recording_is_never_replaced(tmp_path):
    arrays = _arrays()
    folder, _ = convert(arrays, tmp_path)
    marker = folder / "meta" / "marker"
    marker.write_text("kept")
    with pytest.raises(ConvertError, match=r"^out: expected no recording of this name there yet"):
        convert(arrays, tmp_path, make_zip=True)
    assert marker.read_text() == "kept" and not folder.with_name(folder.name + ".zip").exists()


def test_failed_zip_leaves_neither_folder_nor_zip(tmp_path, monkeypatch):
    rec = recording_from_arrays(**_arrays())

    def broken_write(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "write", broken_write)
    with pytest.raises(OSError, match="No space left"):
        write_converted(rec, tmp_path / "out", make_zip=True)
    assert list((tmp_path / "out").iterdir()) == []


def test_load_npz_checks_names_pickles_and_size(tmp_path, monkeypatch):
    arrays = _arrays()
    good = tmp_path / "good.npz"
    np.savez(good, **arrays)
    loaded = load_npz(good)
    assert sorted(loaded) == sorted(arrays) and np.array_equal(loaded["images"], arrays["images"])

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **dict(arrays, tiers=arrays["tiers"].astype(object)))
    with pytest.raises(
        ConvertError, match=r"^tiers: expected a plain array of numbers or text, found an object"
    ):
        load_npz(pickled)

    misspelt = tmp_path / "misspelt.npz"
    np.savez(misspelt, respones=arrays["responses"])
    with pytest.raises(ConvertError, match=r"^respones: expected one of the arrays"):
        load_npz(misspelt)

    monkeypatch.setattr(convert_module, "MAX_RECORDING_BYTES", 1000)
    with pytest.raises(ConvertError, match=r"^--from: expected at most 0 GiB of arrays"):
        load_npz(good)


# -- the command line ---------------------------------------------------------------------------------


def _cli(tmp_path: Path, source: Path, *args: str):
    return run_cli("convert", "--from", str(source), "--out", str(tmp_path / "out"), *args, timeout=120)


def test_cli_converts_an_npz(tmp_path):
    arrays = _arrays()
    source = tmp_path / "lab.npz"
    np.savez_compressed(source, **arrays)
    p = _cli(tmp_path, source, "--zip")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote ") and "data key 31337-2-5" in lines[0], p.stdout
    (folder,) = [f for f in (tmp_path / "out").iterdir() if f.is_dir()]
    _assert_same(folder, arrays)
    _assert_same(folder.with_name(folder.name + ".zip"), arrays)
    again = _cli(tmp_path, source)
    assert again.returncode == 2 and again.stdout.startswith("error: --out: expected no recording"), (
        again.stdout
    )


def _bad_npz(tmp_path: Path, name: str) -> tuple[Path, str]:
    arrays = _arrays()
    source = tmp_path / f"{name}.npz"
    if name == "nan":
        arrays["behavior"] = _nan(arrays["behavior"])
        want = f"error: {source}: behavior: expected finite values, found 1 NaN"
    elif name == "mismatched":
        arrays["pupil_center"] = arrays["pupil_center"][:-2]
        want = f"error: {source}: pupil_center: expected shape (T, 2) = ({T}, 2), found shape ({T - 2}, 2)"
    elif name == "missing":
        del arrays["tiers"]
        want = f"error: {source}: tiers: expected a required array, found none"
    elif name == "object":
        arrays["tiers"] = arrays["tiers"].astype(object)
        want = f"error: {source}: tiers: expected a plain array of numbers or text, found an object array"
    else:  # not an npz at all
        source.write_text("images,responses\n1,2\n")
        return source, "error: --from: expected an .npz archive (np.savez), found no readable zip archive"
    np.savez(source, **arrays)
    return source, want


@pytest.mark.parametrize("name", ["nan", "mismatched", "missing", "object", "text"])
def test_cli_bad_input_is_one_error_line_exit_2_nothing_written(tmp_path, name):
    source, want = _bad_npz(tmp_path, name)
    p = _cli(tmp_path, source, "--zip")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(want), lines
    assert not (tmp_path / "out").exists(), "nothing may be written for a bad input"


def test_cli_missing_source_and_blocked_out(tmp_path):
    p = _cli(tmp_path, tmp_path / "nope.npz")
    assert p.returncode == 2 and p.stdout.splitlines() == [
        f"error: --from: expected an .npz file, found nothing at {tmp_path / 'nope.npz'}"
    ]
    source = tmp_path / "lab.npz"
    np.savez(source, **_arrays())
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    p = _cli(tmp_path, source)
    assert p.returncode == 2 and p.stdout.splitlines() == [
        f"error: --out: expected a folder, found a file at {blocker}"
    ]
    assert blocker.read_text() == "a file"
