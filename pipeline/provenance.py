"""What a run ran with: code version, package versions, host and device."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import pipeline

if TYPE_CHECKING:  # imported where used: code_version() serves commands that never load torch
    import torch

_REPO = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, else the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return f"{pipeline.__version__}+{out.stdout.strip()}"[:64]
    except (OSError, subprocess.SubprocessError):
        return pipeline.__version__


def device_name(device: torch.device) -> str:
    """Human-readable name of ``device`` (the GPU model, or the CPU with its thread count)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict[str, str]:
    """Provenance columns of a run."""
    import torch

    return {
        "code_version": code_version(),
        "python_version": sys.version.split()[0],
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "host": socket.gethostname()[:255],
        "device": device_name(device)[:255],
    }
