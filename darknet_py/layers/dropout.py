"""``[dropout]`` (``dropout_layer.c``): identity at inference (Darknet shares the input buffer).

In training, plain dropout zeroes each value with ``probability`` and scales the rest by
``1/(1-probability)``. With ``dropblock=1`` whole square blocks are dropped (DropBlock): block side
``dropblock_size_abs`` or ``dropblock_size_rel * min(w, h)`` (7 when neither is set, as Darknet),
seeds drawn so that the expected dropped fraction is ``probability``; kept values are rescaled
by the kept fraction. Darknet's GPU DropBlock also ramps the probability with training progress;
here the cfg probability is used as given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BuildContext, Layer


class DropoutLayer(Layer):
    table_name = "dropout"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        c, h, w = self.in_shape
        self.probability = s.float("probability", 0.2)
        if not 0.0 <= self.probability < 1.0:
            raise s.error(f"probability must be in [0, 1), got {self.probability}")
        self.dropblock = s.int("dropblock", 0)
        self.dropblock_size_rel = s.float("dropblock_size_rel", 0.0)
        # (a float in the cfg, used as an int; clamped so inf/1e30 do not overflow the int cast)
        self.dropblock_size_abs = int(max(min(s.float("dropblock_size_abs", 0.0), 2.0 ** 31),
                                          -2.0 ** 31))
        if self.dropblock_size_abs > w or self.dropblock_size_abs > h:
            self.dropblock_size_abs = min(w, h)
        if self.dropblock and not self.dropblock_size_rel and not self.dropblock_size_abs:
            self.dropblock_size_abs = 7
        if self.dropblock_size_rel and self.dropblock_size_abs:
            self.dropblock_size_rel = 0.0
        self.out_shape = self.in_shape
        if not self.dropblock:
            # make_dropout_layer sets l.w/l.h/l.c only for DropBlock (avg_outputs skips it otherwise)
            self.darknet_in_shape = (0, 0, 0)

    def _block_size(self) -> int:
        _, h, w = self.in_shape
        if self.dropblock_size_abs:
            return max(1, min(self.dropblock_size_abs, h, w))
        return max(1, min(int(self.dropblock_size_rel * min(h, w)), h, w))

    def forward(self, x, outputs):
        if not self.training or self.probability == 0.0:
            return x
        if not self.dropblock:
            return F.dropout(x, self.probability, training=True)
        k = self._block_size()
        _, _, h, w = x.shape
        gamma = self.probability / (k * k) * (h * w) / max(1, (h - k + 1) * (w - k + 1))
        seeds = (torch.rand_like(x) < gamma).to(x.dtype)
        block = F.max_pool2d(seeds, k, 1, k // 2)[:, :, :h, :w]
        keep = 1.0 - block
        kept = keep.mean().clamp_min(1e-6)
        return x * keep / kept

    def table_line(self) -> str:
        c, h, w = self.in_shape
        n = c * h * w
        if self.dropblock:
            if self.dropblock_size_abs:
                return (f"dropblock    p = {self.probability:.3f}   l.dropblock_size_abs = "
                        f"{self.dropblock_size_abs}    {n:4d}  ->   {n:4d}")
            return (f"dropblock    p = {self.probability:.3f}   l.dropblock_size_rel = "
                    f"{self.dropblock_size_rel:.2f}    {n:4d}  ->   {n:4d}")
        return f"dropout    p = {self.probability:.3f}        {n:4d}  ->   {n:4d}"
