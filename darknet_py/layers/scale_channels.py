"""``[scale_channels]`` (``scale_channels_layer.c``, ``parse_scale_channels``): squeeze-excitation.

``out = activate_array(from * x)`` where ``from`` is an earlier layer's output (the output shape)
and ``x`` the previous layer's output: per channel ``(c, 1, 1)`` by default, or per pixel
``(1, h, w)`` with ``scale_wh=1``. ``activation`` (default linear) goes through Darknet's
``activate_array``, which returns 0 for swish/mish (Darknet prints a warning and does that).
"""
from __future__ import annotations

from .activation_layer import array_activation
from .base import BuildContext, Layer
from .parse_helpers import resolve_from


class ScaleChannelsLayer(Layer):
    table_name = "scale Layer"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.from_index = resolve_from(s, ctx)
        self.scale_wh = s.int("scale_wh", 0)
        c, h, w = self.in_shape
        fc, fh, fw = ctx.shapes[self.from_index]
        if not self.scale_wh:
            if (h, w) != (1, 1) or fc != c:
                raise s.error(
                    f"the previous layer must output (1 x 1 x {fc}) channel scales for layer "
                    f"{self.from_index} ({fw} x {fh} x {fc}), got {w} x {h} x {c}")
        elif c != 1 or (fh, fw) != (h, w):
            raise s.error(
                f"scale_wh=1: the previous layer must output a ({fw} x {fh} x 1) map for layer "
                f"{self.from_index}, got {w} x {h} x {c}")
        self.activation_name = s.str("activation", "linear")
        self.activation = array_activation(self.activation_name, s)
        self.out_shape = (fc, fh, fw)
        self.inputs = [self.from_index]

    def forward(self, x, outputs):
        return self.activation(outputs[self.from_index] * x)

    def table_line(self) -> str:
        return f"scale Layer: {self.from_index}"
