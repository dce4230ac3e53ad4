"""``[sam]`` (``sam_layer.c``, ``parse_sam``): spatial attention, ``out = act(x * from)``.

``x`` (the previous output) and ``from`` (an earlier layer) must have the same shape; the product
is element-wise. ``activation`` (default linear) goes through Darknet's ``activate_array``, which
returns 0 for swish/mish.
"""
from __future__ import annotations

from .activation_layer import array_activation
from .base import BuildContext, Layer
from .parse_helpers import resolve_from


class SamLayer(Layer):
    table_name = "scale Layer"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.from_index = resolve_from(s, ctx)
        from_shape = ctx.shapes[self.from_index]
        if from_shape != self.in_shape:
            fc, fh, fw = from_shape
            c, h, w = self.in_shape
            raise s.error(f"[sam] multiplies element-wise: the previous layer ({w} x {h} x {c}) "
                          f"and layer {self.from_index} ({fw} x {fh} x {fc}) must have the same "
                          "shape")
        self.activation_name = s.str("activation", "linear")
        self.activation = array_activation(self.activation_name, s)
        self.out_shape = from_shape
        self.inputs = [self.from_index]

    def forward(self, x, outputs):
        return self.activation(x * outputs[self.from_index])

    def table_line(self) -> str:
        return f"scale Layer: {self.from_index}"
