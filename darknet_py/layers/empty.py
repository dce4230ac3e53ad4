"""``[empty]`` / ``[silence]`` (``parse_network_cfg_custom``): a no-op that passes its input on.

Darknet makes this layer share the previous layer's output buffer, so its output is the input.
"""
from __future__ import annotations

from .base import BuildContext, Layer


class EmptyLayer(Layer):
    table_name = "empty"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        self.out_shape = self.in_shape

    def forward(self, x, outputs):
        return x

    def table_line(self) -> str:
        return "empty "
