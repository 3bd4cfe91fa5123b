"""Run-time helpers shared by every command: device choice, seeding, threads."""
from __future__ import annotations

import os
import random

import numpy as np


def resolve_device(spec: str = "auto"):  # noqa: ANN201 - torch.device
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a ``torch.device``.

    ``auto`` picks CUDA when it is available, else the CPU. Asking for CUDA on a machine
    without it is an error rather than a silent fall-back.
    """
    import torch

    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available (use --device auto or cpu)")
    if spec != "cpu" and not spec.startswith("cuda") and spec != "mps":
        raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def default_workers() -> int:
    """Number of DataLoader workers that keeps the machine's cores busy without oversubscribing."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))
