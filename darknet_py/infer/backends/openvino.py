"""``-backend openvino``: a ``darknet-py export`` ONNX file compiled by OpenVINO for the CPU
(fp32, or bf16 where the CPU has it: ``INFERENCE_PRECISION_HINT``). Heads, input size and names
come from the file's metadata exactly as for :mod:`.onnxruntime`.

Safe to call from several threads: an OpenVINO ``InferRequest`` runs one inference at a time
(a second ``infer`` on a busy request raises "Infer Request is busy", and its output tensors are
overwritten by the next run), so each call borrows an idle request from a pool (a new one when
all are busy: at most one per concurrent caller) and copies the outputs before returning it."""
from __future__ import annotations

import os
import queue
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
        #: idle infer requests; grows to the number of threads that ever ran at once
        self._idle: "queue.SimpleQueue" = queue.SimpleQueue()
        self._idle.put(self.compiled.create_infer_request())

    def _session_run(self, arr: np.ndarray) -> List[np.ndarray]:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            result = request.infer({0: arr})
            # copies: the request's output tensors are reused by its next inference
            return [np.array(result[out], copy=True) for out in self.compiled.outputs]
        finally:
            self._idle.put(request)

    def details(self) -> str:
        return f"{self.threads or 'default'} threads, {self.outputs_kind}"
