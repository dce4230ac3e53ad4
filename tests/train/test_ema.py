"""``[net] ema_alpha``: Darknet's weights average (``train_network_waitkey``, ``ema_update``,
``ema_apply``, ``save_convolutional_weights_ema``), on a tiny network and in the trainer."""
import io
import os
import struct

import numpy as np
import pytest
import torch

from darknet_py.formats.cfg import parse_cfg_text
from darknet_py.model.network import Network
from darknet_py.train.ema import WeightsEMA

CFG = """[net]
batch=1
width=16
height=16
channels=3
max_batches={max_batches}
ema_alpha={alpha}

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=4
size=1
stride=1
activation=linear

[convolutional]
filters=4
size=1
stride=1
activation=linear
share_index=1

[maxpool]
size=2
stride=2
"""


def _net(max_batches, alpha=0.9):
    torch.manual_seed(0)
    return Network(parse_cfg_text(CFG.format(max_batches=max_batches, alpha=alpha)), "t.cfg")


def _f32(t):
    return t.detach().cpu().numpy().astype(np.float32)


def _train_step(net, gen):
    """Stands in for an optimizer step: every parameter moves."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def test_averaged_parameters_are_darknets():
    net = _net(2010)
    ema = WeightsEMA.for_network(net)
    conv0, conv1 = net.layers[0], net.layers[1]
    # weights, biases, BN scales of the convs owning them; no rolling stats, no shared conv
    assert [id(p) for p in ema.params] == [id(conv0.weight), id(conv0.bias), id(conv0.scales),
                                           id(conv1.weight), id(conv1.bias)]
    assert (ema.start_point, ema.apply_point) == (1005, 1010)
    assert WeightsEMA.for_network(_net(2010, alpha=0)) is None
    # below a stopbackward=1 the convs are built with train=0: no average
    below = WeightsEMA.for_network(net, train0_below=1)
    assert [id(p) for p in below.params] == [id(conv1.weight), id(conv1.bias)]


def test_init_update_apply_follow_train_network_waitkey():
    net = _net(2010)                                   # start 1005, apply 1010
    ema = WeightsEMA.for_network(net)
    a = np.float32(0.9)
    gen = torch.Generator().manual_seed(1)
    ref = None
    for it in range(1000, 1016):
        _train_step(net, gen)
        w = [_f32(p) for p in ema.params]
        lines = ema.after_update(it)
        expected_lines = []
        if it >= 1005:
            if ref is None:                            # ema_update(net, 0)
                ref = [x.copy() for x in w]
                expected_lines.append(" EMA initialization ")
            if it == 1010:                             # ema_apply(net)
                expected_lines.append(" ema_apply() ")
                for p, r in zip(ema.params, ref):
                    assert np.array_equal(_f32(p), r), it
            elif it < 1010:                            # ema_update(net, ema_alpha), float32
                ref = [a * r + (np.float32(1) - a) * x for r, x in zip(ref, w)]
                expected_lines.append(" ema_update(), ema_alpha = 0.900000 ")
        assert lines == expected_lines, it
        if ref is None:
            assert not ema.initialized and not ema.averages
        else:
            for avg, r in zip(ema.averages, ref):
                assert np.array_equal(_f32(avg), r), it
        if it != 1010:                                 # only the apply touches the weights
            for p, x in zip(ema.params, w):
                assert np.array_equal(_f32(p), x), it
    # the average moved (it is not a copy of some iteration's weights) and froze after 1009
    assert not np.array_equal(ref[0], w[0])


def test_short_runs_only_initialise():
    """max_batches < 2000: the apply point (max_batches - 1000) precedes the start point, so
    Darknet copies the weights of iteration max_batches/2 and never updates nor applies them."""
    net = _net(10)
    ema = WeightsEMA.for_network(net)
    gen = torch.Generator().manual_seed(2)
    for it in range(1, 11):
        _train_step(net, gen)
        lines = ema.after_update(it)
        if it == 5:
            snapshot = [_f32(p) for p in ema.params]
            assert lines == [" EMA initialization "]
        else:
            assert lines == []
    assert all(np.array_equal(_f32(avg), s) for avg, s in zip(ema.averages, snapshot))
    assert not ema.applied


def test_ema_file_is_save_weights_upto_with_save_ema(tmp_path):
    net = _net(2010)
    ema = WeightsEMA.for_network(net)
    gen = torch.Generator().manual_seed(3)
    for it in (1005, 1006, 1007):
        _train_step(net, gen)
        ema.after_update(it)
    with torch.no_grad():                              # rolling stats are saved as they are
        net.layers[0].rolling_mean.add_(0.25)
        net.layers[0].rolling_variance.mul_(1.5)
    _train_step(net, gen)                              # weights now differ from the average
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.seen = 1007 * 1
    ema.save(str(tmp_path / "t_ema.weights"))
    data = (tmp_path / "t_ema.weights").read_bytes()
    avg = [_f32(t) for t in ema.averages]
    c0 = net.layers[0]
    expected = struct.pack("<iiiQ", 0, 2, 5, 1007) + b"".join(x.tobytes() for x in [
        avg[1], avg[2], _f32(c0.rolling_mean), _f32(c0.rolling_variance), avg[0].ravel(),
        avg[4], avg[3].ravel()])                       # the shared conv and [maxpool]: nothing
    assert data == expected
    for k, v in net.state_dict().items():              # the network keeps its own weights
        assert torch.equal(v, before[k]), k


# ------------------------------------------------------------------------------ in the trainer
@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    from train_fixtures import make_shapes_workdir
    from darknet_py.train.trainer import TrainOptions, Trainer
    work = make_shapes_workdir(tmp_path_factory.mktemp("ema") / "shapes", n_images=4, size=64,
                               batch=2, max_batches=2004, burn_in=1)
    (work / "obj.data").write_text((work / "obj.data").read_text() + "savelast=1\n")
    cfg = work / "small.cfg"
    cfg.write_text(cfg.read_text().replace("[net]\n", "[net]\nema_alpha=0.9\n", 1))
    torch.manual_seed(0)
    start = Network.from_cfg(cfg)
    start.seen = 1001 * 2                    # resume at iteration 1001 of 2004
    start.save_weights(work / "start.weights")
    record = {"stepped": {}, "after": {}}

    class Recording(Trainer):
        def setup(self):
            super().setup()
            step = self.optimizer.step

            def recorded_step(it, **kw):      # the trained weights, before the EMA block
                out = step(it, **kw)
                record["stepped"][it] = [_f32(p) for p in self.ema.params]
                return out
            self.optimizer.step = recorded_step

        def train_iteration(self):
            loss = super().train_iteration()
            record["after"][self.iteration] = [_f32(p) for p in self.ema.params]
            if self.iteration >= 1005:           # enough: stop as Ctrl-C would
                self.request_stop()
            return loss

    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        trainer = Recording(TrainOptions(data="obj.data", cfg="small.cfg",
                                         weights="start.weights", workers=0, seed=3, chart=False,
                                         nogpu=True, bf16=False), out=out)
        trainer.run()
    finally:
        os.chdir(cwd)
    return work, trainer, record, out.getvalue()


def test_trainer_averages_applies_and_saves_as_darknet(ema_run):
    work, trainer, record, log = ema_run
    ema = trainer.ema
    assert (ema.start_point, ema.apply_point) == (1002, 1004)
    assert sorted(record["stepped"]) == [1002, 1003, 1004, 1005]
    a, b = np.float32(0.9), np.float32(1) - np.float32(0.9)
    ref = [x.copy() for x in record["stepped"][1002]]                  # initialisation
    for it in (1002, 1003):                                           # updates
        ref = [a * r + b * x for r, x in zip(ref, record["stepped"][it])]
    for avg, r in zip(ema.averages, ref):
        assert np.array_equal(_f32(avg), r)
    # iteration 1004: the weights became the average; 1005 trained on from there
    for p, r in zip(record["after"][1004], ref):
        assert np.array_equal(p, r)
    assert not np.array_equal(record["after"][1005][0], ref[0])
    assert log.count(" EMA initialization ") == 1 and log.count(" ema_apply() ") == 1
    assert "ema_update()" not in log                  # per-iteration line only with -verbose
    # <cfg>_ema.weights: the averages in the convs, everything else as in <cfg>_last.weights
    backup = work / "backup"
    assert f" EMA weights are saved to the file: backup{os.sep}small_ema.weights " in log
    last = Network.from_cfg(work / "small.cfg")
    last.load_weights(backup / "small_last.weights")
    saved = Network.from_cfg(work / "small.cfg")
    saved.load_weights(backup / "small_ema.weights")
    assert saved.seen == last.seen == 1005 * 2
    averaged = {id(p): avg for p, avg in zip(ema.params, ema.averages)}
    n_avg = 0
    for layer, s_layer, l_layer in zip(trainer.net.layers, saved.layers, last.layers):
        for (name, p), s, l in zip(layer.named_parameters(recurse=True),
                                   s_layer.parameters(recurse=True),
                                   l_layer.parameters(recurse=True)):
            assert torch.equal(l, p.detach()), (layer.index, name)
            if id(p) in averaged:
                n_avg += 1
                assert torch.equal(s, averaged[id(p)]), (layer.index, name)
            else:
                assert torch.equal(s, p.detach()), (layer.index, name)
        for (name, buf), s, l in zip(layer.named_buffers(), s_layer.buffers(), l_layer.buffers()):
            assert torch.equal(s, buf) and torch.equal(l, buf), (layer.index, name)
    assert n_avg == len(ema.params) > 0
