"""The detection head contract: what ``[yolo]``, ``[Gaussian_yolo]`` and ``[region]`` share.

A Darknet head (``yolo_layer.c``, ``gaussian_yolo_layer.c``, ``region_layer.c``) owns, in one
place, its activation, its box function (``get_yolo_box``, ``get_gaussian_yolo_box``,
``get_region_box``), its detections and its training delta. :class:`DetectionHead` is that
contract for darknet-py; each head kind is one module under :mod:`darknet_py.layers` that
subclasses it, plus its line in :data:`darknet_py.layers.registry.LAYER_TYPES`. Nothing else
names a head kind: decoding (:mod:`darknet_py.model.decode`), the ONNX export, the augmentation
options and the trainer ask the head (or, for a backend without a :class:`Network`, the head class
that :func:`darknet_py.layers.registry.head_class` finds for a :class:`HeadSpec`).

What a subclass provides:

* ``kind`` (the :class:`~darknet_py.structures.heads.HeadSpec` kind) and ``type_code`` (Darknet's
  ``LAYER_TYPE`` number that ``detector test`` prints), ``obj_entry`` (where objectness sits in a
  candidate's entries, or ``None`` when every cell is a candidate, as for ``[region]``);
* :meth:`activate` (Darknet's ``l.output`` from the raw input) and :meth:`head_spec`;
* :meth:`decode_rows`, built on the kind's one box function;
* :meth:`delta`: Darknet's training ``l.delta`` (``target - output`` w.r.t. the raw input) and
  the statistics behind the printed loss line (an object with ``cost`` and ``line(index)``).

:meth:`DetectionHead.loss` turns :meth:`delta` into an autograd loss: the forward returns
Darknet's ``l.cost``, the backward hands ``-delta`` (times ``delta_normalizer`` where the head has
one) to the raw input, exactly what Darknet's ``backward_*_layer`` adds to the previous layer's
delta.

Also here, shared by the heads: ``box.c``'s IoU family on ``(x, y, w, h)`` tuples and its
gradient :func:`dx_box_iou`, the truth-row preparation and ``get_classes_multipliers``.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import DataError
from ..structures import boxes as _boxes
from ..structures.heads import HeadSpec
from .base import FLT_MAX, Layer

BoxT = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

__all__ = ["DetectionHead", "HeadLossFunction", "BoxT", "box_iou", "box_giou",
           "box_diou", "box_ciou", "box_iou_kind", "dx_box_iou", "classes_multipliers",
           "prepare_truth", "f32", "fix_nan_inf", "darknet_ratio"]


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



def f32(v: float) -> float:
    """``v`` rounded to a C ``float`` (options are floats in Darknet's layer structs)."""
    return float(np.float32(v))


def fix_nan_inf(v: torch.Tensor) -> torch.Tensor:
    """``fix_nan_inf``: NaN and inf become 0."""
    return torch.where(torch.isfinite(v), v, torch.zeros_like(v))


def darknet_ratio(num: float, count: int) -> str:
    """``printf("%f", num / count)`` as Darknet prints its averages: ``-nan`` for 0/0 (x86's
    default NaN has the sign bit set), ``inf`` for x/0."""
    if count:
        return f"{num / count:f}"
    if num == 0 or num != num:
        return "-nan"
    return "inf" if num > 0 else "-inf"


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


def prepare_truth(truth: Union[torch.Tensor, np.ndarray], batch: int, device, dtype
                  ) -> torch.Tensor:
    """Truth rows as a ``(batch, boxes, >=5)`` tensor on ``device``: ``(x, y, w, h, class[,
    track])`` relative to the image, each image's list ending at its first ``x == 0`` row (which
    rows count is each head's business: Darknet's loops differ)."""
    t = torch.as_tensor(truth)
    if t.dim() == 2:
        t = t.view(batch, -1, t.shape[-1])
    if t.dim() != 3 or t.shape[0] != batch or t.shape[-1] < 5:
        raise DataError(f"truth must be (batch={batch}, boxes, 5 or 6) rows (x, y, w, h, class"
                        f"[, track]), got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------
# the head contract
# ------------------------------------------------------------------------------------------
class DetectionHead(Layer):
    """Base class of the detection heads (see the module docstring).

    Every head also carries the options Darknet's ``train_detector`` reads from the network's
    *last* layer for data loading: ``classes``, ``max_boxes``, ``jitter``, ``resize`` and
    ``random`` (set by the subclass from its section, with Darknet's defaults for that kind).
    """

    is_head = True
    #: :class:`HeadSpec` kind
    kind: ClassVar[str] = ""
    #: Darknet's LAYER_TYPE number (what ``detector test`` prints as ``type = %d``)
    type_code: ClassVar[int] = 0
    #: index of objectness among a candidate's entries; ``None``: every cell is a candidate
    #: (Darknet's ``get_region_detections``), with objectness 1
    obj_entry: ClassVar[Optional[int]] = 4
    #: ``correct_gaussian_yolo_boxes`` (True) or ``correct_yolo_boxes`` (False)
    gaussian_box_correction: ClassVar[bool] = False

    classes: int
    max_boxes: int
    jitter: float
    resize: float
    random: float

    # ------------------------------------------------------------------ inference
    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """Darknet's ``l.output`` from the raw input ``x`` (the previous layer's output)."""
        raise NotImplementedError

    def forward(self, x, outputs):
        return self.activate(x)

    #: entries of a candidate before its objectness (the box; ``[Gaussian_yolo]``: means and
    #: sigmas)
    box_entries: ClassVar[int] = 4

    def head_spec(self) -> HeadSpec:
        raise NotImplementedError

    @classmethod
    def entries_for(cls, classes: int, coords: int = 4) -> int:
        """Values per anchor: the box entries, objectness, the classes."""
        return cls.box_entries + 1 + classes

    @classmethod
    def make_spec(cls, **fields: Any) -> HeadSpec:
        """A :class:`HeadSpec` of this kind (``kind``, ``type_code`` and ``entries`` filled in)
        from the other fields."""
        return HeadSpec(kind=cls.kind, type_code=cls.type_code,
                        entries=cls.entries_for(int(fields["classes"]),
                                                int(fields.get("coords", 4))), **fields)

    @classmethod
    def check_decodable(cls, spec: HeadSpec) -> None:
        """Raise :class:`~darknet_py.errors.UsageError` for a head darknet-py cannot decode."""

    @classmethod
    def decode_rows(cls, spec: HeadSpec, r: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor,
                    aw: torch.Tensor, ah: torch.Tensor, net_w: int, net_h: int
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Candidate rows ``r`` (``(..., entries)`` of ``l.output``, in Darknet's candidate order)
        at cell column/row ``gx, gy`` with anchor size ``aw, ah`` -> ``(rows, uncertainty)``:
        ``rows`` ``(..., 4+1+classes)`` = box ``x, y, w, h`` relative to the network input,
        objectness and ``objectness*class`` probabilities; ``uncertainty`` ``(..., 4)`` or None.
        Elementwise, so decoding a subset of rows gives the same values as decoding all."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def delta(self, output: torch.Tensor, truth: Union[torch.Tensor, np.ndarray], net_w: int,
              net_h: int, seen: int = 0):
        """Darknet's training forward of this head: ``(delta, stats)``. ``output`` is
        :meth:`activate`'s result, ``truth`` ``(B, boxes, 5 or 6)`` rows, ``net_w, net_h`` the
        network input size of this forward, ``seen`` Darknet's ``*net.seen`` as the layer sees
        it (images trained on, this mini-batch included). ``delta`` has the raw input's shape
        and Darknet's sign; ``stats`` has ``cost`` (``l.cost``) and ``line(index)`` (what the
        layer prints)."""
        raise NotImplementedError

    def loss(self, raw: torch.Tensor, truth: Union[torch.Tensor, np.ndarray], net_w: int,
             net_h: int, seen: int = 0):
        """Training loss from the raw head input (``net(x, raw_heads=True)``): ``(cost, stats,
        output)``. ``cost`` is a scalar tensor equal to Darknet's ``l.cost`` whose gradient
        w.r.t. ``raw`` is Darknet's ``-l.delta`` (times ``delta_normalizer``, as Darknet's GPU
        build applies it); ``output`` is the activated ``l.output``.

        To train like Darknet, back-propagate the **sum** of the heads' costs (each head's
        delta is added in full); Darknet reports their mean (``get_network_cost``)."""
        holder: list = []
        cost = HeadLossFunction.apply(raw, torch.as_tensor(truth), self, int(net_w), int(net_h),
                                      int(seen), holder)
        return cost, holder[0], holder[1]


class HeadLossFunction(torch.autograd.Function):
    """Raw head input -> Darknet's ``l.cost``; backward gives ``-delta * delta_normalizer``.

    Darknet does not differentiate a loss: in training each head writes ``l.delta`` (the
    *negative* gradient w.r.t. its raw input) and its backward adds that array to the previous
    layer's delta. ``holder`` (a list) receives the statistics and the activated output, since
    autograd functions return tensors only. The deltas are computed in (at least) float32 even
    under autocast.
    """

    @staticmethod
    def forward(ctx, raw: torch.Tensor, truth: torch.Tensor, head: DetectionHead, net_w: int,
                net_h: int, seen: int, holder: Optional[list] = None
                ) -> torch.Tensor:  # type: ignore[override]
        with torch.no_grad():
            x = raw.detach()
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            output = head.activate(x)
            delta, stats = head.delta(output, truth, net_w, net_h, seen)
        ctx.save_for_backward(delta.reshape(raw.shape))
        ctx.raw_dtype = raw.dtype
        ctx.delta_normalizer = float(getattr(head, "delta_normalizer", 1.0))
        if holder is not None:
            holder.append(stats)
            holder.append(output)
        return torch.tensor(stats.cost, dtype=torch.float32 if x.dtype != torch.float64
                            else x.dtype, device=raw.device)

    @staticmethod
    def backward(ctx, grad_cost: torch.Tensor):  # type: ignore[override]
        (delta,) = ctx.saved_tensors
        grad = (delta * (-ctx.delta_normalizer) * grad_cost).to(ctx.raw_dtype)
        return grad, None, None, None, None, None, None
