"""Decoding head outputs (get_network_boxes) + NMS + Darknet's printouts, against the oracle.

The recorded Darknet ``l.output`` of every yolo layer (oracle/dumps/<model>__dog/layerNNN_yolo.npy)
is decoded with heads built from the model's cfg, then NMS'ed; the result must equal Darknet's own
detections.json, the `detector test` -out JSON and stdout for dog.jpg (oracle/detect).
"""
import json
import re

import numpy as np
import pytest
import torch

from conftest import refpath, require
from oracle_heads import build_heads
from darknet_py.structures.detections import DetectionSet
from darknet_py.infer.draw import (class_color, demo_detection_lines, detection_lines,
                                   draw_detections, get_color, image_stdout)
from darknet_py.infer.results import JsonOutWriter, detection_to_json, label_lines, to_detections
from darknet_py.infer.nms import apply_nms, nms_params
from darknet_py.model.decode import get_network_boxes, head_candidates
from darknet_py.layers.registry import head_class

DUMPS = {  # dump folder -> oracle/detect run with the same model and mode
    "yolov4-tiny__dog": "yolov4-tiny__default",
    "yolov3-tiny__dog": "yolov3-tiny__default",
    "yolo-fastest-1.1__dog": "yolo-fastest-1.1__default",
    "yolo-fastest-1.1-xl__dog": "yolo-fastest-1.1-xl__default",
    "yolov4-tiny__dog__letterbox": "yolov4-tiny__letter_box",
}


@pytest.fixture(scope="module")
def names():
    path = require(refpath("cfg", "darknet", "coco.names"))
    return [l.strip() for l in path.read_text().splitlines() if l.strip()]


def _run(dump, thresh=0.25):
    meta, heads = build_heads(dump)
    letter = meta["resize_mode"] == "letterbox"
    dets = get_network_boxes(heads, meta["net_w"], meta["net_h"], [(meta["orig_w"], meta["orig_h"])],
                             thresh, 0.5, letter)[0]
    kind, beta = nms_params([h for h, _ in heads])
    return meta, heads, dets, apply_nms(dets, 0.45, kind, beta)


def _live(dets):
    rows = [i for i in range(len(dets)) if bool((dets.probs[i] > 0).any())]
    return rows


@pytest.mark.parametrize("dump", list(DUMPS))
def test_decode_nms_equals_darknet_detections_json(dump):
    ref = json.loads(require(refpath("oracle", "dumps", dump, "detections.json")).read_text())
    meta, heads, raw, dets = _run(dump)
    assert len(raw) == ref["num_boxes_before_thresh_filter"]
    rows = _live(dets)
    assert len(rows) == len(ref["detections"])
    # same rows in the same order (Darknet's array order after NMS)
    worst_box = worst_prob = 0.0
    for i, r in zip(rows, ref["detections"]):
        worst_box = max(worst_box, float(np.abs(dets.boxes[i].numpy() - np.array(r["bbox_rel_xywh"])).max()))
        assert float(dets.objectness[i]) == pytest.approx(r["objectness"], abs=1e-6)
        got = {int(c): float(dets.probs[i, c]) for c in torch.nonzero(dets.probs[i]).flatten()}
        want = {c["id"]: c["prob"] for c in r["classes"]}
        assert got.keys() == want.keys()
        worst_prob = max([worst_prob] + [abs(got[k] - want[k]) for k in want])
    assert worst_box <= 1e-6 and worst_prob <= 1e-6, (worst_box, worst_prob)


def _oracle_dog(run):
    data = json.loads(require(refpath("oracle", "detect", run + ".json")).read_text())
    return [im for im in data["images"] if im["filename"].endswith("/dog.jpg")][0]


@pytest.mark.parametrize("dump", list(DUMPS))
def test_decode_nms_equals_detector_test_output(dump, names):
    entry = _oracle_dog(DUMPS[dump])
    meta, heads, raw, dets = _run(dump)
    W, H = meta["orig_w"], meta["orig_h"]
    got = []
    for i in _live(dets):
        for c in torch.nonzero(dets.probs[i]).flatten().tolist():
            got.append((c, float(dets.probs[i, c]), dets.boxes[i].tolist()))
    want = [(o["class_id"], o["confidence"],
             [o["relative_coordinates"][k] for k in ("center_x", "center_y", "width", "height")])
            for o in entry["objects"]]
    assert len(got) == len(want)
    for (gc, gp, gb), (wc, wp, wb) in zip(got, want):   # same order as Darknet's -out JSON
        assert gc == wc and abs(gp - wp) <= 1e-3
        scale = np.array([W, H, W, H])
        assert np.abs((np.array(gb) - np.array(wb)) * scale).max() <= 0.5
    # stdout block of that image, except the timing
    text = image_stdout(entry["filename"], heads, dets, names, 0.25, True, 0.0)
    want_text = re.sub(r"Predicted in [0-9.]+ milli", "Predicted in 0.000000 milli", entry["stdout"])
    assert text == want_text
    # -out JSON: byte-identical to Darknet's first entry
    raw_out = require(refpath("oracle", "detect", DUMPS[dump] + ".darknet_out.json")).read_text()
    assert raw_out.startswith("[\n" + detection_to_json(dets, names, 1, entry["filename"]) + ", \n")


def test_json_writer_framing(tmp_path, names):
    _, _, _, dets = _run("yolov4-tiny__dog")
    out = tmp_path / "result.json"
    with JsonOutWriter(out) as w:
        w.add(dets, names, "a.jpg")
        w.add(DetectionSet.empty(80, (10, 10)), names, "b.jpg")
    text = out.read_text()
    assert text.startswith('[\n{\n "frame_id":1, \n "filename":"a.jpg", \n "objects": [ \n  {"class_id":16, "name":"dog", ')
    assert text.endswith('}, \n{\n "frame_id":2, \n "filename":"b.jpg", \n "objects": [ \n\n ] \n}\n]')
    parsed = json.loads(text)
    assert [o["name"] for o in parsed[0]["objects"]] == ["dog", "truck", "car", "bicycle"]


def test_printout_without_ext_output_and_labels(names):
    _, _, _, dets = _run("yolov3-tiny__dog")
    assert detection_lines(dets, names, 0.25, ext_output=False) == \
        ["dog: 81%", "bicycle: 38%", "car: 71%", "truck: 41%", "truck: 62%", "car: 40%"]
    assert label_lines(dets, 0.25) == [
        "16 0.3297 0.6405 0.3365 0.5172", "7 0.7550 0.2224 0.1304 0.1163",
        "2 0.7508 0.2211 0.2891 0.1538", "1 0.5129 0.5564 0.4298 0.4321"]
    hidden = list(names)
    hidden[16] = "dont_show dog"
    assert all(not l.startswith("dog") for l in detection_lines(dets, hidden, 0.25))
    assert '"class_id":16' not in detection_to_json(dets, hidden, 1, "x")
    objs = to_detections("dog.jpg", dets, names, 0.25).detections
    assert [(d.name, d.box) for d in objs][:3] == [("dog", (124, 220, 258, 298)),
                                                    ("bicycle", (229, 196, 330, 249)),
                                                    ("car", (466, 83, 222, 89))]


def test_demo_printout_is_draw_detections_cv_v3():
    """``detector demo``'s lines: array order, all classes above thresh on one line (class
    order, not best first), corners truncated and clamped, box clamped to the frame."""
    names = ["person", "dont_show x", "car"]
    dets = DetectionSet(torch.tensor([[0.05, 0.5, 0.25, 0.25],     # left -48 px -> 0
                                      [0.9, 0.5, 1.5, 0.5],        # w > 1 -> 1; left 255.99 -> 255
                                      [0.5, 0.5, 0.1, 0.1],        # only a dont_show class
                                      [0.5, 0.5, 0.1, 0.1]]),      # below thresh
                        torch.ones(4), torch.tensor([[0.3, 0.0, 0.9], [0.0, 0.0, 0.5],
                                                     [0.0, 0.9, 0.0], [0.2, 0.0, 0.0]]),
                        None, (640, 360))
    assert demo_detection_lines(dets, names, 0.25) == [
        "person: 30% , car: 90% \t(left_x:    0   top_y:  135   width:  160   height:   90)",
        "car: 50% \t(left_x:  255   top_y:   90   width:  640   height:  180)"]
    assert demo_detection_lines(dets, names, 0.25, ext_output=False) == \
        ["person: 30% , car: 90% ", "car: 50% "]
    # detector test prints the same boxes otherwise: sorted by left, one line per class, rounded
    assert detection_lines(dets, names, 0.25)[0].startswith("car: 90%\t(left_x:  -48")


def test_get_color_and_drawing(names):
    # Darknet's palette: class 16 (dog) of 80
    offset = 16 * 123457 % 80
    assert offset == 32
    assert class_color(16, 80) == pytest.approx((get_color(2, 32, 80), get_color(1, 32, 80),
                                                 get_color(0, 32, 80)))
    assert get_color(0, 0, 80) == 1.0 and get_color(1, 0, 80) == 0.0
    _, _, _, dets = _run("yolov3-tiny__dog")
    img = torch.full((3, 576, 768), 0.5)
    out = draw_detections(img, dets, names, 0.25, labels=False)
    # dog box (124,220,258,298): left=int((x-w/2)*W) ... width 1 (576*0.002 = 1.15)
    x, y, w, h = dets.boxes[0].tolist()
    left, top = int((x - w / 2) * 768), int((y - h / 2) * 576)
    right, bot = int((x + w / 2) * 768), int((y + h / 2) * 576)
    r, g, b = class_color(16, 80)
    assert out[:, top, left].tolist() == pytest.approx([r, g, b])
    assert out[:, bot, right].tolist() == pytest.approx([r, g, b])
    assert out[:, top + 1, left + 1].tolist() == pytest.approx([0.5, 0.5, 0.5])
    labelled = draw_detections(img, dets, names, 0.25)
    assert not torch.equal(labelled, out) and torch.equal(img, torch.full((3, 576, 768), 0.5))


# ------------------------------------------------------------------ synthetic heads, hand values
def _head(kind, classes, anchors, w, h, mask=(0,), n=1, **kw):
    return head_class(kind).make_spec(index=kw.pop("index", 5), classes=classes, n=n, total=n,
                                      mask=tuple(mask), anchors=tuple(anchors), w=w, h=h, **kw)


def _yolo(w=2, h=2, **kw):
    return _head("yolo", 2, (16.0, 32.0), w, h, **kw)


def _output(entries, h=2, w=2, n=1):
    return torch.zeros(1, n * entries, h, w)


def test_yolo_decode_hand_values():
    layer = _yolo()
    out = _output(7)
    # cell (col 1, row 0): x .5, y .25, w log(2), h 0, obj .9, cls .5/.1
    out[0, :, 0, 1] = torch.tensor([0.5, 0.25, float(np.log(2.0)), 0.0, 0.9, 0.5, 0.1])
    out[0, 4, 1, 1] = 0.2                         # below thresh: not a candidate
    d = head_candidates(layer, out, 64, 32, (64, 32), 0.25)[0]
    assert len(d) == 1
    assert d.boxes[0].tolist() == pytest.approx([(1 + 0.5) / 2, 0.25 / 2, 2 * 16 / 64, 32 / 32])
    assert d.probs[0].tolist() == pytest.approx([0.45, 0.0])   # .9*.1 = .09 <= .25 -> 0
    # new_coords: w = 4*x^2*anchor
    layer2 = _yolo(new_coords=1)
    out[0, 2, 0, 1] = 0.5
    d2 = head_candidates(layer2, out, 64, 32, (64, 32), 0.25)[0]
    assert float(d2.boxes[0, 2]) == pytest.approx(4 * 0.25 * 16 / 64)


def test_correct_yolo_boxes_letterbox_hand_values():
    layer = _yolo(1, 1)
    out = _output(7, 1, 1)
    out[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.9, 0.9, 0.0])
    # image 200x100 into 100x100 letterbox: new 100x50, vertical offset 25/100
    d = head_candidates(layer, out, 100, 100, (200, 100), 0.25, letter_box=True)[0]
    x, y, w, h = d.boxes[0].tolist()
    assert x == pytest.approx(0.5) and y == pytest.approx((0.5 - 0.25) / 0.5)
    assert w == pytest.approx(16 / 100) and h == pytest.approx(32 / 100 / 0.5)
    d = head_candidates(layer, out, 100, 100, (200, 100), 0.25, letter_box=False)[0]
    assert d.boxes[0].tolist() == pytest.approx([0.5, 0.5, 0.16, 0.32])


def test_batched_decode_equals_single():
    meta, heads = build_heads("yolov4-tiny__dog")
    batch_heads = [(l, torch.cat([o, o.flip(-1)])) for l, o in heads]
    dets = get_network_boxes(batch_heads, 416, 416, [(768, 576), (640, 480)], 0.25)
    single = get_network_boxes(heads, 416, 416, (768, 576), 0.25)[0]
    assert torch.equal(dets[0].boxes, single.boxes) and torch.equal(dets[0].probs, single.probs)
    assert dets[1].image_size == (640, 480) and len(dets[1]) > 0


def test_region_decode_hand_values():
    layer = _head("region", 2, (2.0, 1.0), 2, 1)
    out = torch.zeros(1, 7, 1, 2)
    out[0, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.8, 0.75, 0.25])
    d = head_candidates(layer, out, 64, 32, (64, 32), 0.25)[0]
    assert len(d) == 2                                  # every cell is a candidate
    assert d.objectness.tolist() == [1.0, 1.0]
    # x = (0 + logistic(0))/2, w = exp(0)*2/2 (relative to the grid)
    assert d.boxes[0].tolist() == pytest.approx([0.25, 0.5, 1.0, 1.0])
    assert d.probs[0].tolist() == pytest.approx([0.6, 0.0])
    flat = out.reshape(1, 1, 7, 1, 2).permute(0, 3, 4, 1, 2).reshape(1, -1)  # Darknet CPU layout
    d2 = head_candidates(layer, flat, 64, 32, (64, 32), 0.25)[0]
    assert torch.equal(d2.boxes, d.boxes) and torch.equal(d2.probs, d.probs)


def test_gaussian_yolo_decode_hand_values():
    layer = _head("gaussian_yolo", 1, (10.0, 20.0), 1, 1, index=3)
    out = torch.zeros(1, 10, 1, 1)
    out[0, :, 0, 0] = torch.tensor([0.5, 0.2, 0.5, 0.2, 0.0, 0.2, 0.0, 0.2, 0.9, 0.5])
    d = head_candidates(layer, out, 40, 40, (40, 40), 0.25)[0]
    assert d.boxes[0].tolist() == pytest.approx([0.5, 0.5, 0.25, 0.5])
    assert d.uncertainty[0].tolist() == pytest.approx([0.2] * 4)
    assert float(d.probs[0, 0]) == pytest.approx(0.9 * 0.5 * 0.8)


@pytest.mark.parametrize("kind,new_coords", [("yolo", 0), ("yolo", 1), ("gaussian_yolo", 0)])
def test_objectness_first_decoding_equals_decoding_everything(kind, new_coords):
    """head_candidates decodes only rows above the threshold: the same sets as thresholding the
    full decode_head rows, image by image, for a batch."""
    from darknet_py.model.decode import _threshold, decode_head, head_candidates
    spec = head_class(kind).make_spec(
        index=5, classes=3, n=2, total=4, mask=(1, 3),
        anchors=(10.0, 14.0, 23.0, 27.0, 37.0, 58.0, 81.0, 82.0), w=5, h=4, new_coords=new_coords)
    g = torch.Generator().manual_seed(3)
    out = torch.rand((3, spec.n * spec.entries, spec.h, spec.w), generator=g)
    sizes = [(640, 480), (300, 500), (416, 416)]
    got = head_candidates(spec, out, 320, 256, sizes, 0.5, letter_box=True)
    full = decode_head(spec, out, 320, 256)
    assert sum(len(d) for d in got) > 0
    for b, dets in enumerate(got):
        want = _threshold(spec, full.rows[b], None if full.uncertainty is None
                          else full.uncertainty[b], sizes[b], 320, 256, 0.5, True)
        assert len(dets) == len(want) and dets.image_size == want.image_size
        assert torch.equal(dets.boxes, want.boxes) and torch.equal(dets.probs, want.probs)
        assert torch.equal(dets.objectness, want.objectness)
        if kind == "gaussian_yolo":
            assert torch.equal(dets.uncertainty, want.uncertainty)


@pytest.mark.parametrize("kind,new_coords", [("yolo", 0), ("yolo", 1), ("gaussian_yolo", 0)])
def test_heads_joined_equal_heads_one_by_one(kind, new_coords, monkeypatch):
    """get_network_boxes thresholds and corrects the candidates of all heads together: the same
    sets, bit for bit and in the same order, as doing it head by head and joining the results,
    for a batch whose images get candidates from some heads only (and one from none)."""
    from darknet_py.model import decode
    specs = [head_class(kind).make_spec(
        index=i, classes=3, n=2, total=6, mask=m,
        anchors=(10.0, 14.0, 23.0, 27.0, 37.0, 58.0, 81.0, 82.0, 135.0, 169.0, 344.0, 319.0),
        w=w, h=h, new_coords=new_coords) for i, (m, w, h) in
        enumerate([((4, 5), 5, 4), ((2, 3), 10, 8), ((0, 1), 20, 16)])]
    g = torch.Generator().manual_seed(5)
    outs = [torch.rand((4, s.n * s.entries, s.h, s.w), generator=g) for s in specs]
    obj = head_class(kind).obj_entry
    for k, o in enumerate(outs):
        o.view(4, 2, specs[k].entries, specs[k].h, specs[k].w)[:, :, obj] *= 0.6
        o.view(4, 2, specs[k].entries, specs[k].h, specs[k].w)[k, :, obj] = 0  # none from head k
        o.view(4, 2, specs[k].entries, specs[k].h, specs[k].w)[3, :, obj] = 0    # none at all
    sizes = [(640, 480), (300, 500), (416, 416), (1280, 720)]
    joined = get_network_boxes(list(zip(specs, outs)), 320, 256, sizes, 0.4, letter_box=True)
    monkeypatch.setattr(decode, "_joined_candidates", lambda *a: None)
    one_by_one = get_network_boxes(list(zip(specs, outs)), 320, 256, sizes, 0.4, letter_box=True)
    assert [len(d) for d in joined] == [len(d) for d in one_by_one]
    assert sum(len(d) for d in joined) > 20 and len(joined[3]) == 0
    for a, b in zip(joined, one_by_one):
        assert a.image_size == b.image_size
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.probs, b.probs)
        assert torch.equal(a.objectness, b.objectness)
        assert (a.uncertainty is None) == (b.uncertainty is None)
        if a.uncertainty is not None:
            assert torch.equal(a.uncertainty, b.uncertainty)
