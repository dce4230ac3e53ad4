"""``[crop]`` (``crop_layer.c``, ``parse_crop``), CPU semantics.

Cuts a ``crop_height x crop_width`` window out of every channel and maps values with
``x*2 - 1`` (``noadjust=1``: unchanged). At inference the window is centred
(``dh = (h - crop_h)/2``); in training its offset is random (one offset for the whole batch) and,
with ``flip=1``, it is mirrored with probability 1/2, as ``forward_crop_layer`` does. ``angle``,
``saturation``, ``exposure`` and ``shift`` are read like Darknet but only its GPU path uses them.
"""
from __future__ import annotations

import torch

from .base import BuildContext, Layer
from .parse_helpers import DefaultsLog, loud_float, loud_int


class CropLayer(Layer):
    table_name = "Crop Layer"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        log = self.defaults_log = DefaultsLog()
        self.crop_height = loud_int(s, "crop_height", 1, log)
        self.crop_width = loud_int(s, "crop_width", 1, log)
        self.flip = loud_int(s, "flip", 0, log)
        self.angle = loud_float(s, "angle", 0.0, log)
        self.saturation = loud_float(s, "saturation", 1.0, log)
        self.exposure = loud_float(s, "exposure", 1.0, log)
        c, h, w = self.in_shape
        if not (c and h and w):
            raise s.error("the layer before [crop] must output an image")
        self.noadjust = s.int("noadjust", 0)
        self.shift = loud_float(s, "shift", 0.0, log)
        if not (1 <= self.crop_height <= h and 1 <= self.crop_width <= w):
            raise s.error(f"crop {self.crop_width}x{self.crop_height} does not fit in the "
                          f"{w}x{h} input")
        self.out_shape = (c, self.crop_height, self.crop_width)

    def forward(self, x, outputs):
        _, h, w = self.in_shape
        oh, ow = self.crop_height, self.crop_width
        if self.training:
            dh = int(torch.randint(0, h - oh + 1, (1,)))
            dw = int(torch.randint(0, w - ow + 1, (1,)))
            flip = bool(self.flip) and bool(torch.randint(0, 2, (1,)))
        else:
            dh, dw, flip = (h - oh) // 2, (w - ow) // 2, False
        if flip:
            # output column j reads input column w - dw - j - 1
            y = x[:, :, dh:dh + oh, w - dw - ow:w - dw].flip(3)
        else:
            y = x[:, :, dh:dh + oh, dw:dw + ow]
        if self.noadjust:
            return y.contiguous()
        return y * 2.0 - 1.0

    def table_line(self) -> str:
        c, h, w = self.in_shape
        return "\n".join(list(self.defaults_log)
                         + [f"Crop Layer: {h} x {w} -> {self.crop_height} x {self.crop_width} x "
                            f"{c} image"])
