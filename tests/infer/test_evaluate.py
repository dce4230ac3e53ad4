"""evaluate_network_map (``detector train -map``): the images go through the network as
Darknet's ``validate_detector_map`` sends them, letterboxed exactly when the cfg's ``[net]`` has
``letter_box=1`` (Darknet replaces its ``letter_box`` argument with ``net.letter_box``)."""
import io

import cv2
import numpy as np
import pytest
import torch

from darknet_py.infer.backends.exact import ExactBackend
from darknet_py.infer.pipeline import Pipeline
from darknet_py.infer import evaluate
from darknet_py.model.network import Network

CFG = """[net]
width=32
height=32
channels=3
letter_box={letter_box}

[convolutional]
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=21
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,6, 10,8, 14,20
classes=2
num=3
"""


@pytest.mark.parametrize("letter_box", [0, 1])
def test_map_images_are_letterboxed_as_the_cfg_says(tmp_path, monkeypatch, letter_box):
    cfg = tmp_path / "net.cfg"
    cfg.write_text(CFG.format(letter_box=letter_box))
    torch.manual_seed(0)
    net = Network.from_cfg(str(cfg)).eval()
    image = tmp_path / "wide.jpg"   # 2:1, so stretching and letterboxing give different inputs
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (40, 80, 3), np.uint8))
    (tmp_path / "wide.txt").write_text("0 0.5 0.5 0.4 0.6\n")
    valid = tmp_path / "valid.txt"
    valid.write_text(f"{image}\n")

    seen = []
    detect = evaluate.detect_for_map

    def spy(pipeline, images, progress=None):
        seen.append(detect(pipeline, images, progress))
        return seen[-1]
    monkeypatch.setattr(evaluate, "detect_for_map", spy)
    evaluate.evaluate_network_map(net, str(valid), ["a", "b"], 2, out=io.StringIO())

    def run(letterboxed):
        pipe = Pipeline(ExactBackend.wrap(net), thresh=evaluate.MAP_OBJECTNESS_THRESH,
                        nms=evaluate.MAP_NMS_THRESH, letter_box=letterboxed)
        return pipe.run([str(image)], keep_images=False)[0][2]
    got, want, other = seen[0][0], run(bool(letter_box)), run(not letter_box)
    assert len(got) > 0 and torch.equal(got.boxes, want.boxes)
    assert torch.equal(got.probs, want.probs)
    assert got.boxes.shape != other.boxes.shape or not torch.equal(got.boxes, other.boxes)
