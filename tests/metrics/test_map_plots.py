"""``detector map -plots DIR -coco``: the files, the confusion matrix and pycocotools' numbers.

One CLI run (yolov3-tiny, 32 coco128 train2017 images, ``coco_json=`` the coco128 instances) is
shared by the tests; its MapInputs are captured so the COCO-from-labels check needs no second
network run.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import re

import cv2
import numpy as np
import pytest
import torch

from conftest import refpath, require
from darknet_py.errors import DataError
from darknet_py.metrics import darknet_map
from darknet_py.structures.detections import DetectionSet

N_IMAGES = 32
INSTANCES = refpath("datasets", "coco128", "annotations", "instances_train2017.json")


def dets(boxes, probs) -> DetectionSet:
    b = torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    p = torch.tensor(np.asarray(probs, np.float32))
    return DetectionSet(b, torch.ones(b.shape[0]), p)


# ---------------------------------------------------------------------------------------------
# confusion matrix and curves on hand-made cases
# ---------------------------------------------------------------------------------------------

def test_confusion_matrix_cells_by_hand():
    a, b, far = (0.25, 0.25, 0.2, 0.2), (0.75, 0.75, 0.2, 0.2), (0.5, 0.5, 0.05, 0.05)
    truth = np.array([[0, *a], [1, *b], [1, *far]], np.float32)
    # row 0: class 0 on truth a (TP); row 1: class 0 on truth b of class 1 (confusion);
    # row 2: class 1 on a (its truth a is taken -> confusion impossible -> background);
    # row 3: a low-confidence class 1 on `far` (below thresh: the truth stays missed)
    d = dets([a, b, a, far], [[0.9, 0], [0.8, 0], [0, 0.7], [0, 0.1]])
    r = darknet_map([d], [truth], 2, ["x", "y"], thresh=0.25)
    bg = 2
    want = np.zeros((3, 3), int)
    want[0, 0] = 1          # x found
    want[1, 0] = 1          # y at b predicted as x
    want[bg, 1] = 1         # y predicted on x's (taken) box: background
    want[1, bg] = 1         # y at `far` missed
    assert (r.confusion == want).all()
    assert list(r.confusion[:2].sum(axis=1)) == list(r.truth_count_per_class)
    assert list(r.confusion[:, :2].sum(axis=0)) == list(r.tp_per_class + r.fp_per_class)
    # the ranked curves behind AP: class 1 has two entries (0.7 FP, 0.1 TP)
    c1 = r.curves[1]
    assert list(c1.confidence) == pytest.approx([0.7, 0.1])
    assert list(c1.tp) == [False, True]
    assert list(c1.precision) == [0.0, 0.5] and list(c1.recall) == [0.0, 0.5]


def test_plots_need_curves(tmp_path):
    from darknet_py.metrics.plots import write_map_plots
    r = darknet_map([dets([], np.zeros((0, 1)))], [None], 1)
    r.confusion = None
    with pytest.raises(DataError):
        write_map_plots(r, str(tmp_path))


def test_coco_ground_truth_from_labels_gives_ap_1():
    from darknet_py.metrics.coco_map import coco_map
    truth = np.array([[0, 0.3, 0.4, 0.2, 0.3], [1, 0.7, 0.6, 0.3, 0.2]], np.float32)
    d = dets(truth[:, 1:], [[0.9, 0], [0, 0.8]])
    d.image_size = (640, 480)
    run = coco_map(["/x/a.jpg"], [d], [truth], 2, ["p", "q"])
    assert run.stats["AP"] == pytest.approx(1.0) and run.stats["AP50"] == pytest.approx(1.0)
    ann = run.ground_truth["annotations"][0]
    assert ann["bbox"] == pytest.approx([128.0, 120.0, 128.0, 144.0], abs=1e-3)
    assert len(run.summary_lines().splitlines()) == 12


# ---------------------------------------------------------------------------------------------
# the command on coco128
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def map_run(tmp_path_factory):
    from click.testing import CliRunner
    from darknet_py.cli import main
    from darknet_py.commands import detector_map
    tmp = tmp_path_factory.mktemp("mapplots")
    images = sorted(require(refpath("datasets", "coco128", "images", "train2017"))
                    .glob("*.jpg"))[:N_IMAGES]
    lst = tmp / "valid.txt"
    lst.write_text("".join(f"{p}\n" for p in images))
    data = tmp / "obj.data"
    data.write_text(f"classes = 80\nnames = {require(refpath('cfg', 'darknet', 'coco.names'))}\n"
                    f"valid = {lst}\ncoco_json = {require(INSTANCES)}\n")
    captured = {}
    original = detector_map.collect_map_inputs

    def capture(*a, **k):
        captured["inputs"] = original(*a, **k)
        return captured["inputs"]
    cfg = require(refpath("cfg", "darknet", "yolov3-tiny.cfg"))
    weights = require(refpath("weights", "yolov3-tiny.weights"))
    detector_map.collect_map_inputs = capture
    try:
        res = CliRunner().invoke(main, ["detector", "map", str(data), str(cfg), str(weights),
                                        "-batch", "8", "-coco", "-plots", str(tmp / "plots")])
    finally:
        detector_map.collect_map_inputs = original
    assert res.exit_code == 0, res.output
    return {"stdout": res.stdout, "plots": tmp / "plots", "images": images,
            "inputs": captured["inputs"]}


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _label_counts(images, classes=80):
    counts = np.zeros(classes, int)
    for p in images:
        lp = str(p).replace("/images/", "/labels/").rsplit(".", 1)[0] + ".txt"
        try:
            rows = [l.split() for l in open(lp).read().splitlines() if l.strip()]
        except FileNotFoundError:
            continue
        for r in rows:
            counts[int(r[0])] += 1
    return counts


def test_darknet_text_comes_first_and_coco_after(map_run):
    out = map_run["stdout"]
    darknet, coco = out.split("your custom dataset\n", 1)
    assert " mean average precision (mAP@0.50) = " in darknet and "Average" not in darknet
    assert coco.startswith("\n COCO evaluation (pycocotools, ground truth: ")
    assert len(re.findall(r"(?m)^ Average (Precision|Recall) ", coco)) == 12


def test_plot_files_decode_and_tables_add_up(map_run):
    folder, out = map_run["plots"], map_run["stdout"]
    for name in ("pr_curve.png", "f1_curve.png", "confusion_matrix.png"):
        img = cv2.imread(str(folder / name))
        assert img is not None and img.shape[0] > 300 and img.shape[1] > 300, name
        assert img.std() > 10, f"{name} is blank"
    labels = _label_counts(map_run["images"])
    rows = _csv(folder / "confusion_matrix.csv")
    assert rows[0][-1] == "background" and len(rows) == 82 and len(rows[0]) == 82
    m = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert list(m[:80].sum(axis=1)) == list(labels)          # a truth row = labelled boxes
    printed = {int(c): (int(tp), int(fp)) for c, tp, fp in re.findall(
        r"class_id = (\d+), name = .*?, ap = [\d.]+%   \t \(TP = (\d+), FP = (\d+)\)", out)}
    assert len(printed) == 80
    assert list(m[:, :80].sum(axis=0)) == [tp + fp for tp, fp in
                                           (printed[c] for c in range(80))]
    assert [m[c, c] for c in range(80)] == [printed[c][0] for c in range(80)]
    per = _csv(folder / "per_class.csv")
    assert per[0][:6] == ["class_id", "name", "labelled_boxes", "tp", "fp", "fn"]
    for row in per[1:]:
        c = int(row[0])
        assert (int(row[2]), int(row[3]), int(row[4])) == (labels[c], *printed[c])
        assert int(row[5]) == labels[c] - printed[c][0]
    summary = json.loads((folder / "summary.json").read_text())
    mean = float(re.search(r"mean average precision \(mAP@0.50\) = ([\d.]+)", out).group(1))
    assert summary["map"] == pytest.approx(mean, abs=5e-7)
    tp, fp, fn = map(int, re.search(r"TP = (\d+), FP = (\d+), FN = (\d+), average", out).groups())
    assert (summary["tp"], summary["fp"], summary["fn"]) == (tp, fp, fn)
    assert summary["unique_truth_count"] == int(labels.sum())


def test_coco_numbers_equal_a_direct_pycocotools_run(map_run):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    folder = map_run["plots"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(INSTANCES))
        dt = gt.loadRes(str(folder / "coco_results.json"))
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = [int(p.stem) for p in map_run["images"]]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    summary = json.loads((folder / "summary.json").read_text())["coco"]
    assert list(summary.values()) == [float(v) for v in ev.stats]
    printed = [float(v) for v in re.findall(r"(?m)^ Average .* = ([-\d.]+)$", map_run["stdout"])]
    assert printed == [round(float(v), 3) for v in ev.stats]
    assert 0.05 < summary["AP50"] < 0.9


def test_coco_from_yolo_labels_agrees_with_the_instances_file(map_run):
    from darknet_py.metrics.coco_map import coco_map
    inp = map_run["inputs"]
    names = [str(i) for i in range(80)]
    from_labels = coco_map(inp.paths, inp.detections, inp.truths, 80, names)
    from_json = coco_map(inp.paths, inp.detections, inp.truths, 80, names, str(INSTANCES))
    assert from_labels.image_ids == from_json.image_ids
    # the labels hold the non-crowd boxes, rounded to 6 digits; crowd regions (ignored matches
    # in the json) are the only other difference
    for k in ("AP", "AP50", "AP75", "AR100"):
        assert from_labels.stats[k] == pytest.approx(from_json.stats[k], abs=0.02), k


def test_pr_and_f1_curves_word_the_class_count_alike(tmp_path, monkeypatch):
    """3 classes, one without labelled boxes: both curves say "3 classes, 2 with labelled boxes"
    (the PR curve said "mean of 2 classes" where the F1 curve said "all 3 classes")."""
    import matplotlib.figure
    from matplotlib.text import Text
    from darknet_py.metrics.plots import write_map_plots
    texts = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *a, **kw):
        texts[str(path).rsplit("/", 1)[-1]] = " | ".join(t.get_text() for t in fig.findobj(Text))
        return real_savefig(fig, path, *a, **kw)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    a, b = (0.25, 0.25, 0.2, 0.2), (0.75, 0.75, 0.2, 0.2)
    truth = np.array([[0, *a], [1, *b]], np.float32)
    r = darknet_map([dets([a, b], [[0.9, 0, 0], [0, 0.8, 0.3]])], [truth], 3, ["x", "y", "z"])
    write_map_plots(r, str(tmp_path))
    for name in ("pr_curve.png", "f1_curve.png"):
        assert "3 classes, 2 with labelled boxes" in texts[name], texts[name]
        assert "mean of 2" not in texts[name] and "all 3" not in texts[name]
