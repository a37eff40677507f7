"""Pinned configuration hashes, shared by the tests that check stored configurations keep their hash
(``tests/unit/test_config_hashes.py``) and that rows stored before a change still load
(``tests/unit/test_config_evolution.py``). See test_config_hashes.py for what the hashes pin and why.
"""

from __future__ import annotations

STORED = {
    "baseline": {
        "dataset": ["3392f7ef79256c3432343e8186ec4ad9"],
        "model": "0f2d86623d9e4e1707c6f99ee8d9c89b",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "baseline_6mice": {
        "dataset": ["525487edc61825a6dce742d1ef915354"],
        "model": "0f2d86623d9e4e1707c6f99ee8d9c89b",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "beyond": {
        "dataset": [
            "1a749631a47b922390e106f209404f28",
            "4944d086f7df24d432f24bb9aa4c2250",
            "30fcba59fa768dbc5f038aebba106f63",
        ],
        "model": "6a3cd44d8ff827fc9f984b9f7c4ba770",
        "trainer": "17673a8ececebb7d899a811b5e46261b",
    },
    "beyond_cnn_options": {
        "dataset": [
            "98253a5695f8b82941d5d86c5106077f",
            "1a206f6b0bcb1f7fe0bbf8caee37d35f",
            "50dce5e58257954e30a255ae3cd22aa4",
        ],
        "model": "41f1da9b05641f1c06f0aa5a3eb975c4",
        "trainer": "4d2cdc0f2f088a2377ed8952f223dcfb",
    },
    "demo": {
        "dataset": ["33a3bcb35329ee4b67b3452da4e849e8"],
        "model": "c4309704b25dd084ab6a1babe6b2b827",
        "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
    },
    "ensemble_demo": {
        "dataset": [
            "93df6a3e98257236e249450faaa8afb3",
            "d8b9007ab0dffd0a465221b4dadd0d04",
            "93478f04670af3cb5538e07b27e95bd6",
        ],
        "model": "83861152c2a4f870545bc397447bdf48",
        "trainer": "17673a8ececebb7d899a811b5e46261b",
    },
    "new_hyperparams": {
        "dataset": ["525487edc61825a6dce742d1ef915354"],
        "model": "2c8ab3111c96343b036bfff5e9a42f7d",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "new_hyperparams_demo": {
        "dataset": ["33a3bcb35329ee4b67b3452da4e849e8"],
        "model": "336fc3b74c75778db8b651038d9603c6",
        "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
    },
    "only_adjnorm": {
        "dataset": ["caf7d21519ca2d8a73ceb0bbd8efa806"],
        "model": "0f2d86623d9e4e1707c6f99ee8d9c89b",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "only_adjnorm_demo": {
        "dataset": ["5e9a26508400f9f75cf918912e9479bf"],
        "model": "c4309704b25dd084ab6a1babe6b2b827",
        "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
    },
    "only_gain": {
        "dataset": ["59671fe9a9a433d97330f1704cae9209"],
        "model": "40e19be4807c3b840d6bb0b405dd89d8",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "only_gain_demo": {
        "dataset": ["36a80e252f43d3c6bbaecd135aabad59"],
        "model": "fd12614a64bdcc86dbbd073e28085c91",
        "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
    },
    "only_history": {
        "dataset": ["f05002f483fc4d89a60ba468a526e838"],
        "model": "c13d89d1d4fa5e9f4296b935f372b6b8",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "only_history_demo": {
        "dataset": ["3b36e1cf498acfe49acfaae53f109cf0"],
        "model": "3bb2b819595b68a3891913f082220b68",
        "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
    },
    "only_state": {
        "dataset": ["fe55b1c0586420c1962383ca1c8a0bc6"],
        "model": "72ac3fe4f9eabac346e2def83fced6bf",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "only_state_demo": {
        "dataset": ["265ca3bb860d25feefd35ff9220a4638"],
        "model": "9704e333e93b201e2b5b52126d462378",
        "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
    },
    "starter_kit_ln": {
        "dataset": ["3392f7ef79256c3432343e8186ec4ad9"],
        "model": "aec31e7b0db620b6c8a555bce08931db",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "starter_kit_sota": {
        "dataset": ["3392f7ef79256c3432343e8186ec4ad9"],
        "model": "0f2d86623d9e4e1707c6f99ee8d9c89b",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "vit_demo": {
        "dataset": ["e91d89c880e3a5ec1ef70a9dff0c054d"],
        "model": "ef5cb7fcacc2e1992e808b9a99434f75",
        "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
    },
    "winner": {
        "dataset": [
            "1719ea479674618b93e7fca65be032c2",
            "82d6de270a4fb57173d8748dc8c9ed65",
            "5956f42ae87f7550a1ddd2bc01be5d29",
            "5aef31f5befaaf1181e844bc80dae534",
            "3e453d206a2fae7d30edc98b9e4d1b92",
        ],
        "model": "9700e20d7606fd8b0ce6f1aad87b1e77",
        "trainer": "e3c21568bad96c59dff9a4de07285967",
    },
    "winner_demo": {
        "dataset": ["e91d89c880e3a5ec1ef70a9dff0c054d"],
        "model": "83861152c2a4f870545bc397447bdf48",
        "trainer": "8cc5d9be3874c9083901cebc81ef0cba",
    },
}

#: model hashes of the ViT presets before issue 28, under the old key
#: sensorium.models.modulated_stacked_core_full_gauss_readout (with core_type: vit)
VIT_BEFORE_ISSUE_28 = {
    "beyond": "66cf6e3aad6378cbb3a70f9f5fc7ca9a",
    "vit_demo": "98671925beccd6608cb1d454bcf534a3",
}
