"""The backend interface of the inference pipeline, and the one function that picks a backend.

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

``auto`` (the default) is ``cuda`` when the device is a GPU and ``onnxruntime`` for an ``.onnx``
file. On the CPU, for a cfg: ``onnxruntime`` (fp32) when ``onnxruntime`` and ``onnx`` are
installed — measured faster than ``fast`` on every benchmarked model at 1 and 2 threads
(docs/benchmarks.md), and its detections equal the exact path's and Darknet's on the oracle set
(``tests/infer/test_backends.py``) — falling back to ``fast`` when they are missing or the export
fails; ``fast`` otherwise. With ``-precision bf16`` on the CPU ``auto`` is ``openvino`` when
installed (the fastest bf16 measured), else ``fast``. ``-precision int8`` is always ``openvino``
on the CPU, with a model quantized on the user's calibration images (:mod:`.int8`); int8 is
never picked unless asked for.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Callable, List, Optional, Sequence, Union

import torch

from ...errors import DarknetError, DataError, UsageError
from ...structures.heads import HeadSpec

__all__ = ["Backend", "BACKENDS", "PRECISIONS", "make_backend", "default_backend_name"]

#: backends time their candidate set-ups (thread counts, Winograd or not) against each other at
#: build time only for networks faster than this per batch-1 call (larger ones gain from threads)
CALIBRATE_MAX_SECONDS = 0.4

BACKENDS = ("auto", "exact", "fast", "cuda", "onnxruntime", "openvino")
#: backends that run on the CPU only (no device rule needed when one is asked for by name)
CPU_BACKENDS = ("fast", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
PathLike = Union[str, "os.PathLike[str]"]


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

    def describe(self) -> str:
        """One line: ``backend fast on cpu (fp32, 2 threads)``."""
        extra = self.details()
        return f"backend {self.name} on {self.device} ({self.precision}{', ' + extra if extra else ''})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}: {os.path.basename(self.source)}>"


# ----------------------------------------------------------------------------- construction
def _is_onnx(path: PathLike) -> bool:
    return os.fspath(path).lower().endswith(".onnx")


def _installed(*modules: str) -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in modules)


def default_backend_name(model: PathLike, device: torch.device, precision: str = "fp32") -> str:
    """What ``-backend auto`` runs (see the module docstring for the measurements behind it)."""
    if precision == "int8":
        return "openvino"
    if _is_onnx(model):
        return "onnxruntime"
    if device.type == "cuda":
        return "cuda"
    if precision == "fp32" and _installed("onnxruntime", "onnx"):
        return "onnxruntime"
    if precision == "bf16" and _installed("openvino", "onnx"):
        return "openvino"
    return "fast"


def make_backend(model: PathLike, weights: Optional[PathLike] = None, *, backend: str = "auto",
                 device: Union[None, str, torch.device] = None, precision: str = "fp32",
                 width: Optional[int] = None, height: Optional[int] = None,
                 threads: Optional[int] = None, network: Any = None,
                 calibration: Any = None,
                 log: Optional[Callable[[str], None]] = None) -> Backend:
    """The backend ``backend`` for a cfg (+ weights) or a ``darknet-py export`` ONNX file.

    ``device`` None follows the rule of :func:`darknet_py.devices.select_device` (a GPU when CUDA
    is available, else the CPU). ``network`` passes an already built (and loaded) Network for
    the cfg instead of building it again. ``precision="int8"`` needs ``calibration``: a Darknet
    list file or a list of image paths (:mod:`.int8`, which reports through ``log``, default
    stderr).
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend '{backend}' (known: {', '.join(BACKENDS)})",
                         value=backend)
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}' (known: {', '.join(PRECISIONS)})",
                         value=precision)
    if precision == "int8":
        from .int8 import int8_backend
        return int8_backend(model, weights, calibration=calibration, backend=backend,
                            device=device, width=width, height=height, threads=threads,
                            network=network, log=log)
    if calibration is not None:
        raise UsageError("calibration images (-calib, calibration=) are for -precision int8")
    onnx_file = _is_onnx(model)
    if device is None and backend in CPU_BACKENDS:
        dev = torch.device("cpu")  # CPU backends asked for by name
    else:
        from ...devices import select_device
        dev = select_device(device=device)
    name = default_backend_name(model, dev, precision) if backend == "auto" else backend
    if onnx_file:
        if weights is not None or width or height:
            raise UsageError("an ONNX export already holds its weights and input size: give no "
                             "weights, width or height", value=os.fspath(model))
        if name not in ("onnxruntime", "openvino"):
            raise UsageError(f"an .onnx file runs with -backend onnxruntime or openvino, not "
                             f"'{name}'", value=os.fspath(model))
        return _onnx_backend(name, os.fspath(model), precision, threads)
    if name in ("onnxruntime", "openvino"):
        from .onnxruntime import cached_export
        try:
            path = cached_export(model, weights, width=width, height=height, network=network)
            try:
                return _onnx_backend(name, path, precision, threads)
            except DataError:
                # the cached file cannot be loaded (cut short by a full disk or a killed
                # process, damaged): it is ours to rebuild, once
                path = cached_export(model, weights, width=width, height=height,
                                     network=network, rebuild=True)
                return _onnx_backend(name, path, precision, threads)
        except (DarknetError, RuntimeError, ValueError, NotImplementedError, OSError):
            if backend != "auto":
                raise
            name = "fast"   # auto: a model the export or the runtime cannot take runs on fast
    if network is not None:
        net = network
    else:
        from ...model.network import Network
        net = Network.from_files(model, weights, batch=1, width=width, height=height)
    if name == "exact":
        from .exact import ExactBackend
        return ExactBackend(net, dev, precision)
    if name == "fast":
        if dev.type != "cpu":
            raise UsageError("-backend fast is the CPU plan; on a GPU use -backend cuda")
        from .fast import FastBackend
        return FastBackend(net, precision, threads)
    if dev.type != "cuda":
        raise UsageError("-backend cuda needs a CUDA GPU (torch.cuda.is_available() is False); "
                         "use -backend fast or exact on the CPU")
    from .cuda import CudaBackend
    return CudaBackend(net, dev, precision)


def _onnx_backend(name: str, path: str, precision: str, threads: Optional[int]) -> Backend:
    if name == "openvino":
        from .openvino import OpenVinoBackend
        return OpenVinoBackend(path, precision, threads)
    from .onnxruntime import OnnxRuntimeBackend
    return OnnxRuntimeBackend(path, precision, threads)


def check_heads(heads: Sequence[HeadSpec], source: str) -> None:
    if not heads:
        raise UsageError("this model has no detection head ([yolo], [region] or [Gaussian_yolo])",
                         value=source)
