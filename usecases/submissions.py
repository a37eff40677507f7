"""Competition submission files of an ensemble: written, validated and recorded in ``Submission``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.scoring.submission import FILE_NAMES, file_name, validate_submission, write_submission
from schemas.evaluation import Submission, tier_ids
from usecases.queries import predictions_of, require_names


class SubmissionError(ValueError):
    """The ensemble's predictions cannot be submitted (the message names why); nothing was written."""


@dataclass(frozen=True)
class SubmissionFile:
    """One written file: its tier, its trials, its SHA-256, the validator's problems, whether recorded."""

    path: Path
    data_key: str
    tier: str
    n_trials: int
    checksum: str
    problems: list[str] = field(default_factory=list)
    recorded: bool = False


def check_submission(path: Path, data_key: str, tier: str | None = None) -> tuple[str, list[str]]:
    """Validate a submission file against the stored trial and neuron ids of ``data_key``.

    Returns:
        (the tier checked, the problems found: empty when valid). Without ``tier``, it is taken from the
        file name (``final_test`` when the name says so, else ``test``).

    Raises:
        UnknownNameError: ``data_key`` is not an ingested scan (one line, not a problem per file line).
    """
    require_names("scan", data_key)
    tier = tier or ("final_test" if "final_test" in Path(path).name else "test")
    _, ids = tier_ids(data_key, tier)
    return tier, validate_submission(path, ids)


def submit_ensemble(ensemble: str, out_dir: Path, *, record: bool = True) -> Iterator[SubmissionFile]:
    """Write one file per scan and competition tier of ``ensemble``'s mean predictions, validate each,
    and record the valid ones in ``Submission`` (replacing an earlier row of the same file), unless
    ``record`` is False (read-only logins).

    Everything is prepared and checked before the first file is written; each file is yielded once it
    is written (and recorded), so a caller shows what was done even when a later file fails.

    Raises:
        UnknownNameError: no ensemble of that name.
        LookupError: its predictions are not computed.
        SubmissionError: non-finite predictions (no file written).
    """
    planned = []
    for data_key, predictions in predictions_of(None, ensemble, None).items():
        for tier in FILE_NAMES:
            idx, ids = tier_ids(data_key, tier)
            if len(idx) == 0:
                continue
            values = np.asarray(predictions)[idx]
            if not np.all(np.isfinite(values)):
                raise SubmissionError(
                    f"{ensemble!r} predicts non-finite values for {data_key} {tier}; nothing written"
                )
            planned.append((data_key, tier, idx, ids, values))
    for data_key, tier, idx, ids, values in planned:
        path = Path(out_dir) / file_name(data_key, tier)
        checksum = write_submission(path, ids, values)
        problems = validate_submission(path, ids)
        recorded = record and not problems  # a file that fails the validator is never recorded
        if recorded:
            key = {"ensemble_name": ensemble, "data_key": data_key, "tier": tier}
            row = dict(key, path=str(path.resolve()), checksum=checksum, n_trials=len(idx), file=str(path))
            with Submission.connection.transaction:
                (Submission & key).delete_quick()
                Submission.insert1(row)
        yield SubmissionFile(path, data_key, tier, len(idx), checksum, problems, recorded)
