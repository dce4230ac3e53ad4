"""COCO results in Darknet's ``detector valid`` format (``eval=coco``) and a pycocotools bridge.

:func:`coco_result_lines` / :func:`write_coco_results` produce the file that Darknet's
``validate_detector`` writes with ``print_cocos``: one JSON object per (detection, class with
prob > 0), in detection-row order then class order, with

* ``image_id``: ``atoi`` of the image's base name without extension (``000000000139.jpg`` ->
  139), as ``basecfg`` + ``atoi`` give it;
* ``category_id``: the COCO id of the class from Darknet's ``coco_ids`` table (80 classes);
* ``bbox``: absolute ``[x_min, y_min, width, height]`` in pixels of the original image, the box
  corners clipped to the image (``x_min >= 0``, ``x_max <= w``), float32 arithmetic and ``%f``;
* ``score``: the class probability with ``%f``.

The file is ``[\\n`` + the lines joined by ``,\\n`` + ``\\n]\\n``. (Darknet seeks back over the last
``,\\n``; with no detection at all that leaves ``\\n]\\n``, which is not JSON; we write ``[\\n]\\n``.)

:func:`coco_evaluate` runs pycocotools' ``COCOeval`` (bbox) on such a file and returns the 12
summary numbers (AP@[.5:.95], AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..structures.detections import scale_to_pixels  # noqa: F401  (re-exported)
from ..errors import DataError
from ..files import PathLike
from ..structures.boxes import xywh_to_xyxy

#: COCO category id of each of the 80 Darknet classes (coco.names order); Darknet's ``coco_ids``
COCO_IDS: Tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90)

STAT_NAMES: Tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

_ATOI_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?\d+)")


def darknet_basecfg(path: str) -> str:
    """Darknet's ``basecfg``: the part after the last ``/`` (then after the last ``\\``), cut at
    the first ``.``."""
    name = str(path).rsplit("/", 1)[-1]
    name = name.rsplit("\\", 1)[-1]
    return name.split(".", 1)[0]


def coco_image_id(image_path: str) -> int:
    """``atoi(basecfg(path))``: leading digits of the base name (0 when there are none)."""
    m = _ATOI_RE.match(darknet_basecfg(image_path))
    if not m:
        return 0
    return int(m.group(1))


def _as_numpy(x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def coco_result_lines(image_path: str, detections, image_width: Optional[int] = None,
                      image_height: Optional[int] = None, relative: bool = True,
                      category_ids: Sequence[int] = COCO_IDS) -> List[str]:
    """The lines ``print_cocos`` writes for one image (without the trailing ``,\\n``).

    ``detections`` is a :class:`~darknet_py.structures.detections.DetectionSet` after NMS, with boxes
    relative to the original image (``relative=True``; scaled to pixels here in float32 as
    ``correct_yolo_boxes`` does for ``relative=0``) or already in pixels (``relative=False``,
    e.g. from :func:`scale_to_pixels`, which is what ``detector valid`` runs NMS on). The image
    size defaults to ``detections.image_size``.
    """
    if image_width is None or image_height is None:
        image_width, image_height = (int(v) for v in detections.image_size)
    if image_width <= 0 or image_height <= 0:
        raise DataError(f"image size unknown for {image_path}: {image_width}x{image_height}")
    boxes = _as_numpy(detections.boxes, np.float32)
    probs = _as_numpy(detections.probs, np.float32)
    if probs.ndim != 2 or probs.shape[0] != boxes.shape[0]:
        raise DataError(f"{image_path}: probs {probs.shape} do not match boxes {boxes.shape}")
    if probs.shape[0] == 0:
        return []
    if probs.shape[1] > len(category_ids):
        raise DataError(f"{probs.shape[1]} classes but only {len(category_ids)} COCO category "
                        f"ids (Darknet's table covers the 80 COCO classes)")
    image_id = coco_image_id(image_path)
    w32, h32 = np.float32(image_width), np.float32(image_height)
    if relative:
        boxes = boxes * np.array([w32, h32, w32, h32], np.float32)
    # corners in double (C's `/ 2.`), stored as float
    xmin, ymin, xmax, ymax = xywh_to_xyxy(boxes.astype(np.float64)).astype(np.float32).T
    zero = np.float32(0)
    xmin = np.where(xmin < 0, zero, xmin)
    ymin = np.where(ymin < 0, zero, ymin)
    xmax = np.where(xmax > w32, w32, xmax)
    ymax = np.where(ymax > h32, h32, ymax)
    out_w = (xmax - xmin).astype(np.float32)
    out_h = (ymax - ymin).astype(np.float32)
    rows, cls = np.nonzero(probs > 0)
    ids = np.asarray(category_ids, np.int64)[cls]
    return ['{"image_id":%d, "category_id":%d, "bbox":[%f, %f, %f, %f], "score":%f}' % (
        image_id, cid, bx, by, bw_, bh_, score)
        for cid, bx, by, bw_, bh_, score in zip(
            ids.tolist(), xmin[rows].astype(np.float64).tolist(),
            ymin[rows].astype(np.float64).tolist(), out_w[rows].astype(np.float64).tolist(),
            out_h[rows].astype(np.float64).tolist(),
            probs[rows, cls].astype(np.float64).tolist())]


def format_coco_results(lines: Iterable[str]) -> str:
    """The whole results file: ``[\\n``, the lines joined by ``,\\n``, ``\\n]\\n``."""
    lines = list(lines)
    if not lines:
        return "[\n]\n"
    return "[\n" + ",\n".join(lines) + "\n]\n"


def write_coco_results(path: PathLike, lines: Iterable[str]) -> Path:
    """Write :func:`format_coco_results` to ``path`` (e.g. ``<results>/coco_results.json``)."""
    path = Path(path)
    try:
        path.write_text(format_coco_results(lines))
    except OSError as e:
        raise DataError(f"cannot write COCO results: {e.strerror}", file=str(path)) from e
    return path


@dataclass
class CocoStats:
    """pycocotools' 12 summary numbers (``COCOeval.stats``) with names."""

    stats: np.ndarray
    summary: str = ""

    def as_dict(self) -> Dict[str, float]:
        return {k: float(v) for k, v in zip(STAT_NAMES, self.stats)}

    def __getitem__(self, key: Union[int, str]) -> float:
        if isinstance(key, str):
            return float(self.stats[STAT_NAMES.index(key)])
        return float(self.stats[key])


def coco_evaluate(results: Union[PathLike, List[dict]], instances_json: PathLike,
                  image_ids: Optional[Sequence[int]] = None, verbose: bool = False) -> CocoStats:
    """Evaluate a COCO results file (or list) against a COCO ``instances_*.json`` (bbox).

    ``image_ids`` restricts the evaluation (default: the images that appear in the results, as
    one does for a subset like coco128; pass all ids of the split to penalise images without
    detections). pycocotools' printout is captured in ``summary`` (and echoed when
    ``verbose``). No detections at all gives all-zero stats.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DataError("COCO evaluation needs pycocotools: pip install pycocotools") from e

    if isinstance(results, (str, Path, os.PathLike)):
        try:
            results = json.loads(Path(results).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read COCO results: {e}", file=str(results)) from e
    if not os.path.exists(instances_json):
        raise DataError("COCO instances file not found", file=str(instances_json))
    if not results:
        return CocoStats(np.zeros(len(STAT_NAMES)), "no detections")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gt = COCO(str(instances_json))
        unknown = {r.get("image_id") for r in results} - set(gt.getImgIds())
        if unknown:
            raise DataError(f"{len(unknown)} result image ids are not in the instances file "
                            f"(e.g. {sorted(unknown, key=str)[0]})", file=str(instances_json))
        dt = gt.loadRes(list(results))
        ev = COCOeval(gt, dt, "bbox")
        ids = sorted({r["image_id"] for r in results}) if image_ids is None else list(image_ids)
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(buf.getvalue(), end="")
    return CocoStats(np.asarray(ev.stats, np.float64), buf.getvalue())
