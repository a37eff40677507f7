"""Reading, writing and validating the SENSORIUM file tree."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.format import RecordingFormatError, read_recording, write_recording
from pipeline.data.recording import TRIAL_VARIABLES


def _zip_of(folder: Path) -> Path:
    return folder.with_name(folder.name + ".zip")


def test_write_read_round_trip(recording_copy, tmp_path):
    rec = read_recording(recording_copy, progress=False)
    folder, zip_path = write_recording(rec, tmp_path / "out" / recording_copy.name)
    for path in (folder, zip_path):
        again = read_recording(path, progress=False)
        assert again.data_key == rec.data_key
        assert again.checksum == rec.checksum, "folder and zip of the same content share one checksum"
        for var in TRIAL_VARIABLES:
            a, b = rec.trial_variable(var), again.trial_variable(var)
            assert a.dtype == b.dtype and np.array_equal(a, b), var
        for name, arr in rec.trials.items():
            assert np.array_equal(arr, again.trials[name]), name
        for name, arr in rec.neurons.items():
            assert np.array_equal(arr, again.neurons[name]), name
        assert np.array_equal(
            rec.statistics["responses"]["all"]["std"], again.statistics["responses"]["all"]["std"]
        )


def test_zip_has_real_layout(synth_dir):
    zip_path = sorted(synth_dir.glob("*.zip"))[0]
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    top = zip_path.name.removesuffix(".zip")
    assert all(n.startswith(top + "/") for n in names)
    assert f"{top}/data/images/0.npy" in names
    assert f"{top}/meta/statistics/responses/all/std.npy" in names
    assert f"{top}/meta/trials/frame_trial_ts.npy" in names


def test_changed_content_changes_checksum(recording_copy):
    before = read_recording(recording_copy, progress=False).checksum
    arr = np.load(recording_copy / "data/responses/3.npy")
    np.save(recording_copy / "data/responses/3.npy", arr + 1)
    assert read_recording(recording_copy, progress=False).checksum != before


# -- each validation failure has its own clear message --------------------------------------------------


def _expect(path: Path, *fragments: str) -> RecordingFormatError:
    with pytest.raises(RecordingFormatError) as info:
        read_recording(path, progress=False)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


def test_missing_meta_file(recording_copy):
    (recording_copy / "meta/trials/tiers.npy").unlink()
    err = _expect(recording_copy, "meta/trials/tiers.npy", "missing")
    assert err.where == "meta/trials/tiers.npy"


def test_missing_statistics_file(recording_copy):
    (recording_copy / "meta/statistics/behavior/all/std.npy").unlink()
    _expect(recording_copy, "meta/statistics/behavior/all/std.npy", "expected a statistics file")


def test_trial_missing_in_one_variable(recording_copy):
    (recording_copy / "data/behavior/7.npy").unlink()
    err = _expect(recording_copy, "data/behavior", "1 missing: 7.npy", "as in data/images")
    assert err.where == "data/behavior"


def test_wrong_shape(recording_copy):
    arr = np.load(recording_copy / "data/responses/4.npy")
    np.save(recording_copy / "data/responses/4.npy", np.append(arr, 0.0).astype(arr.dtype))
    _expect(recording_copy, "data/responses/4.npy", f"shape ({arr.size},)", f"shape ({arr.size + 1},)")


def test_wrong_image_shape(recording_copy):
    np.save(recording_copy / "data/images/0.npy", np.zeros((144, 256), dtype=np.uint8))
    _expect(recording_copy, "data/images/0.npy", "shape (1, height, width)")


def test_nan_in_responses(recording_copy):
    arr = np.load(recording_copy / "data/responses/9.npy")
    arr[2] = np.nan
    np.save(recording_copy / "data/responses/9.npy", arr)
    _expect(recording_copy, "data/responses/9.npy", "expected finite values", "1 NaN")


def test_unknown_tier(recording_copy):
    tiers = np.load(recording_copy / "meta/trials/tiers.npy")
    tiers[0] = "holdout"
    np.save(recording_copy / "meta/trials/tiers.npy", tiers)
    _expect(recording_copy, "meta/trials/tiers.npy", "'holdout'", "train")


def test_meta_length_mismatch(recording_copy):
    ids = np.load(recording_copy / "meta/neurons/area.npy")
    np.save(recording_copy / "meta/neurons/area.npy", ids[:-1])
    _expect(recording_copy, "meta/neurons/area.npy", "N = len(unit_ids)")


def test_bad_timestamp(recording_copy):
    ts = np.load(recording_copy / "meta/trials/frame_trial_ts.npy")
    ts[5] = "yesterday"
    np.save(recording_copy / "meta/trials/frame_trial_ts.npy", ts)
    _expect(recording_copy, "frame_trial_ts", "'yesterday' at trial 5")


def test_truncated_zip(synth_dir, tmp_path):
    src = sorted(synth_dir.glob("*.zip"))[0]
    broken = tmp_path / src.name
    data = src.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    _expect(broken, "expected a readable zip archive")


def test_damaged_zip_member(synth_dir, tmp_path):
    src = sorted(synth_dir.glob("*.zip"))[0]
    damaged = tmp_path / src.name
    shutil.copy(src, damaged)
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo(next(n for n in zf.namelist() if n.endswith("data/responses/0.npy")))
    raw = bytearray(damaged.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 5, start + 25):
        raw[i] ^= 0xFF  # flip bytes inside the compressed member
    damaged.write_bytes(bytes(raw))
    _expect(damaged, "data/responses/0.npy", "a damaged member")


def test_not_a_recording(tmp_path):
    _expect(tmp_path / "nothing.zip", "nothing at this path")
    (tmp_path / "file.txt").write_text("x")
    _expect(tmp_path / "file.txt", "a folder or a .zip file")
    (tmp_path / "empty").mkdir()
    _expect(tmp_path / "empty", "data/images", "nothing")
