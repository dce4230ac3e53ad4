"""``[connected]`` / ``[conn]`` (``connected_layer.c``, ``parse_connected``): a fully connected layer.

The input is flattened per image (``inputs = c*h*w``); ``out = act(BN(W x) + biases)`` with
``W`` stored as ``[outputs][inputs]`` (row-major, Darknet's ``l.weights``). The output shape is
``(outputs, 1, 1)``. The activation goes through ``activate_array`` (see
:mod:`darknet_py.layers.activation_layer`). Batch norm uses the rolling statistics at inference and
the batch statistics in training with Darknet's connected-layer momentum (``.95*old + .05*new``).

Weights layout (``load_connected_weights``): biases[outputs], weights[outputs*inputs], then if
``batch_normalize`` scales, rolling_mean, rolling_variance (each [outputs]). When the file header
says so (``major > 1000 or minor > 1000``) the weights are stored ``[inputs][outputs]`` and are
transposed on load; they are always written in Darknet's current order.

Darknet does not set ``bflops`` for this layer, so it counts 0 in ``Total BFLOPS``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .activation_layer import array_activation
from .base import BuildContext, Layer, check_weights_size
from .batchnorm import BN_EPS, batchnorm_train
from .parse_helpers import DefaultsLog, loud_int, loud_str

#: Darknet's forward_connected_layer: rolling = .95*rolling + .05*batch
CONNECTED_BN_MOMENTUM = 0.05


class ConnectedLayer(Layer):
    table_name = "connected"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.defaults_log = DefaultsLog()
        self.outputs = loud_int(s, "output", 1, self.defaults_log)
        self.activation_name = loud_str(s, "activation", "logistic", self.defaults_log)
        self.activation = array_activation(self.activation_name, s)
        self.batch_normalize = s.int("batch_normalize", 0)
        self.dontloadscales = s.int("dontloadscales", 0)
        c, h, w = self.in_shape
        self.n_inputs = c * h * w
        if self.outputs < 1:
            raise s.error(f"output must be >= 1, got {self.outputs}", value=self.outputs)
        if self.n_inputs < 1:
            raise s.error("the layer before [connected] has no outputs")
        self.out_shape = (self.outputs, 1, 1)
        #: Darknet's l.w, l.h, l.c for this layer (used by avg_outputs)
        self.darknet_in_shape = (self.n_inputs, 1, 1)
        check_weights_size(s, self.outputs * self.n_inputs)
        self.weight = nn.Parameter(torch.empty(self.outputs, self.n_inputs))
        self.bias = nn.Parameter(torch.zeros(self.outputs))
        if self.batch_normalize:
            self.scales = nn.Parameter(torch.ones(self.outputs))
            self.register_buffer("rolling_mean", torch.zeros(self.outputs))
            self.register_buffer("rolling_variance", torch.ones(self.outputs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Darknet's initialisation: uniform(-1, 1) * sqrt(2 / inputs), biases 0."""
        with torch.no_grad():
            self.weight.uniform_(-1, 1).mul_(math.sqrt(2.0 / self.n_inputs))
            self.bias.zero_()

    def forward(self, x, outputs):
        b = x.shape[0]
        y = x.reshape(b, -1) @ self.weight.t()
        if self.batch_normalize:
            if self.training:
                y = batchnorm_train(y.view(b, -1, 1, 1), self.scales, self.bias, self.rolling_mean,
                                    self.rolling_variance, CONNECTED_BN_MOMENTUM).view(b, -1)
            else:
                inv = self.scales / torch.sqrt(self.rolling_variance + BN_EPS)
                y = (y - self.rolling_mean) * inv + self.bias
        else:
            y = y + self.bias
        return self.activation(y).view(b, self.outputs, 1, 1)

    # ----------------------------------------------------------------- weights
    def num_weight_floats(self) -> int:
        n = self.outputs
        return n + n * self.n_inputs + (3 * n if self.batch_normalize else 0)

    def read_weights(self, reader) -> None:
        n, k = self.outputs, self.n_inputs
        self.bias.copy_(torch.from_numpy(reader.read(n, "biases")))
        w = torch.from_numpy(reader.read(n * k, "weights"))
        if reader.header.transpose:
            w = w.view(k, n).t()
        self.weight.copy_(w.reshape(n, k))
        if self.batch_normalize and not self.dontloadscales:
            self.scales.copy_(torch.from_numpy(reader.read(n, "scales")))
            self.rolling_mean.copy_(torch.from_numpy(reader.read(n, "rolling_mean")))
            self.rolling_variance.copy_(torch.from_numpy(reader.read(n, "rolling_variance")))

    def write_weights(self, writer) -> None:
        writer.write(self.bias.detach().cpu())
        writer.write(self.weight.detach().cpu())
        if self.batch_normalize:
            writer.write(self.scales.detach().cpu())
            writer.write(self.rolling_mean.detach().cpu())
            writer.write(self.rolling_variance.detach().cpu())

    def table_line(self) -> str:
        return "\n".join(list(self.defaults_log)
                         + [f"connected                            {self.n_inputs:4d}  ->  "
                            f"{self.outputs:4d}"])
