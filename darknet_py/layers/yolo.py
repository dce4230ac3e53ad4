"""``[yolo]``: YOLOv3/v4 detection head (``yolo_layer.c``, ``parse_yolo`` in ``parser.c``).

The layer's input is the raw output of the conv before it, laid out as Darknet's
``(B, n*(4+1+classes), h, w)`` with ``n = len(mask)``. Its output (Darknet's ``l.output``) is the
same tensor with x, y passed through ``logistic * scale_x_y - 0.5*(scale_x_y - 1)`` and objectness
and class scores through the logistic (with ``new_coords=1`` nothing is activated here: the conv
before it already used ``activation=logistic``; only the x,y scale is applied). w and h stay raw.

Box decoding, NMS and the loss read the options kept on this object under Darknet's names.
"""
from __future__ import annotations

import warnings
from typing import List, Optional

import torch

from ..errors import CfgError
from ..structures.heads import HeadSpec
from .base import MAX_ANCHORS, MAX_BOXES, BuildContext, Layer, check_range

IOU_LOSSES = ("mse", "iou", "giou", "diou", "ciou")
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")


class YoloLayer(Layer):
    table_name = "yolo"
    is_head = True

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        c, h, w = self.in_shape
        self.classes = s.int("classes", 20)
        self.total = check_range(s, "num", s.int("num", 1), 0, MAX_ANCHORS)
        if s.has("mask"):
            self.mask: List[int] = s.int_list("mask")
        else:
            self.mask = list(range(self.total))
        self.n = len(self.mask)
        self.max_boxes = check_range(s, "max", s.int("max", 200), 0, MAX_BOXES)
        if self.classes < 1:
            raise s.error(f"classes must be >= 1, got {self.classes}")
        anchors_in_cfg = len(s.float_list("anchors", [])) // 2
        for m in self.mask:
            if m < 0 or (m >= self.total and m >= anchors_in_cfg):
                raise s.error(f"mask index {m} is outside the {self.total} anchors (num={self.total})",
                              value=m)
        beyond = [m for m in self.mask if m >= self.total]
        if beyond:
            # Darknet reads past its num*2 biases here (cspx-p7-mish.cfg has num=16 with
            # mask 16..19 and 20 anchors); use the anchors= values the cfg gives
            warnings.warn(f"{s.file}:{s.line}: [yolo] mask {beyond} >= num={self.total}: Darknet "
                          "reads past its anchors array; darknet-py uses those entries of the "
                          "anchors= list", stacklevel=2)
        expected = self.n * (self.classes + 4 + 1)
        if c != expected:
            raise CfgError(
                f"[yolo] expects {expected} input channels = (classes {self.classes} + 5) x "
                f"{self.n} masks, but the layer before it gives {c}: set filters={expected} in the "
                f"[convolutional] before this [yolo]", file=s.file, line=s.line, value=c)
        self.show_details = s.int("show_details", 1)
        self.max_delta = s.float("max_delta", float(3.4028234663852886e38))
        cpc = s.int_list("counters_per_class", None)
        self.counters_per_class: Optional[List[int]] = cpc
        if cpc is not None and len(cpc) != self.classes:
            raise s.error(f"counters_per_class has {len(cpc)} values but classes={self.classes}")
        self.label_smooth_eps = s.float("label_smooth_eps", 0.0)
        self.scale_x_y = s.float("scale_x_y", 1.0)
        self.objectness_smooth = s.int("objectness_smooth", 0)
        self.new_coords = s.int("new_coords", 0)
        self.iou_normalizer = s.float("iou_normalizer", 0.75)
        self.obj_normalizer = s.float("obj_normalizer", 1.0)
        self.cls_normalizer = s.float("cls_normalizer", 1.0)
        self.delta_normalizer = s.float("delta_normalizer", 1.0)
        iou_loss = s.str("iou_loss", "mse")
        self.iou_loss = iou_loss if iou_loss in IOU_LOSSES else "iou"
        kind = s.str("iou_thresh_kind", "iou")
        self.iou_thresh_kind = kind if kind in ("iou", "giou", "diou", "ciou") else "iou"
        self.beta_nms = s.float("beta_nms", 0.6)
        nms_kind = s.str("nms_kind", "default")
        # Darknet's parse_yolo knows greedynms and diounms; anything else is default (sort) NMS
        self.nms_kind = nms_kind if nms_kind in ("greedynms", "diounms") else "default"
        self.jitter = s.float("jitter", 0.2)
        self.resize = s.float("resize", 1.0)
        self.focal_loss = s.int("focal_loss", 0)
        self.ignore_thresh = s.float("ignore_thresh", 0.5)
        self.truth_thresh = s.float("truth_thresh", 1.0)
        self.iou_thresh = s.float("iou_thresh", 1.0)
        self.random = s.float("random", 0.0)
        self.track_history_size = s.int("track_history_size", 5)
        self.sim_thresh = s.float("sim_thresh", 0.8)
        self.dets_for_track = s.int("dets_for_track", 1)
        self.dets_for_show = s.int("dets_for_show", 1)
        self.track_ciou_norm = s.float("track_ciou_norm", 0.01)
        emb = s.int("embedding_layer", 999999)
        self.embedding_layer = index + emb if emb < 0 else emb
        if emb != 999999:
            self.embedding_layer = ctx.resolve(s, "embedding_layer", emb)
        self.map_file = s.str("map", None)
        anchors = s.float_list("anchors", [])
        if len(anchors) < 2 * self.total:
            anchors = anchors + [0.5] * (2 * self.total - len(anchors))  # Darknet's default bias
        keep = 2 * max([self.total] + [m + 1 for m in self.mask])
        self.anchors: List[float] = anchors[:keep]
        self.out_shape = self.in_shape
        self.w, self.h = w, h

    def head_spec(self) -> HeadSpec:
        """What decoding this head's output needs (see :class:`HeadSpec`)."""
        return HeadSpec(index=self.index, kind="yolo", classes=self.classes, n=self.n,
                        total=self.total, mask=tuple(self.mask), anchors=tuple(self.anchors),
                        w=self.w, h=self.h, scale_x_y=self.scale_x_y, new_coords=self.new_coords,
                        nms_kind=self.nms_kind, beta_nms=self.beta_nms)

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """Darknet's ``l.output`` from the raw input (any batch size)."""
        b, _, h, w = x.shape
        v = x.view(b, self.n, self.classes + 5, h, w)
        if self.new_coords:
            xy = v[:, :, 0:2]
            rest = v[:, :, 2:]
        else:
            xy = torch.sigmoid(v[:, :, 0:2])
            rest = torch.cat([v[:, :, 2:4], torch.sigmoid(v[:, :, 4:])], dim=2)
        if self.scale_x_y != 1.0:
            xy = xy * self.scale_x_y - 0.5 * (self.scale_x_y - 1.0)
        return torch.cat([xy, rest], dim=2).view(b, -1, h, w)

    def forward(self, x, outputs):
        return self.activate(x)

    def table_line(self) -> str:
        return "yolo"

    def params_line(self) -> str:
        return (f"[yolo] params: iou loss: {self.iou_loss} ({IOU_LOSSES_CODES[self.iou_loss]}), "
                f"iou_norm: {self.iou_normalizer:2.2f}, obj_norm: {self.obj_normalizer:2.2f}, "
                f"cls_norm: {self.cls_normalizer:2.2f}, delta_norm: {self.delta_normalizer:2.2f}, "
                f"scale_x_y: {self.scale_x_y:2.2f}")


# Darknet's IOU_LOSS enum: IOU, GIOU, MSE, DIOU, CIOU
IOU_LOSSES_CODES = {"iou": 0, "giou": 1, "mse": 2, "diou": 3, "ciou": 4}
