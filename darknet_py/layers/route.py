"""``[route]`` (``route_layer.c``, ``parse_route``): concatenate earlier outputs along channels.

``layers`` lists absolute or negative (relative) indices. With ``groups=G`` and ``group_id=k``
each input is split into G equal channel groups and only group k of each is taken (CSP blocks).
"""
from __future__ import annotations

import torch

from .base import BuildContext, Layer


class RouteLayer(Layer):
    table_name = "route"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        rel = s.int_list("layers")
        if not rel:
            raise s.error("route needs layers=")
        self.layers_idx = [ctx.resolve(s, "layers", v) for v in rel]
        self.groups = s.int("groups", 1)
        self.group_id = s.int("group_id", 0)
        s.str("stream", None), s.str("wait_stream", None)
        if self.groups < 1 or not 0 <= self.group_id < self.groups:
            raise s.error(f"need groups >= 1 and 0 <= group_id < groups, got groups={self.groups}, "
                          f"group_id={self.group_id}")
        shapes = [ctx.shapes[i] for i in self.layers_idx]
        c0, h0, w0 = shapes[0]
        total_c = 0
        for i, (c, h, w) in zip(self.layers_idx, shapes):
            if (h, w) != (h0, w0):
                raise s.error(f"route inputs have different sizes: layer {self.layers_idx[0]} is "
                              f"{w0}x{h0}, layer {i} is {w}x{h}")
            if c % self.groups:
                raise s.error(f"groups={self.groups} does not divide the {c} channels of layer {i}")
            total_c += c
        self.in_channels = [sh[0] for sh in shapes]
        self.out_shape = (total_c // self.groups, h0, w0)
        self.in_shape = (self.out_shape[0], shapes[0][1], shapes[0][2])
        self.inputs = [i for i in self.layers_idx if i != index - 1]
        self.uses_previous = (index - 1) in self.layers_idx

    def forward(self, x, outputs):
        parts = []
        for i, c in zip(self.layers_idx, self.in_channels):
            t = outputs[i]
            if self.groups > 1:
                part = c // self.groups
                t = t[:, self.group_id * part:(self.group_id + 1) * part]
            parts.append(t)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def table_line(self) -> str:
        n = len(self.layers_idx)
        head = "route " + "".join(f" {i}" for i in self.layers_idx)
        if n > 3:
            pad = " \t    "
        elif n > 1:
            pad = " \t            "
        else:
            pad = " \t\t            "
        grp = f"{self.group_id}/{self.groups}" if self.groups > 1 else "   "
        oc, oh, ow = self.out_shape
        return f"{head}{pad}           {grp} -> {ow:4d} x{oh:4d} x{oc:4d} "
