"""Decode detection-head outputs into boxes, as Darknet's ``get_network_boxes`` (``network.c``).

Input: the ``(head_layer, output)`` pairs the network returns, in layer order, where ``output`` is
Darknet's ``l.output`` for a batch, ``(B, n*(entries), h, w)``:

* ``[yolo]`` (``get_yolo_detections`` + ``correct_yolo_boxes``, ``yolo_layer.c``): entries
  ``x, y, w, h, obj, classes...`` with x, y already ``logistic*scale_x_y - 0.5*(scale_x_y-1)``,
  w, h raw, obj and classes logistic (``new_coords=1``: w, h are decoded as ``4*w^2*anchor``).
  A candidate is kept when ``obj > thresh``; its class probabilities are ``obj*cls`` and are zeroed
  when ``<= thresh``.
* ``[Gaussian_yolo]`` (``get_gaussian_yolo_detections``, ``gaussian_yolo_layer.c``): entries
  ``x, sx, y, sy, w, sw, h, sh, obj, classes...``; probabilities are
  ``obj*cls*(1 - mean(sx, sy, sw, sh))``; the four sigmas are returned as ``uncertainty``.
* ``[region]`` (YOLOv2, ``custom_get_region_detections`` -> ``get_region_boxes`` +
  ``correct_yolo_boxes``): x, y, w, h raw (the logistic of x, y is taken here as Darknet does),
  obj logistic, classes softmaxed. Every cell/anchor is a candidate (objectness is set to 1, as in
  Darknet), probabilities ``obj*cls`` zeroed ``<= thresh``. The output may be given in the channel
  layout above or as Darknet's CPU ``l.output``, which is flattened to ``(B, h*w*n*(5+C))``
  (cell-major, anchor-minor, entries last). Hierarchical softmax (``tree=``, yolo9000) is not
  supported.

Boxes come out as Darknet's ``dets[i].bbox``: centre/size relative to the *original* image
(``correct_yolo_boxes`` undoes the stretch or the letterbox), in Darknet's candidate order (heads in
layer order; inside a head, cells row-major and the anchors of a cell together).

The head layer objects are duck-typed: ``classes``, ``mask`` (or ``n``), ``anchors`` (flat, all
``2*total``), ``scale_x_y`` (already applied in the output), ``new_coords``, and for the kind either
``section_types``/``type``/``kind`` naming ``yolo``, ``Gaussian_yolo`` or ``region``, or the class
name. Numerics follow Darknet's float/double mix (float32 sums, ``exp`` in double), so results
match the oracle to ~1e-7.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch

from ..structures.detections import DetectionSet
from ..errors import UsageError
from .image import letterbox_size

__all__ = ["head_kind", "get_network_boxes", "decode_head", "correct_boxes", "HEAD_TYPE_CODES"]

#: Darknet's LAYER_TYPE codes printed by ``detector test`` (" Detection layer: %d - type = %d")
HEAD_TYPE_CODES = {"region": 27, "yolo": 28, "gaussian_yolo": 29}

ImageSizes = Union[Tuple[int, int], Sequence[Tuple[int, int]]]


def head_kind(layer: Any) -> str:
    """``'yolo'``, ``'gaussian_yolo'`` or ``'region'`` for a head layer object."""
    names: List[str] = []
    for attr in ("kind", "type", "layer_type"):
        v = getattr(layer, attr, None)
        if isinstance(v, str):
            names.append(v)
    st = getattr(layer, "section_types", None)
    if st:
        names.append(str(st[0]))
    names.append(type(layer).__name__)
    for name in names:
        low = name.lower()
        if "gaussian" in low:
            return "gaussian_yolo"
        if "region" in low:
            return "region"
        if "yolo" in low:
            return "yolo"
        if low == "detection":
            raise UsageError("[detection] (YOLOv1) heads are not supported")
    return "yolo"


def _layer_n(layer: Any) -> int:
    mask = getattr(layer, "mask", None)
    if mask is not None and len(mask):
        return len(mask)
    return int(layer.n)


def _anchor_wh(layer: Any, kind: str) -> Tuple[np.ndarray, np.ndarray]:
    """(n,) float32 anchor widths and heights of the layer's masked anchors (``l.biases``)."""
    anchors = np.asarray(list(getattr(layer, "anchors", []) or []), dtype=np.float32)
    n = _layer_n(layer)
    if kind == "region":
        idx = np.arange(n)
    else:
        mask = getattr(layer, "mask", None)
        idx = np.asarray(list(mask) if mask is not None and len(mask) else range(n))
    need = 2 * (int(idx.max()) + 1) if len(idx) else 0
    if anchors.size < need:  # Darknet's biases default to 0.5
        anchors = np.concatenate([anchors, np.full(need - anchors.size, 0.5, np.float32)])
    return anchors[2 * idx], anchors[2 * idx + 1]


def _as_sizes(image_sizes: ImageSizes, batch: int) -> List[Tuple[int, int]]:
    if len(image_sizes) == 2 and all(isinstance(v, (int, np.integer)) for v in image_sizes):
        return [(int(image_sizes[0]), int(image_sizes[1]))] * batch  # type: ignore[index]
    sizes = [(int(w), int(h)) for w, h in image_sizes]  # type: ignore[misc]
    if len(sizes) != batch:
        raise UsageError(f"got {len(sizes)} image sizes for a batch of {batch} images")
    return sizes


def _rows(output: torch.Tensor, n: int, entries: int, kind: str) -> Tuple[torch.Tensor, int, int]:
    """Reshape ``l.output`` to ``(B, h*w*n, entries)`` in Darknet's candidate order."""
    if output.dim() == 4:
        b, c, h, w = output.shape
        if c != n * entries:
            raise UsageError(f"{kind} output has {c} channels, expected {n}*{entries}={n * entries}")
        rows = output.reshape(b, n, entries, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * n, entries)
        return rows, h, w
    if output.dim() == 5 and output.shape[3] == n:
        # [region]'s l.output as RegionLayer.activate gives it: Darknet's buffer, records
        # (B, h, w, num, entries). Darknet's get_region_detections reads that buffer with the
        # planar entry_index (upstream issue #522), so, to give Darknet's numbers, the same
        # bytes are read here as a planar (B, num*entries, h, w) tensor.
        b, h, w = output.shape[:3]
        planar = output.reshape(b, -1).reshape(b, n * output.shape[4], h, w)
        return _rows(planar, n, entries, kind)
    raise UsageError(f"{kind} output must be (B, C, H, W) or (B, H, W, num, entries), got shape "
                     f"{tuple(output.shape)}")


def correct_boxes(boxes: torch.Tensor, image_w: int, image_h: int, net_w: int, net_h: int,
                  letter_box: bool, gaussian: bool = False) -> torch.Tensor:
    """``correct_yolo_boxes`` (relative=1): network-relative -> original-image-relative boxes.

    ``gaussian=True`` uses ``correct_gaussian_yolo_boxes``' slightly different float expression.
    """
    if letter_box:
        new_w, new_h = letterbox_size(image_w, image_h, net_w, net_h)
    else:
        new_w, new_h = net_w, net_h
    x = boxes[:, 0].double()
    y = boxes[:, 1].double()
    if gaussian:
        rw = float(np.float32(new_w) / np.float32(net_w))
        rh = float(np.float32(new_h) / np.float32(net_h))
        x = (x - (net_w - new_w) / 2.0 / net_w) / rw
        y = (y - (net_h - new_h) / 2.0 / net_h) / rh
        sw = np.float32(net_w) / np.float32(new_w)
        sh = np.float32(net_h) / np.float32(new_h)
    else:
        ratiow = np.float32(new_w) / np.float32(net_w)
        ratioh = np.float32(new_h) / np.float32(net_h)
        x = (x - float(np.float32(net_w - new_w)) / 2.0 / net_w) / float(ratiow)
        y = (y - float(np.float32(net_h - new_h)) / 2.0 / net_h) / float(ratioh)
        sw = np.float32(1) / ratiow
        sh = np.float32(1) / ratioh
    w = boxes[:, 2] * torch.tensor(sw, dtype=torch.float32)
    h = boxes[:, 3] * torch.tensor(sh, dtype=torch.float32)
    return torch.stack([x.float(), y.float(), w, h], dim=1)


def _grid(h: int, w: int, n: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    cell = torch.arange(h * w, device=device).repeat_interleave(n)
    return (cell % w).to(torch.float32), (cell // w).to(torch.float32)


def decode_head(layer: Any, output: torch.Tensor, net_w: int, net_h: int, image_sizes: ImageSizes,
                thresh: float, letter_box: bool = False) -> List[DetectionSet]:
    """Candidates of one head for every image of the batch (before NMS)."""
    kind = head_kind(layer)
    output = output.detach().to(torch.float32)
    batch = int(output.shape[0])
    sizes = _as_sizes(image_sizes, batch)
    classes = int(layer.classes)
    n = _layer_n(layer)
    aw, ah = _anchor_wh(layer, kind)
    thr = torch.tensor(thresh, dtype=torch.float32)
    if kind == "region":
        if getattr(layer, "softmax_tree", None) or getattr(layer, "tree_file", None) \
                or getattr(layer, "tree", None):
            raise UsageError("[region] with a hierarchical softmax (tree=) is not supported")
        coords = int(getattr(layer, "coords", 4))
        if coords != 4:
            raise UsageError(f"[region] with coords={coords} is not supported (only 4)")
        entries = 5 + classes
        if output.dim() == 2:
            lw, lh = int(layer.w), int(layer.h)
            rows = output.reshape(batch, lh * lw * n, entries)
        else:
            rows, lh, lw = _rows(output, n, entries, kind)
    elif kind == "gaussian_yolo":
        entries = 9 + classes
        rows, lh, lw = _rows(output, n, entries, kind)
    else:
        entries = 5 + classes
        rows, lh, lw = _rows(output, n, entries, kind)

    col, row = _grid(lh, lw, n, rows.device)
    anchor_w = torch.from_numpy(np.tile(aw, lh * lw)).to(rows.device)
    anchor_h = torch.from_numpy(np.tile(ah, lh * lw)).to(rows.device)

    results: List[DetectionSet] = []
    for b in range(batch):
        r = rows[b]
        image_w, image_h = sizes[b]
        uncertainty = None
        if kind == "region":
            keep = torch.ones(r.shape[0], dtype=torch.bool, device=r.device)
            tx = torch.sigmoid(r[:, 0].double()).float()
            ty = torch.sigmoid(r[:, 1].double()).float()
            bx = (col + tx) / lw
            by = (row + ty) / lh
            bw = (torch.exp(r[:, 2].double()) * anchor_w.double() / lw).float()
            bh = (torch.exp(r[:, 3].double()) * anchor_h.double() / lh).float()
            scale = r[:, 4]
            probs = scale[:, None] * r[:, 5:]
            objectness = torch.ones_like(scale)
        elif kind == "gaussian_yolo":
            obj_all = r[:, 8]
            keep = obj_all > thr
            r = r[keep]
            c_, ro_ = col[keep], row[keep]
            awk, ahk = anchor_w[keep].double(), anchor_h[keep].double()
            bw = (torch.exp(r[:, 4].double()) * awk / net_w).float()
            bh = (torch.exp(r[:, 6].double()) * ahk / net_h).float()
            bx = (c_ + r[:, 0]) / lw
            by = (ro_ + r[:, 2]) / lh
            point = str(getattr(layer, "yolo_point", "center"))
            if point == "left_top":
                bx, by = bx + bw / 2, by + bh / 2
            elif point == "right_bottom":
                bx, by = bx - bw / 2, by - bh / 2
            objectness = r[:, 8]
            uncertainty = r[:, [1, 3, 5, 7]].clone()
            uc_aver = (uncertainty.double().sum(dim=1) / 4.0).float()
            probs = (objectness[:, None] * r[:, 9:]).double() * (1.0 - uc_aver.double())[:, None]
            probs = probs.float()
        else:
            obj_all = r[:, 4]
            keep = obj_all > thr
            r = r[keep]
            c_, ro_ = col[keep], row[keep]
            awk, ahk = anchor_w[keep], anchor_h[keep]
            bx = (c_ + r[:, 0]) / lw
            by = (ro_ + r[:, 1]) / lh
            if int(getattr(layer, "new_coords", 0)):
                bw = r[:, 2] * r[:, 2] * 4 * awk / net_w
                bh = r[:, 3] * r[:, 3] * 4 * ahk / net_h
            else:
                bw = (torch.exp(r[:, 2].double()) * awk.double() / net_w).float()
                bh = (torch.exp(r[:, 3].double()) * ahk.double() / net_h).float()
            objectness = r[:, 4]
            probs = objectness[:, None] * r[:, 5:]
        probs = torch.where(probs > thr, probs, torch.zeros_like(probs))
        boxes = torch.stack([bx, by, bw, bh], dim=1)
        boxes = correct_boxes(boxes, image_w, image_h, net_w, net_h, letter_box,
                              gaussian=(kind == "gaussian_yolo"))
        results.append(DetectionSet(boxes.contiguous(), objectness.contiguous().clone(),
                                    probs.contiguous(), uncertainty, (image_w, image_h)))
    return results


def _concat(parts: Sequence[DetectionSet], classes: int, size: Tuple[int, int]) -> DetectionSet:
    if not parts:
        return DetectionSet.empty(classes, size)
    if len(parts) == 1:
        return parts[0]
    ucs = [p.uncertainty for p in parts]
    if any(u is not None for u in ucs):
        unc = torch.cat([u if u is not None else torch.zeros(len(p), 4) for u, p in zip(ucs, parts)])
    else:
        unc = None
    return DetectionSet(torch.cat([p.boxes for p in parts]), torch.cat([p.objectness for p in parts]),
                        torch.cat([p.probs for p in parts]), unc, size)


def get_network_boxes(heads: Sequence[Tuple[Any, torch.Tensor]], net_w: int, net_h: int,
                      image_sizes: ImageSizes, thresh: float = 0.25, hier_thresh: float = 0.5,
                      letter_box: bool = False) -> List[DetectionSet]:
    """Darknet's ``get_network_boxes(net, w, h, thresh, hier, map=0, relative=1, ..., letter)`` for
    a batch: one :class:`DetectionSet` per image, candidates of all heads in layer order.

    ``hier_thresh`` only matters for hierarchical-softmax region heads, which are not supported;
    it is accepted for API compatibility. Darknet prints an error when yolo heads disagree on
    ``classes``; here that raises :class:`UsageError`.
    """
    if not heads:
        raise UsageError("the network has no detection head ([yolo], [region], [Gaussian_yolo])")
    classes = int(heads[0][0].classes)
    for layer, _ in heads:
        if int(layer.classes) != classes:
            raise UsageError(f"detection heads have different numbers of classes: {classes} and "
                             f"{int(layer.classes)} - check the cfg file")
    batch = int(heads[0][1].shape[0])
    sizes = _as_sizes(image_sizes, batch)
    per_head = [decode_head(layer, out, net_w, net_h, sizes, thresh, letter_box)
                for layer, out in heads]
    return [_concat([h[b] for h in per_head], classes, sizes[b]) for b in range(batch)]
