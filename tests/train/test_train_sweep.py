"""One training iteration on every detection cfg of Darknet's ``cfg/`` folder.

For each of the 54 cfgs (the list of ``oracle/network_tables/summary.tsv``): build the network at
a small input (twice its largest head stride, at least 64; ``batch`` a multiple of ``time_steps``
for the recurrent cfgs), run the training forward on random truth boxes, back-propagate the sum of
the heads' losses (as :class:`~darknet_py.train.trainer.Trainer` does) and check that

* the loss is finite, and
* every parameter Darknet would update gets a non-zero, finite gradient: all of them except
  those of layers frozen by ``stopbackward``/``train_only_bn``/``dont_update``, and the branch that
  feeds only a loss-only ``[contrastive]`` layer (its loss is not implemented; the trainer says
  so at start).

``cspx-p7-mish.cfg`` is refused at parse time (a ``mask`` index beyond ``num``: Darknet reads past
its anchors there), with the line named. The default run takes one cfg per head kind and per
special layer; the whole sweep is ``@slow``.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Set

import numpy as np
import pytest
import torch

from conftest import refpath, require
from darknet_py.errors import CfgError
from darknet_py.layers.contrastive import ContrastiveLayer
from darknet_py.layers.convolutional import ConvolutionalLayer
from darknet_py.model.network import Network
from darknet_py.train.loss import heads_loss

CFG_DIR = refpath("cfg", "darknet")


def _cfg_names() -> List[str]:
    import csv
    summary = refpath("oracle", "network_tables", "summary.tsv")
    if not summary.exists():
        return []
    with open(summary) as f:
        return [r["cfg"][:-4] for r in csv.DictReader(f, delimiter="\t")]


CFGS = _cfg_names()


@pytest.fixture(scope="module")
def darknet_cwd(tmp_path_factory):
    """A folder with data/9k.tree and data/coco9k.map, as yolo9000.cfg expects in the cwd."""
    d = tmp_path_factory.mktemp("darknet_cwd")
    (d / "data").mkdir()
    for name in ("9k.tree", "coco9k.map"):
        if (CFG_DIR / name).exists():
            (d / "data" / name).symlink_to(CFG_DIR / name)
    return d


@pytest.fixture
def in_darknet_cwd(darknet_cwd, monkeypatch):
    monkeypatch.chdir(darknet_cwd)
    return darknet_cwd

#: cfgs Darknet cannot train either, with the reason darknet-py gives (a CfgError at this line)
REFUSED: Dict[str, str] = {
    "cspx-p7-mish": r"cspx-p7-mish\.cfg.*mask index 16 is outside the num=16 anchors",
}

#: the default run: each head kind, the special layers and the refusal
FAST = {
    "yolov2-tiny", "tiny-yolo_xnor", "yolo9000",                   # [region], xnor, tree softmax
    "Gaussian_yolov3_BDD",                                          # [Gaussian_yolo]
    "yolov3-tiny", "yolov4-tiny", "yolov3-tiny_xnor", "yolov7-tiny",  # [yolo] variants
    "yolov3-tiny_occlusion_track",                                  # [crnn], time_steps
    "yolov4-tiny_contrastive",                                      # [contrastive]
    "cspx-p7-mish",                                                 # refused
}


def _params():
    return [pytest.param(c, marks=() if c in FAST else pytest.mark.slow) for c in CFGS]


def _random_truth(batch: int, classes: int, seed: int) -> torch.Tensor:
    """Five random boxes per image (``classes``: the label ids the data can hold)."""
    rng = np.random.default_rng(seed)
    t = np.zeros((batch, 12, 6), np.float32)
    for b in range(batch):
        for k in range(5):
            t[b, k] = [rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.6),
                       rng.uniform(0.05, 0.6), rng.integers(0, classes), k]
    return torch.from_numpy(t)


def _contrastive_only_layers(net: Network) -> Set[int]:
    """Layers whose output reaches a ``[contrastive]`` layer but no detection head."""
    readers: Dict[int, List[int]] = {i: [] for i in range(len(net.layers))}
    for layer in net.layers:
        srcs = list(layer.inputs) + ([layer.index - 1] if layer.uses_previous and layer.index else [])
        for s in srcs:
            readers[s].append(layer.index)

    def reaching(target) -> Set[int]:
        found: Set[int] = set()
        for layer in reversed(list(net.layers)):
            if target(layer) or any(r in found for r in readers[layer.index]
                                    if not isinstance(net.layers[r], ContrastiveLayer)):
                found.add(layer.index)
        return found

    to_head = reaching(lambda l: l.is_head)
    to_contrastive = reaching(lambda l: any(isinstance(net.layers[r], ContrastiveLayer)
                                            for r in readers[l.index]))
    return to_contrastive - to_head


def _frozen_layers(net: Network) -> Set[int]:
    """Layers whose weights Darknet does not train in this iteration."""
    frozen: Set[int] = set()
    for layer in net.layers:
        if getattr(layer, "stopbackward", 0) or getattr(layer, "train_only_bn", 0):
            frozen.update(range(layer.index + 1))
        if getattr(layer, "dont_update", 0):
            frozen.add(layer.index)
    return frozen


def _build(cfg: str, size: int, batch: int) -> Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Network.from_cfg(require(CFG_DIR / f"{cfg}.cfg"), width=size, height=size,
                                batch=batch)


@pytest.mark.parametrize("cfg", _params())
def test_one_training_iteration(cfg, in_darknet_cwd):
    if cfg in REFUSED:   # at the cfg's own size (its routes need it), without weight init
        with pytest.MonkeyPatch.context() as mp, pytest.raises(CfgError, match=REFUSED[cfg]) as e:
            mp.setattr(ConvolutionalLayer, "reset_parameters", lambda self: None)
            Network.from_cfg(require(CFG_DIR / f"{cfg}.cfg"), batch=1)
        assert e.value.line is not None
        return
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = Network.from_cfg(require(CFG_DIR / f"{cfg}.cfg"), batch=1)
    stride = max(full.width // h.in_shape[2] for h in full.heads)
    time_steps = max(1, full.config.time_steps)
    del full
    size = max(64, 2 * stride)
    batch = max(2, time_steps)
    net = _build(cfg, size, batch)
    net.train()
    x = torch.rand(batch, net.channels, size, size, generator=torch.Generator().manual_seed(1))
    head = net.heads[-1]
    # a map= file maps the data's label ids (yolo9000: 80 COCO ids) into the classes
    labels = len(head.map) if getattr(head, "map", None) else net.classes
    truth = _random_truth(batch, labels, seed=2)
    raw = net(x, raw_heads=True)
    total, costs, stats = heads_loss(net.heads, raw, truth, size, size, seen=64)
    assert torch.isfinite(total), f"{cfg}: loss {float(total)}"
    assert all(np.isfinite(st.cost) for _, st in stats)
    total.backward()

    skip = _frozen_layers(net) | _contrastive_only_layers(net)
    missing = []
    for layer in net.layers:
        if layer.index in skip:
            continue
        for name, p in layer.named_parameters():
            if not p.requires_grad:
                continue
            g = p.grad
            if g is None or not bool(torch.isfinite(g).all()) or not bool(g.abs().max() > 0):
                missing.append(f"layer {layer.index} {type(layer).__name__}.{name}")
    assert not missing, f"{cfg}: no (finite, non-zero) gradient for {missing[:8]}" \
                        f"{' ...' if len(missing) > 8 else ''} ({len(missing)} tensors)"
