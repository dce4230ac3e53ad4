"""Box conversions and Darknet's IoU family (``box.c``), batched in torch.

Darknet boxes are ``(x, y, w, h)``: centre and size, in whatever unit the caller uses (relative to
the image for detections). All functions broadcast over leading dimensions; the last dimension holds
the 4 coordinates.

The conversions (:func:`xywh_to_xyxy`, :func:`xyxy_to_xywh`, :func:`xywh_to_ltwh`,
:func:`ltwh_to_xywh`) are the package's only ``x - w/2``: they take a torch tensor or a numpy array
and compute in its dtype, so a caller chooses Darknet's precision by the dtype it passes: float32
where the C code computes in ``float`` (``b.x - b.w/2``), float64 where it computes in double
(``b.x - b.w/2.``, e.g. ``draw_detections_v3``'s box corners and ``print_detector_detections``). ``box_*`` functions are element-wise (``a`` and ``b`` broadcast against each
other); ``pairwise_*`` give the ``(N, M)`` matrix for ``(N, 4)`` x ``(M, 4)``.

The formulas are Darknet's own, including its particular choices:

* :func:`box_iou` (``box_iou``): 0 when the intersection or the union is 0; boxes that only touch
  or do not overlap give 0.
* :func:`box_giou` (``box_giou``): ``iou - (C - U)/C`` with ``C`` the enclosing box area; returns the
  IoU when ``C == 0``.
* :func:`box_diou` (``box_diou``): ``iou - (d^2/c^2) ** 0.6`` -- Darknet raises the normalised centre
  distance to the power 0.6 (the DIoU paper uses 1). This is the criterion of ``nms_kind=greedynms``.
* :func:`box_diounms` (``box_diounms``): the same with the exponent ``beta_nms`` (``nms_kind=diounms``).
* :func:`box_ciou` (``box_ciou``): ``iou - (d^2/c^2 + alpha*v)``, ``v = 4/pi^2 (atan(wg/hg) -
  atan(wp/hp))^2``, ``alpha = v / (1 - iou + v + 1e-6)``; ``b`` is the ground truth.

They are computed in the input dtype (float32 normally, like Darknet's ``float``).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, TypeVar

import numpy as np
import torch

__all__ = [
    "xywh_to_xyxy", "xyxy_to_xywh", "xywh_to_ltwh", "ltwh_to_xywh", "box_area",
    "box_intersection", "box_union", "box_iou", "box_giou", "box_diou", "box_diounms", "box_ciou",
    "box_iou_kind", "pairwise_iou", "pairwise_giou", "pairwise_diou", "pairwise_diounms",
    "pairwise_ciou", "pairwise_iou_kind", "enclosing_box",
]

#: Darknet's M_PI fallback is 3.141592, but math.h defines the full value on the oracle's platform
_PI = math.pi

#: a torch tensor or a numpy array (the conversions return the same kind, in the same dtype)
Boxes = TypeVar("Boxes", torch.Tensor, np.ndarray)


def _split(b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return b[..., 0], b[..., 1], b[..., 2], b[..., 3]


def _stack(parts: Sequence[Boxes], like: Boxes) -> Boxes:
    if isinstance(like, np.ndarray):
        return np.stack(parts, axis=-1)
    return torch.stack(list(parts), dim=-1)


def xywh_to_xyxy(b: Boxes) -> Boxes:
    """Centre/size -> corners ``(left, top, right, bottom)`` (Darknet's ``to_tblr`` order differs)."""
    x, y, w, h = _split(b)
    return _stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], b)


def xyxy_to_xywh(b: Boxes) -> Boxes:
    """Corners ``(left, top, right, bottom)`` -> centre/size."""
    l, t, r, bt = _split(b)
    return _stack([(l + r) / 2, (t + bt) / 2, r - l, bt - t], b)


def xywh_to_ltwh(b: Boxes) -> Boxes:
    """Centre/size -> ``(left, top, width, height)`` (COCO / ``-ext_output`` style)."""
    x, y, w, h = _split(b)
    return _stack([x - w / 2, y - h / 2, w, h], b)


def ltwh_to_xywh(b: Boxes) -> Boxes:
    """``(left, top, width, height)`` -> centre/size."""
    l, t, w, h = _split(b)
    return _stack([l + w / 2, t + h / 2, w, h], b)


def box_area(b: torch.Tensor) -> torch.Tensor:
    return b[..., 2] * b[..., 3]


def _overlap(x1: torch.Tensor, w1: torch.Tensor, x2: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``overlap()``: right-most left edge to left-most right edge (negative when apart)."""
    left = torch.maximum(x1 - w1 / 2, x2 - w2 / 2)
    right = torch.minimum(x1 + w1 / 2, x2 + w2 / 2)
    return right - left


def box_intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``box_intersection``: overlap area, 0 when either overlap is negative."""
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    w = _overlap(ax, aw, bx, bw)
    h = _overlap(ay, ah, by, bh)
    area = w * h
    return torch.where((w < 0) | (h < 0), torch.zeros_like(area), area)


def box_union(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``box_union``: ``a.w*a.h + b.w*b.h - intersection``."""
    return a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - box_intersection(a, b)


def _iou_parts(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    inter = box_intersection(a, b)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    zero = (inter == 0) | (union == 0)
    iou = torch.where(zero, torch.zeros_like(inter), inter / torch.where(zero, torch.ones_like(union), union))
    return iou, union


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Darknet's ``box_iou`` (0 when the intersection or the union is 0)."""
    return _iou_parts(a, b)[0]


def enclosing_box(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``box_c``: the smallest box containing both, as ``(top, bottom, left, right)``."""
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    top = torch.minimum(ay - ah / 2, by - bh / 2)
    bot = torch.maximum(ay + ah / 2, by + bh / 2)
    left = torch.minimum(ax - aw / 2, bx - bw / 2)
    right = torch.maximum(ax + aw / 2, bx + bw / 2)
    return top, bot, left, right


def box_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Darknet's ``box_giou``: ``iou - (C - U) / C``; the IoU when the enclosing area is 0."""
    top, bot, left, right = enclosing_box(a, b)
    c = (right - left) * (bot - top)
    iou, union = _iou_parts(a, b)
    safe_c = torch.where(c == 0, torch.ones_like(c), c)
    return torch.where(c == 0, iou, iou - (c - union) / safe_c)


def _center_term(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(iou, squared centre distance d, squared enclosing diagonal c)."""
    top, bot, left, right = enclosing_box(a, b)
    w = right - left
    h = bot - top
    c = w * w + h * h
    d = (a[..., 0] - b[..., 0]) * (a[..., 0] - b[..., 0]) + (a[..., 1] - b[..., 1]) * (a[..., 1] - b[..., 1])
    return box_iou(a, b), d, c


def box_diounms(a: torch.Tensor, b: torch.Tensor, beta: float) -> torch.Tensor:
    """Darknet's ``box_diounms``: ``iou - (d/c) ** beta`` (the IoU when ``c == 0``)."""
    iou, d, c = _center_term(a, b)
    safe_c = torch.where(c == 0, torch.ones_like(c), c)
    # pow() is evaluated in double by Darknet, then stored to float
    term = torch.pow((d / safe_c).to(torch.float64), float(beta)).to(iou.dtype)
    return torch.where(c == 0, iou, iou - term)


def box_diou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Darknet's ``box_diou``: ``iou - (d/c) ** 0.6`` (Darknet's exponent, not the paper's 1)."""
    return box_diounms(a, b, 0.6)


def box_ciou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Darknet's ``box_ciou`` with ``a`` the prediction and ``b`` the truth."""
    iou, d, c = _center_term(a, b)
    safe_c = torch.where(c == 0, torch.ones_like(c), c)
    ar_gt = b[..., 2] / b[..., 3]
    ar_pred = a[..., 2] / a[..., 3]
    diff = torch.atan(ar_gt) - torch.atan(ar_pred)
    ar_loss = (4 / (_PI * _PI)) * diff * diff
    alpha = ar_loss / (1 - iou + ar_loss + 0.000001)
    return torch.where(c == 0, iou, iou - (d / safe_c + alpha * ar_loss))


def box_iou_kind(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """``box_iou_kind``: ``'iou'``, ``'giou'``, ``'diou'``, ``'ciou'`` (anything else: IoU)."""
    if kind == "giou":
        return box_giou(a, b)
    if kind == "diou":
        return box_diou(a, b)
    if kind == "ciou":
        return box_ciou(a, b)
    return box_iou(a, b)


def _pair(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return a.unsqueeze(-2), b.unsqueeze(-3)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(..., N, 4)`` x ``(..., M, 4)`` -> ``(..., N, M)`` Darknet IoU matrix."""
    return box_iou(*_pair(a, b))


def pairwise_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return box_giou(*_pair(a, b))


def pairwise_diou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return box_diou(*_pair(a, b))


def pairwise_diounms(a: torch.Tensor, b: torch.Tensor, beta: float) -> torch.Tensor:
    return box_diounms(*_pair(a, b), beta)


def pairwise_ciou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return box_ciou(*_pair(a, b))


def pairwise_iou_kind(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    return box_iou_kind(*_pair(a, b), kind)
