"""``stopbackward`` and ``onlyforward`` as Darknet's GPU build trains them (train/freeze.py)."""
import copy
import io
import os

import torch

from darknet_py.formats.cfg import parse_cfg_text
from darknet_py.model.network import Network
from darknet_py.train.freeze import BackwardStops
from darknet_py.train.optim import DarknetSGD

CFG = """[net]
batch=2
width=32
height=32
channels=3
learning_rate=0.01
momentum=0.9
decay=0.05
max_batches=10

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
stopbackward={stop}

[convolutional]
filters=4
size=1
activation=leaky

[route]
layers=-1,-3
onlyforward={only}

[convolutional]
filters=18
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def _setup(stop=0, only=0):
    torch.manual_seed(0)
    net = Network(parse_cfg_text(CFG.format(stop=stop, only=only), "t.cfg"), "t.cfg").train()
    return net, BackwardStops.for_network(net)


def _iteration(net, stops, completed):
    """What Trainer.train_iteration does around the forward/backward passes."""
    net.zero_grad(set_to_none=True)
    stops.begin_iteration(completed)
    torch.manual_seed(1)
    raw = net(torch.rand(2, 3, 32, 32), raw_heads=True)
    sum(r.sum() for r in raw).backward()
    grads = {i: [None if p.grad is None else p.grad.clone() for p in l.parameters()]
             for i, l in enumerate(net.layers) if list(l.parameters())}
    stops.before_step()
    return grads


def _has_grad(grads, i):
    return all(g is not None and bool(g.abs().sum() > 0) for g in grads[i])


def test_nothing_to_do_without_the_options():
    assert _setup()[1] is None


def test_stopbackward_n_freezes_the_first_n_iterations():
    net, stops = _setup(stop=2)
    for completed, frozen in ((0, True), (1, True), (2, False), (5, False)):
        grads = _iteration(net, stops, completed)
        assert stops.cut == (1 if frozen else -1)
        # layer 0 reaches the head through the route too: still cut off, as Darknet's break
        for i in (0, 1):
            assert _has_grad(grads, i) != frozen, (completed, i)
            if frozen:          # an empty gradient: Darknet still applies decay and momentum
                assert all(float(p.grad.abs().sum()) == 0 for p in net.layers[i].parameters())
        assert _has_grad(grads, 2) and _has_grad(grads, 4)
        assert all(l.training for l in net.layers)


def test_stopbackward_1_below_is_inference_and_never_updated():
    net, stops = _setup(stop=1)
    rolling = [net.layers[i].rolling_mean.clone() for i in (0, 1)]
    opt = DarknetSGD(net, net.config)
    before = copy.deepcopy(net)
    grads = _iteration(net, stops, 7)
    assert not net.layers[0].training and net.layers[1].training
    # layer 0 runs batch norm on its rolling statistics (train=0), layer 1 on the batch's
    assert torch.equal(net.layers[0].rolling_mean, rolling[0])
    assert not torch.equal(net.layers[1].rolling_mean, rolling[1])
    assert all(g is None for g in grads[0] + grads[1])
    assert all(p.grad is None for p in net.layers[0].parameters())
    opt.step(8)
    rate, batch, decay = opt.rate(8), 2, 0.05
    # layer 0: untouched; layer 1: only decay (update_convolutional_layer_gpu on empty updates)
    for a, b in zip(net.layers[0].parameters(), before.layers[0].parameters()):
        assert torch.equal(a, b)
    w0 = before.layers[1].weight.detach()
    u = torch.zeros_like(w0).add_(w0, alpha=-decay * batch)
    assert torch.equal(net.layers[1].weight.detach(), w0.clone().add_(u, alpha=rate / batch))
    assert torch.equal(net.layers[1].bias, before.layers[1].bias)     # no decay on biases
    assert torch.equal(net.layers[1].scales, before.layers[1].scales)
    assert not torch.equal(net.layers[4].weight, before.layers[4].weight)


def test_onlyforward_stops_the_gradient_at_the_layer():
    net, stops = _setup(only=1)
    grads = _iteration(net, stops, 0)
    # the route was the only way back from the head: layers 0-2 get an empty gradient
    for i in (0, 1, 2):
        assert not _has_grad(grads, i)
        assert all(p.grad is not None and float(p.grad.abs().sum()) == 0
                   for p in net.layers[i].parameters())
    assert _has_grad(grads, 4)


def test_trainer_applies_stopbackward(tmp_path):
    """One real iteration of yolov4-tiny with stopbackward on layer 10: layers 0-10 only decay."""
    from train_fixtures import make_shapes_workdir
    from darknet_py.train.trainer import TrainOptions, Trainer
    work = make_shapes_workdir(tmp_path / "w", n_images=4, size=64, batch=2, max_batches=2,
                               burn_in=1)
    cfg = work / "small.cfg"
    lines = cfg.read_text().split("\n")
    headers = [i for i, ln in enumerate(lines) if ln.startswith("[")]
    assert lines[headers[11]] == "[convolutional]"      # layer 10 (headers[0] is [net])
    lines.insert(headers[11] + 1, "stopbackward=5")
    cfg.write_text("\n".join(lines))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        trainer = Trainer(TrainOptions(data="obj.data", cfg="small.cfg", workers=0, seed=3,
                                       chart=False, nogpu=True, bf16=False), out=io.StringIO())
        trainer.setup()
        net = trainer.net
        assert net.layers[10].stopbackward == 5
        before = copy.deepcopy(net)
        trainer.train_iteration()
        trainer.source.close()
    finally:
        os.chdir(cwd)
    rate = trainer.optimizer.rate(1)
    decay, batch = net.config.decay, trainer.optimizer.param_groups[0]["batch"]
    for i, layer in enumerate(net.layers[:11]):
        if not list(layer.parameters()):
            continue
        w0 = before.layers[i].weight.detach()
        u = torch.zeros_like(w0).add_(w0, alpha=-decay * batch)
        assert torch.equal(layer.weight.detach(), w0.clone().add_(u, alpha=rate / batch)), i
        assert torch.equal(layer.bias, before.layers[i].bias), i
    above = [l.index for l in net.layers[11:] if list(l.parameters())]
    assert above and all(not torch.equal(net.layers[i].bias, before.layers[i].bias)
                         for i in above)


def test_ddp_with_stopbackward(tmp_path):
    """Two gloo processes: DDP must not wait for the gradients of the layers cut off (it would
    fail without find_unused_parameters), and they move exactly as in one process (decay)."""
    import subprocess
    import sys
    from train_fixtures import make_shapes_workdir, run_cli
    work = make_shapes_workdir(tmp_path / "w", n_images=4, size=64, batch=2, max_batches=2,
                               burn_in=1)
    cfg = work / "small.cfg"
    lines = cfg.read_text().split("\n")
    headers = [i for i, ln in enumerate(lines) if ln.startswith("[")]
    lines.insert(headers[11] + 1, "stopbackward=1")     # layers 0-9 train=0, 10 decay only
    cfg.write_text("\n".join(lines))
    torch.manual_seed(0)
    Network.from_cfg(cfg).save_weights(work / "start.weights")
    finals = []
    for name, launcher in (("one", [sys.executable, "-m", "darknet_py.cli"]),
                           ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2", "-m", "darknet_py.cli"])):
        (work / f"{name}.data").write_text((work / "obj.data").read_text().replace(
            "backup=backup", f"backup={name}"))
        r = subprocess.run(launcher + ["detector", "train", f"{name}.data", "small.cfg",
                                       "start.weights", "-dont_show", "-workers", "0", "-seed",
                                       "5", "-nogpu"],
                           cwd=work, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        net = Network.from_cfg(cfg)
        net.load_weights(work / name / "small_final.weights")
        finals.append(net)
    start = Network.from_cfg(cfg)
    start.load_weights(work / "start.weights")
    one, ddp = finals
    for i in range(10):
        for a, b, s in zip(one.layers[i].parameters(), ddp.layers[i].parameters(),
                           start.layers[i].parameters()):
            assert torch.equal(a, s) and torch.equal(b, s), i       # train=0: never updated
    w = [n.layers[10].weight for n in (one, ddp, start)]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])  # decay, the same in both


def test_trainer_ema_skips_the_train0_convs(tmp_path):
    from train_fixtures import make_shapes_workdir
    from darknet_py.train.trainer import TrainOptions, Trainer
    work = make_shapes_workdir(tmp_path / "w", n_images=2, size=64, batch=2, max_batches=2)
    cfg = work / "small.cfg"
    lines = cfg.read_text().replace("[net]\n", "[net]\nema_alpha=0.9\n", 1).split("\n")
    headers = [i for i, ln in enumerate(lines) if ln.startswith("[")]
    lines.insert(headers[11] + 1, "stopbackward=1")
    cfg.write_text("\n".join(lines))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        trainer = Trainer(TrainOptions(data="obj.data", cfg="small.cfg", workers=0, chart=False,
                                       nogpu=True, bf16=False), out=io.StringIO())
        trainer.setup()
        trainer.source.close()
    finally:
        os.chdir(cwd)
    averaged = {id(p) for p in trainer.ema.params}
    assert trainer.stops.train0_below == 10
    for layer in trainer.net.layers:
        for p in layer.parameters():
            assert (id(p) in averaged) == (layer.index >= 10), layer.index
