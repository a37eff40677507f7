"""Full-Gaussian spatial readout, one per scan (see docs/model.md#readout).

Each neuron n reads the core feature map at one position p_n in [-1, 1]^2 (bilinear interpolation) and
takes a weighted sum over channels. During training p_n is drawn from N(mu_n, Sigma_n Sigma_n^T).

Parameter names follow neuralpredictors 0.3.0 ``FullGaussian2d`` exactly: ``_mu`` (learned positions),
``sigma``, ``_features`` (NP exposes it through a ``features`` property, so the *stored* name carries the
underscore), ``bias``, and for the cortex grid predictor ``mu_transform.<i>.*`` plus the persistent buffer
``source_grid``. ``MultipleFullGaussian2d`` is a ``ModuleDict`` keyed by data_key, giving
``readout.<data_key>.<name>`` keys.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.configs import GridMeanPredictorConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {"ELU": nn.ELU, "ReLU": nn.ReLU}


def normalize_source_grid(source_grid: np.ndarray) -> np.ndarray:
    """Centre each axis on its mean, then divide by the largest absolute coordinate over *both* axes.

    [N, D] -> [N, D] float32 in [-1, 1]; the aspect ratio of the cortical layout is preserved (as in NP).
    """
    grid = np.asarray(source_grid, dtype=np.float64)
    grid = grid - grid.mean(axis=0, keepdims=True)
    scale = np.abs(grid).max()
    if scale > 0:  # a single neuron (or all at one spot) would otherwise give NaN
        grid = grid / scale
    return grid.astype(np.float32)


def grid_mean_mlp(
    in_features: int, hidden_features: int, hidden_layers: int, final_tanh: bool, nonlinearity: str = "ELU"
) -> nn.Sequential:
    """MLP cortex coordinates [N, D] -> mean positions [N, 2].

    Layer order is NP's (so ``mu_transform.<i>`` indices match): Linear, then per hidden layer
    (activation, Linear), then optionally Tanh. NP only knows ELU; ReLU is our extension and has no
    parameters, so it does not change the state_dict.
    """
    act = _ACTIVATIONS[nonlinearity]
    layers: list[nn.Module] = [nn.Linear(in_features, hidden_features if hidden_layers > 0 else 2)]
    for i in range(hidden_layers):
        layers += [act(), nn.Linear(hidden_features, hidden_features if i < hidden_layers - 1 else 2)]
    if final_tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class FullGaussian2d(nn.Module):
    """Readout of one scan: [B, c, h, w] core features -> [B, N] drives.

    Args:
        in_shape: (c, h, w) of the core output.
        outdims: number of neurons N.
        bias: learn one bias per neuron.
        init_mu_range: learned positions start U(-init_mu_range, init_mu_range).
        init_sigma: entries of the 2x2 sigma matrices start U(-init_sigma, init_sigma).
        gamma_readout: weight of the L1 penalty on the features.
        grid_mean_predictor: if given, mu comes from an MLP of the neurons' cortex coordinates.
        source_grid: [N, D] cortex coordinates (required with a grid_mean_predictor).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        outdims: int,
        bias: bool = True,
        init_mu_range: float = 0.1,
        init_sigma: float = 1.0,
        gamma_readout: float = 1.0,
        grid_mean_predictor: GridMeanPredictorConfig | None = None,
        source_grid: np.ndarray | None = None,
        batch_sample: bool = True,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < init_mu_range <= 1.0 or init_sigma <= 0.0:
            raise ValueError("init_mu_range must lie in (0, 1] and init_sigma must be positive")
        c = int(in_shape[0])
        self.in_shape = tuple(int(s) for s in in_shape)
        self.outdims = int(outdims)
        self.init_mu_range = init_mu_range
        self.init_sigma = init_sigma
        self.gamma_readout = gamma_readout
        self.batch_sample = batch_sample
        self.align_corners = align_corners
        self.grid_shape = (1, self.outdims, 1, 2)

        # Registration order follows NP (mu / mu_transform+source_grid, sigma, _features, bias) so that
        # the state_dict key order matches too.
        self._predicted_grid = grid_mean_predictor is not None
        if grid_mean_predictor is None:
            self._mu = nn.Parameter(torch.empty(self.grid_shape))
        else:
            if source_grid is None:
                raise ValueError("a grid_mean_predictor needs the neurons' source_grid (cortex coordinates)")
            source_grid = np.asarray(source_grid)
            if source_grid.ndim != 2 or source_grid.shape[0] != self.outdims:
                raise ValueError(f"source_grid must be ({self.outdims}, D), got {source_grid.shape}")
            self.mu_transform = grid_mean_mlp(
                source_grid.shape[1],
                grid_mean_predictor.hidden_features,
                grid_mean_predictor.hidden_layers,
                grid_mean_predictor.final_tanh,
                grid_mean_predictor.nonlinearity,
            )
            # Persistent: NP keeps the normalised grid in the state_dict as "source_grid", shape [N, D].
            self.register_buffer("source_grid", torch.from_numpy(normalize_source_grid(source_grid)))

        self.sigma = nn.Parameter(torch.empty(1, self.outdims, 2, 2))
        self._features = nn.Parameter(torch.empty(1, c, 1, self.outdims))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.outdims))
        else:
            self.register_parameter("bias", None)
        self.initialize()

    @property
    def features(self) -> torch.Tensor:
        """Feature weights [1, c, 1, N] (stored as ``_features``, as in NP)."""
        return self._features

    @property
    def mu(self) -> torch.Tensor:
        """Mean positions [1, N, 1, 2] as (x, y); recomputed from the MLP when the grid is predicted."""
        if self._predicted_grid:
            return self.mu_transform(self.source_grid).view(self.grid_shape)
        return self._mu

    @property
    def grid(self) -> torch.Tensor:
        """Eval-mode positions [1, N, 1, 2]: mu clamped to [-1, 1]."""
        return self.sample_grid(batch_size=1, sample=False)

    def initialize(self) -> None:
        """U(+-init_mu_range) positions (if learned), U(+-init_sigma) sigma, features 1/c, bias 0."""
        if not self._predicted_grid:
            self._mu.data.uniform_(-self.init_mu_range, self.init_mu_range)
        self.sigma.data.uniform_(-self.init_sigma, self.init_sigma)
        self._features.data.fill_(1.0 / self.in_shape[0])
        if self.bias is not None:
            self.bias.data.fill_(0.0)

    def sample_grid(self, batch_size: int, sample: bool | None = None) -> torch.Tensor:
        """Readout positions [batch_size, N, 1, 2] in [-1, 1] (last axis: x = width, y = height).

        sample=None samples in training mode and uses mu in eval mode. A sample is
        ``clamp(sigma_n @ z + mu_n)`` with z ~ N(0, I_2), drawn independently per image and neuron.
        """
        if not self._predicted_grid:
            # NP clamps the learned positions in place (outside autograd) so they never leave the map.
            with torch.no_grad():
                self._mu.clamp_(min=-1.0, max=1.0)
        mu = self.mu
        sample = self.training if sample is None else sample
        if not sample:
            return torch.clamp(mu, min=-1.0, max=1.0).expand(batch_size, -1, -1, -1)
        z = torch.randn((batch_size, *self.grid_shape[1:]), device=mu.device, dtype=mu.dtype)
        # pos[b, n, 0, i] = sum_j sigma[0, n, i, j] * z[b, n, 0, j] + mu[0, n, 0, i]
        # contiguous: the einsum leaves the batch axis innermost in memory, and grid_sample's CPU kernels
        # run about ten times slower on such a grid (benchmarks/readout_cost.py); its values are the same
        pos = torch.einsum("ancd,bnid->bnic", self.sigma, z).contiguous()
        return torch.clamp(pos + mu, min=-1.0, max=1.0)

    def forward(
        self, x: torch.Tensor, sample: bool | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [B, c, h, w]; shift: optional [B, 2] added to every neuron's position -> [B, N]."""
        B, c, h, w = x.shape
        if c != self.in_shape[0]:
            raise ValueError(f"readout expects {self.in_shape[0]} channels, got {c}")
        if (h, w) != self.in_shape[1:]:
            warnings.warn(
                f"feature map {h}x{w} differs from the readout's expected {self.in_shape[1:]}", stacklevel=2
            )
        if self.batch_sample:
            grid = self.sample_grid(batch_size=B, sample=sample)
        else:
            grid = self.sample_grid(batch_size=1, sample=sample).expand(B, -1, -1, -1)
        if shift is not None:
            # Applied after the clamp, as in NP; grid_sample zero-pads positions pushed off the map.
            grid = grid + shift[:, None, None, :]
        sampled = F.grid_sample(x, grid, align_corners=self.align_corners)  # [B, c, N, 1]
        # a broadcast product and sum: the equivalent einsum runs as N tiny matrix products, and in the
        # CPU backward pass it cost as much as the sampling itself (benchmarks/readout_cost.py)
        y = (sampled * self.features.view(1, c, self.outdims, 1)).sum((1, 3))
        if self.bias is not None:
            y = y + self.bias
        return y

    def feature_l1(self) -> torch.Tensor:
        """Sum of |features| (scalar)."""
        return self.features.abs().sum()

    def regularizer(self) -> torch.Tensor:
        """gamma_readout * sum |features| (scalar)."""
        return self.gamma_readout * self.feature_l1()


class MultipleFullGaussian2d(nn.ModuleDict):
    """One ``FullGaussian2d`` per data_key; a ``ModuleDict`` like NP's ``MultiReadoutBase``.

    Args:
        in_shape_dict: data_key -> (c, h, w) of the core output.
        n_neurons_dict: data_key -> N (insertion order is kept).
        source_grids: data_key -> [N, D] cortex coordinates (needed with a grid_mean_predictor).
        **kwargs: passed to each ``FullGaussian2d``.
    """

    def __init__(
        self,
        in_shape_dict: Mapping[str, Sequence[int]],
        n_neurons_dict: Mapping[str, int],
        source_grids: Mapping[str, np.ndarray] | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        for data_key, n_neurons in n_neurons_dict.items():
            grid = None if source_grids is None else source_grids[data_key]
            self.add_module(
                data_key, FullGaussian2d(in_shape_dict[data_key], n_neurons, source_grid=grid, **kwargs)
            )
        # NP's multi-readout initialises every readout a second time after building them all; repeating
        # it keeps the sequence of random draws (and so the seeded initial sigma) the same as NP's.
        self.initialize()

    def __getitem__(self, data_key: str) -> FullGaussian2d:
        """The readout of scan ``data_key`` (``__init__`` adds nothing but ``FullGaussian2d``s)."""
        readout = super().__getitem__(data_key)
        assert isinstance(readout, FullGaussian2d)
        return readout

    def initialize(self) -> None:
        for data_key in self:
            self[data_key].initialize()

    def _resolve(self, data_key: str | None) -> str:
        if data_key is None:
            if len(self) != 1:
                raise ValueError(f"data_key is required with {len(self)} readouts")
            return next(iter(self.keys()))
        return data_key

    def forward(
        self,
        x: torch.Tensor,
        data_key: str | None = None,
        shift: torch.Tensor | None = None,
        sample: bool | None = None,
    ) -> torch.Tensor:
        """x: [B, c, h, w] -> [B, N_data_key]."""
        return self[self._resolve(data_key)](x, sample=sample, shift=shift)

    def regularizer(self, data_key: str | None = None) -> torch.Tensor:
        """The selected readout's feature L1 penalty (scalar)."""
        return self[self._resolve(data_key)].regularizer()
