"""One module per Darknet section type; importing this package registers them all."""
from importlib import import_module

LAYER_MODULES = [
    "convolutional", "route", "shortcut", "maxpool", "upsample", "yolo", "dropout",
]
for _name in LAYER_MODULES:
    import_module(f"{__name__}.{_name}")
