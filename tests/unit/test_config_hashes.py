"""Stored configurations keep their hash: every preset (and sweep trial) hashes as pinned here.

Every file of ``experiments/`` is pinned (in ``tests/stored_hashes.py``; a preset added later in
``LATER_PRESETS`` below). The non-ViT hashes were computed
by the code of commit 6c4dd16 (before any issue-12 field existed) and again, unchanged, before issue 28: a
field added later is hash-neutral (``pipeline.configs.later``) and enters the hashed form only away from
its default, at every level of nesting. If one of these changes, databases filled earlier would see new,
untrained configs.

The ViT presets (``vit_demo``, ``beyond``) moved to their own builder key in issue 28
(``sensorium.models.modulated_vit_core_full_gauss_readout``; no lab database held ViT models then), so
their model hashes are new; ``VIT_BEFORE_ISSUE_28`` keeps the hashes they had under the old key, which
rows stored then still have (``tests/unit/test_config_evolution.py`` loads those rows).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.configs import config_hash
from pipeline.experiments import ExperimentSpec, load_experiment
from pipeline.registry import resolve
from pipeline.sweeps.spec import load_sweep, trial_experiment
from tests.stored_hashes import STORED

EXPERIMENTS = Path(__file__).parents[2] / "experiments"

#: presets added after the shared pins of ``tests/stored_hashes.py``, pinned here the same way
LATER_PRESETS = {
    "beyond_full": {
        "dataset": [
            "02ea206c2cf91981dc087d76597e84f2",
            "27e4e99acfabb947aea5717e5d813fd1",
            "687f75162aa0ecc9b39603e8660f3de3",
            "bc5f0d853494d3fa68c0849d4cb12511",
            "edb3430d159c7e6b1731b656b8f477d8",
        ],
        "model": "cb37c1804a39ee0a0c47d3b7a4bb0202",
        "trainer": "6613fa81428edcc388da8ff6b3fbc2f2",
    },
    # beyond's data (the compressed history, re-splits 0-2) in batches of 32 since the third teacher round
    # (with batches of 64, its first version: 1a749631..., 4944d086..., 30fcba59..., beyond's own dataset
    # hashes), with re-splits that validate on 2.5 % of the known trials since the sixth (before:
    # 364d0cb0..., e057f3ba..., c42c8211...)
    "beyond_cnn": {
        "dataset": [
            "2f48fe5cc5f92394ffef3bc5e07773fb",
            "09fd54e1cb28bda4a6585c7bc77e3c2f",
            "28936c40b5a41afba150826b08476009",
        ],
        # hidden kernels of 7 since the sixth teacher round (before: 0bffc1a7...), at most 400 neurons
        # mapped since the 1,200-neuron comparison (before: 41bc23bf...)
        "model": "4a9d92dd3399560d4963d311624e65b7",
        # + the weight average and AdamW (fourth round; before: 17673a8e..., beyond's), then Muon on the
        # core (sixth round; before: 7b1f8370...)
        "trainer": "b605a324394b3db56253dc4d67be6332",
    },
}
#: every pinned preset (a preset is pinned in one place only)
PINNED = {**STORED, **{k: v for k, v in LATER_PRESETS.items() if k not in STORED}}

#: trials of the sweeps (the grid's every point; for TPE the corners of the space), as the sweep makes them
SWEEP_TRIALS = {
    "demo_grid": [
        (
            {"model.config.hidden_channels": 16, "trainer.config.lr_init": 0.005},
            {
                "dataset": ["33a3bcb35329ee4b67b3452da4e849e8"],
                "model": "c4309704b25dd084ab6a1babe6b2b827",
                "trainer": "0b3b547c6367830b30f536863b0fbc91",
            },
        ),
        (
            {"model.config.hidden_channels": 16, "trainer.config.lr_init": 0.009},
            {
                "dataset": ["33a3bcb35329ee4b67b3452da4e849e8"],
                "model": "c4309704b25dd084ab6a1babe6b2b827",
                "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
            },
        ),
        (
            {"model.config.hidden_channels": 32, "trainer.config.lr_init": 0.005},
            {
                "dataset": ["33a3bcb35329ee4b67b3452da4e849e8"],
                "model": "1552a031368c2e43179086ba7cfee0d5",
                "trainer": "0b3b547c6367830b30f536863b0fbc91",
            },
        ),
        (
            {"model.config.hidden_channels": 32, "trainer.config.lr_init": 0.009},
            {
                "dataset": ["33a3bcb35329ee4b67b3452da4e849e8"],
                "model": "1552a031368c2e43179086ba7cfee0d5",
                "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
            },
        ),
    ],
    "vit_demo_tpe": [
        (
            {
                "dataset.config.batch_size": 32,
                "model.config.gamma_input": 1.0,
                "model.config.vit.dim": 32,
                "model.config.vit.dropout": 0.0,
                "model.config.vit.layers": 2,
                "model.config.vit.patch_size": 6,
                "model.config.vit.patch_stride": 3,
                "trainer.config.lr_init": 0.003,
            },
            {
                "dataset": ["78526dcb1416fd4d67e8375bd21dd5d0"],
                "model": "8fd0e2b14bff1b21feb04845aa00f9f4",
                "trainer": "7c2c92db550757cda83c6710223ba385",
            },
        ),
        (
            {
                "dataset.config.batch_size": 64,
                "model.config.gamma_input": 30.0,
                "model.config.vit.dim": 48,
                "model.config.vit.dropout": 0.2,
                "model.config.vit.layers": 4,
                "model.config.vit.patch_size": 8,
                "model.config.vit.patch_stride": 4,
                "trainer.config.lr_init": 0.02,
            },
            {
                "dataset": ["e91d89c880e3a5ec1ef70a9dff0c054d"],
                "model": "566619a40c9346039896a111e8ecd442",
                "trainer": "afd8ae5ac75cf1aee6bc7d42d1fb2433",
            },
        ),
    ],
    "winner_demo_tpe": [
        (
            {
                "model.config.output_nonlinearity": "elu1",
                "trainer.config.ema_decay": 0.97,
                "trainer.config.lr_init": 0.003,
                "trainer.config.lr_schedule": "plateau",
                "trainer.config.weight_decay": 0.0,
            },
            {
                "dataset": ["e91d89c880e3a5ec1ef70a9dff0c054d"],
                "model": "83861152c2a4f870545bc397447bdf48",
                "trainer": "fde30d72e547127c029b3b3c6bb9f76d",
            },
        ),
        (
            {
                "model.config.output_nonlinearity": "elu1",
                "trainer.config.ema_decay": None,
                "trainer.config.lr_init": 0.003,
                "trainer.config.lr_schedule": "plateau",
                "trainer.config.weight_decay": 0.0,
            },
            {
                "dataset": ["e91d89c880e3a5ec1ef70a9dff0c054d"],
                "model": "83861152c2a4f870545bc397447bdf48",
                "trainer": "55c6b31590c9abaa2a3d5f9617fb7a24",
            },
        ),
        (
            {
                "model.config.output_nonlinearity": "softplus",
                "trainer.config.ema_decay": 0.9,
                "trainer.config.lr_init": 0.03,
                "trainer.config.lr_schedule": "cosine",
                "trainer.config.weight_decay": 0.1,
            },
            {
                "dataset": ["e91d89c880e3a5ec1ef70a9dff0c054d"],
                "model": "41f1da9b05641f1c06f0aa5a3eb975c4",
                "trainer": "2b741bda630e293cf69babbd6147a6e9",
            },
        ),
    ],
}


def hashes(spec: ExperimentSpec) -> dict:
    """The dataset (one per member), model and trainer hashes of an experiment."""
    out = {
        kind: config_hash(
            getattr(spec, kind).fn, resolve(kind, getattr(spec, kind).fn, getattr(spec, kind).config)
        )
        for kind in ("model", "trainer")
    }
    out["dataset"] = [
        config_hash(spec.dataset.fn, resolve("dataset", spec.dataset.fn, c)) for c, _ in spec.member_list()
    ]
    return out


def test_every_experiment_file_is_pinned():
    assert sorted(PINNED) == sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
    assert sorted(SWEEP_TRIALS) == sorted(p.stem for p in (EXPERIMENTS / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(PINNED))
def test_preset_hashes_are_unchanged(name):
    got = hashes(load_experiment(EXPERIMENTS / f"{name}.yaml"))
    for kind in ("model", "trainer", "dataset"):
        assert got[kind] == PINNED[name][kind], kind


@pytest.mark.parametrize("name", sorted(SWEEP_TRIALS))
def test_sweep_trial_hashes_are_unchanged(name):
    sweep = load_sweep(EXPERIMENTS / "sweeps" / f"{name}.yaml")
    for number, (params, expected) in enumerate(SWEEP_TRIALS[name]):
        assert hashes(trial_experiment(sweep, number, params)) == expected, params
