"""``[yolo]``: YOLOv3/v4 detection head (``yolo_layer.c``, ``parse_yolo`` in ``parser.c``).

Like ``yolo_layer.c`` this module owns the head whole: options, activation, the box function
(:func:`get_yolo_box`, the only one of its kind: decoding, the loss and the ONNX export's decode
graph all use it), detections (:meth:`YoloLayer.decode_rows`) and the training delta
(:func:`yolo_delta`, Darknet's ``forward_yolo_layer`` training branch) with its printed line
(:class:`YoloLossStats`). ``[Gaussian_yolo]`` reuses the delta passes with its own box delta.

The layer's input is the raw output of the conv before it, laid out as Darknet's
``(B, n*(4+1+classes), h, w)`` with ``n = len(mask)``. Its output (Darknet's ``l.output``) is the
same tensor with x, y passed through ``logistic * scale_x_y - 0.5*(scale_x_y - 1)`` and objectness
and class scores through the logistic (with ``new_coords=1`` nothing is activated here: the conv
before it already used ``activation=logistic``; only the x,y scale is applied). w and h stay raw.

Box decoding, NMS and the loss read the options kept on this object under Darknet's names.

The training delta (``forward_yolo_layer`` with ``state.train``): Darknet does not differentiate
a loss function. Each ``[yolo]`` layer writes ``l.delta`` (``target - output``, the *negative*
gradient) directly, and ``backward_yolo_layer`` adds that array unchanged to the delta of the
layer before it, i.e. it is used as the gradient w.r.t. the raw (pre-activation) head input. No
logistic derivative is applied to the x/y, objectness or class entries (for those the "delta
w.r.t. the logistic output" doubles as the cross-entropy gradient w.r.t. the logit), and the w/h
entries of the IoU losses already carry the ``exp(tw)`` factor. The number Darknet reports as the
layer's cost (``l.cost``) is not the potential whose gradient is that delta; it is bookkeeping
(see :class:`YoloLossStats`). :func:`yolo_delta` is vectorised over predictions, truths and images
(no Python loop per prediction, truth or image).

Processing order inside one image (``process_batch``), reproduced here:

1. every prediction: best IoU with any truth; objectness delta ``obj_normalizer * (0 - obj)``
   unless that IoU (only counted when some class score > 0.25) exceeds ``ignore_thresh``; if the
   best IoU exceeds ``truth_thresh`` the prediction is trained like a positive.
2. every truth (in file order): best anchor among *all* ``total`` anchors by shape IoU; if that
   anchor is in this layer's mask, the cell under the truth centre is trained (box delta
   accumulated, objectness and class deltas written); then every other anchor of the mask whose
   shape IoU (``iou_thresh_kind``) with the truth exceeds ``iou_thresh`` is trained too.
3. with ``iou_thresh < 1``, box deltas of cells that got several positive classes are averaged.

Deliberate differences (all in degenerate cases): a truth centre at exactly ``x == 1`` or
``y == 1`` is put in the last cell instead of Darknet's out-of-range write; Darknet's check
"has this cell's class delta been written already" looks at ``delta[class] != 0``, which we track
with a flag instead (they differ only when a class delta is exactly 0, e.g. a saturated logistic);
``state.net.adversarial`` and the bad-label rejection (``equidistant_point``,
``badlabels_*``), which run outside these deltas, are not part of this function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import CfgError
from ..structures.heads import HeadSpec
from .base import FLT_MAX, MAX_ANCHORS, MAX_BOXES, BuildContext, check_range
from .head import (BoxT, DetectionHead, box_giou_tuples, box_iou_kind_tuples, box_iou_tuples,
                   classes_multipliers, dx_box_iou, f32, fix_nan_inf, prepare_truth)
from .parse_helpers import option_line, read_map

IOU_LOSSES = ("mse", "iou", "giou", "diou", "ciou")


def get_yolo_box(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, h: torch.Tensor,
                 gx: torch.Tensor, gy: torch.Tensor, aw: torch.Tensor, ah: torch.Tensor,
                 lw: int, lh: int, net_w: int, net_h: int, new_coords: bool) -> BoxT:
    """``get_yolo_box``: the entries ``x, y, w, h`` of ``l.output`` at cell column/row ``gx, gy``
    with anchor ``aw, ah`` (network pixels) -> the box relative to the network input.

    ``bx = (i + x)/l.w``; ``bw = exp(w)*anchor_w/net_w`` with ``exp`` in double as in C (the
    result rounded to the input dtype), or ``4*w^2*anchor_w/net_w`` with ``new_coords=1``.
    Elementwise: arguments broadcast."""
    bx = (gx + x) / lw
    by = (gy + y) / lh
    if new_coords:
        bw = w * w * 4 * aw / net_w
        bh = h * h * 4 * ah / net_h
    else:
        bw = (torch.exp(w.double()) * aw.double() / net_w).to(w.dtype)
        bh = (torch.exp(h.double()) * ah.double() / net_h).to(h.dtype)
    return bx, by, bw, bh


class YoloLayer(DetectionHead):
    table_name = "yolo"
    kind = "yolo"
    type_code = 28

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
        for m in self.mask:
            # Darknet allocates num*2 biases and reads past them for such a mask (cspx-p7-mish.cfg
            # has num=16 with mask 16..19): its boxes and loss use whatever memory follows
            if not 0 <= m < self.total:
                raise CfgError(f"[yolo] mask index {m} is outside the num={self.total} anchors "
                               f"(mask indices run 0..{self.total - 1}; Darknet reads past its "
                               "anchors array here): set num= to the number of anchors",
                               file=s.file, line=option_line(s, "mask"), value=m)
        expected = self.n * (self.classes + 4 + 1)
        if c != expected:
            raise CfgError(
                f"[yolo] expects {expected} input channels = (classes {self.classes} + 5) x "
                f"{self.n} masks, but the layer before it gives {c}: set filters={expected} in the "
                f"[convolutional] before this [yolo]", file=s.file, line=s.line, value=c)
        self.show_details = s.int("show_details", 1)
        self.max_delta = s.float("max_delta", FLT_MAX)
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
        #: map= (read_map): label id -> class, applied to the training truths as Darknet does
        self.class_map: Optional[List[int]] = (read_map(s, "map", self.map_file)
                                               if self.map_file else None)
        anchors = s.float_list("anchors", [])
        if len(anchors) < 2 * self.total:
            anchors = anchors + [0.5] * (2 * self.total - len(anchors))  # Darknet's default bias
        self.anchors: List[float] = anchors[:2 * self.total]
        self.out_shape = self.in_shape
        self.w, self.h = w, h

    def head_spec(self) -> HeadSpec:
        """What decoding this head's output needs (see :class:`HeadSpec`)."""
        return self.make_spec(index=self.index, classes=self.classes, n=self.n,
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

    @classmethod
    def decode_rows(cls, spec, r, gx, gy, aw, ah, net_w, net_h):
        bx, by, bw, bh = get_yolo_box(r[..., 0], r[..., 1], r[..., 2], r[..., 3], gx, gy, aw, ah,
                                      spec.w, spec.h, net_w, net_h, bool(spec.new_coords))
        obj = r[..., 4]
        probs = obj.unsqueeze(-1) * r[..., 5:]
        return torch.cat([torch.stack([bx, by, bw, bh, obj], dim=-1), probs], dim=-1), None

    def delta(self, output, truth, net_w, net_h, seen=0):
        return yolo_delta(output, truth, self, net_w, net_h)

    def table_line(self) -> str:
        return "yolo"

    def params_line(self) -> str:
        return (f"[yolo] params: iou loss: {self.iou_loss} ({IOU_LOSSES_CODES[self.iou_loss]}), "
                f"iou_norm: {self.iou_normalizer:2.2f}, obj_norm: {self.obj_normalizer:2.2f}, "
                f"cls_norm: {self.cls_normalizer:2.2f}, delta_norm: {self.delta_normalizer:2.2f}, "
                f"scale_x_y: {self.scale_x_y:2.2f}")


# Darknet's IOU_LOSS enum: IOU, GIOU, MSE, DIOU, CIOU
IOU_LOSSES_CODES = {"iou": 0, "giou": 1, "mse": 2, "diou": 3, "ciou": 4}


# ------------------------------------------------------------------------------------------
# the training delta (forward_yolo_layer with state.train)
# ------------------------------------------------------------------------------------------
@dataclass
class YoloLossStats:
    """What one ``[yolo]`` layer's training forward adds up (Darknet's locals of the same names).

    ``cost`` is ``l.cost[0]``: ``sum(delta**2)`` for ``iou_loss=mse`` (or ``show_details=0``),
    otherwise ``iou_normalizer * mean(1 - iou)`` (``1 - giou`` for giou) + ``classification_loss``.
    The printed ``total_loss`` is ``sum(delta**2) / batch``.
    """

    batch: int
    iou_loss: str
    iou_normalizer: float
    obj_normalizer: float
    cls_normalizer: float
    show_details: int = 1
    count: int = 0
    class_count: int = 0
    tot_iou: float = 0.0
    tot_iou_loss: float = 0.0
    tot_giou_loss: float = 0.0
    recall50: int = 0
    recall75: int = 0
    avg_obj: float = 0.0       # sum of objectness at trained cells (Darknet's avg_obj before /count)
    avg_cat: float = 0.0       # sum of the truth-class score at trained cells
    avg_anyobj: float = 0.0    # sum of objectness over all predictions
    sum_sq: float = 0.0        # sum(delta**2) over the whole layer
    classification_loss: float = 0.0  # obj_normalizer * sum(delta**2) without the box entries
    cost: float = 0.0          # l.cost[0]
    total_bbox: int = 0        # Darknet's net.total_bbox increments of this layer
    rewritten_bbox: int = 0    # ...and net.rewritten_bbox increments

    @property
    def avg_iou(self) -> float:
        return self.tot_iou / max(self.count, 1)

    @property
    def iou_loss_printed(self) -> float:
        """The printed ``iou_loss`` (per image): the box part of ``sum(delta**2)``."""
        return (self.sum_sq - self.classification_loss) / self.batch

    @property
    def class_loss_printed(self) -> float:
        return self.classification_loss / self.batch

    @property
    def total_loss_printed(self) -> float:
        return self.sum_sq / self.batch

    def line(self, layer_index: int) -> str:
        """The line ``forward_yolo_layer`` prints to stderr (without the trailing newline)."""
        name = "mse" if self.iou_loss == "mse" else ("giou" if self.iou_loss == "giou" else "iou")
        count = max(self.count, 1)
        head = (f"v3 ({name} loss, Normalizer: (iou: {self.iou_normalizer:.2f}, "
                f"obj: {self.obj_normalizer:.2f}, cls: {self.cls_normalizer:.2f}) "
                f"Region {layer_index} Avg (IOU: {self.tot_iou / count:f}), count: {count}, ")
        if not self.show_details:
            return head + f"total_loss = {self.total_loss_printed:f} "
        return head + (f"class_loss = {self.class_loss_printed:f}, "
                       f"iou_loss = {self.iou_loss_printed:f}, "
                       f"total_loss = {self.total_loss_printed:f} ")


# ------------------------------------------------------------------------------------------
# the deltas


@dataclass
class _YoloOptions:
    """One ``[yolo]`` layer's options as ``forward_yolo_layer`` sees them (each option a C float),
    with the shapes of this forward."""

    B: int
    n: int
    C: int
    h: int
    w: int
    net_w: int
    net_h: int
    total: int
    mask: List[int]
    mask_idx: torch.Tensor
    anchors: torch.Tensor          # (total, 2) in network pixels
    iou_loss: str
    iou_norm: float
    obj_norm: float
    cls_norm: float
    ignore_thresh: float
    truth_thresh: float
    iou_thresh: float
    iou_thresh_kind: str
    max_delta: float
    clip_delta: bool
    smooth_eps: float
    focal: bool
    obj_smooth: bool
    new_coords: bool
    cmul: Optional[torch.Tensor]   # classes_multipliers (counters_per_class)
    class_map: Optional[Sequence[int]]
    show_details: int
    geo: "YoloFamily"
    yolo_point: str = "center"      # [Gaussian_yolo]
    uc_norm: float = 1.0            # [Gaussian_yolo] uc_normalizer

    @property
    def obj_at(self) -> int:
        return self.geo.obj_at

    @property
    def cls_at(self) -> int:
        return self.geo.obj_at + 1

    @property
    def nbox(self) -> int:
        return self.geo.obj_at

    def y_true(self, positive: bool) -> float:
        """The class target (``label_smooth_eps`` applied)."""
        v = 1.0 if positive else 0.0
        if self.smooth_eps:
            v = f32(v * f32(1 - self.smooth_eps) + 0.5 * self.smooth_eps)
        return v

    def new_stats(self) -> "YoloLossStats":
        return self.geo.stats_type(batch=self.B, iou_loss=self.iou_loss,
                                   iou_normalizer=self.iou_norm, obj_normalizer=self.obj_norm,
                                   cls_normalizer=self.cls_norm, show_details=self.show_details)


@dataclass(frozen=True)
class YoloFamily:
    """What differs between ``yolo_layer.c`` and its near-copy ``gaussian_yolo_layer.c`` inside
    the shared delta passes: where objectness sits (the box entries come before it, the classes
    after it), the box function of every prediction, the box delta of a trained cell, whether
    box deltas are averaged over a cell's positive classes always or only with ``iou_thresh < 1``
    (``averages_*_deltas``), and the statistics type (its printed line)."""

    obj_at: int
    #: (opt, out) -> the (B, n, h, w) boxes x, y, w, h of every prediction
    prediction_boxes: Callable[["_YoloOptions", torch.Tensor], BoxT]
    #: (opt, truth, out, (b, a, j, i), anchor, iou_norm) -> ((E, obj_at) box delta, the IoU the
    #: stats count, IoU, GIoU) for a list of events
    box_delta: Callable[..., Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    average_always: bool
    stats_type: type
    #: (opt, state, touched cells) -> sets ``l.cost`` and the printed sums on the stats
    costs: Callable[..., None]
    #: whether pass 1 zeroes a NaN/inf objectness (``yolo_layer.c`` does, for images with truths)
    zero_bad_objectness: bool = True
    #: whether pass 2 trains a truth whose class is outside ``0..classes-1`` (box, objectness,
    #: every class towards 0): ``gaussian_yolo_layer.c`` checks the class in pass 1 only
    trains_unknown_class: bool = False


@dataclass
class _Truths:
    """The truths of a batch as (B, T) tensors; ``usable``: in an image's list with a valid class."""

    T: int
    any_truth: bool
    t_x: Optional[torch.Tensor] = None
    t_y: Optional[torch.Tensor] = None
    t_w: Optional[torch.Tensor] = None
    t_h: Optional[torch.Tensor] = None
    t_cls: Optional[torch.Tensor] = None
    usable: Optional[torch.Tensor] = None
    has_truth: Optional[torch.Tensor] = None
    in_list: Optional[torch.Tensor] = None   # in an image's list, whatever the class
    known: Optional[torch.Tensor] = None     # class in 0..classes-1


@dataclass
class _DeltaState:
    """What the passes write: the delta buffer (B, n, 5+C, h, w), the objectness plane, the cells
    whose box/class deltas were written, and the statistics."""

    out: torch.Tensor
    o_obj: torch.Tensor
    delta: torch.Tensor
    obj_delta: torch.Tensor
    stats: "YoloLossStats"
    touched_parts: List[torch.Tensor]
    cls_written_cells: torch.Tensor


def _yolo_options(layer: Any, B: int, h: int, w: int, net_w: int, net_h: int, device,
                  dtype, geo: YoloFamily) -> _YoloOptions:
    n = int(layer.n)
    total = int(layer.total)
    mask = [int(m) for m in layer.mask]
    max_delta = f32(getattr(layer, "max_delta", FLT_MAX))
    cm_list = classes_multipliers(layer)
    return _YoloOptions(
        B=B, n=n, C=int(layer.classes), h=h, w=w, net_w=net_w, net_h=net_h, total=total,
        mask=mask, mask_idx=torch.tensor(mask, device=device, dtype=torch.long),
        anchors=torch.tensor([float(a) for a in layer.anchors], dtype=dtype,
                             device=device).view(-1, 2)[:total],
        iou_loss=str(layer.iou_loss).lower(),
        iou_norm=f32(layer.iou_normalizer), obj_norm=f32(layer.obj_normalizer),
        cls_norm=f32(layer.cls_normalizer), ignore_thresh=f32(layer.ignore_thresh),
        truth_thresh=f32(layer.truth_thresh), iou_thresh=f32(layer.iou_thresh),
        iou_thresh_kind=str(getattr(layer, "iou_thresh_kind", "iou")).lower(),
        max_delta=max_delta, clip_delta=max_delta != FLT_MAX,
        smooth_eps=f32(getattr(layer, "label_smooth_eps", 0.0)),
        focal=bool(getattr(layer, "focal_loss", 0)),
        obj_smooth=bool(getattr(layer, "objectness_smooth", 0)),
        new_coords=bool(getattr(layer, "new_coords", 0)),
        cmul=torch.tensor(cm_list, dtype=dtype, device=device) if cm_list is not None else None,
        class_map=getattr(layer, "class_map", None),
        show_details=int(getattr(layer, "show_details", 1)), geo=geo,
        yolo_point=str(getattr(layer, "yolo_point", "center")),
        uc_norm=f32(getattr(layer, "uc_normalizer", 1.0)))


def _truths_from_rows(t: torch.Tensor, in_prefix: torch.Tensor, opt: _YoloOptions) -> _Truths:
    """``_Truths`` of rows ``t`` (B, T, >=5) whose ``in_prefix`` rows are in an image's list."""
    device = t.device
    T = t.shape[1]
    if not T:
        return _Truths(T=0, any_truth=False)
    C = opt.C
    t_cls_raw = t[..., 4].to(torch.long)  # C's (int) truncation
    cls_ok = (t_cls_raw >= 0) & (t_cls_raw < C)
    if opt.class_map is not None:      # a label without a map entry: Darknet reads past the map
        cls_ok = cls_ok & (t_cls_raw < len(opt.class_map))
    usable = in_prefix & cls_ok  # (B, T)
    t_cls = t_cls_raw.clamp(0, C - 1)
    if opt.class_map is not None:
        cmap = torch.as_tensor(opt.class_map, device=device, dtype=torch.long)
        t_cls = cmap[t_cls.clamp(max=len(opt.class_map) - 1)].clamp(0, C - 1)
    has_truth = usable.any(1)  # (B,)
    return _Truths(T=T, any_truth=bool(has_truth.any()), t_x=t[..., 0], t_y=t[..., 1],
                   t_w=t[..., 2], t_h=t[..., 3], t_cls=t_cls, usable=usable,
                   has_truth=has_truth, in_list=in_prefix, known=cls_ok)


def yolo_delta(output: torch.Tensor, truth: Union[torch.Tensor, np.ndarray], layer: Any,
               net_w: int, net_h: int) -> Tuple[torch.Tensor, YoloLossStats]:
    """Darknet's ``forward_yolo_layer`` training branch (``process_batch`` for every image).

    Args:
        output: Darknet's activated ``l.output``, shape ``(B, n*(5+C), h, w)`` (or
            ``(B, n, 5+C, h, w)``), as :meth:`YoloLayer.activate` returns it.
        truth: ``(B, max_boxes, 5 or 6)`` rows ``(x, y, w, h, class[, track])`` relative to the
            image; each image's list ends at the first row with ``x == 0``.
        layer: a :class:`~darknet_py.layers.yolo.YoloLayer` (or anything with its attributes).
        net_w, net_h: network input size (anchors are in its pixels).

    Returns:
        ``(delta, stats)``: ``delta`` has ``output``'s shape and Darknet's sign
        (``target - output``); ``stats`` the counts/sums Darknet prints (:class:`YoloLossStats`).

    The passes, in Darknet's order: :func:`_every_prediction_pass` (1),
    :func:`_every_truth_pass` (2), :func:`_average_boxes` (3), then :func:`_yolo_costs`.
    """
    return yolo_family_delta(output, truth, layer, net_w, net_h, YOLO)


def yolo_family_delta(output: torch.Tensor, truth: Union[torch.Tensor, np.ndarray], layer: Any,
                      net_w: int, net_h: int, geo: YoloFamily):
    """The passes of :func:`yolo_delta` for a head of the yolo family described by ``geo``."""
    in_shape = output.shape
    n, C = int(layer.n), int(layer.classes)
    if output.dim() == 4:
        B, _, h, w = output.shape
        out = output.detach().reshape(B, n, C + geo.obj_at + 1, h, w)
    else:
        B, _, _, h, w = output.shape
        out = output.detach()
    device, dtype = out.device, out.dtype
    opt = _yolo_options(layer, B, h, w, net_w, net_h, device, dtype, geo)
    tr = _yolo_truths(truth, opt, device, dtype)

    # One delta buffer, (B, n, entries, h, w). The dense work is the objectness plane; box and
    # class entries are written only at the cells a truth trains (sparse index writes).
    o_obj = out[:, :, opt.obj_at]
    # Darknet zeroes a NaN/inf objectness inside the truth loop (so only for images with truths)
    if tr.any_truth and geo.zero_bad_objectness:
        bad_obj = ~torch.isfinite(o_obj) & tr.has_truth.view(B, 1, 1, 1)
        if bool(bad_obj.any()):
            o_obj = torch.where(bad_obj, torch.zeros_like(o_obj), o_obj)
    st = _DeltaState(out=out, o_obj=o_obj, delta=torch.zeros_like(out),
                     obj_delta=opt.obj_norm * (0 - o_obj), stats=opt.new_stats(),
                     touched_parts=[],
                     cls_written_cells=torch.zeros(0, dtype=torch.long, device=device))
    st.stats.avg_anyobj = float(o_obj.sum())
    if tr.any_truth:
        _every_prediction_pass(opt, tr, st)
        _every_truth_pass(opt, tr, st)
    st.delta[:, :, opt.obj_at] = st.obj_delta
    touched = _average_boxes(opt, st)
    geo.costs(opt, st, touched)
    return st.delta.reshape(in_shape), st.stats


def prediction_grid(opt: _YoloOptions, out: torch.Tensor):
    """Cell column, cell row and anchor width/height of every prediction of ``out`` (B, n,
    entries, h, w), broadcastable to (B, n, h, w)."""
    n, h, w = opt.n, opt.h, opt.w
    device, dtype = out.device, out.dtype
    gy = torch.arange(h, device=device, dtype=dtype).view(1, 1, h, 1)
    gx = torch.arange(w, device=device, dtype=dtype).view(1, 1, 1, w)
    aw = opt.anchors[opt.mask_idx, 0].view(1, n, 1, 1)
    ah = opt.anchors[opt.mask_idx, 1].view(1, n, 1, 1)
    return gx, gy, aw, ah


def _prediction_boxes(opt: _YoloOptions, out: torch.Tensor) -> BoxT:
    """``get_yolo_box`` of every prediction: (B, n, h, w) tensors x, y, w, h."""
    gx, gy, aw, ah = prediction_grid(opt, out)
    h, w = opt.h, opt.w
    return get_yolo_box(out[:, :, 0], out[:, :, 1], out[:, :, 2], out[:, :, 3], gx, gy, aw, ah,
                        w, h, opt.net_w, opt.net_h, opt.new_coords)


def _best_truth_iou(opt: _YoloOptions, tr: _Truths, pred: BoxT
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best IoU of every prediction with its image's truths, and which truth: (B, n, h, w) each.
    Computed over (B, n, h, w, T) in chunks of images to bound memory."""
    B, T = opt.B, tr.T
    P = opt.n * opt.h * opt.w
    chunk = max(1, int(8_000_000 // max(1, P * T)))
    best_iou_parts, best_t_parts = [], []
    for b0 in range(0, B, chunk):
        sl = slice(b0, b0 + chunk)
        p = tuple(v[sl].unsqueeze(-1) for v in pred)
        t = tuple(v[sl].view(-1, 1, 1, 1, T) for v in (tr.t_x, tr.t_y, tr.t_w, tr.t_h))
        ious = box_iou_tuples(p, t)  # type: ignore[arg-type]
        ious = ious.masked_fill(~tr.usable[sl].view(-1, 1, 1, 1, T), 0)
        bi, bt = ious.max(dim=-1)  # first maximum, like Darknet's strict '>'
        best_iou_parts.append(bi)
        best_t_parts.append(bt)
    best_iou = torch.cat(best_iou_parts, 0) if len(best_iou_parts) > 1 else best_iou_parts[0]
    best_t = torch.cat(best_t_parts, 0) if len(best_t_parts) > 1 else best_t_parts[0]
    return best_iou, best_t


def _every_prediction_pass(opt: _YoloOptions, tr: _Truths, st: _DeltaState) -> None:
    """Pass 1: every prediction's objectness (ignored above ``ignore_thresh``), and predictions
    whose best IoU exceeds ``truth_thresh`` trained as positives."""
    out, o_obj, delta = st.out, st.o_obj, st.delta
    n, h, w = opt.n, opt.h, opt.w
    obj_norm, cmul = opt.obj_norm, opt.cmul
    best_iou, best_t = _best_truth_iou(opt, tr, opt.geo.prediction_boxes(opt, out))
    # compare_yolo_class: some class score above 0.25 (checked only when a truth exists)
    class_match = out[:, :, opt.cls_at:].amax(dim=2) > 0.25
    best_match_iou = torch.where(class_match, best_iou, torch.zeros_like(best_iou))
    ignore = best_match_iou > opt.ignore_thresh
    if opt.obj_smooth:
        cand = obj_norm * (best_match_iou - o_obj)
        st.obj_delta = torch.where(ignore & (cand > st.obj_delta), cand, st.obj_delta)
    else:
        st.obj_delta = st.obj_delta.masked_fill(ignore, 0)

    positive = best_iou > opt.truth_thresh
    if not bool(positive.any()):
        return
    pb_, pa_, pj_, pi_ = positive.nonzero(as_tuple=True)
    pt_ = best_t[pb_, pa_, pj_, pi_]
    cid = tr.t_cls[pb_, pt_]
    cm_e = cmul[cid] if cmul is not None else torch.ones_like(pt_, dtype=out.dtype)
    biou = best_iou[pb_, pa_, pj_, pi_]
    iou_mult = biou * biou
    obj_e = o_obj[pb_, pa_, pj_, pi_]
    if opt.obj_smooth:
        st.obj_delta[pb_, pa_, pj_, pi_] = obj_norm * (iou_mult - obj_e)
    else:
        st.obj_delta[pb_, pa_, pj_, pi_] = obj_norm * (1 - obj_e)
    ocls = out[pb_, pa_, opt.cls_at:, pj_, pi_]  # (E, C)
    full = _class_full_write(ocls, cid, opt.y_true, opt.focal, cmul, opt.cls_norm,
                             torch.zeros_like(ocls))
    rows = torch.arange(full.shape[0], device=out.device)
    if opt.obj_smooth:
        full[rows, cid] = cm_e * (iou_mult - ocls[rows, cid])
    delta[pb_, pa_, opt.cls_at:, pj_, pi_] = full
    tbox = tuple(v[pb_, pt_] for v in (tr.t_x, tr.t_y, tr.t_w, tr.t_h))
    d, _, _, _ = opt.geo.box_delta(opt, tbox, out, (pb_, pa_, pj_, pi_),
                                   opt.anchors[opt.mask_idx[pa_]], opt.iou_norm * cm_e)
    delta[pb_, pa_, :opt.nbox, pj_, pi_] += d
    flat1 = ((pb_ * n + pa_) * h + pj_) * w + pi_
    st.touched_parts.append(flat1)
    st.cls_written_cells = flat1
    st.stats.total_bbox += int(pb_.numel())


def _truth_events(opt: _YoloOptions, tr: _Truths):
    """Pass 2's (image, truth, anchor) events in Darknet's order (truth by truth, best anchor
    first, then the other anchors of the mask above ``iou_thresh``, ascending): ``(eb, et, en)``
    index tensors (``en`` indexes all ``total`` anchors)."""
    device, dtype = tr.t_w.device, tr.t_w.dtype
    total, T = opt.total, tr.T
    zeros_bt = torch.zeros_like(tr.t_w)
    tshift = (zeros_bt.unsqueeze(-1), zeros_bt.unsqueeze(-1), tr.t_w.unsqueeze(-1),
              tr.t_h.unsqueeze(-1))
    zero_a = torch.zeros(total, device=device, dtype=dtype)
    abox = tuple(v.view(1, 1, total) for v in
                 (zero_a, zero_a, opt.anchors[:, 0] / opt.net_w, opt.anchors[:, 1] / opt.net_h))
    shape_iou = box_iou_tuples(abox, tshift)  # type: ignore[arg-type]  (B, T, total)
    best_n = shape_iou.argmax(dim=-1)  # first maximum (all-zero -> 0, as Darknet)
    in_mask = (_mask_positions(opt) >= 0).view(1, 1, total)
    anchor_ids = torch.arange(total, device=device)
    is_best = anchor_ids.view(1, 1, total) == best_n.unsqueeze(-1)
    usable = (tr.in_list if opt.geo.trains_unknown_class else tr.usable).unsqueeze(-1)
    events = usable & in_mask & is_best
    if opt.iou_thresh < 1.0:
        kind_iou = box_iou_kind_tuples(abox, tshift, opt.iou_thresh_kind)  # type: ignore[arg-type]
        events = events | (usable & in_mask & ~is_best & (kind_iou > opt.iou_thresh))
    eb, et, en = events.nonzero(as_tuple=True)
    if eb.numel():
        order = et * (total + 1) + torch.where(is_best[eb, et, en], torch.zeros_like(en), en + 1)
        perm = torch.argsort(order + eb * (T * (total + 1)))
        eb, et, en = eb[perm], et[perm], en[perm]
    return eb, et, en


def _mask_positions(opt: _YoloOptions) -> torch.Tensor:
    """For each of the ``total`` anchors, its (first) position in this layer's mask, or -1."""
    pos = [-1] * opt.total
    for k, m in enumerate(opt.mask):
        if pos[m] < 0:
            pos[m] = k
    return torch.tensor(pos, device=opt.mask_idx.device, dtype=torch.long)


def _every_truth_pass(opt: _YoloOptions, tr: _Truths, st: _DeltaState) -> None:
    """Pass 2: every truth trains the cell under its centre for its best anchor (and the other
    anchors above ``iou_thresh``): box deltas accumulate, objectness and class deltas are
    written in event order."""
    eb, et, en = _truth_events(opt, tr)
    E = int(eb.numel())
    if not E:
        return
    out, delta = st.out, st.delta
    n, h, w = opt.n, opt.h, opt.w
    device, dtype = out.device, out.dtype
    cmul = opt.cmul
    ea = _mask_positions(opt)[en]
    cx, cy = tr.t_x[eb, et], tr.t_y[eb, et]
    if opt.yolo_point == "left_top":        # [Gaussian_yolo] yolo_point: the cell under a corner
        cx, cy = cx - tr.t_w[eb, et] / 2, cy - tr.t_h[eb, et] / 2
    elif opt.yolo_point == "right_bottom":
        cx, cy = cx + tr.t_w[eb, et] / 2, cy + tr.t_h[eb, et] / 2
    ei = (cx * w).to(torch.long).clamp(0, w - 1)
    ej = (cy * h).to(torch.long).clamp(0, h - 1)
    cid = tr.t_cls[eb, et]
    known = tr.known[eb, et]
    cm_e = torch.ones(E, dtype=dtype, device=device)
    if cmul is not None:
        cm_e = torch.where(known, cmul[cid], cm_e)
    tbox = tuple(v[eb, et] for v in (tr.t_x, tr.t_y, tr.t_w, tr.t_h))
    d, counted_e, ious_e, gious_e = opt.geo.box_delta(opt, tbox, out, (eb, ea, ej, ei),
                                                      opt.anchors[en], opt.iou_norm * cm_e)

    flat = ((eb * n + ea) * h + ej) * w + ei  # cell id in (B, n, h, w) order
    is_first, is_last = _first_and_last_event_of_cell(flat)

    # rewritten_bbox: box delta of the cell already non-zero before this event
    pre_touched = torch.zeros(E, dtype=torch.bool, device=device)
    if st.touched_parts:
        pre_touched = torch.isin(flat, st.touched_parts[0])
    st.stats.rewritten_bbox += int((~is_first | pre_touched).sum())
    st.stats.total_bbox += E

    # box deltas accumulate (index_put_ with accumulate adds duplicates)
    nb = opt.nbox
    k4 = torch.arange(nb, device=device).repeat(E)
    rep = lambda v: v.repeat_interleave(nb)  # noqa: E731
    delta.index_put_((rep(eb), rep(ea), k4, rep(ej), rep(ei)), d.reshape(-1), accumulate=True)

    # objectness: last event of the cell wins (objectness_smooth: first, only if still 0)
    obj_e = st.o_obj[eb, ea, ej, ei]
    obj_val = cm_e * opt.obj_norm * (1 - obj_e)
    if opt.obj_smooth:
        sel = is_first & (st.obj_delta[eb, ea, ej, ei] == 0)
    else:
        sel = is_last
    st.obj_delta[eb[sel], ea[sel], ej[sel], ei[sel]] = obj_val[sel]

    _truth_class_deltas(opt, st, (eb, ea, ej, ei), cid, flat, is_first, known)
    st.touched_parts.append(flat)

    stats = st.stats
    stats.count += E
    stats.class_count += E
    stats.tot_iou += float(counted_e.double().sum())
    stats.tot_iou_loss += float((1 - ious_e.double()).sum())
    stats.tot_giou_loss += float((1 - gious_e.double()).sum())
    stats.recall50 += int((counted_e > 0.5).sum())
    stats.recall75 += int((counted_e > 0.75).sum())
    stats.avg_obj += float(obj_e.double().sum())
    stats.avg_cat += float(out[eb[known], ea[known], cid[known] + opt.cls_at, ej[known],
                               ei[known]].double().sum())


def _first_and_last_event_of_cell(flat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per event: is it the first / the last event of its cell (events are in order)."""
    E = flat.numel()
    ev_idx = torch.arange(E, device=flat.device)
    uniq, inverse = torch.unique(flat, return_inverse=True)
    first_ev = torch.full((uniq.numel(),), E, device=flat.device, dtype=torch.long)
    first_ev.scatter_reduce_(0, inverse, ev_idx, reduce="amin")
    last_ev = torch.full((uniq.numel(),), -1, device=flat.device, dtype=torch.long)
    last_ev.scatter_reduce_(0, inverse, ev_idx, reduce="amax")
    return first_ev[inverse] == ev_idx, last_ev[inverse] == ev_idx


def _truth_class_deltas(opt: _YoloOptions, st: _DeltaState, cell, cid: torch.Tensor,
                        flat: torch.Tensor, is_first: torch.Tensor, known: torch.Tensor) -> None:
    """Pass 2's classes: the first event of a cell not yet written overwrites all classes;
    every later event only rewrites its own class entry. An event of an unknown class
    (``[Gaussian_yolo]``) trains every class towards 0 on a fresh cell, and writes nothing on a
    written one (Darknet writes past the cell's classes there)."""
    eb, ea, ej, ei = cell
    out, delta, cmul = st.out, st.delta, opt.cmul
    full_sel = is_first
    if st.cls_written_cells.numel():
        full_sel = full_sel & ~torch.isin(flat, st.cls_written_cells)
    if bool(full_sel.any()):
        fb, fa, fj, fi = eb[full_sel], ea[full_sel], ej[full_sel], ei[full_sel]
        c0 = opt.cls_at
        ocls = out[fb, fa, c0:, fj, fi]
        delta[fb, fa, c0:, fj, fi] = _class_full_write(
            ocls, cid[full_sel], opt.y_true, opt.focal, cmul, opt.cls_norm,
            delta[fb, fa, c0:, fj, fi], known[full_sel])
    single = ~full_sel & known
    if bool(single.any()):
        sb, sa, sj, si = eb[single], ea[single], ej[single], ei[single]
        sc = cid[single] + opt.cls_at
        val = opt.y_true(True) - out[sb, sa, sc, sj, si]
        if cmul is not None:
            val = val * cmul[sc - opt.cls_at]
        old = delta[sb, sa, sc, sj, si]
        delta[sb, sa, sc, sj, si] = torch.where(torch.isfinite(val), val, old)


def _average_boxes(opt: _YoloOptions, st: _DeltaState):
    """Pass 3 (``iou_thresh < 1``, or always for ``[Gaussian_yolo]``): the box delta of a cell
    with several positive classes is divided by their number. Returns the touched cells as
    (b, a, j, i) index tensors, or None."""
    if not st.touched_parts:
        return None
    n, h, w = opt.n, opt.h, opt.w
    touched = torch.unique(torch.cat(st.touched_parts))
    tb_ = touched // (n * h * w)
    ta_ = (touched // (h * w)) % n
    tj_ = (touched // w) % h
    ti_ = touched % w
    if opt.geo.average_always or opt.iou_thresh < 1.0:
        delta, o, nb = st.delta, opt.obj_at, opt.nbox
        cells = delta[tb_, ta_, :, tj_, ti_]  # (K, entries)
        n_pos = (cells[:, o + 1:] > 0).sum(dim=1, keepdim=True).to(delta.dtype)
        avg = n_pos > 0
        if not opt.geo.average_always:     # averages_yolo_deltas only where objectness trains
            avg = avg & (cells[:, o:o + 1] != 0)
        boxes = torch.where(avg, cells[:, :nb] / n_pos.clamp(min=1), cells[:, :nb])
        delta[tb_, ta_, :nb, tj_, ti_] = boxes
    return tb_, ta_, tj_, ti_


def _yolo_costs(opt: _YoloOptions, st: _DeltaState, touched) -> None:
    """``l.cost`` and the printed sums (see :class:`YoloLossStats`)."""
    stats = st.stats
    stats.sum_sq = float(st.delta.pow(2).sum(dtype=torch.float64))
    box_sq = 0.0
    if touched is not None:
        tb_, ta_, tj_, ti_ = touched
        box_sq = float(st.delta[tb_, ta_, :4, tj_, ti_].pow(2).sum(dtype=torch.float64))
    stats.classification_loss = opt.obj_norm * (stats.sum_sq - box_sq)
    count = max(stats.count, 1)
    if opt.iou_loss == "mse" or not stats.show_details:
        stats.cost = stats.sum_sq
    else:
        tot = stats.tot_giou_loss if opt.iou_loss == "giou" else stats.tot_iou_loss
        stats.cost = opt.iou_norm * (tot / count) + stats.classification_loss


def _class_full_write(o: torch.Tensor, cid: torch.Tensor, y_true, focal: bool,
                      cmul: Optional[torch.Tensor], cls_norm: float, old: torch.Tensor,
                      known: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``delta_yolo_class`` on a cell whose class deltas are still zero: all ``C`` entries.

    ``o`` (E, C) class scores, ``cid`` (E,) truth classes, ``old`` the entries kept where the new
    value is not finite; ``known`` (E,) False where the truth's class is outside the classes
    (no entry is the positive one).
    """
    E = o.shape[0]
    rows = torch.arange(E, device=o.device)
    onehot = torch.zeros_like(o)
    onehot[rows, cid] = 1 if known is None else known.to(o.dtype)
    if focal:
        alpha = 0.5
        pt = o[rows, cid] + 0.000000000000001
        grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
        return (onehot - o) * (alpha * grad).unsqueeze(1)
    target = onehot * y_true(True) + (1 - onehot) * y_true(False)
    val = target - o
    val = torch.where(torch.isfinite(val), val, old)
    if cmul is not None:
        val = torch.where(onehot.bool(), val * (cmul[cid] * cls_norm).unsqueeze(1), val)
    return val


def _delta_yolo_box(opt: _YoloOptions, truth: BoxT, out: torch.Tensor, cell,
                    anchor: torch.Tensor, iou_norm: torch.Tensor):
    """``delta_yolo_box`` for a list of (truth, cell, anchor) events.

    ``out`` is ``l.output`` as (B, n, 5+C, h, w), ``cell`` = (b, a, j, i) index tensors, ``anchor``
    (E, 2) the anchor of each event, ``iou_norm`` (E,) the normalizer of each. Returns the (E, 4)
    box delta contribution, the IoU the statistics count (the IoU), and the IoU and GIoU of each
    event's predicted box with its truth.
    """
    lw, lh, net_w, net_h, iou_loss = opt.w, opt.h, opt.net_w, opt.net_h, opt.iou_loss
    new_coords = opt.new_coords
    b_, a_, j_, i_ = cell
    o4 = out[b_, a_, :4, j_, i_]  # (E, 4)
    ox, oy, ow, oh = o4[:, 0], o4[:, 1], o4[:, 2], o4[:, 3]
    tx, ty, tw, th = truth
    pred = get_yolo_box(ox, oy, ow, oh, i_.to(ox.dtype), j_.to(oy.dtype), anchor[:, 0],
                        anchor[:, 1], lw, lh, net_w, net_h, new_coords)
    px, py, pw, ph = pred
    tbox = (tx, ty, tw, th)
    iou = box_iou_tuples(pred, tbox)
    giou = box_giou_tuples(pred, tbox)
    if iou_loss == "mse":
        scale = 2 - tw * th
        gx = tx * lw - i_.to(tx.dtype)
        gy = ty * lh - j_.to(ty.dtype)
        if new_coords:
            gw = torch.sqrt(tw * net_w / (4 * anchor[:, 0]))
            gh = torch.sqrt(th * net_h / (4 * anchor[:, 1]))
        else:
            gw = torch.log(tw * net_w / anchor[:, 0])
            gh = torch.log(th * net_h / anchor[:, 1])
        d = torch.stack([gx - ox, gy - oy, gw - ow, gh - oh], dim=1) * (scale * iou_norm).unsqueeze(1)
        return d, iou, iou, giou
    pw_g = torch.where(pw == 0, torch.ones_like(pw), pw)
    ph_g = torch.where(ph == 0, torch.ones_like(ph), ph)
    dx, dy, dw, dh = dx_box_iou((px, py, pw_g, ph_g), tbox, iou_loss)
    if not new_coords:
        dw = dw * torch.exp(ow)
        dh = dh * torch.exp(oh)
    d = torch.stack([dx, dy, dw, dh], dim=1) * iou_norm.unsqueeze(1)
    d = fix_nan_inf(d)
    if opt.clip_delta:
        d = d.clamp(-opt.max_delta, opt.max_delta)
    return d, iou, iou, giou

def _yolo_truths(truth, opt: "_YoloOptions", device, dtype) -> "_Truths":
    """Truth rows up to the first ``x == 0`` of each image (``if(!truth.x) break;``), class ids
    as Darknet's ``(int)``; rows with a class outside ``0..classes-1`` are skipped."""
    t = prepare_truth(truth, opt.B, device, dtype)
    nonzero_x = t[..., 0] != 0
    in_prefix = torch.cumprod(nonzero_x.to(torch.int32), dim=1).bool()
    n_max = int(in_prefix.sum(1).max()) if t.shape[1] else 0
    return _truths_from_rows(t[:, :n_max], in_prefix[:, :n_max], opt)


#: the ``[yolo]`` member of the family (``[Gaussian_yolo]``'s is in its module)
YOLO = YoloFamily(obj_at=4, prediction_boxes=_prediction_boxes, box_delta=_delta_yolo_box,
                  average_always=False, stats_type=YoloLossStats, costs=_yolo_costs)
