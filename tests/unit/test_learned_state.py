"""The learned network state of the modulator (issue 12): off by default, starts neutral, learns."""

from __future__ import annotations

import pytest
import torch

from pipeline.configs import ConfigError, ModulatorParams, canonical_json, validate
from pipeline.models import HistoryStateGainModulator

N, T, L = 12, 40, 5


def _inputs(b: int = 6):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, N, generator=g),
        torch.rand(b, N, L, generator=g),
        torch.rand(b, 10, generator=g),
        torch.randint(0, T, (b,), generator=g),
    )


def test_off_by_default_and_stored_params_keep_their_form():
    plain = ModulatorParams()
    assert "learned_state" not in canonical_json(plain)
    keys = set(HistoryStateGainModulator(N, T, plain).state_dict())
    assert not any(k.startswith("state_in") or k.startswith("state_out") for k in keys)
    with pytest.raises(ConfigError, match="learned_state_lags"):
        validate(ModulatorParams, {"learned_state": True, "learned_state_lags": 6}, "modulator_params")


def test_starts_as_the_model_without_it_then_learns_from_the_population_history():
    torch.manual_seed(1)
    plain = HistoryStateGainModulator(N, T, ModulatorParams())
    torch.manual_seed(1)
    learned = HistoryStateGainModulator(N, T, ModulatorParams(learned_state=True, learned_state_rank=3))
    for k, v in plain.state_dict().items():  # created last: the other parameters keep their draws
        assert torch.equal(v, learned.state_dict()[k]), k
    drive, history, state, rank = _inputs()
    assert torch.equal(plain(drive, history, state, rank), learned(drive, history, state, rank))
    assert learned.state_in.weight.shape == (3, N * 2) and learned.state_out.weight.shape == (N, 3)

    # a target driven by another neuron's previous response: only the cross-neuron map can fit it
    target_gen = torch.Generator().manual_seed(2)
    history = torch.rand(256, N, L, generator=target_gen)
    drive = torch.zeros(256, N)
    target = torch.exp(2.0 * history[:, [1] * N, 0])  # every neuron follows neuron 1's last trial
    only_own = HistoryStateGainModulator(
        N, T, ModulatorParams(include_gain=False, behav_state=False, alpha_hist=0)
    )
    with_state = HistoryStateGainModulator(
        N, T, ModulatorParams(include_gain=False, behav_state=False, alpha_hist=0, learned_state=True)
    )
    losses = {}
    for name, m in {"own": only_own, "learned": with_state}.items():
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            pred = m(drive, history)
            loss = (pred - target * torch.log(pred + 1e-8)).mean()
            loss.backward()
            opt.step()
        losses[name] = float(loss)
    assert losses["learned"] < losses["own"] - 0.05, losses


def test_regulariser_weights_the_input_map():
    params = ModulatorParams(include_gain=False, include_history=False, behav_state=False, learned_state=True)
    m = HistoryStateGainModulator(N, T, params.model_copy(update={"alpha_learned_state": 0.5}))
    assert float(m.regularizer()) == pytest.approx(0.5 * float(m.state_in.weight.pow(2).sum()))
    drive, history, _, _ = _inputs()
    assert m(drive, history).shape == (6, N)
    with pytest.raises(ValueError, match="no 'history'"):
        m(drive)
