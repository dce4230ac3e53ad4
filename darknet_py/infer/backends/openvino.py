"""``-backend openvino``: a ``darknet-py export`` ONNX file compiled by OpenVINO for the CPU
(fp32, or bf16 where the CPU has it: ``INFERENCE_PRECISION_HINT``). Heads, input size and names
come from the file's metadata exactly as for :mod:`.onnxruntime`."""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from ...errors import DataError, UsageError
from .onnxruntime import OnnxFileBackend, read_onnx_metadata, require_module

__all__ = ["OpenVinoBackend"]

_HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoBackend(OnnxFileBackend):
    name = "openvino"

    def __init__(self, path, precision: str = "fp32", threads: Optional[int] = None):
        ov = require_module("openvino", "openvino")
        self.path = os.fspath(path)
        if precision not in _HINTS:
            raise UsageError("-backend openvino runs fp32 or bf16 on the CPU, not fp16")
        self._read_metadata(self.path, read_onnx_metadata(self.path))
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": _HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(core.read_model(self.path), "CPU", config)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"OpenVINO cannot compile the file: {first}", file=self.path) from None
        self.precision = precision
        self.threads = threads
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()

    def _session_run(self, arr: np.ndarray) -> List[np.ndarray]:
        result = self.request.infer({0: arr})
        return [np.asarray(result[out]) for out in self.compiled.outputs]

    def details(self) -> str:
        return f"{self.threads or 'default'} threads, {self.outputs_kind}"
