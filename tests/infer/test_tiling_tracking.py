"""Tiled inference, ByteTrack tracking and frame streams (issue 16), on real images.

(a) a 2000x1500 canvas of six real images: tiled detection finds what detection on each image
alone finds (same class, IoU >= 0.5 after mapping) and untiled detection misses most of it;
(b) a video panning across a real image: every object keeps one track id in all frames;
(c) ``Detector.stream`` gives what ``detect_frames`` gives frame by frame (the demo's rule for
video frames; an image path in an iterator is a still image).
One yolo-fastest-1.1 Detector (embedded model) serves the whole module.
"""
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import REFDATA, REPO, require

CFG = REPO / "cfg" / "yolo-fastest-1.1.cfg"
WEIGHTS = REPO / "weights" / "yolo-fastest-1.1.weights"
CANVAS_IMAGES = ["dog", "horses", "person", "giraffe", "eagle", "bus"]
CANVAS = (2000, 1500)
CANVAS_TILES = (5, 4)
# the six images sit in these (column, row) tiles of the 5x4 grid, which do not overlap
SLOTS = [(0, 0), (2, 0), (4, 0), (0, 2), (2, 2), (4, 2)]


@pytest.fixture(scope="module")
def det():
    from darknet_py.infer.detector import Detector
    return Detector(CFG, WEIGHTS, names=REPO / "cfg" / "coco.names", backend="fast",
                    batch_size=4)


def _image(name):
    return cv2.imread(str(require(REFDATA / "images" / f"{name}.jpg")))


def _iou(a, b):
    """IoU of two (left, top, width, height) pixel boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


# ------------------------------------------------------------------------------ grid and mapping
def test_tile_grid_covers_uneven_images_and_never_shrinks_below_the_network():
    from darknet_py.infer.tiling import tile_grid
    tiles = tile_grid(1001, 517, 3, 2, 0.2, 320, 320)
    assert len(tiles) == 6
    xs = sorted({(t[0], t[2]) for t in tiles})
    ys = sorted({(t[1], t[3]) for t in tiles})
    assert xs[0][0] == 0 and xs[-1][1] == 1001 and ys[0][0] == 0 and ys[-1][1] == 517
    w = {x1 - x0 for x0, x1 in xs}
    assert w == {385}                                   # 1001 / (3 - 2 * 0.2)
    assert {y1 - y0 for y0, y1 in ys} == {320}          # 517/1.8 = 288 < 320: raised to 320
    for (a0, a1), (b0, b1) in zip(xs, xs[1:]):          # neighbours overlap, nothing uncovered
        assert b0 < a1
    # a grid too fine for a small image: tiles grow to the network size, duplicates dropped
    small = tile_grid(400, 300, 4, 4, 0.2, 320, 320)
    assert all(t[2] - t[0] == 320 and t[3] - t[1] == 300 for t in small)
    assert len(small) == len(set(small)) == 4           # 4 distinct columns, one row
    # an image smaller than the network is one tile, the whole image
    assert tile_grid(200, 100, 3, 3, 0.2, 320, 320) == [(0, 0, 200, 100)]


def test_map_tile_boxes_to_image_coordinates():
    from darknet_py.infer.tiling import map_tile_boxes
    from darknet_py.structures.detections import DetectionSet
    d = DetectionSet(torch.tensor([[0.5, 0.5, 0.5, 0.25]]), torch.ones(1), torch.ones(1, 1),
                     None, (200, 100))
    m = map_tile_boxes(d, (300, 50, 500, 150), (1000, 400))
    # centre (400, 100) px, size 100 x 25 px in a 1000 x 400 image
    assert torch.allclose(m.boxes, torch.tensor([[0.4, 0.25, 0.1, 0.0625]]))
    assert m.image_size == (1000, 400)


@pytest.mark.parametrize("text", ["0x3", "3", "ax2", "3x-1"])
def test_bad_tiles_are_one_line_errors(text):
    from darknet_py.errors import UsageError
    from darknet_py.infer.tiling import parse_tiles
    with pytest.raises(UsageError) as e:
        parse_tiles(text)
    assert f"-tiles {text}" in str(e.value) and "\n" not in str(e.value)


def test_one_tile_is_untiled_detection_and_the_full_pass_merges_away(det):
    from darknet_py.infer.detector import Detector
    im = _image("dog")
    plain = det.detect_sets([im])[0][2]
    one = Detector(CFG, backend=det.backend, names=det.names, tiles=(1, 1))
    both = Detector(CFG, backend=det.backend, names=det.names, tiles=(1, 1), tiles_full=True)
    tiled = one.detect_sets([im])[0][2]
    assert torch.equal(tiled.boxes, plain.boxes) and torch.equal(tiled.probs, plain.probs)
    # whole-image tile + full pass: every candidate twice; NMS merges each pair back into one
    want = [(d.class_id, d.box) for d in det(im)[0]]
    assert [(d.class_id, d.box) for d in both(im)[0]] == want
    with pytest.raises(Exception, match="tiled detection needs the original images"):
        one.detect_batch(torch.zeros(1, 3, 320, 320), [(320, 320)])


# ------------------------------------------------------------------------------ (a) the canvas
def test_tiled_detection_finds_the_objects_of_each_pasted_image(det):
    from darknet_py.infer.detector import Detector
    from darknet_py.infer.tiling import tile_grid
    W, H = CANVAS
    grid = tile_grid(W, H, *CANVAS_TILES, 0.2, *det.input_size)
    canvas = np.full((H, W, 3), 114, np.uint8)
    reference = []        # (class, pixel box on the canvas) of each image detected alone
    for name, (c, r) in zip(CANVAS_IMAGES, SLOTS):
        im = _image(name)
        s = 400 / max(im.shape[:2])
        im = cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)),
                        interpolation=cv2.INTER_AREA)
        x0, y0, x1, y1 = grid[r * CANVAS_TILES[0] + c]
        left, top = (x0 + x1 - im.shape[1]) // 2, (y0 + y1 - im.shape[0]) // 2
        canvas[top:top + im.shape[0], left:left + im.shape[1]] = im
        reference += [(d.class_id, (d.left + left, d.top + top, d.width, d.height))
                      for d in det(im)[0] if d.confidence >= 0.5]
    tiler = Detector(CFG, backend=det.backend, names=det.names, tiles=CANVAS_TILES,
                     batch_size=4)
    tiled = tiler(canvas)[0]
    untiled = det(canvas)[0]

    def found(result):
        return sum(any(d.class_id == cls and _iou(box, d.box) >= 0.5 for d in result)
                   for cls, box in reference)

    n, t, u = len(reference), found(tiled), found(untiled)
    print(f"reference {n}, tiled {t}, untiled {u}", file=sys.stderr)
    assert n >= 12
    assert t >= 0.8 * n            # measured: 16 of 18
    assert u <= 0.25 * n           # measured: 2 of 18


# ------------------------------------------------------------------------------ (b) tracking
def _pan(name, frames=12, scale=1.0):
    """The (scaled) image, frames of a window sliding across it placed on a grey canvas (the
    whole image stays in view, moving by a quarter of its width), and the x offset of the image
    in each frame."""
    im = _image(name)
    if scale != 1.0:
        im = cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = im.shape[:2]
    pad = w // 4
    canvas = np.full((h, w + 2 * pad, 3), 114, np.uint8)
    canvas[:, pad:pad + w] = im
    step = pad // (frames - 1)
    out, shifts = [], []
    for k in range(frames):
        x = k * step
        out.append(canvas[:, x:x + w + pad].copy())
        shifts.append(pad - x)
    return im, out, shifts


@pytest.mark.parametrize("name,scale", [("bus", 0.5), ("zidane", 0.5), ("giraffe", 1.0)])
def test_each_object_keeps_one_track_id_while_the_camera_pans(det, name, scale):
    pytest.importorskip("supervision")
    im, frames, shifts = _pan(name, scale=scale)
    objects = [(d.class_id, d.box) for d in det(im)[0] if d.confidence >= 0.6]
    assert len(objects) >= 2
    results = list(det.track(iter(frames)))
    assert [r.frame_id for r in results] == list(range(1, len(frames) + 1))
    ids_per_object = []
    for cls, (l, t, w, h) in objects:
        ids = []
        for r, dx in zip(results, shifts):
            hits = [d.track_id for d in r.detections
                    if d.class_id == cls and _iou((l + dx, t, w, h), d.box) >= 0.5]
            ids += hits[:1]
        assert len(ids) >= len(frames) - 1, (cls, ids)      # seen (nearly) every frame
        assert len(set(ids)) == 1, (cls, ids)                # ... always under one id
        ids_per_object.append(ids[0])
    assert len(set(ids_per_object)) == len(objects)          # different objects, different ids


def test_tracked_json_and_drawing_carry_the_track_id(det):
    pytest.importorskip("supervision")
    import json
    from darknet_py.infer.tracking import ByteTracker
    _, frames, _ = _pan("giraffe", frames=3)
    tracker = ByteTracker(det.names, det.thresh)
    last = None
    for k, frame in enumerate(frames, 1):
        (_, image, dets), = det.detect_sets([frame])
        last = tracker.update(dets, k, frame)
    entry = json.loads(last.to_json(det.names))
    assert entry["frame_id"] == 3 and entry["objects"]
    assert {o["track_id"] for o in entry["objects"]} == set(last.track_ids)
    assert all(d.track_id in last.track_ids for d in last.detections)
    drawn = tracker.draw(image, last, det.classes)
    plain = det.draw(image, last.raw)
    assert not torch.equal(drawn, plain)                      # the "#id " labels differ
    assert sum(tracker.counts().values()) == len(set(last.track_ids))


def test_tracking_without_supervision_is_a_one_line_error(det, monkeypatch):
    from darknet_py.errors import UsageError
    monkeypatch.setitem(sys.modules, "supervision", None)
    with pytest.raises(UsageError, match=r"darknet-py\[track\]"):
        next(iter(det.track(iter([np.zeros((64, 64, 3), np.uint8)]))))


# ------------------------------------------------------------------------------ (c) streams
def _same(a, b):
    return [(d.class_id, d.box, round(d.confidence, 5)) for d in a] == \
        [(d.class_id, d.box, round(d.confidence, 5)) for d in b]


def _frame_alone(det, frame):
    from darknet_py.infer.results import to_detections
    return to_detections("frame", det.detect_frames([frame])[0], det.names, det.thresh)


def test_stream_of_a_video_file_equals_frame_by_frame(det, tmp_path):
    _, frames, _ = _pan("bus", frames=6, scale=0.5)
    h, w = frames[0].shape[:2]
    path = tmp_path / "pan.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(f)
    cap.release()
    assert len(decoded) == 6
    streamed = list(det.stream(str(path)))                   # batches of 4: 4 + 2 frames
    assert [r.frame_id for r in streamed] == list(range(1, 7))
    for r, f in zip(streamed, decoded):
        assert np.array_equal(r.frame, f)
        alone = _frame_alone(det, f)
        assert len(alone) > 0 and _same(r.detections, alone)
    # a frame is not a still image: detector test's input gives other confidences
    assert not all(_same(r.detections, det(f)[0]) for r, f in zip(streamed, decoded))


def test_stream_of_an_iterator_and_its_errors(det):
    from darknet_py.errors import DataError, UsageError
    frames = [_image("dog"), _image("eagle"), _image("person")]
    streamed = list(det.stream(iter(frames)))
    assert all(_same(r.detections, _frame_alone(det, f)) for r, f in zip(streamed, frames))
    path = str(REFDATA / "images" / "dog.jpg")
    assert _same(next(iter(det.stream(iter([path])))).detections, det(path)[0])

    def broken():
        yield frames[0]
        raise DataError("camera unplugged")
    with pytest.raises(DataError, match="camera unplugged"):
        list(det.stream(broken()))
    with pytest.raises(DataError, match="not found"):
        list(det.stream("/nonexistent/video.mp4"))
    with pytest.raises(UsageError):
        list(det.stream(frames[0]))
    it = det.stream(iter(frames * 20))                        # stop early: the thread ends
    first = next(it)
    it.close()
    assert first.frame_id == 1
