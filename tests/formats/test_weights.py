"""Darknet .weights I/O: byte-identical round trips, partial files, broken files."""
import hashlib

import numpy as np
import pytest
import torch

from darknet_py.errors import WeightsError
from darknet_py.model.network import Network
from darknet_py.formats.weights import WeightsHeader

from conftest import REFDATA, require

REAL = [
    ("cfg/darknet/yolov4-tiny.cfg", "weights/yolov4-tiny.weights"),
    ("cfg/darknet/yolov3-tiny.cfg", "weights/yolov3-tiny.weights"),
    ("weights/yolo-fastest/yolo-fastest-1.1.cfg", "weights/yolo-fastest/yolo-fastest-1.1.weights"),
    ("weights/yolo-fastest/yolo-fastest-1.1-xl.cfg",
     "weights/yolo-fastest/yolo-fastest-1.1-xl.weights"),
    ("weights/yolo-fastest/yolo-fastest-1.1_body.cfg",
     "weights/yolo-fastest/yolo-fastest-1.1_body.weights"),
]
CONV29_BYTES = 19789716
CONV29_SHA = "3c794b8420b12ed2a609daa71d075880e7bd152671323f5eb3e8d9e57e31785b"


@pytest.mark.parametrize("cfg,weights", REAL, ids=[w.split("/")[-1] for _, w in REAL])
def test_round_trip_is_byte_identical(cfg, weights, tmp_path):
    cfg, weights = require(REFDATA / cfg), require(REFDATA / weights)
    net = Network.from_cfg(cfg)
    rep = net.load_weights(weights)
    assert rep.bytes_left == 0 and rep.layers_loaded == len(net.layers)
    out = tmp_path / "out.weights"
    net.save_weights(out)
    assert out.read_bytes() == weights.read_bytes()


@pytest.fixture(scope="module")
def v4tiny_bytes():
    return require(REFDATA / "weights" / "yolov4-tiny.weights").read_bytes()


def test_partial_conv29_loads_exactly_layers_0_to_28(v4tiny_bytes, tmp_path):
    conv29 = tmp_path / "yolov4-tiny.conv.29"
    conv29.write_bytes(v4tiny_bytes[:CONV29_BYTES])
    assert hashlib.sha256(conv29.read_bytes()).hexdigest() == CONV29_SHA
    cfg = REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg"
    full = Network.from_cfg(cfg)
    full.load_weights(REFDATA / "weights" / "yolov4-tiny.weights")
    part = Network.from_cfg(cfg)
    before = {k: v.clone() for k, v in part.state_dict().items()}
    rep = part.load_weights(conv29, cutoff=29)
    assert rep.layers_loaded == 29 and rep.bytes_left == 0
    for layer in part.layers:
        for name, t in layer.state_dict().items():
            key = f"layers.{layer.index}.{name}"
            if layer.index < 29:
                assert torch.equal(t, full.state_dict()[key]), key
            else:
                assert torch.equal(t, before[key]), key   # untouched beyond the cutoff
    # and saving the partial again reproduces Darknet's `partial ... 29` bytes
    again = tmp_path / "again.conv.29"
    full.seen = 0
    full.save_weights(again, cutoff=29, header=WeightsHeader(0, 2, 5, 0))
    assert hashlib.sha256(again.read_bytes()).hexdigest() == CONV29_SHA


def test_from_files_builds_loads_and_keeps_the_load_report(v4tiny_bytes, tmp_path):
    conv29 = tmp_path / "yolov4-tiny.conv.29"
    conv29.write_bytes(v4tiny_bytes[:CONV29_BYTES])
    cfg = REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg"
    net = Network.from_files(cfg, conv29, batch=1, width=320, height=320, cutoff=29)
    rep = net.load_report
    assert (rep.path, rep.layers_loaded, rep.bytes_left) == (str(conv29), 29, 0)
    assert rep.floats_read == net.num_weight_floats(29)
    assert rep.header is net.weights_header and rep.header.seen == net.seen
    assert (net.batch, net.width, net.height, net.training) == (1, 320, 320, True)
    assert Network.from_files(cfg).load_report is None      # no weights: nothing read


def test_partial_file_without_cutoff_is_an_error(v4tiny_bytes, tmp_path):
    conv29 = tmp_path / "yolov4-tiny.conv.29"
    conv29.write_bytes(v4tiny_bytes[:CONV29_BYTES])
    net = Network.from_cfg(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg")
    with pytest.raises(WeightsError, match="layer 29 needs"):
        net.load_weights(conv29)


@pytest.mark.parametrize("name,layer", [("haanhvu_yolov4-tiny.conv.29", 2),
                                        ("tatarikk_yolov4-tiny.weights", 10)])
def test_broken_upstream_files_fail_clearly(name, layer):
    path = require(REFDATA / "weights" / "broken" / name)
    net = Network.from_cfg(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg")
    with pytest.raises(WeightsError) as e:
        net.load_weights(path, cutoff=29)
    assert f"layer {layer} needs" in str(e.value) and name in str(e.value)
    if name.startswith("tatarikk"):
        assert "binary mode" in str(e.value)


def test_header_versions_and_seen_width(tmp_path):
    cfg = REFDATA / "cfg" / "darknet" / "yolov3-tiny.cfg"
    net = Network.from_cfg(cfg)
    rep = net.load_weights(require(REFDATA / "weights" / "yolov3-tiny.weights"))
    assert (rep.header.major, rep.header.minor, rep.header.revision) == (0, 2, 0)
    assert rep.header.seen == 32013312 and net.seen == 32013312
    # an old 0.1.x file stores seen as uint32
    h = WeightsHeader(0, 1, 0, 7)
    assert len(h.pack()) == 16 and not h.seen_is_64bit
    assert WeightsHeader.unpack(h.pack(), "x").seen == 7


def test_longer_than_needed_warns(v4tiny_bytes, tmp_path):
    p = tmp_path / "long.weights"
    p.write_bytes(v4tiny_bytes + b"\0" * 40)
    net = Network.from_cfg(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg")
    with pytest.warns(UserWarning, match="40 bytes left over"):
        rep = net.load_weights(p)
    assert rep.bytes_left == 40
    with pytest.raises(WeightsError, match="longer than"):
        net.load_weights(p, strict_tail=True)


@pytest.mark.parametrize("content,msg", [
    (b"", "too short for a Darknet weights header"),
    (b"\0" * 12, "too short for its header"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
    (np.array([7, 9, 0, 0, 0], "<i4").tobytes(), "not a Darknet weights file"),
])
def test_bad_headers(content, msg, tmp_path):
    p = tmp_path / "bad.weights"
    p.write_bytes(content)
    net = Network.from_cfg(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg")
    with pytest.raises(WeightsError, match=msg):
        net.load_weights(p)


def test_state_dict_round_trip_is_safe(tmp_path):
    cfg = REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg"
    a = Network.from_cfg(cfg)
    a.load_weights(REFDATA / "weights" / "yolov4-tiny.weights")
    p = tmp_path / "m.pt"
    a.save_state_dict(p)
    b = Network.from_cfg(cfg)
    b.load_state_dict_file(p)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    # a pickle carrying an arbitrary object is refused (weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": object()}, evil)
    with pytest.raises(WeightsError, match="not a loadable state-dict"):
        b.load_state_dict_file(evil)


def test_weights_of_another_classes_name_the_first_layer_that_disagrees(tmp_path):
    """80-class yolov4-tiny.weights into the 3-class cfg (and back): the message names layer 29,
    the conv before the first [yolo], its filters here and in the file, and the partial command
    that keeps the layers before it, which gives exactly the official yolov4-tiny.conv.29."""
    from conftest import REPO
    w80 = require(REFDATA / "weights" / "yolov4-tiny.weights")
    cfg3 = REPO / "cfg" / "yolov4-tiny-obj.cfg"
    net = Network.from_cfg(cfg3)
    with pytest.warns(UserWarning) as rec:
        net.load_weights(w80)
    msg = str(rec[0].message)
    assert "\n" not in msg
    for part in ("classes=80", "layer 29 (convolutional before [yolo] layer 30)",
                 "filters=24 here but filters=255 in the file",
                 f"darknet-py partial {cfg3} {w80} <out>.conv.29 29"):
        assert part in msg, msg
    # following the advice gives the official partial file, byte for byte
    net = Network.from_cfg(cfg3)
    net.load_weights(w80, cutoff=29)
    assert net.weights_bytes(cutoff=29) == w80.read_bytes()[:19789716]
    # the other way round: 3-class weights into the 80-class cfg end early; same diagnosis
    p3 = tmp_path / "three.weights"
    Network.from_cfg(cfg3).save_weights(p3)
    net80 = Network.from_cfg(require(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg"))
    with pytest.raises(WeightsError) as e:
        net80.load_weights(p3)
    text = str(e.value)
    assert text.startswith(f"{p3}: file ends early: layer ") and "\n" not in text
    assert "classes=3" in text and "filters=255 here but filters=24 in the file" in text


def test_weights_of_another_architecture_name_a_layer_that_cannot_match():
    net = Network.from_cfg(require(REFDATA / "cfg" / "darknet" / "yolov3-tiny.cfg"))
    with pytest.raises(WeightsError) as e:
        net.load_weights(require(REFDATA / "weights" / "yolov4-tiny.weights"))
    text = str(e.value)
    assert "made for another cfg" in text and "negative batch-norm variance" in text
    assert "darknet-py partial" in text
