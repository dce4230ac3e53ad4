"""Darknet's YOLO training loss: the deltas of ``forward_yolo_layer`` (``yolo_layer.c``, ``box.c``).

Darknet does not differentiate a loss function. In training mode each ``[yolo]`` layer writes
``l.delta`` (``target - output``, the *negative* gradient) directly, and ``backward_yolo_layer``
adds that array unchanged to the delta of the layer before it, i.e. it is used as the gradient
w.r.t. the raw (pre-activation) head input. No logistic derivative is applied to the x/y,
objectness or class entries (for those the "delta w.r.t. the logistic output" doubles as the
cross-entropy gradient w.r.t. the logit), and the w/h entries of the IoU losses already carry the
``exp(tw)`` factor. The number Darknet reports as the layer's cost (``l.cost``) is not the
potential whose gradient is that delta; it is bookkeeping (see :class:`YoloLossStats`).

This module reproduces that exactly:

* :func:`yolo_delta` – the pure function: activated ``l.output`` + truths -> ``l.delta`` and the
  statistics Darknet prints. Vectorised over predictions, truths and images (no Python loop per
  prediction, truth or image).
* :class:`YoloLossFunction` / :func:`yolo_loss` – the autograd piece: takes the raw head input,
  returns Darknet's ``l.cost`` and back-propagates ``-delta`` (times ``delta_normalizer``, as
  Darknet's GPU build does; the CPU build ignores ``delta_normalizer``) into the raw input.

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

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..structures import boxes as _boxes

from ..errors import DataError

FLT_MAX = float(np.finfo(np.float32).max)

__all__ = [
    "YoloLossStats",
    "yolo_delta",
    "yolo_loss",
    "YoloLossFunction",
    "network_cost",
    "classes_multipliers",
    "box_iou",
    "box_giou",
    "box_diou",
    "box_ciou",
    "box_iou_kind",
    "dx_box_iou",
]

BoxT = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


# ------------------------------------------------------------------------------------------
# box.c, vectorised: every function takes boxes as (x, y, w, h) tuples of equally shaped tensors
# ------------------------------------------------------------------------------------------
def _stacked(b: BoxT) -> torch.Tensor:
    return torch.stack(torch.broadcast_tensors(*b), dim=-1)


def box_iou(a: BoxT, b: BoxT) -> torch.Tensor:
    """``box_iou`` on (x, y, w, h) tuples (the one implementation is :mod:`darknet_py.structures.boxes`)."""
    return _boxes.box_iou(*torch.broadcast_tensors(_stacked(a), _stacked(b)))


def box_giou(a: BoxT, b: BoxT) -> torch.Tensor:
    return _boxes.box_giou(*torch.broadcast_tensors(_stacked(a), _stacked(b)))


def box_diou(a: BoxT, b: BoxT) -> torch.Tensor:
    return _boxes.box_diou(*torch.broadcast_tensors(_stacked(a), _stacked(b)))


def box_ciou(a: BoxT, b: BoxT) -> torch.Tensor:
    return _boxes.box_ciou(*torch.broadcast_tensors(_stacked(a), _stacked(b)))


def box_iou_kind(a: BoxT, b: BoxT, kind: str) -> torch.Tensor:
    """``box_iou_kind``: iou / giou / diou / ciou by name (anything else: iou)."""
    return _boxes.box_iou_kind(*torch.broadcast_tensors(_stacked(a), _stacked(b)), kind)


def _atan_diff(a: BoxT, b: BoxT) -> torch.Tensor:
    """atan(b.w/b.h) - atan(a.w/a.h): the aspect-ratio term of CIoU (b is the truth)."""
    return torch.atan(b[2] / b[3]) - torch.atan(a[2] / a[3])


def dx_box_iou(pred: BoxT, truth: BoxT, iou_loss: str) -> BoxT:
    """``dx_box_iou``: Darknet's (G/D/C)IoU gradient w.r.t. the predicted x, y, w, h.

    Returns ``(dx, dy, dw, dh)`` in the same sign convention as Darknet (direction that
    increases the IoU), including its piecewise special cases (no overlap, corner selection).
    """
    px, py, pw, ph = pred
    tx, ty, tw, th = truth
    zero = torch.zeros_like(px)
    one = torch.ones_like(px)
    top_raw, bot_raw = py - ph / 2, py + ph / 2
    left_raw, right_raw = px - pw / 2, px + pw / 2
    pt = torch.minimum(top_raw, bot_raw)
    pb = torch.maximum(top_raw, bot_raw)
    pl = torch.minimum(left_raw, right_raw)
    pr = torch.maximum(left_raw, right_raw)
    tt, tb = ty - th / 2, ty + th / 2
    tl, tr = tx - tw / 2, tx + tw / 2

    X = (pb - pt) * (pr - pl)
    Xhat = (tb - tt) * (tr - tl)
    Ih = torch.minimum(pb, tb) - torch.maximum(pt, tt)
    Iw = torch.minimum(pr, tr) - torch.maximum(pl, tl)
    I = Iw * Ih
    U = X + Xhat - I
    S = (px - tx) ** 2 + (py - ty) ** 2
    gCw = torch.maximum(pr, tr) - torch.minimum(pl, tl)
    gCh = torch.maximum(pb, tb) - torch.minimum(pt, tt)
    gC = gCw * gCh

    dX_t, dX_b = -(pr - pl), pr - pl
    dX_l, dX_r = -(pb - pt), pb - pt
    dI_t = torch.where(pt > tt, -Iw, zero)
    dI_b = torch.where(pb < tb, Iw, zero)
    dI_l = torch.where(pl > tl, -Ih, zero)
    dI_r = torch.where(pr < tr, Ih, zero)
    dU_t, dU_b, dU_l, dU_r = dX_t - dI_t, dX_b - dI_b, dX_l - dI_l, dX_r - dI_r
    dC_t = torch.where(pt < tt, -gCw, zero)
    dC_b = torch.where(pb > tb, gCw, zero)
    dC_l = torch.where(pl < tl, -gCh, zero)
    dC_r = torch.where(pr > tr, gCh, zero)

    u_pos = U > 0
    UU = torch.where(u_pos, U * U, one)
    p_t = torch.where(u_pos, (U * dI_t - I * dU_t) / UU, zero)
    p_b = torch.where(u_pos, (U * dI_b - I * dU_b) / UU, zero)
    p_l = torch.where(u_pos, (U * dI_l - I * dU_l) / UU, zero)
    p_r = torch.where(u_pos, (U * dI_r - I * dU_r) / UU, zero)
    # corner selection (sequential in Darknet: the second line sees the updated first value)
    tb_ok = top_raw < bot_raw
    p_t = torch.where(tb_ok, p_t, p_b)
    p_b = torch.where(tb_ok, p_b, p_t)
    lr_ok = left_raw < right_raw
    p_l = torch.where(lr_ok, p_l, p_r)
    p_r = torch.where(lr_ok, p_r, p_l)

    no_overlap = (Iw <= 0) | (Ih <= 0)
    if iou_loss == "giou":
        CC = gC * gC
        g_t = (gC * dU_t - U * dC_t) / CC
        g_b = (gC * dU_b - U * dC_b) / CC
        g_l = (gC * dU_l - U * dC_l) / CC
        g_r = (gC * dU_r - U * dC_r) / CC
        c_pos = gC > 0
        p_t = torch.where(c_pos, p_t + g_t, p_t)
        p_b = torch.where(c_pos, p_b + g_b, p_b)
        p_l = torch.where(c_pos, p_l + g_l, p_l)
        p_r = torch.where(c_pos, p_r + g_r, p_r)
        p_t = torch.where(no_overlap, g_t, p_t)
        p_b = torch.where(no_overlap, g_b, p_b)
        p_l = torch.where(no_overlap, g_l, p_l)
        p_r = torch.where(no_overlap, g_r, p_r)

    p_dx = p_l + p_r
    p_dy = p_t + p_b
    p_dw = p_r - p_l
    p_dh = p_b - p_t

    if iou_loss in ("diou", "ciou"):
        Ct = torch.minimum(py - ph / 2, ty - th / 2)
        Cb = torch.maximum(py + ph / 2, ty + th / 2)
        Cl = torch.minimum(px - pw / 2, tx - tw / 2)
        Cr = torch.maximum(px + pw / 2, tx + tw / 2)
        Cw = Cr - Cl
        Ch = Cb - Ct
        C = Cw * Cw + Ch * Ch
        t_in = pt < tt
        b_out = pb > tb
        l_in = pl < tl
        r_out = pr > tr
        dCw_dx = torch.where(r_out, one, zero) - torch.where(l_in, one, zero)
        dCw_dw = torch.where(r_out, 0.5 * one, zero) - torch.where(l_in, -0.5 * one, zero)
        dCh_dy = torch.where(b_out, one, zero) - torch.where(t_in, one, zero)
        dCh_dh = torch.where(b_out, 0.5 * one, zero) - torch.where(t_in, -0.5 * one, zero)
        CC = C * C
        d_x = (2 * (tx - px) * C - (2 * Cw * dCw_dx) * S) / CC
        d_y = (2 * (ty - py) * C - (2 * Ch * dCh_dy) * S) / CC
        d_w = (2 * Cw * dCw_dw) * S / CC
        d_h = (2 * Ch * dCh_dh) * S / CC
        if iou_loss == "ciou":
            atan_d = _atan_diff(pred, truth)
            ar = 4 / (math.pi * math.pi) * atan_d * atan_d
            alpha = ar / (1 - I / U + ar + 0.000001)
            d_w = d_w + alpha * (8 / (math.pi * math.pi) * atan_d * ph)
            d_h = d_h + alpha * (-8 / (math.pi * math.pi) * atan_d * pw)
        c_pos = C > 0
        p_dx = torch.where(c_pos, p_dx + d_x, p_dx)
        p_dy = torch.where(c_pos, p_dy + d_y, p_dy)
        p_dw = torch.where(c_pos, p_dw + d_w, p_dw)
        p_dh = torch.where(c_pos, p_dh + d_h, p_dh)
        p_dx = torch.where(no_overlap, d_x, p_dx)
        p_dy = torch.where(no_overlap, d_y, p_dy)
        p_dw = torch.where(no_overlap, d_w, p_dw)
        p_dh = torch.where(no_overlap, d_h, p_dh)
    return p_dx, p_dy, p_dw, p_dh


def _f32(v: float) -> float:
    return float(np.float32(v))


def _fix_nan_inf(v: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(v), v, torch.zeros_like(v))


# ------------------------------------------------------------------------------------------
# layer options
# ------------------------------------------------------------------------------------------
def classes_multipliers(layer: Any) -> Optional[List[float]]:
    """``get_classes_multipliers``: ``max(counter) / counter`` per class (counters < 1 count as 1),
    clipped to ``max_delta``; ``None`` when the layer has no ``counters_per_class``."""
    cpc = getattr(layer, "counters_per_class", None)
    if not cpc:
        return None
    counters = [max(1, int(c)) for c in cpc]
    top = float(max(counters))
    max_delta = float(getattr(layer, "max_delta", FLT_MAX))
    return [float(np.float32(min(top / c, max_delta))) for c in counters]


def _anchors(layer: Any) -> List[float]:
    return [float(a) for a in layer.anchors]


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
# ------------------------------------------------------------------------------------------
def _prepare_truth(truth: Union[torch.Tensor, np.ndarray], batch: int, device, dtype):
    """Truth rows up to the first ``x == 0`` of each image; class ids as Darknet's ``(int)``."""
    t = torch.as_tensor(truth)
    if t.dim() == 2:
        t = t.view(batch, -1, t.shape[-1])
    if t.shape[0] != batch or t.dim() != 3 or t.shape[-1] < 5:
        raise DataError(f"truth must be (batch={batch}, boxes, 5 or 6) rows (x, y, w, h, class"
                        f"[, track]), got shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=dtype)
    nonzero_x = t[..., 0] != 0
    in_prefix = torch.cumprod(nonzero_x.to(torch.int32), dim=1).bool()
    n_max = int(in_prefix.sum(1).max()) if t.shape[1] else 0
    t = t[:, :n_max]
    in_prefix = in_prefix[:, :n_max]
    return t, in_prefix


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

    def y_true(self, positive: bool) -> float:
        """The class target (``label_smooth_eps`` applied)."""
        v = 1.0 if positive else 0.0
        if self.smooth_eps:
            v = _f32(v * _f32(1 - self.smooth_eps) + 0.5 * self.smooth_eps)
        return v

    def new_stats(self) -> "YoloLossStats":
        return YoloLossStats(batch=self.B, iou_loss=self.iou_loss, iou_normalizer=self.iou_norm,
                             obj_normalizer=self.obj_norm, cls_normalizer=self.cls_norm,
                             show_details=self.show_details)


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
                  dtype) -> _YoloOptions:
    n = int(layer.n)
    total = int(layer.total)
    mask = [int(m) for m in layer.mask]
    max_delta = _f32(getattr(layer, "max_delta", FLT_MAX))
    cm_list = classes_multipliers(layer)
    return _YoloOptions(
        B=B, n=n, C=int(layer.classes), h=h, w=w, net_w=net_w, net_h=net_h, total=total,
        mask=mask, mask_idx=torch.tensor(mask, device=device, dtype=torch.long),
        anchors=torch.tensor(_anchors(layer), dtype=dtype, device=device).view(-1, 2)[:total],
        iou_loss=str(layer.iou_loss).lower(),
        iou_norm=_f32(layer.iou_normalizer), obj_norm=_f32(layer.obj_normalizer),
        cls_norm=_f32(layer.cls_normalizer), ignore_thresh=_f32(layer.ignore_thresh),
        truth_thresh=_f32(layer.truth_thresh), iou_thresh=_f32(layer.iou_thresh),
        iou_thresh_kind=str(getattr(layer, "iou_thresh_kind", "iou")).lower(),
        max_delta=max_delta, clip_delta=max_delta != FLT_MAX,
        smooth_eps=_f32(getattr(layer, "label_smooth_eps", 0.0)),
        focal=bool(getattr(layer, "focal_loss", 0)),
        obj_smooth=bool(getattr(layer, "objectness_smooth", 0)),
        new_coords=bool(getattr(layer, "new_coords", 0)),
        cmul=torch.tensor(cm_list, dtype=dtype, device=device) if cm_list is not None else None,
        class_map=getattr(layer, "class_map", None),
        show_details=int(getattr(layer, "show_details", 1)))


def _truths(truth: Union[torch.Tensor, np.ndarray], opt: _YoloOptions, device,
            dtype) -> _Truths:
    t, in_prefix = _prepare_truth(truth, opt.B, device, dtype)
    T = t.shape[1]
    if not T:
        return _Truths(T=0, any_truth=False)
    C = opt.C
    t_cls_raw = t[..., 4].to(torch.long)  # C's (int) truncation
    cls_ok = (t_cls_raw >= 0) & (t_cls_raw < C)
    usable = in_prefix & cls_ok  # (B, T)
    t_cls = t_cls_raw.clamp(0, C - 1)
    if opt.class_map is not None:
        t_cls = torch.as_tensor(opt.class_map, device=device, dtype=torch.long)[t_cls]
    has_truth = usable.any(1)  # (B,)
    return _Truths(T=T, any_truth=bool(has_truth.any()), t_x=t[..., 0], t_y=t[..., 1],
                   t_w=t[..., 2], t_h=t[..., 3], t_cls=t_cls, usable=usable,
                   has_truth=has_truth)


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
    :func:`_every_truth_pass` (2), :func:`_average_boxes` (3), then :func:`_costs`.
    """
    in_shape = output.shape
    n, C = int(layer.n), int(layer.classes)
    if output.dim() == 4:
        B, _, h, w = output.shape
        out = output.detach().reshape(B, n, C + 5, h, w)
    else:
        B, _, _, h, w = output.shape
        out = output.detach()
    device, dtype = out.device, out.dtype
    opt = _yolo_options(layer, B, h, w, net_w, net_h, device, dtype)
    tr = _truths(truth, opt, device, dtype)

    # One delta buffer, (B, n, 5+C, h, w). The dense work is the objectness plane; box and class
    # entries are written only at the cells a truth trains (sparse index writes).
    o_obj = out[:, :, 4]
    # Darknet zeroes a NaN/inf objectness inside the truth loop (so only for images with truths)
    if tr.any_truth:
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
    st.delta[:, :, 4] = st.obj_delta
    touched = _average_boxes(opt, st)
    _costs(opt, st, touched)
    return st.delta.reshape(in_shape), st.stats


def _prediction_boxes(opt: _YoloOptions, out: torch.Tensor) -> BoxT:
    """``get_yolo_box`` of every prediction: (B, n, h, w) tensors x, y, w, h."""
    n, h, w = opt.n, opt.h, opt.w
    device, dtype = out.device, out.dtype
    gy = torch.arange(h, device=device, dtype=dtype).view(1, 1, h, 1)
    gx = torch.arange(w, device=device, dtype=dtype).view(1, 1, 1, w)
    aw = opt.anchors[opt.mask_idx, 0].view(1, n, 1, 1)
    ah = opt.anchors[opt.mask_idx, 1].view(1, n, 1, 1)
    pb_x = (gx + out[:, :, 0]) / w
    pb_y = (gy + out[:, :, 1]) / h
    if opt.new_coords:
        pb_w = out[:, :, 2] * out[:, :, 2] * 4 * aw / opt.net_w
        pb_h = out[:, :, 3] * out[:, :, 3] * 4 * ah / opt.net_h
    else:
        pb_w = torch.exp(out[:, :, 2]) * aw / opt.net_w
        pb_h = torch.exp(out[:, :, 3]) * ah / opt.net_h
    return pb_x, pb_y, pb_w, pb_h


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
        ious = box_iou(p, t)  # type: ignore[arg-type]
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
    best_iou, best_t = _best_truth_iou(opt, tr, _prediction_boxes(opt, out))
    # compare_yolo_class: some class score above 0.25 (checked only when a truth exists)
    class_match = out[:, :, 5:].amax(dim=2) > 0.25
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
    ocls = out[pb_, pa_, 5:, pj_, pi_]  # (E, C)
    full = _class_full_write(ocls, cid, opt.y_true, opt.focal, cmul, opt.cls_norm,
                             torch.zeros_like(ocls))
    rows = torch.arange(full.shape[0], device=out.device)
    if opt.obj_smooth:
        full[rows, cid] = cm_e * (iou_mult - ocls[rows, cid])
    delta[pb_, pa_, 5:, pj_, pi_] = full
    tbox = tuple(v[pb_, pt_] for v in (tr.t_x, tr.t_y, tr.t_w, tr.t_h))
    d, _, _ = _delta_yolo_box(tbox, out, (pb_, pa_, pj_, pi_), opt.anchors[opt.mask_idx[pa_]],
                              w, h, opt.net_w, opt.net_h, opt.iou_norm * cm_e, opt.iou_loss,
                              opt.new_coords, opt.clip_delta, opt.max_delta)
    delta[pb_, pa_, :4, pj_, pi_] += d
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
    shape_iou = box_iou(abox, tshift)  # type: ignore[arg-type]  (B, T, total)
    best_n = shape_iou.argmax(dim=-1)  # first maximum (all-zero -> 0, as Darknet)
    in_mask = (_mask_positions(opt) >= 0).view(1, 1, total)
    anchor_ids = torch.arange(total, device=device)
    is_best = anchor_ids.view(1, 1, total) == best_n.unsqueeze(-1)
    usable = tr.usable.unsqueeze(-1)
    events = usable & in_mask & is_best
    if opt.iou_thresh < 1.0:
        kind_iou = box_iou_kind(abox, tshift, opt.iou_thresh_kind)  # type: ignore[arg-type]
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
    ei = (tr.t_x[eb, et] * w).to(torch.long).clamp(0, w - 1)
    ej = (tr.t_y[eb, et] * h).to(torch.long).clamp(0, h - 1)
    cid = tr.t_cls[eb, et]
    cm_e = cmul[cid] if cmul is not None else torch.ones(E, dtype=dtype, device=device)
    tbox = tuple(v[eb, et] for v in (tr.t_x, tr.t_y, tr.t_w, tr.t_h))
    d, ious_e, gious_e = _delta_yolo_box(
        tbox, out, (eb, ea, ej, ei), opt.anchors[en], w, h, opt.net_w, opt.net_h,
        opt.iou_norm * cm_e, opt.iou_loss, opt.new_coords, opt.clip_delta, opt.max_delta)

    flat = ((eb * n + ea) * h + ej) * w + ei  # cell id in (B, n, h, w) order
    is_first, is_last = _first_and_last_event_of_cell(flat)

    # rewritten_bbox: box delta of the cell already non-zero before this event
    pre_touched = torch.zeros(E, dtype=torch.bool, device=device)
    if st.touched_parts:
        pre_touched = torch.isin(flat, st.touched_parts[0])
    st.stats.rewritten_bbox += int((~is_first | pre_touched).sum())
    st.stats.total_bbox += E

    # box deltas accumulate (index_put_ with accumulate adds duplicates)
    k4 = torch.arange(4, device=device).repeat(E)
    rep = lambda v: v.repeat_interleave(4)  # noqa: E731
    delta.index_put_((rep(eb), rep(ea), k4, rep(ej), rep(ei)), d.reshape(-1), accumulate=True)

    # objectness: last event of the cell wins (objectness_smooth: first, only if still 0)
    obj_e = st.o_obj[eb, ea, ej, ei]
    obj_val = cm_e * opt.obj_norm * (1 - obj_e)
    if opt.obj_smooth:
        sel = is_first & (st.obj_delta[eb, ea, ej, ei] == 0)
    else:
        sel = is_last
    st.obj_delta[eb[sel], ea[sel], ej[sel], ei[sel]] = obj_val[sel]

    _truth_class_deltas(opt, st, (eb, ea, ej, ei), cid, flat, is_first)
    st.touched_parts.append(flat)

    stats = st.stats
    stats.count += E
    stats.class_count += E
    stats.tot_iou += float(ious_e.double().sum())
    stats.tot_iou_loss += float((1 - ious_e.double()).sum())
    stats.tot_giou_loss += float((1 - gious_e.double()).sum())
    stats.recall50 += int((ious_e > 0.5).sum())
    stats.recall75 += int((ious_e > 0.75).sum())
    stats.avg_obj += float(obj_e.double().sum())
    stats.avg_cat += float(out[eb, ea, cid + 5, ej, ei].double().sum())


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
                        flat: torch.Tensor, is_first: torch.Tensor) -> None:
    """Pass 2's classes: the first event of a cell not yet written overwrites all classes;
    every later event only rewrites its own class entry."""
    eb, ea, ej, ei = cell
    out, delta, cmul = st.out, st.delta, opt.cmul
    full_sel = is_first
    if st.cls_written_cells.numel():
        full_sel = full_sel & ~torch.isin(flat, st.cls_written_cells)
    if bool(full_sel.any()):
        fb, fa, fj, fi = eb[full_sel], ea[full_sel], ej[full_sel], ei[full_sel]
        ocls = out[fb, fa, 5:, fj, fi]
        delta[fb, fa, 5:, fj, fi] = _class_full_write(
            ocls, cid[full_sel], opt.y_true, opt.focal, cmul, opt.cls_norm,
            delta[fb, fa, 5:, fj, fi])
    single = ~full_sel
    if bool(single.any()):
        sb, sa, sj, si, sc = eb[single], ea[single], ej[single], ei[single], cid[single] + 5
        val = opt.y_true(True) - out[sb, sa, sc, sj, si]
        if cmul is not None:
            val = val * cmul[sc - 5]
        old = delta[sb, sa, sc, sj, si]
        delta[sb, sa, sc, sj, si] = torch.where(torch.isfinite(val), val, old)


def _average_boxes(opt: _YoloOptions, st: _DeltaState):
    """Pass 3 (``iou_thresh < 1``): the box delta of a cell with several positive classes is
    divided by their number. Returns the touched cells as (b, a, j, i) index tensors, or None."""
    if not st.touched_parts:
        return None
    n, h, w = opt.n, opt.h, opt.w
    touched = torch.unique(torch.cat(st.touched_parts))
    tb_ = touched // (n * h * w)
    ta_ = (touched // (h * w)) % n
    tj_ = (touched // w) % h
    ti_ = touched % w
    if opt.iou_thresh < 1.0:
        delta = st.delta
        cells = delta[tb_, ta_, :, tj_, ti_]  # (K, 5+C)
        n_pos = (cells[:, 5:] > 0).sum(dim=1, keepdim=True).to(delta.dtype)
        avg = (cells[:, 4:5] != 0) & (n_pos > 0)
        boxes = torch.where(avg, cells[:, :4] / n_pos.clamp(min=1), cells[:, :4])
        delta[tb_, ta_, :4, tj_, ti_] = boxes
    return tb_, ta_, tj_, ti_


def _costs(opt: _YoloOptions, st: _DeltaState, touched) -> None:
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
                      cmul: Optional[torch.Tensor], cls_norm: float, old: torch.Tensor) -> torch.Tensor:
    """``delta_yolo_class`` on a cell whose class deltas are still zero: all ``C`` entries.

    ``o`` (E, C) class scores, ``cid`` (E,) truth classes, ``old`` the entries kept where the new
    value is not finite.
    """
    E = o.shape[0]
    rows = torch.arange(E, device=o.device)
    onehot = torch.zeros_like(o)
    onehot[rows, cid] = 1
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


def _delta_yolo_box(truth: BoxT, out: torch.Tensor, cell, anchor: torch.Tensor,
                    lw: int, lh: int, net_w: int, net_h: int, iou_norm: torch.Tensor,
                    iou_loss: str, new_coords: bool, clip_delta: bool, max_delta: float
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``delta_yolo_box`` for a list of (truth, cell, anchor) events.

    ``out`` is ``l.output`` as (B, n, 5+C, h, w), ``cell`` = (b, a, j, i) index tensors, ``anchor``
    (E, 2) the anchor of each event. Returns the (E, 4) box delta contribution, and the IoU and
    GIoU of each event's predicted box with its truth.
    """
    b_, a_, j_, i_ = cell
    o4 = out[b_, a_, :4, j_, i_]  # (E, 4)
    ox, oy, ow, oh = o4[:, 0], o4[:, 1], o4[:, 2], o4[:, 3]
    tx, ty, tw, th = truth
    px = (i_.to(ox.dtype) + ox) / lw
    py = (j_.to(oy.dtype) + oy) / lh
    if new_coords:
        pw = ow * ow * 4 * anchor[:, 0] / net_w
        ph = oh * oh * 4 * anchor[:, 1] / net_h
    else:
        pw = torch.exp(ow) * anchor[:, 0] / net_w
        ph = torch.exp(oh) * anchor[:, 1] / net_h
    pred = (px, py, pw, ph)
    tbox = (tx, ty, tw, th)
    iou = box_iou(pred, tbox)
    giou = box_giou(pred, tbox)
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
        return d, iou, giou
    pw_g = torch.where(pw == 0, torch.ones_like(pw), pw)
    ph_g = torch.where(ph == 0, torch.ones_like(ph), ph)
    dx, dy, dw, dh = dx_box_iou((px, py, pw_g, ph_g), tbox, iou_loss)
    if not new_coords:
        dw = dw * torch.exp(ow)
        dh = dh * torch.exp(oh)
    d = torch.stack([dx, dy, dw, dh], dim=1) * iou_norm.unsqueeze(1)
    d = _fix_nan_inf(d)
    if clip_delta:
        d = d.clamp(-max_delta, max_delta)
    return d, iou, giou


# ------------------------------------------------------------------------------------------
# autograd
# ------------------------------------------------------------------------------------------
class YoloLossFunction(torch.autograd.Function):
    """Raw head input -> Darknet's ``l.cost``; backward gives ``-delta * delta_normalizer``.

    ``forward(ctx, raw, truth, layer, net_w, net_h, holder)``; ``holder`` (a list) receives the
    :class:`YoloLossStats` and the activated output, since autograd functions return tensors only.
    """

    @staticmethod
    def forward(ctx, raw: torch.Tensor, truth: torch.Tensor, layer: Any, net_w: int, net_h: int,
                holder: Optional[list] = None) -> torch.Tensor:  # type: ignore[override]
        with torch.no_grad():
            # the deltas are computed in (at least) float32 even under autocast
            x = raw.detach()
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            output = layer.activate(x)
            delta, stats = yolo_delta(output, truth, layer, net_w, net_h)
        ctx.save_for_backward(delta)
        ctx.raw_dtype = raw.dtype
        ctx.delta_normalizer = float(getattr(layer, "delta_normalizer", 1.0))
        if holder is not None:
            holder.append(stats)
            holder.append(output)
        return torch.tensor(stats.cost, dtype=torch.float32 if x.dtype != torch.float64 else x.dtype,
                            device=raw.device)

    @staticmethod
    def backward(ctx, grad_cost: torch.Tensor):  # type: ignore[override]
        (delta,) = ctx.saved_tensors
        grad = (delta * (-ctx.delta_normalizer) * grad_cost).to(ctx.raw_dtype)
        return grad, None, None, None, None, None


def yolo_loss(raw: torch.Tensor, truth: Union[torch.Tensor, np.ndarray], layer: Any, net_w: int,
              net_h: int) -> Tuple[torch.Tensor, YoloLossStats, torch.Tensor]:
    """One ``[yolo]`` layer's training loss from its raw input (``net(x, raw_heads=True)``).

    Returns ``(cost, stats, output)``: ``cost`` is a scalar tensor equal to Darknet's ``l.cost``
    whose gradient w.r.t. ``raw`` is Darknet's ``-l.delta`` (summed over the batch, as Darknet's
    ``*_updates``); ``output`` is the activated ``l.output``.

    To train like Darknet, back-propagate the **sum** of the heads' costs (each head's delta is
    added in full); report :func:`network_cost` (their mean, ``get_network_cost``).
    """
    truth_t = torch.as_tensor(truth)
    holder: list = []
    cost = YoloLossFunction.apply(raw, truth_t, layer, int(net_w), int(net_h), holder)
    return cost, holder[0], holder[1]


def network_cost(layer_costs: Sequence[Union[float, torch.Tensor]]) -> float:
    """``get_network_cost``: the mean of the heads' ``l.cost``.

    ``detector train`` prints, per iteration, the mean of this over the subdivisions divided by
    the images per forward (``train_network``: ``sum / (subdivisions * net.batch)``).
    """
    vals = [float(c.detach()) if torch.is_tensor(c) else float(c) for c in layer_costs]
    return sum(vals) / len(vals) if vals else 0.0
