"""The one function that picks and builds a backend (:func:`make_backend`), and ``auto``'s rule
(:func:`auto_backend`, in words :data:`AUTO_BACKEND_RULE`). Above the backends it builds, so
they import the interface (:mod:`.base`) and never this module."""
from __future__ import annotations

__all__ = ["AUTO_BACKEND_RULE", "auto_backend", "make_backend"]

import json
import os
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch

from ... import __version__
from ...console import eprint
from ...devices import cpu_model, select_device, usable_cpus
from ...errors import DarknetError, DataError, UsageError
from ...files import PathLike, atomic_write_bytes
from ...timing import race, time_call
from ...model.network import Network
from .base import BACKENDS, CPU_BACKENDS, PRECISIONS, Backend
from .cuda import CudaBackend
from .exact import ExactBackend
from .fast import FastBackend
from .int8 import int8_backend
from .onnxruntime import OnnxRuntimeBackend, cached_export
from .openvino import OpenVinoBackend

#: :func:`auto_backend`'s rule in words, first match wins (``-backend``'s help shows this text,
#: the docs refer to it; a change of the rule changes both)
AUTO_BACKEND_RULE = ("openvino for -precision int8; onnxruntime for an .onnx file; cuda on a GPU; "
                     "on the CPU onnxruntime when onnxruntime and onnx are installed, or openvino "
                     "when openvino is installed too and ran the model at least 5 % faster on "
                     "this machine (timed once per model, CPU and thread count, cached with the "
                     "export); with -precision bf16 openvino when openvino and onnx are "
                     "installed; else fast; fast also when the ONNX export or runtime cannot take "
                     "the model")


# ----------------------------------------------------------------------------- construction
def _is_onnx(path: PathLike) -> bool:
    return os.fspath(path).lower().endswith(".onnx")


def _installed(*modules: str) -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in modules)


def auto_backend(model: PathLike, device: torch.device, precision: str = "fp32"
                 ) -> Tuple[str, str]:
    """What ``-backend auto`` runs, and why: ``(backend name, the clause that applied)``.

    The rule is :data:`AUTO_BACKEND_RULE` (the module docstring has the measurements behind it);
    its last clause, the fall-back to ``fast`` when the ONNX export or runtime fails, is
    :func:`make_backend`'s, since only building the backend finds that out.
    """
    if precision == "int8":
        return "openvino", "-precision int8"
    if _is_onnx(model):
        return "onnxruntime", "an .onnx file"
    if device.type == "cuda":
        return "cuda", "a GPU"
    if precision == "fp32":
        if _installed("onnxruntime", "onnx"):
            return "onnxruntime", "the CPU, onnxruntime installed"
        return "fast", "the CPU, onnxruntime or onnx not installed"
    if precision == "bf16":
        if _installed("openvino", "onnx"):
            return "openvino", "the CPU, bf16, openvino installed"
        return "fast", "the CPU, bf16, openvino or onnx not installed"
    return "fast", f"the CPU, {precision}"


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
        reason = auto_backend(model, torch.device("cpu"), precision)[1] if backend == "auto" \
            else None
        return _chosen(int8_backend(model, weights, calibration=calibration, backend=backend,
                                    device=device, width=width, height=height, threads=threads,
                                    network=network, log=log), reason)
    if calibration is not None:
        raise UsageError("calibration images (-calib, calibration=) are for -precision int8")
    onnx_file = _is_onnx(model)
    if device is None and backend in CPU_BACKENDS:
        dev = torch.device("cpu")  # CPU backends asked for by name
    else:
        dev = select_device(device=device)
    name, reason = auto_backend(model, dev, precision) if backend == "auto" else (backend, None)
    if onnx_file:
        if weights is not None or width or height:
            raise UsageError("an ONNX export already holds its weights and input size: give no "
                             "weights, width or height", value=os.fspath(model))
        if name not in ("onnxruntime", "openvino"):
            raise UsageError(f"an .onnx file runs with -backend onnxruntime or openvino, not "
                             f"'{name}'", value=os.fspath(model))
        return _chosen(_onnx_backend(name, os.fspath(model), precision, threads), reason)
    if name in ("onnxruntime", "openvino"):
        raced = backend == "auto" and name == "onnxruntime" and precision == "fp32" and \
            _installed("openvino")
        try:
            path = cached_export(model, weights, width=width, height=height, network=network)
            try:
                if raced:
                    return _fastest_runtime(path, threads, log)
                return _chosen(_onnx_backend(name, path, precision, threads), reason)
            except DataError:
                # the cached file cannot be loaded (cut short by a full disk or a killed
                # process, damaged): it is ours to rebuild, once
                path = cached_export(model, weights, width=width, height=height,
                                     network=network, rebuild=True)
                if raced:
                    return _fastest_runtime(path, threads, log)
                return _chosen(_onnx_backend(name, path, precision, threads), reason)
        except (DarknetError, RuntimeError, ValueError, NotImplementedError, OSError) as e:
            if backend != "auto":
                raise
            # auto: a model the export or the runtime cannot take runs on fast
            name, reason = "fast", f"{name} cannot take this model ({_first_line(e)})"
    if network is not None:
        net = network
    else:
        net = Network.from_files(model, weights, batch=1, width=width, height=height)
    if name == "exact":
        return ExactBackend(net, dev, precision)
    if name == "fast":
        if dev.type != "cpu":
            raise UsageError("-backend fast is the CPU plan; on a GPU use -backend cuda")
        return _chosen(FastBackend(net, precision, threads), reason)
    if dev.type != "cuda":
        raise UsageError("-backend cuda needs a CUDA GPU (torch.cuda.is_available() is False); "
                         "use -backend fast or exact on the CPU")
    return _chosen(CudaBackend(net, dev, precision), reason)


def _chosen(backend: Backend, auto_reason: Optional[str]) -> Backend:
    backend.auto_reason = auto_reason
    return backend


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


#: OpenVINO replaces ONNX Runtime as ``auto``'s choice only when this much faster (within it
#: the two are equal for the user, and ONNX Runtime is the runtime the oracle tests run)
RUNTIME_MARGIN = 0.05
#: seconds the runtime race may take for a small network (a large one gets 3 rounds)
RUNTIME_RACE_SECONDS = 1.0
#: most machine/thread entries one model's choice file keeps
_CHOICE_ENTRIES = 16


def _choice_key(threads: Optional[int]) -> str:
    import onnxruntime
    import openvino
    return (f"{cpu_model()}|cpus={usable_cpus()}|threads={threads or 'default'}|"
            f"onnxruntime={onnxruntime.__version__}|openvino={openvino.__version__}|"
            f"darknet_py={__version__}")


def _read_choices(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}            # none yet, or damaged: timed again and rewritten


def _fastest_runtime(path: str, threads: Optional[int],
                     log: Optional[Callable[[str], None]]) -> Backend:
    """``auto`` on the CPU with both runtimes installed: the faster of ONNX Runtime and OpenVINO
    (fp32, batch 1, interleaved medians; OpenVINO only when :data:`RUNTIME_MARGIN` faster) for
    this export, CPU and thread count. Timed once, then read from ``<export>.auto.json``; the
    reason printed with the choice gives both times."""
    choices_file = path + ".auto.json"
    key = _choice_key(threads)
    choices = _read_choices(choices_file)
    entry = choices.get(key)
    if isinstance(entry, dict) and entry.get("choice") in ("onnxruntime", "openvino") and \
            isinstance(entry.get("ms"), dict):
        ms = entry["ms"]
        return _chosen(_onnx_backend(entry["choice"], path, "fp32", threads),
                       _runtime_reason(entry["choice"], ms, cached=True))
    ort_be = _onnx_backend("onnxruntime", path, "fp32", threads)
    try:
        ov_be = _onnx_backend("openvino", path, "fp32", threads)
    except (DarknetError, RuntimeError, ValueError, NotImplementedError, OSError) as e:
        # a model OpenVINO cannot compile runs on ONNX Runtime (not timed, not cached)
        return _chosen(ort_be, f"the CPU, onnxruntime installed (openvino cannot take this "
                               f"model: {_first_line(e)})")
    say = log or eprint
    say("auto: timing onnxruntime against openvino on this model (once for this machine)")
    x = np.random.default_rng(0).random(
        (ort_be.fixed_batch or 1, ort_be.channels, ort_be.height, ort_be.width)).astype(np.float32)
    first = max(time_call(lambda: ov_be.run(x), repeat=1, warmup=1),
                time_call(lambda: ort_be.run(x), repeat=1, warmup=0))
    rounds = int(min(11, max(3, RUNTIME_RACE_SECONDS / (2 * max(first, 1e-4)))))
    medians = race({"onnxruntime": lambda: ort_be.run(x), "openvino": lambda: ov_be.run(x)},
                   rounds, warmup=0)
    ms = {k: round(1000 * v, 2) for k, v in medians.items()}
    choice = "openvino" if ms["openvino"] < ms["onnxruntime"] * (1 - RUNTIME_MARGIN) \
        else "onnxruntime"
    choices[key] = {"choice": choice, "ms": ms, "rounds": rounds}
    while len(choices) > _CHOICE_ENTRIES:
        choices.pop(next(iter(choices)))
    try:
        atomic_write_bytes(choices_file, json.dumps(choices, indent=1).encode())
    except OSError:
        pass                 # a read-only cache: the race runs again next time
    return _chosen(ov_be if choice == "openvino" else ort_be,
                   _runtime_reason(choice, ms, cached=False))


def _runtime_reason(choice: str, ms: Dict[str, Any], cached: bool) -> str:
    other = "openvino" if choice == "onnxruntime" else "onnxruntime"
    how = "timed earlier on this machine" if cached else "timed now"
    return (f"the CPU, {choice} {ms.get(choice)} ms against {other} {ms.get(other)} ms per "
            f"batch-1 call ({how}; openvino needs a 5 % lead)")


def _onnx_backend(name: str, path: str, precision: str, threads: Optional[int]) -> Backend:
    if name == "openvino":
        return OpenVinoBackend(path, precision, threads)
    return OnnxRuntimeBackend(path, precision, threads)
