"""``[activation]`` (``activation_layer.c``, ``parse_activation``) and Darknet's ``activate_array``.

``activate_array`` (``activations.c``) is what the activation, connected, ``[sam]`` and
``[scale_channels]`` layers call. It only knows the activations of Darknet's scalar ``activate()``
switch; for the others (swish, mish, hard_mish, relu6, normalize_channels*) ``activate()`` returns
0, so those layers output zeros in Darknet. :func:`array_activation` reproduces that (and warns at
build time, as Darknet's ``[sam]``/``[scale_channels]`` parsers print a warning for swish/mish).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from .activations import get_activation
from .base import BuildContext, Layer
from .parse_helpers import DefaultsLog, loud_str

#: activations handled by Darknet's scalar ``activate()``; everything else gives 0 there
ARRAY_ACTIVATIONS = frozenset({
    "linear", "logistic", "loggy", "relu", "elu", "selu", "gelu", "relie", "ramp", "revleaky",
    "leaky", "tanh", "plse", "stair", "hardtan", "lhtan",
})


def _zeros(x: torch.Tensor) -> torch.Tensor:
    return x * 0.0


def array_activation(name: str, section=None, where: str = "") -> Callable[[torch.Tensor], torch.Tensor]:
    """Darknet's ``activate_array(x, n, a)`` as a tensor function.

    Unknown names raise :class:`~darknet_py.errors.CfgError` (via ``get_activation``); names that
    ``activate()`` does not handle return zeros like Darknet, with a warning.
    """
    fn = get_activation(name, section)
    if name in ARRAY_ACTIVATIONS:
        return fn
    loc = ""
    if section is not None:
        loc = f"{section.file}:{section.line}: "
    warnings.warn(f"{loc}[{section.type if section is not None else where}] activation={name}: "
                  "Darknet's activate_array does not implement it and outputs 0; darknet-py "
                  "does the same", stacklevel=3)
    return _zeros


class ActivationLayer(Layer):
    """``out = activate_array(copy of x)``; shape unchanged."""

    table_name = "Activation Layer"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        self.defaults_log = DefaultsLog()
        self.activation_name = loud_str(section, "activation", "linear", self.defaults_log)
        self.activation = array_activation(self.activation_name, section)
        self.out_shape = self.in_shape

    def forward(self, x, outputs):
        return self.activation(x)

    def table_line(self) -> str:
        c, h, w = self.in_shape
        return "\n".join(list(self.defaults_log) + [f"Activation Layer: {c * h * w} inputs"])
