"""``[Gaussian_yolo]``: Gaussian YOLOv3 head (``gaussian_yolo_layer.c``, ``parse_gaussian_yolo``).

The input is the raw conv output ``(B, n*(8+1+classes), h, w)`` with ``n = len(mask)``; each
anchor's planes are ``x_mu, x_sigma, y_mu, y_sigma, w_mu, w_sigma, h_mu, h_sigma, obj, classes``.
:meth:`GaussianYoloLayer.activate` gives Darknet's ``l.output`` (``forward_gaussian_yolo_layer``):
the logistic on x_mu, x_sigma, y_mu, y_sigma, w_sigma, h_sigma, objectness and classes, then
``x*scale_x_y - 0.5*(scale_x_y - 1)`` on x_mu and y_mu only; w_mu and h_mu stay raw.

The options keep Darknet's names (as :class:`~darknet_py.layers.yolo.YoloLayer` does), plus
``uc_normalizer`` and ``yolo_point`` (``center`` / ``left_top`` / ``right_bottom``).

The box function is :func:`get_gaussian_yolo_box` (decoding and the loss use it). The training
delta is ``forward_gaussian_yolo_layer``'s: ``gaussian_yolo_layer.c`` is a near-copy of
``yolo_layer.c``, so :func:`gaussian_yolo_delta` runs the passes of
:func:`darknet_py.layers.yolo.yolo_family_delta` with this head's geometry (objectness at entry
8) and its box delta :func:`_delta_gaussian_yolo_box`: the Gaussian negative log-likelihood
terms of x, y, w, h and of their sigmas (``mse``), or the (G/D/C)IoU gradient for the means plus
the sigma terms, ``uc_normalizer`` on the sigmas. What differs from ``[yolo]``: box deltas are
averaged over a cell's positive classes always (``averages_gaussian_yolo_deltas``), a NaN
objectness is not zeroed, the IoU that the statistics count is the GIoU for the IoU losses, and
the printed line and its ``class_loss``/``iou_loss``/``uc_loss`` split
(:class:`GaussianYoloLossStats`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch

from ..errors import CfgError
from ..structures.heads import HeadSpec
from .base import FLT_MAX, MAX_ANCHORS, MAX_BOXES, BuildContext, check_range
from .head import (BoxT, DetectionHead, box_giou_tuples, box_iou_tuples, darknet_ratio, dx_box_iou,
                   fix_nan_inf)
from .parse_helpers import DefaultsLog, loud_float, loud_int, loud_str, option_line, read_map
from .yolo import (IOU_LOSSES, IOU_LOSSES_CODES, YoloFamily, YoloLossStats, prediction_grid,
                   yolo_family_delta)

#: Darknet's YOLO_POINT enum (bit flags)
YOLO_POINTS = {"center": 1, "left_top": 2, "right_bottom": 4}


def get_gaussian_yolo_box(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, h: torch.Tensor,
                          gx: torch.Tensor, gy: torch.Tensor, aw: torch.Tensor, ah: torch.Tensor,
                          lw: int, lh: int, net_w: int, net_h: int, yolo_point: str) -> BoxT:
    """``get_gaussian_yolo_box``: the means ``x_mu, y_mu, w_mu, h_mu`` of ``l.output`` at cell
    column/row ``gx, gy`` with anchor ``aw, ah`` (network pixels) -> the box relative to the
    network input; ``yolo_point`` ``left_top``/``right_bottom`` read x, y as that corner.
    ``exp`` in double as in C. Elementwise: arguments broadcast."""
    bw = (torch.exp(w.double()) * aw.double() / net_w).to(w.dtype)
    bh = (torch.exp(h.double()) * ah.double() / net_h).to(h.dtype)
    bx = (gx + x) / lw
    by = (gy + y) / lh
    if yolo_point == "left_top":
        bx, by = bx + bw / 2, by + bh / 2
    elif yolo_point == "right_bottom":
        bx, by = bx - bw / 2, by - bh / 2
    return bx, by, bw, bh


class GaussianYoloLayer(DetectionHead):
    table_name = "Gaussian_yolo"
    kind = "gaussian_yolo"
    type_code = 29
    obj_entry = 8
    box_entries = 8
    gaussian_box_correction = True

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
                raise CfgError(f"[Gaussian_yolo] mask index {m} is outside the num={self.total} "
                               f"anchors (mask indices run 0..{self.total - 1}): set num= to the "
                               "number of anchors", file=s.file, line=option_line(s, "mask"),
                               value=m)
        self.size = 8 + 1 + self.classes
        expected = self.n * self.size
        if c != expected:
            raise CfgError(
                f"[Gaussian_yolo] expects {expected} input channels = (classes {self.classes} + 9) "
                f"x {self.n} masks, but the layer before it gives {c}: set filters={expected} in "
                "the [convolutional] before this [Gaussian_yolo]", file=s.file, line=s.line,
                value=c)
        self.max_delta = s.float("max_delta", FLT_MAX)
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
        #: map= (read_map): label id -> class, applied to the training truths as Darknet does
        self.class_map: Optional[List[int]] = (read_map(s, "map", self.map_file)
                                               if self.map_file else None)
        anchors = s.float_list("anchors", [])
        # make_gaussian_yolo_layer fills every bias with .5; Darknet then reads all the values
        self.anchors: List[float] = (anchors + [0.5] * max(0, 2 * self.total - len(anchors)))[
            : 2 * self.total]
        self._post_lines: List[str] = list(post)
        self.out_shape = self.in_shape
        self.w, self.h = w, h

    def head_spec(self) -> HeadSpec:
        """What decoding this head's output needs (see :class:`HeadSpec`)."""
        return self.make_spec(index=self.index, classes=self.classes, n=self.n,
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

    @classmethod
    def decode_rows(cls, spec, r, gx, gy, aw, ah, net_w, net_h):
        bx, by, bw, bh = get_gaussian_yolo_box(r[..., 0], r[..., 2], r[..., 4], r[..., 6], gx, gy,
                                               aw, ah, spec.w, spec.h, net_w, net_h,
                                               spec.yolo_point)
        obj = r[..., 8]
        uncertainty = r[..., [1, 3, 5, 7]]
        # probabilities obj*cls*(1 - mean sigma), the mean in double as in C
        mean_uc = (uncertainty.double().sum(dim=-1) / 4.0).float().double()
        probs = ((obj.unsqueeze(-1) * r[..., 9:]).double()
                 * (1.0 - mean_uc).unsqueeze(-1)).float()
        rows = torch.cat([torch.stack([bx, by, bw, bh, obj], dim=-1), probs], dim=-1)
        return rows, uncertainty

    def delta(self, output, truth, net_w, net_h, seen=0):
        return gaussian_yolo_delta(output, truth, self, net_w, net_h)

    def table_line(self) -> str:
        line = (f"[Gaussian_yolo] iou loss: {self.iou_loss_text} "
                f"({IOU_LOSSES_CODES[self.iou_loss]}), iou_norm: {self.iou_normalizer:2.2f}, "
                f"obj_norm: {self.obj_normalizer:2.2f}, cls_norm: {self.cls_normalizer:2.2f}, "
                f"delta_norm: {self.delta_normalizer:2.2f}, scale: {self.scale_x_y:2.2f}, "
                f"point: {YOLO_POINTS[self.yolo_point]}")
        return "\n".join(self._pre_lines + [line] + self._post_lines)


# ------------------------------------------------------------------------------------------
# the training delta (forward_gaussian_yolo_layer with state.train)
# ------------------------------------------------------------------------------------------
@dataclass
class GaussianYoloLossStats(YoloLossStats):
    """What ``forward_gaussian_yolo_layer`` adds up and prints. ``cost`` is ``sum(delta**2)``;
    the printed split is Darknet's: ``class_loss`` the objectness and class entries,
    ``iou_loss`` the x and y entries (means and sigmas), ``uc_loss`` the w and h entries (means
    and sigmas), all per image."""

    x_y_sq: float = 0.0       # sum of squares of entries 0..3 (x_mu, x_sigma, y_mu, y_sigma)
    w_h_sq: float = 0.0       # sum of squares of entries 4..7

    def line(self, layer_index: int) -> str:
        """The line ``forward_gaussian_yolo_layer`` prints to stderr (no trailing newline)."""
        b = self.batch
        cells = self.cells or 1
        return (f"Region {layer_index} Avg IOU: {darknet_ratio(self.tot_iou, self.count)}, "
                f"Class: {darknet_ratio(self.avg_cat, self.class_count)}, "
                f"Obj: {darknet_ratio(self.avg_obj, self.count)}, "
                f"No Obj: {self.avg_anyobj / cells:f}, "
                f".5R: {darknet_ratio(self.recall50, self.count)}, "
                f".75R: {darknet_ratio(self.recall75, self.count)},  count: {self.count}, "
                f"class_loss = {self.classification_loss / b:.2f}, "
                f"iou_loss = {self.x_y_sq / b:.2f}, uc_loss = {self.w_h_sq / b:.2f}, "
                f"total_loss = {self.sum_sq / b:.2f} ")

    cells: int = 0


#: (Darknet's constants of delta_gaussian_yolo_box)
_SIGMA_CONST = 0.3
_EPSI = 1e-9
_SQRT_2PI = math.sqrt(math.pi * 2.0)


def _prediction_boxes(opt, out: torch.Tensor) -> BoxT:
    """``get_gaussian_yolo_box`` of every prediction: (B, n, h, w) tensors x, y, w, h."""
    gx, gy, aw, ah = prediction_grid(opt, out)
    return get_gaussian_yolo_box(out[:, :, 0], out[:, :, 2], out[:, :, 4], out[:, :, 6], gx, gy,
                                 aw, ah, opt.w, opt.h, opt.net_w, opt.net_h, opt.yolo_point)


def _delta_gaussian_yolo_box(opt, truth: BoxT, out: torch.Tensor, cell, anchor: torch.Tensor,
                             iou_norm: torch.Tensor):
    """``delta_gaussian_yolo_box`` (accumulate=1) for a list of events: ``(E, 8)`` deltas of
    ``x_mu, x_sigma, y_mu, y_sigma, w_mu, w_sigma, h_mu, h_sigma``, the IoU the statistics count
    (the GIoU for the IoU losses, as Darknet reassigns it), and the IoU and GIoU."""
    lw, lh, net_w, net_h = opt.w, opt.h, opt.net_w, opt.net_h
    b_, a_, j_, i_ = cell
    o = out[b_, a_, :8, j_, i_]                     # (E, 8)
    dtype = o.dtype
    x_mu, x_s, y_mu, y_s, w_mu, w_s, h_mu, h_s = (o[:, k] for k in range(8))
    gi, gj = i_.to(dtype), j_.to(dtype)
    pred = get_gaussian_yolo_box(x_mu, y_mu, w_mu, h_mu, gi, gj, anchor[:, 0], anchor[:, 1],
                                 lw, lh, net_w, net_h, opt.yolo_point)
    tx_, ty_, tw_, th_ = truth
    iou = box_iou_tuples(pred, truth)
    giou = box_giou_tuples(pred, truth)
    px, py, pw, ph = pred
    pw = torch.where(pw == 0, torch.ones_like(pw), pw)
    ph = torch.where(ph == 0, torch.ones_like(ph), ph)
    scale = 2 - tw_ * th_
    tx = tx_ * lw - gi
    ty = ty_ * lh - gj
    if opt.yolo_point == "left_top":
        tx, ty = (tx_ - tw_ / 2) * lw - gi, (ty_ - th_ / 2) * lh - gj
    elif opt.yolo_point == "right_bottom":
        tx, ty = (tx_ + tw_ / 2) * lw - gi, (ty_ + th_ / 2) * lh - gj
    tw = torch.log((tw_ * net_w / anchor[:, 0]).double()).to(dtype)
    th = torch.log((th_ * net_h / anchor[:, 1]).double()).to(dtype)

    def gaussian_terms(d: torch.Tensor, sigma: torch.Tensor):
        # one coordinate's mean and sigma deltas, with C's mix of float and double: each named
        # local is a float, the literals (1., 1./2., M_PI) make some expressions double
        in_exp = d / sigma
        in_exp_2 = (in_exp.double() ** 2).to(dtype)
        s_c = sigma + _SIGMA_CONST
        normal = (torch.exp(in_exp_2.double() * -0.5) / (_SQRT_2PI * s_c.double())).to(dtype)
        temp = (0.5 / (normal + _EPSI).double() * normal.double() * scale.double()).to(dtype)
        delta_mu = (temp.double() * in_exp.double() * (1.0 / sigma.double())).to(dtype)
        delta_sigma = (temp.double() * ((in_exp_2 / sigma).double() - 1.0 / s_c.double())
                       ).to(dtype)
        return delta_mu, delta_sigma

    dx, dux = gaussian_terms(tx - x_mu, x_s)
    dy, duy = gaussian_terms(ty - y_mu, y_s)
    dw, duw = gaussian_terms(tw - w_mu, w_s)
    dh, duh = gaussian_terms(th - h_mu, h_s)
    counted = iou
    if opt.iou_loss != "mse":
        counted = giou
        gdx, gdy, gdw, gdh = dx_box_iou((px, py, pw, ph), truth, opt.iou_loss)
        if opt.yolo_point == "left_top":
            gdx, gdy = gdx - gdw / 2, gdy - gdh / 2
        elif opt.yolo_point == "right_bottom":
            gdx, gdy = gdx + gdw / 2, gdy + gdh / 2
        dx, dy = gdx, gdy
        dw = (gdw.double() * torch.exp(w_mu.double())).to(dtype)
        dh = (gdh.double() * torch.exp(h_mu.double())).to(dtype)
    norm = iou_norm
    means = torch.stack([dx, dy, dw, dh], dim=1) * norm.unsqueeze(1)
    sigmas = torch.stack([dux, duy, duw, duh], dim=1) * opt.uc_norm
    means, sigmas = fix_nan_inf(means), fix_nan_inf(sigmas)
    if opt.clip_delta:
        means = means.clamp(-opt.max_delta, opt.max_delta)
        sigmas = sigmas.clamp(-opt.max_delta, opt.max_delta)
    d = torch.stack([means[:, 0], sigmas[:, 0], means[:, 1], sigmas[:, 1], means[:, 2],
                     sigmas[:, 2], means[:, 3], sigmas[:, 3]], dim=1)
    return d, counted, iou, giou


def _gaussian_costs(opt, st, touched) -> None:
    """``l.cost = sum(delta**2)`` and Darknet's printed split of it."""
    d = st.delta
    stats = st.stats
    stats.sum_sq = float(d.pow(2).sum(dtype=torch.float64))
    stats.x_y_sq = float(d[:, :, 0:4].pow(2).sum(dtype=torch.float64))
    stats.w_h_sq = float(d[:, :, 4:8].pow(2).sum(dtype=torch.float64))
    stats.classification_loss = stats.sum_sq - stats.x_y_sq - stats.w_h_sq
    stats.cost = stats.sum_sq
    stats.cells = opt.B * opt.n * opt.h * opt.w


GAUSSIAN_YOLO = YoloFamily(obj_at=8, prediction_boxes=_prediction_boxes,
                           box_delta=_delta_gaussian_yolo_box, average_always=True,
                           stats_type=GaussianYoloLossStats, costs=_gaussian_costs,
                           zero_bad_objectness=False, trains_unknown_class=True)


def gaussian_yolo_delta(output: torch.Tensor, truth, layer: "GaussianYoloLayer", net_w: int,
                        net_h: int):
    """Darknet's ``forward_gaussian_yolo_layer`` training branch: ``(delta, stats)`` with
    ``delta`` in ``output``'s shape and Darknet's sign (``target - output``, w.r.t. the raw
    input), ``stats`` a :class:`GaussianYoloLossStats`."""
    return yolo_family_delta(output, truth, layer, net_w, net_h, GAUSSIAN_YOLO)
