"""The machine a benchmark ran on: CPU, usable cores, load, library versions, thread settings."""
from __future__ import annotations

import os
import platform
from typing import Any, Dict

import numpy as np
import torch

from ..devices import cpu_model, usable_cpus
from ..imaging.resize_kernel import kernel_state
from ..infer.backends.fast import runtime_info


def machine_info() -> Dict[str, Any]:
    """CPU, core count, load, library versions and thread settings (for the report)."""


    info: Dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "resize": kernel_state(),
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    try:
        import cv2
        info["opencv"] = cv2.__version__
        info["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        info["opencv"] = None
    rt = runtime_info()
    for k in ("mkldnn", "cpu_capability", "nnpack_winograd", "cuda", "cuda_device", "cudnn"):
        if k in rt:
            info[k] = rt[k]
    return info
