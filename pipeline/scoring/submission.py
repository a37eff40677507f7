"""Competition submission files (see docs/model.md#submission-files): writing and validating.

One CSV per scan and tier, ``submission_file_live_test.csv`` (tier ``test``) or
``submission_file_final_test.csv`` (tier ``final_test``), with the columns ``trial_indices``,
``image_ids``, ``prediction`` (the string of a Python list of N floats) and ``neuron_ids`` (the string
of the list of unit ids, repeated on every row); one row per trial, in ascending file index (the
competition's sequential sampler). Ids are taken from the recording as given (hashed ``trial_idx``
strings are kept).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ("trial_indices", "image_ids", "prediction", "neuron_ids")
FILE_NAMES = {"test": "submission_file_live_test.csv", "final_test": "submission_file_final_test.csv"}


@dataclass(frozen=True)
class TierIds:
    """What a valid file for one tier of one scan must contain.

    Attributes:
        trial_idx: (n,) ``meta/trials/trial_idx`` of the tier's trials (strings), ascending file index.
        image_ids: (n,) ``frame_image_id`` of those trials.
        unit_ids: (N,) ``meta/neurons/unit_ids`` in the recording's order.
    """

    trial_idx: np.ndarray
    image_ids: np.ndarray
    unit_ids: np.ndarray


def file_name(data_key: str, tier: str) -> str:
    """``<data_key>_submission_file_live_test.csv`` / ``..._final_test.csv``."""
    if tier not in FILE_NAMES:
        raise ValueError(f"submissions exist for tiers {sorted(FILE_NAMES)}, not {tier!r}")
    return f"{data_key}_{FILE_NAMES[tier]}"


def write_submission(path: str | Path, ids: TierIds, predictions: np.ndarray) -> str:
    """Write one submission file (to a temporary name, then renamed); return its SHA-256.

    Args:
        path: target CSV.
        ids: the tier's ids.
        predictions: (n, N) predictions in the standardised response units, rows in ``ids`` order.
    """
    n, N = len(ids.trial_idx), len(ids.unit_ids)
    if predictions.shape != (n, N):
        raise ValueError(f"predictions have shape {predictions.shape}, expected ({n}, {N})")
    if not np.all(np.isfinite(predictions)):
        raise ValueError("predictions contain non-finite values; refusing to write a submission")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    neuron_ids = json.dumps([int(u) for u in ids.unit_ids])
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i in range(n):
            row = [float(x) for x in predictions[i]]
            writer.writerow([str(ids.trial_idx[i]), int(ids.image_ids[i]), json.dumps(row), neuron_ids])
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def validate_submission(path: str | Path, ids: TierIds) -> list[str]:
    """Every problem of a submission file, one message each (empty list: valid).

    Checks: the header; every trial of the tier exactly once (missing, duplicated and unknown trials
    reported separately); the image id of each trial; the neuron ids in the recording's order on every
    row; one finite prediction per neuron.
    """
    path = Path(path)
    problems: list[str] = []
    try:
        # a row holds N predictions and N neuron ids: ~200 kB for the competition's ~8000 neurons, above
        # the csv module's default field limit (131072 characters); no field is longer than the file
        csv.field_size_limit(max(csv.field_size_limit(), path.stat().st_size + 1))
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        return [f"{path}: cannot read the file: {err}"]
    except csv.Error as err:
        return [f"{path}: not a readable CSV file ({err})"]
    if not rows or tuple(rows[0]) != COLUMNS:
        return [f"{path}: header is {rows[0] if rows else 'missing'}, expected {list(COLUMNS)}"]
    expected_units = [int(u) for u in ids.unit_ids]
    image_of = {str(t): int(i) for t, i in zip(ids.trial_idx, ids.image_ids, strict=True)}
    seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(COLUMNS):
            problems.append(f"line {line}: {len(row)} columns, expected {len(COLUMNS)}")
            continue
        trial, image, prediction, neurons = row
        seen[trial] = seen.get(trial, 0) + 1
        if trial in image_of and str(image_of[trial]) != image.strip():
            problems.append(
                f"line {line}: trial {trial} has image id {image}, the recording says {image_of[trial]}"
            )
        try:
            units = [int(u) for u in json.loads(neurons)]
        except (ValueError, TypeError):
            problems.append(f"line {line}: neuron_ids is not a list of integers")
            units = None
        if units is not None and units != expected_units:
            if sorted(units) == sorted(expected_units):
                problems.append(f"line {line}: neuron ids are not in the recording's order")
            else:
                problems.append(f"line {line}: neuron ids differ from the recording's unit ids")
        try:
            values = np.asarray(json.loads(prediction), dtype=np.float64)
        except (ValueError, TypeError):
            problems.append(f"line {line}: prediction is not a list of numbers")
            continue
        if values.shape != (len(expected_units),):
            problems.append(
                f"line {line}: {values.size} predictions, expected one per neuron ({len(expected_units)})"
            )
        elif not np.all(np.isfinite(values)):
            problems.append(
                f"line {line}: prediction has {int((~np.isfinite(values)).sum())} NaN or infinite values"
            )
    missing = [t for t in image_of if t not in seen]
    duplicated = [t for t, c in seen.items() if c > 1]
    unknown = [t for t in seen if t not in image_of]
    if missing:
        problems.append(f"{len(missing)} trial(s) of the tier missing, e.g. {missing[:3]}")
    if duplicated:
        problems.append(f"{len(duplicated)} trial(s) appear more than once, e.g. {duplicated[:3]}")
    if unknown:
        problems.append(f"{len(unknown)} trial id(s) not in this tier of the recording, e.g. {unknown[:3]}")
    return problems
