"""ONNX / TorchScript exports give Darknet's numbers outside PyTorch.

Real models (``tests/models.py`` MODELS, exported once each): onnxruntime (CPU) outputs on the
recorded ``input.npy`` equal Darknet's recorded ``layerNNN_yolo.npy`` (oracle/dumps, 1e-4), and
``dog.jpg`` through the ONNX detector equals ``oracle/detect/<model>__default.json``; the decoded
output equals ``get_yolo_box`` applied (in numpy, here) to Darknet's recorded outputs; the ONNX
``NonMaxSuppression`` indices equal a plain per-class IoU NMS; TorchScript matches the same way.

Sweep: every detection cfg of ``$SHARED/cfg/darknet`` (54 with [yolo]/[region]/[Gaussian_yolo])
is built at a small input (64x64, or the smallest of 128/256 its routes accept) with random
weights (Darknet's init, random BN scales/biases, BN statistics calibrated on the input so the
activations stay O(1)), exported to ONNX and TorchScript, and both must equal the PyTorch outputs
within 1e-4 of the output scale. A handful run by default, the rest with ``-m slow``. Cfgs whose
``Network.from_cfg`` raises "unsupported section" are skipped.

``cspx-p7-mish.cfg`` is refused when read (its last ``[yolo]`` has ``mask`` indices beyond
``num``, where Darknet reads past its anchors array).

Cfgs that cannot be exported (they must raise ExportError with a clear reason):

* ``yolov3-tiny_occlusion_track.cfg``: its ``[crnn]`` layer keeps a hidden state between frames at
  inference (Darknet carries it from image to image); a static graph cannot reproduce that.

``yolo9000.cfg`` exports its raw head outputs (the ``[region]`` ``tree=`` hierarchical softmax
becomes standard ScatterElements/GatherElements/Exp ops plus two ``If`` nodes the exporter emits
for ``scatter_reduce``) but not ``--with-decode`` (darknet-py has no tree decoder);
it reads ``data/9k.tree`` relative to the working directory like Darknet, so the test runs it from
a folder that provides that path. Every other cfg exports with standard ONNX ops (opset 17).
"""
from __future__ import annotations

import gc
import glob
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REFDATA, refpath, require
from models import MODELS, dump_dir, dump_input, load_model, model_files

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.save/load

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from darknet_py.errors import CfgError, DarknetError  # noqa: E402
from darknet_py.export.exporter import (ExportError, ExportOptions, ExportedGraph,  # noqa: E402
                               export_model, export_network)
from darknet_py.model.network import Network  # noqa: E402

DUMPS = {"yolov4-tiny": "yolov4-tiny__dog", "yolov3-tiny": "yolov3-tiny__dog",
         "yolo-fastest-1.1": "yolo-fastest-1.1__dog",
         "yolo-fastest-1.1-xl": "yolo-fastest-1.1-xl__dog"}
#: Darknet's NMS_KIND enum as recorded in the oracle's meta.json
NMS_CODES = {0: "default", 1: "greedynms", 2: "diounms"}
COCO_NAMES = "cfg/darknet/coco.names"


def _names():
    from darknet_py.data.datacfg import read_names
    return read_names(require(refpath(COCO_NAMES)))


def _rel_diff(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))


def _session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def outdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def real_onnx(outdir):
    """``get(model)`` -> (path, metadata) of the model's default ONNX export (made once)."""
    cache = {}

    def get(name):
        if name not in cache:
            net = load_model(name)
            path = outdir / f"{name}.onnx"
            meta = export_network(net, path, ExportOptions(names=_names(),
                                                           weights_name=name + ".weights"))
            cache[name] = (path, meta)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def v4tiny_nms(outdir):
    """yolov4-tiny exported --with-nms (which includes --with-decode)."""
    path = outdir / "yolov4-tiny-nms.onnx"
    meta = export_network(load_model("yolov4-tiny"), path,
                          ExportOptions(with_nms=True, names=_names()))
    return path, meta


@pytest.fixture(scope="module")
def v4tiny_torchscript(outdir):
    path = outdir / "yolov4-tiny.torchscript.pt"
    meta = export_network(load_model("yolov4-tiny"), path, ExportOptions(format="torchscript"))
    return path, meta


# ------------------------------------------------------------------------------ real models
@pytest.mark.parametrize("model", list(MODELS))
def test_onnx_heads_equal_darknet(model, real_onnx):
    from darknet_py.infer.backends.onnxruntime import OnnxRuntimeBackend as OnnxModel
    path, meta = real_onnx(model)
    folder = dump_dir(DUMPS[model])
    proto = onnx.load(str(path))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}, "non-standard ops"
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    out = OnnxModel(path)(dump_input(folder))
    assert len(out) == len(meta["heads"]) >= 2
    for head, got in zip(meta["heads"], out):
        ref = np.load(folder / f"layer{head['index']:03d}_yolo.npy")
        diff = float(np.abs(got[0].numpy().reshape(ref.shape) - ref).max())
        assert diff < 1e-4, f"{model} layer {head['index']}: max abs diff {diff}"


@pytest.mark.parametrize("model", list(MODELS))
def test_onnx_metadata_describes_the_heads(model, real_onnx):
    path, meta = real_onnx(model)
    oracle = json.loads((dump_dir(DUMPS[model]) / "meta.json").read_text())
    oracle_heads = [l for l in oracle["layers"] if l.get("type_name") == "yolo"]
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["darknet_py"]) == meta
    assert props["cfg"] == os.path.basename(MODELS[model][0])
    assert json.loads(props["classes"]) == 80
    assert (json.loads(props["input_width"]), json.loads(props["input_height"])) == \
        (oracle["net_w"], oracle["net_h"])
    assert json.loads(props["masks"]) == [h["mask"] for h in oracle_heads]
    assert json.loads(props["letter_box"]) == 0
    assert props["nms_kind"] == NMS_CODES[oracle_heads[-1]["nms_kind"]]
    assert abs(json.loads(props["beta_nms"]) - oracle_heads[-1]["beta_nms"]) < 1e-6
    for ours, ref in zip(meta["heads"], oracle_heads):
        assert ours["index"] == ref["index"] and ours["mask"] == ref["mask"]
        assert ours["anchors"][:len(ref["anchors"])] == ref["anchors"]
        assert abs(ours["scale_x_y"] - ref["scale_x_y"]) < 1e-6
        assert ours["new_coords"] == ref["new_coords"]
        assert ours["nms_kind"] == NMS_CODES[ref["nms_kind"]]
        assert (ours["w"], ours["h"], ours["n"]) == (ref["w"], ref["h"], ref["n"])
    sidecar = json.loads(Path(str(path) + ".json").read_text())
    assert sidecar == meta and sidecar["names"][16] == "dog" and len(sidecar["names"]) == 80


def _oracle_objects(model, image="dog.jpg"):
    ref = json.loads(require(refpath("oracle", "detect", f"{model}__default.json")).read_text())
    entry = next(i for i in ref["images"] if i["filename"].endswith("/" + image))
    return entry["objects"]


def _assert_same_objects(ours, ref, tol=2e-5):
    assert [(o["class_id"], o["name"]) for o in ours] == [(o["class_id"], o["name"]) for o in ref]
    for a, b in zip(ours, ref):
        for k, v in b["relative_coordinates"].items():
            assert abs(a["relative_coordinates"][k] - v) < tol, (a, b)
        assert abs(a["confidence"] - b["confidence"]) < tol, (a, b)


@pytest.mark.parametrize("model", list(MODELS))
def test_onnx_detections_equal_darknet(model, real_onnx):
    pytest.importorskip("darknet_py.model.decode")
    pytest.importorskip("darknet_py.infer.nms")
    from darknet_py.infer.detector import Detector
    path, _ = real_onnx(model)
    det = Detector(path)                         # names come from the export's metadata
    ours = _json_objects(det, require(refpath("images", "dog.jpg")))
    ref = _oracle_objects(model)
    assert len(ref) >= 3
    _assert_same_objects(ours, ref)


def _json_objects(det, image):
    """The ``objects`` list Darknet's ``-out`` JSON writes for one image."""
    from darknet_py.infer.draw import detection_to_json
    (_, _, dets), = det.detect_sets([image])
    return json.loads(detection_to_json(dets, det.names, 1))["objects"]


def _numpy_get_yolo_box(head, out, net_w, net_h):
    """Darknet's get_yolo_box / get_yolo_detections before the threshold, written directly in
    numpy: rows (cells row-major, anchors of a cell together) of x, y, w, h, obj, obj*cls."""
    n, e, h, w = out.shape
    rows = out.transpose(2, 3, 0, 1).reshape(h * w * n, e).astype(np.float64)
    j, i, a = np.meshgrid(np.arange(h), np.arange(w), np.arange(n), indexing="ij")
    i, j, a = i.ravel(), j.ravel(), a.ravel()
    anchors = np.asarray(head["anchors"], np.float64)
    mask = np.asarray(head["mask"])
    aw, ah = anchors[2 * mask[a]], anchors[2 * mask[a] + 1]
    bx = (i + rows[:, 0]) / w
    by = (j + rows[:, 1]) / h
    if head["new_coords"]:
        bw = rows[:, 2] ** 2 * 4 * aw / net_w
        bh = rows[:, 3] ** 2 * 4 * ah / net_h
    else:
        bw = np.exp(rows[:, 2]) * aw / net_w
        bh = np.exp(rows[:, 3]) * ah / net_h
    probs = rows[:, 4:5] * rows[:, 5:]
    return np.concatenate([np.stack([bx, by, bw, bh, rows[:, 4]], 1), probs], 1)


def _onnx_nms_reference(dets, iou_thr, score_thr, max_per_class):
    """Plain per-class greedy IoU NMS (the ONNX NonMaxSuppression definition), one image."""
    boxes = dets[:, :4].astype(np.float64)
    x1, y1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x2, y2 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    area = (x2 - x1) * (y2 - y1)
    selected = set()
    for c in range(dets.shape[1] - 5):
        scores = dets[:, 5 + c]
        cand = [int(k) for k in np.argsort(-scores, kind="stable") if scores[k] > score_thr]
        kept = []
        for k in cand:
            ok = True
            for m in kept:
                iw = max(0.0, min(x2[k], x2[m]) - max(x1[k], x1[m]))
                ih = max(0.0, min(y2[k], y2[m]) - max(y1[k], y1[m]))
                inter = iw * ih
                if inter / (area[k] + area[m] - inter) > iou_thr:
                    ok = False
                    break
            if ok and len(kept) < max_per_class:
                kept.append(k)
        selected.update((c, k) for k in kept)
    return selected


def test_decoded_onnx_equals_get_yolo_box_on_darknet_outputs(v4tiny_nms):
    path, meta = v4tiny_nms
    folder = dump_dir(DUMPS["yolov4-tiny"])
    assert meta["outputs"] == "decoded+nms"
    dets, selected = _session(path).run(None, {"input": dump_input(folder).numpy()})
    ref = np.concatenate([
        _numpy_get_yolo_box(h, np.load(folder / f"layer{h['index']:03d}_yolo.npy"),
                            meta["input_width"], meta["input_height"]) for h in meta["heads"]])
    assert dets.shape == (1, ref.shape[0], 85) and dets.dtype == np.float32
    d = dets[0].astype(np.float64)
    assert np.abs(d[:, :2] - ref[:, :2]).max() < 1e-5          # x, y (relative)
    assert (np.abs(d[:, 2:4] - ref[:, 2:4]) / np.maximum(ref[:, 2:4], 1e-3)).max() < 1e-4
    assert np.abs(d[:, 4:] - ref[:, 4:]).max() < 1e-4          # objectness, obj*cls
    # ONNX NonMaxSuppression = plain per-class IoU NMS over rows with prob > 0.25
    nms = meta["onnx_nms"]
    ours = {(int(c), int(k)) for b, c, k in selected}
    assert (selected[:, 0] == 0).all()
    assert ours == _onnx_nms_reference(d, nms["iou_threshold"], nms["score_threshold"],
                                       nms["max_output_boxes_per_class"])
    assert {c for c, _ in ours} == {1, 2, 7, 16}                # bicycle, car, truck, dog


def test_decoded_onnx_detections_equal_darknet(v4tiny_nms):
    """The Python runtime applies Darknet's NMS (greedynms here) to the decoded rows."""
    pytest.importorskip("darknet_py.infer.nms")
    from darknet_py.infer.detector import Detector
    det = Detector(v4tiny_nms[0], names=require(refpath(COCO_NAMES)))
    assert det.backend.decoded
    _assert_same_objects(_json_objects(det, require(refpath("images", "dog.jpg"))),
                         _oracle_objects("yolov4-tiny"))


@pytest.mark.parametrize("variant", ["heads", "decoded+nms"])
def test_detector_runs_onnx_files(variant, real_onnx, v4tiny_nms):
    """``Detector("model.onnx")`` (darknet_py.infer.detector) gives Darknet's detections."""
    detect = pytest.importorskip("darknet_py.infer.detector")
    from darknet_py.infer.draw import detection_to_json
    path = real_onnx("yolov4-tiny")[0] if variant == "heads" else v4tiny_nms[0]
    det = detect.Detector(path)
    assert det.names[16] == "dog" and det.nms_kind == "greedynms"
    (_, _, dets), = det.detect_sets([require(refpath("images", "dog.jpg"))])
    ours = json.loads(detection_to_json(dets, det.names, 1))["objects"]
    _assert_same_objects(ours, _oracle_objects("yolov4-tiny"))
    with pytest.raises(DarknetError, match="already holds its weights"):
        detect.Detector(path, weights=str(model_files("yolov4-tiny")[1]))


def test_torchscript_equals_darknet(v4tiny_torchscript):
    path, meta = v4tiny_torchscript
    folder = dump_dir(DUMPS["yolov4-tiny"])
    extra = {"darknet_py.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["darknet_py.json"]) == meta
    x = dump_input(folder)
    with torch.no_grad():
        outs = module(torch.cat([x, x.flip(-1)]))           # traced at batch 1, runs batch 2
    for head, got in zip(meta["heads"], outs):
        ref = np.load(folder / f"layer{head['index']:03d}_yolo.npy")
        assert float(np.abs(got[0].numpy().reshape(ref.shape) - ref).max()) < 1e-4
    with torch.no_grad():
        flipped = load_model("yolov4-tiny")(x.flip(-1))
    for got, ref in zip(outs, flipped):
        assert float((got[1] - ref[0]).abs().max()) < 1e-5


def test_dynamic_batch_onnx(outdir):
    from darknet_py.infer.backends.onnxruntime import OnnxRuntimeBackend as OnnxModel
    net = load_model("yolov3-tiny")
    path = outdir / "v3tiny-dyn.onnx"
    export_network(net, path, ExportOptions(dynamic_batch=True), sidecar=False)
    model = OnnxModel(path)
    assert model.fixed_batch is None
    assert model.session.get_inputs()[0].shape[0] == "batch"
    x = dump_input(dump_dir(DUMPS["yolov3-tiny"]))
    xs = torch.cat([x, x.flip(-1), x.flip(-2)])
    got = model(xs)
    with torch.no_grad():
        ref = net(xs)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and float((g - r).abs().max()) < 1e-4


@pytest.mark.parametrize("decode", [False, True])
def test_export_verify_via_cli(outdir, decode):
    """``export ... --verify`` runs the written ONNX file and compares it with the network."""
    from click.testing import CliRunner

    from darknet_py.cli import main
    cfg, weights = model_files("yolov3-tiny")
    out = outdir / f"verify-{int(decode)}" / "v3tiny.onnx"
    out.parent.mkdir()
    res = CliRunner().invoke(main, ["export", str(cfg), str(weights), "-o", str(out), "--verify"]
                             + (["--with-decode"] if decode else []))
    assert res.exit_code == 0, res.output
    diff = float(re.search(r"Verified: largest \|difference\| to the PyTorch network = (\S+)",
                           res.output).group(1))
    assert diff < 1e-4


def test_half_export_via_cli(outdir):
    """``darknet-py export ... --half --opset 13`` (CLI): float16 graph close to Darknet."""
    from click.testing import CliRunner

    from darknet_py.cli import main
    from darknet_py.infer.backends.onnxruntime import OnnxRuntimeBackend as OnnxModel
    cfg, weights = model_files("yolov3-tiny")
    out = outdir / "cli" / "v3tiny-half.onnx"
    out.parent.mkdir()
    res = CliRunner().invoke(main, ["export", str(cfg), str(weights), "-o", str(out), "--half",
                                    "--opset", "13", "--names", str(refpath(COCO_NAMES))])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(out.parent)) == ["v3tiny-half.onnx", "v3tiny-half.onnx.json"]
    model = OnnxModel(out)
    assert model.input_dtype == np.float16 and model.metadata["dtype"] == "float16"
    assert model.metadata["opset"] == 13 and model.names[16] == "dog"
    folder = dump_dir(DUMPS["yolov3-tiny"])
    for head, got in zip(model.heads, model(dump_input(folder))):
        ref = np.load(folder / f"layer{head.index:03d}_yolo.npy")
        assert got.dtype == torch.float16
        diff = float(np.abs(got[0].float().numpy().reshape(ref.shape) - ref).max())
        assert diff < 0.05, f"half layer {head.index}: {diff}"


# ------------------------------------------------------------------ features / random weights
def randomize_for_parity(net: Network, x: torch.Tensor, seed: int = 0) -> Network:
    """Random BN scales/biases, and BN statistics measured in the same (eval-mode) forward pass
    on ``x`` plus 3 random images, layer after layer, so every activation stays O(1) (Darknet's
    init alone makes deep random nets vanish to 0.5 outputs, and train-mode statistics do not
    fit the eval-mode activations of deep nets). The statistics are RMS-like (mean 0) so small
    (1x1) feature maps cause no cancellation."""
    from darknet_py.layers.convolutional import ConvolutionalLayer
    g = torch.Generator().manual_seed(seed)
    calib = torch.cat([x[:1], torch.rand((3,) + tuple(x.shape[1:]), generator=g)])

    def measure(layer, args):
        y = layer._conv(args[0], layer.weight)
        layer.rolling_mean.zero_()
        power = (y * y).mean(dim=(0, 2, 3))
        # plus the layer's mean power: channels whose sums cancel out are not blown up (that
        # would turn float rounding into O(1) differences in deep nets on tiny maps)
        layer.rolling_variance.copy_(power + power.mean())

    hooks = []
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, ConvolutionalLayer) and layer.batch_normalize \
                    and layer.share_layer is None:
                layer.scales.copy_(torch.rand(layer.scales.shape, generator=g) + 0.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.5)
                hooks.append(layer.register_forward_pre_hook(measure))
        net.unfuse()
        net.eval()
        try:
            net(calib)
        finally:
            for h in hooks:
                h.remove()
    net.fuse()
    return net


FEATURES_CFG = """
[net]
width=48
height=40
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=mish

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=8
size=3
groups=2
dilation=2
pad=1
stride=1
activation=swish

[local_avgpool]
size=3
stride=1

[upsample]
stride=-2

[upsample]
stride=2
scale=0.5

[shortcut]
from=-4
weights_type=per_channel
weights_normalization=softmax
activation=leaky

[maxpool]
maxpool_depth=1
out_channels=3

[shortcut]
from=-2
activation=linear

[route]
layers=-1,-3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=hard_mish

[maxpool]
size=2
stride=1

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=relu6

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=3,4,5
anchors=4,5, 8,9, 12,10, 16,20, 30,22, 40,38
classes=2
num=6
scale_x_y=1.1

[route]
layers=-4

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=logistic

[yolo]
mask=0,1,2
anchors=4,5, 8,9, 12,10, 16,20, 30,22, 40,38
classes=2
num=6
new_coords=1
scale_x_y=2.0
"""


@pytest.fixture(scope="module")
def features_net(outdir):
    """A small cfg using the layer options the real cfgs leave out: local_avgpool, sum
    downsampling, scaled upsampling, weighted/mismatched shortcuts, maxpool_depth, route groups,
    grouped dilated conv, stride-1 pooling, new_coords and scale_x_y heads."""
    cfg = outdir / "features.cfg"
    cfg.write_text(FEATURES_CFG)
    torch.manual_seed(0)
    net = Network.from_cfg(cfg)
    x = torch.rand(1, *net.input_shape, generator=torch.Generator().manual_seed(1))
    randomize_for_parity(net, x)
    return cfg, net, x


def test_features_cfg_onnx_and_torchscript(features_net, outdir):
    from darknet_py.infer.backends.onnxruntime import OnnxRuntimeBackend as OnnxModel
    _, net, x = features_net
    xs = torch.cat([x, torch.rand(2, *net.input_shape, generator=torch.Generator().manual_seed(5))])
    with torch.no_grad():
        ref = net(xs)
        decoded_ref = ExportedGraph(net, decode=True)(xs)
    assert max(float(r.abs().max()) for r in ref) > 1.0       # not a vanished network
    # fixed batch 2, run on 3 images (chunked and zero-padded by OnnxModel)
    onnx_path = outdir / "features.onnx"
    export_network(net, onnx_path, ExportOptions(batch=2), sidecar=False)
    model = OnnxModel(onnx_path)
    assert model.fixed_batch == 2
    for g, r in zip(model(xs), ref):
        assert _rel_diff(g, r) < 1e-4
    ts_path = outdir / "features.pt"
    export_network(net, ts_path, ExportOptions(format="torchscript", with_decode=True),
                   sidecar=False)
    with torch.no_grad():
        got = torch.jit.load(str(ts_path))(xs)
    assert _rel_diff(got, decoded_ref) < 1e-5
    # decoded rows = get_yolo_box on the heads' outputs (new_coords head included)
    meta = model.metadata
    for b in range(3):
        rows = np.concatenate([
            _numpy_get_yolo_box(h, r[b].numpy().reshape(h["n"], -1, h["h"], h["w"]),
                                meta["input_width"], meta["input_height"])
            for h, r in zip(meta["heads"], ref)])
        assert _rel_diff(got[b], rows) < 1e-5


def test_window_sums_export_with_their_divisor(features_net, outdir, monkeypatch):
    """Without the export path of ``window_sum`` the exporter drops ``divisor_override``
    (local_avgpool, downsample) and the ONNX numbers are wrong: this test can fail."""
    _, net, x = features_net
    with torch.no_grad():
        ref = net(x)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: False)
    path = outdir / "features-broken.onnx"
    export_network(net, path, ExportOptions(), sidecar=False)
    got = _session(path).run(None, {"input": x.numpy()})
    assert max(_rel_diff(g, r) for g, r in zip(got, ref)) > 1e-3


HEAD_KIND_CFGS = {
    "region": """
[net]
width=64
height=48
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
size=1
stride=1
pad=1
filters=40
activation=linear

[region]
anchors=1.1,1.3, 2.2,2.0, 3.0,1.2, 1.0,3.1, 4.2,4.0
classes=3
coords=4
num=5
softmax=1
""",
    "gaussian_yolo": """
[net]
width=64
height=48
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=33
activation=linear

[Gaussian_yolo]
mask=0,1,2
anchors=4,5, 8,9, 12,10, 16,20
classes=2
num=4
nms_kind=diounms
beta_nms=0.7

[route]
layers=-3

[convolutional]
size=1
stride=2
pad=1
filters=33
activation=linear

[Gaussian_yolo]
mask=1,2,3
anchors=4,5, 8,9, 12,10, 16,20
classes=2
num=4
yolo_point=left_top
scale_x_y=1.2
nms_kind=diounms
beta_nms=0.7
""",
}


@pytest.mark.parametrize("kind", list(HEAD_KIND_CFGS))
def test_decoded_onnx_equals_postprocess_for_region_and_gaussian_heads(kind, tmp_path):
    """A --with-decode ONNX file of [region] / [Gaussian_yolo] heads, thresholded and corrected
    by the runtime, gives the candidates darknet_py.model.decode decodes from the heads."""
    pytest.importorskip("darknet_py.model.decode")
    from darknet_py.infer.nms import apply_nms, nms_params
    from darknet_py.infer.backends.onnxruntime import OnnxRuntimeBackend as OnnxModel
    from darknet_py.model.decode import decoded_candidates, get_network_boxes
    cfg = tmp_path / f"{kind}.cfg"
    cfg.write_text(HEAD_KIND_CFGS[kind])
    try:
        net = Network.from_cfg(cfg)
    except CfgError as e:
        if "unsupported section" in str(e):
            pytest.skip(str(e))
        raise
    x = torch.rand(2, *net.input_shape, generator=torch.Generator().manual_seed(3))
    randomize_for_parity(net, x)
    path = tmp_path / "m.onnx"
    export_network(net, path, ExportOptions(with_decode=True), sidecar=False)
    model = OnnxModel(path)
    sizes = [(640, 480), (333, 500)]
    ours = decoded_candidates(model.heads, model(x), model.width, model.height, sizes, 0.3, True)
    with torch.no_grad():
        outs = net(x)
    # [region] records are read as records on both sides
    ref = get_network_boxes(list(zip(net.heads, outs)), net.width, net.height, sizes, 0.3, 0.5,
                            True)
    kind_, beta = nms_params(model.heads)
    assert (kind_, beta) == nms_params(net.heads)
    for a, b in zip(ours, ref):
        assert len(a) == len(b) > 5, len(a)
        assert torch.allclose(a.boxes, b.boxes, rtol=1e-5, atol=1e-6)
        assert torch.allclose(a.objectness, b.objectness, atol=1e-6)
        assert torch.allclose(a.probs, b.probs, atol=1e-6)
        na, nb = apply_nms(a, 0.45, kind_, beta), apply_nms(b, 0.45, kind_, beta)
        assert torch.equal(na.probs > 0, nb.probs > 0)


# -------------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors_and_leave_no_files(features_net, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from darknet_py.cli import main
    cfg, net, _ = features_net
    cfg_real, weights = model_files("yolov3-tiny")
    runner = CliRunner()
    # output folder missing
    res = runner.invoke(main, ["export", str(cfg_real), str(weights), "-o",
                               str(tmp_path / "nope" / "m.onnx")])
    assert res.exit_code == 1 and "output folder does not exist" in res.output
    # output is a directory
    res = runner.invoke(main, ["export", str(cfg_real), str(weights), "-o", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.output
    with pytest.raises(ExportError, match="output path is a directory"):
        export_network(net, tmp_path, ExportOptions())
    # a cfg that does not parse
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=abc\nheight=32\nchannels=3\n[yolo]\n")
    res = runner.invoke(main, ["export", str(bad), str(weights), "-o", str(tmp_path / "b.onnx")])
    assert res.exit_code == 1 and "bad.cfg" in res.output and "Traceback" not in res.output
    # contradictory flags
    res = runner.invoke(main, ["export", str(cfg_real), str(weights), "--with-nms", "--format",
                               "torchscript", "-o", str(tmp_path / "c.pt")])
    assert res.exit_code == 2 and "--with-nms" in res.output
    res = runner.invoke(main, ["export", str(cfg_real), str(weights), "--batch", "2",
                               "--dynamic-batch", "-o", str(tmp_path / "d.onnx")])
    assert res.exit_code == 2
    res = runner.invoke(main, ["export", str(cfg_real), str(weights), "--opset", "7",
                               "-o", str(tmp_path / "e.onnx")])
    assert res.exit_code == 2 and "opset" in res.output
    # the exporter failing half-way: ExportError, no file and no temp file left
    out = tmp_path / "f.onnx"

    def boom(*a, **k):
        raise RuntimeError("Unsupported: ONNX export of operator foo")
    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(ExportError, match="onnx export failed.*operator foo"):
        export_network(net, out, ExportOptions())
    monkeypatch.undo()
    # a network without a detection head
    headless = tmp_path / "headless.cfg"
    headless.write_text("[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\n"
                        "size=3\nactivation=leaky\n")
    with pytest.raises(ExportError, match="no detection head"):
        export_model(headless, None, tmp_path / "g.onnx")
    assert sorted(os.listdir(tmp_path)) == ["bad.cfg", "headless.cfg"]


def test_stateful_crnn_cannot_export(tmp_path):
    cfg = require(refpath("cfg", "darknet", "yolov3-tiny_occlusion_track.cfg"))
    try:
        net = Network.from_cfg(cfg, batch=1, width=64, height=64)
    except CfgError as e:
        if "unsupported section" in str(e):
            pytest.skip(str(e))
        raise
    with pytest.raises(ExportError, match=r"\[crnn\] layer \d+ keeps a hidden state"):
        export_network(net, tmp_path / "t.onnx")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------- sweep
def _detection_cfgs():
    folder = REFDATA / "cfg" / "darknet"
    found = []
    for path in sorted(glob.glob(str(folder / "*.cfg"))):
        text = Path(path).read_text(errors="replace")
        if re.search(r"^\s*\[(yolo|region|Gaussian_yolo)\]", text, re.M):
            found.append(os.path.basename(path))
    return found


#: fast cfgs covering xnor convs, [region] with softmax (YOLOv2), yolov7-tiny's pooling pyramid
#: (the real models above cover route groups, upsample, shortcut, yolo); everything else is slow
SWEEP_FAST = {"yolov3-tiny_xnor.cfg", "tiny-yolo-voc.cfg", "yolov7-tiny.cfg"}
#: cfgs that must refuse to export, with the reason
CANNOT_EXPORT = {"yolov3-tiny_occlusion_track.cfg": r"\[crnn\] layer \d+ keeps a hidden state"}
#: cfgs refused when they are read (a [yolo] mask index beyond num: Darknet reads past its anchors)
REFUSED_CFGS = {"cspx-p7-mish.cfg": r"mask index 16 is outside the num=16 anchors"}

_ALL_CFGS = _detection_cfgs() if REFDATA.is_dir() else []
SWEEP = [pytest.param(c, marks=() if c in SWEEP_FAST else pytest.mark.slow) for c in _ALL_CFGS]


def test_sweep_covers_every_detection_cfg():
    if not _ALL_CFGS:
        pytest.skip(f"reference cfgs not found under {REFDATA}")
    assert len(_ALL_CFGS) == 54


def _build_small(cfg_path: Path) -> Network:
    last = None
    for size in (64, 128, 256):
        try:
            torch.manual_seed(0)
            return Network.from_cfg(cfg_path, batch=1, width=size, height=size)
        except CfgError as e:
            if "unsupported section" in str(e):
                pytest.skip(f"layer type not implemented yet: {e}")
            last = e
    raise last  # type: ignore[misc]


@pytest.mark.parametrize("cfg", SWEEP)
def test_sweep_cfg_exports_and_matches_pytorch(cfg, tmp_path, monkeypatch):
    cfg_path = require(REFDATA / "cfg" / "darknet" / cfg)
    if cfg == "yolo9000.cfg":  # reads data/9k.tree and data/coco9k.map relative to the cwd
        (tmp_path / "data").mkdir()
        for name in ("9k.tree", "coco9k.map"):
            (tmp_path / "data" / name).symlink_to(cfg_path.parent / name)
        monkeypatch.chdir(tmp_path)
    if cfg in REFUSED_CFGS:
        with pytest.raises(CfgError, match=REFUSED_CFGS[cfg]):
            _build_small(cfg_path)
        return
    net = _build_small(cfg_path)
    if cfg in CANNOT_EXPORT:
        with pytest.raises(ExportError, match=CANNOT_EXPORT[cfg]):
            export_network(net, tmp_path / "m.onnx")
        return
    x = torch.rand(1, *net.input_shape, generator=torch.Generator().manual_seed(1))
    randomize_for_parity(net, x)
    with torch.no_grad():
        ref = [r.numpy() for r in net(x)]
    assert max(float(np.abs(r).max()) for r in ref) > 0.55, "outputs vanished"
    onnx_path = tmp_path / "m.onnx"
    meta = export_network(net, onnx_path, ExportOptions(), sidecar=False)
    got = _session(onnx_path).run(None, {"input": x.numpy()})
    assert len(got) == len(ref) == len(meta["heads"])
    for g, r, h in zip(got, ref, meta["heads"]):
        assert g.shape == r.shape
        diff = _rel_diff(g, r)
        assert diff < 1e-4, f"{cfg} {h['output']}: onnxruntime differs by {diff:.3g} (relative)"
    ts_path = tmp_path / "m.pt"
    export_network(net, ts_path, ExportOptions(format="torchscript"), sidecar=False)
    with torch.no_grad():
        outs = torch.jit.load(str(ts_path))(x)
    for g, r in zip(outs, ref):
        assert _rel_diff(g.numpy(), r) < 1e-5
    del net, outs, got
    gc.collect()  # the largest cfgs hold GBs of weights


def test_detector_test_on_a_torchscript_export_says_only_onnx_runs(tmp_path):
    """`detector test coco.data model.pt image`: a TorchScript export is not a model the
    commands run; one line saying so and naming ONNX (it said 'not a text cfg file')."""
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[2]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "darknet_py.cli", *map(str, args)],
                              cwd=repo, capture_output=True, text=True, timeout=300)
    pt = tmp_path / "model.pt"
    r = cli("export", "cfg/yolo-fastest-1.1.cfg", "weights/yolo-fastest-1.1.weights", "-o", pt,
            "--format", "torchscript")
    assert r.returncode == 0, r.stderr[-1000:]
    for args in ([pt, "data/dog.jpg"], [pt, "weights/yolo-fastest-1.1.weights", "data/dog.jpg"]):
        r = cli("detector", "test", "cfg/coco.data", *args, "-dont_show")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-1000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(pt) in lines[0] and "TorchScript" in lines[0]
        assert "ONNX export" in lines[0] and "NUL" not in lines[0]
