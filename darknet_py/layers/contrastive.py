"""``[contrastive]`` (``softmax_layer.c`` ``make_contrastive_layer``, ``parse_contrastive``).

A loss-only layer (contrastive embedding learning tied to a ``[yolo]`` layer, for tracking). Its
forward pass writes only ``l.delta`` during training and returns at once at inference; ``l.output``
is never written, so Darknet's output of this layer is always zeros, and that is what
:meth:`ContrastiveLayer.forward` returns. The contrastive training loss itself is not implemented
by darknet-py (a trainer that meets this layer must say so).

``yolo_layer=`` must name a ``[yolo]`` layer (relative if negative) whose ``embedding_layer``
gives the embedding size; the previous layer's output is ``n_anchors x embedding_size`` channels.
(Darknet crashes when ``yolo_layer`` is missing or 0; darknet-py reports a ``CfgError``.)
"""
from __future__ import annotations

import torch

from ..errors import CfgError
from .base import FLT_MAX, BuildContext, Layer
from .parse_helpers import DefaultsLog, loud_int, option_line
from .yolo import YoloLayer


class ContrastiveLayer(Layer):
    table_name = "contrastive"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.defaults_log = DefaultsLog()
        # Darknet reads classes= but then takes the class count of the [yolo] layer
        loud_int(s, "classes", 1000, self.defaults_log)
        rel = s.int("yolo_layer", 0)
        yolo_index = index + rel if rel < 0 else rel
        if yolo_index == 0 or not 0 <= yolo_index < index \
                or not isinstance(ctx.layers[yolo_index], YoloLayer):
            raise CfgError(f"[contrastive] yolo_layer={rel} must point to an earlier [yolo] layer "
                           f"(resolves to layer {yolo_index})", file=s.file,
                           line=option_line(s, "yolo_layer"), value=rel)
        yolo = ctx.layers[yolo_index]
        self.yolo_index = yolo_index
        c, h, w = self.in_shape
        self.n_inputs = c * h * w
        self.n = yolo.n
        self.classes = yolo.classes
        self.max_boxes = yolo.max_boxes
        self.embedding_size = self.n_inputs // (self.n * h * w) if h and w else 0
        emb_layer = getattr(yolo, "embedding_layer", 999999)
        yolo_emb = 0
        if emb_layer != 999999 and 0 <= emb_layer < len(ctx.shapes):
            yolo_emb = ctx.shapes[emb_layer][0] // yolo.n
        if self.embedding_size != yolo_emb:
            raise CfgError(f"[contrastive] embedding_size={self.embedding_size} is not equal to the "
                           f"[yolo] layer {yolo_index} embedding_size={yolo_emb}; they should use "
                           "the same [convolutional] layer (embedding_layer= in [yolo])",
                           file=s.file, line=s.line, value=self.embedding_size)
        self.temperature = s.float("temperature", 1.0)
        self.steps = ctx.net.time_steps
        self.cls_normalizer = s.float("cls_normalizer", 1.0)
        self.max_delta = s.float("max_delta", FLT_MAX)
        self.contrastive_neg_max = s.int("contrastive_neg_max", 3)
        self.out_shape = self.in_shape
        #: images per forward pass used in Darknet's printout (net batch after subdivisions)
        self.batch = int(getattr(ctx, "batch", 0) or ctx.net.mini_batch)

    def forward(self, x, outputs):
        return torch.zeros_like(x)

    def table_line(self) -> str:
        c, h, w = self.in_shape
        step = self.batch * self.n * h * w
        return "\n".join(list(self.defaults_log) + [
            f"contrastive {w:4d} x{h:4d} x{self.n:4d} x emb_size {self.embedding_size:4d} x batch: "
            f"{self.batch:4d}  classes = {self.classes:4d}, step = {step:4d} ", "detection "])
