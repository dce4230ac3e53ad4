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

Note for box decoding: AlexeyAB's ``get_region_detections`` reads ``l.output`` with
``entry_index`` (``n*w*h*(coords+classes+1) + entry*w*h + loc``, the *unflattened* layout), i.e. it
does not read the records the forward pass wrote. Reproducing ``darknet detector test`` for
``[region]`` models therefore means reading the flat buffer with ``entry_index``.

``tree=`` and ``map=`` files are read relative to the current directory like Darknet (yolo9000's
``data/9k.tree``); a missing file is a :class:`~darknet_py.errors.CfgError`.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..errors import CfgError
from ..structures.heads import HeadSpec
from .base import MAX_ANCHORS, MAX_BOXES, BuildContext, Layer, check_range
from .parse_helpers import (DefaultsLog, SoftmaxTree, group_softmax, loud_float, loud_int,
                            loud_str, read_map, read_tree)


class RegionLayer(Layer):
    table_name = "detection"
    is_head = True

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
        return HeadSpec(index=self.index, kind="region", classes=self.classes, n=self.n,
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

    def forward(self, x, outputs):
        return self.activate(x)

    # ------------------------------------------------------------------ printing
    def table_line(self) -> str:
        return "\n".join(self._pre_lines + ["detection"] + self._post_lines)
