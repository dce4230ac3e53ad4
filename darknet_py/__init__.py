"""darknet-py: AlexeyAB's Darknet in PyTorch: same cfgs, same .weights, same numbers."""
from .errors import CfgError, DarknetError, DataError, UsageError, WeightsError

__version__ = "0.1.0"

__all__ = ["DarknetError", "CfgError", "WeightsError", "DataError", "UsageError", "Network",
           "Detector", "__version__"]


def __getattr__(name):  # lazy: importing the package must not import torch-heavy modules
    if name == "Network":
        from .network import Network
        return Network
    if name == "Detector":
        from .detect import Detector
        return Detector
    raise AttributeError(name)
