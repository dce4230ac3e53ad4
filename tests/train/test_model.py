"""The network of ``detector train`` (darknet_py.train.model) on a tiny cfg: the checks before
training, partial start weights, the device's batch-norm momentum."""
import pytest
import torch

from darknet_py.data.datacfg import read_data_cfg
from darknet_py.errors import DataError, UsageError
from darknet_py.layers.convolutional import BN_MOMENTUM_CPU
from darknet_py.train.model import (build_network, load_start_weights, partial_cutoff,
                                    place_network)
from darknet_py.train.precision import Precision

CFG = """[net]
batch={batch}
subdivisions=1
width=32
height=32
channels=3
max_batches=10

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=18
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "t.cfg").write_text(CFG.format(batch=2))
    (tmp_path / "obj.data").write_text("classes=1\ntrain=train.txt\n")
    return tmp_path


def _build(files, cfg="t.cfg", data="obj.data", **kw):
    return build_network(str(files / cfg), read_data_cfg(files / data), str(files / data), **kw)


def test_build_overrides_max_batches(files):
    assert _build(files).config.max_batches == 10
    assert _build(files, max_batches=3).config.max_batches == 3


def test_build_refuses_what_cannot_train(files):
    (files / "three.data").write_text("classes=3\ntrain=train.txt\n")
    with pytest.raises(DataError, match=r"classes=3 in .*three.data but classes=1 in the last "
                                        r"detection layer of .*t.cfg"):
        _build(files, data="three.data")
    (files / "one.cfg").write_text(CFG.format(batch=1))
    with pytest.raises(UsageError, match="batch=1 cannot train"):
        _build(files, cfg="one.cfg")
    (files / "headless.cfg").write_text(CFG.format(batch=2).split("[yolo]")[0])
    with pytest.raises(UsageError, match="has no detection layer"):
        _build(files, cfg="headless.cfg")


def test_partial_weights_load_up_to_where_the_file_ends(files):
    torch.manual_seed(1)
    whole = _build(files)
    whole.seen = 40
    whole.save_weights(files / "whole.weights")
    whole.save_weights(files / "two.weights", cutoff=2)       # what `partial ... 2` writes
    net = _build(files)
    assert partial_cutoff(net, str(files / "two.weights")) == 2
    assert partial_cutoff(net, str(files / "whole.weights")) == 3      # [yolo] holds none
    (files / "cut.weights").write_bytes((files / "whole.weights").read_bytes()[:-4])
    assert partial_cutoff(net, str(files / "cut.weights")) is None     # mid-layer: no cutoff
    said = []
    load_start_weights(net, str(files / "two.weights"), said.append)
    assert said == [f"Loaded 2 layers from weights-file {files / 'two.weights'}, seen 40"]
    assert torch.equal(net.layers[1].weight, whole.layers[1].weight)
    assert not torch.equal(net.layers[2].weight, whole.layers[2].weight)


def test_place_network_uses_the_cpu_builds_batch_norm_momentum(files):
    net = _build(files)
    for layer in net.layers:
        if hasattr(layer, "bn_momentum"):
            layer.bn_momentum = -1.0
    place_network(net, torch.device("cpu"), Precision("cpu"))
    momenta = [layer.bn_momentum for layer in net.layers if hasattr(layer, "bn_momentum")]
    assert momenta and all(m == BN_MOMENTUM_CPU for m in momenta)
