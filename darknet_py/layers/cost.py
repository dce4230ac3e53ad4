"""``[cost]`` (``cost_layer.c``, ``parse_cost``): a loss layer for classifiers/regressors.

Darknet only writes this layer's output when a truth is given (``l.output`` then holds the
per-element error and ``l.cost`` their sum); at inference the buffer stays zero, so
:meth:`CostLayer.forward` returns zeros. :meth:`CostLayer.loss` computes Darknet's per-element
error for a truth: ``sse`` (and ``masked``, which first ignores entries whose truth is -1234)
gives ``(truth - x)**2``, ``smooth`` gives smooth-L1 (``smooth_l1_cpu``). An unknown ``type``
falls back to ``sse`` with a warning, as Darknet does.

Darknet leaves ``w/h/c`` of this layer at 0 (so it does not count in ``avg_outputs``).
"""
from __future__ import annotations

import warnings

import torch

from .base import BuildContext, Layer
from .parse_helpers import DefaultsLog, loud_str

COST_TYPES = ("sse", "masked", "smooth")
#: Darknet's SECRET_NUM: truths with this value are ignored by the masked cost
SECRET_NUM = -1234.0


class CostLayer(Layer):
    table_name = "cost"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.defaults_log = DefaultsLog()
        cost_type = loud_str(s, "type", "sse", self.defaults_log)
        if cost_type not in COST_TYPES:
            warnings.warn(f"{s.file}:{s.line}: [cost] type={cost_type} is unknown; Darknet uses "
                          "sse", stacklevel=2)
            cost_type = "sse"
        self.cost_type = cost_type
        self.scale = s.float("scale", 1.0)
        self.ratio = s.float("ratio", 0.0)
        c, h, w = self.in_shape
        self.n_inputs = c * h * w
        self.out_shape = self.in_shape
        self.darknet_in_shape = (0, 0, 0)

    def forward(self, x, outputs):
        return torch.zeros_like(x)

    def loss(self, x: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Darknet's per-element ``l.output`` for ``truth`` (same shape as ``x``)."""
        truth = truth.reshape(x.shape).to(x.dtype)
        if self.cost_type == "masked":
            x = torch.where(truth == SECRET_NUM, torch.full_like(x, SECRET_NUM), x)
        diff = truth - x
        if self.cost_type == "smooth":
            a = diff.abs()
            return torch.where(a < 1, diff * diff, 2 * a - 1)
        return diff * diff

    def table_line(self) -> str:
        return "\n".join(list(self.defaults_log)
                         + [f"cost                                           {self.n_inputs:4d}"])
