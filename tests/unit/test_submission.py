"""Submission files: what is written passes the validator; each kind of broken file has its own message."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pipeline.scoring.submission import TierIds, validate_submission, write_submission

IDS = TierIds(
    trial_idx=np.array(["a1f3", "09bc", "77de", "c0ff"]),
    image_ids=np.array([5, 5, 9, 9]),
    unit_ids=np.array([12, 3, 7]),
)
PRED = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


@pytest.fixture()
def good(tmp_path):
    path = tmp_path / "x_submission_file_live_test.csv"
    write_submission(path, IDS, PRED)
    return path


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _write(path, rows):
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_written_file_is_valid_and_readable(good):
    assert validate_submission(good, IDS) == []
    rows = _rows(good)
    assert rows[0] == ["trial_indices", "image_ids", "prediction", "neuron_ids"]
    assert [r[0] for r in rows[1:]] == list(IDS.trial_idx), "hashed trial ids kept as given, in order"
    assert json.loads(rows[1][3]) == [12, 3, 7]
    np.testing.assert_allclose(json.loads(rows[2][2]), PRED[1], rtol=1e-6)


def test_missing_trial(good):
    rows = _rows(good)
    _write(good, rows[:-1])
    assert any("1 trial(s) of the tier missing" in p and "c0ff" in p for p in validate_submission(good, IDS))


def test_duplicated_trial(good):
    rows = _rows(good)
    _write(good, [*rows, rows[1]])
    assert any("appear more than once" in p and "a1f3" in p for p in validate_submission(good, IDS))


def test_wrong_neuron_order(good):
    rows = _rows(good)
    rows[2][3] = json.dumps([3, 12, 7])
    _write(good, rows)
    assert validate_submission(good, IDS) == ["line 3: neuron ids are not in the recording's order"]


def test_nan_prediction(good):
    rows = _rows(good)
    rows[3][2] = "[0.1, NaN, 0.3]"
    _write(good, rows)
    assert validate_submission(good, IDS) == ["line 4: prediction has 1 NaN or infinite values"]


def test_other_problems_are_named(good, tmp_path):
    rows = _rows(good)
    rows[1][1] = "6"  # wrong image id
    rows[2][2] = "[0.1, 0.2]"  # too few predictions
    rows[3][0] = "zzzz"  # unknown trial (and so 77de missing)
    _write(good, rows)
    problems = validate_submission(good, IDS)
    assert any("image id 6" in p for p in problems)
    assert any("2 predictions, expected one per neuron (3)" in p for p in problems)
    assert any("not in this tier" in p and "zzzz" in p for p in problems)
    assert any("missing" in p and "77de" in p for p in problems)
    bad_header = tmp_path / "h.csv"
    _write(bad_header, [["a", "b"]])
    assert "header" in validate_submission(bad_header, IDS)[0]


def test_writer_refuses_bad_predictions(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        write_submission(tmp_path / "f.csv", IDS, np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="expected \\(4, 3\\)"):
        write_submission(tmp_path / "f.csv", IDS, PRED[:, :2])


def test_competition_sized_rows_validate(tmp_path):
    """7538 neurons (scan 27204-5-13): a row's prediction field is longer than csv's default limit."""
    n = 7538
    ids = TierIds(trial_idx=np.array(["t1", "t2"]), image_ids=np.array([1, 2]), unit_ids=np.arange(1, n + 1))
    path = tmp_path / "big_submission_file_live_test.csv"
    write_submission(path, ids, np.random.default_rng(0).random((2, n)).astype(np.float32))
    assert min(len(line) for line in path.read_text().splitlines()[1:]) > 131072
    assert validate_submission(path, ids) == []
