"""research.selection: rows named after an earlier form of a preset still declare that form (its hashes),
so reusing a home reuses the models trained then and the research log's figures stay reproducible."""

from __future__ import annotations

import pytest

from pipeline.experiments import load_experiment
from research.selection import ENSEMBLES
from tests.unit.test_config_hashes import EXPERIMENTS, PINNED, hashes

#: model and trainer hashes (their first 8 hex digits, as docs/config-evolution.md lists them)
EARLIER_FORMS = {
    # the fourth teacher round's beyond_cnn: batches of 32, the weight average, AdamW, kernels of 9
    "beyond_cnn_ema_ensemble": ("0bffc1a7", "7b1f8370"),
    # the sixth round's first two changes (Muon, the validation share) with kernels of 9
    "beyond_cnn_muon_ensemble": ("0bffc1a7", "b605a324"),
    # the sixth round's preset: every neuron mapped
    "beyond_cnn_k7_ensemble": ("41bc23bf", "b605a324"),
}


@pytest.mark.parametrize("row", sorted(EARLIER_FORMS))
def test_rows_of_earlier_forms_keep_their_hashes(row):
    path, sets = ENSEMBLES[row]
    got = hashes(load_experiment(EXPERIMENTS / path, overrides=sets))
    assert (got["model"][:8], got["trainer"][:8]) == EARLIER_FORMS[row]


def test_the_current_row_is_the_preset():
    path, sets = ENSEMBLES["beyond_cnn_capped_ensemble"]
    got = hashes(load_experiment(EXPERIMENTS / path, overrides=sets))
    assert got["model"] == PINNED["beyond_cnn"]["model"] and got["trainer"] == PINNED["beyond_cnn"]["trainer"]
