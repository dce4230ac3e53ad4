"""``[avgpool]`` / ``[avg]`` (``avgpool_layer.c``, ``parse_avgpool``): global average pooling.

``out[c] = mean over h*w of x[c]``; output shape ``(c, 1, 1)``. Darknet does not set ``bflops``
for it (0 in ``Total BFLOPS``). ``[local_avgpool]`` (a windowed average) lives in
:mod:`darknet_py.layers.maxpool`.
"""
from __future__ import annotations

from .base import BuildContext, Layer


class AvgpoolLayer(Layer):
    table_name = "avg"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        c, h, w = self.in_shape
        if not (c and h and w):
            raise section.error("the layer before [avgpool] must output an image")
        self.out_shape = (c, 1, 1)

    def forward(self, x, outputs):
        return x.mean(dim=(2, 3), keepdim=True)

    def table_line(self) -> str:
        c, h, w = self.in_shape
        return f"avg                          {w:4d} x{h:4d} x{c:4d} ->   {c:4d}"
