"""HeadSpec: built by each head layer, serialised into ONNX metadata and read back unchanged."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import refpath, require
from darknet_py.errors import UsageError
from darknet_py.layers.registry import head_class
from darknet_py.model.network import Network
from darknet_py.structures.heads import HeadSpec, nms_params


def yolo_spec(**kw):
    return head_class("yolo").make_spec(**kw)

CFGS = {"yolo": "yolov4-tiny.cfg", "gaussian_yolo": "Gaussian_yolov3_BDD.cfg",
        "region": "yolov2-tiny.cfg"}


@pytest.mark.parametrize("kind", list(CFGS))
def test_each_head_layer_builds_its_spec(kind):
    net = Network.from_cfg(require(refpath("cfg", "darknet", CFGS[kind])), width=64, height=64)
    specs = net.head_specs
    assert specs and all(s.kind == kind for s in specs)
    for layer, spec in zip(net.heads, specs):
        assert spec.index == layer.index and spec.classes == layer.classes
        assert (spec.w, spec.h) == (layer.w, layer.h)
        assert spec.out_shape == tuple(layer.in_shape)       # n * entries channels
        assert spec.type_code == {"region": 27, "yolo": 28, "gaussian_yolo": 29}[kind]
        again = HeadSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec


def test_masked_anchors_follow_the_mask():
    spec = yolo_spec(index=3, classes=1, n=2, total=3, mask=(2, 0),
                     anchors=(1.0, 2.0, 3.0, 4.0), w=1, h=1)
    # anchors 2 is missing from the cfg: Darknet's biases default to .5
    assert spec.masked_anchors() == ([0.5, 1.0], [0.5, 2.0])


def test_nms_params_are_the_last_heads():
    a = yolo_spec(index=1, classes=1, n=1, total=1, mask=(0,), anchors=(), w=1, h=1)
    b = yolo_spec(index=2, classes=1, n=1, total=1, mask=(0,), anchors=(), w=1, h=1,
                  nms_kind="diounms", beta_nms=0.7)
    assert nms_params([a, b]) == ("diounms", 0.7) and nms_params([b, a]) == ("default", 0.6)
    assert nms_params([]) == ("default", 0.6)


def test_unknown_kind_is_refused():
    from darknet_py.model.decode import decode_head
    with pytest.raises(UsageError, match="unknown detection head kind"):
        head_class("detection")
    spec = HeadSpec(index=0, kind="detection", type_code=0, entries=6, classes=1, n=1, total=1,
                    mask=(0,), anchors=(), w=1, h=1)
    with pytest.raises(UsageError, match="unknown detection head kind"):
        decode_head(spec, torch.zeros(1, 6, 1, 1), 32, 32)
