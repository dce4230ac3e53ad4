"""Training precision and memory layout: fp32, bf16 autocast on CPU, fp16 autocast on CUDA.

* CUDA: fp16 autocast with a ``GradScaler`` (on by default, ``-no_amp`` for fp32).
* CPU: bf16 autocast with channels-last by default where the CPU has native bf16 kernels (oneDNN
  with AVX512-BF16 or AMX, :func:`darknet_py.devices.cpu_bf16_supported`); elsewhere bf16 would be
  emulated and slower, so the CPU trains in fp32 (``-bf16`` there warns and stays fp32).
  ``-no_bf16`` trains in fp32 everywhere: Darknet's arithmetic, and what the oracle parity tests
  use. bf16 has fp32's exponent range: no loss scaling is needed.

  Why on by default (issue 17, face-mask set, yolov4-tiny from conv.29, batch 16, 320x320, one
  thread per process, docs/benchmarks.md "Training"): 2.1x less time per iteration than fp32 on
  an idle AVX512-BF16/AMX core (1.46 vs 3.1 s), and the same mAP@0.5 on ``val.list`` after the
  issue's 400-iteration recipe, within a point for each of two seeds.

Under either autocast only the convolutions run in low precision, except the convolution in
front of each [yolo] layer (:meth:`Precision.prepare`), whose output is the loss's input: Darknet's
batch norm
(:func:`darknet_py.layers.batchnorm.batchnorm_train`: statistics, rolling averages and output)
and the heads' deltas (:class:`darknet_py.layers.head.HeadLossFunction`) compute in fp32, the weights
and the optimizer state stay fp32, and checkpoints are written from them.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from ..devices import cpu_bf16_supported


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: Optional[torch.dtype] = None      # the autocast dtype; None = fp32
    channels_last: bool = False

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def needs_grad_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def prepare(self, net) -> None:
        """Put ``net`` in this precision's memory layout, and keep the layers that feed a
        detection head (the conv in front of each [yolo]) in fp32 under autocast."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        if self.dtype is None:
            return
        for head in getattr(net, "heads", []):
            if head.index > 0:
                _run_in_fp32(net.layers[head.index - 1], self.device_type)

    def describe(self) -> str:
        name = {None: "fp32", torch.bfloat16: "bf16 autocast",
                torch.float16: "fp16 autocast"}[self.dtype]
        if self.dtype is not None:
            name += " (batch norm, heads and loss in fp32)"
        return name + (", channels-last" if self.channels_last else "")


def _run_in_fp32(layer, device_type: str) -> None:
    if getattr(layer, "_fp32_under_autocast", False):
        return
    inner = layer.forward

    def forward(x, *args, **kwargs):
        with torch.autocast(device_type, enabled=False):
            return inner(x.float(), *args, **kwargs)
    layer.forward = forward
    layer._fp32_under_autocast = True


def choose_precision(device: torch.device, amp: Optional[bool] = None,
                     bf16: Optional[bool] = None,
                     channels_last: Optional[bool] = None) -> Precision:
    """The precision ``detector train`` uses on ``device``.

    ``amp``: CUDA fp16 autocast (default on). ``bf16``: CPU bf16 autocast (default: on where the
    CPU has native bf16; ``True`` on a CPU without it warns and trains in fp32).
    ``channels_last``: default on for CUDA, and on CPU together with bf16 (oneDNN's bf16
    convolutions want NHWC).
    """
    if device.type == "cuda":
        dtype = torch.float16 if (amp is None or amp) else None
        cl = True if channels_last is None else channels_last
        return Precision("cuda", dtype, cl)
    dtype = None
    if bf16 is not False:                       # None (default) or True: bf16 where native
        if cpu_bf16_supported():
            dtype = torch.bfloat16
        elif bf16:
            warnings.warn("-bf16: this CPU has no native bf16 (AVX512-BF16/AMX); training in fp32",
                          stacklevel=2)
    cl = (dtype is not None) if channels_last is None else channels_last
    return Precision(device.type, dtype, cl)
