"""Fast inference for a loaded :class:`~darknet_py.model.network.Network` (CPU and CUDA).

>>> fast = optimize_for_inference(net, "cpu")
>>> heads = fast(x)            # same list of head outputs as ``net(x)`` in eval mode

The exact path (``net(x)``) runs each Darknet layer as written; this module builds a separate
*plan* from the same layers, with the same numbers up to float rounding (tests check 1e-4 against
the exact path and against Darknet's own dumps). What it changes:

* **Batch norm folded** into the convolution weights (Darknet's ``fuse_conv_batchnorm``) and the
  bias passed to the convolution kernel instead of a separate add.
* **Winograd 3x3 convolutions** (CPU): every 3x3 stride-1 ungrouped convolution runs NNPACK's
  F(6x6, 3x3) Winograd kernel (the one PyTorch's CPU wheels bundle) with the *kernel transform
  computed once* at build time (``transform_strategy_precompute`` / ``reuse``). PyTorch's own
  ``_nnpack_spatial_convolution`` recomputes that transform on every call, which makes it slower
  than oneDNN on the small deep layers. NNPACK is called through its C entry point
  ``nnp_convolution_inference`` in ``libtorch_cpu``; when that symbol is missing, the CPU lacks
  AVX2/FMA, or a layer's self-check against ``F.conv2d`` fails, that layer (or every layer) uses
  oneDNN instead. Winograd rounds differently from a direct convolution: about 1e-5 relative,
  the same size as the differences between Darknet's own CPU and GPU builds.
* Other convolutions use oneDNN (``torch.backends.mkldnn``); **activations run in place**
  (``leaky_relu_``, ``mish``/``silu`` ``inplace=True``) on the fresh convolution output.
* **Max-pooling in channels-last layout**: PyTorch's NCHW CPU max-pool kernel is ~20x slower
  than its channels-last one; the result is identical (max is exact).
* **Dropout layers skipped** (identity at inference) and each layer's output freed after its last
  reader, as in :class:`~darknet_py.model.network.Network`.
* CUDA: cuDNN convolutions in channels-last layout, optional fp16 / bf16 weights and activations
  (``half=``), ``cudnn.benchmark``, and CUDA graphs replayed per fixed input shape.
* Optional ``torch.compile`` of the plan (``compile=True``; the compile time is reported in
  :attr:`FastNetwork.compile_seconds`; if compiling fails the plan runs eagerly with a warning).

Deliberate difference from the exact path: none in results beyond float rounding; the fast plan
is inference-only (no autograd, no training mode) and is not thread-safe for concurrent calls
from several Python threads (a lock serialises them).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ...layers.base import FLT_MAX
from ...layers.convolutional import ConvolutionalLayer
from ...layers.maxpool import MaxpoolLayer, max_pool_separable
from ...timing import quiet_clock, race, time_call
from .base import CALIBRATE_MAX_SECONDS

__all__ = ["optimize_for_inference", "FastNetwork", "nnpack_available", "set_threads",
           "runtime_info"]

HalfSpec = Union[bool, str, torch.dtype, None]

#: Winograd pays off from this many input channels (measured: 3 -> 6x slower, 16 -> even
#: with NCHW direct and 5% slower than NHWC direct, 32 -> 1.4x faster)
WINOGRAD_MIN_CHANNELS = 32


# ----------------------------------------------------------------------------- NNPACK binding
class _NnpSize(ctypes.Structure):
    _fields_ = [("width", ctypes.c_size_t), ("height", ctypes.c_size_t)]


class _NnpPadding(ctypes.Structure):
    _fields_ = [("top", ctypes.c_size_t), ("right", ctypes.c_size_t),
                ("bottom", ctypes.c_size_t), ("left", ctypes.c_size_t)]


_NNP_WT8X8 = 3            # nnp_convolution_algorithm_wt8x8: Winograd F(6x6, 3x3)
_NNP_PRECOMPUTE = 2       # nnp_convolution_transform_strategy_precompute
_NNP_REUSE = 3            # nnp_convolution_transform_strategy_reuse
_NNP_IDENTITY = 0         # nnp_activation_identity


class _Nnpack:
    """ctypes handle on the NNPACK that PyTorch's CPU library carries (loaded once)."""

    def __init__(self) -> None:
        self.lib = None
        self.reason = ""
        self._pools: Dict[int, int] = {}
        try:
            libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
            names = [n for n in os.listdir(libdir) if n.startswith("libtorch_cpu.")]
            if not names:
                raise OSError("libtorch_cpu not found")
            lib = ctypes.CDLL(os.path.join(libdir, names[0]))
            fn = lib.nnp_convolution_inference
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t,
                           _NnpSize, _NnpPadding, _NnpSize, _NnpSize,
                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_int,
                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            lib.nnp_initialize.restype = ctypes.c_int
            lib.pthreadpool_create.restype = ctypes.c_void_p
            lib.pthreadpool_create.argtypes = [ctypes.c_size_t]
            status = lib.nnp_initialize()
            if status != 0:
                raise OSError(f"nnp_initialize returned status {status} (CPU without AVX2/FMA?)")
            self.conv = fn
            self.lib = lib
        except (OSError, AttributeError) as e:
            self.reason = str(e)

    def pool(self, threads: int) -> Optional[int]:
        """A pthreadpool with ``threads`` workers (None: run in the calling thread)."""
        if threads <= 1:
            return None
        if threads not in self._pools:
            self._pools[threads] = self.lib.pthreadpool_create(threads)
        return self._pools[threads]


_NNPACK: Optional[_Nnpack] = None
_NNPACK_LOCK = threading.Lock()


def _nnpack() -> _Nnpack:
    global _NNPACK
    with _NNPACK_LOCK:
        if _NNPACK is None:
            _NNPACK = _Nnpack()
    return _NNPACK


def nnpack_available() -> Tuple[bool, str]:
    """Whether the precomputed-transform Winograd kernel can be used, and why not."""
    n = _nnpack()
    return n.lib is not None, n.reason


class NnpackWinogradConv:
    """A 3x3 stride-1 convolution through NNPACK's Winograd F(6x6,3x3), kernel transformed once.

    Mirrors Darknet's ``forward_convolutional_layer`` (im2col + gemm) up to rounding: Winograd
    rounds differently (~1e-5 relative). Input and output are float32 NCHW contiguous.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, in_hw: Tuple[int, int],
                 padding: int, threads: int):
        nnp = _nnpack()
        if nnp.lib is None:
            raise RuntimeError(f"NNPACK unavailable: {nnp.reason}")
        self._nnp = nnp
        self.out_channels, self.in_channels = int(weight.shape[0]), int(weight.shape[1])
        h, w = in_hw
        self.in_hw = (h, w)
        self.out_hw = (h + 2 * padding - 2, w + 2 * padding - 2)
        self._size = _NnpSize(w, h)
        self._pad = _NnpPadding(padding, padding, padding, padding)
        self._k = _NnpSize(3, 3)
        self._sub = _NnpSize(1, 1)
        self._pool = nnp.pool(threads)
        self.threads = threads
        self.weight = weight.detach().float().contiguous()
        self.bias = bias.detach().float().contiguous()
        size = ctypes.c_size_t(0)
        self._call(_NNP_PRECOMPUTE, None, self.weight.data_ptr(), None, None, None, size)
        self.kernel_transform = torch.empty((size.value + 63) // 4, dtype=torch.float32)
        self._call(_NNP_PRECOMPUTE, None, self.weight.data_ptr(), None, None,
                   self.kernel_transform.data_ptr(), size)
        self._call(_NNP_REUSE, None, self.kernel_transform.data_ptr(), None, None, None, size)
        self.workspace = torch.empty((size.value + 255) // 4, dtype=torch.float32)
        self._ws_size = size.value

    def _call(self, strategy, inp, kernel, bias, out, workspace, size) -> None:
        status = self._nnp.conv(_NNP_WT8X8, strategy, self.in_channels, self.out_channels,
                                self._size, self._pad, self._k, self._sub, inp, kernel, bias, out,
                                workspace, ctypes.byref(size), _NNP_IDENTITY, None, self._pool,
                                None)
        if status != 0:
            raise RuntimeError(f"nnp_convolution_inference failed with status {status}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise TypeError("NNPACK convolution needs a float32 CPU tensor")
        b, c, h, w = x.shape
        if (c, h, w) != (self.in_channels,) + self.in_hw:
            raise ValueError(f"NNPACK convolution built for {(self.in_channels,) + self.in_hw}, "
                             f"got {(c, h, w)}")
        x = x.contiguous()
        oh, ow = self.out_hw
        out = torch.empty((b, self.out_channels, oh, ow), dtype=torch.float32)
        in_step = c * h * w * 4
        out_step = self.out_channels * oh * ow * 4
        size = ctypes.c_size_t(self._ws_size)
        kptr, bptr, wptr = (self.kernel_transform.data_ptr(), self.bias.data_ptr(),
                            self.workspace.data_ptr())
        xptr, optr = x.data_ptr(), out.data_ptr()
        for i in range(b):
            self._call(_NNP_REUSE, xptr + i * in_step, kptr, bptr, optr + i * out_step, wptr,
                       size)
        return out


# ----------------------------------------------------------------------------- plan steps
def _inplace_activation(name: str, layer) -> Callable[[torch.Tensor], torch.Tensor]:
    """The in-place form of a Darknet activation (same function as activations.py)."""
    if name == "leaky":
        return lambda y: F.leaky_relu_(y, 0.1)
    if name == "relu":
        return F.relu_
    if name == "logistic":
        return torch.sigmoid_
    if name == "swish":
        return lambda y: F.silu(y, inplace=True)
    if name == "mish":
        return lambda y: F.mish(y, inplace=True)
    if name == "linear":
        return lambda y: y
    return layer.activation


class _Step:
    """One layer of the plan: ``run(prev, outputs) -> output``."""

    kernel = "layer"

    def __init__(self, layer):
        self.layer = layer
        self.index = layer.index

    def run(self, prev, outputs):  # pragma: no cover - overridden
        raise NotImplementedError


class _LayerStep(_Step):
    """Any layer the plan does not specialise: its own (exact) forward."""

    kernel = "exact"

    def __init__(self, layer, needs_nchw: bool, dtype: torch.dtype):
        super().__init__(layer)
        self.needs_nchw = needs_nchw
        self.dtype = dtype

    def run(self, prev, outputs):
        if self.needs_nchw:
            prev = prev.contiguous()
            outputs = [o.contiguous() if (o is not None and i in self.layer.inputs) else o
                       for i, o in enumerate(outputs)]
        out = self.layer(prev, outputs)
        # a layer with float32 parameters (weighted shortcut) promotes half inputs
        return out if out.dtype == self.dtype else out.to(self.dtype)


class _IdentityStep(_Step):
    kernel = "identity"

    def run(self, prev, outputs):
        return prev


class _ConvStep(_Step):
    """Folded conv + bias (+ in-place activation) through oneDNN/cuDNN or NNPACK Winograd.

    ``memory_format`` None: the direct convolution runs in whatever layout its input has (a
    weight copy is kept in both layouts, so oneDNN never reorders weights per call).
    """

    def __init__(self, layer: ConvolutionalLayer, weight: torch.Tensor, bias: torch.Tensor,
                 memory_format, winograd: Optional[NnpackWinogradConv]):
        super().__init__(layer)
        self.memory_format = memory_format
        self.weight_nchw = weight.contiguous()
        self.weight_nhwc = weight.contiguous(memory_format=torch.channels_last)
        self.bias = bias
        self.stride = (layer.stride_y, layer.stride_x)
        self.padding = layer.pad * layer.dilation
        self.dilation = layer.dilation
        self.groups = layer.groups
        self.winograd = winograd
        self.kernel = "nnpack-winograd" if winograd is not None else "conv2d"
        self.activate = _inplace_activation(layer.activation_name, layer)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.winograd is not None:
            return self.winograd(x)
        if self.memory_format is not None and not x.is_contiguous(memory_format=self.memory_format):
            x = x.contiguous(memory_format=self.memory_format)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            weight = self.weight_nhwc
        else:
            x = x.contiguous()
            weight = self.weight_nchw
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def run(self, prev, outputs):
        return self.activate(self.conv(prev))


class _MaxpoolStep(_Step):
    """Darknet's maxpool (``forward_maxpool_layer``) without PyTorch's slow NCHW CPU kernel.

    CPU, windows up to 3x3: separable strided maxima (:func:`max_pool_separable`) in the input's
    own layout; otherwise ``max_pool2d`` in channels-last. Both equal ``F.max_pool2d`` exactly.
    """

    def __init__(self, layer: MaxpoolLayer, memory_format, device: torch.device):
        super().__init__(layer)
        self.memory_format = memory_format
        self.size = layer.size
        self.stride = (layer.stride_y, layer.stride_x)
        self.out_hw = tuple(layer.out_shape[1:])
        self.separable = device.type == "cpu" and self.size <= 3
        self.kernel = "maxpool-separable" if self.separable else "maxpool-cl"

    def run(self, prev, outputs):
        # Darknet's -FLT_MAX border; half types use their own lowest finite value
        low = -FLT_MAX if prev.dtype == torch.float32 else float(torch.finfo(prev.dtype).min)
        nhwc = prev.is_contiguous(memory_format=torch.channels_last) and not prev.is_contiguous()
        fmt = torch.channels_last if nhwc else torch.contiguous_format
        if self.separable:
            x = self.layer._padded(prev.contiguous(memory_format=fmt), low)
            return max_pool_separable(x, self.size, self.stride, self.out_hw, fmt)
        x = prev.contiguous(memory_format=torch.channels_last)
        return F.max_pool2d(self.layer._padded(x, low), self.size, self.stride)


class _YoloStep(_Step):
    """``[yolo]`` inference output: logistic on x, y, objectness and classes (not on w, h).

    Same operations as :meth:`YoloLayer.activate`, applied in place on a copy of the input.
    """

    kernel = "yolo"

    def run(self, prev, outputs):
        layer = self.layer
        b, _, h, w = prev.shape
        # always float32: a half-precision logistic would lose the scores' low digits
        out = prev.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        v = out.view(b, layer.n, layer.classes + 5, h, w)
        if not layer.new_coords:
            v[:, :, 0:2].sigmoid_()
            v[:, :, 4:].sigmoid_()
        if layer.scale_x_y != 1.0:
            v[:, :, 0:2].mul_(layer.scale_x_y).sub_(0.5 * (layer.scale_x_y - 1.0))
        return out


# ----------------------------------------------------------------------------- the plan
def _resolve_dtype(half: HalfSpec, device: torch.device) -> torch.dtype:
    if half is None or half is False:
        return torch.float32
    if isinstance(half, torch.dtype):
        return half
    if half is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    table = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
             "float32": torch.float32}
    try:
        return table[str(half).lower()]
    except KeyError:
        raise ValueError(f"half must be False, True, 'fp16' or 'bf16', got {half!r}") from None


def set_threads(threads: Optional[int]) -> int:
    """Set PyTorch's intra-op thread count (``torch.set_num_threads``); returns the count used."""
    if threads is not None and threads > 0:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


@dataclass
class _Timing:
    build_seconds: float = 0.0
    compile_seconds: Optional[float] = None
    #: median seconds per thread count measured by ``calibrate_threads``
    threads: Dict[int, float] = field(default_factory=dict)
    autotune: Dict[int, Dict[str, float]] = field(default_factory=dict)


class FastNetwork:
    """An inference plan for a :class:`Network`; call it like the network.

    ``fast(x)`` returns the list of head outputs (float32, NCHW, Darknet ``l.output`` layout), as
    ``net(x)`` does in eval mode. Build it with :func:`optimize_for_inference`.
    """

    def __init__(self, net, device: Union[str, torch.device, None] = None, half: HalfSpec = False,
                 channels_last: bool = True, compile: bool = False, *,
                 winograd: Optional[bool] = None, cuda_graphs: Optional[bool] = None,
                 threads: Optional[int] = None, autotune: bool = False, tf32: bool = False,
                 split_batch: Optional[bool] = None):
        t0 = time.perf_counter()
        self.net = net
        self.device = torch.device(device) if device is not None else net.device
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("CUDA requested but torch.cuda.is_available() is False")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = _resolve_dtype(half, self.device)
        self.tf32 = bool(tf32)
        self.threads = set_threads(threads) if self.device.type == "cpu" else None
        #: threads each call runs with (``use_threads``/``calibrate_threads``; <= threads)
        self.run_threads = self.threads
        if net.training:
            net.eval()
        net.fuse()
        if net.device != self.device:
            net.to(self.device)
        cpu = self.device.type == "cpu"
        want_winograd = cpu and self.dtype == torch.float32 and winograd is not False
        nnp_ok, nnp_reason = nnpack_available() if want_winograd else (False, "")
        if want_winograd and not nnp_ok and winograd:
            warnings.warn(f"Winograd (NNPACK) convolutions unavailable: {nnp_reason}")
        self.winograd = want_winograd and nnp_ok
        self._want_channels_last = bool(channels_last)
        # set by _build_steps: NCHW where NNPACK runs (it reads NCHW), else channels-last
        self.channels_last = False
        self.memory_format = torch.contiguous_format
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else bool(cuda_graphs)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.timing = _Timing()
        self._lock = threading.Lock()
        self._graphs: Dict[Tuple, Tuple] = {}
        self.steps: List[_Step] = self._build_steps(autotune)
        any_winograd = any(getattr(st, "winograd", None) is not None for st in self.steps)
        # measured: a Winograd plan runs a batch of 4 ~10-20% faster image by image (the
        # activations of one image stay in cache); oneDNN-only plans gain from batching
        self.split_batch = any_winograd if split_batch is None else bool(split_batch)
        self._free_after: Dict[int, List[int]] = net.release_plan()
        self.head_indices = [l.index for l in net.heads]
        self._is_head = [l.is_head for l in net.layers]
        self._forward = self._eager_forward
        self.compiled = False
        if compile:
            self._compile()
        self.timing.build_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ building
    def _build_steps(self, autotune: bool) -> List[_Step]:
        convs = {l.index: self._conv_kernel(l, autotune) for l in self.net.layers
                 if isinstance(l, ConvolutionalLayer) and not l.xnor}
        any_winograd = any(k[2] is not None for k in convs.values())
        cl = torch.channels_last
        self.channels_last = self._want_channels_last and not any_winograd
        self.memory_format = cl if self.channels_last else torch.contiguous_format
        steps: List[_Step] = []
        for layer in self.net.layers:
            if layer.index in convs:
                weight, bias, wino = convs[layer.index]
                # channels-last plans convert every input; Winograd plans let direct
                # convolutions run in the layout that arrives (no conversions in between)
                fmt = self.memory_format if self.channels_last else None
                steps.append(_ConvStep(layer, weight, bias, fmt, wino))
            elif isinstance(layer, DropoutLayer):
                steps.append(_IdentityStep(layer))
            elif type(layer) is MaxpoolLayer and not layer.maxpool_depth:
                steps.append(_MaxpoolStep(layer, self.memory_format, self.device))
            elif isinstance(layer, YoloLayer):
                steps.append(_YoloStep(layer))
            else:
                # route/upsample/shortcut work in any layout; unknown layers get NCHW inputs
                layout_free = type(layer).__name__ in ("RouteLayer", "UpsampleLayer",
                                                       "ShortcutLayer")
                steps.append(_LayerStep(layer, not layout_free, self.dtype))
        # the first convolution of a Winograd plan reads the (thin, 3-channel) image: oneDNN is
        # ~2x faster on it in NHWC, and its output stays NHWC until a Winograd layer needs NCHW
        first = next((s for s in steps if isinstance(s, _ConvStep)), None)
        self.input_format = self.memory_format
        if (any_winograd and self._want_channels_last and first is not None
                and first.winograd is None and first.layer.in_shape[0] < WINOGRAD_MIN_CHANNELS):
            self.input_format = cl
        return steps

    def _conv_kernel(self, layer: ConvolutionalLayer, autotune: bool):
        """(folded weight, folded bias, NNPACK Winograd kernel or None) for one conv layer."""
        if layer._fused is None:
            layer.fuse()
        weight, bias = layer._fused
        weight = weight.to(self.device, self.dtype)
        bias = bias.to(self.device, self.dtype)
        c, h, w = layer.in_shape
        eligible = (self.winograd and layer.size == 3 and layer.stride_x == 1
                    and layer.stride_y == 1 and layer.dilation == 1 and layer.groups == 1
                    and (autotune or c >= WINOGRAD_MIN_CHANNELS))
        if not eligible:
            return weight, bias, None
        direct = _ConvStep(layer, weight, bias, torch.contiguous_format, None)
        try:
            wino = NnpackWinogradConv(weight, bias, (h, w), layer.pad, self.threads or 1)
            # self-check against the direct convolution on a random input
            x = torch.rand(1, c, h, w) * 2 - 1
            with torch.inference_mode():
                ref = direct.conv(x)
                got = wino(x)
            scale = float(ref.abs().max()) or 1.0
            err = float((got - ref).abs().max()) / scale
            if not err < 1e-4:
                warnings.warn(f"layer {layer.index}: NNPACK Winograd self-check failed "
                              f"(relative error {err:.2e}); using the direct convolution")
                return weight, bias, None
        except (RuntimeError, TypeError, ValueError) as e:
            warnings.warn(f"layer {layer.index}: NNPACK Winograd unavailable ({e}); "
                          "using the direct convolution")
            return weight, bias, None
        if autotune:
            timings = {"conv2d": _time_call(direct.conv, x), "nnpack-winograd": _time_call(wino, x)}
            self.timing.autotune[layer.index] = timings
            if timings["conv2d"] < timings["nnpack-winograd"]:
                return weight, bias, None
        return weight, bias, wino

    def _compile(self) -> None:
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(self._eager_forward, dynamic=False)
            self._forward = compiled
            self.compiled = True
        except Exception as e:  # torch.compile unavailable on this platform/python
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); running eagerly")
            self._forward = self._eager_forward
        self.timing.compile_seconds = time.perf_counter() - t0
        self._compile_pending = self.compiled

    # ------------------------------------------------------------------ threads
    def use_threads(self, threads: int) -> None:
        """Run with ``threads`` (PyTorch's OpenMP and NNPACK's pool) from now on; at most the
        count the plan was built with. Each call sets and restores ``torch.set_num_threads``."""
        if self.device.type != "cpu":
            return
        threads = max(1, min(int(threads), self.threads or 1))
        self.run_threads = threads
        nnp = _nnpack()
        for st in self.steps:
            wino = getattr(st, "winograd", None)
            if wino is not None:
                wino._pool = nnp.pool(threads)

    def calibrate_threads(self, rounds: int = 5) -> Dict[int, float]:
        """The thread policy: time the plan (batch 1) with one thread and with all of
        :attr:`threads`, interleaved, and keep the faster. Small networks (yolo-fastest) lose
        more to waking the second thread ~130 times per image than they gain, most of all when
        other processes share the CPUs; large ones gain. Returns ``{threads: median seconds}``."""
        full = self.threads or 1
        if self.device.type != "cpu" or full <= 1:
            return {}
        x = torch.rand((1,) + tuple(self.net.input_shape))
        self.use_threads(full)
        # the untimed first call builds oneDNN primitives and allocates
        if time_call(lambda: self(x), repeat=1) > CALIBRATE_MAX_SECONDS:
            return {}                      # a large network: its layers are worth the threads

        def run_with(k: int) -> Callable[[], Any]:
            def run():
                self.use_threads(k)
                return self(x)
            return run
        med = race({1: run_with(1), full: run_with(full)}, rounds)
        self.use_threads(1 if med[1] < med[full] else full)
        self.timing.threads = med
        return med

    # ------------------------------------------------------------------ running
    @property
    def kernels(self) -> List[Tuple[int, str]]:
        """(layer index, kernel) for every layer of the plan."""
        return [(s.index, s.kernel) for s in self.steps]

    def describe(self) -> str:
        counts: Dict[str, int] = {}
        for _, k in self.kernels:
            counts[k] = counts.get(k, 0) + 1
        parts = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
        return (f"FastNetwork(device={self.device}, dtype={str(self.dtype).replace('torch.', '')}, "
                f"channels_last={self.channels_last}, winograd={self.winograd}, "
                f"compiled={self.compiled}, cuda_graphs={self.cuda_graphs}, "
                f"split_batch={self.split_batch}, "
                f"threads={self.threads}; {parts})")

    __repr__ = describe

    def step_times(self, x: torch.Tensor, repeat: int = 5) -> List[Tuple[int, str, float]]:
        """(layer index, kernel, median seconds) of every step on input ``x`` (eager, CPU clock).

        Uses the thread CPU clock with one thread (robust when other processes share the CPU)
        and the wall clock otherwise; CUDA steps are synchronised.
        """
        clock = quiet_clock(self.run_threads if self.device.type == "cpu" else None)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        samples: List[List[float]] = [[] for _ in self.steps]
        with self._lock, torch.inference_mode(), self._precision(), self._threads():
            x = self._prepare(x)
            for _ in range(repeat + 1):
                outputs: List[Optional[torch.Tensor]] = [None] * len(self.steps)
                prev = x.contiguous(memory_format=self.input_format)
                for k, step in enumerate(self.steps):
                    sync()
                    t = clock()
                    prev = step.run(prev, outputs)
                    sync()
                    samples[k].append(clock() - t)
                    outputs[step.index] = prev
        out = []
        for step, ts in zip(self.steps, samples):
            ts = sorted(ts[1:])
            out.append((step.index, step.kernel, ts[len(ts) // 2]))
        return out

    def _eager_forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outputs: List[Optional[torch.Tensor]] = [None] * len(self.steps)
        heads: List[torch.Tensor] = []
        prev = x.contiguous(memory_format=self.input_format)
        free_after = self._free_after
        for step in self.steps:
            out = step.run(prev, outputs)
            if self._is_head[step.index]:
                heads.append(out)
            outputs[step.index] = out
            prev = out
            for i in free_after.get(step.index, ()):
                outputs[i] = None
        return [h.contiguous().float() for h in heads]

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        # the plan (NNPACK transforms, static paddings) is built for the cfg's input size
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.net.input_shape):
            c, h, w = self.net.input_shape
            raise ValueError(f"network input must be (B, {c}, {h}, {w}) for this plan, got "
                             f"{tuple(x.shape)}")
        if x.device != self.device or x.dtype != self.dtype:
            x = x.to(self.device, self.dtype, non_blocking=True)
        return x

    @contextlib.contextmanager
    def _threads(self):
        """PyTorch's thread count set to :attr:`run_threads` for one call (restored after)."""
        want = self.run_threads
        old = torch.get_num_threads() if want else 0
        if not want or old == want:
            yield
            return
        torch.set_num_threads(want)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    @contextlib.contextmanager
    def _precision(self):
        """float32 on CUDA means float32: cuDNN's TF32 convolutions (on by default in PyTorch)
        are switched off while the plan runs unless ``tf32=True``."""
        if self.device.type != "cuda" or self.dtype != torch.float32 or self.tf32:
            yield
            return
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old

    def __call__(self, x: torch.Tensor) -> List[torch.Tensor]:
        with self._lock, torch.inference_mode(), self._precision(), self._threads():
            x = self._prepare(x)
            if self.cuda_graphs and self.device.type == "cuda":
                try:
                    return self._graph_forward(x)
                except RuntimeError as e:  # an op that cannot be captured: run eagerly
                    warnings.warn(f"CUDA graph capture failed ({str(e).splitlines()[0]}); "
                                  "running without CUDA graphs")
                    self.cuda_graphs = False
                    self._graphs.clear()
                    torch.cuda.synchronize(self.device)
            if self.compiled and getattr(self, "_compile_pending", False):
                return self._first_compiled_call(x)
            if self.split_batch and x.shape[0] > 1:
                parts = [self._forward(x[i:i + 1]) for i in range(x.shape[0])]
                return [torch.cat(heads) for heads in zip(*parts)]
            return self._forward(x)

    def _first_compiled_call(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The first compiled call (where torch.compile compiles); falls back if it fails."""
        t0 = time.perf_counter()
        try:
            out = self._forward(x)
        except Exception as e:
            warnings.warn(f"torch.compile failed on first call ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); running eagerly")
            self._forward = self._eager_forward
            self.compiled = False
            out = self._forward(x)
        self._compile_pending = False
        self.timing.compile_seconds = (self.timing.compile_seconds or 0.0) + \
            time.perf_counter() - t0
        return out

    def _graph_forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Replay a CUDA graph captured for this input shape (captured on first use)."""
        key = (tuple(x.shape), x.dtype)
        entry = self._graphs.get(key)
        if entry is None:
            static_in = x.clone()
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up (cuDNN autotuning, allocator)
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            entry = (graph, static_in, static_out)
            self._graphs[key] = entry
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return [o.clone() for o in static_out]


def _time_call(fn: Callable, x: torch.Tensor, repeat: int = 3) -> float:
    """Median seconds of ``fn(x)`` (thread CPU time with one thread: robust when other
    processes share the CPU)."""
    with torch.inference_mode():
        return time_call(lambda: fn(x), repeat, clock=quiet_clock(torch.get_num_threads()))


def optimize_for_inference(net, device: Union[str, torch.device, None] = None,
                           half: HalfSpec = False, channels_last: bool = True,
                           compile: bool = False, **kw) -> FastNetwork:
    """Build the fast inference plan for ``net`` (see the module docstring for what it does).

    Args:
        net: a :class:`~darknet_py.model.network.Network` with weights loaded (it is put in eval mode,
            its batch norm folded, and moved to ``device``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (default: where ``net`` is).
        half: False for float32; True for float16 on CUDA / bfloat16 on CPU; or ``"fp16"`` /
            ``"bf16"``. Half precision changes results by ~1e-2 (not Darknet-exact).
        channels_last: NHWC layout for oneDNN/cuDNN convolutions (ignored where NNPACK Winograd
            runs, which reads NCHW).
        compile: wrap the plan in ``torch.compile`` (compile time in ``.timing.compile_seconds``;
            falls back to eager with a warning).
        winograd: (keyword) None/True: use NNPACK Winograd for 3x3 stride-1 convolutions on CPU
            float32 when available; False: never.
        cuda_graphs: (keyword) replay CUDA graphs per input shape (default: on for CUDA).
        split_batch: (keyword) run a batch image by image (default: on for plans that use
            Winograd, where it is faster on CPU).
        tf32: (keyword) allow cuDNN's TF32 convolutions for float32 on CUDA (default False: the
            float32 plan stays within 1e-4 of the exact path).
        threads: (keyword) ``torch.set_num_threads`` value (also NNPACK's pool size).
        autotune: (keyword) time Winograd against the direct convolution per layer and keep the
            faster one (default False: Winograd wherever it applies).

    Returns:
        A :class:`FastNetwork`; ``fast(x)`` gives the same list of head outputs as ``net(x)``.
    """
    return FastNetwork(net, device, half=half, channels_last=channels_last, compile=compile, **kw)


def runtime_info() -> Dict[str, object]:
    """Versions and settings that decide inference speed (for benchmark reports)."""
    ok, reason = nnpack_available()
    info: Dict[str, object] = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "nnpack_winograd": ok,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "cuda": torch.cuda.is_available(),
    }
    if not ok:
        info["nnpack_reason"] = reason
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


from ...errors import UsageError
from ...layers.dropout import DropoutLayer
from ...layers.yolo import YoloLayer
# ----------------------------------------------------------------------------- backend
from .base import Backend, check_heads  # noqa: E402  (the plan above does not need it)


class FastBackend(Backend):
    """``-backend fast``: this module's CPU plan (fp32, or bf16 where the CPU has it)."""

    name = "fast"

    def __init__(self, net, precision: str = "fp32", threads: Optional[int] = None,
                 calibrate_threads: bool = True, choose_plan: bool = True, **plan_options):
        check_heads(net.heads, net.cfg_path)
        if precision == "fp16":
            raise UsageError("-backend fast runs fp32 or bf16 on the CPU, not fp16")
        self.network = net
        self.source = net.cfg_path
        self.precision = precision
        self.width, self.height, self.channels = net.width, net.height, net.channels
        self.heads = net.head_specs
        self.letter_box = bool(net.config.letter_box)
        half = "bf16" if precision == "bf16" else False
        self.plan = optimize_for_inference(net, "cpu", half=half, threads=threads, **plan_options)
        #: median seconds of the candidate plans raced at build time (``choose_plan``)
        self.plan_race: Dict[str, float] = {}
        if choose_plan and _uses_winograd(self.plan) and "winograd" not in plan_options:
            self._choose_plan(net, half, threads, plan_options)
        if calibrate_threads:
            self.plan.calibrate_threads()

    def _choose_plan(self, net, half, threads, plan_options) -> None:
        """NNPACK's Winograd (AVX2 code) wins on some CPUs and loses to oneDNN's direct
        convolutions on others (AVX-512/AMX Xeons: yolov4-tiny 85 vs 68 ms, one thread): the
        Winograd plan and the oneDNN-only plan are timed against each other on a batch-1 input,
        interleaved, and the faster is kept. Networks slower than ``CALIBRATE_MAX_SECONDS`` per
        image keep the Winograd plan (timing them would cost seconds)."""
        x = torch.rand((1,) + tuple(net.input_shape))
        wino = self.plan
        if time_call(lambda: wino(x), repeat=1) > CALIBRATE_MAX_SECONDS:
            return
        direct = optimize_for_inference(net, "cpu", half=half, threads=threads, winograd=False,
                                        **plan_options)
        direct(x)
        plans = {"winograd": wino, "onednn": direct}
        self.plan_race = race({k: (lambda p=p: p(x)) for k, p in plans.items()})
        self.plan = plans[min(self.plan_race, key=self.plan_race.get)]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [o if o.dtype == torch.float32 else o.float() for o in self.plan(x)]

    def details(self) -> str:
        run, built = self.plan.run_threads, self.plan.threads
        threads = f"{run} thread{'' if run == 1 else 's'}" + \
            (f" (of {built}: faster measured)" if run != built else "")
        kind = "Winograd" if _uses_winograd(self.plan) else "oneDNN"
        raced = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in self.plan_race.items())
        return f"{threads}, {kind}" + (f" (raced: {raced})" if raced else "")


def _uses_winograd(plan: FastNetwork) -> bool:
    return any(getattr(st, "winograd", None) is not None for st in plan.steps)

