"""Muon for the core's filters, AdamW for every other parameter: the trainer's ``optimizer: muon``.

Muon (momentum, orthogonalised) updates a weight matrix W (out x in) with the momentum of its gradient
replaced by the nearest semi-orthogonal matrix, i.e. U V^T of the momentum's SVD U S V^T: every direction
the gradient points in moves at the same rate, instead of the few large singular directions that
dominate a plain or Adam step. A convolution's kernel (out, in, kh, kw) is the matrix (out, in*kh*kw)
for this (a depthwise kernel (C, 1, k, k): the C x k*k matrix of its spatial filters). U V^T is
approximated by five steps of a quintic Newton-Schulz iteration (coefficients 3.4445, -4.7750, 2.0315,
chosen to push every singular value towards about one quickly rather than exactly), so no SVD runs.

Why only the core's convolution and linear weights: Muon is made for the hidden layers' weight matrices;
the readout's per-neuron feature weights, the shifter, the modulator, biases, norms and embeddings stay
with AdamW, which the project's selection
round confirmed (Muon on the readout's features as well scored lower; docs/research-log.md).

The step size of a Muon parameter is ``lr x 0.2 x sqrt(max(out, in*kh*kw))``: the scaling that gives the
orthogonalised update about the root-mean-square size of an AdamW update, so that one ``lr_init`` (and
its schedule) serves both kinds of parameter. Weight decay is decoupled (as in AdamW) for both.

Everything runs in float32 with plain matrix products, so a CPU run is bit-identical across reruns and
resumes (the momentum buffers and Adam moments are in the optimiser's ``state_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

#: coefficients (a, b, c) of the quintic Newton-Schulz step X <- a X + (b A + c A^2) X, A = X X^T
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
#: AdamW-matching scale of an orthogonalised update (its RMS is about 1 / sqrt(max(out, in)))
RMS_MATCH = 0.2


def orthogonalise(matrix: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """An approximation of U V^T for ``matrix`` = U S V^T: (m, n) -> (m, n), singular values near 1.

    The matrix is first scaled to Frobenius norm 1 (so every singular value is at most 1, where the
    iteration converges); the iteration runs on the wide orientation (m <= n), where X X^T is the smaller
    Gram matrix.
    """
    if matrix.ndim != 2:
        raise ValueError(f"orthogonalise takes a matrix, got shape {tuple(matrix.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = matrix / matrix.norm().clamp_min(eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


#: the layers whose ``weight`` Muon updates: a convolution's kernel or a linear layer's matrix
MUON_LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def core_filters(core: torch.nn.Module) -> list[torch.Tensor]:
    """The ``weight`` of every convolution and linear layer in ``core``: Muon's parameters.

    Other parameters of 2 or more dimensions (a ViT's position embedding, say) are not weight matrices
    of a layer, and orthogonalising their update would mean nothing; they stay with AdamW.
    """
    return [m.weight for m in core.modules() if isinstance(m, MUON_LAYERS) and m.weight.requires_grad]


def split_muon_groups(groups: list[dict[str, Any]], core: torch.nn.Module) -> list[dict[str, Any]]:
    """The optimiser's groups with each group's core filters (:func:`core_filters`) moved to a group of
    their own, right after it, flagged ``muon``; other options are kept.

    Raises:
        ValueError: the core has no convolution or linear layer (nothing for Muon to update).
    """
    filters = {id(p) for p in core_filters(core)}
    if not filters:
        raise ValueError("optimizer: muon needs a core with convolution or linear layers")
    out: list[dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        rest = [p for p in params if id(p) not in filters]
        mine = [p for p in params if id(p) in filters]
        if rest:
            out.append({**group, "params": rest})
        if mine:
            out.append({**group, "params": mine, "muon": True})
    return out


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the groups flagged ``muon``, AdamW on the others (module docstring).

    Args:
        params: parameter groups; a group with ``"muon": True`` holds tensors of 2 or more dimensions.
        lr: learning rate of both kinds (a Muon step is scaled, see the module docstring).
        weight_decay: decoupled weight decay of both kinds.
        momentum: Muon's momentum (Nesterov form).
        betas, eps: AdamW's.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | list[dict[str, Any]],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "betas": betas,
            "eps": eps,
            "muon": False,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("a muon group holds a parameter of fewer than 2 dimensions")

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            update = self._muon_update if group["muon"] else self._adamw_update
            for p in group["params"]:
                if p.grad is not None:
                    if group["weight_decay"]:
                        p.mul_(1.0 - group["lr"] * group["weight_decay"])
                    update(p, group)
        return loss

    def _muon_update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        assert grad is not None  # step() updates only parameters with a gradient
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf = state["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(grad)
        nesterov = grad.add(buf, alpha=group["momentum"])
        matrix = nesterov.reshape(p.shape[0], -1)  # (out, in*kh*kw): logical order, any memory layout
        scale = RMS_MATCH * math.sqrt(max(matrix.shape))
        p.add_(orthogonalise(matrix).reshape(p.shape), alpha=-group["lr"] * scale)

    def _adamw_update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        assert grad is not None  # step() updates only parameters with a gradient
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        state["exp_avg"].lerp_(grad, 1.0 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        correction1 = 1.0 - beta1 ** state["step"]
        correction2 = 1.0 - beta2 ** state["step"]
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(correction2)).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / correction1)
