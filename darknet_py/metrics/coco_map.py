"""``detector map -coco``: pycocotools' COCO AP from the detections ``detector map`` ranked.

The detections (objectness 0.005, NMS 0.45, boxes relative to the original image) become COCO
results exactly as ``detector valid`` writes them (:func:`~darknet_py.metrics.coco.coco_result_lines`,
``%f`` text, read back as JSON), so pycocotools run on the written ``coco_results.json`` gives the
same numbers. (``detector valid``'s own file holds another detection set, Darknet's
``validate_detector`` one: threshold 0.001, NMS 0.6 on pixel boxes; on 32 coco128 train2017
images with yolov3-tiny it scores AP 0.223 / AP50 0.395 / AR100 0.380 against 0.212 / 0.389 /
0.308 here, the extra low-confidence boxes adding recall.) The ground truth is the data file's ``coco_json=`` (a COCO ``instances_*.json``;
images are found by Darknet's ``atoi(basename)`` id, classes by name, or by Darknet's 80-class
``coco_ids`` table) or, without it, built from the YOLO label files: one non-crowd box per label
line, in pixels of the image, area = w x h.

Every image of the valid list is evaluated (an image without detections lowers recall), as
pycocotools does for the whole ground truth file.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from ..imaging.image import read_image_size
from .coco import COCO_IDS, CocoStats, coco_image_id, coco_result_lines


@dataclass
class CocoMapRun:
    stats: CocoStats
    #: the results as written to coco_results.json (Darknet's ``print_cocos`` lines)
    result_lines: List[str]
    #: the ground truth (a COCO dict) and the evaluated image ids
    ground_truth: dict
    image_ids: List[int]

    def summary_lines(self) -> str:
        """pycocotools' own 12 ``Average Precision/Recall`` lines."""
        lines = [l for l in self.stats.summary.splitlines() if l.startswith(" Average ")]
        return "".join(l + "\n" for l in lines)


def _image_size(path: str, dets) -> Tuple[int, int]:
    size = getattr(dets, "image_size", None)
    if size is not None and int(size[0]) > 0 and int(size[1]) > 0:
        return int(size[0]), int(size[1])
    # the header, not a decode
    return read_image_size(path)


def _category_ids(classes: int, names: Sequence[str], gt: Optional[dict]) -> List[int]:
    if gt is not None:
        by_name = {c.get("name"): int(c["id"]) for c in gt.get("categories", [])}
        if all(n in by_name for n in names[:classes]):
            return [by_name[n] for n in names[:classes]]
    if classes == len(COCO_IDS):
        return list(COCO_IDS)
    if gt is None:
        return list(range(1, classes + 1))
    raise DataError(f"cannot map the {classes} class names to the categories of coco_json "
                    "(names differ and it is not Darknet's 80-class COCO table)")


def yolo_ground_truth(paths: Sequence[str], truths: Sequence[np.ndarray],
                      sizes: Sequence[Tuple[int, int]], image_ids: Sequence[int],
                      category_ids: Sequence[int], names: Sequence[str]) -> dict:
    """A COCO ``instances`` dict from YOLO label rows (class, cx, cy, w, h relative)."""
    images, anns = [], []
    for path, t, (w, h), iid in zip(paths, truths, sizes, image_ids):
        images.append({"id": int(iid), "file_name": os.path.basename(path), "width": w,
                       "height": h})
        t = np.asarray(t, np.float64).reshape(-1, 5)
        for cls, cx, cy, bw, bh in t:
            pw, ph = bw * w, bh * h
            anns.append({"id": len(anns) + 1, "image_id": int(iid),
                         "category_id": int(category_ids[int(cls)]),
                         "bbox": [cx * w - pw / 2, cy * h - ph / 2, pw, ph], "area": pw * ph,
                         "iscrowd": 0})
    cats = [{"id": int(cid), "name": str(n)} for cid, n in zip(category_ids, names)]
    return {"images": images, "annotations": anns, "categories": cats}


def evaluate_coco(gt: dict, results: List[dict], image_ids: Sequence[int]) -> CocoStats:
    """pycocotools' bbox COCOeval of ``results`` on ``gt`` over ``image_ids``."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DataError("-coco needs pycocotools: pip install pycocotools "
                        "(or pip install darknet-py[coco])") from e
    if not results:
        return CocoStats(np.zeros(12), "no detections")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        dt = coco_gt.loadRes(list(results))
        ev = COCOeval(coco_gt, dt, "bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return CocoStats(np.asarray(ev.stats, np.float64), buf.getvalue())


def coco_map(paths: Sequence[str], detections: Sequence, truths: Sequence[np.ndarray],
             classes: int, names: Sequence[str], coco_json: Optional[str] = None) -> CocoMapRun:
    """COCO AP of ``detector map``'s detections (see the module docstring)."""
    gt = None
    if coco_json is not None:
        try:
            with open(coco_json) as f:
                gt = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read coco_json: {e}", file=coco_json) from e
    cats = _category_ids(classes, names, gt)
    ids = [coco_image_id(p) for p in paths]
    if gt is not None:
        known = {int(im["id"]) for im in gt.get("images", [])}
        missing = [p for p, i in zip(paths, ids) if i not in known]
        if missing:
            raise DataError(f"{len(missing)} valid images have no image id in coco_json (ids are "
                            f"the leading digits of the file name, e.g. {missing[0]})",
                            file=coco_json)
    elif len(set(ids)) != len(ids):
        ids = list(range(1, len(paths) + 1))      # names without unique numbers: list order
    sizes = [_image_size(p, d) for p, d in zip(paths, detections)]
    if gt is None:
        gt = yolo_ground_truth(paths, truths, sizes, ids, cats, names)
    lines: List[str] = []
    results: List[dict] = []
    for p, d, (w, h), iid in zip(paths, detections, sizes, ids):
        img_lines = coco_result_lines(p, d, w, h, relative=True, category_ids=cats)
        for line in img_lines:
            r = json.loads(line)
            if r["image_id"] != iid:       # list-order ids: rewrite the line too
                r["image_id"] = iid
                line = line.replace(f'"image_id":{coco_image_id(p)},', f'"image_id":{iid},', 1)
            results.append(r)
            lines.append(line)
    return CocoMapRun(evaluate_coco(gt, results, ids), lines, gt, ids)
