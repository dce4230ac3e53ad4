"""``[implicit]`` (``representation_layer.c`` ``make_implicit_layer``, ``parse_implicit``).

A learned constant (YOLOR's implicit knowledge): the output ``(filters, atoms, 1)`` is the layer's
``filters*atoms`` weights, repeated for every image; the input is not read (only its batch size).
Weights are initialised to ``mean + uniform(-std, std)`` and stored as ``filters*atoms`` floats.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import BuildContext, Layer, check_weights_size
from .parse_helpers import DefaultsLog, loud_float, loud_int


class ImplicitLayer(Layer):
    table_name = "implicit"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.defaults_log = DefaultsLog()
        self.mean_init = loud_float(s, "mean", 0.0, self.defaults_log)
        self.std_init = loud_float(s, "std", 0.2, self.defaults_log)
        self.filters = loud_int(s, "filters", 128, self.defaults_log)
        self.atoms = s.int("atoms", 1)
        if not (math.isfinite(self.mean_init) and math.isfinite(self.std_init)):
            raise s.error(f"mean and std must be finite numbers, got mean={self.mean_init}, "
                          f"std={self.std_init}")
        if self.filters < 1 or self.atoms < 1:
            raise s.error(f"filters and atoms must be >= 1, got filters={self.filters}, "
                          f"atoms={self.atoms}")
        self.out_shape = (self.filters, self.atoms, 1)
        self.darknet_in_shape = (1, 1, 1)
        self.uses_previous = False
        self.nweights = self.filters * self.atoms
        check_weights_size(s, self.nweights)
        self.weight = nn.Parameter(torch.empty(self.nweights))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            # Darknet's rand_uniform(-std, std) swaps the bounds when std < 0
            std = abs(self.std_init)
            self.weight.uniform_(-std, std).add_(self.mean_init)

    def forward(self, x, outputs):
        b = x.shape[0] if x is not None else 1
        return self.weight.view(1, self.filters, self.atoms, 1).expand(b, -1, -1, -1)

    def num_weight_floats(self) -> int:
        return self.nweights

    def read_weights(self, reader) -> None:
        self.weight.copy_(torch.from_numpy(reader.read(self.nweights, "implicit weights")))

    def write_weights(self, writer) -> None:
        writer.write(self.weight.detach().cpu())

    def table_line(self) -> str:
        return "\n".join(list(self.defaults_log)
                         + [f"implicit Layer: {self.filters} x {self.atoms} \t mean="
                            f"{self.mean_init:.2f}, std={self.std_init:.2f} "])
