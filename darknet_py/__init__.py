"""darknet-py: AlexeyAB's Darknet in PyTorch: same cfgs, same .weights, same numbers."""
import os as _os

# OpenMP threads that spin while idle steal the CPU from the data loader and from each other on
# small machines (measured: 5x slower inference under load, docs/benchmarks.md). Passive waiting
# is the default here unless the user set the variable; it must be set before torch is imported.
#: the user's own OMP_WAIT_POLICY (None when unset): ONNX Runtime's thread race honours it
USER_WAIT_POLICY = _os.environ.get("OMP_WAIT_POLICY")
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .errors import CfgError, DarknetError, DataError, UsageError, WeightsError

__version__ = "0.1.0"

__all__ = ["DarknetError", "CfgError", "WeightsError", "DataError", "UsageError", "Network",
           "Detector", "__version__"]


def __getattr__(name):  # lazy: importing the package must not import torch-heavy modules
    if name == "Network":
        from .model.network import Network
        return Network
    if name == "Detector":
        from .infer.detector import Detector
        return Detector
    raise AttributeError(name)
