"""``-backend exact``: the Darknet-exact :class:`~darknet_py.model.network.Network`, batch norm
folded as ``detector test`` does; the reference the other backends are checked against."""
from __future__ import annotations

from typing import List

import torch

from .base import Backend, check_heads

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ExactBackend(Backend):
    name = "exact"

    def __init__(self, net, device: torch.device, precision: str = "fp32", prepare: bool = True):
        check_heads(net.heads, net.cfg_path)
        self.network = net
        self.source = net.cfg_path
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.width, self.height, self.channels = net.width, net.height, net.channels
        self.heads = net.head_specs
        self.letter_box = bool(net.config.letter_box)
        if prepare:
            net.eval()
            net.fuse()
            net.to(device=self.device, dtype=self.dtype)

    @classmethod
    def wrap(cls, net) -> "ExactBackend":
        """The network as it is (its mode, device and dtype; nothing fused): for evaluating a
        model in the middle of training."""
        p = next(net.parameters(), None)
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
            p.dtype if p is not None else torch.float32, "fp32")
        return cls(net, net.device, precision, prepare=False)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = self.network(x.to(self.device, self.dtype))
        return [o.to("cpu", torch.float32) for o in outs]
