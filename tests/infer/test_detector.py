"""End to end: Detector (cfg + weights + images) == `darknet detector test` (oracle/detect).

4 models x 8 images in default (stretch) mode, 2 models x 8 images with -letter_box. Each model is
loaded once for the module. Compared per image: every -out JSON object (class, confidence within
0.001, box within 0.5 px of the original image, same order) and the whole stdout block (apart from
the "Predicted in" time).
"""
import json
import re

import numpy as np
import pytest
import torch

from conftest import refpath, require

RUNS = ["yolov4-tiny__default", "yolov4-tiny__letter_box", "yolov3-tiny__default",
        "yolov3-tiny__letter_box", "yolo-fastest-1.1__default", "yolo-fastest-1.1-xl__default"]


def _shared(p):
    return str(require(refpath(p.replace("$SHARED/", ""))))


@pytest.fixture(scope="module")
def detectors():
    return {}


def _detector(cache, run):
    from darknet_py.infer.detector import Detector
    oracle = json.loads(require(refpath("oracle", "detect", run + ".json")).read_text())
    model = oracle["model"]
    if model not in cache:
        cache[model] = Detector(_shared(oracle["cfg"]), _shared(oracle["weights"]),
                                names=_shared("$SHARED/cfg/darknet/coco.names"), thresh=0.25)
    det = cache[model]
    det.letter_box = oracle["mode"] == "letter_box"
    return det, oracle


@pytest.mark.parametrize("run", RUNS)
def test_detector_equals_darknet_detector_test(detectors, run):
    det, oracle = _detector(detectors, run)
    assert oracle["thresh"] == 0.25 and oracle["nms"] == 0.45 and oracle["hier_thresh"] == 0.5
    images = oracle["images"]
    results = det.detect_sets([_shared(im["filename"]) for im in images])
    assert len(results) == len(images) == 8
    worst_prob = worst_px = 0.0
    for entry, (_, original, dets) in zip(images, results):
        W, H = dets.image_size
        assert (W, H) == (original.shape[2], original.shape[1])
        got = []
        for i in range(len(dets)):
            for c in torch.nonzero(dets.probs[i] > 0.005).flatten().tolist():
                got.append((c, float(dets.probs[i, c]), dets.boxes[i].tolist()))
        want = [(o["class_id"], o["confidence"],
                 [o["relative_coordinates"][k] for k in ("center_x", "center_y", "width", "height")])
                for o in entry["objects"]]
        assert [g[0] for g in got] == [w[0] for w in want], entry["filename"]
        for (_, gp, gb), (_, wp, wb) in zip(got, want):
            worst_prob = max(worst_prob, abs(gp - wp))
            worst_px = max(worst_px, float(np.abs((np.array(gb) - np.array(wb)) * [W, H, W, H]).max()))
        text = det.stdout(entry["filename"], dets, 0.0)
        assert text == re.sub(r"Predicted in [0-9.]+ milli", "Predicted in 0.000000 milli",
                              entry["stdout"]), entry["filename"]
    assert worst_prob <= 1e-3 and worst_px <= 0.5, (worst_prob, worst_px)


def test_detector_call_api(detectors):
    det, oracle = _detector(detectors, "yolov3-tiny__default")
    dog = _shared("$SHARED/images/dog.jpg")
    import cv2
    out = det([dog, cv2.imread(dog)])             # a path and an OpenCV BGR array
    assert len(out) == 2 and out[0].path.endswith("dog.jpg")
    first = [(d.name, d.box) for d in out[0].detections]
    assert first[0] == ("dog", (124, 220, 258, 298))   # the oracle README's check
    assert [(d.name, d.box) for d in out[1].detections] == first
    assert det(dog)[0].detections[0].confidence == pytest.approx(0.8092, abs=1e-3)
