"""One rule for the device every command and the API use: a CUDA GPU when one is available,
else the CPU; Darknet's ``-i N`` / ``-gpus N`` pick the GPU, and naming a GPU that is not there
is a one-line :class:`~darknet_py.errors.UsageError`."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from .errors import UsageError

__all__ = ["select_device", "describe"]


def select_device(gpus: Optional[Sequence[int]] = None, index: Optional[int] = None) -> torch.device:
    """``cuda:N`` for the first of ``gpus`` (or ``index``), else the default rule."""
    wanted = list(gpus) if gpus else ([index] if index is not None else [])
    if not wanted:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun each process takes the GPU of its LOCAL_RANK
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        return torch.device("cuda", local % torch.cuda.device_count())
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for g in wanted:
        if g < 0 or g >= count:
            have = f"{count} GPU(s)" if count else "no CUDA GPU (this torch sees none)"
            raise UsageError(f"GPU {g} is not available: this machine has {have}", value=g)
    return torch.device("cuda", wanted[0])


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
