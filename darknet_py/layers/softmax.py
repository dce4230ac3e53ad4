"""``[softmax]`` / ``[soft]`` (``softmax_layer.c``, ``parse_softmax``), CPU semantics.

The input is flattened per image (``inputs = c*h*w``) and split into ``groups`` equal contiguous
parts; each part gets ``softmax(x / temperature)``. With ``tree=<file>`` (a Darknet hierarchy such
as ``9k.tree``, read relative to the current directory like Darknet) the softmax runs over each
group of sibling classes instead; entries past the tree's nodes are left 0 (Darknet never writes
them). ``spatial=1`` only changes Darknet's GPU path; the CPU path used here ignores it.

Darknet leaves this layer's ``out_w/out_h/out_c`` at 0; darknet-py keeps the input shape so the
tensor keeps its layout. The training loss (``softmax_x_ent``) is computed by the trainer, not here.
"""
from __future__ import annotations

import torch

from .base import BuildContext, Layer
from .parse_helpers import SoftmaxTree, group_softmax, loud_str, read_tree, DefaultsLog


class SoftmaxLayer(Layer):
    table_name = "softmax"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.defaults_log = DefaultsLog()
        self.groups = s.int("groups", 1)
        self.temperature = s.float("temperature", 1.0)
        tree_file = loud_str(s, "tree", None, self.defaults_log)
        c, h, w = self.in_shape
        self.n_inputs = c * h * w
        if self.groups < 1 or self.n_inputs % self.groups:
            raise s.error(f"groups={self.groups} must divide the {self.n_inputs} inputs",
                          value=self.groups)
        if self.temperature == 0:
            raise s.error("temperature must not be 0")
        self.softmax_tree: "SoftmaxTree | None" = None
        if tree_file is not None:
            self.softmax_tree = read_tree(s, "tree", tree_file)
            if self.softmax_tree.n > self.n_inputs:
                raise s.error(f"tree={tree_file} has {self.softmax_tree.n} nodes but the layer "
                              f"has only {self.n_inputs} inputs")
        self.spatial = s.float("spatial", 0.0)
        self.noloss = s.int("noloss", 0)
        self.out_shape = self.in_shape

    def forward(self, x, outputs):
        b = x.shape[0]
        flat = x.reshape(b, -1)
        if self.softmax_tree is not None:
            n = self.softmax_tree.n
            out = group_softmax(flat[:, :n], self.softmax_tree, self.temperature)
            if n < self.n_inputs:
                out = torch.cat([out, flat.new_zeros(b, self.n_inputs - n)], dim=1)
        else:
            out = torch.softmax(flat.view(b, self.groups, -1) / self.temperature, dim=2)
        return out.reshape(x.shape)

    def table_line(self) -> str:
        return "\n".join(list(self.defaults_log)
                         + [f"softmax                                        {self.n_inputs:4d}"])
