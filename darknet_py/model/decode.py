"""Detection-head outputs -> candidate boxes, as Darknet's ``get_network_boxes`` (``network.c``).

Two stages, both for a whole batch and without Python loops over candidates:

1. :func:`decode_head` — traceable tensor ops (the ONNX export's ``--with-decode`` graph is
   :class:`HeadDecoder`, built from it). Rows ``(B, N, 4+1+C)``: ``x, y, w, h`` relative to the
   network input, objectness, ``objectness*class`` probabilities (before thresholding),
   candidates in Darknet's order (cells row-major, the anchors of a cell together). The box
   arithmetic is the head's own (``decode_rows`` of its class, built on its one box function:
   ``get_yolo_box``, ``get_gaussian_yolo_box``, ``get_region_box``); this module only lays out
   the grid and the candidates. :func:`~darknet_py.layers.registry.head_class` finds the class of
   a :class:`HeadSpec` (an exported file has specs, not layers).

2. :func:`head_candidates` — Darknet's thresholding (a candidate needs objectness ``> thresh``;
   every ``[region]`` cell is one, with objectness set to 1), probabilities ``<= thresh`` zeroed, and
   :func:`correct_yolo_boxes` (undo the stretch or the letterbox) -> one
   :class:`~darknet_py.structures.detections.DetectionSet` per image.

Outputs may come in the channel layout ``(B, n*entries, h, w)``, as ``[region]``'s records
``(B, h, w, n, entries)``, or flattened ``(B, h*w*n*entries)``. A head may refuse to be decoded
(``[region]`` with a hierarchical softmax or ``coords != 4``).

``[region]`` records are read as records: the layout ``forward_region_layer`` writes them in,
trains them in (its delta) and pjreddie's ``get_region_boxes`` and OpenCV DNN read them in.
AlexeyAB's ``get_region_detections`` reads the same buffer with the planar ``entry_index``
(upstream issue #522), which scrambles every box of a trained region model (in its CPU and GPU
builds alike: both hand the records to it); darknet-py does not reproduce that, so a YOLOv2
model trained here or in Darknet detects.
"""
from __future__ import annotations

import functools
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..imaging.image import letterbox_size
from ..layers.registry import head_class
from ..structures.detections import DetectionSet
from ..structures.heads import HeadSpec

__all__ = ["Decoded", "decode_head", "HeadDecoder", "head_candidates", "decoded_candidates",
           "get_network_boxes", "correct_yolo_boxes", "as_spec"]

ImageSizes = Union[Tuple[int, int], Sequence[Tuple[int, int]]]


class Decoded(NamedTuple):
    """One head's decoded candidates for a batch."""

    #: (B, N, 4+1+C) float32: x, y, w, h (relative to the network input), objectness, probs
    rows: torch.Tensor
    #: (B, N, 4) Gaussian-yolo sigmas, else None
    uncertainty: Optional[torch.Tensor]


def as_spec(head: Any) -> HeadSpec:
    """A :class:`HeadSpec` from a spec or a head layer (anything with ``head_spec()``)."""
    if isinstance(head, HeadSpec):
        return head
    make = getattr(head, "head_spec", None)
    if make is None:
        raise UsageError(f"{type(head).__name__} is not a detection head")
    return make()


def _check_decodable(spec: HeadSpec) -> None:
    head_class(spec.kind).check_decodable(spec)


def head_rows(spec: HeadSpec, output: torch.Tensor) -> torch.Tensor:
    """``l.output`` as ``(B, h*w*n, entries)`` in Darknet's candidate order."""
    n, e, lh, lw = spec.n, spec.entries, spec.h, spec.w
    out = output.to(torch.float32)
    if out.dim() == 4:
        if out.shape[1] != n * e:
            raise UsageError(f"{spec.kind} output has {out.shape[1]} channels, expected "
                             f"{n}*{e}={n * e}")
        return out.reshape(-1, n, e, lh, lw).permute(0, 3, 4, 1, 2).reshape(-1, lh * lw * n, e)
    if out.dim() == 5:
        # [region]'s records (B, h, w, n, entries): already in candidate order (see the module
        # docstring for why not AlexeyAB's planar reading of them)
        return out.reshape(-1, lh * lw * n, e)
    if out.dim() == 2:  # Darknet's flat CPU l.output: cell-major, anchor-minor, entries last
        return out.reshape(-1, lh * lw * n, e)
    raise UsageError(f"{spec.kind} output must be (B, C, H, W), (B, H, W, num, entries) or "
                     f"flat, got shape {tuple(out.shape)}")


def _grid(spec: HeadSpec, device) -> Tuple[torch.Tensor, ...]:
    """Column, row, anchor width, anchor height of each candidate, shape (1, N)."""
    lh, lw, n = spec.h, spec.w, spec.n
    cell = torch.arange(lh * lw, device=device).repeat_interleave(n)
    aw, ah = spec.masked_anchors()
    aw_t = torch.tensor(aw, dtype=torch.float32, device=device).repeat(lh * lw)
    ah_t = torch.tensor(ah, dtype=torch.float32, device=device).repeat(lh * lw)
    return ((cell % lw).to(torch.float32)[None], (cell // lw).to(torch.float32)[None],
            aw_t[None], ah_t[None])


def decode_head(spec: HeadSpec, output: torch.Tensor, net_w: int, net_h: int) -> Decoded:
    """Darknet's box decoding of one head, all candidates kept (see the module docstring)."""
    _check_decodable(spec)
    r = head_rows(spec, output)
    gx, gy, aw, ah = _grid(spec, r.device)
    return _decode_rows(spec, r, gx, gy, aw, ah, net_w, net_h)


def _decode_rows(spec: HeadSpec, r: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor,
                 aw: torch.Tensor, ah: torch.Tensor, net_w: int, net_h: int) -> Decoded:
    """The decoding of rows ``r`` (``(..., entries)``) whose cell column/row and anchor size are
    ``gx, gy, aw, ah`` (broadcastable to ``r[..., 0]``): elementwise, so decoding a subset of
    rows gives the same values as decoding all of them."""
    rows, uncertainty = head_class(spec.kind).decode_rows(spec, r, gx, gy, aw, ah, net_w, net_h)
    return Decoded(rows, uncertainty)


def _candidates_above(spec: HeadSpec, output: torch.Tensor, net_w: int, net_h: int,
                      thresh: float) -> Optional[Tuple[torch.Tensor, Decoded]]:
    """Only the candidates with objectness ``> thresh``, decoded: ``(image index of each row,
    Decoded of shape (K, ...))`` in Darknet's candidate order; None where this shortcut does not
    apply (a head whose every cell is a candidate, ``[region]``, or outputs not in channel
    layout).

    The objectness channel is compared in place in ``l.output``'s layout, and only the rows that
    pass are gathered and decoded — a few dozen of the thousands :func:`decode_head` decodes."""
    obj_at = head_class(spec.kind).obj_entry
    if obj_at is None or output.dim() != 4 or output.shape[1] != spec.n * spec.entries:
        return None
    n, e, lh, lw = spec.n, spec.entries, spec.h, spec.w
    out = output.to(torch.float32).reshape(-1, n, e, lh, lw)
    obj = out[:, :, obj_at].permute(0, 2, 3, 1)              # (B, h, w, n): candidate order
    b, y, x, a = torch.nonzero(obj > torch.tensor(thresh, dtype=torch.float32), as_tuple=True)
    r = out.permute(0, 3, 4, 1, 2)[b, y, x, a]               # (K, entries)
    aw, ah = _anchor_tensors(spec)
    dec = _decode_rows(spec, r, x.to(torch.float32), y.to(torch.float32), aw[a], ah[a],
                       net_w, net_h)
    return b, dec


@functools.lru_cache(maxsize=256)
def _anchor_tensors(spec: HeadSpec) -> Tuple[torch.Tensor, torch.Tensor]:
    aw, ah = spec.masked_anchors()
    return torch.tensor(aw, dtype=torch.float32), torch.tensor(ah, dtype=torch.float32)


class HeadDecoder(nn.Module):
    """:func:`decode_head` of every head, concatenated: the ``detections`` output of an ONNX
    export made ``--with-decode`` (``(B, N, 4+1+C)``; for ``[region]`` the objectness column is
    the head's own — Darknet sets 1, which :func:`decoded_candidates` does)."""

    def __init__(self, heads: Sequence[HeadSpec], net_w: int, net_h: int):
        super().__init__()
        self.heads = [as_spec(h) for h in heads]
        if len({h.classes for h in self.heads}) != 1:
            raise UsageError(f"detection heads have different numbers of classes "
                             f"({sorted({h.classes for h in self.heads})}): they cannot be "
                             "concatenated into one detections output")
        for h in self.heads:
            _check_decodable(h)
        self.net_w, self.net_h = int(net_w), int(net_h)

    def forward(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        parts = [decode_head(h, o, self.net_w, self.net_h).rows for h, o in zip(self.heads, outputs)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------- candidates
def correct_yolo_boxes(boxes: torch.Tensor, image_w: int, image_h: int, net_w: int, net_h: int,
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


def _as_sizes(image_sizes: ImageSizes, batch: int) -> List[Tuple[int, int]]:
    if len(image_sizes) == 2 and all(isinstance(v, (int, np.integer)) for v in image_sizes):
        return [(int(image_sizes[0]), int(image_sizes[1]))] * batch  # type: ignore[index]
    sizes = [(int(w), int(h)) for w, h in image_sizes]  # type: ignore[misc]
    if len(sizes) != batch:
        raise UsageError(f"got {len(sizes)} image sizes for a batch of {batch} images")
    return sizes


def _threshold(spec: HeadSpec, rows: torch.Tensor, uncertainty: Optional[torch.Tensor],
               size: Tuple[int, int], net_w: int, net_h: int, thresh: float,
               letter_box: bool) -> DetectionSet:
    """One image of one head: Darknet's candidate selection, zeroing and box correction."""
    thr = torch.tensor(thresh, dtype=torch.float32)
    cls = head_class(spec.kind)
    if cls.obj_entry is None:  # every cell is a candidate, objectness set to 1
        objectness = torch.ones(rows.shape[0], dtype=torch.float32, device=rows.device)
    else:
        keep = rows[:, 4] > thr
        rows = rows[keep]
        if uncertainty is not None:
            uncertainty = uncertainty[keep]
        objectness = rows[:, 4]
    probs = rows[:, 5:]
    probs = torch.where(probs > thr, probs, torch.zeros_like(probs))
    boxes = correct_yolo_boxes(rows[:, :4], size[0], size[1], net_w, net_h, letter_box,
                          gaussian=cls.gaussian_box_correction)
    return DetectionSet(boxes.contiguous(), objectness.contiguous().clone(), probs.contiguous(),
                        None if uncertainty is None else uncertainty.contiguous().clone(), size)


def head_candidates(head: Any, output: torch.Tensor, net_w: int, net_h: int,
                    image_sizes: ImageSizes, thresh: float, letter_box: bool = False
                    ) -> List[DetectionSet]:
    """Candidates of one head for every image of the batch (before NMS)."""
    spec = as_spec(head)
    _check_decodable(spec)
    above = _candidates_above(spec, output.detach(), net_w, net_h, thresh)
    if above is not None:
        image, dec = above
        sizes = _as_sizes(image_sizes, int(output.shape[0]))
        if len(sizes) == 1:
            picks = [slice(None)]
        else:
            ends = torch.bincount(image, minlength=len(sizes)).cumsum(0).tolist()
            picks = [slice(s0, s1) for s0, s1 in zip([0] + ends[:-1], ends)]
        return [_threshold(spec, dec.rows[p], None if dec.uncertainty is None
                           else dec.uncertainty[p], sizes[b], net_w, net_h, thresh, letter_box)
                for b, p in enumerate(picks)]
    dec = decode_head(spec, output.detach(), net_w, net_h)
    sizes = _as_sizes(image_sizes, int(dec.rows.shape[0]))
    return [_threshold(spec, dec.rows[b], None if dec.uncertainty is None else dec.uncertainty[b],
                       sizes[b], net_w, net_h, thresh, letter_box) for b in range(len(sizes))]


def _same_classes(heads: Sequence[HeadSpec]) -> int:
    if not heads:
        raise UsageError("the network has no detection head ([yolo], [region], [Gaussian_yolo])")
    classes = heads[0].classes
    for h in heads:
        if h.classes != classes:
            raise UsageError(f"detection heads have different numbers of classes: {classes} and "
                             f"{h.classes} - check the cfg file")
    return classes


def get_network_boxes(heads: Sequence[Tuple[Any, torch.Tensor]], net_w: int, net_h: int,
                      image_sizes: ImageSizes, thresh: float = 0.25, hier_thresh: float = 0.5,
                      letter_box: bool = False) -> List[DetectionSet]:
    """Darknet's ``get_network_boxes(net, w, h, thresh, hier, map=0, relative=1, ..., letter)`` for
    a batch: ``heads`` pairs each head (a :class:`HeadSpec` or head layer) with its output; one
    :class:`DetectionSet` per image, candidates of all heads in layer order.

    ``hier_thresh`` (``-hier``) is accepted for Darknet's signature and, as in AlexeyAB's Darknet,
    has no effect: its ``get_network_boxes`` hands ``hier`` to ``custom_get_region_detections``,
    which never reads it (its tree-softmax branch, ``get_region_boxes``, uses a fixed 0.5). Only
    ``get_region_detections`` (``region_layer.c``, which that build no longer calls) used it,
    for hierarchical (``tree=``) ``[region]`` heads, and darknet-py refuses to decode those.
    """
    specs = [as_spec(h) for h, _ in heads]
    classes = _same_classes(specs)
    batch = int(heads[0][1].shape[0])
    sizes = _as_sizes(image_sizes, batch)
    joined = _joined_candidates(specs, [out for _, out in heads], net_w, net_h, sizes, thresh,
                                letter_box)
    if joined is not None:
        return joined
    per_head = [head_candidates(s, out, net_w, net_h, sizes, thresh, letter_box)
                for s, (_, out) in zip(specs, heads)]
    return [DetectionSet.concat([h[b] for h in per_head], classes, sizes[b]) for b in range(batch)]


def _joined_candidates(specs: Sequence[HeadSpec], outputs: Sequence[torch.Tensor], net_w: int,
                       net_h: int, sizes: List[Tuple[int, int]], thresh: float,
                       letter_box: bool) -> Optional[List[DetectionSet]]:
    """:func:`get_network_boxes` when every head is of one kind and takes the objectness
    shortcut (:func:`_candidates_above`): the heads' decoded candidates are joined first, so
    thresholding and box correction (the same elementwise arithmetic for every head of a kind)
    run once per image instead of once per head and image. None where that does not apply."""
    kinds = {head_class(s.kind) for s in specs}
    if len(kinds) != 1:
        return None
    for s in specs:
        _check_decodable(s)
    found = []
    for s, out in zip(specs, outputs):
        above = _candidates_above(s, out.detach(), net_w, net_h, thresh)
        if above is None:
            return None
        found.append(above)
    if any((d.uncertainty is None) != (found[0][1].uncertainty is None) for _, d in found):
        return None
    image = torch.cat([b for b, _ in found])
    rows = torch.cat([d.rows for _, d in found])
    unc = None if found[0][1].uncertainty is None else torch.cat([d.uncertainty for _, d in found])
    if len(sizes) == 1:
        picks = [slice(None)]
    else:
        # candidates of one image together, in head order (a stable sort keeps it)
        order = torch.sort(image, stable=True).indices
        rows = rows[order]
        unc = None if unc is None else unc[order]
        ends = torch.bincount(image, minlength=len(sizes)).cumsum(0).tolist()
        picks = [slice(s0, s1) for s0, s1 in zip([0] + ends[:-1], ends)]
    # an image without candidates gets the empty set, as joining no parts gives it
    return [_threshold(specs[0], rows[p], None if unc is None else unc[p], sizes[b], net_w,
                       net_h, thresh, letter_box) if len(rows[p])
            else DetectionSet.empty(specs[0].classes, sizes[b]) for b, p in enumerate(picks)]


def decoded_candidates(heads: Sequence[HeadSpec], rows: torch.Tensor, net_w: int, net_h: int,
                       image_sizes: ImageSizes, thresh: float = 0.25,
                       letter_box: bool = False) -> List[DetectionSet]:
    """:func:`get_network_boxes` on :class:`HeadDecoder`'s concatenated rows (a decoded export)."""
    classes = _same_classes(heads)
    rows = rows.to(torch.float32)
    sizes = _as_sizes(image_sizes, int(rows.shape[0]))
    out = []
    for b, size in enumerate(sizes):
        parts, start = [], 0
        for spec in heads:
            parts.append(_threshold(spec, rows[b, start:start + spec.rows], None, size, net_w,
                                    net_h, thresh, letter_box))
            start += spec.rows
        out.append(DetectionSet.concat(parts, classes, size))
    return out
