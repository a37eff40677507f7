"""Weights saved elsewhere (the competition's starter kit, neuralpredictors 0.3.0 names) checked, strictly,
against a model built here, before they may stand in for a training run.

Nothing is loaded into a model until every key and shape matches; a mismatch is described by the keys
that are missing, unexpected or of another shape.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

LISTED = 8  # keys of each kind named in a message; the rest are counted


class StateDictImportError(ValueError):
    """A file that is not a usable state_dict, or one that does not fit the model (one-line message)."""


@dataclass(frozen=True)
class StateDictMismatch:
    """How a state_dict differs from a model's: keys missing from it, keys the model lacks, shapes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )  # key, file, model

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)

    def describe(self) -> str:
        """One line, e.g. ``missing keys (2): a, b; unexpected keys (1): c; mis-shaped keys (1): ...``."""

        def names(kind: str, items: list[str]) -> str:
            more = f", ... {len(items) - LISTED} more" if len(items) > LISTED else ""
            return f"{kind} ({len(items)}): {', '.join(items[:LISTED])}{more}"

        parts = []
        if self.missing:
            parts.append(names("missing keys", self.missing))
        if self.unexpected:
            parts.append(names("unexpected keys", self.unexpected))
        if self.misshaped:
            shaped = [f"{k} {tuple(f)} in the file vs {tuple(m)} in the model" for k, f, m in self.misshaped]
            parts.append(names("mis-shaped keys", shaped))
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a ``.pth`` state_dict and the file's SHA-256 (hex).

    Loaded with ``weights_only=True``: a file that would run code when unpickled is refused.

    Raises:
        StateDictImportError: unreadable, not a PyTorch file, not a flat mapping of names to tensors, or
            a floating-point tensor with a NaN or infinite value (the first such parameter is named).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise StateDictImportError(f"{path}: cannot read the file ({err.strerror or err})") from None
    try:
        loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises assorted errors for foreign or corrupt files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise StateDictImportError(
            f"{path}: not a PyTorch state_dict ({type(err).__name__}: {first})"
        ) from None
    if not isinstance(loaded, Mapping) or not loaded:
        raise StateDictImportError(
            f"{path}: expected a state_dict (names -> tensors), found {type(loaded).__name__}"
        )
    bad = [str(k) for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise StateDictImportError(f"{path}: entries that are not named tensors: {', '.join(bad[:LISTED])}")
    for name, tensor in loaded.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            n_bad = int((~torch.isfinite(tensor)).sum())
            raise StateDictImportError(
                f"{path}: parameter {name} has {n_bad} NaN or infinite value(s) of {tensor.numel()}; "
                "weights must be finite"
            )
    return dict(loaded), hashlib.sha256(raw).hexdigest()


def compare(
    model_state: Mapping[str, torch.Tensor], file_state: Mapping[str, torch.Tensor]
) -> StateDictMismatch:
    """Keys and shapes of ``file_state`` against ``model_state`` (order kept as in each)."""
    return StateDictMismatch(
        missing=[k for k in model_state if k not in file_state],
        unexpected=[k for k in file_state if k not in model_state],
        misshaped=[
            (k, tuple(file_state[k].shape), tuple(v.shape))
            for k, v in model_state.items()
            if k in file_state and tuple(file_state[k].shape) != tuple(v.shape)
        ],
    )


def source_grid_problems(
    model_state: Mapping[str, torch.Tensor], file_state: Mapping[str, torch.Tensor], atol: float = 1e-4
) -> list[str]:
    """Readouts whose stored cortex coordinates (``readout.<key>.source_grid``, normalised) differ from
    the ones the model was built with from the ingested scan: a checkpoint of other neurons, or the same
    neurons in another order. Shapes must already match (:func:`compare`)."""
    problems = []
    for name, grid in model_state.items():
        if not name.endswith(".source_grid"):
            continue
        theirs = file_state[name].to(grid.dtype)
        gap = (theirs - grid).abs().max(dim=1).values
        off = int((gap > atol).sum())
        if off:
            data_key = name.split(".")[1]
            problems.append(
                f"{name}: the checkpoint's normalised cortex coordinates differ from those of the ingested "
                f"scan {data_key} for {off} of {len(grid)} neurons "
                f"(largest difference {float(gap.max()):.3g})"
            )
    return problems


def check_fits(model: torch.nn.Module, file_state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`StateDictImportError` unless ``file_state`` fits ``model`` key for key, shape for shape,
    with the same neurons (source grids)."""
    model_state = model.state_dict()
    mismatch = compare(model_state, file_state)
    if mismatch:
        raise StateDictImportError(
            f"the checkpoint does not fit the experiment's model: {mismatch.describe()}"
        )
    problems = source_grid_problems(model_state, file_state)
    if problems:
        raise StateDictImportError("; ".join(problems))
