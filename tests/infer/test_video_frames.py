"""The one rule for video frames (Darknet's ``demo``: :func:`prepare_frame`, :class:`VideoFrame`)
and the pipeline paths that use it: ``detect_frames``, tiles of a frame, ``Detector.stream``.

Oracle: ``tests/fixtures/files/demo_oracle/`` (its README says how it was recorded): the network
input a real Darknet demo (OpenCV build) made from each frame of ``demo.avi``, as sha256 of the
float32 buffer. The embedded yolo-fastest-1.1 runs the pipeline tests, so this needs no shared data.
"""
import hashlib
import json

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO
from darknet_py.imaging import image as image_module
from darknet_py.imaging.image import (DecodedImage, VideoFrame, image_from_array, letterbox_image,
                                    prepare_frame, prepare_input)

ORACLE = REPO / "tests" / "fixtures" / "files" / "demo_oracle"
CFG = REPO / "cfg" / "yolo-fastest-1.1.cfg"
WEIGHTS = REPO / "weights" / "yolo-fastest-1.1.weights"


def _sha(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def recorded():
    return json.loads((ORACLE / "frame_inputs.json").read_text())


@pytest.fixture(scope="module")
def frames(recorded):
    cap = cv2.VideoCapture(str(ORACLE / "demo.avi"))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    # every later comparison assumes this OpenCV decodes the frames Darknet's OpenCV decoded
    assert [_sha(f) for f in out] == [recorded["frames"][str(k)] for k in range(1, 7)], \
        "this OpenCV decodes demo.avi to other bytes than Darknet's did"
    return out


@pytest.fixture(scope="module")
def det():
    from darknet_py.infer.detector import Detector
    return Detector(CFG, WEIGHTS, names=REPO / "cfg" / "coco.names", backend="exact",
                    device="cpu", batch_size=3)


@pytest.mark.parametrize("size, letter_box, key", [(416, False, "416x416"),
                                                   (416, True, "416x416 letter_box"),
                                                   (320, False, "320x320")])
def test_prepare_frame_is_darknets_demo_input_bit_for_bit(frames, recorded, size, letter_box,
                                                          key):
    for k, frame in enumerate(frames, 1):
        x = prepare_frame(frame, size, size, letter_box)
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, size, size)
        assert _sha(x.numpy()) == recorded["inputs"][key][str(k)], f"frame {k}"


def test_stretch_rule_is_cv_resize_then_rgb_then_byte_times_one_255th(frames):
    frame = frames[2]
    small = cv2.resize(frame, (416, 416), interpolation=cv2.INTER_LINEAR)
    want = small[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255.0)
    got = prepare_frame(frame, 416, 416).numpy()
    assert np.array_equal(got, want)
    # not detector test's rule (image.c's resize_image of the float image): the rule matters
    still = prepare_input(DecodedImage(frame), 416, 416).numpy()
    assert np.abs(got - still).max() > 0.05


def test_letterbox_rule_is_the_still_image_letterbox_of_the_frame(frames):
    frame = frames[0]
    assert torch.equal(prepare_frame(frame, 416, 416, letter_box=True),
                       letterbox_image(image_from_array(frame), 416, 416))


def test_what_makes_a_video_frame(det, frames):
    from darknet_py.errors import UsageError
    frame = frames[1]
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert VideoFrame(grey).mat.shape == frame.shape               # made BGR like VideoCapture
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(VideoFrame(bgra).mat, frame)
    crop = VideoFrame(frame).crop(10, 20, 110, 70)
    assert isinstance(crop, VideoFrame) and crop.size == (100, 50)
    assert torch.equal(prepare_input(VideoFrame(frame), 320, 320), prepare_frame(frame, 320, 320))
    with pytest.raises(ValueError):
        VideoFrame(frame.astype(np.float32))
    pipe = det.pipeline
    assert isinstance(pipe.frame_source(frame)[1], VideoFrame)
    still = pipe.frame_source(str(REPO / "data" / "dog.jpg"))[1]  # a path is a still image
    assert isinstance(still, DecodedImage) and not isinstance(still, VideoFrame)
    tensor = image_from_array(frame)
    assert torch.equal(pipe.frame_source(tensor)[1], tensor)        # so is a float tensor
    with pytest.raises(UsageError):
        pipe.frame_source(np.zeros((4, 4, 2), np.uint8))


def test_detect_frames_runs_the_frame_rule_through_the_pipeline(det, frames):
    sets = det.detect_frames(frames[:4])
    assert len(sets) == 4 and all(s.image_size == (640, 360) for s in sets)
    pipe = det.pipeline
    x = torch.stack([prepare_frame(f, pipe.width, pipe.height) for f in frames[:4]])
    for got, want in zip(sets, pipe.detect_batch(x, [(640, 360)] * 4)):
        assert torch.equal(got.boxes, want.boxes) and torch.equal(got.probs, want.probs)
    # the same pictures as still images get detector test's input, and other numbers
    stills = [d for _, _, d in pipe.run(frames[:4], keep_images=False)]
    assert any(s.probs.shape != f.probs.shape or not torch.equal(s.probs, f.probs)
               for s, f in zip(stills, sets))


def test_tiles_of_a_frame_are_prepared_by_the_frame_rule(det, frames, monkeypatch):
    from darknet_py.infer.detector import Detector
    one = Detector(CFG, names=REPO / "cfg" / "coco.names", backend=det.backend, tiles=(1, 1))
    a, b = one.detect_frames(frames[:2]), det.detect_frames(frames[:2])
    for x, y in zip(a, b):                          # one tile is the whole frame: the same input
        assert torch.equal(x.boxes, y.boxes) and torch.equal(x.probs, y.probs)
    seen = []
    real = image_module.prepare_frame

    def spy(frame, *args, **kwargs):
        seen.append(frame.size)
        return real(frame, *args, **kwargs)
    monkeypatch.setattr(image_module, "prepare_frame", spy)
    tiled = Detector(CFG, names=REPO / "cfg" / "coco.names", backend=det.backend, tiles=(2, 1),
                     tiles_full=True)
    tiled.detect_frames([frames[0]])
    grid = tiled.pipeline.grid(640, 360)
    assert len(grid) == 2
    assert sorted(seen) == sorted([(x1 - x0, y1 - y0) for x0, y0, x1, y1 in grid] + [(640, 360)])


def test_stream_of_the_video_equals_detect_frames(det, frames):
    streamed = list(det.stream(str(ORACLE / "demo.avi")))      # batches of 3
    assert [r.frame_id for r in streamed] == list(range(1, 7))
    alone = [det.detect_frames([f])[0] for f in frames]
    for r, f, want in zip(streamed, frames, alone):
        assert np.array_equal(r.frame, f)
        assert torch.allclose(r.raw.probs, want.probs, atol=1e-5, rtol=0)
        assert torch.allclose(r.raw.boxes, want.boxes, atol=1e-5, rtol=0)
