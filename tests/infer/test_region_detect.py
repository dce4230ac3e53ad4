"""A yolov2 [region] head runs through the Detector (decode + NMS) end to end."""
import torch

from darknet_py.infer.detector import Detector

from conftest import REFDATA, REPO, require


def test_region_head_detects():
    torch.manual_seed(0)
    det = Detector(require(REFDATA / "cfg/darknet/yolov2-tiny.cfg"), None, thresh=0.001,
                   width=160, height=160)
    (res,) = det(REPO / "data" / "dog.jpg")
    assert res.detections, "a random region head at thresh 0.001 must give candidates"
    for d in res.detections:
        assert 0 <= d.class_id < 80 and 0.001 < d.confidence <= 1
        assert len(d.relative) == 4
