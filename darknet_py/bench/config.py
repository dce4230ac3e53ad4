"""What ``darknet-py bench`` measures: the runner keys, the options, the detection thresholds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from ..errors import UsageError

#: runner keys, in the order they are reported
CPU_VARIANTS = ("auto", "exact", "fast", "fast-bf16", "fast-compile", "onnxruntime", "openvino",
                "openvino-bf16", "openvino-int8", "opencv", "darknet")
CUDA_VARIANTS = ("cuda-fp32", "cuda-fp16", "cuda-bf16", "opencv-cuda", "opencv-cuda-fp16")
DEFAULT_VARIANTS = ("auto", "exact", "fast", "fast-bf16", "onnxruntime", "openvino",
                    "openvino-bf16", "openvino-int8", "opencv", "darknet", "cuda-fp32", "cuda-fp16", "cuda-bf16",
                    "opencv-cuda", "opencv-cuda-fp16")
#: runners other figures are compared with
PEERS = ("opencv", "onnxruntime", "openvino-bf16", "opencv-cuda", "opencv-cuda-fp16", "darknet")
#: ``make_backend`` runners: key -> (backend, precision, label)
RUNTIME_VARIANTS = {
    "auto": ("auto", "fp32", "darknet-py default (-backend auto)"),
    "onnxruntime": ("onnxruntime", "fp32", "ONNX Runtime (our export, cpu fp32)"),
    "openvino": ("openvino", "fp32", "OpenVINO (our export, cpu fp32)"),
    "openvino-bf16": ("openvino", "bf16", "OpenVINO (our export, cpu bf16)"),
    "openvino-int8": ("openvino", "int8", "OpenVINO int8 (NNCF on --calib images)"),
}

#: the end-to-end figures detect as ``detector test`` does by default
THRESH = 0.25
NMS_THRESH = 0.45


@dataclass
class BenchConfig:
    """What to benchmark (the ``darknet-py bench`` options)."""

    cfg: str
    weights: str
    width: Optional[int] = None
    height: Optional[int] = None
    batch: int = 1
    runs: int = 20
    warmup: int = 3
    threads: Optional[int] = None
    image: Optional[str] = None
    variants: Sequence[str] = DEFAULT_VARIANTS
    end_to_end: bool = True
    darknet_binary: Optional[str] = None  # default: ``darknet`` on PATH
    #: the openvino-int8 runner's calibration images: a list file or paths (None: not run)
    calibration: Any = None


def parse_variants(text: Optional[str]) -> Tuple[str, ...]:
    """``"exact,fast,opencv"`` -> the runner keys (validated)."""
    if not text:
        return DEFAULT_VARIANTS
    keys = tuple(t.strip() for t in text.split(",") if t.strip())
    known = set(CPU_VARIANTS) | set(CUDA_VARIANTS)
    bad = [k for k in keys if k not in known]
    if bad:
        raise UsageError(f"unknown benchmark variant(s) {', '.join(bad)}; choose from "
                         f"{', '.join(CPU_VARIANTS + CUDA_VARIANTS)}")
    return keys
