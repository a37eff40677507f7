"""Throughput options of the trainer (all off by default; each one is a ``TrainerConfig`` field, so a run
records which it used): bf16 autocast, channels_last, fused Adam and ``torch.compile`` of the core.

None of them changes the model or its parameters' dtype: autocast runs the forward pass's convolutions
and matrix products in bfloat16 while the weights, the optimiser state, the loss and the regularisers
stay float32; channels_last only changes the memory layout of the convolution inputs and weights; fused
Adam computes the same update in one kernel; ``compile`` traces the core's forward (the convolutions,
~97 % of the time) into fused kernels, keeping the module and its ``state_dict`` names unchanged.
With all of them off the trainer runs exactly the code it ran before they existed (CPU bit-identical).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch

from pipeline.configs import TrainerConfig
from pipeline.training.muon import MuonAdamW, split_muon_groups


def autocast(cfg: TrainerConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's precision context: bf16 autocast when ``cfg.autocast == "bf16"``."""
    if cfg.autocast == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, cfg: TrainerConfig) -> torch.nn.Module:
    """Apply the memory-layout and compile options to ``model`` in place; returns it."""
    if cfg.channels_last:
        # torch's stub of Module.to lists no memory_format, which the method takes (documented)
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if cfg.compile_core:
        core = getattr(model, "core", None)
        if core is None:
            raise ValueError("trainer option compile_core: the model has no `core` to compile")
        # Module.compile() compiles in place: the module, its parameters and state_dict keys stay as
        # they are (torch.compile(module) would wrap it and prefix every key with `_orig_mod.`)
        core.compile()
    return model


def prepare_images(images: torch.Tensor, cfg: TrainerConfig) -> torch.Tensor:
    """(B, C, h, w) batch images in the layout the model was prepared for."""
    return images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else images


def parameter_groups(model: torch.nn.Module, cfg: TrainerConfig) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: one group at ``cfg.lr_init`` (exactly the single group of old
    when ``readout_lr_scale`` is 1), else the core's parameters first at ``lr_init`` and every other
    parameter (readout, shifter, modulator) at ``lr_init * readout_lr_scale``.

    The core's group comes first so that ``param_groups[0]["lr"]``, the rate the trainer records per
    epoch, stays the core's (the base) rate. With ``optimizer: muon`` the core's filters (the weights of
    its convolution and linear layers) get a group of their own, flagged ``muon``, after the group they
    came from (:func:`pipeline.training.muon.split_muon_groups`).
    """
    params = list(model.parameters())
    if cfg.readout_lr_scale == 1.0 and cfg.optimizer != "muon":
        return [{"params": params}]
    core = getattr(model, "core", None)
    if core is None:
        option = "readout_lr_scale" if cfg.readout_lr_scale != 1.0 else "optimizer: muon"
        raise ValueError(f"trainer option {option}: the model has no `core` to tell apart")
    groups: list[dict[str, Any]] = [{"params": params}]
    if cfg.readout_lr_scale != 1.0:
        in_core = {id(p) for p in core.parameters()}
        groups = [
            {"params": [p for p in params if id(p) in in_core]},
            {"params": [p for p in params if id(p) not in in_core], "lr": cfg.lr_init * cfg.readout_lr_scale},
        ]
    # Muon's groups (the core's filters) follow the group they came from, so group 0 stays the core's
    return split_muon_groups(groups, core) if cfg.optimizer == "muon" else groups


def optimizer(
    params: Iterable[torch.nn.Parameter] | list[dict[str, Any]], cfg: TrainerConfig
) -> torch.optim.Optimizer:
    """Adam, AdamW (``cfg.weight_decay``) or Muon + AdamW (:mod:`pipeline.training.muon`) at
    ``cfg.lr_init`` over ``params`` (parameters, or the groups of :func:`parameter_groups`); one fused
    kernel per step when ``cfg.fused_adam``."""
    if cfg.optimizer == "muon":
        given: list[Any] = list(params)
        if not any(isinstance(g, dict) and g.get("muon") for g in given):
            raise ValueError("optimizer: muon takes parameter_groups(), which marks the core's filters")
        return MuonAdamW(given, lr=cfg.lr_init, weight_decay=cfg.weight_decay)
    fused = True if cfg.fused_adam else None  # None: torch's default (no fused kernel asked for)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr_init, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=cfg.lr_init, fused=fused)
