"""HistoryStateGain modulator (docs/model.md#modulator) and the modulated model builder."""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
from torch.overrides import TorchFunctionMode

from pipeline.configs import ModulatedModelConfig, ModulatorParams
from pipeline.models import (
    HistoryStateGainModulator,
    ModulatedFiringRateEncoder,
    ScanGeometry,
    modulated_stacked_core_full_gauss_readout,
    stacked_core_full_gauss_readout,
)

N, T, L, S = 5, 300, 5, 10
H, W = 36, 64
C_IN = 4
REPO = Path(__file__).resolve().parents[2]
NEW_FILES = [
    REPO / "pipeline" / "models" / "modulator.py",
    REPO / "pipeline" / "models" / "modulated.py",
    Path(__file__).resolve(),
]
ALL_PARAMS = {
    "history_weights",
    "history_bias",
    "state_encoder.weight",
    "state_encoder.bias",
    "own_gain",
    "gain_adjust",
    "gain_adjust_offset",
}


def make_modulator(n=N, t=T, seed=0, randomise=True, **overrides) -> HistoryStateGainModulator:
    params = ModulatorParams(**{"nr_history": L, "nr_behav_state": S, **overrides})
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the float64 kernel is built exactly, not rounded via float32
    try:
        mod = HistoryStateGainModulator(n, t, params)
    finally:
        torch.set_default_dtype(previous)
    if randomise:  # larger values than the init so every term matters
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            if mod.include_gain:
                mod.own_gain.copy_(torch.randn(t, generator=g, dtype=torch.float64))
            if mod.per_neuron_gain_adjust:
                mod.gain_adjust.copy_(torch.randn(n, generator=g, dtype=torch.float64))
                mod.gain_adjust_offset.fill_(0.3)
    return mod


def inputs(b=8, n=N, ranks=None, seed=2):
    g = torch.Generator().manual_seed(seed)
    drive = torch.randn(b, n, generator=g, dtype=torch.float64)
    history = torch.rand(b, n, L, generator=g, dtype=torch.float64) * 2
    state = torch.rand(b, S, generator=g, dtype=torch.float64) * 2
    if ranks is None:
        ranks = [0, 1, 3, 57, 100, 101, 180, T - 1][:b]
    rank = torch.tensor(ranks, dtype=torch.long)
    return drive, history, state, rank


def elu(x: float) -> float:
    return x if x > 0 else math.exp(x) - 1.0


def reference(mod: HistoryStateGainModulator, drive, history, state, rank) -> np.ndarray:
    """Term by term with Python loops (docs/model.md#modulator)."""
    p = mod.params
    sigma = p.gain_kernel_std
    norm = sum(math.exp(-(d**2) / (2 * sigma**2)) for d in range(101))
    kappa = [math.exp(-(d**2) / (2 * sigma**2)) / norm for d in range(101)]
    P = {k: v.detach().numpy() for k, v in mod.named_parameters()}
    B, n_neurons = drive.shape
    out = np.zeros((B, n_neurons))
    for b in range(B):
        rho = int(rank[b])
        if mod.include_gain:
            gamma = P["own_gain"]
            g_raw = sum(kappa[d] * float(gamma[rho - d]) for d in range(min(100, rho) + 1))
            G = elu(g_raw) + 1.0
        for n in range(n_neurons):
            x = float(drive[b, n])
            if mod.include_history:
                x += sum(float(P["history_weights"][n, k]) * float(history[b, n, k]) for k in range(L))
                x += float(P["history_bias"][n])
            if mod.behav_state:
                z = sum(float(P["state_encoder.weight"][n, j]) * float(state[b, j]) for j in range(S))
                x += elu(z + float(P["state_encoder.bias"][n]))
            f = elu(x) + 1.0
            if mod.include_gain:
                if mod.per_neuron_gain_adjust:
                    c = elu(float(P["gain_adjust"][n]) + float(P["gain_adjust_offset"])) + 1.0
                    Gn = elu(c * (G - 1.0)) + 1.0
                else:
                    Gn = G
                f = Gn * f
            out[b, n] = f
    return out


# ---------------------------------------------------------------------------------------------------
# (a) forward against the loop reference
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"per_neuron_gain_adjust": False},
        {"include_history": False},
        {"behav_state": False},
        {"include_gain": False},
        {"gain_kernel_std": 5.0},
    ],
)
def test_forward_matches_loop_reference(flags):
    mod = make_modulator(**flags)
    drive, history, state, rank = inputs()
    out = mod(drive, history, state, rank)
    assert out.shape == (8, N) and out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), reference(mod, drive, history, state, rank), rtol=1e-12)
    assert torch.all(out > 0)


def test_gain_truncated_at_session_start_not_renormalised():
    mod = make_modulator()
    with torch.no_grad():
        mod.own_gain.fill_(0.5)
    kappa = mod.gain_kernel
    rank = torch.tensor([0, 1, 10, 100, 200])
    G = mod.smoothed_gain(rank).detach()
    expected = [0.5 * float(kappa[: min(100, r) + 1].sum()) + 1.0 for r in rank.tolist()]
    np.testing.assert_allclose(G.detach().numpy(), expected, rtol=1e-12)
    assert float(G[3]) == pytest.approx(1.5) and float(G[0]) < float(G[1]) < float(G[2]) < 1.5


def test_gain_is_causal():
    """Changing gamma after rank rho, or more than 100 ranks before it, leaves G(rho) unchanged."""
    mod = make_modulator()
    rank = torch.tensor([150])
    before = mod.smoothed_gain(rank)
    with torch.no_grad():
        mod.own_gain[151:] += 3.0
        mod.own_gain[:50] -= 3.0
    torch.testing.assert_close(mod.smoothed_gain(rank), before, rtol=0, atol=0)
    with torch.no_grad():
        mod.own_gain[50] += 1.0
    assert not torch.equal(mod.smoothed_gain(rank), before)


# ---------------------------------------------------------------------------------------------------
# (b) regulariser
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [{}, {"include_gain": False}, {"per_neuron_gain_adjust": False}])
def test_regulariser_matches_hand_formula(flags):
    p = {"diff_reg": 100.0, "gain_adjust_alpha": 0.3, "alpha_hist": 0.2, "alpha_behav": 0.7, **flags}
    mod = make_modulator(**p)
    P = {k: v.detach().numpy() for k, v in mod.named_parameters()}
    expected = 0.0
    if mod.include_gain:
        gamma = mod.own_gain.detach().tolist()
        expected += 100.0 * sum((gamma[t + 1] - gamma[t]) ** 2 for t in range(T - 1))
        if mod.per_neuron_gain_adjust:
            expected += 0.3 * sum(abs(v) for v in mod.gain_adjust.detach().tolist())
    expected += 0.2 * sum(abs(float(P["history_weights"][n, k])) for n in range(N) for k in range(L))
    expected += 0.7 * sum(abs(float(P["state_encoder.weight"][n, j])) for n in range(N) for j in range(S))
    reg = mod.regularizer().detach()
    assert reg.dim() == 0
    assert float(reg) == pytest.approx(expected, rel=1e-12)


def test_regulariser_ignores_biases_and_offset():
    mod = make_modulator()
    before = float(mod.regularizer().detach())
    with torch.no_grad():
        mod.history_bias.add_(5.0)
        mod.state_encoder.bias.add_(5.0)
        mod.gain_adjust_offset.add_(5.0)
    assert float(mod.regularizer().detach()) == pytest.approx(before, rel=1e-14)


def test_regulariser_without_components_is_zero():
    mod = make_modulator(include_gain=False, include_history=False, behav_state=False)
    assert float(mod.regularizer().detach()) == 0.0


# ---------------------------------------------------------------------------------------------------
# (c) gain kernel buffer
# ---------------------------------------------------------------------------------------------------


def test_gain_kernel_is_normalised_causal_half_gaussian_buffer():
    mod = make_modulator(randomise=False)
    assert "gain_kernel" in mod.state_dict()
    assert "gain_kernel" not in dict(mod.named_parameters())
    k = mod.gain_kernel
    assert k.shape == (101,)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    assert int(k.argmax()) == 0 and torch.all(k[1:] < k[:-1])
    # the original construction: second half of a 201-tap Gaussian window, first half zeroed, normalised
    window = scipy.signal.windows.gaussian(201, std=30.0)[100:]
    np.testing.assert_allclose(k.numpy(), window / window.sum(), rtol=1e-12)
    assert mod.float().gain_kernel.dtype == torch.float32  # follows dtype moves


# ---------------------------------------------------------------------------------------------------
# (d) zero gain
# ---------------------------------------------------------------------------------------------------


def test_zero_gamma_gives_unit_gain_and_coupling_irrelevant():
    mod = make_modulator()
    with torch.no_grad():
        mod.own_gain.zero_()
    drive, history, state, rank = inputs()
    torch.testing.assert_close(mod.smoothed_gain(rank), torch.ones(8, dtype=torch.float64))
    out = mod(drive, history, state, rank)
    without_gain = make_modulator(include_gain=False)
    without_gain.load_state_dict(
        {k: v for k, v in mod.state_dict().items() if k in without_gain.state_dict()}, strict=True
    )
    torch.testing.assert_close(out, without_gain(drive, history, state, None))
    with torch.no_grad():
        mod.gain_adjust.mul_(-7.0)
        mod.gain_adjust_offset.fill_(2.0)
    torch.testing.assert_close(mod(drive, history, state, rank), out)


# ---------------------------------------------------------------------------------------------------
# (e) vectorised, no fixed device
# ---------------------------------------------------------------------------------------------------


class _CountTorchCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _large_inputs(b: int, n: int, t: int):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, n, generator=g),
        torch.rand(b, n, L, generator=g),
        torch.rand(b, S, generator=g),
        torch.randint(0, t, (b,), generator=g),
    )


def test_large_batch_is_vectorised():
    for fn in (HistoryStateGainModulator.forward, HistoryStateGainModulator._smoothed_gain):
        assert "for " not in inspect.getsource(fn)
    mod = make_modulator(n=200, t=6000, randomise=False).float()
    calls = []
    for b in (4, 512):  # the number of torch calls does not grow with the batch
        with _CountTorchCalls() as counter:
            mod(*_large_inputs(b, 200, 6000))
        calls.append(counter.calls)
    assert calls[0] == calls[1]
    args = _large_inputs(512, 200, 6000)
    start = time.perf_counter()
    mod(*args).sum().backward()
    assert (
        time.perf_counter() - start < 3.0
    )  # generous: a loop over 512 trials x 101 taps would be far slower


def test_no_hard_coded_device_in_new_files():
    needle = "cu" + "da"
    for path in NEW_FILES:
        assert needle not in path.read_text().lower(), path


# ---------------------------------------------------------------------------------------------------
# (f) component flags and input checks
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "absent"),
    [
        ({"include_history": False}, {"history_weights", "history_bias"}),
        ({"behav_state": False}, {"state_encoder.weight", "state_encoder.bias"}),
        ({"include_gain": False}, {"own_gain", "gain_adjust", "gain_adjust_offset"}),
        ({"per_neuron_gain_adjust": False}, {"gain_adjust", "gain_adjust_offset"}),
        (
            {"include_history": False, "behav_state": False, "include_gain": False},
            ALL_PARAMS,
        ),
    ],
)
def test_flags_remove_parameters_and_inputs(flags, absent):
    mod = make_modulator(**flags)
    assert set(dict(mod.named_parameters())) == ALL_PARAMS - absent
    assert ("gain_kernel" in mod.state_dict()) == mod.include_gain
    drive, history, state, rank = inputs()
    out = mod(
        drive,
        None if "history_weights" in absent else history,
        None if "state_encoder.weight" in absent else state,
        None if "own_gain" in absent else rank,
    )
    np.testing.assert_allclose(out.detach().numpy(), reference(mod, drive, history, state, rank), rtol=1e-12)


def test_all_components_off_is_elu_plus_one():
    mod = make_modulator(include_history=False, behav_state=False, include_gain=False)
    drive = inputs()[0]
    torch.testing.assert_close(mod(drive), torch.nn.functional.elu(drive) + 1)


def test_gain_without_n_trials_is_an_error():
    with pytest.raises(ValueError, match="n_trials"):
        HistoryStateGainModulator(N, None, ModulatorParams())
    HistoryStateGainModulator(N, None, ModulatorParams(include_gain=False))


def test_missing_or_malformed_inputs_raise():
    mod = make_modulator()
    drive, history, state, rank = inputs()
    with pytest.raises(ValueError, match="history"):
        mod(drive, None, state, rank)
    with pytest.raises(ValueError, match="'state'"):
        mod(drive, history, None, rank)
    with pytest.raises(ValueError, match="rank_id"):
        mod(drive, history, state, None)
    with pytest.raises(ValueError, match="nr_history"):
        mod(drive, history[..., :3], state, rank)
    with pytest.raises(ValueError, match="nr_behav_state"):
        mod(drive, history, state[:, :4], rank)
    with pytest.raises(ValueError, match="out of range"):
        mod(drive, history, state, torch.full((8,), T))
    with pytest.raises(ValueError, match="out of range"):
        mod(drive, history, state, torch.full((8,), -1))
    with pytest.raises(ValueError, match="integer"):
        mod(drive, history, state, rank.double())
    with pytest.raises(ValueError, match="drive"):
        mod(drive[:, :3], history, state, rank)
    # (B, 1) ranks, as stored on disk, are accepted
    torch.testing.assert_close(mod(drive, history, state, rank[:, None]), mod(drive, history, state, rank))


# ---------------------------------------------------------------------------------------------------
# (g) the modulated model and its builder
# ---------------------------------------------------------------------------------------------------


def scans_of(*sizes: int, n_trials=(40, 60), seed: int = 0) -> dict[str, ScanGeometry]:
    rng = np.random.default_rng(seed)
    return {
        f"s{i + 1}": ScanGeometry(n, rng.normal(size=(n, 2)) * 100.0, n_trials=t)
        for i, (n, t) in enumerate(zip(sizes, n_trials, strict=False))
    }


def small_cfg(**overrides) -> ModulatedModelConfig:
    return ModulatedModelConfig(**{"hidden_channels": 8, **overrides})


def build_modulated(cfg=None, scans=None, seed=0) -> ModulatedFiringRateEncoder:
    return modulated_stacked_core_full_gauss_readout(
        cfg or small_cfg(), scans or scans_of(7, 9), input_channels=C_IN, image_size=(H, W), seed=seed
    )


def batch_dict(key: str, n: int, n_trials: int, b: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(b, C_IN, H, W, generator=g),
        "responses": torch.rand(b, n, generator=g),
        "pupil_center": torch.randn(b, 2, generator=g),
        "behavior": torch.randn(b, 3, generator=g),
        "trial_id": torch.arange(b),
        "history": torch.rand(b, n, 5, generator=g),
        "state": torch.rand(b, 10, generator=g),
        "rank_id": torch.randint(0, n_trials, (b,), generator=g),
    }


def test_builder_keeps_baseline_init_and_adds_modulator_keys():
    cfg, scans = small_cfg(), scans_of(7, 9)
    model = build_modulated(cfg, scans, seed=3)
    baseline = stacked_core_full_gauss_readout(cfg, scans, input_channels=C_IN, image_size=(H, W), seed=3)
    base_sd, sd = baseline.state_dict(), model.state_dict()
    extra = [k for k in sd if k not in base_sd]
    assert list(sd) == list(base_sd) + extra
    assert extra and all(k.startswith(("modulator.s1.", "modulator.s2.")) for k in extra)
    assert {k.split(".", 2)[2] for k in extra} == ALL_PARAMS | {"gain_kernel"}
    assert all(torch.equal(sd[k], base_sd[k]) for k in base_sd)
    # the same with a plain baseline config carrying the same baseline fields
    plain_cfg = cfg.model_dump(exclude={"with_modulator", "modulator_type", "modulator_params"})
    from pipeline.configs import BaselineModelConfig

    plain = stacked_core_full_gauss_readout(
        BaselineModelConfig(**plain_cfg), scans, input_channels=C_IN, image_size=(H, W), seed=3
    ).state_dict()
    assert all(torch.equal(sd[k], plain[k]) for k in plain)
    assert sd["modulator.s2.own_gain"].shape == (60,)
    assert sd["modulator.s1.history_weights"].shape == (7, 5)
    assert sd["modulator.s2.state_encoder.weight"].shape == (9, 10)


def test_builder_seeds_modulators():
    a, b, c = (build_modulated(seed=s).state_dict() for s in (1, 1, 2))
    mod_keys = [k for k in a if k.startswith("modulator.")]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["modulator.s1.own_gain"], c["modulator.s1.own_gain"])
    assert not torch.equal(a["modulator.s1.history_weights"], a["modulator.s2.history_weights"][:7])
    assert mod_keys


def test_builder_needs_n_trials_only_for_the_gain():
    scans = {"s1": ScanGeometry(7, np.zeros((7, 2)))}
    with pytest.raises(ValueError, match="n_trials"):
        build_modulated(scans=scans)
    params = ModulatorParams(include_gain=False)
    model = build_modulated(small_cfg(modulator_params=params), scans=scans)
    assert "modulator.s1.history_weights" in model.state_dict()
    assert len(build_modulated(small_cfg(with_modulator=False), scans=scans).modulator) == 0


def test_forward_on_batch_dict_replaces_elu_and_gradients_reach_modulator():
    model = build_modulated(small_cfg(elu_offset=-1.0)).train()
    for key, n, t in (("s1", 7, 40), ("s2", 9, 60)):
        batch = batch_dict(key, n, t)
        model.zero_grad()
        out = model(data_key=key, **batch)
        assert out.shape == (4, n) and torch.all(out > 0)
        (out.sum() + model.regularizer(key)).backward()
        for name, p in model.modulator[key].named_parameters():
            assert p.grad is not None and torch.any(p.grad != 0), name
        other = "s2" if key == "s1" else "s1"
        assert all(p.grad is None for p in model.modulator[other].parameters())
    model.eval()
    batch = batch_dict("s1", 7, 40)
    drive = model.readout_drive(batch["images"], "s1", batch["pupil_center"])
    expected = model.modulator["s1"](drive, batch["history"], batch["state"], batch["rank_id"])
    torch.testing.assert_close(model(data_key="s1", **batch), expected)  # elu_offset unused


def test_regularizer_adds_modulator_penalty():
    model = build_modulated()
    base = super(ModulatedFiringRateEncoder, model).regularizer("s1")
    torch.testing.assert_close(model.regularizer("s1"), base + model.modulator["s1"].regularizer())


def test_without_modulator_equals_baseline():
    scans = scans_of(7, 9)
    model = build_modulated(small_cfg(with_modulator=False), scans, seed=4).eval()
    baseline = stacked_core_full_gauss_readout(
        small_cfg(), scans, input_channels=C_IN, image_size=(H, W), seed=4
    ).eval()
    batch = batch_dict("s1", 7, 40)
    torch.testing.assert_close(model(data_key="s1", **batch), baseline(data_key="s1", **batch))
    assert list(model.state_dict()) == list(baseline.state_dict())


def test_modulated_model_follows_dtype_moves():
    model = build_modulated().to(torch.float64).train()
    batch = batch_dict("s2", 9, 60)
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    out = model(data_key="s2", **batch)
    assert out.dtype == torch.float64
    assert model.modulator["s2"].gain_kernel.dtype == torch.float64
    assert model.regularizer("s2").dtype == torch.float64
