"""The selection rounds behind ``experiments/beyond.yaml`` (issue 12): every candidate row, trained and
scored side by side with the presets through the product comparison's machinery (``benchmarks.beyond``).

The rows of the first round are each candidate improvement alone on top of ``winner_demo`` (one model
per seed), the two presets and three ensembles (the winner preset's, the CNN with the first sweeps'
training options, ``beyond``). ``SECOND_ROUND`` holds the rows of rounds 2-8, variations on
``beyond.yaml`` as it was before round 8 (``ROUND7_BEYOND``), meant for choosing on validation only:
``--tier validation --synth-seed 0`` (the recordings the sweeps chose on); they run only when named in
``--rows``. Row and experiment names (``abl_<row>``) are those of every round in ``research/README.md``,
so a home of an earlier round is reused (not for rows on the ViT presets, whose hashes changed in issue 28).

Run:  .venv/bin/python -m research.selection --home DIR [--seeds 42,45,48] [--epochs 12] [--rows a,b]
      [--workers 2] [--synth-seed 1] [--tier test|validation] [--json]
"""

from __future__ import annotations

from benchmarks import beyond

#: readout positions started at receptive fields mapped from the training trials (free positions)
RF_MAP = ["model.config.grid_mean_predictor=null", "model.config.init_mu=rf_map"]
#: the first round's single-model rows: (experiment file, --set overrides), each alone on top of the winner
#: preset, beside the two preset rows of the product comparison
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "winner_demo": beyond.SINGLES["winner_demo"],
    "+softplus": ("winner_demo.yaml", ["model.config.output_nonlinearity=softplus"]),
    "+adamw_cosine_ema": (
        "winner_demo.yaml",
        [
            "trainer.config.optimizer=adamw",
            "trainer.config.weight_decay=0.01",
            "trainer.config.lr_schedule=cosine",
            "trainer.config.warmup_epochs=1",
            "trainer.config.ema_decay=0.9",
        ],
    ),
    "+learned_state": ("winner_demo.yaml", ["model.config.modulator_params.learned_state=true"]),
    "+exact_order": (
        "winner_demo.yaml",
        [
            "dataset.config.regressors.history.trial_order=exact",
            "dataset.config.regressors.state.trial_order=exact",
            "dataset.config.regressors.rank_order=exact",
        ],
    ),
    "+log1p_history": ("winner_demo.yaml", ["dataset.config.regressors.history.transform=log1p"]),
    "+gamma_loss": ("winner_demo.yaml", ["trainer.config.loss_function=GammaLoss"]),
    "+gabor_input": ("winner_demo.yaml", ["model.config.input_init=gabor"]),
    "+rf_map": ("winner_demo.yaml", RF_MAP),
    "+vit_core": ("vit_demo.yaml", []),
    # control: is the ViT's gain its 32 output channels (the readout's feature size) or the architecture?
    "+cnn_32_channels": ("winner_demo.yaml", ["model.config.hidden_channels=32"]),
    "+sweep_options": ("beyond_cnn_options.yaml", []),
    "beyond_single": beyond.SINGLES["beyond_single"],
}
#: second round, on top of beyond.yaml, for choosing on validation only (run with --rows and
#: --tier validation --synth-seed 0, the recordings the sweeps chose on); not in the default rows
SECOND_ROUND: dict[str, tuple[str, list[str]]] = {
    "beyond+cosine": ("beyond.yaml", ["trainer.config.lr_schedule=cosine", "trainer.config.warmup_epochs=1"]),
    "beyond+batch_32": ("beyond.yaml", ["dataset.config.batch_size=32"]),
    "beyond+softplus": ("beyond.yaml", ["model.config.output_nonlinearity=softplus"]),
    "beyond+vit_48": ("beyond.yaml", ["model.config.vit.dim=48"]),
    "beyond+lr_0.015": ("beyond.yaml", ["trainer.config.lr_init=0.015"]),
    "beyond+readout_l1_0.1": ("beyond.yaml", ["model.config.gamma_readout=0.1"]),
    "beyond+readout_l1_0.02": ("beyond.yaml", ["model.config.gamma_readout=0.02"]),
    # a population state learned from several past trials (boxcars 1, 2, 5, 10), not the lag-1 trial only
    "beyond+state_4_lags": (
        "beyond.yaml",
        [
            "model.config.modulator_params.learned_state=true",
            "model.config.modulator_params.learned_state_lags=4",
        ],
    ),
    "beyond+state_4_lags_rank_3": (
        "beyond.yaml",
        [
            "model.config.modulator_params.learned_state=true",
            "model.config.modulator_params.learned_state_lags=4",
            "model.config.modulator_params.learned_state_rank=3",
        ],
    ),
    # a convolutional stem before the ViT's patches, from noise or from a Gabor bank
    "beyond+stem_16": ("beyond.yaml", ["model.config.vit.stem_channels=16"]),
    "beyond+stem_16_gabor": (
        "beyond.yaml",
        ["model.config.vit.stem_channels=16", "model.config.vit.stem_init=gabor"],
    ),
    # the readout: narrower sampling at the start (small receptive fields), free positions (no retinotopy
    # prior), and a finer token grid
    "beyond+init_sigma_0.05": ("beyond.yaml", ["model.config.init_sigma=0.05"]),
    "beyond+free_positions": ("beyond.yaml", ["model.config.grid_mean_predictor=null"]),
    "beyond+patch_stride_2": ("beyond.yaml", ["model.config.vit.patch_stride=2"]),
    # smoother end points under the same plateau schedule: an EMA of the weights, a lower rate
    "beyond+ema_0.9": ("beyond.yaml", ["trainer.config.ema_decay=0.9"]),
    "beyond+ema_0.97": ("beyond.yaml", ["trainer.config.ema_decay=0.97"]),
    "beyond+lr_0.006": ("beyond.yaml", ["trainer.config.lr_init=0.006"]),
    # warm-up / stable / decay: lr_init held, then a linear anneal over the last 2, 3 or 4 of the 12 epochs
    # (every validation curve of the rows above still rises at epoch 12, with the plateau rate never cut)
    "beyond+wsd_2": ("beyond.yaml", ["trainer.config.lr_schedule=wsd", "trainer.config.decay_epochs=2"]),
    "beyond+wsd_3": ("beyond.yaml", ["trainer.config.lr_schedule=wsd", "trainer.config.decay_epochs=3"]),
    "beyond+wsd_4": ("beyond.yaml", ["trainer.config.lr_schedule=wsd", "trainer.config.decay_epochs=4"]),
    # a smaller transformer (data-limited image part?) and decoupled weight decay alone (no cosine)
    "beyond+vit_16": ("beyond.yaml", ["model.config.vit.dim=16"]),
    "beyond+adamw_0.05": (
        "beyond.yaml",
        ["trainer.config.optimizer=adamw", "trainer.config.weight_decay=0.05"],
    ),
    # the eye shift is worth 0.13 of the oracle's 0.63 (research.headroom), and the generator's is
    # linear in the eye position: a one-layer shifter (Linear, Tanh) instead of the 3-layer MLP
    "beyond+linear_shifter": ("beyond.yaml", ["model.config.shift_layers=1"]),
    "winner+linear_shifter": ("winner_demo.yaml", ["model.config.shift_layers=1"]),
    # fourth round: local mixing of the tokens before every block (CPVT's depthwise convolution), the
    # readout reading every block (the early, near-linear features too), a wider feed-forward part, the
    # weaker input smoothness the ViT sweep's best trials had
    "beyond+local_3": ("beyond.yaml", ["model.config.vit.local_kernel=3"]),
    "beyond+readout_all": ("beyond.yaml", ["model.config.vit.readout_blocks=all"]),
    "beyond+mlp_4": ("beyond.yaml", ["model.config.vit.mlp_ratio=4"]),
    "beyond+gamma_input_3": ("beyond.yaml", ["model.config.gamma_input=3.0"]),
    # fifth round: a full-resolution linear pathway beside the tokens (simple cells' phase)
    "beyond+pixel_16": ("beyond.yaml", ["model.config.vit.pixel_channels=16"]),
    "beyond+pixel_16_energy": (
        "beyond.yaml",
        ["model.config.vit.pixel_channels=16", "model.config.vit.pixel_energy=true"],
    ),
    "beyond+pixel_32": ("beyond.yaml", ["model.config.vit.pixel_channels=32"]),
    # the readout's training jitter (init_sigma 0.14: ~4 px in x) blurs a phase-sensitive feature
    "beyond+pixel_16_sigma_0.05": (
        "beyond.yaml",
        ["model.config.vit.pixel_channels=16", "model.config.init_sigma=0.05"],
    ),
    # sixth round: every validation curve still rises ~0.004 per epoch at epoch 12, so at this budget
    # the model that learns fastest wins: the per-neuron parts at a higher rate than the core, or one
    # optimiser step per batch instead of per round of one batch from every scan (2x the steps)
    "beyond+readout_lr_2": ("beyond.yaml", ["trainer.config.readout_lr_scale=2.0"]),
    "beyond+readout_lr_4": ("beyond.yaml", ["trainer.config.readout_lr_scale=4.0"]),
    "beyond+step_per_batch": ("beyond.yaml", ["trainer.config.loss_accum_batch_n=1"]),
    # seventh round: the readout at a higher rate was worse, so the other way round: the core faster
    # than the per-neuron parts (which stay at beyond's 0.009)
    "beyond+core_lr_2": (
        "beyond.yaml",
        ["trainer.config.lr_init=0.018", "trainer.config.readout_lr_scale=0.5"],
    ),
    "beyond+core_lr_1.5": (
        "beyond.yaml",
        ["trainer.config.lr_init=0.0135", "trainer.config.readout_lr_scale=0.6666666666666666"],
    ),
    # eighth round: the readout positions start at receptive fields mapped from the training trials
    # (init_mu rf_map; free positions, as the map replaces the grid-mean predictor's retinotopy)
    "beyond+rf_map": ("beyond.yaml", RF_MAP),
}
#: the teacher-world round (validation of synth seed 0 teacher recordings): the CNN with the receptive-field
#: start and the compressed history (the cheaper form of beyond), and cores closer to the teacher's own
#: (4 depth-separable layers of 32 / 64 channels, 9x9 then 7x7 kernels: the starter kit's SOTA core)
CNN_RF = [*RF_MAP, "dataset.config.regressors.history.transform=log1p"]
TEACHER_CORE = [
    "model.config.layers=4",
    "model.config.depth_separable=true",
    "model.config.hidden_kern=7",
]
#: the readout reads every layer of the CNN (stack: null; hidden_kern 9, since even kernels grow each
#: layer's map and cannot be stacked) and the first layer starts as a Gabor bank: chosen on the teacher
#: world's validation tier with research.upper_bounds (no database; research log, "where the gap is")
STACK = ["model.config.hidden_kern=9", "model.config.stack=null", "model.config.input_init=gabor"]
TEACHER_ROUND: dict[str, tuple[str, list[str]]] = {
    "cnn_rf": ("winner_demo.yaml", CNN_RF),
    "winner+sep_core_64": ("winner_demo.yaml", [*TEACHER_CORE, "model.config.hidden_channels=64"]),
    "cnn_rf+sep_core_32": ("winner_demo.yaml", [*CNN_RF, *TEACHER_CORE, "model.config.hidden_channels=32"]),
    "cnn_rf+sep_core_64": ("winner_demo.yaml", [*CNN_RF, *TEACHER_CORE, "model.config.hidden_channels=64"]),
    # the second teacher round's choice (beyond_cnn's member), for rerunning it through the database
    "cnn_rf+stack": ("winner_demo.yaml", [*CNN_RF, *STACK]),
}
# rounds 2-8 varied beyond.yaml as it was before round 8 adopted the receptive-field start: every such
# row starts from that config (its own overrides come after, so `beyond+rf_map` is beyond.yaml today)
ROUND7_BEYOND = [
    "model.config.init_mu=uniform",
    "model.config.grid_mean_predictor={hidden_layers: 4, hidden_features: 20, nonlinearity: ReLU}",
]
SECOND_ROUND = {row: (path, [*ROUND7_BEYOND, *sets]) for row, (path, sets) in SECOND_ROUND.items()}
SECOND_ROUND["beyond_round7"] = ("beyond.yaml", ROUND7_BEYOND)
SECOND_ROUND.update(TEACHER_ROUND)
#: the rows run without --rows: the first round and the ensembles
DEFAULT_ROWS = [*CANDIDATES]
CANDIDATES.update(SECOND_ROUND)
#: beyond_cnn's batches since the third teacher round
B32 = ["dataset.config.batch_size=32"]
#: the weight average and decay of beyond_cnn from the fourth teacher round to the sixth (AdamW, the
#: recordings' own validation counts), and the rows' form without
AVERAGE = [
    "trainer.config.ema_decay=0.97",
    "trainer.config.optimizer=adamw",
    "trainer.config.weight_decay=0.05",
    "dataset.config.split.validation_share=null",
    "model.config.hidden_kern=9",
    "model.config.rf_map_neurons=null",
]
NO_AVERAGE = [
    "trainer.config.ema_decay=null",
    "trainer.config.optimizer=adam",
    "trainer.config.weight_decay=0",
    # and the sixth teacher round's re-splits and kernels undone (its Muon is replaced by the optimizer
    # above)
    "dataset.config.split.validation_share=null",
    "model.config.hidden_kern=9",
    "model.config.rf_map_neurons=null",
]
#: every neuron of a scan mapped: beyond_cnn.yaml until the cap of 400 mapped neurons
ALL_MAPPED = ["model.config.rf_map_neurons=null"]
#: the product comparison's two ensembles and the CNN with the first sweeps' training options
ENSEMBLES: dict[str, str | tuple[str, list[str]]] = {
    "winner_ensemble": beyond.ENSEMBLES["winner_ensemble"],
    "cnn_options_ensemble": "beyond_cnn_options.yaml",
    "beyond_ensemble": beyond.ENSEMBLES["beyond_ensemble"],
    # the cheaper form of beyond: the winner's CNN (a winner epoch's cost) with the receptive-field start
    # and the compressed history, no ViT
    "cnn_rf_ensemble": ("ensemble_demo.yaml", CNN_RF),
    # equal wall time on this machine for the cnn_rf row's 12 epochs: its receptive-field map costs about
    # two winner epochs per member at demo size (benchmarks.train_throughput --scale demo --experiment
    # experiments/winner_demo.yaml --threads 1: 5.08 s/epoch; benchmarks.rf_map_cost: 4.99 s per scan)
    "winner_ensemble_equal_time": ("ensemble_demo.yaml", ["trainer.config.max_iter=14"]),
    # converged comparison: both trained until validation stops improving (the plateau schedule's
    # patience and decay steps end the run) or 60 epochs (the winner preset reaches it on Gabor recordings)
    "winner_ensemble_converged": ("ensemble_demo.yaml", ["trainer.config.max_iter=60"]),
    "cnn_rf_ensemble_converged": (
        "ensemble_demo.yaml",
        [*CNN_RF, "trainer.config.max_iter=60"],
    ),
    # beyond_cnn.yaml: the CNN reading all its layers, with the receptive-field start and the compressed
    # history. Equal time for its 12 epochs: a member costs 12 x 5.31 s + 2 x 4.56 s of map = 72.9 s, a
    # winner epoch 4.56 s, so 16 winner epochs (benchmarks.train_throughput --scale demo --threads 1 with
    # winner_demo and a beyond_cnn member; benchmarks.rf_map_cost --trials 800 --neurons 150; one run each)
    # (its first version, batches of 64; beyond_cnn.yaml has batches of 32 since the third teacher round)
    "beyond_cnn_ensemble": ("beyond_cnn.yaml", ["dataset.config.batch_size=64", *NO_AVERAGE]),
    "winner_ensemble_equal_time_beyond_cnn": ("ensemble_demo.yaml", ["trainer.config.max_iter=16"]),
    "beyond_cnn_ensemble_converged": (
        "beyond_cnn.yaml",
        ["dataset.config.batch_size=64", "trainer.config.max_iter=60", *NO_AVERAGE],
    ),
    # beyond_cnn.yaml from the third teacher round to the fourth: batches of 32 (twice the optimiser steps
    # per epoch at about the same cost per epoch on these CPUs), the third round's choice (validation of
    # synth seed 0 teacher recordings, research.upper_bounds, seeds 42 / 43: 0.534 against 0.527 with
    # batches of 64)
    "beyond_cnn_b32_ensemble": ("beyond_cnn.yaml", ["dataset.config.batch_size=32", *NO_AVERAGE]),
    # + the rate held, then decayed linearly to min_lr over the last 3 of the 12 epochs (third teacher
    # round, validation: 0.5375 against 0.534)
    "beyond_cnn_b32_wsd3_ensemble": (
        "beyond_cnn.yaml",
        [
            "dataset.config.batch_size=32",
            "trainer.config.lr_schedule=wsd",
            "trainer.config.decay_epochs=3",
            *NO_AVERAGE,
        ],
    ),
    "beyond_cnn_b32_ensemble_converged": (
        "beyond_cnn.yaml",
        ["dataset.config.batch_size=32", "trainer.config.max_iter=60", *NO_AVERAGE],
    ),
    # + an average of the weights (EMA, 0.97 per step) and AdamW's weight decay 0.05: the fourth teacher
    # round's choice (validation of synth seed 0 recordings, research.upper_bounds, seeds 42 / 43: teacher
    # 0.551 against 0.544, Gabor 0.572 against 0.563), beyond_cnn.yaml since then
    "beyond_cnn_ema_ensemble": ("beyond_cnn.yaml", [*B32, *AVERAGE]),
    # equal wall time for it: a member costs 12 x 4.54 s + 2 x 2.22 s of map = 58.9 s, a winner epoch
    # 4.57 s, so 12.9 winner epochs: 13 (2026-12-06, after the readout's faster sampling and the faster
    # map; benchmarks.train_throughput --data DIR/data --threads 1 --repeats 5 with winner_demo and
    # beyond_cnn side by side; OMP_NUM_THREADS=1 benchmarks.rf_map_cost --trials 800 --neurons 150).
    # Before them: 12 x 4.96 s + 2 x 4.60 s = 68.7 s against 4.72 s, 15 epochs
    "winner_ensemble_equal_time_beyond_cnn_ema": ("ensemble_demo.yaml", ["trainer.config.max_iter=13"]),
    "beyond_cnn_ema_ensemble_converged": ("beyond_cnn.yaml", [*B32, *AVERAGE, "trainer.config.max_iter=60"]),
    # beyond_cnn.yaml since the sixth teacher round: Muon on the core, and re-splits that validate on
    # 2.5 % of the known trials (validation of the synth seed 0 recordings, research.upper_bounds, seeds
    # 42 / 43: Muon 0.557 against 0.5545 on the teacher world, 0.577 against 0.5725 on the Gabor world;
    # the re-splits: docs/research-log.md)
    "beyond_cnn_muon_ensemble": ("beyond_cnn.yaml", ["model.config.hidden_kern=9", *ALL_MAPPED]),
    # + hidden kernels of 7 (9 before): the same validation at ~8 % less time; beyond_cnn.yaml since then
    "beyond_cnn_k7_ensemble": ("beyond_cnn.yaml", ALL_MAPPED),
    "beyond_cnn_k7_ensemble_converged": ("beyond_cnn.yaml", ["trainer.config.max_iter=60", *ALL_MAPPED]),
}
DEFAULT_ROWS += [*ENSEMBLES]
# only when named in --rows: beyond_cnn.yaml as it is, with at most 400 neurons of a scan mapped (the same
# validation on 1,200-neuron teacher recordings of synth seed 0, seeds 42 / 43: 0.5244 / 0.5271 against
# 0.5248 / 0.5267); at 150 neurons per recording the same model as beyond_cnn_k7_ensemble under another
# hash, so not among the default rows
ENSEMBLES["beyond_cnn_capped_ensemble"] = ("beyond_cnn.yaml", [])
# only when named in --rows: the winner preset at other budgets, for the equal-time rows of other
# recording sizes. On recordings of 600 neurons (--neurons 600) a member costs 12 x 5.04 s + 2 x 3.49 s of
# map = 67.5 s, a winner epoch 4.58 s, so 14.7 winner epochs: 15 (the same benchmarks on those
# recordings: train_throughput --data DIR/data, rf_map_cost --neurons 600; 2026-12-06). Before the faster
# readout and map: 12 x 6.74 s + 2 x 5.49 s = 91.9 s against 5.30 s, 17 epochs
ENSEMBLES |= {
    f"winner_ensemble_{epochs}_epochs": ("ensemble_demo.yaml", [f"trainer.config.max_iter={epochs}"])
    for epochs in range(13, 19)
}


def main(argv: list[str] | None = None) -> None:
    beyond.compare(argv, CANDIDATES, ENSEMBLES, DEFAULT_ROWS, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
