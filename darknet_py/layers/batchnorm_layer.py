"""``[batchnorm]`` (``batchnorm_layer.c``, ``parse_batchnorm``): a stand-alone batch norm.

``out = (x - mean) / sqrt(var + .00001) * scales + biases`` per channel, with the rolling
statistics at inference and the batch statistics in training (Darknet's formulas, see
:mod:`darknet_py.layers.batchnorm`).

Weights layout: biases[c], scales[c], rolling_mean[c], rolling_variance[c].

Deliberate difference: Darknet allocates ``rolling_variance`` with zeros; darknet-py starts it at 1
so an un-loaded layer is finite (the value is overwritten by any weights file).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import BuildContext, Layer
from .batchnorm import batchnorm_infer, batchnorm_train
from .convolutional import BN_MOMENTUM_GPU


class BatchnormLayer(Layer):
    table_name = "Batch Normalization Layer"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        c, h, w = self.in_shape
        if c < 1:
            raise section.error("the layer before [batchnorm] must output at least one channel")
        self.out_shape = self.in_shape
        self.bias = nn.Parameter(torch.zeros(c))
        self.scales = nn.Parameter(torch.ones(c))
        self.register_buffer("rolling_mean", torch.zeros(c))
        self.register_buffer("rolling_variance", torch.ones(c))
        self.bn_momentum = BN_MOMENTUM_GPU

    def forward(self, x, outputs):
        if self.training:
            return batchnorm_train(x, self.scales, self.bias, self.rolling_mean,
                                   self.rolling_variance, self.bn_momentum)
        return batchnorm_infer(x, self.scales, self.bias, self.rolling_mean, self.rolling_variance)

    def num_weight_floats(self) -> int:
        return 4 * self.in_shape[0]

    def read_weights(self, reader) -> None:
        c = self.in_shape[0]
        self.bias.copy_(torch.from_numpy(reader.read(c, "biases")))
        self.scales.copy_(torch.from_numpy(reader.read(c, "scales")))
        self.rolling_mean.copy_(torch.from_numpy(reader.read(c, "rolling_mean")))
        self.rolling_variance.copy_(torch.from_numpy(reader.read(c, "rolling_variance")))

    def write_weights(self, writer) -> None:
        for t in (self.bias, self.scales, self.rolling_mean, self.rolling_variance):
            writer.write(t.detach().cpu())

    def table_line(self) -> str:
        c, h, w = self.in_shape
        return f"Batch Normalization Layer: {w} x {h} x {c} image"
