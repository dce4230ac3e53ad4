"""The backend interface of the inference pipeline (the function that picks a backend is
:func:`.factory.make_backend`).

A backend runs the network and nothing else: it takes the prepared batch (``(B, C, H, W)``
float32, RGB in [0, 1], the size :attr:`Backend.width` x :attr:`Backend.height`, on the CPU) and
returns either one ``l.output`` tensor per head (``decoded = False``) or, for an ONNX file exported
``--with-decode``, the decoded rows of :class:`~darknet_py.model.decode.HeadDecoder`. Loading,
resizing, decoding, NMS and reporting are the pipeline's (:mod:`darknet_py.infer.pipeline`), the
same for every backend. Each backend describes its heads with
:class:`~darknet_py.structures.heads.HeadSpec`, so decoding never looks at layer objects.

Backends (``-backend NAME``):

========== ==================================================================================
exact      the Darknet-exact :class:`~darknet_py.model.network.Network` (BN folded, as ``detector
           test`` does); the reference every other backend is checked against
fast       the fused CPU plan of :mod:`.fast` (NNPACK Winograd, channels-last pooling)
cuda       the same plan on a GPU: fp32 / fp16 / bf16, channels-last, CUDA graphs
onnxruntime an ONNX export run by ONNX Runtime (from a ``darknet-py export`` file, or exported on
           the fly and cached in ``~/.cache/darknet_py``); optional extra ``[onnx]``
openvino   the same ONNX file run by OpenVINO; optional extra ``[openvino]``
========== ==================================================================================

Every backend may be called from several threads at once and gives each call its own result
(``exact`` and ``onnxruntime`` are reentrant, ``fast`` and ``cuda`` serialise calls with a lock,
``openvino`` gives each concurrent call its own infer request); ``tests/cli/test_reliability.py``
compares multi-threaded runs of every installed backend with single-threaded ones.

``auto`` (the default) is the rule of :func:`.factory.auto_backend`, in words
:data:`.factory.AUTO_BACKEND_RULE`
(``-backend``'s help text). Why: on the CPU ONNX Runtime (fp32) was measured faster than ``fast``
on every benchmarked model at 1 and 2 threads (docs/benchmarks.md) and its detections equal the
exact path's and Darknet's on the oracle set (``tests/infer/test_backends.py``); OpenVINO is the
fastest bf16 measured. ``-precision int8`` is always ``openvino`` on the CPU, with a model
quantized on the user's calibration images (:mod:`.int8`); int8 is never picked unless asked for.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Callable, List, Optional, Sequence, Union

import torch

from ...errors import UsageError
from ...structures.heads import HeadSpec

__all__ = ["Backend", "BACKENDS", "CPU_BACKENDS", "PRECISIONS", "check_heads"]

#: backends time their candidate set-ups (thread counts, Winograd or not) against each other at
#: build time only for networks faster than this per batch-1 call (larger ones gain from threads)
CALIBRATE_MAX_SECONDS = 0.4

BACKENDS = ("auto", "exact", "fast", "cuda", "onnxruntime", "openvino")
#: backends that run on the CPU only (no device rule needed when one is asked for by name)
CPU_BACKENDS = ("fast", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class Backend(ABC):
    """What runs the network for the pipeline (see the module docstring)."""

    #: ``exact``, ``fast``, ``cuda``, ``onnxruntime`` or ``openvino``
    name: str = "?"
    device: torch.device = torch.device("cpu")
    #: ``fp32``, ``fp16``, ``bf16`` or ``int8``
    precision: str = "fp32"
    width: int
    height: int
    channels: int = 3
    heads: List[HeadSpec]
    #: the model's own ``[net] letter_box``
    letter_box: bool = False
    #: forward returns decoded rows instead of head outputs
    decoded: bool = False
    #: the Network behind the backend (exact, fast, cuda), for the layer table and weights header
    network: Any = None
    #: class names stored in an exported file, if any
    names: Optional[List[str]] = None
    #: where the model came from (cfg or .onnx path)
    source: str = ""
    #: why ``-backend auto`` chose this backend (the clause of :data:`AUTO_BACKEND_RULE` that
    #: applied); None when the backend was asked for by name
    auto_reason: Optional[str] = None

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Union[List[torch.Tensor], torch.Tensor]:
        """``(B, C, H, W)`` float32 CPU batch -> head outputs (float32, CPU) or decoded rows."""

    def __call__(self, x: torch.Tensor):
        return self.forward(x)

    @property
    def classes(self) -> int:
        return self.heads[-1].classes if self.heads else 0

    def details(self) -> str:
        """Backend-specific words for :meth:`describe` (threads, providers, plan)."""
        return ""

    def one_thread_ms(self) -> Optional[float]:
        """Milliseconds of a batch-1 call on one CPU thread, when the backend measured it (its
        thread race) and could switch to it; else None."""
        return None

    def use_one_thread(self) -> Optional[Callable[[], None]]:
        """Run on one CPU thread from now on, if the backend can (after :meth:`one_thread_ms`
        gave a time): returns the function that restores the previous set-up, else None."""
        return None

    def describe(self) -> str:
        """One line: ``backend fast on cpu (fp32, 2 threads)``."""
        extra = self.details()
        return f"backend {self.name} on {self.device} ({self.precision}{', ' + extra if extra else ''})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}: {os.path.basename(self.source)}>"


def check_heads(heads: Sequence[HeadSpec], source: str) -> None:
    if not heads:
        raise UsageError("this model has no detection head ([yolo], [region] or [Gaussian_yolo])",
                         value=source)
