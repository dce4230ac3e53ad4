"""The detection heads' training deltas against Darknet's CPU build, and the head contract.

Oracle: ``tests/fixtures/files/head_oracle/`` (its README says how it was recorded): AlexeyAB
Darknet's ``forward_region_layer`` / ``forward_gaussian_yolo_layer`` in training mode, driven on a
recorded head input and truth (tiny-yolo-voc's and yolov2's ``[region]``, with ``*net.seen`` below
and above 12800; Gaussian_yolov3_BDD's ``[Gaussian_yolo]`` with its ``giou`` loss and with
``mse``). Each case's truths include two boxes in one cell, predictions placed on truths, and a
row with a class beyond ``classes`` before the last valid row. Measured: deltas within 1e-6,
``l.cost`` within 1e-6 relative; the asserts allow 1e-4.
"""
from __future__ import annotations

import json
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, refpath, require
from darknet_py.errors import CfgError
from darknet_py.layers.head import DetectionHead
from darknet_py.layers.registry import HEAD_TYPES, LAYER_TYPES, head_class
from darknet_py.model.network import Network

ORACLE = Path(__file__).resolve().parent.parent / "fixtures" / "files" / "head_oracle"
CASES = sorted(p.name for p in ORACLE.iterdir() if p.is_dir()) if ORACLE.is_dir() else []
_NUMBER = re.compile(r"-?nan|-?\d+\.\d+|\d+")


def _numbers(line: str):
    return [float("nan") if "nan" in v else float(v) for v in _NUMBER.findall(line)]


def _case(name: str):
    d = ORACLE / name
    meta = json.loads((d / "meta.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.from_cfg(d / "cfg.cfg")
    return d, meta, net


def test_oracle_cases_present():
    assert {"region_tiny_yolo_voc_seen0", "region_tiny_yolo_voc_seen20000",
            "region_yolov2_seen20000", "gaussian_bdd", "gaussian_bdd_mse"} <= set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_delta_and_loss_line_equal_darknet(name):
    d, meta, net = _case(name)
    head = net.heads[0]
    x = torch.from_numpy(np.load(d / "input.npy"))
    truth = torch.from_numpy(np.load(d / "truth.npy"))
    out = head.activate(x)
    ref_out = np.load(d / "output.npy")
    np.testing.assert_allclose(out.reshape(ref_out.shape).numpy(), ref_out, atol=1e-6, rtol=0)

    delta, stats = head.delta(out, truth, meta["net_w"], meta["net_h"],
                              meta["seen_as_seen_by_layer"])
    ref = np.load(d / "delta.npy")
    assert tuple(delta.shape) == ref.shape            # the raw input's layout
    np.testing.assert_allclose(delta.numpy(), ref, atol=1e-4, rtol=1e-4)
    assert stats.cost == pytest.approx(meta["cost"], rel=1e-4)

    line = stats.line(meta.get("state_index_of_head", head.index))
    theirs = meta["loss_lines"][0]
    # same text, numbers within printf rounding of a float difference
    assert re.sub(_NUMBER, "#", line).rstrip() == re.sub(_NUMBER, "#", theirs).rstrip()
    for a, b in zip(_numbers(line), _numbers(theirs)):
        assert a == pytest.approx(b, rel=1e-4, abs=2e-6), (line, theirs)


@pytest.mark.parametrize("name", ["region_tiny_yolo_voc_seen0", "gaussian_bdd"])
def test_backward_hands_minus_delta_to_the_raw_input(name):
    d, meta, net = _case(name)
    head = net.heads[0]
    raw = torch.from_numpy(np.load(d / "input.npy")).requires_grad_()
    truth = torch.from_numpy(np.load(d / "truth.npy"))
    cost, stats, out = head.loss(raw, truth, meta["net_w"], meta["net_h"],
                                 meta["seen_as_seen_by_layer"])
    (2.0 * cost).backward()
    delta, _ = head.delta(head.activate(raw.detach()), truth, meta["net_w"], meta["net_h"],
                          meta["seen_as_seen_by_layer"])
    torch.testing.assert_close(raw.grad, -2.0 * delta)
    assert float(cost.detach()) == pytest.approx(stats.cost, rel=1e-6)


def test_region_prior_term_only_below_12800_seen():
    d, meta, net = _case("region_tiny_yolo_voc_seen0")
    head = net.heads[0]
    out = head.activate(torch.from_numpy(np.load(d / "input.npy")))
    truth = torch.from_numpy(np.load(d / "truth.npy"))
    early, _ = head.delta(out, truth, 7, 5, seen=12799)
    late, _ = head.delta(out, truth, 7, 5, seen=12800)
    differs = (early != late).reshape(2, head.n, head.size, 5, 7).any(dim=(0, 3, 4))
    assert differs[:, :4].any() and not differs[:, 4:].any()   # only box entries move


# ----------------------------------------------------------------------------- the contract
def test_every_head_kind_is_one_registered_class():
    heads = {cls for cls in LAYER_TYPES.values() if issubclass(cls, DetectionHead)}
    assert set(HEAD_TYPES.values()) == heads
    assert set(HEAD_TYPES) == {"yolo", "gaussian_yolo", "region"}
    for kind, cls in HEAD_TYPES.items():
        assert cls.kind == kind and head_class(kind) is cls
        for method in ("activate", "head_spec", "decode_rows", "delta"):
            assert getattr(cls, method) is not getattr(DetectionHead, method), (kind, method)
    assert {c.type_code for c in heads} == {27, 28, 29}


def test_one_box_function_per_head_kind():
    """The only definitions of Darknet's get_*_box in the package: one per head kind."""
    out = subprocess.run(["git", "grep", "-n", "-E", r"^\s*def get_[a-z_]*box\(", "--",
                          "darknet_py"], cwd=REPO, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        pytest.skip("not a git checkout")
    names = sorted(re.search(r"def (get_[a-z_]*box)\(", l).group(1)
                   for l in out.stdout.splitlines())
    assert names == ["get_gaussian_yolo_box", "get_region_box", "get_yolo_box"], out.stdout


def test_decode_uses_the_heads_box_function():
    """decode_rows of each kind is its box function on the rows (one arithmetic)."""
    from darknet_py.layers.gaussian_yolo import get_gaussian_yolo_box
    from darknet_py.layers.region import get_region_box
    from darknet_py.layers.yolo import get_yolo_box
    g = torch.Generator().manual_seed(0)
    gx, gy = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0])
    aw, ah = torch.tensor([10.0, 30.0]), torch.tensor([14.0, 20.0])
    for kind, fn, args in (
            ("yolo", get_yolo_box, lambda r: (r[:, 0], r[:, 1], r[:, 2], r[:, 3])),
            ("region", get_region_box, lambda r: (r[:, 0], r[:, 1], r[:, 2], r[:, 3])),
            ("gaussian_yolo", get_gaussian_yolo_box, lambda r: (r[:, 0], r[:, 2], r[:, 4], r[:, 6]))):
        cls = head_class(kind)
        spec = cls.make_spec(index=0, classes=2, n=2, total=2, mask=(0, 1),
                             anchors=(10.0, 14.0, 30.0, 20.0), w=4, h=3)
        r = torch.rand(2, spec.entries, generator=g)
        rows, _ = cls.decode_rows(spec, r, gx, gy, aw, ah, 64, 48)
        extra = (64, 48, False) if kind == "yolo" else (() if kind == "region" else (64, 48, "center"))
        box = torch.stack(fn(*args(r), gx, gy, aw, ah, 4, 3, *extra), dim=-1)
        torch.testing.assert_close(rows[:, :4], box, rtol=0, atol=0)


def test_mask_beyond_num_is_a_cfg_error_naming_the_line(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n\n[convolutional]\nfilters=18\n"
                   "size=1\nactivation=linear\n\n[yolo]\nnum=3\nmask=1,2,3\n"
                   "anchors=1,2,3,4,5,6,7,8\nclasses=1\n")
    with pytest.raises(CfgError) as e:
        Network.from_cfg(cfg)
    assert e.value.line == 13 and "mask index 3 is outside the num=3 anchors" in str(e.value)
    assert "bad.cfg" in str(e.value)


# ----------------------------------------------------------------------------- [region] sizes
def test_region_network_runs_and_trains_at_other_input_sizes():
    cfg = require(refpath("cfg", "darknet", "yolov2-tiny.cfg"))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.from_cfg(cfg, width=128, height=128, batch=2)
    for w, h in ((128, 128), (160, 96)):
        net.eval()
        with torch.no_grad():
            (out,) = net(torch.rand(1, 3, h, w))
        assert tuple(out.shape) == (1, h // 32, w // 32, 5, 85)
        net.train()
        raw = net(torch.rand(2, 3, h, w), raw_heads=True)
        truth = torch.tensor([[[0.5, 0.5, 0.2, 0.3, 1, 0]]] * 2)
        cost, stats, _ = net.heads[0].loss(raw[0], truth, w, h, seen=0)
        cost.backward()
        assert torch.isfinite(cost) and stats.count == 2
        assert net.layers[0].weight.grad.abs().max() > 0
        net.zero_grad()


@pytest.mark.parametrize("head", ["yolo", "Gaussian_yolo"])
def test_map_file_maps_label_ids_to_classes_in_the_loss(tmp_path, head):
    """``map=`` (read_map): a label id is trained as the class the map gives it."""
    entries = 5 + 3 if head == "yolo" else 9 + 3
    (tmp_path / "ids.map").write_text("2\n0\n")
    text = ("[net]\nwidth=64\nheight=64\nchannels=3\n\n[convolutional]\n"
            f"filters={entries}\nsize=1\nactivation=linear\n\n[{head}]\nnum=1\nmask=0\n"
            "anchors=20,20\nclasses=3\n")
    (tmp_path / "plain.cfg").write_text(text)
    (tmp_path / "mapped.cfg").write_text(text + f"map={tmp_path / 'ids.map'}\n")
    plain = Network.from_cfg(tmp_path / "plain.cfg").heads[0]
    mapped = Network.from_cfg(tmp_path / "mapped.cfg").heads[0]
    assert mapped.class_map == [2, 0]
    out = plain.activate(torch.randn(1, entries, 2, 2, generator=torch.Generator().manual_seed(0)))
    row = [0.4, 0.6, 0.3, 0.3]
    as_class_2, _ = plain.delta(out, torch.tensor([[row + [2, 0]]]), 64, 64)
    as_label_0, _ = mapped.delta(out, torch.tensor([[row + [0, 0]]]), 64, 64)
    torch.testing.assert_close(as_label_0, as_class_2)
    not_mapped, _ = plain.delta(out, torch.tensor([[row + [0, 0]]]), 64, 64)
    assert not torch.equal(not_mapped, as_class_2)
