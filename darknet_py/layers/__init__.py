"""One module per Darknet section type; importing this package registers them all."""
from importlib import import_module

LAYER_MODULES = [
    "convolutional", "route", "shortcut", "maxpool", "upsample", "yolo", "dropout",
    "region", "gaussian_yolo", "reorg", "reorg3d", "sam", "scale_channels", "avgpool", "crnn",
    "contrastive", "connected", "softmax", "cost", "crop", "empty", "implicit",
    "activation_layer", "batchnorm_layer",
]
for _name in LAYER_MODULES:
    import_module(f"{__name__}.{_name}")
