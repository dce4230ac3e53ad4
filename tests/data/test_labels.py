"""YOLO label reading and Darknet's "Wrong annotation" checks."""
from __future__ import annotations

import logging

import numpy as np

from conftest import refpath, require

from darknet_py.data import labels as labels_mod
from darknet_py.data.datacfg import read_list
from darknet_py.data.labels import read_labels, report_once
from darknet_py.data.paths import label_path


def _write(tmp_path, text, name="a.txt"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_clean_file(tmp_path):
    p = _write(tmp_path, "0 0.5 0.5 0.2 0.3\n2 0.25 0.75 0.1 0.1\n")
    lf = read_labels(p, classes=3)
    assert lf.boxes.dtype == np.float32 and lf.boxes.shape == (2, 5)
    np.testing.assert_allclose(lf.boxes, [[0, .5, .5, .2, .3], [2, .25, .75, .1, .1]])
    assert lf.warnings == [] and not lf.missing and lf.rows_read == 2


def test_empty_and_missing(tmp_path):
    lf = read_labels(_write(tmp_path, ""), classes=3)
    assert lf.boxes.shape == (0, 5) and lf.warnings == [] and not lf.missing
    lf = read_labels(_write(tmp_path, "\n\n  \n", "b.txt"), classes=3)
    assert lf.boxes.shape == (0, 5) and lf.warnings == []
    lf = read_labels(str(tmp_path / "none.txt"), classes=3)
    assert lf.missing and lf.boxes.shape == (0, 5)
    assert len(lf.warnings) == 1 and "Can't open label file" in lf.warnings[0]


def test_wrong_annotations_dropped_or_flagged(tmp_path):
    text = "\n".join([
        "0 0.5 0.5 0.2 0.2",        # 1 ok
        "3 0.5 0.5 0.2 0.2",        # 2 class out of range -> dropped
        "-1 0.5 0.5 0.2 0.2",       # 3 negative class -> dropped
        "1 nan 0.5 0.2 0.2",        # 4 NaN -> dropped
        "1 0.5 inf 0.2 0.2",        # 5 inf -> dropped
        "1 0.5 0.5 0 0.2",          # 6 w <= 0 -> dropped
        "1 0.5 0.5 0.2 -0.1",       # 7 h <= 0 -> dropped
        "1 0 0 0.2 0.2",            # 8 x = y = 0 -> dropped (Darknet: Wrong annotation x=0,y=0)
        "1 1.5 0.5 0.2 0.2",        # 9 entirely outside -> dropped
        "1 0.95 0.5 0.3 0.2",       # 10 sticks out -> kept, warned
        "2 0.5 0.5 1.2 0.5",        # 11 w > 1 -> kept, warned
        "1 0.5 0.5 0.2",            # 12 too few fields -> skipped
        "1 0.5 zero 0.2 0.2",       # 13 not a number -> skipped
        "1.5 0.5 0.5 0.2 0.2",      # 14 class not integer -> skipped
        "2 0.4 0.4 0.1 0.1 0.99",   # 15 extra column -> kept, warned
        "1.0 0.3 0.3 0.1 0.1",      # 16 integral float class -> kept (atoi-like)
        "2 0.999 0.5 0.004 0.2",    # 17 edge out by < 1% -> kept silently
    ]) + "\n"
    lf = read_labels(_write(tmp_path, text), classes=3)
    kept_lines = [1, 10, 11, 15, 16, 17]
    assert lf.boxes.shape == (len(kept_lines), 5)
    np.testing.assert_allclose(lf.boxes[:, 0], [0, 1, 2, 2, 1, 2])
    warned = sorted({int(w.split(":")[1]) for w in lf.warnings})
    assert warned == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    for w in lf.warnings:
        assert w.startswith(str(tmp_path / "a.txt") + ":")
    joined = "\n".join(lf.warnings)
    assert "class_id = 3 should be [from 0 to 2]" in joined
    assert "NaN or inf" in joined and "x = 0, y = 0" in joined
    assert "clipped to the image" in joined


def test_class_check_needs_classes(tmp_path):
    p = _write(tmp_path, "7 0.5 0.5 0.2 0.2\n")
    assert read_labels(p).num_boxes == 1                 # no class count known: kept
    assert read_labels(p, classes=5).num_boxes == 0


def test_report_once(tmp_path, caplog):
    p = _write(tmp_path, "9 0.5 0.5 0.2 0.2\n")
    lf = read_labels(p, classes=2)
    labels_mod._reported.discard(p)
    with caplog.at_level(logging.WARNING, logger="darknet_py.data"):
        report_once(lf)
        report_once(read_labels(p, classes=2))
    assert sum("class_id = 9" in r.getMessage() for r in caplog.records) == 1


def test_coco128_layout_all_valid():
    imgs = sorted(require(refpath("datasets", "coco128", "images", "train2017")).glob("*.jpg"))
    total, missing, warnings = 0, 0, []
    for img in imgs:
        lf = read_labels(label_path(str(img)), classes=80)
        total += lf.num_boxes
        missing += lf.missing
        if not lf.missing:
            warnings += lf.warnings
    assert missing == 2 and warnings == []
    assert total == 929     # Darknet's calc_anchors on the same list: "box: 929"


def test_facemask_layout():
    from test_anchors import facemask_list
    lst = facemask_list()
    paths = read_list(lst)
    assert len(paths) == 597
    counts = np.zeros(3, np.int64)
    for p in paths:
        lp = label_path(p)
        assert "/facemask_yolo/labels/" in lp
        lf = read_labels(lp, classes=3)
        assert not lf.missing and lf.warnings == []
        counts += np.bincount(lf.boxes[:, 0].astype(np.int64), minlength=3)
    assert counts.tolist() == [94, 2248, 489]    # oracle counters_per_class.txt
