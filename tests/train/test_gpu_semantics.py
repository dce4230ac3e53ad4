"""Training follows Darknet's GPU build where its CPU build differs (issue 17).

Darknet's CPU build (i) never computes the bias updates of batch-normalised conv layers, so their
biases stay frozen, and (ii) drops the gradient a [route] layer sends back to a layer that the
next conv also reads (``col2im_cpu_ext`` zeroes that layer's delta; see ``darknet_cpu_forward``
in test_loss.py and oracle section E). Its GPU/cuDNN build does neither, and that is what users
train with. One real iteration of :class:`~darknet_py.train.trainer.Trainer` (the code behind
``detector train``) must therefore move every BN bias, and the gradient it applies to layer 0 must
be autograd's full gradient of the loss through the routes, measurably far from the CPU build's.
"""
import copy
import io

import pytest
import torch

from darknet_py.layers.convolutional import ConvolutionalLayer
from darknet_py.layers.route import RouteLayer
from darknet_py.train.trainer import TrainOptions, Trainer

from test_loss import darknet_cpu_forward
from train_fixtures import make_shapes_workdir


def _loss_grads(net, x, truth, forward):
    net.zero_grad(set_to_none=True)
    raws = forward(net, x)
    total = sum(h.loss(r.float(), truth, x.shape[3], x.shape[2])[0]
                for h, r in zip(net.heads, raws))
    total.backward()
    return {i: l.weight.grad.detach().clone() for i, l in enumerate(net.layers)
            if isinstance(l, ConvolutionalLayer)}


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    work = make_shapes_workdir(tmp_path_factory.mktemp("gpu_sem") / "shapes", n_images=8,
                               size=96, batch=4, max_batches=1, learning_rate=0.002, burn_in=1)
    import os
    cwd = os.getcwd()
    os.chdir(work)
    try:
        trainer = Trainer(TrainOptions(data="obj.data", cfg="small.cfg",
                                       weights="yolov4-tiny.conv.29", workers=0, seed=3,
                                       chart=False, nogpu=True, bf16=False),
                          out=io.StringIO())
        trainer.setup()
        net = trainer.net
        before = copy.deepcopy(net)           # the weights the step starts from
        seen = {}
        next_minibatch = trainer.source.next_minibatch

        def record_minibatch():
            x, truth = next_minibatch()
            seen["x"], seen["truth"] = x.clone(), truth.clone()
            return x, truth
        trainer.source.next_minibatch = record_minibatch
        step = trainer.optimizer.step

        def record_step(*a, **kw):            # the gradients the update is made from
            seen["grads"] = {i: l.weight.grad.detach().clone() for i, l in enumerate(net.layers)
                             if isinstance(l, ConvolutionalLayer)}
            return step(*a, **kw)
        trainer.optimizer.step = record_step
        loss = trainer.train_iteration()
        trainer.source.close()
    finally:
        os.chdir(cwd)
    assert loss == loss and trainer.iteration == 1, loss
    return trainer, before, seen


def test_every_bn_bias_moves_in_one_step(one_step):
    trainer, before, _ = one_step
    bn = [i for i, l in enumerate(trainer.net.layers)
          if isinstance(l, ConvolutionalLayer) and l.batch_normalize]
    assert len(bn) == 19      # yolov4-tiny: every conv but the two before [yolo]
    frozen = [i for i in bn if torch.equal(trainer.net.layers[i].bias, before.layers[i].bias)]
    assert not frozen, f"BN biases of layers {frozen} did not change (Darknet CPU's behaviour)"
    # scales move too, and so do the plain biases of the convs before the [yolo] layers
    for i in bn:
        assert not torch.equal(trainer.net.layers[i].scales, before.layers[i].scales), i
    for h in trainer.net.heads:
        assert not torch.equal(trainer.net.layers[h.index - 1].bias,
                               before.layers[h.index - 1].bias)


def test_route_gradient_reaches_layer_0_in_full(one_step):
    trainer, before, seen = one_step
    x, truth = seen["x"], seen["truth"]
    # the network has routes whose source is also read by the next conv: the case the CPU build
    # gets wrong (otherwise both gradients would be equal and this test would prove nothing)
    layers = list(before.layers)
    convs = {i for i, l in enumerate(layers) if isinstance(l, ConvolutionalLayer)}
    route_sources = {j for l in layers if isinstance(l, RouteLayer) for j in l.inputs}
    assert any(j + 1 in convs for j in route_sources)

    full = _loss_grads(copy.deepcopy(before), x, truth,
                       lambda n, t: n(t, raw_heads=True))
    cpu = _loss_grads(copy.deepcopy(before), x, truth, darknet_cpu_forward)
    applied = seen["grads"]
    # the CPU build's layer-0 gradient is far from the full one on this net ...
    assert _rel(cpu[0], full[0]) > 0.1, _rel(cpu[0], full[0])
    # ... and the trainer applied the full one, at layer 0 and at every conv
    for i in sorted(full):
        assert _rel(applied[i], full[i]) < 1e-3, (i, _rel(applied[i], full[i]),
                                                  _rel(applied[i], cpu[i]))
