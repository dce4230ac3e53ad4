"""``[region]``: the YOLOv2 detection head (``region_layer.c``, ``parse_region`` in ``parser.c``).

The input is the raw output of the conv before it, ``(B, num*(coords+classes+1), h, w)``.

Darknet's ``forward_region_layer`` first *flattens* the input (``flatten(..., forward=1)``: the
``(num*(coords+classes+1), h*w)`` planes become ``h*w`` rows of ``num*(coords+classes+1)``
values), then, for every ``(location, anchor)`` record of ``coords+classes+1`` values, applies the
logistic to entry 4 (objectness) and a softmax (``softmax=1``) or the hierarchical softmax of
``tree=`` to the ``classes`` entries that start at entry 5. x, y, w, h stay raw (``get_region_box``
applies ``logistic`` to x, y and ``exp`` to w, h when decoding). The GPU path gives the same buffer.

:meth:`RegionLayer.activate` returns exactly that buffer, shaped ``(B, h, w, num,
coords+classes+1)``: ``out.reshape(B, -1)`` is Darknet's ``l.output`` element for element.

Box decoding reads these records as records (:mod:`darknet_py.model.decode` says why not with
AlexeyAB's planar ``entry_index``, upstream issue #522).

``tree=`` and ``map=`` files are read relative to the current directory like Darknet (yolo9000's
``data/9k.tree``); a missing file is a :class:`~darknet_py.errors.CfgError`.

The box function is :func:`get_region_box` (decoding and the loss use it); the training delta is
``forward_region_layer``'s (:func:`region_delta`), computed on the records as Darknet's CPU build
does and handed back in the input's planar layout (``flatten(..., 0)``):

1. every prediction: objectness delta ``noobject_scale * (0 - obj) * obj*(1-obj)``, zero where
   the best IoU with a truth exceeds ``thresh`` (``classfix`` variants included); while
   ``*net.seen < 12800`` also a box delta (scale .01) towards the anchor centred in its cell.
2. every truth: the anchor of the cell under its centre whose box (``bias_match=1``: the anchor
   itself) has the best shape IoU with it gets the box delta (``coord_scale``), the objectness
   delta ``object_scale * (1 - obj)`` (``rescore=1``: ``(iou - obj)``) times the logistic
   gradient, and the class delta (softmax: ``class_scale * (onehot - p)``; with ``tree=`` the
   hierarchical one; ``map=`` maps the class first). A later truth of the same cell and anchor
   overwrites an earlier one.

Unlike ``[yolo]`` the x, y and objectness deltas carry the logistic gradient (``backward`` adds
the delta to the raw input as it is). ``l.cost`` is ``sum(delta**2)``; the line it prints is
:meth:`RegionLossStats.line`. ``absolute``, ``log`` and ``sqrt`` are read but, as in AlexeyAB's
``region_layer.c`` (``DOABS`` is fixed to 1), change nothing.

Deliberate differences (degenerate cases): a truth centre at exactly ``x == 1`` or ``y == 1`` is
put in the last cell (Darknet writes out of range); a truth whose shape IoU is 0 with every
anchor trains anchor 0 of its own cell (Darknet writes the first record of the batch);
yolo9000's classification-only labels (``x > 100000``), which darknet-py's loader never makes,
are not handled; a label with a class outside ``0..classes-1`` is skipped (Darknet prints a
warning), and with ``map=`` one that has no entry in the map (Darknet reads past it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from ..errors import CfgError, UsageError
from ..structures.heads import HeadSpec
from .base import MAX_ANCHORS, MAX_BOXES, BuildContext, check_range
from .head import BoxT, DetectionHead, box_iou, darknet_ratio, f32, prepare_truth
from .parse_helpers import (DefaultsLog, SoftmaxTree, group_softmax, loud_float, loud_int,
                            loud_str, read_map, read_tree)


def get_region_box(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, h: torch.Tensor,
                   gx: torch.Tensor, gy: torch.Tensor, aw: torch.Tensor, ah: torch.Tensor,
                   lw: int, lh: int) -> BoxT:
    """``get_region_box``: the raw entries ``x, y, w, h`` of a record at cell column/row
    ``gx, gy`` with anchor ``aw, ah`` (grid cells) -> the box relative to the network input:
    ``((i + logistic(x))/l.w, (j + logistic(y))/l.h, exp(w)*aw/l.w, exp(h)*ah/l.h)``
    (``DOABS``), the logistic and ``exp`` in double, rounded to the input dtype."""
    dtype = x.dtype
    bx = (gx + torch.sigmoid(x.double()).to(dtype)) / lw
    by = (gy + torch.sigmoid(y.double()).to(dtype)) / lh
    bw = (torch.exp(w.double()) * aw.double() / lw).to(dtype)
    bh = (torch.exp(h.double()) * ah.double() / lh).to(dtype)
    return bx, by, bw, bh


class RegionLayer(DetectionHead):
    table_name = "detection"
    kind = "region"
    type_code = 27
    obj_entry = None    # get_region_detections: every cell is a candidate

    @classmethod
    def entries_for(cls, classes: int, coords: int = 4) -> int:
        return coords + 1 + classes

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        pre = DefaultsLog()
        self.coords = loud_int(s, "coords", 4, pre)
        self.classes = loud_int(s, "classes", 20, pre)
        self.n = check_range(s, "num", loud_int(s, "num", 1, pre), 0, MAX_ANCHORS)
        self.max_boxes = check_range(s, "max", s.int("max", 200), 0, MAX_BOXES)
        c, h, w = self.in_shape
        if self.coords < 4 or self.classes < 1 or self.n < 1:
            raise s.error(f"need coords >= 4, classes >= 1 and num >= 1, got coords={self.coords}, "
                          f"classes={self.classes}, num={self.n}")
        self.size = self.coords + self.classes + 1
        expected = self.n * self.size
        if c != expected:
            raise CfgError(
                f"[region] expects {expected} input channels = num {self.n} x (classes "
                f"{self.classes} + coords {self.coords} + 1), but the layer before it gives {c}: "
                f"set filters={expected} in the [convolutional] before this [region]",
                file=s.file, line=s.line, value=c)
        self._pre_lines: List[str] = list(pre)
        post = DefaultsLog()
        self.log = s.int("log", 0)
        self.sqrt = s.int("sqrt", 0)
        self.softmax = loud_int(s, "softmax", 0, post)
        self.focal_loss = s.int("focal_loss", 0)
        self.jitter = loud_float(s, "jitter", 0.2, post)
        self.resize = s.float("resize", 1.0)
        self.rescore = s.int("rescore", 0)
        self.thresh = loud_float(s, "thresh", 0.5, post)
        self.classfix = s.int("classfix", 0)
        self.absolute = s.int("absolute", 0)
        self.random = s.float("random", 0.0)
        self.coord_scale = loud_float(s, "coord_scale", 1.0, post)
        self.object_scale = loud_float(s, "object_scale", 1.0, post)
        self.noobject_scale = loud_float(s, "noobject_scale", 1.0, post)
        self.mask_scale = loud_float(s, "mask_scale", 1.0, post)
        self.class_scale = loud_float(s, "class_scale", 1.0, post)
        self.bias_match = s.int("bias_match", 0)
        tree_file = loud_str(s, "tree", None, post)
        self.softmax_tree: Optional[SoftmaxTree] = None
        if tree_file is not None:
            self.softmax_tree = read_tree(s, "tree", tree_file)
            if self.softmax_tree.n > self.classes:
                raise s.error(f"tree={tree_file} has {self.softmax_tree.n} nodes but classes="
                              f"{self.classes}; the hierarchy must not be larger than the classes")
        map_file = loud_str(s, "map", None, post)
        self.map: Optional[List[int]] = read_map(s, "map", map_file) if map_file else None
        anchors = s.float_list("anchors", [])
        anchors = anchors[: 2 * self.n]
        # make_region_layer fills every bias with .5; the cfg overwrites the first ones
        self.anchors: List[float] = anchors + [0.5] * (2 * self.n - len(anchors))
        self._post_lines: List[str] = list(post)
        self.out_shape = self.in_shape
        self.w, self.h = w, h

    def head_spec(self) -> HeadSpec:
        """What decoding this head's output needs (see :class:`HeadSpec`)."""
        return self.make_spec(index=self.index, classes=self.classes, n=self.n,
                              total=self.n, mask=tuple(range(self.n)), anchors=tuple(self.anchors),
                              w=self.w, h=self.h, coords=self.coords,
                              tree=self.softmax_tree is not None)

    # ------------------------------------------------------------------ activation
    def _activate_records(self, rec: torch.Tensor) -> torch.Tensor:
        """Activate ``(..., coords+classes+1)`` records like ``forward_region_layer``."""
        obj = torch.sigmoid(rec[..., 4:5])
        cls = rec[..., 5:5 + self.classes]
        if self.softmax_tree is not None:
            n = self.softmax_tree.n
            cls = group_softmax(cls, self.softmax_tree) if n == self.classes else torch.cat(
                [group_softmax(cls[..., :n], self.softmax_tree), cls[..., n:]], dim=-1)
        elif self.softmax:
            cls = torch.softmax(cls, dim=-1)
        return torch.cat([rec[..., :4], obj, cls, rec[..., 5 + self.classes:]], dim=-1)

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """Darknet's ``l.output`` from the raw input, as ``(B, h, w, num, coords+classes+1)``."""
        b, _, h, w = x.shape
        rec = x.reshape(b, self.n * self.size, h * w).transpose(1, 2).reshape(b, h, w, self.n,
                                                                             self.size)
        return self._activate_records(rec)

    # ------------------------------------------------------------------ detections
    @classmethod
    def check_decodable(cls, spec: HeadSpec) -> None:
        if spec.tree:
            raise UsageError(f"[region] layer {spec.index} uses a hierarchical softmax (tree=), "
                             "which darknet-py cannot decode")
        if spec.coords != 4:
            raise UsageError(f"[region] layer {spec.index} has coords={spec.coords}: only "
                             "coords=4 can be decoded")

    @classmethod
    def decode_rows(cls, spec, r, gx, gy, aw, ah, net_w, net_h):
        bx, by, bw, bh = get_region_box(r[..., 0], r[..., 1], r[..., 2], r[..., 3], gx, gy, aw, ah,
                                        spec.w, spec.h)
        obj = r[..., 4]
        probs = obj.unsqueeze(-1) * r[..., 5:5 + spec.classes]
        return torch.cat([torch.stack([bx, by, bw, bh, obj], dim=-1), probs], dim=-1), None

    # ------------------------------------------------------------------ training
    def delta(self, output, truth, net_w, net_h, seen=0):
        if self.coords != 4:
            raise UsageError(f"[region] layer {self.index} has coords={self.coords}: Darknet's "
                             "region loss assumes coords=4 (objectness at entry 4)")
        return region_delta(output, truth, self, seen)

    # ------------------------------------------------------------------ printing
    def table_line(self) -> str:
        return "\n".join(self._pre_lines + ["detection"] + self._post_lines)


# ------------------------------------------------------------------------------------------
# the training delta (forward_region_layer with state.train)
# ------------------------------------------------------------------------------------------
#: ``*net.seen`` below which predictions are also pulled towards their anchors
PRIOR_SEEN = 12800


@dataclass
class RegionLossStats:
    """What ``forward_region_layer`` adds up; ``cost`` is ``l.cost`` (``sum(delta**2)``)."""

    batch: int
    cells: int
    count: int = 0
    class_count: int = 0
    avg_iou: float = 0.0       # sums, as Darknet's locals before the division in the print
    recall: int = 0
    avg_cat: float = 0.0
    avg_obj: float = 0.0
    avg_anyobj: float = 0.0
    cost: float = 0.0

    def line(self, layer_index: int) -> str:
        """The line ``forward_region_layer`` prints to stdout (no trailing newline; Darknet's
        line names no layer)."""
        return (f"Region Avg IOU: {darknet_ratio(self.avg_iou, self.count)}, "
                f"Class: {darknet_ratio(self.avg_cat, self.class_count)}, "
                f"Obj: {darknet_ratio(self.avg_obj, self.count)}, "
                f"No Obj: {darknet_ratio(self.avg_anyobj, self.cells)}, "
                f"Avg Recall: {darknet_ratio(self.recall, self.count)},  count: {self.count}")


def _logistic_gradient(o: torch.Tensor) -> torch.Tensor:
    return (1 - o) * o


def _box_delta(rec: torch.Tensor, truth: BoxT, gx: torch.Tensor, gy: torch.Tensor,
               aw: torch.Tensor, ah: torch.Tensor, lw: int, lh: int, scale):
    """``delta_region_box`` for records ``rec`` (..., >=4 entries) at cells ``gx, gy`` with
    anchors ``aw, ah``: ``((..., 4) delta, IoU of the predicted box with the truth)``."""
    dtype = rec.dtype
    x, y, w, h = rec[..., 0], rec[..., 1], rec[..., 2], rec[..., 3]
    pred = get_region_box(x, y, w, h, gx, gy, aw, ah, lw, lh)
    iou = box_iou(pred, truth)
    t_x, t_y, t_w, t_h = truth
    tx = t_x * lw - gx
    ty = t_y * lh - gy
    tw = torch.log((t_w * lw / aw).double()).to(dtype)
    th = torch.log((t_h * lh / ah).double()).to(dtype)
    sx = torch.sigmoid(x.double()).to(dtype)
    sy = torch.sigmoid(y.double()).to(dtype)
    d = torch.stack([scale * (tx - sx) * _logistic_gradient(sx),
                     scale * (ty - sy) * _logistic_gradient(sy),
                     scale * (tw - w), scale * (th - h)], dim=-1)
    return d, iou


def _class_delta(p: torch.Tensor, cid: torch.Tensor, scale, focal: bool) -> torch.Tensor:
    """``delta_region_class`` without a tree: all ``classes`` entries, ``(E, C)``."""
    onehot = torch.zeros_like(p)
    onehot[torch.arange(p.shape[0], device=p.device), cid] = 1
    d = scale * (onehot - p)
    if focal:
        alpha = 0.5
        pt = p.gather(1, cid.view(-1, 1)) + 0.000000000000001
        grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
        d = d * (alpha * grad)
    return d


def _tree_class_delta(delta_cls: torch.Tensor, p: torch.Tensor, class_id: int, tree,
                      scale: float) -> float:
    """``delta_region_class`` with a hierarchy, for one record (in place): the class and its
    ancestors are trained against their sibling groups. Returns the path probability."""
    pred = 1.0
    while class_id >= 0:
        pred *= float(p[class_id])
        g = tree.group[class_id]
        off, size = tree.group_offset[g], tree.group_size[g]
        delta_cls[off:off + size] = scale * (0 - p[off:off + size])
        delta_cls[class_id] = scale * (1 - p[class_id])
        class_id = tree.parent[class_id]
    return pred


def region_delta(output: torch.Tensor, truth, layer: "RegionLayer", seen: int = 0):
    """Darknet's ``forward_region_layer`` training branch (module docstring).

    Args:
        output: the activated records ``(B, h, w, num, coords+classes+1)`` of
            :meth:`RegionLayer.activate`.
        truth: ``(B, boxes, 5 or 6)`` rows ``(x, y, w, h, class[, track])``; each image's list
            ends at its first row with ``x == 0`` and a valid class.
        layer: the :class:`RegionLayer` (options, anchors in grid cells, tree, map).
        seen: ``*net.seen`` as the layer sees it (this mini-batch included).

    Returns:
        ``(delta, stats)``: ``delta`` in the raw input's planar layout ``(B, num*size, h, w)``
        with Darknet's sign, ``stats`` a :class:`RegionLossStats`.
    """
    out = output.detach()
    B, h, w, n, size = out.shape
    device, dtype = out.device, out.dtype
    C = int(layer.classes)
    anchors = torch.tensor([float(a) for a in layer.anchors], dtype=dtype,
                           device=device).view(-1, 2)[:n]
    aw, ah = anchors[:, 0], anchors[:, 1]
    gy = torch.arange(h, device=device, dtype=dtype).view(1, h, 1, 1)
    gx = torch.arange(w, device=device, dtype=dtype).view(1, 1, w, 1)
    o_obj = out[..., 4]
    grad_obj = _logistic_gradient(o_obj)
    delta = torch.zeros_like(out)
    stats = RegionLossStats(batch=B, cells=B * h * w * n)
    stats.avg_anyobj = float(o_obj.double().sum())
    noobj, thresh = f32(layer.noobject_scale), f32(layer.thresh)
    tree = layer.softmax_tree
    focal = bool(layer.focal_loss)

    t = prepare_truth(truth, B, device, dtype)
    cls_raw = t[..., 4].to(torch.long)          # C's (int): truncation
    valid_cls = (cls_raw >= 0) & (cls_raw < C)
    # `if (class_id >= classes) continue;` comes before `if (!truth.x) break;`
    ends = valid_cls & (t[..., 0] == 0)
    usable = (torch.cumsum(ends.to(torch.int32), dim=1) == 0) & valid_cls      # (B, T)
    t_box = tuple(t[..., k] for k in range(4))

    # pass 1: every prediction
    pred = get_region_box(out[..., 0], out[..., 1], out[..., 2], out[..., 3], gx, gy,
                          aw.view(1, 1, 1, n), ah.view(1, 1, 1, n), w, h)
    if t.shape[1]:
        tb = tuple(v.view(B, 1, 1, 1, -1) for v in t_box)
        ious = box_iou(tuple(v.unsqueeze(-1) for v in pred), tb)     # (B, h, w, n, T)
        ious = ious.masked_fill(~usable.view(B, 1, 1, 1, -1), 0)
        best_iou, best_t = ious.max(dim=-1)
    else:
        best_iou = torch.zeros_like(o_obj)
        best_t = torch.zeros(o_obj.shape, dtype=torch.long, device=device)
    obj_delta = noobj * ((0 - o_obj) * grad_obj)
    classfix = int(layer.classfix)
    if classfix == -1:
        obj_delta = noobj * ((best_iou - o_obj) * grad_obj)
    else:
        above = best_iou > thresh
        obj_delta = obj_delta.masked_fill(above, 0)
        if classfix > 0 and bool(above.any()):
            pb, pj, pi, pa = above.nonzero(as_tuple=True)
            cid = cls_raw[pb, best_t[pb, pj, pi, pa]]
            scale = f32(layer.class_scale) * (out[pb, pj, pi, pa, 4] if classfix == 2 else 1.0)
            p = out[pb, pj, pi, pa, 5:5 + C]
            if tree is None:
                scale_t = torch.as_tensor(scale, dtype=dtype, device=device)
                d = _class_delta(p, cid, scale_t.view(-1, 1) if scale_t.dim() else scale_t,
                                 focal)
                delta[pb, pj, pi, pa, 5:5 + C] = d
                stats.avg_cat += float(p.gather(1, cid.view(-1, 1)).double().sum())
            else:
                for k in range(pb.numel()):
                    sc = float(scale[k]) if torch.is_tensor(scale) else scale
                    stats.avg_cat += _tree_class_delta(delta[pb[k], pj[k], pi[k], pa[k], 5:5 + C],
                                                       p[k], int(cid[k]), tree, sc)
            stats.class_count += int(pb.numel())
    delta[..., 4] = obj_delta
    if seen < PRIOR_SEEN:
        prior = ((gx + 0.5) / w, (gy + 0.5) / h, (aw / w).view(1, 1, 1, n),
                 (ah / h).view(1, 1, 1, n))
        prior = tuple(v.expand(B, h, w, n) for v in prior)
        d, _ = _box_delta(out, prior, gx, gy, aw.view(1, 1, 1, n), ah.view(1, 1, 1, n), w, h,
                          f32(0.01))
        delta[..., :4] = d

    # pass 2: every truth, in order; a later truth of the same record overwrites. With map=,
    # a label needs an entry in it (Darknet reads past the map otherwise)
    trained = usable
    if layer.map is not None:
        trained = usable & (cls_raw < len(layer.map))
    eb, et = trained.nonzero(as_tuple=True)
    if eb.numel():
        order = torch.argsort(eb * t.shape[1] + et)
        eb, et = eb[order], et[order]
        E = eb.numel()
        tx, ty, tw, th = (v[eb, et] for v in t_box)
        ei = (tx * w).to(torch.long).clamp(0, w - 1)
        ej = (ty * h).to(torch.long).clamp(0, h - 1)
        # best anchor: shape IoU of each anchor's box (bias_match: the anchor) with the truth
        if layer.bias_match:      # the anchors' own shapes (every region cfg of Darknet's)
            cw, ch = (aw / w).view(1, n).expand(E, n), (ah / h).view(1, n).expand(E, n)
        else:                     # the predicted boxes' shapes in the truth's cell
            cand = out[eb, ej, ei]                                        # (E, n, size)
            _, _, cw, ch = get_region_box(cand[..., 0], cand[..., 1], cand[..., 2], cand[..., 3],
                                          ei.view(-1, 1).to(dtype), ej.view(-1, 1).to(dtype),
                                          aw.view(1, n), ah.view(1, n), w, h)
        zero = torch.zeros_like(cw)
        shape_iou = box_iou((zero, zero, cw, ch),
                            (zero, zero, tw.view(-1, 1).expand(E, n), th.view(-1, 1).expand(E, n)))
        best_n = shape_iou.argmax(dim=1)          # first maximum; all zero -> anchor 0
        rec = out[eb, ej, ei, best_n]                                     # (E, size)
        d, iou = _box_delta(rec, (tx, ty, tw, th), ei.to(dtype), ej.to(dtype), aw[best_n],
                            ah[best_n], w, h, f32(layer.coord_scale))
        o = rec[:, 4]
        target = iou if layer.rescore else torch.ones_like(o)
        obj_e = f32(layer.object_scale) * (target - o) * _logistic_gradient(o)
        cid = cls_raw[eb, et]
        if layer.map is not None:
            cid = torch.as_tensor(layer.map, dtype=torch.long, device=device)[cid]
        flat = ((eb * h + ej) * w + ei) * n + best_n
        last = _last_event(flat)
        lb, lj, li, ln = eb[last], ej[last], ei[last], best_n[last]
        delta[lb, lj, li, ln, :4] = d[last]
        delta[lb, lj, li, ln, 4] = obj_e[last]
        p = rec[:, 5:5 + C]
        if tree is None:
            cd = _class_delta(p, cid, f32(layer.class_scale), focal)
            delta[lb, lj, li, ln, 5:5 + C] = cd[last]
            stats.avg_cat += float(p.gather(1, cid.view(-1, 1)).double().sum())
        else:
            for k in range(E):
                stats.avg_cat += _tree_class_delta(delta[eb[k], ej[k], ei[k], best_n[k], 5:5 + C],
                                                   p[k], int(cid[k]), tree, f32(layer.class_scale))
        stats.count += E
        stats.class_count += E
        stats.avg_iou += float(iou.double().sum())
        stats.recall += int((iou > 0.5).sum())
        stats.avg_obj += float(o.double().sum())

    stats.cost = float(delta.double().pow(2).sum())
    planar = delta.permute(0, 3, 4, 1, 2).reshape(B, n * size, h, w)
    return planar, stats


def _last_event(flat: torch.Tensor) -> torch.Tensor:
    """Mask of the events that are the last of their record (later writes win)."""
    E = flat.numel()
    idx = torch.arange(E, device=flat.device)
    uniq, inverse = torch.unique(flat, return_inverse=True)
    last = torch.full((uniq.numel(),), -1, dtype=torch.long, device=flat.device)
    last.scatter_reduce_(0, inverse, idx, reduce="amax")
    return last[inverse] == idx
