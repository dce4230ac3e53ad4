"""Training precision: bf16 autocast on CPUs that have it, BN and loss kept in fp32."""
import pytest
import torch

from darknet_py import devices
from darknet_py.model.network import Network
from darknet_py.train import precision as precision_mod
from darknet_py.train.precision import choose_precision

from conftest import REPO


def test_choice(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(precision_mod, "cpu_bf16_supported", lambda: True)
    auto = choose_precision(cpu)               # default where the CPU has it: bf16, NHWC
    assert auto.dtype == torch.bfloat16 and auto.channels_last
    p = choose_precision(cpu, bf16=True)
    assert p.dtype == torch.bfloat16 and p.channels_last and not p.needs_grad_scaler
    assert choose_precision(cpu, bf16=False).dtype is None
    assert not choose_precision(cpu, bf16=False).channels_last
    assert not choose_precision(cpu, bf16=True, channels_last=False).channels_last
    g = choose_precision(gpu)
    assert g.dtype == torch.float16 and g.needs_grad_scaler and g.channels_last
    assert choose_precision(gpu, amp=False).dtype is None
    monkeypatch.setattr(precision_mod, "cpu_bf16_supported", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        assert choose_precision(cpu, bf16=True).dtype is None
    assert choose_precision(cpu).dtype is None                 # default there: fp32, no warning
    assert not choose_precision(cpu).channels_last


@pytest.mark.skipif(not devices.cpu_bf16_supported(), reason="CPU without native bf16")
def test_bf16_step_keeps_bn_and_loss_fp32_and_follows_fp32():
    """One training forward/backward of yolov4-tiny-obj (64x64) in fp32 and under the bf16
    precision: same loss to 2%, gradients pointing the same way, BN statistics and cost fp32."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    truth = torch.zeros(2, 4, 5)
    truth[0, 0] = torch.tensor([0.5, 0.5, 0.4, 0.5, 1])
    truth[1, 0] = torch.tensor([0.3, 0.6, 0.2, 0.3, 2])
    results = []
    for bf16 in (False, True):
        torch.manual_seed(1)
        net = Network.from_cfg(REPO / "cfg" / "yolov4-tiny-obj.cfg", width=64, height=64)
        net.train()
        prec = choose_precision(torch.device("cpu"), bf16=bf16)
        prec.prepare(net)
        inp = x.contiguous(memory_format=torch.channels_last) if prec.channels_last else x
        with prec.autocast():
            raw = net(inp, raw_heads=True)
        # the convs in front of the [yolo] layers run in fp32: the loss sees fp32 head inputs
        assert all(r.dtype == torch.float32 for r in raw)
        if bf16:      # ...while the other convolutions run in bf16
            with prec.autocast():
                y = net.layers[0]._conv(inp, net.layers[0].weight)
            assert y.dtype == torch.bfloat16
        costs = [h.loss(r.float(), truth, 64, 64)[0] for h, r in zip(net.heads, raw)]
        total = torch.stack(costs).sum()
        total.backward()
        assert total.dtype == torch.float32
        conv0 = net.layers[0]
        assert conv0.rolling_mean.dtype == torch.float32 and conv0.weight.dtype == torch.float32
        grads = torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None])
        results.append((float(total.detach()), grads, conv0.rolling_mean.clone()))
    (c32, g32, m32), (c16, g16, m16) = results
    assert c16 == pytest.approx(c32, rel=2e-2)
    cos = torch.nn.functional.cosine_similarity(g32, g16, dim=0)
    # bf16 activations carry 8 mantissa bits: one step's gradient agrees with fp32's to a cosine
    # of ~0.90 here (the noise between two minibatches is far larger); a layer whose gradient
    # is lost or mis-cast would drop it well below
    assert cos > 0.85, float(cos)
    torch.testing.assert_close(m16, m32, rtol=2e-2, atol=2e-3)
