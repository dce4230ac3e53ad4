"""The real models the oracle was recorded with, built once per test session."""
import functools
import json
from pathlib import Path

import numpy as np
import torch

from conftest import REFDATA, require

MODELS = {
    "yolov4-tiny": ("cfg/darknet/yolov4-tiny.cfg", "weights/yolov4-tiny.weights"),
    "yolov3-tiny": ("cfg/darknet/yolov3-tiny.cfg", "weights/yolov3-tiny.weights"),
    "yolo-fastest-1.1": ("weights/yolo-fastest/yolo-fastest-1.1.cfg",
                         "weights/yolo-fastest/yolo-fastest-1.1.weights"),
    "yolo-fastest-1.1-xl": ("weights/yolo-fastest/yolo-fastest-1.1-xl.cfg",
                            "weights/yolo-fastest/yolo-fastest-1.1-xl.weights"),
}


def model_files(name):
    cfg, weights = MODELS[name]
    return require(REFDATA / cfg), require(REFDATA / weights)


@functools.lru_cache(maxsize=None)
def load_model(name, fused=True):
    """An eval-mode Network with the real weights (cached: build each model once)."""
    from darknet_py.network import Network
    cfg, weights = model_files(name)
    net = Network.from_cfg(cfg)
    net.load_weights(weights)
    net.eval()
    if fused:
        net.fuse()
    return net


def dump_dir(name: str) -> Path:
    return require(REFDATA / "oracle" / "dumps" / name)


def dump_input(folder: Path) -> torch.Tensor:
    """The exact (1,3,H,W) input Darknet was fed for a dump folder (follows de-duplication)."""
    meta = json.loads((folder / "meta.json").read_text())
    rel = meta.get("input_npy", "input.npy").split(" (")[0]
    return torch.from_numpy(np.load(folder / rel))[None]
