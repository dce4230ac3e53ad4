"""Which device a command or the API runs on: one rule for everything.

* No GPU named: a CUDA GPU when torch sees one (GPU 0; under torchrun each process the GPU of its
  ``LOCAL_RANK``), else the CPU.
* Darknet's ``-i N`` (``index``) or ``-gpus N[,M...]`` (``gpus``; a DDP process takes the entry
  of its ``LOCAL_RANK``) name the GPU; ``-gpus`` wins when both are given, as in Darknet's
  ``run_detector``. A negative ``-i`` (Darknet's ``-i -1``) or ``-nogpu`` (``nogpu``) means the
  CPU.
* Darknet's own flags on a machine where torch has no CUDA (``-i 0``, ``-gpus 0``): one warning
  on stderr, then the CPU, because Darknet's CPU build ignores them and commands copied from
  AlexeyAB's README carry them.
* Any other GPU that is not there (an index past the visible ones, or ``device="cuda"`` from the
  API) is a one-line :class:`~darknet_py.errors.UsageError`, never a silent fall back to the CPU.
* API spellings go through the same rule: ``device=None | "cpu" | "cuda" | "cuda:N" | N |
  torch.device``.

:func:`describe` is the line a command prints once, on stderr, when it starts;
:func:`usable_cpus` is the one count of the CPUs this process may use.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Optional, Sequence, Union

import torch

from .errors import UsageError

__all__ = ["select_device", "describe", "cpu_bf16_supported", "usable_cpus", "cpu_model"]

DeviceSpec = Union[None, str, int, torch.device]

_warned = set()   # the CPU fall-back warnings already printed by this process


def _warn_once(text: str) -> None:
    # select_device runs several times per command (the CLI checks, then the trainer): one line
    if text not in _warned:
        _warned.add(text)
        print(f"warning: {text}", file=sys.stderr, flush=True)


def select_device(gpus: Optional[Sequence[int]] = None, index: Optional[int] = None, *,
                  device: DeviceSpec = None, nogpu: bool = False,
                  local_rank: Optional[int] = None) -> torch.device:
    """The device to run on (see the module docstring for the rule).

    ``gpus``: the ``-gpus`` list; ``index``: ``-i``; ``device``: an API spelling; ``nogpu``:
    force the CPU; ``local_rank``: which ``gpus`` entry this process takes (default: the
    ``LOCAL_RANK`` environment variable, 0 outside DDP). Does not call ``torch.cuda.set_device``.
    """
    flag = None
    gpu: Optional[int] = None
    if device is not None:
        gpu, flag = _parse_spec(device)
        if gpu is None:
            return torch.device("cpu")
        if gpu == -1:                                 # "cuda" without an index: the default GPU
            gpu = 0
    elif nogpu:
        return torch.device("cpu")
    elif gpus:
        gpu = int(list(gpus)[_local_rank(local_rank) % len(gpus)])
        flag = "-gpus " + ",".join(str(int(g)) for g in gpus)
        if gpu < 0:
            raise UsageError(f"{flag}: GPU indices are 0 or more (use -nogpu for the CPU)")
    elif index is not None:
        if int(index) < 0:
            return torch.device("cpu")
        gpu, flag = int(index), f"-i {int(index)}"
    if gpu is None:                                    # nothing named: CUDA when available
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", _local_rank(local_rank) % max(1, torch.cuda.device_count()))
    if not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) is built without CUDA"
               if torch.version.cuda is None else "torch sees no CUDA GPU")
        if device is None:       # -i / -gpus: Darknet's CPU build ignores them, so do we
            _warn_once(f"{flag} ignored: {why}; running on the CPU, as Darknet's CPU build does")
            return torch.device("cpu")
        raise UsageError(f"{flag} names GPU {gpu} but {why}; leave it out to run on the CPU")
    count = torch.cuda.device_count()
    if gpu >= count:
        visible = "0" if count == 1 else f"0..{count - 1}"
        raise UsageError(f"{flag} names GPU {gpu} but only {count} GPU"
                         f"{'' if count == 1 else 's'} ({visible}) visible")
    return torch.device("cuda", gpu)


def _local_rank(given: Optional[int]) -> int:
    """``given``, else torchrun's ``LOCAL_RANK`` (0 outside DDP): which GPU of the machine, or
    which ``-gpus`` entry, this process takes."""
    if given is not None:
        return given
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def _parse_spec(device: DeviceSpec):
    """(gpu index or None for the CPU or -1 for "the default GPU", text for messages)."""
    if isinstance(device, bool):
        raise UsageError(f"device={device!r}: expected 'cpu', 'cuda', 'cuda:N' or a GPU index")
    if isinstance(device, int):
        if device < 0:
            return None, None
        return device, f"device={device}"
    if isinstance(device, torch.device):
        text = str(device)
    elif isinstance(device, str):
        text = device.strip().lower()
    else:
        raise UsageError(f"device={device!r}: expected 'cpu', 'cuda', 'cuda:N' or a GPU index")
    if text == "cpu":
        return None, None
    if text in ("cuda", "gpu"):
        return -1, f"device='{device}'"
    for prefix in ("cuda:", "gpu:"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return int(text[len(prefix):]), f"device='{device}'"
    raise UsageError(f"device={device!r}: expected 'cpu', 'cuda', 'cuda:N' or a GPU index")


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (``taskset``, a container's cpuset),
    which can be fewer than the machine's logical CPUs; the CPU backends' full thread count and
    the benchmark's default."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):    # no affinity call on this platform (macOS, Windows)
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix/convolution kernels natively (oneDNN with AVX512-BF16 or
    AMX); elsewhere bf16 autocast is emulated and slower than fp32."""
    try:
        mkldnn = torch.backends.mkldnn
        if not mkldnn.is_available():
            return False
        ops = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if ops is not None:
            return bool(ops())
    except (AttributeError, RuntimeError):
        return False
    return False


def describe(device: torch.device, backend: Optional[str] = None) -> str:
    """One line naming the device (and the inference backend, when given), e.g.
    ``device: CPU (8 threads, bf16)`` or ``device: GPU 0 (NVIDIA H200, 139.7 GiB, CUDA 12.8)``."""
    device = torch.device(device)
    if device.type == "cuda":
        idx = 0 if device.index is None else device.index
        try:
            props = torch.cuda.get_device_properties(idx)
            what = f"GPU {idx} ({props.name}, {props.total_memory / 2 ** 30:.1f} GiB, " \
                   f"CUDA {torch.version.cuda})"
        except (RuntimeError, AssertionError, AttributeError):
            what = f"GPU {idx}"
    elif device.type == "cpu":
        extra = [f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"]
        if cpu_bf16_supported():
            extra.append("bf16")
        what = f"CPU ({', '.join(extra)})"
    else:
        what = str(device)
    line = f"device: {what}"
    if backend:
        line += f", backend: {backend}"
    return line
