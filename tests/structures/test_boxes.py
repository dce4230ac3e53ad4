"""Darknet's IoU family (box.c) on hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from darknet_py.structures.boxes import (box_ciou, box_diou, box_diounms, box_giou, box_intersection, box_iou,
                              box_iou_kind, box_union, ltwh_to_xywh, pairwise_diou, pairwise_iou,
                              pairwise_iou_kind, xywh_to_ltwh, xywh_to_xyxy, xyxy_to_xywh)


def T(*v):
    return torch.tensor(v, dtype=torch.float32)


A = T(0.0, 0.0, 2.0, 2.0)
HALF = T(1.0, 0.0, 2.0, 2.0)       # shifted by half a width: I = 2, U = 6
FAR = T(4.0, 0.0, 2.0, 2.0)        # disjoint, gap 2
TOUCH = T(2.0, 0.0, 2.0, 2.0)      # shares an edge
INSIDE = T(0.0, 0.0, 1.0, 1.0)     # same centre, quarter area


def approx(x, v, tol=1e-6):
    return abs(float(x) - v) <= tol


def test_conversions_roundtrip():
    b = T(0.5, 0.25, 0.2, 0.1)
    assert torch.allclose(xywh_to_xyxy(b), T(0.4, 0.2, 0.6, 0.3))
    assert torch.allclose(xyxy_to_xywh(xywh_to_xyxy(b)), b)
    assert torch.allclose(xywh_to_ltwh(b), T(0.4, 0.2, 0.2, 0.1))
    assert torch.allclose(ltwh_to_xywh(xywh_to_ltwh(b)), b)


@pytest.mark.parametrize("convert", [xywh_to_xyxy, xyxy_to_xywh, xywh_to_ltwh, ltwh_to_xywh])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conversions_on_numpy_keep_the_dtype(convert, dtype):
    """numpy in, numpy out, computed in the input's dtype: float32 gives Darknet's float
    arithmetic (the same bits as torch's float32), float64 its double arithmetic."""
    rng = np.random.default_rng(0)
    b = rng.uniform(-1, 2, (50, 4)).astype(dtype)
    got = convert(b)
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == b.shape
    assert np.array_equal(got, convert(torch.from_numpy(b)).numpy())
    x, y, w, h = (b[:, k] for k in range(4))
    if convert is xywh_to_xyxy:     # the C expressions, in the same dtype
        assert np.array_equal(got, np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1))
    assert np.array_equal(convert(b[0]), got[0])           # one box: shape (4,)


def test_iou_hand_cases():
    assert approx(box_iou(A, A), 1.0)
    assert approx(box_intersection(A, HALF), 2.0) and approx(box_union(A, HALF), 6.0)
    assert approx(box_iou(A, HALF), 1 / 3)
    assert float(box_iou(A, FAR)) == 0.0
    assert float(box_iou(A, TOUCH)) == 0.0
    assert approx(box_iou(A, INSIDE), 0.25)
    # zero-size boxes: Darknet returns 0 instead of dividing by zero
    z = T(0.0, 0.0, 0.0, 0.0)
    assert float(box_iou(z, z)) == 0.0


def test_giou_hand_cases():
    assert approx(box_giou(A, HALF), 1 / 3)              # enclosing box 3x2 = union
    # disjoint: enclosing 6x2 = 12, union 8 -> 0 - 4/12
    assert approx(box_giou(A, FAR), -1 / 3)
    assert approx(box_giou(A, INSIDE), 0.25)
    z = T(0.0, 0.0, 0.0, 0.0)
    assert float(box_giou(z, z)) == 0.0                  # enclosing area 0 -> the IoU


def test_diou_uses_darknet_exponent_0_6():
    # centres 1 apart, enclosing diagonal^2 = 3^2 + 2^2 = 13
    assert approx(box_diou(A, HALF), 1 / 3 - (1 / 13) ** 0.6)
    assert approx(box_diounms(A, HALF, 1.0), 1 / 3 - 1 / 13)   # the paper's DIoU
    assert approx(box_diounms(A, HALF, 0.6), float(box_diou(A, HALF)))
    assert approx(box_diou(A, INSIDE), 0.25)               # same centre: no penalty
    # disjoint: centres 4 apart, diagonal^2 = 36 + 4
    assert approx(box_diou(A, FAR), -((16 / 40) ** 0.6))


def test_ciou_hand_cases():
    # same aspect ratio: v = 0, CIoU = IoU - d/c
    assert approx(box_ciou(A, HALF), 1 / 3 - 1 / 13)
    pred = T(0.0, 0.0, 2.0, 1.0)
    truth = T(0.5, 0.0, 1.0, 2.0)
    # by hand: overlap in x: pred -1..1, truth 0..1 -> 1; in y: pred -0.5..0.5, truth -1..1 -> 1
    inter, union = 1.0, 2.0 + 2.0 - 1.0
    iou = inter / union
    c = 2.0 ** 2 + 2.0 ** 2            # enclosing x -1..1, y -1..1
    d = 0.25
    v = 4 / math.pi ** 2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    alpha = v / (1 - iou + v + 1e-6)
    assert approx(box_ciou(pred, truth), iou - (d / c + alpha * v), 1e-6)
    assert approx(box_iou_kind(pred, truth, "ciou"), float(box_ciou(pred, truth)))
    assert approx(box_iou_kind(pred, truth, "mse"), iou)


def test_broadcast_and_pairwise():
    boxes = torch.stack([A, HALF, FAR, INSIDE])
    m = pairwise_iou(boxes, boxes)
    assert m.shape == (4, 4)
    assert torch.allclose(m, m.T)
    assert approx(m[0, 1], 1 / 3) and float(m[0, 2]) == 0 and approx(m[3, 3], 1.0)
    d = pairwise_diou(boxes[:2], boxes)
    assert d.shape == (2, 4) and approx(d[0, 1], 1 / 3 - (1 / 13) ** 0.6)
    g = pairwise_iou_kind(boxes, boxes, "giou")
    assert approx(g[0, 2], -1 / 3)
    # batched leading dims
    bb = boxes.expand(3, 4, 4)
    assert pairwise_iou(bb, bb).shape == (3, 4, 4)
    assert box_iou(boxes[:, None], boxes[None]).shape == (4, 4)
