"""``darknet-py detector show_batch obj.data yolo.cfg [-n 16] [-out_dir DIR] [-seed N]``

Writes augmented training samples with their truth boxes drawn, as Darknet's ``detector train
... -show_imgs`` saves ``aug_*.jpg`` (``load_data_detection``), without training and headless.
The augmentation options come from the cfg's ``[net]`` and last detection layer; images and
labels from ``train=`` of the data file.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import click
import cv2
import numpy as np

from ..data.augment import AugmentConfig
from ..data.datacfg import read_data_cfg, read_list, read_names
from ..data.dataset import DetectionDataset
from ..errors import DataError, UsageError
from ..infer.draw import class_color
from ..structures.boxes import xywh_to_xyxy

GROUP = "detector"

def draw_truth(image_chw: np.ndarray, truth: np.ndarray, names: Optional[List[str]] = None,
               thickness: Optional[int] = None) -> np.ndarray:
    """uint8 BGR picture of a (C,h,w) float image with its (max_boxes,5) truth boxes drawn.

    Darknet's -show_imgs draws 1-pixel boxes in one brown and tiny labels, unreadable on a
    416x416 photo: here each class has Darknet's class colour (as in predictions.jpg), boxes are
    ``thickness`` pixels (default: 2 up to 600 px, more for larger images) and each label is
    white or black text on a filled box of that colour, above the box when there is room."""
    img = (np.clip(image_chw, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    h, w = bgr.shape[:2]
    if thickness is None:
        thickness = max(2, round(min(h, w) / 300))
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.45, min(h, w) / 900)
    classes = max(len(names) if names else 0, int(truth[:, 4].max()) + 1 if truth.size else 1)
    n = int(np.argmax(truth[:, 0] == 0)) if (truth[:, 0] == 0).any() else truth.shape[0]
    corners = xywh_to_xyxy(truth[:n, :4]) * np.array([w, h, w, h], np.float32)
    for (left, top, right, bot), cls in zip(corners.astype(int).tolist(), truth[:n, 4]):
        rgb = class_color(int(cls), classes)
        color = tuple(int(round(255 * v)) for v in rgb[::-1])
        cv2.rectangle(bgr, (left, top), (right, bot), color, thickness)
        label = names[int(cls)] if names and 0 <= int(cls) < len(names) else str(int(cls))
        (tw, th), base = cv2.getTextSize(label, font, scale, 1)
        pad = 3
        lh = th + base + 2 * pad
        x0 = min(max(left, 0), max(w - tw - 2 * pad, 0))
        y0 = top - lh if top - lh >= 0 else max(top, 0)      # above the box, else inside it
        cv2.rectangle(bgr, (x0, y0), (x0 + tw + 2 * pad, y0 + lh), color, cv2.FILLED)
        # dark text on light colours, white on dark ones (luma of the fill)
        ink = (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.55 else \
            (255, 255, 255)
        cv2.putText(bgr, label, (x0 + pad, y0 + pad + th), font, scale, ink, 1, cv2.LINE_AA)
    return bgr


def show_batch(datacfg: str, cfgfile: str, n: int = 16, out_dir: str = ".",
               seed: Optional[int] = None) -> List[str]:
    """Write ``n`` augmented samples to ``out_dir``; returns the written paths."""
    if n < 1:
        raise UsageError(f"-n must be >= 1, got {n}")
    data = read_data_cfg(datacfg)
    paths = read_list(data.train_or_default("data/train.txt"))
    cfg = AugmentConfig.from_cfg(cfgfile)
    names = None
    names_file = data.names_or_default()
    if os.path.exists(names_file):
        names = read_names(names_file)
    ds = DetectionDataset(paths, cfg, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    written = []
    for k in range(n):
        index = int(order[k % len(order)])
        image, truth = ds[index]
        out = os.path.join(out_dir, f"aug_{k:04d}.jpg")
        if not cv2.imwrite(out, draw_truth(image.numpy(), truth.numpy(), names)):
            raise DataError("cannot write image", file=out)
        nbox = int((truth[:, 0] > 0).sum())
        print(f"{out}: {paths[index]} ({nbox} boxes)")
        written.append(out)
    return written


@click.command("show_batch", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("datacfg", type=click.Path(dir_okay=False))
@click.argument("cfgfile", type=click.Path(dir_okay=False))
@click.option("-n", "n", type=int, default=16, show_default=True, help="Samples to write.")
@click.option("-out_dir", "out_dir", default=".", show_default=True, help="Output folder.")
@click.option("-seed", "seed", type=int, default=None, help="Random seed (reproducible output).")
def COMMAND(datacfg: str, cfgfile: str, n: int, out_dir: str, seed: Optional[int]) -> None:
    """Write augmented training samples with their boxes (Darknet's -show_imgs, headless)."""
    show_batch(datacfg, cfgfile, n=n, out_dir=out_dir, seed=seed)
    sys.stdout.flush()
