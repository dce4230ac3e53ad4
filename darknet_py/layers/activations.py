"""Darknet's activation functions (``activations.c`` / ``activations.h``), as torch ops.

Each is differentiable with torch autograd. Where torch has a fused kernel that computes the same
function (leaky, relu, relu6, mish, silu=swish, sigmoid, elu), it is used; the others follow
Darknet's formulas. ``normalize_channels*`` work across the channel dimension of an NCHW tensor.
An unknown name is an error (Darknet silently falls back to ReLU).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F


def _stair(x):
    n = torch.floor(x)
    even = torch.remainder(n, 2) == 0
    return torch.where(even, torch.floor(x / 2), (x - n) + torch.floor(x / 2))


def _hard_mish(x):
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


def _plse(x):
    return torch.where(x < -4, 0.01 * (x + 4), torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))


def _lhtan(x):
    return torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))


def _gelu(x):
    return 0.5 * x * (1 + torch.tanh(0.797885 * x + 0.035677 * x.pow(3)))


def _normalize_channels(x):
    eps = 0.0001
    pos = torch.clamp(x, min=0)
    s = eps + pos.sum(dim=1, keepdim=True)
    return torch.where(x > 0, x / s, torch.zeros_like(x))


def _normalize_channels_softmax(x, use_max_val: bool):
    eps = 0.0001
    if use_max_val:
        m = x.max(dim=1, keepdim=True).values
    else:
        m = torch.zeros_like(x[:, :1])
    e = torch.exp(x - m)
    return e / (eps + e.sum(dim=1, keepdim=True))


ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "logistic": torch.sigmoid,
    "loggy": lambda x: 2 * torch.sigmoid(x) - 1,
    "relu": F.relu,
    "relu6": lambda x: torch.clamp(x, 0, 6),
    "elu": F.elu,
    "selu": lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * (torch.exp(x) - 1)),
    "gelu": _gelu,
    "relie": lambda x: torch.where(x > 0, x, 0.01 * x),
    "plse": _plse,
    "hardtan": lambda x: torch.clamp(x, -1, 1),
    "lhtan": _lhtan,
    "ramp": lambda x: F.relu(x) + 0.1 * x,
    "leaky": lambda x: F.leaky_relu(x, 0.1),
    "revleaky": lambda x: F.leaky_relu(x, 0.1),
    "tanh": torch.tanh,
    "stair": _stair,
    "swish": F.silu,
    "mish": F.mish,
    "hard_mish": _hard_mish,
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": lambda x: _normalize_channels_softmax(x, False),
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels_softmax(x, True),
}


def get_activation(name: str, section=None) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        msg = f"unknown activation '{name}' (one of: {', '.join(sorted(ACTIVATIONS))})"
        if section is not None:
            opt = next((o for o in section.options if o.key == "activation"), None)
            raise section.error(msg, opt, name) from None
        raise ValueError(msg) from None
