"""``-backend openvino``: a ``darknet-py export`` ONNX file compiled by OpenVINO for the CPU
(fp32, or bf16 where the CPU has it: ``INFERENCE_PRECISION_HINT``). Heads, input size and names
come from the file's metadata exactly as for :mod:`.onnxruntime`. ``-precision int8`` runs the
OpenVINO model (``.xml``) that :mod:`.int8` quantized from such a file, its metadata kept in the
model's run-time info.

Safe to call from several threads: an OpenVINO ``InferRequest`` runs one inference at a time
(a second ``infer`` on a busy request raises "Infer Request is busy", and its output tensors are
overwritten by the next run), so each call borrows an idle request from a pool (a new one when
all are busy: at most one per concurrent caller) and copies the outputs before returning it."""
from __future__ import annotations

import json
import os
import queue
from typing import Any, Dict, List, Optional

import numpy as np

from ...errors import DataError, UsageError
from ...export.exporter import METADATA_KEY
from .onnxruntime import OnnxFileBackend, metadata_from_props, read_onnx_metadata, require_module

__all__ = ["OpenVinoBackend", "read_report"]

#: the ov.Model run-time info key of a cached int8 model's report (its metadata is under the
#: export's key, :data:`~darknet_py.export.exporter.METADATA_KEY`)
REPORT_RT_KEY = "darknet_py_int8"


#: int8: the quantized layers run int8, the others (heads' sigmoid, concat) fp32, not bf16
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class OpenVinoBackend(OnnxFileBackend):
    name = "openvino"

    def __init__(self, path, precision: str = "fp32", threads: Optional[int] = None):
        ov = require_module("openvino", "openvino")
        self.path = os.fspath(path)
        if precision not in _HINTS:
            raise UsageError("-backend openvino runs fp32, bf16 or int8 on the CPU, not fp16")
        core = ov.Core()
        #: what calibrated an int8 model (:func:`.int8.report_summary`), else None
        self.calibration_report = None
        if self.path.lower().endswith(".xml"):
            model = self._read_int8_model(core, precision)
        else:
            if precision == "int8":
                raise UsageError("-precision int8 runs a model quantized by darknet-py "
                                 "(-precision int8 on the cfg or the .onnx export)")
            self._read_metadata(self.path, read_onnx_metadata(self.path))
            model = core.read_model(self.path)
        config = {"INFERENCE_PRECISION_HINT": _HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"OpenVINO cannot compile the file: {first}", file=self.path) from None
        self.precision = precision
        self.threads = threads
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        #: idle infer requests; grows to the number of threads that ever ran at once
        self._idle: "queue.SimpleQueue" = queue.SimpleQueue()
        self._idle.put(self.compiled.create_infer_request())

    def _read_int8_model(self, core, precision: str):
        """The int8 model of :mod:`.int8` and its metadata (a damaged file is a DataError, which
        makes the int8 cache build it again)."""
        if precision != "int8":
            raise UsageError("an OpenVINO .xml model of darknet-py is int8: run it with "
                             "-precision int8", value=self.path)
        try:
            model = core.read_model(self.path)
            raw = model.get_rt_info(METADATA_KEY).astype(str) \
                if model.has_rt_info(METADATA_KEY) else None
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"OpenVINO cannot read the file: {first}", file=self.path) from None
        props = {} if raw is None else {METADATA_KEY: raw}
        try:
            self._read_metadata(self.path, metadata_from_props(props, self.path))
        except (KeyError, ValueError, TypeError) as e:
            raise DataError(f"bad '{METADATA_KEY}' metadata: {e}", file=self.path) from None
        self.calibration_report = read_report(model)
        return model

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


def read_report(model: Any) -> Optional[Dict[str, Any]]:
    """The calibration report stored in an int8 ov.Model (None if there is none)."""
    if not model.has_rt_info(REPORT_RT_KEY):
        return None
    try:
        return json.loads(model.get_rt_info(REPORT_RT_KEY).astype(str))
    except (ValueError, RuntimeError):
        return None
