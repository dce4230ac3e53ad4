"""COCO results in Darknet's ``detector valid`` format, and the pycocotools bridge.

* the line format, ids and box arithmetic (hand-made values);
* pycocotools on coco128 train2017 ground truth turned into detections through the whole path
  (relative DetectionSet -> Darknet lines -> JSON -> COCOeval): AP 1.0; a known class subset gives
  AP = |subset| / |classes with truth|;
* (slow, needs the network) the yolov4-tiny file has the oracle ``coco_results.json``'s 33840
  entries in the same order, boxes within 0.01 px and scores within 1e-5.
"""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from conftest import refpath, require
from darknet_py.structures.detections import DetectionSet
from darknet_py.errors import DataError
from darknet_py.metrics.coco import (COCO_IDS, coco_evaluate, coco_image_id, coco_result_lines,
                                     format_coco_results, scale_to_pixels)

INSTANCES = refpath("datasets", "coco128", "annotations", "instances_train2017.json")


def test_coco_ids_table():
    assert len(COCO_IDS) == 80 and len(set(COCO_IDS)) == 80
    assert COCO_IDS[0] == 1 and COCO_IDS[11] == 13 and COCO_IDS[79] == 90


def test_image_id_is_atoi_of_basename():
    assert coco_image_id("/d/val2017/000000000139.jpg") == 139
    assert coco_image_id("C:\\x\\000000000042.png") == 42
    assert coco_image_id("12.tar.jpg") == 12
    # Darknet's validate_detector uses atoi(basecfg(path)): COCO 2014 names give 0
    assert coco_image_id("/d/COCO_val2014_000000000042.jpg") == 0


def test_lines_format_and_box_arithmetic():
    # image 100x50; box centre (0.5, 0.5), size (0.2, 0.4) -> x 40..60, y 15..35
    # second box sticks out at the left/top: clipped to 0
    d = DetectionSet(torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.05, 0.1, 0.2, 0.4]]),
                     torch.ones(2), torch.zeros(2, 80), image_size=(100, 50))
    d.probs[0, 0] = 0.75
    d.probs[0, 79] = 0.5
    d.probs[1, 11] = 0.125
    lines = coco_result_lines("/x/000000000007.jpg", d)
    assert lines == [
        '{"image_id":7, "category_id":1, "bbox":[40.000000, 15.000000, 20.000000, 20.000000], '
        '"score":0.750000}',
        '{"image_id":7, "category_id":90, "bbox":[40.000000, 15.000000, 20.000000, 20.000000], '
        '"score":0.500000}',
        '{"image_id":7, "category_id":13, "bbox":[0.000000, 0.000000, 15.000000, 15.000000], '
        '"score":0.125000}']
    text = format_coco_results(lines)
    assert text.startswith("[\n{") and text.endswith("}\n]\n") and text.count(",\n") == 2
    assert len(json.loads(text)) == 3
    assert format_coco_results([]) == "[\n]\n"
    # the same lines from boxes already in pixels (what detector valid runs NMS on)
    pixels = scale_to_pixels(d)
    assert pixels.boxes[0].tolist() == [50.0, 25.0, 20.0, 20.0]
    assert coco_result_lines("/x/000000000007.jpg", pixels, relative=False) == lines


def _gt_as_detection_sets(instances: dict, keep_categories=None):
    """One DetectionSet per image: every non-crowd truth as a relative box with prob 0.9 for its
    class (Darknet class index = position of the COCO id in COCO_IDS)."""
    per_image = defaultdict(list)
    for a in instances["annotations"]:
        if a["iscrowd"] or (keep_categories is not None and a["category_id"] not in keep_categories):
            continue
        per_image[a["image_id"]].append(a)
    out = []
    for im in instances["images"]:
        anns = per_image.get(im["id"], [])
        w, h = im["width"], im["height"]
        boxes = torch.zeros(len(anns), 4, dtype=torch.float64)
        probs = torch.zeros(len(anns), 80)
        for i, a in enumerate(anns):
            x, y, bw, bh = a["bbox"]
            boxes[i] = torch.tensor([(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h],
                                    dtype=torch.float64)
            probs[i, COCO_IDS.index(a["category_id"])] = 0.9
        out.append((im["file_name"], DetectionSet(boxes.float(), torch.ones(len(anns)), probs,
                                                  image_size=(w, h))))
    return out


@pytest.fixture(scope="module")
def instances():
    return json.loads(require(INSTANCES).read_text())


def _results(instances, keep_categories=None):
    lines = []
    for name, d in _gt_as_detection_sets(instances, keep_categories):
        lines += coco_result_lines(f"/data/images/train2017/{name}", d)
    return json.loads(format_coco_results(lines))


def test_ground_truth_as_detections_gives_ap_1(instances):
    results = _results(instances)
    assert len(results) == sum(1 for a in instances["annotations"] if not a["iscrowd"])
    stats = coco_evaluate(results, INSTANCES,
                          image_ids=[im["id"] for im in instances["images"]])
    assert stats["AP"] == pytest.approx(1.0, abs=1e-9)
    assert stats["AP50"] == pytest.approx(1.0, abs=1e-9)
    assert stats["AP75"] == pytest.approx(1.0, abs=1e-9)
    assert stats["AR100"] == pytest.approx(1.0, abs=1e-9)
    assert "Average Precision" in stats.summary


def test_subset_of_classes_gives_known_ap(instances, tmp_path):
    # categories with non-crowd truth: each gets AP 1 if detected, 0 if not -> mean = share
    with_truth = sorted({a["category_id"] for a in instances["annotations"] if not a["iscrowd"]})
    keep = set(with_truth[::3])
    path = tmp_path / "coco_results.json"
    path.write_text(format_coco_results(
        line for name, d in _gt_as_detection_sets(instances, keep)
        for line in coco_result_lines(f"/x/{name}", d)))
    stats = coco_evaluate(path, INSTANCES, image_ids=[im["id"] for im in instances["images"]])
    assert stats["AP"] == pytest.approx(len(keep) / len(with_truth), abs=1e-9)


def test_unknown_image_ids_are_a_data_error(tmp_path):
    bad = [{"image_id": 123456789, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]
    with pytest.raises(DataError):
        coco_evaluate(bad, require(INSTANCES))
    assert coco_evaluate([], require(INSTANCES)).stats.tolist() == [0.0] * 12


# ---------------------------------------------------------------------------------------------
# parity with Darknet's `detector valid` (eval=coco) through the network: slow
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_valid_coco_results_equal_oracle_file():
    try:
        from darknet_py.imaging.image import load_image, prepare_input
        from darknet_py.infer.nms import apply_nms, nms_params
        from darknet_py.model.decode import get_network_boxes
        from darknet_py.model.network import Network
    except ImportError:
        pytest.skip("network / postprocess not available")
    want = require(refpath("oracle", "map", "valid_coco", "coco_results.json")).read_text()
    net = Network.from_files(str(require(refpath("cfg", "darknet", "yolov4-tiny.cfg"))),
                             str(require(refpath("weights", "yolov4-tiny.weights"))),
                             batch=1).eval().fuse()
    kind, beta = nms_params(net.heads)
    lines = []
    for path in sorted(refpath("datasets", "coco128", "images", "val2017").glob("*.jpg")):
        im = load_image(path)
        size = (int(im.shape[2]), int(im.shape[1]))
        with torch.no_grad():
            heads = net(prepare_input(im, net.width, net.height)[None])
        # validate_detector: thresh 0.001, boxes in pixels (relative=0), then NMS 0.6 on them
        d = get_network_boxes(list(zip(net.heads, heads)), net.width, net.height, [size],
                              0.001, 0.5, False)[0]
        d = apply_nms(scale_to_pixels(d, *size), 0.6, kind, beta)
        lines += coco_result_lines(str(path), d, relative=False)
    text = format_coco_results(lines)
    assert text.startswith("[\n{") and text.endswith("}\n]\n")
    got, want = json.loads(text), json.loads(want)
    # Same entries in the same order (image, then Darknet's row order after NMS, then class);
    # the printed numbers differ only by the network's float rounding (%f shows 1e-7 relative).
    assert len(got) == len(want) == 33840
    assert [(g["image_id"], g["category_id"]) for g in got] == \
        [(w["image_id"], w["category_id"]) for w in want]
    box_diff = np.abs(np.array([g["bbox"] for g in got]) - np.array([w["bbox"] for w in want]))
    score_diff = np.abs(np.array([g["score"] for g in got]) - np.array([w["score"] for w in want]))
    assert box_diff.max() < 0.01       # pixels (measured 0.0016)
    assert score_diff.max() < 1e-5     # measured 4e-6 (printed with 6 decimals)
