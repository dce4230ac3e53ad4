"""``[upsample]`` (``upsample_layer.c``): nearest-neighbour ``stride``x upsampling times ``scale``;
a negative stride downsamples by summing each ``stride x stride`` block (times ``scale``), which is
what Darknet's reverse ``upsample_cpu`` accumulates.
"""
from __future__ import annotations

import torch.nn.functional as F

from .base import BuildContext, Layer
from .maxpool import window_sum


class UpsampleLayer(Layer):
    table_name = "upsample"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        stride = s.int("stride", 2)
        self.scale = s.float("scale", 1.0)
        if stride == 0:
            raise s.error("stride must not be 0")
        c, h, w = self.in_shape
        self.reverse = stride < 0
        self.stride = abs(stride)
        if self.reverse:
            self.out_shape = (c, h // self.stride, w // self.stride)
            if self.out_shape[1] < 1 or self.out_shape[2] < 1:
                raise s.error(f"downsampling {w}x{h} by {self.stride} leaves nothing")
        else:
            self.out_shape = (c, h * self.stride, w * self.stride)

    def forward(self, x, outputs):
        s = self.stride
        if self.reverse:
            _, oh, ow = self.out_shape
            x = x[:, :, : oh * s, : ow * s]
            y = window_sum(x, s, s)
        else:
            y = F.interpolate(x, scale_factor=s, mode="nearest") if s > 1 else x
        return y * self.scale if self.scale != 1.0 else y

    def table_line(self) -> str:
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        name = "downsample" if self.reverse else "upsample"
        return f"{name:<24s}{self.stride:2d}x  {w:4d} x{h:4d} x{c:4d} -> {ow:4d} x{oh:4d} x{oc:4d}"
