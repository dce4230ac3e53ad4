"""``-backend cuda``: the fused inference plan of :mod:`.fast` on a GPU (cuDNN channels-last,
fp32 / fp16 / bf16, CUDA graphs replayed per input shape)."""
from __future__ import annotations

from typing import List

import torch

from .base import Backend, check_heads
from .fast import optimize_for_inference

_HALF = {"fp32": False, "fp16": "fp16", "bf16": "bf16"}


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self, net, device: torch.device, precision: str = "fp32"):
        check_heads(net.heads, net.cfg_path)
        self.network = net
        self.source = net.cfg_path
        self.device = torch.device(device)
        self.precision = precision
        self.width, self.height, self.channels = net.width, net.height, net.channels
        self.heads = net.head_specs
        self.letter_box = bool(net.config.letter_box)
        self.plan = optimize_for_inference(net, self.device, half=_HALF[precision])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = self.plan(x.to(self.device, non_blocking=True))
        return [o.to("cpu", torch.float32) for o in outs]

    def details(self) -> str:
        return ("CUDA graphs" if self.plan.cuda_graphs else "eager") + ", channels-last"
