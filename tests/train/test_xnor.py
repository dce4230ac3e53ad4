"""``xnor=1`` trains: Darknet's straight-through gradients through the binarisation.

Darknet's GPU build (``backward_convolutional_layer_gpu``) takes the filter gradient against the
binarised input and applies it to the real-valued weights unchanged, and computes the input
delta with the binarised weights, then multiplies it by the hardtan gradient of the real input
(1 for -1 < x < 1, else 0). Before this, no gradient reached any layer below an xnor conv.
"""
import pytest
import torch
import torch.nn.functional as F

from conftest import REFDATA, require
from darknet_py.layers.convolutional import ConvolutionalLayer
from darknet_py.model.network import Network


def _net(name):
    torch.manual_seed(0)
    net = Network.from_cfg(require(REFDATA / "cfg" / "darknet" / name), width=64, height=64,
                           batch=1)
    return net.train()


def _old_xnor_conv(layer, x, w):
    """The binarised convolution as darknet-py computed it before the gradients existed."""
    scale = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    wb = torch.where(w > 0, scale, -scale)
    xb = torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))
    return F.conv2d(xb, wb, None, (layer.stride_y, layer.stride_x), layer.pad * layer.dilation,
                    layer.dilation, layer.groups)


@pytest.mark.parametrize("cfg", ["yolov3-tiny_xnor.cfg", "tiny-yolo_xnor.cfg"])
def test_every_parameter_gets_a_gradient(cfg):
    net = _net(cfg)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = net(x)
    out = net(x)
    for a, b in zip(out, plain):         # the gradient path computes the very same values
        assert torch.equal(a, b)
    sum(o.sum() for o in out).backward()
    params = list(net.named_parameters())
    # Darknet updates every parameter of these cfgs (no stopbackward, dont_update, ...)
    missing = [n for n, p in params if p.grad is None or not bool(torch.isfinite(p.grad).all())
               or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"{len(missing)} of {len(params)} parameters get no gradient: {missing}"
    assert any(isinstance(l, ConvolutionalLayer) and l.xnor and l.index > 1 for l in net.layers)


def test_values_and_straight_through_gradients_of_one_xnor_conv():
    net = _net("yolov3-tiny_xnor.cfg")
    layer = next(l for l in net.layers if isinstance(l, ConvolutionalLayer) and l.xnor)
    torch.manual_seed(1)
    c, h, w = layer.in_shape
    # inputs on both sides of 0 and of +-1, with exact zeros and exact +-1 (the borders)
    x = torch.randn(2, c, h, w) * 1.5
    x.view(-1)[:40] = torch.tensor([0.0, 1.0, -1.0, 0.5] * 10)
    x.requires_grad_(True)
    weight = layer.weight.detach().clone().requires_grad_(True)
    y = layer._conv(x, weight)
    assert torch.equal(y, _old_xnor_conv(layer, x.detach(), weight.detach()))
    g = torch.randn_like(y)
    y.backward(g)
    # what Darknet's GPU backward computes: conv gradients at the binarised tensors ...
    scale = weight.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    wb = torch.where(weight.detach() > 0, scale, -scale).requires_grad_(True)
    xb = torch.where(x.detach() > 0, 1.0, -1.0).requires_grad_(True)
    F.conv2d(xb, wb, None, (layer.stride_y, layer.stride_x), layer.pad * layer.dilation,
             layer.dilation, layer.groups).backward(g)
    # ... the filter gradient applied as is, the input gradient through hardtan's derivative
    assert torch.equal(weight.grad, wb.grad)
    inside = (x.detach() > -1) & (x.detach() < 1)
    assert torch.equal(x.grad, xb.grad * inside)
    assert bool((x.grad[~inside] == 0).all()) and bool(x.grad[inside].abs().sum() > 0)
