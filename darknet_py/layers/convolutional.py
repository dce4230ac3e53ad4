"""``[convolutional]`` (``convolutional_layer.c``, ``parse_convolutional`` in ``parser.c``).

Options: filters, size, stride / stride_x / stride_y, pad (=> padding = size/2) / padding,
dilation (padding is multiplied by it, as Darknet's im2col does), groups (incl. depthwise),
batch_normalize, activation, share_index (weights shared with another conv, not stored),
xnor (binary weights and inputs, with the GPU build's straight-through gradients), flipped
(transposed weights in the file), dontload, dontloadscales.

Weights layout in .weights: biases[n], then if batch_normalize scales[n], rolling_mean[n],
rolling_variance[n], then weights[n * c/groups * size * size].
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation
from .base import BuildContext, Layer, check_weights_size
from .batchnorm import BN_EPS, batchnorm_infer, batchnorm_train

#: rolling-statistics momentum used in training (Darknet's GPU/cuDNN path uses 0.01, CPU 0.1)
BN_MOMENTUM_GPU = 0.01
BN_MOMENTUM_CPU = 0.1


def _binarize_weights(weight: torch.Tensor) -> torch.Tensor:
    """Darknet's ``binarize_weights``: ``sign(w) * mean(|w|)`` per filter (``w > 0`` is +)."""
    scale = weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(weight > 0, scale, -scale)


def _binarize_input(x: torch.Tensor) -> torch.Tensor:
    """Darknet's ``binarize_cpu``: +1 where ``x > 0``, else -1."""
    return torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))


class _BinarizeWeights(torch.autograd.Function):
    """xnor weights with Darknet's gradient: the identity (straight through).

    ``backward_convolutional_layer_gpu`` accumulates the filter gradient cuDNN computes for the
    binarised weights into ``weight_updates``, which ``update_convolutional_layer_gpu`` applies to
    the real-valued weights: neither the sign nor the per-filter mean is differentiated."""

    @staticmethod
    def forward(ctx, weight):  # type: ignore[override]
        return _binarize_weights(weight)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


class _BinarizeInput(torch.autograd.Function):
    """xnor input with Darknet's gradient: through where ``-1 < x < 1``, zero elsewhere.

    ``backward_convolutional_layer_gpu`` computes the input delta with the binarised weights (its
    ``swap_binary``) and then multiplies it by ``gradient_array(original_input, HARDTAN)``, i.e.
    ``1`` for ``-1 < x < 1`` and ``0`` outside. Because the convolution here runs on the
    binarised input, the weight gradient is taken against it too, as in the GPU build (the CPU
    build, ``backward_convolutional_layer``, uses the real input and weights and no clipping; the
    GPU build is what people train with)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return _binarize_input(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ((x > -1) & (x < 1)).to(grad.dtype)


class ConvolutionalLayer(Layer):
    table_name = "conv"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        c, h, w = self.in_shape
        if not (c and h and w):
            raise s.error("the layer before [convolutional] must output an image")
        n = s.int("filters", 1)
        groups = s.int("groups", 1)
        size = s.int("size", 1)
        stride_x = s.int("stride_x", -1)
        stride_y = s.int("stride_y", -1)
        if stride_x < 1 or stride_y < 1:
            stride = s.int("stride", 1)
            stride_x = stride if stride_x < 1 else stride_x
            stride_y = stride if stride_y < 1 else stride_y
        else:
            s.int("stride", 1)
        dilation = s.int("dilation", 1)
        if size == 1:
            dilation = 1
        pad = s.int("pad", 0)
        padding = s.int("padding", 0)
        if pad:
            padding = size // 2
        self.activation_name = s.str("activation", "logistic")
        self.activation = get_activation(self.activation_name, s)
        if s.float("assisted_excitation", 0):
            raise s.error("assisted_excitation is a training-only Darknet option that darknet-py "
                          "does not support")
        share_index = s.int("share_index", -1000000000)
        self.batch_normalize = s.int("batch_normalize", 0)
        if s.int("cbn", 0):
            raise s.error("cbn (cross-iteration batch norm) is not supported")
        self.binary = s.int("binary", 0)
        self.xnor = s.int("xnor", 0)
        self.bin_output = s.int("bin_output", 0)
        for key in ("sway", "rotate", "stretch", "stretch_sway"):
            if s.int(key, 0):
                raise s.error(f"{key}=1 (deformable conv) is not supported")
        if s.int("antialiasing", 0):
            raise s.error("antialiasing is not supported")
        if s.int("coordconv", 0):
            raise s.error("coordconv is not supported")
        self.flipped = s.int("flipped", 0)
        self.dontload = s.int("dontload", 0)
        self.dontloadscales = s.int("dontloadscales", 0)
        for key in ("dot", "angle", "grad_centr", "reverse", "stream", "wait_stream"):
            s.str(key, None)  # read-only options of Darknet's training/GPU scheduling
        for name, v in (("filters", n), ("size", size), ("groups", groups), ("stride", stride_x),
                        ("stride", stride_y), ("dilation", dilation)):
            if v < 1:
                raise s.error(f"{name} must be >= 1, got {v}", value=v)
        if padding < 0:
            raise s.error(f"padding must be >= 0, got {padding}", value=padding)
        if c % groups or n % groups:
            raise s.error(f"groups={groups} must divide both the input channels ({c}) and "
                          f"filters ({n})", value=groups)
        self.n, self.size, self.groups = n, size, groups
        self.stride_x, self.stride_y, self.dilation, self.pad = stride_x, stride_y, dilation, padding
        out_h = (h + 2 * padding - size) // stride_y + 1
        out_w = (w + 2 * padding - size) // stride_x + 1
        if out_h < 1 or out_w < 1:
            raise s.error(f"output would be {out_w}x{out_h}: input {w}x{h} is too small for "
                          f"size={size} stride={stride_x}", value=(out_w, out_h))
        if dilation > 1:
            # Darknet sizes the output without the dilation but im2col fills it with the dilated
            # kernel's geometry; both agree only when padding = (size-1)/2 (the usual case)
            span = (size - 1) * dilation + 1
            im2col_h = (h + 2 * padding * dilation - span) // stride_y + 1
            im2col_w = (w + 2 * padding * dilation - span) // stride_x + 1
            if (im2col_h, im2col_w) != (out_h, out_w):
                raise s.error(f"dilation={dilation} with size={size} and padding={padding}: "
                              f"Darknet allocates a {out_w}x{out_h} output but its im2col fills "
                              f"{im2col_w}x{im2col_h}; use padding=(size-1)/2 (pad=1 with an odd "
                              "size)", value=dilation)
        self.out_shape = (n, out_h, out_w)
        self.nweights = (c // groups) * n * size * size
        check_weights_size(s, self.nweights)
        self.bflops = (2.0 * self.nweights * out_h * out_w) / 1e9
        if self.xnor:
            self.bflops /= 32

        self.share_layer: Optional[ConvolutionalLayer] = None
        if share_index != -1000000000:
            si = ctx.resolve(s, "share_index", share_index) if share_index < 0 else share_index
            if not 0 <= si < index or not isinstance(ctx.layers[si], ConvolutionalLayer):
                raise s.error(f"share_index={share_index} must name an earlier [convolutional]")
            # a layer that itself shares: use the weights it uses (Darknet copies the pointers)
            other = ctx.layers[si]._owner()
            if other.weight.shape != (n, c // groups, size, size) or \
                    other.batch_normalize != self.batch_normalize:
                raise s.error(f"share_index={share_index}: layer {si} has a different shape")
            # keep a plain reference (not a submodule) so parameters are not registered twice
            object.__setattr__(self, "share_layer", other)
        else:
            self.weight = nn.Parameter(torch.empty(n, c // groups, size, size))
            self.bias = nn.Parameter(torch.zeros(n))
            if self.batch_normalize:
                self.scales = nn.Parameter(torch.ones(n))
                self.register_buffer("rolling_mean", torch.zeros(n))
                self.register_buffer("rolling_variance", torch.ones(n))
            self.reset_parameters()
        self.bn_momentum = BN_MOMENTUM_GPU
        self._fused: Optional[tuple] = None

    # -------------------------------------------------------------- parameters
    def _owner(self) -> "ConvolutionalLayer":
        return self.share_layer if self.share_layer is not None else self

    def reset_parameters(self) -> None:
        """Darknet's initialisation: uniform(-1, 1) * sqrt(2 / (size*size*c/groups))."""
        c = self.in_shape[0]
        scale = (2.0 / (self.size * self.size * c / self.groups)) ** 0.5
        with torch.no_grad():
            if self.activation_name.startswith("normalize_channels"):
                self.weight.fill_(1.0)
            else:
                self.weight.uniform_(-1, 1).mul_(scale)
            self.bias.zero_()
            if self.batch_normalize:
                self.scales.fill_(1.0)
                self.rolling_mean.zero_()
                self.rolling_variance.fill_(1.0)

    def fuse(self) -> None:
        """Fold batch norm into the conv weights for inference (Darknet's fuse_conv_batchnorm)."""
        o = self._owner()
        with torch.no_grad():
            w, b = o.weight, o.bias
            if o.batch_normalize:
                inv = o.scales / torch.sqrt(o.rolling_variance + BN_EPS)
                w = w * inv.view(-1, 1, 1, 1)
                b = b - o.rolling_mean * inv
            self._fused = (w.detach().clone(), b.detach().clone())

    def unfuse(self) -> None:
        self._fused = None

    # -------------------------------------------------------------- forward
    def _conv(self, x, weight):
        if self.xnor:
            if torch.is_grad_enabled():
                # the same values, with Darknet's straight-through gradients (_BinarizeWeights,
                # _BinarizeInput); without autograd the plain ops keep export and inference as
                # they were
                weight = _BinarizeWeights.apply(weight)
                x = _BinarizeInput.apply(x)
            else:
                weight = _binarize_weights(weight)
                x = _binarize_input(x)
        return F.conv2d(x, weight, None, (self.stride_y, self.stride_x),
                        self.pad * self.dilation, self.dilation, self.groups)

    def forward(self, x, outputs):
        o = self._owner()
        if self._fused is not None and not self.training:
            w, b = self._fused
            y = self._conv(x, w) + b.view(1, -1, 1, 1)
            return self.activation(y)
        y = self._conv(x, o.weight)
        if o.batch_normalize:
            if self.training:
                y = batchnorm_train(y, o.scales, o.bias, o.rolling_mean, o.rolling_variance,
                                    self.bn_momentum)
            else:
                y = batchnorm_infer(y, o.scales, o.bias, o.rolling_mean, o.rolling_variance)
        else:
            y = y + o.bias.view(1, -1, 1, 1)
        return self.activation(y)

    # -------------------------------------------------------------- weights
    def num_weight_floats(self) -> int:
        if self.share_layer is not None:
            return 0
        return self.n * (4 if self.batch_normalize else 1) + self.nweights

    def read_weights(self, reader) -> None:
        if self.share_layer is not None:
            return
        n = self.n
        self.bias.copy_(torch.from_numpy(reader.read(n, "biases")))
        if self.batch_normalize and not self.dontloadscales:
            self.scales.copy_(torch.from_numpy(reader.read(n, "scales")))
            self.rolling_mean.copy_(torch.from_numpy(reader.read(n, "rolling_mean")))
            self.rolling_variance.copy_(torch.from_numpy(reader.read(n, "rolling_variance")))
        w = torch.from_numpy(reader.read(self.nweights, "weights"))
        if self.flipped:
            k = self.nweights // n
            w = w.view(k, n).t().contiguous()
        self.weight.copy_(w.view_as(self.weight))
        self._fused = None

    def write_weights(self, writer) -> None:
        if self.share_layer is not None:
            return
        writer.write(self.bias.detach().cpu())
        if self.batch_normalize:
            writer.write(self.scales.detach().cpu())
            writer.write(self.rolling_mean.detach().cpu())
            writer.write(self.rolling_variance.detach().cpu())
        w = self.weight.detach().cpu().reshape(-1)
        if self.flipped:
            k = self.nweights // self.n
            w = w.view(self.n, k).t().reshape(-1)
        writer.write(w)

    # -------------------------------------------------------------- printing
    def table_line(self) -> str:
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        if self.xnor and self.bin_output:
            name = "convXB"
        elif self.xnor:
            name = "convX "
        elif self.share_layer is not None:
            name = "convS "
        else:
            name = "conv  "
        filt = f"{self.n:5d}/{self.groups:4d} " if self.groups > 1 else f"{self.n:5d}      "
        if self.stride_x != self.stride_y:
            geo = f"{self.size:2d}x{self.size:2d}/{self.stride_x:2d}x{self.stride_y:2d} "
        elif self.dilation > 1:
            geo = f"{self.size:2d} x{self.size:2d}/{self.stride_x:2d}({self.dilation:1d})"
        else:
            geo = f"{self.size:2d} x{self.size:2d}/{self.stride_x:2d}   "
        return (f"{name}{filt}{geo}{w:4d} x{h:4d} x{c:4d} -> {ow:4d} x{oh:4d} x{oc:4d} "
                f"{self.bflops:5.3f} BF")
