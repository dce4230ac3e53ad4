"""``[maxpool]`` and ``[local_avgpool]`` (``maxpool_layer.c``, ``parse_maxpool``).

Output size ``(w + padding - size) / stride + 1`` with ``padding`` defaulting to ``size - 1``; the
window of output ``j`` starts at ``j*stride - padding/2``. Positions outside the input count as
``-FLT_MAX`` for max (so ``size=2 stride=1`` keeps the input size, YOLOv3-tiny's last pool), and
``local_avgpool`` averages only the positions inside the image. ``maxpool_depth=1`` instead takes
the max across channel groups ``k, k+out_channels, …`` at every pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import FLT_MAX, BuildContext, Layer, max_alloc_floats



def _lowest(x: torch.Tensor) -> float:
    """Darknet's ``-FLT_MAX`` padding value, or the lowest float16 value for a half network."""
    return -FLT_MAX if x.dtype == torch.float32 else float(torch.finfo(x.dtype).min)


def window_sum(x: torch.Tensor, size: int, stride) -> torch.Tensor:
    """Sum over every ``size x size`` window (``avg_pool2d`` with ``divisor_override=1``).

    ONNX's AveragePool has no divisor override and PyTorch's ONNX exporter silently drops it, so
    while exporting the same sums are taken by a depthwise convolution with a ones kernel.
    """
    if torch.onnx.is_in_onnx_export():
        c = int(x.shape[1])
        ones = torch.ones(c, 1, size, size, dtype=x.dtype, device=x.device)
        return F.conv2d(x, ones, None, stride, 0, 1, c)
    return F.avg_pool2d(x, size, stride, divisor_override=1)


def max_pool_separable(x: torch.Tensor, size: int, stride, out_hw,
                       memory_format: torch.memory_format = torch.contiguous_format
                       ) -> torch.Tensor:
    """Max over ``size x size`` windows of an already padded ``x`` as a max over rows, then over
    columns (strided ``torch.maximum``): exactly ``F.max_pool2d``'s values (max is exact), but
    10-20x faster than PyTorch's NCHW CPU max-pool kernel on YOLO's 2x2 pools."""
    (sy, sx), (oh, ow) = stride, out_hw
    rows = x[:, :, 0:(oh - 1) * sy + 1:sy]
    if size > 1:
        rows = torch.maximum(rows, x[:, :, 1:1 + (oh - 1) * sy + 1:sy])
        for i in range(2, size):
            torch.maximum(rows, x[:, :, i:i + (oh - 1) * sy + 1:sy], out=rows)
    out = rows[..., 0:(ow - 1) * sx + 1:sx]
    if size > 1:
        out = torch.maximum(out, rows[..., 1:1 + (ow - 1) * sx + 1:sx])
        for j in range(2, size):
            torch.maximum(out, rows[..., j:j + (ow - 1) * sx + 1:sx], out=out)
    return out.contiguous(memory_format=memory_format)


def _needs_max_pool2d(x: torch.Tensor) -> bool:
    """Keep ``F.max_pool2d`` where its graph or gradient matters: autograd (Darknet routes the
    gradient to one input; ``torch.maximum`` splits ties), tracing, ONNX export, compiling."""
    return ((torch.is_grad_enabled() and x.requires_grad) or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    nhwc = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous()
    return torch.channels_last if nhwc else torch.contiguous_format


class MaxpoolLayer(Layer):
    table_name = "max"
    avgpool = False

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        stride = s.int("stride", 1)
        self.stride_x = s.int("stride_x", stride)
        self.stride_y = s.int("stride_y", stride)
        self.size = s.int("size", stride)
        self.padding = s.int("padding", self.size - 1)
        self.maxpool_depth = s.int("maxpool_depth", 0)
        self.out_channels = s.int("out_channels", 1)
        if s.int("antialiasing", 0):
            raise s.error("antialiasing is not supported")
        self.maxpool_zero_nonmax = s.int("maxpool_zero_nonmax", 0)
        c, h, w = self.in_shape
        if not (c and h and w):
            raise s.error(f"the layer before [{s.type}] must output an image")
        for name, v in (("size", self.size), ("stride_x", self.stride_x),
                        ("stride_y", self.stride_y)):
            if v < 1:
                raise s.error(f"{name} must be >= 1, got {v}", value=v)
        if self.padding < 0:
            raise s.error(f"padding must be >= 0, got {self.padding}")
        if self.maxpool_depth:
            if self.out_channels < 1:
                raise s.error("out_channels must be >= 1")
            self.out_shape = (self.out_channels, h, w)
        else:
            ow = (w + self.padding - self.size) // self.stride_x + 1
            oh = (h + self.padding - self.size) // self.stride_y + 1
            if ow < 1 or oh < 1:
                raise s.error(f"output would be {ow}x{oh}: input {w}x{h} too small for size "
                              f"{self.size}")
            self.out_shape = (c, oh, ow)
            # forward pads the input to the windows' extent and takes size^2 values per output:
            # a window far larger than the input (size=6548 on 24x24, Darknet loops over it as
            # well) would take gigabytes and minutes for what is a global max. Refused; real cfgs
            # stay far below (SPP's size=13 on a 1x1 map at small inputs is fine).
            off = self.padding // 2               # what _padded adds before the input
            padded = c * max(h + off, (oh - 1) * self.stride_y + self.size) \
                * max(w + off, (ow - 1) * self.stride_x + self.size)
            if self.size > max(64, 4 * max(h, w)):
                raise s.error(f"size={self.size} is far larger than the {w}x{h} input (at most "
                              f"{max(64, 4 * max(h, w))} here)", value=self.size)
            if padded > max_alloc_floats():
                raise s.error(f"size={self.size}, padding={self.padding} and stride would pad the "
                              f"{w}x{h} input to {padded * 4 / (1 << 30):.1f} GiB",
                              value=self.padding)
        oc, oh, ow = self.out_shape
        self.bflops = (self.size * self.size * c * oh * ow) / 1e9

    def _in_out_hw(self, x):
        """(h, w, out_h, out_w) for this input: from ``x`` (multi-scale training feeds other sizes
        than the cfg's), but the cfg's while tracing/exporting, so that an exported graph
        pads by constants instead of computing sizes (ONNX integer division truncates)."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            _, h, w = self.in_shape
            _, oh, ow = self.out_shape
            return h, w, oh, ow
        h, w = int(x.shape[-2]), int(x.shape[-1])
        return (h, w, (h + self.padding - self.size) // self.stride_y + 1,
                (w + self.padding - self.size) // self.stride_x + 1)

    def _padded(self, x, value):
        h, w, oh, ow = self._in_out_hw(x)
        off = self.padding // 2
        right = (ow - 1) * self.stride_x + self.size - off - w
        bottom = (oh - 1) * self.stride_y + self.size - off - h
        if off == 0 and right <= 0 and bottom <= 0:
            return x
        return F.pad(x, (off, max(right, 0), off, max(bottom, 0)), value=value)

    def forward(self, x, outputs):
        if self.maxpool_depth:
            c = self.in_shape[0]
            h, w = self._in_out_hw(x)[:2]
            oc = self.out_channels
            groups = -(-c // oc)
            pad = groups * oc - c
            if pad:
                x = F.pad(x, (0, 0, 0, 0, 0, pad), value=_lowest(x))
            return x.reshape(-1, groups, oc, h, w).amax(dim=1)
        if self.avgpool:
            ones = torch.ones_like(x[:, :1])
            sums = window_sum(self._padded(x, 0.0), self.size, (self.stride_y, self.stride_x))
            cnt = window_sum(self._padded(ones, 0.0), self.size, (self.stride_y, self.stride_x))
            return sums / cnt
        padded = self._padded(x, _lowest(x))
        if self.size <= 3 and x.device.type == "cpu" and not _needs_max_pool2d(x):
            # same values as max_pool2d, 10-20x faster than PyTorch's NCHW CPU kernel
            return max_pool_separable(padded, self.size, (self.stride_y, self.stride_x),
                                      self._in_out_hw(x)[2:], _memory_format(x))
        return F.max_pool2d(padded, self.size, (self.stride_y, self.stride_x))

    def table_line(self) -> str:
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        shp = f"{w:4d} x{h:4d} x{c:4d} -> {ow:4d} x{oh:4d} x{oc:4d} {self.bflops:5.3f} BF"
        if self.avgpool:
            name = "avg"
        elif self.maxpool_depth:
            name = "max-depth"
        else:
            name = "max"
        if self.stride_x == self.stride_y:
            return f"{name:<18s}{self.size:2d}x{self.size:2d}/{self.stride_x:2d}   {shp}"
        return (f"{name:<17s}{self.size:2d}x{self.size:2d}/{self.stride_x:2d}x{self.stride_y:2d} "
                f"{shp}")


class LocalAvgpoolLayer(MaxpoolLayer):
    table_name = "avg"
    avgpool = True
