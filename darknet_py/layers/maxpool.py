"""``[maxpool]`` and ``[local_avgpool]`` (``maxpool_layer.c``, ``parse_maxpool``).

Output size ``(w + padding - size) / stride + 1`` with ``padding`` defaulting to ``size - 1``; the
window of output ``j`` starts at ``j*stride - padding/2``. Positions outside the input count as
``-FLT_MAX`` for max (so ``size=2 stride=1`` keeps the input size, YOLOv3-tiny's last pool), and
``local_avgpool`` averages only the positions inside the image. ``maxpool_depth=1`` instead takes
the max across channel groups ``k, k+out_channels, …`` at every pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BuildContext, Layer, register

FLT_MAX = 3.4028234663852886e38


@register("maxpool", "max")
class MaxpoolLayer(Layer):
    table_name = "max"
    avgpool = False

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        stride = s.int("stride", 1)
        self.stride_x = s.int("stride_x", stride)
        self.stride_y = s.int("stride_y", stride)
        self.size = s.int("size", stride)
        self.padding = s.int("padding", self.size - 1)
        self.maxpool_depth = s.int("maxpool_depth", 0)
        self.out_channels = s.int("out_channels", 1)
        if s.int("antialiasing", 0):
            raise s.error("antialiasing is not supported")
        self.maxpool_zero_nonmax = s.int("maxpool_zero_nonmax", 0)
        c, h, w = self.in_shape
        if not (c and h and w):
            raise s.error(f"the layer before [{s.type}] must output an image")
        for name, v in (("size", self.size), ("stride_x", self.stride_x),
                        ("stride_y", self.stride_y)):
            if v < 1:
                raise s.error(f"{name} must be >= 1, got {v}", value=v)
        if self.padding < 0:
            raise s.error(f"padding must be >= 0, got {self.padding}")
        if self.maxpool_depth:
            if self.out_channels < 1:
                raise s.error("out_channels must be >= 1")
            self.out_shape = (self.out_channels, h, w)
        else:
            ow = (w + self.padding - self.size) // self.stride_x + 1
            oh = (h + self.padding - self.size) // self.stride_y + 1
            if ow < 1 or oh < 1:
                raise s.error(f"output would be {ow}x{oh}: input {w}x{h} too small for size "
                              f"{self.size}")
            self.out_shape = (c, oh, ow)
        oc, oh, ow = self.out_shape
        self.bflops = (self.size * self.size * c * oh * ow) / 1e9

    def _padded(self, x, value):
        _, _, h, w = x.shape
        _, oh, ow = self.out_shape
        off = self.padding // 2
        right = (ow - 1) * self.stride_x + self.size - off - w
        bottom = (oh - 1) * self.stride_y + self.size - off - h
        if off == 0 and right <= 0 and bottom <= 0:
            return x
        return F.pad(x, (off, max(right, 0), off, max(bottom, 0)), value=value)

    def forward(self, x, outputs):
        if self.maxpool_depth:
            b, c, h, w = x.shape
            oc = self.out_channels
            groups = -(-c // oc)
            pad = groups * oc - c
            if pad:
                x = torch.cat([x, x.new_full((b, pad, h, w), -FLT_MAX)], dim=1)
            return x.view(b, groups, oc, h, w).amax(dim=1)
        if self.avgpool:
            ones = torch.ones_like(x[:, :1])
            sums = F.avg_pool2d(self._padded(x, 0.0), self.size, (self.stride_y, self.stride_x),
                                divisor_override=1)
            cnt = F.avg_pool2d(self._padded(ones, 0.0), self.size, (self.stride_y, self.stride_x),
                               divisor_override=1)
            return sums / cnt
        return F.max_pool2d(self._padded(x, -FLT_MAX), self.size, (self.stride_y, self.stride_x))

    def table_line(self) -> str:
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        shp = f"{w:4d} x{h:4d} x{c:4d} -> {ow:4d} x{oh:4d} x{oc:4d} {self.bflops:5.3f} BF"
        if self.avgpool:
            name = "avg"
        elif self.maxpool_depth:
            name = "max-depth"
        else:
            name = "max"
        if self.stride_x == self.stride_y:
            return f"{name:<18s}{self.size:2d}x{self.size:2d}/{self.stride_x:2d}   {shp}"
        return (f"{name:<17s}{self.size:2d}x{self.size:2d}/{self.stride_x:2d}x{self.stride_y:2d} "
                f"{shp}")


@register("local_avgpool", "local_avg")
class LocalAvgpoolLayer(MaxpoolLayer):
    table_name = "avg"
    avgpool = True
