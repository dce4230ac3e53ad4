"""Forward parity with real Darknet on real weights (oracle/dumps)."""
import json

import numpy as np
import pytest
import torch

from models import MODELS, dump_dir, dump_input, load_model

DUMPS = [("yolov4-tiny", "yolov4-tiny__dog"), ("yolov4-tiny", "yolov4-tiny__dog__letterbox"),
         ("yolov3-tiny", "yolov3-tiny__dog"), ("yolo-fastest-1.1", "yolo-fastest-1.1__dog"),
         ("yolo-fastest-1.1-xl", "yolo-fastest-1.1-xl__dog")]


@pytest.mark.parametrize("model,dump", DUMPS, ids=[d for _, d in DUMPS])
def test_yolo_outputs_match_darknet(model, dump):
    folder = dump_dir(dump)
    net = load_model(model)
    with torch.no_grad():
        outs = net(dump_input(folder))
    assert len(outs) == len(net.heads) >= 2
    for head, out in zip(net.heads, outs):
        ref = np.load(folder / f"layer{head.index:03d}_yolo.npy")
        ours = out[0].numpy().reshape(ref.shape)
        diff = float(np.abs(ours - ref).max())
        assert diff < 1e-4, f"{dump} layer {head.index}: max abs diff {diff}"


@pytest.mark.parametrize("model,dump", [("yolov4-tiny", "yolov4-tiny__dog__all_layers"),
                                        ("yolo-fastest-1.1", "yolo-fastest-1.1__dog__all_layers")])
def test_every_dumped_layer_matches_darknet(model, dump):
    folder = dump_dir(dump)
    net = load_model(model)
    with torch.no_grad():
        outs = net.forward_all(dump_input(folder))
    checked = 0
    for f in sorted(folder.glob("layer*_*.npy")):
        idx = int(f.name[5:8])
        ref = np.load(f)
        ours = outs[idx][0].numpy().reshape(ref.shape)
        scale = max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(ours - ref).max()) / scale
        assert diff < 1e-4, f"{dump} layer {idx} ({f.name}): max diff {diff}"
        checked += 1
    assert checked >= 10, "too few layers compared"


def test_unfused_equals_fused():
    net_f = load_model("yolov4-tiny", fused=True)
    net_u = load_model("yolov4-tiny", fused=False)
    x = dump_input(dump_dir("yolov4-tiny__dog"))
    with torch.no_grad():
        a, b = net_f(x), net_u(x)
    for u, v in zip(a, b):
        assert float((u - v).abs().max()) < 1e-4


def test_batch_of_images_equals_single_runs():
    net = load_model("yolo-fastest-1.1")
    x = dump_input(dump_dir("yolo-fastest-1.1__dog"))
    x2 = torch.cat([x, x.flip(-1)])
    with torch.no_grad():
        batched = net(x2)
        singles = [net(x), net(x.flip(-1))]
    for h in range(len(batched)):
        for b in range(2):
            assert float((batched[h][b] - singles[b][h][0]).abs().max()) < 1e-5
