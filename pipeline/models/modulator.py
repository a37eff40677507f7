"""The ``HistoryStateGain`` modulator of the SENSORIUM+ 2022 winning model (see docs/model.md#modulator).

The modulator replaces the baseline's output nonlinearity ``ELU(drive) + 1``. For neuron n in trial b with
time rank rho_b:

    h_bn = sum_k history_weights[n, k] * history[b, n, k] + history_bias[n]      (history term)
    s_bn = ELU(state_encoder(state[b]))[n]                                        (network-state term)
    l_bn = (state_out(state_in(history[b, :, :lags].flatten())))[n]               (learned state, optional)
    f_bn = ELU(drive_bn + h_bn + s_bn) + 1                                        (positive rate)
    G(rho) = ELU(sum_{d=0}^{min(100, rho)} gain_kernel[d] * own_gain[rho - d]) + 1  (smooth shared gain)
    c_n = ELU(gain_adjust[n] + gain_adjust_offset) + 1                            (per-neuron coupling)
    G_n(rho) = ELU(c_n * (G(rho) - 1)) + 1
    y_bn = G_n(rho_b) * f_bn

Unlike the original implementation the gain is gathered for the whole batch at once (no Python loop over
trials, no fixed device) and ``gain_kernel`` is a registered buffer (see docs/model.md#fix-modulator).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.configs import ModulatorParams

from .encoder import Core, FiringRateEncoder
from .readout import MultipleFullGaussian2d
from .shifter import MLPShifter

#: The gain kernel covers the current trial and this many preceding trials (the causal half of a 201-tap
#: Gaussian window).
GAIN_KERNEL_HALF_WIDTH = 100


def causal_gaussian_kernel(std: float, half_width: int = GAIN_KERNEL_HALF_WIDTH) -> torch.Tensor:
    """kappa_d = exp(-d^2 / (2 std^2)) / sum_{d'=0}^{half_width} exp(-d'^2 / (2 std^2)), d = 0..half_width.

    Float64, shape (half_width + 1,); kappa_0 (the current trial) is the largest tap.
    """
    if std <= 0:
        raise ValueError(f"gain_kernel_std must be > 0, got {std}")
    d = torch.arange(half_width + 1, dtype=torch.float64)
    w = torch.exp(-(d**2) / (2.0 * float(std) ** 2))
    return w / w.sum()


class HistoryStateGainModulator(nn.Module):
    """Per-scan modulator: history filter + network-state encoder + smooth learned gain over trial rank.

    Learned parameters (present only when their component is enabled in ``params``):

    - ``history_weights`` (N, nr_history): H, per-neuron linear filter over the history features
      (``include_history``), init U(+-sqrt(1/nr_history)).
    - ``history_bias`` (N,): beta, per-neuron offset of the history term, same init.
    - ``state_encoder`` (``nn.Linear(nr_behav_state, N)``, default init): A and a of the state term
      (``behav_state``).
    - ``own_gain`` (n_trials,): gamma, one raw gain value per time rank, init U(+-sqrt(1/n_trials))
      (``include_gain``).
    - ``gain_adjust`` (N,): theta, per-neuron coupling to the shared gain, init U(+-sqrt(1/N))
      (``include_gain`` and ``per_neuron_gain_adjust``).
    - ``gain_adjust_offset`` (scalar): theta_0, offset shared by all neurons' couplings, init 0.

    - ``state_in`` (``nn.Linear(N * learned_state_lags, r, bias=False)``, default init) and ``state_out``
      (``nn.Linear(r, N)``, zero init, so the model starts as without it): the learned state
      (``learned_state``), created after everything else so that the other parameters keep their draws.

    Buffer: ``gain_kernel`` (101,), the causal half-Gaussian of :func:`causal_gaussian_kernel`
    (``include_gain``).
    """

    gain_kernel: torch.Tensor  # the buffer, registered with the learned gain

    def __init__(self, n_neurons: int, n_trials: int | None, params: ModulatorParams) -> None:
        super().__init__()
        if n_neurons <= 0:
            raise ValueError(f"n_neurons must be > 0, got {n_neurons}")
        self.n_neurons = int(n_neurons)
        self.params = params
        self.include_history = bool(params.include_history)
        self.behav_state = bool(params.behav_state)
        self.include_gain = bool(params.include_gain)
        self.per_neuron_gain_adjust = self.include_gain and bool(params.per_neuron_gain_adjust)
        self.nr_history = int(params.nr_history)
        self.nr_behav_state = int(params.nr_behav_state)
        self.n_trials = None if n_trials is None else int(n_trials)

        if self.include_history:
            bound = math.sqrt(1.0 / self.nr_history)
            self.history_weights = nn.Parameter(torch.empty(self.n_neurons, self.nr_history))
            self.history_bias = nn.Parameter(torch.empty(self.n_neurons))
            nn.init.uniform_(self.history_weights, -bound, bound)
            nn.init.uniform_(self.history_bias, -bound, bound)

        if self.behav_state:
            self.state_encoder = nn.Linear(self.nr_behav_state, self.n_neurons)

        if self.include_gain:
            if self.n_trials is None or self.n_trials <= 0:
                raise ValueError(f"the learned gain needs n_trials > 0 (trials of the scan), got {n_trials}")
            self.own_gain = nn.Parameter(torch.empty(self.n_trials))
            bound = math.sqrt(1.0 / self.n_trials)
            nn.init.uniform_(self.own_gain, -bound, bound)
            kernel = causal_gaussian_kernel(params.gain_kernel_std).to(torch.get_default_dtype())
            self.register_buffer("gain_kernel", kernel)
            if self.per_neuron_gain_adjust:
                self.gain_adjust = nn.Parameter(torch.empty(self.n_neurons))
                bound = math.sqrt(1.0 / self.n_neurons)
                nn.init.uniform_(self.gain_adjust, -bound, bound)
                self.gain_adjust_offset = nn.Parameter(torch.zeros(()))

        self.learned_state = bool(getattr(params, "learned_state", False))
        if self.learned_state:
            self.learned_state_lags = int(params.learned_state_lags)
            self.state_in = nn.Linear(
                self.n_neurons * self.learned_state_lags, params.learned_state_rank, bias=False
            )
            self.state_out = nn.Linear(params.learned_state_rank, self.n_neurons)
            nn.init.zeros_(self.state_out.weight)
            nn.init.zeros_(self.state_out.bias)

    def extra_repr(self) -> str:
        return (
            f"n_neurons={self.n_neurons}, n_trials={self.n_trials}, history={self.include_history}, "
            f"state={self.behav_state}, gain={self.include_gain}, "
            f"per_neuron_gain_adjust={self.per_neuron_gain_adjust}"
        )

    # ------------------------------------------------------------------------------------------------
    # gain
    # ------------------------------------------------------------------------------------------------

    def _check_rank(self, rank: torch.Tensor | None, batch_size: int | None) -> torch.Tensor:
        if rank is None:
            raise ValueError("the modulator uses the learned gain but the batch has no 'rank_id'")
        if rank.dim() == 2 and rank.shape[1] == 1:  # (B, 1) as stored in merged_data/rank_id.npy
            rank = rank[:, 0]
        if rank.dim() != 1 or rank.shape[0] != batch_size:
            raise ValueError(f"rank_id must have shape [{batch_size}], got {tuple(rank.shape)}")
        if rank.dtype.is_floating_point or rank.dtype == torch.bool or rank.dtype.is_complex:
            raise ValueError(f"rank_id must be an integer tensor, got {rank.dtype}")
        n_trials = self.n_trials
        assert n_trials is not None, "a modulator with the learned gain has n_trials (__init__)"
        if rank.numel() and bool(((rank < 0) | (rank >= n_trials)).any()):
            raise ValueError(
                f"rank_id out of range: values in [{int(rank.min())}, {int(rank.max())}] but the gain "
                f"covers ranks 0..{n_trials - 1}"
            )
        return rank.long()

    def smoothed_gain(self, rank: torch.Tensor) -> torch.Tensor:
        """G(rho) = ELU(g_raw(rho)) + 1, [B], for integer time ranks ``rank`` [B].

        g_raw(rho) = sum_{d=0}^{min(100, rho)} kappa_d * gamma[rho - d]: terms before the session start are
        dropped (not renormalised). Vectorised as one gather of gamma at rho - d for all (b, d).
        """
        if not self.include_gain:
            raise RuntimeError("this modulator has no learned gain (include_gain=False)")
        rank = self._check_rank(rank, None if rank is None else rank.shape[0])
        return self._smoothed_gain(rank)

    def _smoothed_gain(self, rank: torch.Tensor) -> torch.Tensor:
        lags = torch.arange(self.gain_kernel.shape[0], device=rank.device)
        idx = rank[:, None] - lags[None, :]  # [B, 101]
        valid = idx >= 0
        vals = self.own_gain[idx.clamp(min=0)] * valid.to(self.own_gain.dtype)
        g_raw = (vals * self.gain_kernel).sum(dim=-1)
        return F.elu(g_raw) + 1.0

    def _neuron_gain(self, rank: torch.Tensor) -> torch.Tensor:
        """G_n(rho_b), [B, N] (or [B, 1] without the per-neuron coupling), for checked ranks [B]."""
        g = self._smoothed_gain(rank)[:, None]
        if not self.per_neuron_gain_adjust:
            return g
        coupling = F.elu(self.gain_adjust + self.gain_adjust_offset) + 1.0  # [N]
        return F.elu(coupling * (g - 1.0)) + 1.0

    # ------------------------------------------------------------------------------------------------
    # forward / regulariser
    # ------------------------------------------------------------------------------------------------

    def forward(
        self,
        drive: torch.Tensor,
        history: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        rank: torch.Tensor | None = None,
        nonlinearity: nn.Module | None = None,
    ) -> torch.Tensor:
        """Positive rates [B, N] from the readout drive [B, N].

        Args:
            drive: pre-nonlinearity readout output.
            history: [B, N, nr_history] history features (needed when ``include_history``).
            state: [B, nr_behav_state] network-state features (needed when ``behav_state``).
            rank: [B] integer time rank of each trial within the scan (needed when ``include_gain``).
            nonlinearity: applied to the modulated drive (default ELU + 1, the winner's; the encoder passes
                its own, so ``output_nonlinearity: softplus`` reaches modulated models too).
        Inputs of disabled components are ignored.
        """
        if drive.dim() != 2 or drive.shape[1] != self.n_neurons:
            raise ValueError(f"drive must have shape [B, {self.n_neurons}], got {tuple(drive.shape)}")
        B = drive.shape[0]
        x = drive
        if self.include_history or self.learned_state:
            if history is None:
                raise ValueError("the modulator uses history but the batch has no 'history'")
            if history.shape != (B, self.n_neurons, self.nr_history):
                raise ValueError(
                    f"history must have shape [{B}, {self.n_neurons}, nr_history={self.nr_history}], "
                    f"got {tuple(history.shape)}"
                )
            history = history.to(drive.dtype)
        if self.include_history:
            assert history is not None  # checked above
            x = x + (history * self.history_weights).sum(dim=-1) + self.history_bias
        if self.learned_state:
            assert history is not None  # checked above
            recent = history[:, :, : self.learned_state_lags].reshape(B, -1)  # [B, N * lags]
            x = x + self.state_out(self.state_in(recent))
        if self.behav_state:
            if state is None:
                raise ValueError("the modulator uses the network state but the batch has no 'state'")
            if state.shape != (B, self.nr_behav_state):
                raise ValueError(
                    f"state must have shape [{B}, nr_behav_state={self.nr_behav_state}], "
                    f"got {tuple(state.shape)}"
                )
            x = x + F.elu(self.state_encoder(state.to(drive.dtype)))
        rates = F.elu(x) + 1.0 if nonlinearity is None else nonlinearity(x)
        if self.include_gain:
            rates = self._neuron_gain(self._check_rank(rank, B)) * rates
        return rates

    def regularizer(self) -> torch.Tensor:
        """diff_reg * sum_t (gamma_{t+1} - gamma_t)^2 + gain_adjust_alpha * sum |theta|
        + alpha_hist * sum |H| + alpha_behav * sum |state_encoder.weight| (enabled components only)."""
        p = self.params
        terms = []
        if self.include_gain:
            terms.append(p.diff_reg * self.own_gain.diff().pow(2).sum())
            if self.per_neuron_gain_adjust:
                terms.append(p.gain_adjust_alpha * self.gain_adjust.abs().sum())
        if self.include_history:
            terms.append(p.alpha_hist * self.history_weights.abs().sum())
        if self.behav_state:
            terms.append(p.alpha_behav * self.state_encoder.weight.abs().sum())
        if self.learned_state and p.alpha_learned_state:
            terms.append(p.alpha_learned_state * self.state_in.weight.pow(2).sum())
        if not terms:
            return torch.zeros(())  # a 0-dim tensor adds to a tensor on any device
        return torch.stack(terms).sum()


class ModulatedFiringRateEncoder(FiringRateEncoder):
    """The baseline encoder whose output nonlinearity is replaced, per scan, by a modulator.

    ``modulator`` is an ``nn.ModuleDict`` keyed by data_key; scans without an entry keep the baseline output
    f(drive + elu_offset) (f: ELU + 1 or the configured nonlinearity). With a modulator ``elu_offset`` is
    unused.
    """

    def __init__(
        self,
        core: Core,
        readout: MultipleFullGaussian2d,
        shifter: MLPShifter | None = None,
        elu_offset: float = 0.0,
        modulator: Mapping[str, HistoryStateGainModulator] | None = None,
        nonlinearity: nn.Module | None = None,
    ) -> None:
        super().__init__(core, readout, shifter=shifter, elu_offset=elu_offset, nonlinearity=nonlinearity)
        self.modulator = nn.ModuleDict(dict(modulator or {}))

    def forward(
        self,
        images: torch.Tensor,
        data_key: str,
        pupil_center: torch.Tensor | None = None,
        detach_core: bool = False,
        *,
        history: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        rank_id: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Predicted rates [B, N]; other batch fields (responses, behavior, trial_id, ...) are ignored."""
        drive = self.readout_drive(images, data_key, pupil_center, detach_core)
        if data_key in self.modulator:
            return self.modulator[data_key](drive, history, state, rank_id, nonlinearity=self.nonlinearity)
        return self.output_nonlinearity(drive)

    def regularizer(self, data_key: str, detach_core: bool = False) -> torch.Tensor:
        """Baseline penalties + the modulator penalty of ``data_key`` (if it has a modulator)."""
        reg = super().regularizer(data_key, detach_core=detach_core)
        if data_key in self.modulator:
            modulator = self.modulator[data_key]
            assert isinstance(modulator, HistoryStateGainModulator)  # what __init__ was given
            reg = reg + modulator.regularizer()
        return reg
