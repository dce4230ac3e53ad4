"""``[Gaussian_yolo]``: Gaussian YOLOv3 head (``gaussian_yolo_layer.c``, ``parse_gaussian_yolo``).

The input is the raw conv output ``(B, n*(8+1+classes), h, w)`` with ``n = len(mask)``; each
anchor's planes are ``x_mu, x_sigma, y_mu, y_sigma, w_mu, w_sigma, h_mu, h_sigma, obj, classes``.
:meth:`GaussianYoloLayer.activate` gives Darknet's ``l.output`` (``forward_gaussian_yolo_layer``):
the logistic on x_mu, x_sigma, y_mu, y_sigma, w_sigma, h_sigma, objectness and classes, then
``x*scale_x_y - 0.5*(scale_x_y - 1)`` on x_mu and y_mu only; w_mu and h_mu stay raw.

The options keep Darknet's names (as :class:`~darknet_py.layers.yolo.YoloLayer` does), plus
``uc_normalizer`` and ``yolo_point`` (``center`` / ``left_top`` / ``right_bottom``).
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..errors import CfgError
from ..structures.heads import HeadSpec
from .base import MAX_ANCHORS, MAX_BOXES, BuildContext, Layer, check_range
from .parse_helpers import DefaultsLog, loud_float, loud_int, loud_str
from .yolo import IOU_LOSSES, IOU_LOSSES_CODES

#: Darknet's YOLO_POINT enum (bit flags)
YOLO_POINTS = {"center": 1, "left_top": 2, "right_bottom": 4}


class GaussianYoloLayer(Layer):
    table_name = "Gaussian_yolo"
    is_head = True

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        pre = DefaultsLog()
        c, h, w = self.in_shape
        self.classes = loud_int(s, "classes", 20, pre)
        self.max_boxes = check_range(s, "max", s.int("max", 200), 0, MAX_BOXES)
        self.total = check_range(s, "num", loud_int(s, "num", 1, pre), 0, MAX_ANCHORS)
        if s.has("mask"):
            self.mask: List[int] = s.int_list("mask")
        else:
            self.mask = list(range(self.total))
        self.n = len(self.mask)
        if self.classes < 1 or self.total < 1:
            raise s.error(f"need classes >= 1 and num >= 1, got classes={self.classes}, "
                          f"num={self.total}")
        for m in self.mask:
            if not 0 <= m < self.total:
                raise s.error(f"mask index {m} is outside the {self.total} anchors "
                              f"(num={self.total})", value=m)
        self.size = 8 + 1 + self.classes
        expected = self.n * self.size
        if c != expected:
            raise CfgError(
                f"[Gaussian_yolo] expects {expected} input channels = (classes {self.classes} + 9) "
                f"x {self.n} masks, but the layer before it gives {c}: set filters={expected} in "
                "the [convolutional] before this [Gaussian_yolo]", file=s.file, line=s.line,
                value=c)
        self.max_delta = s.float("max_delta", float(3.4028234663852886e38))
        cpc = loud_str(s, "counters_per_class", None, pre)
        self.counters_per_class: Optional[List[int]] = None
        if cpc is not None:
            self.counters_per_class = s.int_list("counters_per_class")
            if len(self.counters_per_class) != self.classes:
                raise s.error(f"counters_per_class has {len(self.counters_per_class)} values but "
                              f"classes={self.classes}")
        self.label_smooth_eps = s.float("label_smooth_eps", 0.0)
        self.scale_x_y = s.float("scale_x_y", 1.0)
        self.objectness_smooth = s.int("objectness_smooth", 0)
        self.uc_normalizer = s.float("uc_normalizer", 1.0)
        self.iou_normalizer = s.float("iou_normalizer", 0.75)
        self.obj_normalizer = s.float("obj_normalizer", 1.0)
        self.cls_normalizer = s.float("cls_normalizer", 1.0)
        self.delta_normalizer = s.float("delta_normalizer", 1.0)
        self.iou_loss_text = s.str("iou_loss", "mse")
        self.iou_loss = self.iou_loss_text if self.iou_loss_text in IOU_LOSSES else "iou"
        kind = s.str("iou_thresh_kind", "iou")
        self.iou_thresh_kind = kind if kind in ("iou", "giou", "diou", "ciou") else "iou"
        self.beta_nms = s.float("beta_nms", 0.6)
        nms_kind = s.str("nms_kind", "default")
        self.nms_kind = nms_kind if nms_kind in ("greedynms", "diounms", "cornersnms") \
            else "default"
        point = s.str("yolo_point", "center")
        self.yolo_point = point if point in YOLO_POINTS else "center"
        self._pre_lines: List[str] = list(pre)
        post = DefaultsLog()
        self.jitter = loud_float(s, "jitter", 0.2, post)
        self.resize = s.float("resize", 1.0)
        self.ignore_thresh = loud_float(s, "ignore_thresh", 0.5, post)
        self.truth_thresh = loud_float(s, "truth_thresh", 1.0, post)
        self.iou_thresh = s.float("iou_thresh", 1.0)
        self.random = s.float("random", 0.0)
        self.map_file = loud_str(s, "map", None, post)
        anchors = s.float_list("anchors", [])
        # make_gaussian_yolo_layer fills every bias with .5; Darknet then reads all the values
        self.anchors: List[float] = (anchors + [0.5] * max(0, 2 * self.total - len(anchors)))[
            : 2 * self.total]
        self._post_lines: List[str] = list(post)
        self.out_shape = self.in_shape
        self.w, self.h = w, h

    def head_spec(self) -> HeadSpec:
        """What decoding this head's output needs (see :class:`HeadSpec`)."""
        return HeadSpec(index=self.index, kind="gaussian_yolo", classes=self.classes, n=self.n,
                        total=self.total, mask=tuple(self.mask), anchors=tuple(self.anchors),
                        w=self.w, h=self.h, scale_x_y=self.scale_x_y, nms_kind=self.nms_kind,
                        beta_nms=self.beta_nms, yolo_point=self.yolo_point)

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """Darknet's ``l.output`` from the raw input ``(B, n*(9+classes), h, w)``."""
        b, _, h, w = x.shape
        v = x.view(b, self.n, self.size, h, w)
        sig = torch.sigmoid(v)
        s = self.scale_x_y
        shift = -0.5 * (s - 1.0)
        x_mu = sig[:, :, 0:1] * s + shift
        y_mu = sig[:, :, 2:3] * s + shift
        out = torch.cat([x_mu, sig[:, :, 1:2], y_mu, sig[:, :, 3:4], v[:, :, 4:5], sig[:, :, 5:6],
                         v[:, :, 6:7], sig[:, :, 7:]], dim=2)
        return out.view(b, -1, h, w)

    def forward(self, x, outputs):
        return self.activate(x)

    def table_line(self) -> str:
        line = (f"[Gaussian_yolo] iou loss: {self.iou_loss_text} "
                f"({IOU_LOSSES_CODES[self.iou_loss]}), iou_norm: {self.iou_normalizer:2.2f}, "
                f"obj_norm: {self.obj_normalizer:2.2f}, cls_norm: {self.cls_normalizer:2.2f}, "
                f"delta_norm: {self.delta_normalizer:2.2f}, scale: {self.scale_x_y:2.2f}, "
                f"point: {YOLO_POINTS[self.yolo_point]}")
        return "\n".join(self._pre_lines + [line] + self._post_lines)
