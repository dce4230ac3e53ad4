"""Export for deployment: ONNX (standard ops) and TorchScript (:mod:`.exporter`)."""
from .exporter import *  # noqa: F401,F403
from .exporter import __all__  # noqa: F401
